"""The training function every launcher runs: in-process, Horovod workers, torch DDP workers or
TorchRec-sharded workers.

It takes one plain dict (a TrainSpec), so Horovod on Spark, TorchDistributor and horovodrun can
ship it to any process; rank 0 writes checkpoints and the final weights into the run directory
(training/run_directory.py: a path or URI, on any filesystem fsspec reaches). On a host with GPUs
each worker trains on its GPU, with the next batches read and copied by a prefetch thread while the
current one trains; on CPU the same code trains on the CPU.
"""

from __future__ import annotations

import faulthandler
import hashlib
import json
import math
import os
import queue
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass

import torch
from torch import nn

from rec_plugin.schema import Schema
from training import checkpoint
from training.data import Batch, BatchLoader, FileSet, check_epoch_rows, padding_batch, rank_files
from training.distributed import Collective, collective
from training.evaluate import heldout_ndcg_sum
from training.grow import warm_start
from training.models import ModelConfig, build_model
from training.models.cf import MULTVAE, beta_at, multvae_loss
from training.progress import progress_bar
from training.ranking import VAE_NDCG_CUTOFF
from training.run_directory import RunDirectory
from training.step import OptimizerSettings, bce_loss, precision


@dataclass(frozen=True)
class TrainSpec:
    """One training run, as plain data."""

    model: dict
    train: dict
    run_dir: str
    schema: dict  # the workflow's output schema (Schema.to_json as a dict): the columns the loader reads
    backend: str = "single"
    sharding: str = "table_wise"  # --backend torchrec: table_wise, column_wise, row_wise (GPUs) or auto
    epochs: int = 1
    batch_size: int = 1024
    dense_lr: float = 3e-3
    sparse_lr: float | None = None  # None: the sparse optimizer's default rate (training/step.py)
    sparse_optimizer: str = "adam"  # the embedding rows' optimizer: adam or adagrad (training/step.py)
    precision: str = "fp32"  # fp32, tf32 or bf16 (training/step.py)
    seed: int = 0
    checkpoint_every: int = 100
    resume: bool = False
    progress: bool = True
    prefetch: int | None = None  # batches a thread reads ahead (0: none); None: 2 on GPUs, 0 on CPU
    # A production run's directory (path or URI) to start from, its model grown to this run's tables
    # (training/grow.py), when this run has no checkpoint of its own to resume from.
    warm_start: str | None = None
    # A run directory (path or URI) whose weights (a model of this run's config) this run starts from,
    # with fresh optimizers, when it has neither a checkpoint to resume nor a warm start: NeuMF fused
    # from its pretrained GMF and MLP towers, Mult-VAE started from popularity (spark_jobs/train_cf.py).
    initial_weights: str | None = None
    # Each worker's torch threads; None: the host's cores over its workers. sparkrec tune gives trials
    # that share a host a share of its cores (more threads than cores ran 2 trials 4.6x slower), and
    # the best trial's count goes to its config: the count changes float sums, hence the model.
    torch_threads: int | None = None
    # The validation rows' FileSet (FileSet.to_dict): the CTR models' validation days, Mult-VAE's
    # validation users. In a run of 2+ epochs the model is scored on them after every epoch (its
    # ValidationMetric), the best epoch's weights are the run's, and training stops once `patience`
    # epochs in a row have not bettered it (None: it trains every epoch).
    valid: dict | None = None
    patience: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @staticmethod
    def schema_dict(schema: Schema) -> dict:
        return json.loads(schema.to_json())

    def features_schema(self) -> Schema:
        return Schema.from_json(json.dumps(self.schema))

    def optimizer_settings(self) -> OptimizerSettings:
        return OptimizerSettings(self.sparse_optimizer, self.sparse_lr, self.dense_lr)

    @property
    def validates(self) -> bool:
        """Whether epochs are scored on validation rows (one epoch needs no choosing)."""
        return self.valid is not None and self.epochs > 1


