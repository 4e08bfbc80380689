"""The CTR models, each a composition of the shared parts: DLRM, DCN-v2, Wide&Deep, DeepFM, and the
first-order logistic baseline they are measured against.

Every model takes any number of dense, single-id and list features, as its ModelConfig (built from
the workflow's schema) declares them, and has one call signature, the one serving exports:

    forward(dense float32 [B, n_dense], ids int64 [B, n_categorical],
            list_values: list of int64 [N_i], list_offsets: list of int64 [B + 1]) -> logits [B]

A pooled list feature is one more field vector beside the single-id features' vectors. Each model
takes its tables from an `embeddings` class with EmbeddingCollection's constructor and call: ours by
default, TorchRec's sharded collection under `--backend torchrec` (training/sharded.py).
"""

# No `from __future__ import annotations`: TorchScript reads these modules' annotations as types.
from collections.abc import Callable

import torch
from torch import nn

from rec_plugin.schema import SchemaError
from training.models.cf import CF_MODELS
from training.models.config import ModelConfig
from training.models.parts import (
    CrossNetwork,
    DotInteraction,
    EmbeddingCollection,
    FactorizationMachine,
    mlp,
)

# A class with EmbeddingCollection's constructor (tables, id_features, list_features, dim=, init_std=).
Embeddings = Callable[..., nn.Module]


def _embeddings(config: ModelConfig, embeddings: Embeddings) -> nn.Module:
    return embeddings(config.tables, config.categorical_features, config.list_features)


def _one_dim(config: ModelConfig) -> int:
    """The embedding dim every table shares: interactions take dot products between field vectors."""
    dims = config.embedding_dims
    if len(dims) != 1:
        raise SchemaError(
            f"{config.name} takes dot products of field vectors, so every table needs the same "
            f"embedding dim; the tables have dims {list(dims)}"
        )
    return dims[0]


def _fields(config: ModelConfig) -> int:
    return len(config.categorical_features) + len(config.list_features)


def _flat(dense: torch.Tensor, blocks: list[torch.Tensor]) -> torch.Tensor:
    """Dense features and every field's vector side by side: [B, flat_width]."""
    return torch.cat([dense] + [block.flatten(1) for block in blocks], dim=1)


def _stacked(blocks: list[torch.Tensor]) -> torch.Tensor:
    """Every field's vector of one dim: [B, fields, dim]."""
    return blocks[0] if len(blocks) == 1 else torch.cat(blocks, dim=1)


class Logistic(nn.Module):
    """First-order baseline: one weight per id of every table plus a linear term in the dense features."""

    def __init__(self, config: ModelConfig, embeddings: Embeddings = EmbeddingCollection) -> None:
        super().__init__()
        self.first_order = embeddings(
            config.tables, config.categorical_features, config.list_features, dim=1, init_std=0.0
        )
        self.dense = nn.Linear(len(config.dense_features), 1)

    def forward(
        self,
        dense: torch.Tensor,
        ids: torch.Tensor,
        list_values: list[torch.Tensor],
        list_offsets: list[torch.Tensor],
    ) -> torch.Tensor:
        logits = self.dense(dense).squeeze(1)
        for block in self.first_order(ids, list_values, list_offsets):
            logits = logits + block.sum(dim=(1, 2))
        return logits


class DLRM(nn.Module):
    """Bottom MLP on dense features, dot interaction among all vectors, top MLP on the result."""

    def __init__(self, config: ModelConfig, embeddings: Embeddings = EmbeddingCollection) -> None:
        super().__init__()
        dim, fields = _one_dim(config), _fields(config)
        self.embeddings = _embeddings(config, embeddings)
        self.bottom = mlp([len(config.dense_features), *config.bottom_mlp, dim])
        self.interaction = DotInteraction(fields + 1)
        self.top = mlp([dim + DotInteraction.output_width(fields + 1), *config.top_mlp, 1], False)

    def forward(
        self,
        dense: torch.Tensor,
        ids: torch.Tensor,
        list_values: list[torch.Tensor],
        list_offsets: list[torch.Tensor],
    ) -> torch.Tensor:
        dense_vector = self.bottom(dense)
        blocks = self.embeddings(ids, list_values, list_offsets)
        vectors = torch.cat([dense_vector.unsqueeze(1)] + blocks, dim=1)
        return self.top(torch.cat([dense_vector, self.interaction(vectors)], dim=1)).squeeze(1)


