"""Shared model parts, TorchRec-style: the embedding collection, MLP blocks and interaction layers."""

# No `from __future__ import annotations`: TorchScript reads these modules' annotations as types.
import zlib
from collections.abc import Sequence

import torch
from torch import nn

from rec_plugin.schema import SchemaError
from training.models.config import TableConfig

# The standard deviation the tables' rows are drawn with (the first-order weights start at 0).
INIT_STD = 0.05


def initial_rows(table: TableConfig, dim: int, std: float) -> torch.Tensor:
    """A table's initial [rows, dim] weights, drawn from its own generator seeded by torch's seed and
    the table's name: the same values whichever rank or backend builds the table (a sharded run and a
    data-parallel run from one seed start alike), and building one table draws nothing from the others'."""
    seed = (torch.initial_seed() * 1_000_003 + zlib.crc32(table.name.encode())) % 2**63
    generator = torch.Generator().manual_seed(seed)
    weights = torch.empty(table.num_embeddings, dim)
    return weights.normal_(0.0, std, generator=generator) if std > 0 else weights.zero_()


def refuse_id(feature: str, table: str, bad: int, rows: int) -> None:
    """The one-line error for an id outside its table (the data and the model's schema disagree)."""
    raise SchemaError(
        f"feature {feature}: id {bad} is outside its table {table} of {rows} rows (ids 0 to {rows - 1}); "
        "the data and the model's schema disagree"
    )


class FusedTables(nn.Module):
    """Tables of one embedding dim fused into one sparse weight, each at its own row offset (as
    FBGEMM's table-batched embedding does): one lookup and one sparse gradient per step for all its
    single-id features instead of one per table; `sparse=True` makes the gradient touch only the rows
    a batch used. Every id is checked against its own table's rows first (a per-column min and max),
    so an id past its table fails naming the feature instead of reading the next table's rows.

    `table_rows` is saved with the weights: loading weights whose tables have other sizes fails in
    one line naming the table (see `_load_from_state_dict`)."""

    # Declared for TorchScript, which cannot type an empty list from its value.
    check_ids: bool
    table_names: list[str]
    all_columns: bool
    has_ids: bool
    id_names: list[str]
    id_tables: list[str]
    list_slots: list[int]
    list_names: list[str]
    list_tables: list[str]
    list_starts: list[int]
    list_rows: list[int]
    list_modes: list[str]

    def __init__(
        self,
        tables: Sequence[TableConfig],
        dim: int,
        id_features: Sequence[str],
        list_features: Sequence[str],
        init_std: float,
    ) -> None:
        super().__init__()
        rows = [table.num_embeddings for table in tables]
        starts = [sum(rows[:index]) for index in range(len(rows))]
        self.check_ids = True  # off only where the check cannot be expressed (an ONNX graph)
        self.table_names = [table.name for table in tables]
        self.register_buffer("table_rows", torch.tensor(rows, dtype=torch.int64))
        initial = torch.cat([initial_rows(table, dim, init_std) for table in tables])
        self.table = nn.Embedding(sum(rows), dim, sparse=True, _weight=initial)
        index = {feature: t for t, table in enumerate(tables) for feature in table.features}
        # Single-id features: which columns of `ids` are this group's, at which row offsets.
        columns = [c for c, feature in enumerate(id_features) if feature in index]
        id_tables = [index[id_features[c]] for c in columns]
        self.all_columns = columns == list(range(len(id_features)))
        self.has_ids = len(columns) > 0
        self.id_names = [id_features[c] for c in columns]
        self.id_tables = [tables[t].name for t in id_tables]
        self.register_buffer("id_columns", torch.tensor(columns, dtype=torch.int64), persistent=False)
        self.register_buffer(
            "id_starts", torch.tensor([starts[t] for t in id_tables], dtype=torch.int64), persistent=False
        )
        self.register_buffer(
            "id_rows", torch.tensor([rows[t] for t in id_tables], dtype=torch.int64), persistent=False
        )
        # List features: which entries of the values/offsets lists are this group's, pooled how.
        slots = [s for s, feature in enumerate(list_features) if feature in index]
        list_tables = [index[list_features[s]] for s in slots]
        self.list_slots = slots
        self.list_names = [list_features[s] for s in slots]
        self.list_tables = [tables[t].name for t in list_tables]
        self.list_starts = [starts[t] for t in list_tables]
        self.list_rows = [rows[t] for t in list_tables]
        self.list_modes = [tables[t].pooling for t in list_tables]

    def forward(
        self, ids: torch.Tensor, list_values: list[torch.Tensor], list_offsets: list[torch.Tensor]
    ) -> list[torch.Tensor]:
        """[B, n_ids, dim] vectors of this group's single-id features (if any), then [B, n_lists, dim]
        pooled vectors of its list features (if any)."""
        blocks: list[torch.Tensor] = []
        if self.has_ids:
            mine = ids if self.all_columns else ids.index_select(1, self.id_columns)
            if self.check_ids and mine.shape[0] > 0:
                low, high = torch.aminmax(mine, dim=0)
                outside = (high >= self.id_rows) | (low < 0)
                if bool(outside.any()):
                    c = int(outside.nonzero()[0, 0])
                    rows = int(self.id_rows[c])
                    bad = int(high[c]) if int(high[c]) >= rows else int(low[c])
                    self._refuse(self.id_names[c], self.id_tables[c], bad, rows)
            blocks.append(self.table(mine + self.id_starts))
        if len(self.list_slots) > 0:
            pooled: list[torch.Tensor] = []
            for k, slot in enumerate(self.list_slots):
                values = list_values[slot]
                if self.check_ids and values.numel() > 0:
                    low, high = torch.aminmax(values)
                    if bool(high >= self.list_rows[k]) or bool(low < 0):
                        bad = int(high) if bool(high >= self.list_rows[k]) else int(low)
                        self._refuse(self.list_names[k], self.list_tables[k], bad, self.list_rows[k])
                pooled.append(
                    nn.functional.embedding_bag(
                        values + self.list_starts[k],
                        self.table.weight,
                        list_offsets[slot],
                        mode=self.list_modes[k],
                        sparse=True,
                        include_last_offset=True,
                    )
                )
            blocks.append(torch.stack(pooled, dim=1))
        return blocks

    def _refuse(self, feature: str, table: str, bad: int, rows: int) -> None:
        refuse_id(feature, table, bad, rows)

    def _load_from_state_dict(
        self,
        state_dict: dict,
        prefix: str,
        local_metadata: dict,
        strict: bool,
        missing_keys: list,
        unexpected_keys: list,
        error_msgs: list,
    ) -> None:
        saved = state_dict.get(prefix + "table_rows")
        expected = self.table_rows.tolist()
        if saved is not None and saved.tolist() != expected:
            saved = saved.tolist()
            for name, had, wanted in zip(self.table_names, saved, expected):
                if had != wanted:
                    raise SchemaError(
                        f"table {name}: the saved weights hold {had:,} rows but the model's schema "
                        f"gives {wanted:,}; train on the same workflow or fix the config"
                    )
            raise SchemaError(
                f"the saved weights hold {len(saved)} embedding tables of dim {self.table.embedding_dim} "
                f"but the model has {len(expected)} ({', '.join(self.table_names)})"
            )
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )


