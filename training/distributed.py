"""What the training loop needs from a distributed backend, for one process, Horovod, torch DDP and
TorchRec's sharded tables (training/sharded.py).

The loop is written once against `Collective`; the backend decides where the model lives, how its
gradients meet and how its state is saved. Horovod averages gradients in its DistributedOptimizer,
torch DDP in backward; both average a sparse embedding gradient by allgather of the rows it touched
(dense collectives, on gloo and NCCL alike), never as a dense table. Every backend saves the same
unsharded state dict, so serving reads any run alike, and a run resumes on another number of workers
or, between the data-parallel backends, on another backend (TorchRec's fused optimizer states have
another layout, so a resume between it and them is refused).
"""

import gc
import os
from typing import TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook
from torch.optim import Optimizer

from rec_plugin.schema import SchemaError
from training.checkpoint import Saved
from training.models.ctr import Embeddings
from training.models.parts import EmbeddingCollection
from training.step import OptimizerSettings

T = TypeVar("T")


def local_device(local_rank: int) -> torch.device:
    """This worker's GPU when the host has GPUs (one per local rank), else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def unsharded_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict on the host (checkpoints and weights load anywhere)."""
    return {name: tensor.detach().cpu() for name, tensor in model.state_dict().items()}


class Collective:
    """A single process: nothing to synchronize."""

    name = "single"
    rank, size, local_size, local_rank = 0, 1, 1, 0
    # What models build their tables with (training/models/ctr.py: EmbeddingCollection's constructor).
    embeddings: Embeddings = EmbeddingCollection

    @property
    def device(self) -> torch.device:
        return local_device(self.local_rank)

    def prepare(self, model: nn.Module, settings: OptimizerSettings) -> tuple[nn.Module, list[Optimizer]]:
        """The model to call forward on and the optimizers to step (and checkpoint), with the model
        on this worker's device and after the initial broadcast."""
        model.to(self.device)
        return model, [optimizer for optimizer, _ in settings.build(model)]

    def model_state(self, model: nn.Module) -> dict[str, torch.Tensor] | None:
        """The whole model's state dict, on every rank that holds it whole (all ranks of a
        data-parallel run, rank 0 of a sharded one, None elsewhere); every rank calls it, since a
        sharded model gathers its tables. `model` is the model as built (not the wrapper forward)."""
        return unsharded_state(model)

    def optimizer_states(self, optimizers: list[Optimizer]) -> list[dict] | None:
        """The optimizers' states, as model_state: where this rank holds them whole."""
        return [optimizer.state_dict() for optimizer in optimizers]

    def restore(self, model: nn.Module, optimizers: list[Optimizer], saved: Saved) -> None:
        """Loads a checkpoint's unsharded state into this rank's model and optimizers."""
        model.load_state_dict(saved.model)
        for optimizer, state in zip(optimizers, saved.optimizers, strict=True):
            optimizer.load_state_dict(state)

    def parameter_bytes(self, model: nn.Module) -> int:
        """Bytes of parameters this rank holds."""
        return sum(p.numel() * p.element_size() for p in model.parameters())

    def sum(self, value: float) -> float:
        return value

    def gather(self, value: T) -> list[T]:
        """`value` (any picklable object) of every rank, in rank order."""
        return [value]

    def close(self) -> None:
        """Leaves the process group (the process may host a later run)."""


class HorovodCollective(Collective):
    name = "horovod"

    def __init__(self) -> None:
        import horovod.torch as hvd

        hvd.init()
        self.hvd = hvd
        self.rank, self.size, self.local_size = hvd.rank(), hvd.size(), hvd.local_size()
        self.local_rank = hvd.local_rank()

    def prepare(self, model: nn.Module, settings: OptimizerSettings) -> tuple[nn.Module, list[Optimizer]]:
        # Fresh optimizers hold the same state on every rank; a resumed run loads one checkpoint on all.
        model.to(self.device)
        self.hvd.broadcast_parameters(model.state_dict(), root_rank=0)
        pairs = settings.build(model)
        return model, [self.hvd.DistributedOptimizer(o, named_parameters=named) for o, named in pairs]

    def sum(self, value: float) -> float:
        return float(self.hvd.allreduce(torch.tensor(float(value), dtype=torch.float64), op=self.hvd.Sum))

    def gather(self, value: T) -> list[T]:
        return list(self.hvd.allgather_object(value))

    def close(self) -> None:
        self.hvd.shutdown()


class TorchCollective(Collective):
    """torch.distributed as started by torchrun or Spark's TorchDistributor: NCCL between GPUs, gloo
    on CPU."""

    name = "torch"

    def __init__(self) -> None:
        self.local_rank = int(os.environ.get("LOCAL_RANK", 0))
        if not dist.is_initialized():
            # Its functions take the default group as a default argument, bound on first import (DDP
            # imports it): imported once the group exists, it would keep the group alive (see close).
            import torch.distributed.nn.functional  # noqa: F401

            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
        self.rank, self.size = dist.get_rank(), dist.get_world_size()
        self.local_size = int(os.environ.get("LOCAL_WORLD_SIZE", self.size))
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)

    def prepare(self, model: nn.Module, settings: OptimizerSettings) -> tuple[nn.Module, list[Optimizer]]:
        model.to(self.device)
        device_ids = [self.device] if self.device.type == "cuda" else None
        optimizers = [optimizer for optimizer, _ in settings.build(model)]
        wrapped = nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
        wrapped.register_comm_hook(None, average_rows_or_allreduce)
        return wrapped, optimizers

    def sum(self, value: float) -> float:
        total = torch.tensor(float(value), dtype=torch.float64, device=self._reduce_device)
        dist.all_reduce(total)
        return float(total)

    def gather(self, value: T) -> list[T]:
        values: list = [None] * self.size
        dist.all_gather_object(values, value)
        return values

    @property
    def _reduce_device(self) -> torch.device:
        """NCCL reduces only GPU tensors."""
        return self.device if dist.get_backend() == "nccl" else torch.device("cpu")

    def close(self) -> None:
        """Frees the process group, which joins gloo's worker threads. One still alive when the
        interpreter exits, and still holding the tensors of a finished collective, dies taking the
        GIL to free them, which aborts the process (SIGABRT, rank 1 of a test's DDP run in CI). The
        caller has dropped the model wrapped around the group; collect drops any cycle still
        holding it."""
        gc.collect()
        dist.destroy_process_group()


