"""The training function every launcher runs: in-process, Horovod workers or torch DDP workers.

It takes one plain dict (a TrainSpec), so Horovod on Spark, TorchDistributor and horovodrun can
ship it to any process; rank 0 writes checkpoints and the final weights into the run directory
(training/run_directory.py: a path or URI, on any filesystem fsspec reaches).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass

import torch
from torch import nn

from rec_plugin.schema import Schema
from training import checkpoint
from training.data import BatchLoader, FileSet, check_epoch_rows, padding_batch
from training.distributed import collective
from training.models import ModelConfig, build_model
from training.progress import progress_bar
from training.run_directory import RunDirectory
from training.step import bce_loss, optimizers


@dataclass(frozen=True)
class TrainSpec:
    """One training run, as plain data."""

    model: dict
    train: dict
    run_dir: str
    schema: dict  # the workflow's output schema (Schema.to_json as a dict): the columns the loader reads
    backend: str = "single"
    epochs: int = 1
    batch_size: int = 1024
    dense_lr: float = 3e-3
    sparse_lr: float = 0.01
    seed: int = 0
    checkpoint_every: int = 100
    resume: bool = False
    progress: bool = True

    def to_dict(self) -> dict:
        return asdict(self)

    @staticmethod
    def schema_dict(schema: Schema) -> dict:
        return json.loads(schema.to_json())

    def features_schema(self) -> Schema:
        return Schema.from_json(json.dumps(self.schema))


def train_worker(spec_dict: dict) -> dict:
    """Trains on this process's shard; returns the run summary (every rank returns the same totals)."""
    spec = TrainSpec(**spec_dict)
    group = collective(spec.backend)
    # Sparse gradients are built by torch itself: skip the per-tensor invariant checks (and their warning).
    torch.sparse.check_sparse_tensor_invariants.disable()
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // group.local_size))
    torch.manual_seed(spec.seed)
    config = ModelConfig.from_dict(spec.model)
    model = build_model(config)
    forward, steppers = group.prepare(model, optimizers(model, spec.sparse_lr, spec.dense_lr))
    run = RunDirectory(spec.run_dir)
    restored = checkpoint.restore_latest(run, model, steppers) if spec.resume else None
    position = checkpoint.Position() if restored is None else restored
    train = FileSet.from_dict(spec.train)
    schema = spec.features_schema()
    loader = BatchLoader(train, schema, spec.batch_size, group.rank, group.size, spec.seed)
    batches_per_rank = math.ceil(train.rows / group.size / spec.batch_size)
    bar = progress_bar(
        total=spec.epochs * batches_per_rank * group.size * spec.batch_size,
        initial=(position.epoch * batches_per_rank + position.batches) * group.size * spec.batch_size,
        unit="samples",
        unit_scale=True,
        disable=not spec.progress or group.rank != 0,
        desc=f"train {config.name} ({group.name} x{group.size})",
    )
    started, samples = time.perf_counter(), 0
    running = None
    for epoch in range(position.epoch, spec.epochs):
        batches = loader.epoch(epoch, skip_batches=position.batches)
        while True:
            batch = next(batches, None)
            # Every rank takes a step while any rank has data: a rank whose shard ran out steps on a
            # zero-weight batch, so collective calls stay matched (no hang on uneven shards).
            if group.sum(batch is not None) == 0:
                break
            batch = batch or padding_batch(schema, spec.batch_size)
            loss = bce_loss(forward(*batch.inputs()), batch.label, batch.weight)
            for stepper in steppers:
                stepper.zero_grad()
            loss.backward()
            for stepper in steppers:
                stepper.step()
            position.batches += 1
            position.step += 1
            samples += int(batch.weight.sum())
            value = loss.item()
            running = value if running is None else 0.98 * running + 0.02 * value
            position.losses.append(value)
            bar.update(spec.batch_size * group.size)
            bar.set_postfix(loss=f"{running:.4f}", refresh=False)
            if group.rank == 0 and position.step % spec.checkpoint_every == 0:
                checkpoint.save(run, model, steppers, position)
        check_epoch_rows(int(group.sum(loader.rows_read)), train.rows, f"training epoch {epoch}")
        position.epoch, position.batches = epoch + 1, 0
    bar.close()
    elapsed = _since(started)
    total_samples = int(group.sum(samples))
    if group.rank == 0:
        checkpoint.save(run, model, steppers, position)
        run.save_weights(model.state_dict())
        run.write_schema(schema)
    group.close()
    return {
        "steps": position.step,
        "samples": total_samples,
        "seconds": round(elapsed, 3),
        "samples_per_s": round(total_samples / elapsed, 1),
        "losses": position.losses,
        "rank": group.rank,
        "weights_digest": weights_digest(model),
    }


def weights_digest(model: nn.Module) -> str:
    """A fingerprint of every parameter's bytes: equal on all ranks when they stayed in sync."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def _since(started: float) -> float:
    return max(time.perf_counter() - started, 1e-9)
