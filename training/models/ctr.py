"""The CTR models, each a composition of the shared parts: DLRM, DCN-v2, Wide&Deep, DeepFM, and the
first-order logistic baseline they are measured against."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from training.models.parts import (
    CrossNetwork,
    DotInteraction,
    EmbeddingCollection,
    FactorizationMachine,
    mlp,
)


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a model (saved beside its weights; the serving export reads it)."""

    name: str
    cardinalities: tuple[int, ...]
    num_dense: int = 13
    embedding_dim: int = 16
    bottom_mlp: tuple[int, ...] = (64,)
    top_mlp: tuple[int, ...] = (128, 64)
    deep_mlp: tuple[int, ...] = (256, 128)
    cross_layers: int = 3

    @property
    def flat_width(self) -> int:
        """Width of the dense features and every field's embedding side by side."""
        return self.num_dense + len(self.cardinalities) * self.embedding_dim

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ModelConfig:
        tuples = {k: tuple(v) for k, v in data.items() if isinstance(v, list)}
        return cls(**{**data, **tuples})


class Logistic(nn.Module):
    """First-order baseline: one weight per category value plus a linear term in the dense features."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.first_order = EmbeddingCollection(config.cardinalities, 1, init_std=0.0)
        self.dense = nn.Linear(config.num_dense, 1)

    def forward(self, dense: torch.Tensor, categorical: torch.Tensor) -> torch.Tensor:
        return self.dense(dense).squeeze(1) + self.first_order(categorical).sum(dim=(1, 2))


class DLRM(nn.Module):
    """Bottom MLP on dense features, dot interaction among all vectors, top MLP on the result."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        dim, fields = config.embedding_dim, len(config.cardinalities)
        self.embeddings = EmbeddingCollection(config.cardinalities, dim)
        self.bottom = mlp([config.num_dense, *config.bottom_mlp, dim])
        self.interaction = DotInteraction(fields + 1)
        self.top = mlp([dim + DotInteraction.output_width(fields + 1), *config.top_mlp, 1], False)

    def forward(self, dense: torch.Tensor, categorical: torch.Tensor) -> torch.Tensor:
        dense_vector = self.bottom(dense)
        vectors = torch.cat([dense_vector.unsqueeze(1), self.embeddings(categorical)], dim=1)
        return self.top(torch.cat([dense_vector, self.interaction(vectors)], dim=1)).squeeze(1)


def _flat_inputs(
    embeddings: EmbeddingCollection, dense: torch.Tensor, categorical: torch.Tensor
) -> torch.Tensor:
    return torch.cat([dense, embeddings(categorical).flatten(1)], dim=1)


class DCNv2(nn.Module):
    """Cross network then a deep MLP (the stacked DCN-v2) over dense features and embeddings."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        width = config.flat_width
        self.embeddings = EmbeddingCollection(config.cardinalities, config.embedding_dim)
        self.cross = CrossNetwork(width, config.cross_layers)
        self.deep = mlp([width, *config.deep_mlp, 1], False)

    def forward(self, dense: torch.Tensor, categorical: torch.Tensor) -> torch.Tensor:
        return self.deep(self.cross(_flat_inputs(self.embeddings, dense, categorical))).squeeze(1)


class WideDeep(nn.Module):
    """A wide first-order part (the logistic baseline) plus a deep MLP over all features."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        width = config.flat_width
        self.wide = Logistic(config)
        self.embeddings = EmbeddingCollection(config.cardinalities, config.embedding_dim)
        self.deep = mlp([width, *config.deep_mlp, 1], False)

    def forward(self, dense: torch.Tensor, categorical: torch.Tensor) -> torch.Tensor:
        deep = self.deep(_flat_inputs(self.embeddings, dense, categorical)).squeeze(1)
        return self.wide(dense, categorical) + deep


class DeepFM(nn.Module):
    """First-order terms, an FM over the field embeddings, and a deep MLP sharing those embeddings."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        width = config.flat_width
        self.first_order = Logistic(config)
        self.embeddings = EmbeddingCollection(config.cardinalities, config.embedding_dim)
        self.fm = FactorizationMachine()
        self.deep = mlp([width, *config.deep_mlp, 1], False)

    def forward(self, dense: torch.Tensor, categorical: torch.Tensor) -> torch.Tensor:
        vectors = self.embeddings(categorical)
        deep = self.deep(torch.cat([dense, vectors.flatten(1)], dim=1))
        return self.first_order(dense, categorical) + (self.fm(vectors) + deep).squeeze(1)


MODELS: dict[str, type[nn.Module]] = {
    "dlrm": DLRM,
    "dcnv2": DCNv2,
    "wide_deep": WideDeep,
    "deepfm": DeepFM,
    "logistic": Logistic,
}


def build_model(config: ModelConfig) -> nn.Module:
    if config.name not in MODELS:
        raise ValueError(f"unknown model {config.name!r}; choose one of {sorted(MODELS)}")
    return MODELS[config.name](config)


def sparse_and_dense_parameters(
    model: nn.Module,
) -> tuple[list[tuple[str, nn.Parameter]], list[tuple[str, nn.Parameter]]]:
    """(embedding tables, everything else) as named parameters: they take different optimizers."""
    sparse_names = {
        f"{prefix}.table.weight" if prefix else "table.weight"
        for prefix, module in model.named_modules()
        if isinstance(module, EmbeddingCollection)
    }
    named = list(model.named_parameters())
    return [p for p in named if p[0] in sparse_names], [p for p in named if p[0] not in sparse_names]