class Prefetcher:
    """Batches read (and copied to the device) by a thread `depth` batches ahead of the step, or in
    the training thread when `depth` is 0; counts the seconds the step waited for one. A loader
    error is raised in the training thread."""

    _END = object()
    EXIT_WAIT_S = 1.0

    def __init__(self, batches: Iterator[Batch], device: torch.device, depth: int) -> None:
        self.waited = 0.0
        self._batches, self._device = batches, device
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        if depth > 0:
            self._queue: queue.Queue = queue.Queue(maxsize=depth)
            self._thread = threading.Thread(target=self._fill, daemon=True)
            self._thread.start()

    def _fill(self) -> None:
        try:
            for batch in self._batches:
                if not self._put(batch.to(self._device)):
                    return
            self._put(self._END)
        except BaseException as error:  # handed to the training thread, which raises it
            self._put(error)

    def _put(self, item: object) -> bool:
        """Queues `item` unless the training thread stopped listening: a put never blocks for good,
        so the thread ends on its own once a read that outlived the step returns."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.05)
                return True
            except queue.Full:
                pass
        return False

    def next(self) -> Batch | None:
        """The next batch; None at the end of the epoch."""
        started = time.perf_counter()
        if self._thread is None:
            batch = next(self._batches, None)
            self.waited += time.perf_counter() - started
            return None if batch is None else batch.to(self._device)
        if not self._thread.is_alive() and self._queue.empty():
            return None  # asked again after the end: a rank whose shard ran out steps on padding
        item = self._queue.get()
        self.waited += time.perf_counter() - started
        if item is self._END:
            self._thread.join()
            return None
        if isinstance(item, BaseException):
            raise item
        return item

    def __enter__(self) -> Prefetcher:
        return self

    def __exit__(self, *_: object) -> None:
        """Ends the reading thread, also when the step raised midway: otherwise it would hold its
        batches (on a GPU) and block on the full queue for as long as the process lives (a notebook's,
        where the single backend trains). Waits at most `EXIT_WAIT_S` for a read in progress: a loader
        that hangs must not hide the step's error behind a hang of its own."""
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join(timeout=self.EXIT_WAIT_S)
        while True:  # drops the queued batches, which would hold device memory
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break


def default_prefetch(device: torch.device) -> int:
    """Two batches ahead on a GPU, so reading and the host-to-device copy overlap the step. None on
    CPU: there the thread only competes with the step for the same cores (on 2 cores, prefetching 2
    batches ran at 0.90x of reading in the training thread, medians of 6 interleaved runs)."""
    return 2 if device.type == "cuda" else 0


def report_native_crashes() -> None:
    """A worker killed by a native fault (gloo, Arrow, a kernel) prints every thread's Python stack to
    the process's own stderr, which the launchers show beside the rank's exit code: without it a
    SIGSEGV leaves only the signal's number."""
    if not faulthandler.is_enabled() and sys.__stderr__ is not None:
        faulthandler.enable(file=sys.__stderr__)


def train_worker(spec_dict: dict) -> dict:
    """Trains on this process's shard; returns the run summary: every rank returns the same totals,
    and its own weights' digest where it holds the whole model ("" on the other ranks of a sharded
    run)."""
    report_native_crashes()
    spec = TrainSpec(**spec_dict)
    group = collective(spec.backend, spec.sharding)
    summary = _train(spec, group)
    group.close()  # once _train's frame is gone, and the model wrapped around the group with it
    return summary


