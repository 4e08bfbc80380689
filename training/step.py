"""The parts of one optimization step that the training loop and bench/train_gpu.py share: the
optimizers and the loss (imports only torch and the models, so it runs where no data stack is
installed)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, replace

import torch
from torch import nn

from training.models import sparse_and_dense_parameters

# Embedding-row optimizers (both update only the rows a batch touched) and their default rates. On
# the bench's Criteo data (2 days x 100k rows, one epoch, test AUC): SparseAdam 0.01 gave 0.7959;
# Adagrad 0.05 0.7943, 0.1 0.7986, 0.2 0.7999, 0.4 0.7988. 0.1 leaves room for rare ids' first steps.
SPARSE_LEARNING_RATES = {"adam": 0.01, "adagrad": 0.1}
SPARSE_OPTIMIZERS = tuple(SPARSE_LEARNING_RATES)
# Adagrad's denominator term, the same in torch's sparse Adagrad and FBGEMM's fused kernel.
ADAGRAD_EPS = 1e-8


# fp32; TF32 matmuls on GPUs that have them (fp32 on CPU); bf16 autocast of the dense layers.
PRECISIONS = ("fp32", "tf32", "bf16")


@contextlib.contextmanager
def precision(name: str, device: torch.device) -> Iterator[None]:
    """Runs the forward pass at precision `name` on `device`: embeddings, their optimizer and the
    loss stay fp32 (autocast keeps lookups and the log loss in fp32)."""
    if name not in PRECISIONS:
        raise ValueError(f"precision {name!r} is not one of {PRECISIONS}")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = name != "fp32"
        torch.backends.cudnn.allow_tf32 = name != "fp32"
    if name == "bf16":
        with torch.autocast(device.type, dtype=torch.bfloat16):
            yield
    else:
        yield


@dataclass(frozen=True)
class OptimizerSettings:
    """Which optimizer updates the embedding rows, at which rate, and the dense layers' Adam rate."""

    sparse: str = "adam"
    sparse_lr: float | None = None  # None: the optimizer's default (SPARSE_LEARNING_RATES)
    dense_lr: float = 3e-3

    def __post_init__(self) -> None:
        if self.sparse not in SPARSE_OPTIMIZERS:
            raise ValueError(f"sparse optimizer {self.sparse!r} is not one of {SPARSE_OPTIMIZERS}")
        if self.sparse_lr is None:
            object.__setattr__(self, "sparse_lr", SPARSE_LEARNING_RATES[self.sparse])

    def scaled(self, factor: float) -> OptimizerSettings:
        """The same optimizers with both learning rates times `factor`."""
        return replace(self, sparse_lr=self.sparse_lr * factor, dense_lr=self.dense_lr * factor)

    def sparse_optimizer(self, parameters: list[nn.Parameter]) -> torch.optim.Optimizer:
        """SparseAdam (on the default data it reached a higher one-epoch AUC than Adagrad, see the
        README) or Adagrad, both on sparse gradients."""
        if self.sparse == "adam":
            return torch.optim.SparseAdam(parameters, lr=self.sparse_lr)
        return torch.optim.Adagrad(parameters, lr=self.sparse_lr, eps=ADAGRAD_EPS)

    def dense_optimizer(self, parameters: list[nn.Parameter]) -> torch.optim.Optimizer:
        return torch.optim.Adam(parameters, lr=self.dense_lr)

    def build(self, model: nn.Module) -> list[tuple[torch.optim.Optimizer, list]]:
        """(optimizer, its named parameters): the sparse one for the embedding tables, Adam for the rest."""
        sparse, dense = sparse_and_dense_parameters(model)
        pairs = [(self.sparse_optimizer([p for _, p in sparse]), sparse)]
        if dense:
            pairs.append((self.dense_optimizer([p for _, p in dense]), dense))
        return pairs


def optimizers(
    model: nn.Module, sparse_lr: float, dense_lr: float
) -> list[tuple[torch.optim.Optimizer, list]]:
    """The default optimizers (SparseAdam for the embedding rows, Adam for dense layers)."""
    return OptimizerSettings("adam", sparse_lr, dense_lr).build(model)


def bce_loss(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted mean log loss (padding rows carry weight 0)."""
    losses = nn.functional.binary_cross_entropy_with_logits(logits, labels, reduction="none")
    return (losses * weights).sum() / weights.sum().clamp(min=1.0)
