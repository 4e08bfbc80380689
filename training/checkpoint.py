"""Training checkpoints: weights, optimizer state, loader position and RNG state, in safe formats.

A checkpoint is one torch file of tensors and plain containers only, so it loads with
`torch.load(weights_only=True)` (no pickled code). The run directory writes each under its own name
and only then points its latest pointer at it, so a kill at any moment leaves a usable checkpoint.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
from torch import nn
from torch.optim import Optimizer

from training.data import ROW_GROUPS_BY_COUNT
from training.run_directory import RunDirectory


@dataclass
class Position:
    """Where training stands: `batches` of epoch `epoch` are done (per rank), `step` overall; with
    validation, each finished epoch's validation score (NaN for an epoch not validated) and the best
    epoch so far (0: none), whose weights the run directory keeps."""

    epoch: int = 0
    batches: int = 0
    step: int = 0
    losses: list[float] = field(default_factory=list)
    valid_scores: list[float] = field(default_factory=list)
    best_epoch: int = 0
    sharding: str = ""  # how the loader dealt the rows to ranks (FileSet.dealing)


class Saved(NamedTuple):
    """A checkpoint as loaded: the unsharded model state, the optimizers' states, the position."""

    model: dict
    optimizers: list
    position: Position


def rng_state(device: torch.device | None = None) -> dict[str, torch.Tensor]:
    """This process's torch random state: the host generator's, and the GPU `device`'s where it
    trains on one (Mult-VAE's noise and dropout draw from them)."""
    state = {"torch": torch.get_rng_state()}
    if device is not None and device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def save(
    run: RunDirectory,
    model_state: dict,
    optimizer_states: list[dict],
    position: Position,
    keep: int = 2,
    rngs: Sequence[dict[str, torch.Tensor]] | None = None,
) -> str:
    """Checkpoints the run at `position` (the model's unsharded state and the optimizers' states, as
    the backend's Collective gives them), keeping the newest `keep` checkpoints; returns its name.
    `rngs`: every rank's `rng_state`, in rank order (this process's alone by default): ranks end an
    epoch on batches of other sizes, so their random states part there."""
    state = {
        "model": model_state,
        "optimizers": optimizer_states,
        "position": {
            "epoch": position.epoch,
            "batches": position.batches,
            "step": position.step,
            "best_epoch": position.best_epoch,
            "sharding": position.sharding,
        },
        "losses": torch.tensor(position.losses, dtype=torch.float64),
        "valid_scores": torch.tensor(position.valid_scores, dtype=torch.float64),
        "rngs": list(rngs) if rngs is not None else [rng_state()],
    }
    return run.save_checkpoint(state, position.step, keep)


def _saved_rngs(state: dict) -> list[dict[str, torch.Tensor]]:
    """A checkpoint's random states per rank; one from before they were kept per rank holds rank 0's."""
    if "rngs" in state:
        return state["rngs"]
    kept = {"torch": state["torch_rng"]}
    if "cuda_rng" in state:
        kept["cuda"] = state["cuda_rng"]
    return [kept]


def load_latest(run: RunDirectory, device: torch.device | None = None, rank: int = 0) -> Saved | None:
    """The run's newest checkpoint, torch's RNGs restored to `rank`'s state in it (the host's, and
    the GPU `device`'s where the checkpoint kept one); a rank the checkpoint's run did not have takes
    rank 0's, as every rank of a fresh run starts from one seed. None when the run has none yet."""
    name = run.latest_checkpoint()
    if name is None:
        return None
    state = run.load_checkpoint(name)
    rngs = _saved_rngs(state)
    rng = rngs[rank] if rank < len(rngs) else rngs[0]
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng and device is not None and device.type == "cuda":
        torch.cuda.set_rng_state(rng["cuda"], device)
    valid_scores = state.get("valid_scores", torch.zeros(0)).tolist()  # a checkpoint from before validation
    # A checkpoint from before the dealing was recorded dealt row groups by count.
    dealt = {"sharding": ROW_GROUPS_BY_COUNT, **state["position"]}
    position = Position(**dealt, losses=state["losses"].tolist(), valid_scores=valid_scores)
    return Saved(state["model"], state["optimizers"], position)


def final_state(run: RunDirectory) -> dict:
    """The state (model, optimizers) a finished run ended with, what a warm start grows: its kept
    epoch's where validation kept an earlier epoch than the last it trained, else its latest
    checkpoint's."""
    state = run.load_checkpoint(str(run.latest_checkpoint()))
    position = state["position"]
    best = position.get("best_epoch", 0)
    if best not in (0, position["epoch"]):
        return run.epoch_state(best)
    return state


def restore_latest(run: RunDirectory, model: nn.Module, optimizers: list[Optimizer]) -> Position | None:
    """Loads the run's newest checkpoint into a model held whole in this process and its optimizers
    and returns its position; None when the run has no checkpoint yet."""
    saved = load_latest(run)
    if saved is None:
        return None
    model.load_state_dict(saved.model)
    for optimizer, optimizer_state in zip(optimizers, saved.optimizers, strict=True):
        optimizer.load_state_dict(optimizer_state)
    return saved.position
