"""What the training loop needs from a distributed backend, for one process, Horovod and torch DDP.

The loop is written once against `Collective`; the backend decides how gradients meet. Horovod
averages them in its DistributedOptimizer (sparse embedding gradients by allgather of their rows);
torch DDP averages them in backward (gloo reduces sparse gradients too).
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import nn
from torch.optim import Optimizer

NamedParameters = list[tuple[str, nn.Parameter]]


class Collective:
    """A single process: nothing to synchronize."""

    name = "single"
    rank, size, local_size = 0, 1, 1

    def prepare(
        self, model: nn.Module, optimizers: list[tuple[Optimizer, NamedParameters]]
    ) -> tuple[nn.Module, list[Optimizer]]:
        """The model to call forward on and the optimizers to step (and checkpoint), after the
        initial broadcast; Horovod's optimizers are new objects with their own state."""
        return model, [optimizer for optimizer, _ in optimizers]

    def sum(self, value: float) -> float:
        return value

    def close(self) -> None:
        """Leaves the process group (the process may host a later run)."""


class HorovodCollective(Collective):
    name = "horovod"

    def __init__(self) -> None:
        import horovod.torch as hvd

        hvd.init()
        self.hvd = hvd
        self.rank, self.size, self.local_size = hvd.rank(), hvd.size(), hvd.local_size()

    def prepare(
        self, model: nn.Module, optimizers: list[tuple[Optimizer, NamedParameters]]
    ) -> tuple[nn.Module, list[Optimizer]]:
        # Fresh optimizers hold the same state on every rank; a resumed run loads one checkpoint on all.
        self.hvd.broadcast_parameters(model.state_dict(), root_rank=0)
        return model, [self.hvd.DistributedOptimizer(o, named_parameters=named) for o, named in optimizers]

    def sum(self, value: float) -> float:
        return float(self.hvd.allreduce(torch.tensor(float(value), dtype=torch.float64), op=self.hvd.Sum))

    def close(self) -> None:
        self.hvd.shutdown()


class TorchCollective(Collective):
    """torch.distributed over gloo, as started by torchrun or Spark's TorchDistributor."""

    name = "torch"

    def __init__(self) -> None:
        if not dist.is_initialized():
            dist.init_process_group("gloo")
        self.rank, self.size = dist.get_rank(), dist.get_world_size()
        self.local_size = int(os.environ.get("LOCAL_WORLD_SIZE", self.size))

    def prepare(
        self, model: nn.Module, optimizers: list[tuple[Optimizer, NamedParameters]]
    ) -> tuple[nn.Module, list[Optimizer]]:
        return nn.parallel.DistributedDataParallel(model), [optimizer for optimizer, _ in optimizers]

    def sum(self, value: float) -> float:
        total = torch.tensor(float(value), dtype=torch.float64)
        dist.all_reduce(total)
        return float(total)

    def close(self) -> None:
        dist.destroy_process_group()


BACKENDS: dict[str, type[Collective]] = {
    "single": Collective,
    "horovod": HorovodCollective,
    "torch": TorchCollective,
}


def collective(backend: str) -> Collective:
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {sorted(BACKENDS)}")
    return BACKENDS[backend]()
