"""What a model is built from, as data: TorchRec-style embedding tables and the model's inputs by name.

`ModelConfig.from_schema` declares one table per categorical and per list column of a workflow's
schema (rec_plugin/schema.py), or per declared shared table (columns naming the same
`embedding_table`, e.g. item_id and a list of recent items: one vocabulary, one table); the config
is saved beside the weights, so serving and scoring rebuild the same model without the schema.
The model's inputs follow the schema's order: dense float32 [B, len(dense_features)], ids int64
[B, len(categorical_features)], and for the i-th list feature values int64 [N_i] and offsets int64
[B + 1] (TorchRec's jagged layout).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from functools import cached_property

import torch

from rec_plugin.schema import ColumnSchema, Schema, SchemaError

POOLINGS = ("sum", "mean")
# A table's width when none is given. DLRM takes the dot product of every pair of its field vectors,
# so each vector needs room to carry its field's interactions while staying near-orthogonal to the
# fields it does not interact with: on Criteo-like data (26 fields of up to 1e5 values, 24 planted
# rank-4 pairs, 600k training rows) one epoch scored test AUC 0.7238 at width 16, 0.7280 at 32 and
# 0.7310 at 64 (bench/quality.py's data; 1.5x the CPU time of width 16).
DEFAULT_EMBEDDING_DIM = 16
MODEL_EMBEDDING_DIMS = {"dlrm": 64}
# NeuMF whole, or one of its towers alone (pretraining, training/models/cf.py fuse_pretrained).
NEUMF, GMF, MLP = "neumf", "gmf", "mlp"
NCF_MODES = (NEUMF, GMF, MLP)


@dataclass(frozen=True)
class TableConfig:
    """One embedding table (TorchRec's EmbeddingBagConfig): `num_embeddings` rows (id 0 included) of
    `embedding_dim` floats, looked up by `features`; a list feature's vectors are pooled by `pooling`."""

    name: str
    num_embeddings: int
    embedding_dim: int
    features: tuple[str, ...]
    pooling: str = "sum"

    def __post_init__(self) -> None:
        if self.num_embeddings < 1 or self.embedding_dim < 1:
            raise SchemaError(
                f"table {self.name!r} needs at least one row and one dimension, "
                f"not {self.num_embeddings} x {self.embedding_dim}"
            )
        if self.pooling not in POOLINGS:
            raise SchemaError(f"table {self.name!r}: pooling {self.pooling!r} is not one of {POOLINGS}")
        if not self.features:
            raise SchemaError(f"table {self.name!r} serves no feature")

    @classmethod
    def from_dict(cls, data: dict) -> TableConfig:
        return cls(**{**data, "features": tuple(data["features"])})


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a model (saved beside its weights; the serving export reads it):
    its tables, its inputs by name in the schema's order, and its hyperparameters."""

    name: str
    tables: tuple[TableConfig, ...] = ()
    dense_features: tuple[str, ...] = ()
    categorical_features: tuple[str, ...] = ()
    list_features: tuple[str, ...] = ()
    bottom_mlp: tuple[int, ...] = (64,)
    top_mlp: tuple[int, ...] = (128, 64)
    deep_mlp: tuple[int, ...] = (256, 128)
    cross_layers: int = 3
    # NeuMF (training/models/cf.py): its MLP tower's layer widths; which towers it has.
    ncf_mlp: tuple[int, ...] = (64, 32, 16)
    ncf_mode: str = NEUMF
    # Mult-VAE: encoder widths (the decoder mirrors them), latent width, input dropout (Liang et al.
    # 2018: [600], 200, 0.5), and the KL weight beta = min(beta_cap, step / anneal_steps); None: the
    # run's steps, so that beta rises to 1 over the run whatever the data's size. Liang et al.'s
    # 1/200,000 a step, capped at 0.2, leaves beta under 0.0005 in the 440 steps that 10 epochs of the
    # e-commerce demo's 45k train users make: on that data (~5 clicks a user) the test users' NDCG@100
    # was 0.108 with it, 0.117 at 1/450 a step capped at 0.2, and 0.125 at 1/450 capped at 1
    # (popularity: 0.124).
    vae_hidden: tuple[int, ...] = (600,)
    vae_latent: int = 200
    vae_dropout: float = 0.5
    beta_cap: float = 1.0
    anneal_steps: int | None = None

    def __post_init__(self) -> None:
        if self.ncf_mode not in NCF_MODES:
            raise SchemaError(f"ncf_mode {self.ncf_mode!r} is not one of {NCF_MODES}")
        if self.beta_cap < 0 or (self.anneal_steps is None and self.beta_cap > 1):
            raise SchemaError(
                f"beta_cap {self.beta_cap} is never the KL weight: beta rises from 0 to 1 over the run (by "
                "1 / anneal_steps a step when anneal_steps is given) and the cap only lowers it; give a cap "
                "of 0 to 1, or one above 1 with anneal_steps"
            )
        table_of = {}
        for table in self.tables:
            for feature in table.features:
                if feature in table_of:
                    raise SchemaError(
                        f"feature {feature!r} is in tables {table_of[feature].name!r} and {table.name!r}"
                    )
                table_of[feature] = table
        sparse = [*self.categorical_features, *self.list_features]
        if len(set(sparse)) != len(sparse):
            raise SchemaError(f"a sparse feature is listed twice in {sparse}")
        if missing := [f for f in sparse if f not in table_of]:
            raise SchemaError(f"features {missing} have no embedding table")
        if unused := sorted(set(table_of) - set(sparse)):
            raise SchemaError(f"tables serve features {unused} that are not model inputs")

    HYPERPARAMETERS = (
        "bottom_mlp",
        "top_mlp",
        "deep_mlp",
        "cross_layers",
        "ncf_mlp",
        "ncf_mode",
        "vae_hidden",
        "vae_latent",
        "vae_dropout",
        "beta_cap",
        "anneal_steps",
    )
    # Hyperparameters of the loss over the steps, not of the weights: a warm start may change them.
    SCHEDULE_HYPERPARAMETERS = ("beta_cap", "anneal_steps")

    @classmethod
    def from_schema(
        cls,
        name: str,
        schema: Schema,
        embedding_dim: int | None = None,
        table_dims: Mapping[str, int] | None = None,
        list_pooling: str = "sum",
        **hyper: object,
    ) -> ModelConfig:
        """One table per embedding table the categorical and list columns of `schema` name (their own,
        or a shared one), in order of first use: the columns' cardinality rows, dim `embedding_dim`
        (default: the model's, MODEL_EMBEDDING_DIMS, else DEFAULT_EMBEDDING_DIM)
        unless `table_dims` names another, pooled by `list_pooling` when a list reads it; `hyper` are
        the model's hyperparameters (HYPERPARAMETERS)."""
        dims = dict(table_dims or {})
        if embedding_dim is None:
            embedding_dim = MODEL_EMBEDDING_DIMS.get(name, DEFAULT_EMBEDDING_DIM)
        groups: dict[str, list[ColumnSchema]] = {}
        for column in (*schema.categorical, *schema.lists):
            if column.cardinality is None:
                raise SchemaError(
                    f"categorical column {column.name!r} has no cardinality in the schema: "
                    "fit the workflow (Categorify or HashBucket) that makes its ids"
                )
            groups.setdefault(column.embedding_table_name, []).append(column)
        tables = []
        for table, columns in groups.items():
            sizes = {c.name: c.cardinality for c in columns}
            if len(set(sizes.values())) > 1:
                raise SchemaError(f"columns sharing table {table!r} declare different cardinalities {sizes}")
            tables.append(
                TableConfig(
                    table,
                    columns[0].cardinality,
                    dims.pop(table, embedding_dim),
                    tuple(sizes),
                    list_pooling if any(c.is_list for c in columns) else "sum",
                )
            )
        if dims:
            raise SchemaError(f"table_dims names {sorted(dims)}, which are not embedding tables")
        tuples = {k: tuple(v) if isinstance(v, list) else v for k, v in hyper.items()}
        return cls(
            name,
            tuple(tables),
            tuple(schema.continuous.names),
            tuple(schema.categorical.names),
            tuple(schema.lists.names),
            **tuples,  # type: ignore[arg-type]
        )

    @cached_property
    def _tables_by_feature(self) -> dict[str, TableConfig]:
        return {feature: table for table in self.tables for feature in table.features}

    def table_of(self, feature: str) -> TableConfig:
        return self._tables_by_feature[feature]

    @property
    def embedding_dims(self) -> tuple[int, ...]:
        """The distinct table dims, ascending."""
        return tuple(sorted({table.embedding_dim for table in self.tables}))

    @property
    def flat_width(self) -> int:
        """Width of the dense features and every sparse feature's vector side by side."""
        sparse = (*self.categorical_features, *self.list_features)
        return len(self.dense_features) + sum(self.table_of(f).embedding_dim for f in sparse)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ModelConfig:
        tuples = {k: tuple(v) for k, v in data.items() if isinstance(v, list)}
        tables = tuple(TableConfig.from_dict(t) for t in data.get("tables", ()))
        return cls(**{**data, **tuples, "tables": tables})


def example_inputs(
    config: ModelConfig, batch_size: int, generator: torch.Generator, max_length: int = 8
) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
    """Random model inputs: ids within each table's rows, list lengths drawn from 0..max_length."""
    dense = torch.randn(batch_size, len(config.dense_features), generator=generator)
    ids = torch.stack(
        [
            torch.randint(0, config.table_of(f).num_embeddings, (batch_size,), generator=generator)
            for f in config.categorical_features
        ]
        or [torch.zeros(batch_size, dtype=torch.int64)],
        dim=1,
    )[:, : len(config.categorical_features)]
    values, offsets = [], []
    for feature in config.list_features:
        lengths = torch.randint(0, max_length + 1, (batch_size,), generator=generator)
        offsets.append(torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0)]))
        rows = config.table_of(feature).num_embeddings
        values.append(torch.randint(0, rows, (int(lengths.sum()),), generator=generator))
    return dense, ids, values, offsets