def host_share_of_cores(sharers: int) -> int:
    """The torch threads of one of `sharers` processes training on this host at once: its share of
    the cores (at least one)."""
    return max(1, (os.cpu_count() or 1) // sharers)


def _train(spec: TrainSpec, group: Collective) -> dict:
    """train_worker's run, on this process's part of the group."""
    # Sparse gradients are built by torch itself: skip the per-tensor invariant checks (and their warning).
    torch.sparse.check_sparse_tensor_invariants.disable()
    torch.set_num_threads(spec.torch_threads or host_share_of_cores(group.local_size))
    torch.manual_seed(spec.seed)
    device = group.device  # where this worker trains, asked once
    config = ModelConfig.from_dict(spec.model)
    model = build_model(config, group.embeddings)
    run = RunDirectory(spec.run_dir)
    resumed = checkpoint.load_latest(run, device, group.rank) if spec.resume else None
    saved = resumed
    if saved is None and spec.warm_start:
        saved = warm_start(spec.warm_start, config, spec.optimizer_settings(), group.name, spec.seed)
    if saved is None and spec.initial_weights:  # before prepare: the backend's wrapper sees them
        model.load_state_dict(RunDirectory(spec.initial_weights).weights())
    forward, steppers = group.prepare(model, spec.optimizer_settings())
    if saved is not None:
        group.restore(model, steppers, saved)
    if resumed is None and group.rank == 0:
        # A fresh run, once its backend took its settings: nothing of an earlier run in its directory
        # to resume from or to take for its results (the first checkpoint's collectives order this
        # before any rank writes one).
        run.clear()
    position = checkpoint.Position() if saved is None else saved.position
    train = FileSet.from_dict(spec.train)
    dealing = train.dealing(group.size, spec.batch_size, spec.seed)
    if position.sharding != dealing and position.batches:
        if group.rank == 0:
            print(
                f"resume: the checkpoint's epoch {position.epoch + 1} was dealt to ranks as "
                f"{position.sharding}, not {dealing} (dealing:ranks x batch size:seed:files): its "
                f"{position.batches} batches are trained again",
                file=sys.stderr,
            )
        position.batches = 0
    position.sharding = dealing
    schema = spec.features_schema()
    loader = BatchLoader(train, schema, spec.batch_size, group.rank, group.size, spec.seed)
    batches_per_rank = math.ceil(train.rows / group.size / spec.batch_size)
    done_in_epoch = min(position.batches * group.size * spec.batch_size, train.rows)
    bar = progress_bar(  # counts the rows trained on: the last batches of an epoch are partial
        total=spec.epochs * train.rows,
        initial=position.epoch * train.rows + done_in_epoch,
        unit="samples",
        unit_scale=True,
        disable=not spec.progress or group.rank != 0,
        desc=f"train {config.name} ({group.name} x{group.size}, {device.type})",
    )
    padding = padding_batch(schema, spec.batch_size).to(device)
    depth = spec.prefetch if spec.prefetch is not None else default_prefetch(device)
    started, samples, waited = time.perf_counter(), 0, 0.0
    running = None
    for epoch in range(position.epoch, spec.epochs):
        if _stopped(spec, position):
            break
        with Prefetcher(loader.epoch(epoch, skip_batches=position.batches), device, depth) as batches:
            while True:
                batch = batches.next()
                rows = 0 if batch is None else len(batch.label)  # a loader's rows weigh 1: no device sync
                # Every rank takes a step while any rank has data: a rank whose shard ran out steps on a
                # zero-weight batch, so collective calls stay matched (no hang on uneven shards).
                step_rows = int(group.sum(rows))
                if step_rows == 0:
                    break
                padded = batch is None
                batch = batch or padding
                with precision(spec.precision, device):
                    outputs = forward(*batch.inputs())
                loss = objective(config, outputs, batch, position.step, spec.epochs * batches_per_rank)
                for stepper in steppers:
                    stepper.zero_grad()
                loss.backward()
                for stepper in steppers:
                    stepper.step()
                position.batches += 1
                position.step += 1
                samples += rows
                if not padded:  # a zero-weight step's loss is 0: not a point of the loss curve
                    value = loss.item()
                    running = value if running is None else 0.98 * running + 0.02 * value
                    position.losses.append(value)
                    bar.set_postfix(loss=f"{running:.4f}", refresh=False)
                bar.update(step_rows)
                if position.step % spec.checkpoint_every == 0:
                    _checkpoint(group, run, model, steppers, position)
        waited += batches.waited
        check_epoch_rows(int(group.sum(loader.rows_read)), train.rows, f"training epoch {epoch}")
        position.epoch, position.batches = epoch + 1, 0
        if spec.validates:
            _validate(spec, group, model, forward, steppers, padding, run, position)
    bar.close()
    elapsed = _since(started)
    total_samples = int(group.sum(samples))
    if not spec.validates:  # the last epoch's weights are the run's, whatever a resumed one had kept
        position.best_epoch = 0
    weights = _checkpoint(group, run, model, steppers, position)
    if spec.validates and weights is not None and position.best_epoch not in (0, position.epoch):
        weights = run.epoch_state(position.best_epoch)["model"]
    if group.rank == 0:
        if spec.validates and position.best_epoch:  # a kill after a checkpoint may have left another
            run.keep_epoch_state(position.best_epoch)
        run.save_weights(weights)
        run.write_schema(schema)
    parameter_bytes = group.gather(group.parameter_bytes(model))
    waited_share = group.sum(waited / elapsed) / group.size
    digest = weights_digest(weights) if weights is not None else ""
    return {
        "steps": position.step,
        "samples": total_samples,
        "seconds": round(elapsed, 3),
        "samples_per_s": round(total_samples / elapsed, 1),
        "data_wait_share": round(waited_share, 4),
        "param_bytes_per_rank": [int(b) for b in parameter_bytes],
        "device": device.type,
        "losses": position.losses,
        "valid_metric": validation_metric(config).name if spec.validates else None,
        "valid_per_epoch": [None if math.isnan(v) else round(v, 6) for v in position.valid_scores],
        "best_epoch": position.best_epoch or None,
        "rank": group.rank,
        "weights_digest": digest,
    }


# What a run's summary says of its cost beside its speed, which the run directory's metrics.json keeps.
RUN_COST_KEYS = ("data_wait_share", "param_bytes_per_rank")
# What it says of its epochs on the validation rows (None and an empty list without validation).
VALIDATION_KEYS = ("valid_metric", "valid_per_epoch", "best_epoch")


@dataclass(frozen=True)
class ValidationMetric:
    """What picks a run's epoch on its validation rows."""

    name: str
    higher_is_better: bool

    def better(self, score: float, than: float | None) -> bool:
        """Whether `score` beats `than` (None: no score yet); NaN beats nothing."""
        if math.isnan(score):
            return False
        if than is None:
            return True
        return score > than if self.higher_is_better else score < than


# The CTR models' log loss on the validation days; Mult-VAE's NDCG@100 of its validation users'
# held-out items, by which Liang et al. 2018 pick its epoch.
LOGLOSS = ValidationMetric("logloss", higher_is_better=False)
HELDOUT_NDCG = ValidationMetric(f"ndcg_at_{VAE_NDCG_CUTOFF}", higher_is_better=True)


def validation_metric(config: ModelConfig) -> ValidationMetric:
    return HELDOUT_NDCG if config.name == MULTVAE else LOGLOSS


def _stopped(spec: TrainSpec, position: checkpoint.Position) -> bool:
    """Whether validation has ended the run: `patience` epochs since the best one."""
    if not spec.validates or spec.patience is None or position.best_epoch == 0:
        return False
    return position.epoch - position.best_epoch >= spec.patience


def _validate(
    spec: TrainSpec,
    group: Collective,
    model: nn.Module,
    forward: nn.Module,
    steppers: list,
    padding: Batch,
    run: RunDirectory,
    position: checkpoint.Position,
) -> None:
    """Scores the epoch just finished on the validation rows; when it is the best so far its weights
    are kept, and a checkpoint records the position (every rank takes part: a sharded model gathers
    its tables)."""
    metric = validation_metric(ModelConfig.from_dict(spec.model))
    score = validation_score(spec, metric, group, model, forward, padding)
    missing = position.epoch - 1 - len(position.valid_scores)  # epochs trained before validation was on
    position.valid_scores.extend([math.nan] * missing + [score])
    best = position.valid_scores[position.best_epoch - 1] if position.best_epoch else None
    states = None
    if metric.better(score, best):
        states = group.model_state(model), group.optimizer_states(steppers)
        if group.rank == 0:
            run.save_epoch_state(position.epoch, {"model": states[0], "optimizers": states[1]})
        position.best_epoch = position.epoch
    _checkpoint(group, run, model, steppers, position, states)
    if group.rank == 0:
        run.keep_epoch_state(position.best_epoch)
        kept = f"best: epoch {position.best_epoch}"
        print(f"epoch {position.epoch}: validation {metric.name} {score:.5f} ({kept})", file=sys.stderr)


@torch.no_grad()
def validation_score(
    spec: TrainSpec,
    metric: ValidationMetric,
    group: Collective,
    model: nn.Module,
    forward: nn.Module,
    padding: Batch,
) -> float:
    """The model's `metric` (validation_metric of its config) over the validation rows, each rank
    scoring its whole files (a split any number of ranks can take), its sums added over ranks."""
    valid = FileSet.from_dict(spec.valid or {})
    model.eval()
    if metric is HELDOUT_NDCG:
        total, rows = heldout_ndcg_sum(model, rank_files(valid.files, group.rank, group.size))
        weight = float(rows)
    else:
        total, weight, rows = _logloss_sums(spec, group, forward, padding, valid)
    model.train()
    check_epoch_rows(int(group.sum(rows)), valid.rows, "validation")
    return group.sum(total) / max(group.sum(weight), 1.0)


def _logloss_sums(
    spec: TrainSpec, group: Collective, forward: nn.Module, padding: Batch, valid: FileSet
) -> tuple[float, float, int]:
    """This rank's summed log loss, weight and rows read over its files of `valid`. While any rank
    has rows, a rank out of them scores zero-weight padding: a sharded model's collectives stay
    matched."""
    schema = spec.features_schema()
    shard = dict(rank=group.rank, size=group.size, shuffle=False, whole_files=True)
    loader = BatchLoader(valid, schema, spec.batch_size, **shard)
    batches = loader.epoch(0)
    total, weight = 0.0, 0.0
    while True:
        batch = next(batches, None)
        if group.sum(batch is not None) == 0:
            return total, weight, loader.rows_read
        batch = (batch or padding).to(group.device)
        with precision(spec.precision, group.device):
            logits = forward(*batch.inputs()).float()
        losses = nn.functional.binary_cross_entropy_with_logits(logits, batch.label, reduction="none")
        total += float((losses * batch.weight).sum())
        weight += float(batch.weight.sum())


def objective(config: ModelConfig, outputs: object, batch: Batch, step: int, run_steps: int) -> torch.Tensor:
    """The loss a model trains on: Mult-VAE's negative ELBO over each row's bag of items, its KL
    weight annealed by step (over the run's `run_steps` unless the config says over how many);
    every other model's log loss on the click label."""
    if config.name == MULTVAE:
        _, _, values, offsets = batch.inputs()
        anneal = config.anneal_steps if config.anneal_steps is not None else run_steps
        beta = beta_at(step, config.beta_cap, anneal)
        return multvae_loss(outputs, values, offsets, batch.weight, beta)
    return bce_loss(outputs.float(), batch.label, batch.weight)


def _checkpoint(
    group: Collective,
    run: RunDirectory,
    model: nn.Module,
    steppers: list,
    position: checkpoint.Position,
    states: tuple[dict | None, list | None] | None = None,
) -> dict[str, torch.Tensor] | None:
    """Rank 0 saves a checkpoint (every rank takes part: a sharded model gathers its tables, unless
    the caller gathered its `states` already, model's and optimizers'); returns the unsharded weights
    where this rank has them (every rank of a data-parallel run, rank 0 of a sharded one), None
    elsewhere."""
    weights, optimizer_states = states or (group.model_state(model), group.optimizer_states(steppers))
    rngs = group.gather(checkpoint.rng_state(group.device))
    if group.rank == 0:
        checkpoint.save(run, weights, optimizer_states, position, rngs=rngs)
    return weights


def weights_digest(state: Mapping[str, torch.Tensor]) -> str:
    """A fingerprint of a state dict's bytes: equal on all ranks when they stayed in sync."""
    digest = hashlib.sha256()
    for name, tensor in sorted(state.items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def _since(started: float) -> float:
    return max(time.perf_counter() - started, 1e-9)
