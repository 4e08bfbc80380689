"""Training checkpoints: weights, optimizer state, loader position and RNG state, in safe formats.

A checkpoint is one torch file of tensors and plain containers only, so it loads with
`torch.load(weights_only=True)` (no pickled code). The run directory writes each under its own name
and only then points its latest pointer at it, so a kill at any moment leaves a usable checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from torch.optim import Optimizer

from training.run_directory import RunDirectory


@dataclass
class Position:
    """Where training stands: `batches` of epoch `epoch` are done (per rank), `step` overall."""

    epoch: int = 0
    batches: int = 0
    step: int = 0
    losses: list[float] = field(default_factory=list)


def save(
    run: RunDirectory, model: nn.Module, optimizers: list[Optimizer], position: Position, keep: int = 2
) -> str:
    """Checkpoints the run at `position`, keeping the newest `keep` checkpoints; returns its name."""
    state = {
        "model": model.state_dict(),
        "optimizers": [optimizer.state_dict() for optimizer in optimizers],
        "position": {"epoch": position.epoch, "batches": position.batches, "step": position.step},
        "losses": torch.tensor(position.losses, dtype=torch.float64),
        "torch_rng": torch.get_rng_state(),
    }
    return run.save_checkpoint(state, position.step, keep)


def restore_latest(run: RunDirectory, model: nn.Module, optimizers: list[Optimizer]) -> Position | None:
    """Loads the run's newest checkpoint into the model and optimizers and returns its position;
    None when the run has no checkpoint yet."""
    name = run.latest_checkpoint()
    if name is None:
        return None
    state = run.load_checkpoint(name)
    model.load_state_dict(state["model"])
    for optimizer, optimizer_state in zip(optimizers, state["optimizers"], strict=True):
        optimizer.load_state_dict(optimizer_state)
    torch.set_rng_state(state["torch_rng"])
    return Position(**state["position"], losses=state["losses"].tolist())