class DCNv2(nn.Module):
    """Cross network then a deep MLP (the stacked DCN-v2) over dense features and embeddings."""

    def __init__(self, config: ModelConfig, embeddings: Embeddings = EmbeddingCollection) -> None:
        super().__init__()
        width = config.flat_width
        self.embeddings = _embeddings(config, embeddings)
        self.cross = CrossNetwork(width, config.cross_layers)
        self.deep = mlp([width, *config.deep_mlp, 1], False)

    def forward(
        self,
        dense: torch.Tensor,
        ids: torch.Tensor,
        list_values: list[torch.Tensor],
        list_offsets: list[torch.Tensor],
    ) -> torch.Tensor:
        flat = _flat(dense, self.embeddings(ids, list_values, list_offsets))
        return self.deep(self.cross(flat)).squeeze(1)


class WideDeep(nn.Module):
    """A wide first-order part (the logistic baseline) plus a deep MLP over all features."""

    def __init__(self, config: ModelConfig, embeddings: Embeddings = EmbeddingCollection) -> None:
        super().__init__()
        self.wide = Logistic(config, embeddings)
        self.embeddings = _embeddings(config, embeddings)
        self.deep = mlp([config.flat_width, *config.deep_mlp, 1], False)

    def forward(
        self,
        dense: torch.Tensor,
        ids: torch.Tensor,
        list_values: list[torch.Tensor],
        list_offsets: list[torch.Tensor],
    ) -> torch.Tensor:
        deep = self.deep(_flat(dense, self.embeddings(ids, list_values, list_offsets))).squeeze(1)
        return self.wide(dense, ids, list_values, list_offsets) + deep


class DeepFM(nn.Module):
    """First-order terms, an FM over the field embeddings, and a deep MLP sharing those embeddings."""

    def __init__(self, config: ModelConfig, embeddings: Embeddings = EmbeddingCollection) -> None:
        super().__init__()
        _one_dim(config)
        self.first_order = Logistic(config, embeddings)
        self.embeddings = _embeddings(config, embeddings)
        self.fm = FactorizationMachine()
        self.deep = mlp([config.flat_width, *config.deep_mlp, 1], False)

    def forward(
        self,
        dense: torch.Tensor,
        ids: torch.Tensor,
        list_values: list[torch.Tensor],
        list_offsets: list[torch.Tensor],
    ) -> torch.Tensor:
        vectors = _stacked(self.embeddings(ids, list_values, list_offsets))
        deep = self.deep(torch.cat([dense, vectors.flatten(1)], dim=1))
        first_order = self.first_order(dense, ids, list_values, list_offsets)
        return first_order + (self.fm(vectors) + deep).squeeze(1)


# The CTR models: the one signature above, logits [B] of any schema's features.
MODELS: dict[str, type[nn.Module]] = {
    "dlrm": DLRM,
    "dcnv2": DCNv2,
    "wide_deep": WideDeep,
    "deepfm": DeepFM,
    "logistic": Logistic,
}


# Every model build_model knows: the CTR models and the collaborative-filtering ones (cf.py), which
# read only the interaction tables' schemas.
ALL_MODELS: dict[str, type[nn.Module]] = {**MODELS, **CF_MODELS}


def build_model(config: ModelConfig, embeddings: Embeddings = EmbeddingCollection) -> nn.Module:
    """The model `config` names, its tables built by `embeddings`."""
    if config.name not in ALL_MODELS:
        raise ValueError(f"unknown model {config.name!r}; choose one of {sorted(ALL_MODELS)}")
    return ALL_MODELS[config.name](config, embeddings)


def sparse_and_dense_parameters(
    model: nn.Module,
) -> tuple[list[tuple[str, nn.Parameter]], list[tuple[str, nn.Parameter]]]:
    """(embedding tables, everything else) as named parameters: they take different optimizers."""
    sparse_names = {
        f"{prefix}.weight" if prefix else "weight"
        for prefix, module in model.named_modules()
        if isinstance(module, nn.Embedding) and module.sparse
    }
    named = list(model.named_parameters())
    return [p for p in named if p[0] in sparse_names], [p for p in named if p[0] not in sparse_names]
