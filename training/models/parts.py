"""Shared model parts, TorchRec-style: the embedding collection, MLP blocks and interaction layers."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class EmbeddingCollection(nn.Module):
    """Every categorical field's table in one sparse embedding, addressed by per-field row offsets.

    One table means one lookup and one sparse gradient per step instead of 26; `sparse=True` makes
    the gradient touch only the rows a batch used."""

    def __init__(self, cardinalities: Sequence[int], dim: int, init_std: float = 0.05) -> None:
        super().__init__()
        offsets = torch.tensor([0, *list(cardinalities)[:-1]], dtype=torch.int64).cumsum(0)
        self.register_buffer("offsets", offsets, persistent=False)
        self.cardinalities = list(cardinalities)
        self.table = nn.Embedding(sum(cardinalities), dim, sparse=True)
        nn.init.normal_(self.table.weight, std=init_std)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """int64 [B, fields] ids -> [B, fields, dim] vectors."""
        return self.table(ids + self.offsets)


def mlp(sizes: Sequence[int], last_activation: bool = True) -> nn.Sequential:
    """Linear layers through `sizes` (the first is the input width) with ReLU between them."""
    layers: list[nn.Module] = []
    for index, (width_in, width_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(width_in, width_out))
        if last_activation or index < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class DotInteraction(nn.Module):
    """DLRM's interaction: the dot product of every pair of feature vectors (upper triangle)."""

    def __init__(self, num_vectors: int) -> None:
        super().__init__()
        rows, cols = torch.triu_indices(num_vectors, num_vectors, offset=1)
        self.register_buffer("upper", rows * num_vectors + cols, persistent=False)

    @staticmethod
    def output_width(num_vectors: int) -> int:
        return num_vectors * (num_vectors - 1) // 2

    def forward(self, vectors: torch.Tensor) -> torch.Tensor:
        """[B, n, d] -> [B, n (n - 1) / 2]. The upper triangle is taken from the flattened gram matrix
        with index_select: at batch 2048 on CPU, 0.24 ms against 0.83 ms for gram[:, rows, cols] (and
        `@` 0.61 ms against 1.06 ms for torch.bmm, with equal results)."""
        gram = vectors @ vectors.transpose(1, 2)
        return gram.flatten(1).index_select(1, self.upper)


class CrossNetwork(nn.Module):
    """DCN-v2's cross layers: x_{l+1} = x_0 * (W_l x_l + b_l) + x_l, explicit bounded-degree crosses."""

    def __init__(self, width: int, num_layers: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(width, width) for _ in range(num_layers))

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        x = x0
        for layer in self.layers:
            x = x0 * layer(x) + x
        return x


class FactorizationMachine(nn.Module):
    """The FM second-order term, sum over pairs <v_i, v_j>, in O(n d) by the square-of-sums identity."""

    def forward(self, vectors: torch.Tensor) -> torch.Tensor:
        """[B, n, d] -> [B, 1]."""
        square_of_sum = vectors.sum(dim=1).pow(2)
        sum_of_squares = vectors.pow(2).sum(dim=1)
        return 0.5 * (square_of_sum - sum_of_squares).sum(dim=1, keepdim=True)