def average_rows_or_allreduce(
    process_group: dist.ProcessGroup | None, bucket: dist.GradBucket
) -> torch.futures.Future[torch.Tensor]:
    """DDP's averaging of one gradient bucket: a dense bucket by allreduce (DDP's own hook), a sparse
    embedding gradient by `average_sparse_rows`. Without it DDP hands a sparse gradient to the
    backend's sparse allreduce, which NCCL lacks: torch 2.13's `ProcessGroupNCCL::allreduce_sparse`
    only raises "NCCL does not support all_reduce with sparse tensors" outside Meta's NCCLX."""
    gradient = bucket.buffer()
    if not gradient.is_sparse:
        return allreduce_hook(process_group, bucket)
    averaged: torch.futures.Future[torch.Tensor] = torch.futures.Future()
    averaged.set_result(average_sparse_rows(gradient, process_group))
    return averaged


def average_sparse_rows(
    gradient: torch.Tensor, process_group: dist.ProcessGroup | None = None
) -> torch.Tensor:
    """The mean over ranks of a sparse (COO) gradient, from an allgather of every rank's touched rows
    and their values: row counts first, then both padded to the longest, so each collective moves
    tensors of one shape on every rank (what NCCL and gloo's dense allgather need)."""
    size = dist.get_world_size(process_group)
    rows = gradient.coalesce()
    indices, values = rows.indices(), rows.values()
    count = torch.tensor([indices.shape[1]], device=indices.device)
    counts = [torch.empty_like(count) for _ in range(size)]
    dist.all_gather(counts, count, group=process_group)
    lengths = [int(n) for n in counts]
    longest = max(lengths)
    padded_indices = indices.new_zeros((indices.shape[0], longest))
    padded_indices[:, : indices.shape[1]] = indices
    padded_values = values.new_zeros((longest, *values.shape[1:]))
    padded_values[: values.shape[0]] = values
    all_indices = [torch.empty_like(padded_indices) for _ in range(size)]
    all_values = [torch.empty_like(padded_values) for _ in range(size)]
    dist.all_gather(all_indices, padded_indices, group=process_group)
    dist.all_gather(all_values, padded_values, group=process_group)
    gathered_indices = torch.cat([part[:, :n] for part, n in zip(all_indices, lengths, strict=True)], dim=1)
    gathered_values = torch.cat([part[:n] for part, n in zip(all_values, lengths, strict=True)])
    averaged = torch.sparse_coo_tensor(
        gathered_indices, gathered_values / size, gradient.shape, check_invariants=False
    )  # rows of coalesced gradients: in range by construction
    return averaged.coalesce()


BACKENDS = ("single", "horovod", "torch", "torchrec")
# How the torchrec backend may split tables across ranks (TorchRec's sharding type names); with
# AUTO_SHARDING its planner chooses.
AUTO_SHARDING = "auto"
SHARDINGS = ("table_wise", "column_wise", "row_wise", AUTO_SHARDING)
# TorchRec 1.8 shards row-wise only on GPUs, and FBGEMM's CPU table kernels update with Adagrad only.
GPU_ONLY_SHARDINGS = ("row_wise",)
CPU_FUSED_OPTIMIZERS = ("adagrad",)


def refuse_torchrec_on_cpu(sharding: str, sparse_optimizer: str) -> None:
    """What the torchrec backend cannot do on CPU workers, as one SchemaError line: asked by the
    workers, and by `fit` before the run directory is written."""
    if sharding in GPU_ONLY_SHARDINGS:
        raise SchemaError(f"{sharding} sharding needs GPUs (TorchRec shards so only on CUDA); use table_wise")
    if sparse_optimizer not in CPU_FUSED_OPTIMIZERS:
        raise SchemaError(
            f"--backend torchrec on CPU updates tables with FBGEMM's fused kernels, which have no "
            f"{sparse_optimizer!r} on CPU: use --sparse-optimizer {' or '.join(CPU_FUSED_OPTIMIZERS)}"
        )


def collective(backend: str, sharding: str = "table_wise") -> Collective:
    """This process's part of `backend`; `sharding` says how the torchrec backend splits tables."""
    if backend == "torchrec":
        # Imported only when chosen: TorchRec and FBGEMM load slowly and other backends need neither.
        from training.sharded import TorchRecCollective

        return TorchRecCollective(sharding)
    classes: dict[str, type[Collective]] = {
        "single": Collective,
        "horovod": HorovodCollective,
        "torch": TorchCollective,
    }
    if backend not in classes:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    return classes[backend]()
