"""Training checkpoints: weights, optimizer state, loader position and RNG state, in safe formats.

A checkpoint is one torch file of tensors and plain containers only, so it loads with
`torch.load(weights_only=True)` (no pickled code); `latest.json` names the newest complete one and is
replaced atomically after the checkpoint is on disk, so a kill at any moment leaves a usable pair.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.optim import Optimizer

LATEST = "latest.json"


@dataclass
class Position:
    """Where training stands: `batches` of epoch `epoch` are done (per rank), `step` overall."""

    epoch: int = 0
    batches: int = 0
    step: int = 0
    losses: list[float] = field(default_factory=list)


def _atomic_write(path: Path, write: callable) -> None:
    temporary = path.with_name(path.name + ".tmp")
    write(temporary)
    os.replace(temporary, path)


def save(
    directory: Path, model: nn.Module, optimizers: list[Optimizer], position: Position, keep: int = 2
) -> Path:
    """Writes checkpoint `step-<step>.pt`, points latest.json at it and keeps the newest `keep`."""
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / f"step-{position.step:08d}.pt"
    state = {
        "model": model.state_dict(),
        "optimizers": [optimizer.state_dict() for optimizer in optimizers],
        "position": {"epoch": position.epoch, "batches": position.batches, "step": position.step},
        "losses": torch.tensor(position.losses, dtype=torch.float64),
        "torch_rng": torch.get_rng_state(),
    }
    _atomic_write(target, lambda p: torch.save(state, p))
    _atomic_write(directory / LATEST, lambda p: p.write_text(json.dumps({"checkpoint": target.name})))
    for old in sorted(directory.glob("step-*.pt"))[:-keep]:
        old.unlink()
    return target


def latest(directory: Path) -> Path | None:
    pointer = directory / LATEST
    return directory / json.loads(pointer.read_text())["checkpoint"] if pointer.exists() else None


def restore(path: Path, model: nn.Module, optimizers: list[Optimizer]) -> Position:
    """Loads a checkpoint into the model and optimizers and returns its position."""
    state = torch.load(path, weights_only=True)
    model.load_state_dict(state["model"])
    for optimizer, optimizer_state in zip(optimizers, state["optimizers"], strict=True):
        optimizer.load_state_dict(optimizer_state)
    torch.set_rng_state(state["torch_rng"])
    return Position(**state["position"], losses=state["losses"].tolist())