def without_id_checks(model: nn.Module) -> nn.Module:
    """`model` with its ids' range checks off, for torch.export (ONNX), which cannot trace a branch on
    data; the served ids then come from the same vocabularies as training's."""
    for module in model.modules():
        if isinstance(module, FusedTables):
            module.check_ids = False
    return model


class EmbeddingCollection(nn.Module):
    """Every table of a model (TorchRec's EmbeddingBagCollection), fused per embedding dim
    (FusedTables); `dim` gives every table that dim instead (the first-order weights of a wide part)."""

    def __init__(
        self,
        tables: Sequence[TableConfig],
        id_features: Sequence[str],
        list_features: Sequence[str],
        dim: int | None = None,
        init_std: float = INIT_STD,
    ) -> None:
        super().__init__()
        dims = sorted({dim or table.embedding_dim for table in tables})
        self.groups = nn.ModuleList(
            FusedTables(
                [t for t in tables if (dim or t.embedding_dim) == d], d, id_features, list_features, init_std
            )
            for d in dims
        )

    def forward(
        self, ids: torch.Tensor, list_values: list[torch.Tensor], list_offsets: list[torch.Tensor]
    ) -> list[torch.Tensor]:
        """Blocks of field vectors [B, n, dim], per embedding dim: its single-id, then its list features."""
        blocks: list[torch.Tensor] = []
        for group in self.groups:
            blocks.extend(group(ids, list_values, list_offsets))
        return blocks


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
    """The FM second-order term, the sum over pairs <v_i, v_j> divided by the number of fields n, in
    O(n d) by the square-of-sums identity. Unscaled, the n(n-1)/2 pair terms go straight into the
    logit and each embedding step moves it n times as much as a first-order weight's: on Criteo-like
    data (26 fields, bench/quality.py) DeepFM diverged at the tables' default rate (test AUC 0.671,
    below logistic's 0.7125); scaled by 1/n it reached 0.7179."""

    def forward(self, vectors: torch.Tensor) -> torch.Tensor:
        """[B, n, d] -> [B, 1]."""
        square_of_sum = vectors.sum(dim=1).pow(2)
        sum_of_squares = vectors.pow(2).sum(dim=1)
        return 0.5 * (square_of_sum - sum_of_squares).sum(dim=1, keepdim=True) / vectors.shape[1]
