"""The parts of one optimization step that the training loop and bench/train_gpu.py share: the
optimizers and the loss (imports only torch and the models, so it runs where no data stack is
installed)."""

from __future__ import annotations

import torch
from torch import nn

from training.models import sparse_and_dense_parameters


def optimizers(
    model: nn.Module, sparse_lr: float, dense_lr: float
) -> list[tuple[torch.optim.Optimizer, list]]:
    """SparseAdam for the embedding rows (only the rows a batch touched change), Adam for dense layers.

    On the default data SparseAdam reached a higher one-epoch AUC than Adagrad (see the README)."""
    sparse, dense = sparse_and_dense_parameters(model)
    pairs = [(torch.optim.SparseAdam([p for _, p in sparse], lr=sparse_lr), sparse)]
    if dense:
        pairs.append((torch.optim.Adam([p for _, p in dense], lr=dense_lr), dense))
    return pairs


def bce_loss(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted mean log loss (padding rows carry weight 0)."""
    losses = nn.functional.binary_cross_entropy_with_logits(logits, labels, reduction="none")
    return (losses * weights).sum() / weights.sum().clamp(min=1.0)
