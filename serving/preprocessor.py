"""The serving form of a fitted workflow at run time: what Triton's preprocess model
(serving/triton_preprocess_model.py) and in-process serving run on each batch of raw fields.

It reads what serving/preprocess.py exported from the workflow and its schema (preprocess.json: the
raw inputs, the steps and each model input's expression; one parquet lookup table per vocabulary or
target encoding) and imports no Spark, so the python backend runs it where pyspark is not installed
(the NVIDIA Triton container on GPU hosts).

Raw inputs, one per group of the workflow's input columns (RawSpec):
- RAW_DENSE float64 [n]: the numeric raw columns (NaN = missing); a value that ingest would reject (an
  int column's that is not an integer or out of range, an infinity) fails the request with ingest's
  reason code.
- RAW_CATEGORICAL: the string raw columns, as uint8 [n, width] zero-padded bytes when every one
  declares the same token_width of at most 8 (Criteo: 8), else BYTES [n] (UTF-8; empty = missing).
  A token (or list element) of another length than its column's token_width, or outside its alphabet,
  fails the request with ingest's reason code (CAT_BAD_LENGTH, CAT_NOT_HEX).
- per list column i (ListCategorify's input): RAW_LIST_<i> BYTES [max_length], padded with empty
  elements, and RAW_LIST_<i>_LENGTHS int64 [1]: how many elements are the row's (a missing list is
  length 0). Elements past max_length are dropped by the client, as ListCategorify drops them.

Outputs (the model's inputs, in schema order): DENSE float32 [n_continuous], CATEGORICAL int64
[n_categorical], and per list feature i LIST_<i> int64 [max_length] padded with 0 and LIST_<i>_LENGTHS
int64 [1]; in process, Features holds each list feature as values and offsets (the model's form).

Row ops run as polars expressions compiled once from the op templates (op_templates.json, as Spark
renders them), nested per column: 2048 Criteo rows in ~3 ms. Categorify, ListCategorify and
TargetEncoding are hash lookups in an index of the table's values built once (polars' replace_strict
rebuilds its table per call: 23 ms for 1M values against 0.03 ms); a raw fixed-width token is looked
up by its 8-byte key (serving/tokens.py). HashBucket and Cross hash as Spark's xxhash64 does.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from rec_plugin.errors import InputError
from rec_plugin.schema import (
    CAT_BAD_LENGTH,
    FLOAT_NOT_NUMBER,
    INT_NOT_INTEGER,
    INT_OUT_OF_RANGE,
    TOKEN_ALPHABETS,
)
from serving.tokens import (
    TOKEN_BYTES,
    fixed_width_refusals,
    fixed_width_strings,
    object_strings,
    string_refusals,
    token_bytes,
    token_keys,
    xxhash64,
)

EXPRESSIONS = "preprocess.json"
# A recommender's outputs (item ids, their scores) and its postprocess step's (the raw items), and the
# postprocess folder's vocabulary (the lookup table the item ids index, copied).
ITEM_IDS, SCORES, ITEMS = "ITEM_IDS", "SCORES", "ITEMS"
VOCABULARY_FILE = "vocabulary.parquet"
RAW_DENSE = "RAW_DENSE"
RAW_CATEGORICAL = "RAW_CATEGORICAL"
DENSE = "DENSE"
CATEGORICAL = "CATEGORICAL"
# The integer range each int raw dtype holds (ingest refuses values outside it).
INT_RANGES = {"int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1)}
# The largest integer RAW_DENSE (float64) carries exactly.
FLOAT64_EXACT = 2**53
POLARS_TYPES = {
    "int32": pl.Int32,
    "int64": pl.Int64,
    "float32": pl.Float32,
    "float64": pl.Float64,
    "string": pl.String,
}


def raw_list(index: int) -> str:
    return f"RAW_LIST_{index}"


def list_output(index: int) -> str:
    return f"LIST_{index}"


def lengths_of(tensor: str) -> str:
    return f"{tensor}_LENGTHS"


@dataclass(frozen=True)
class RawColumn:
    """A raw input column: its name, schema dtype, and (lists) the elements served."""

    name: str
    dtype: str
    max_length: int | None = None
    # A bag of items (Mult-VAE's): its latest max_length distinct items, as spark_jobs/interactions.py
    # builds a user's bag from their clicks in time order.
    distinct: bool = False
    # A string column's (a list's elements') token width and alphabet, as ingest holds them to.
    token_width: int | None = None
    alphabet: str | None = None


class RawBatch(NamedTuple):
    """Raw rows as the preprocessor takes them: dense float64 [B, n] (NaN = missing); tokens uint8
    [B, n, width] (fixed width) or object [B, n] (str or bytes); per list column, elements object
    [B, max_length] and lengths int64 [B]."""

    dense: np.ndarray
    tokens: np.ndarray
    lists: tuple[tuple[np.ndarray, np.ndarray], ...] = ()


class Features(NamedTuple):
    """The model's inputs: dense float32 [B, n_continuous], ids int64 [B, n_categorical], and per
    list feature its ids int64 [N_i] and offsets int64 [B + 1]."""

    dense: np.ndarray
    ids: np.ndarray
    list_values: list[np.ndarray]
    list_offsets: list[np.ndarray]


@dataclass(frozen=True)
class RawSpec:
    """The raw inputs of a served workflow, by group (see the module docstring)."""

    continuous: tuple[RawColumn, ...] = ()
    categorical: tuple[RawColumn, ...] = ()
    token_width: int | None = None
    lists: tuple[RawColumn, ...] = field(default=())

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> RawSpec:
        """An exported spec; one exported before columns carried their token width takes the fixed
        width (which every string column declared) as each column's, so its tokens are checked too."""
        width = data.get("token_width")
        return cls(
            tuple(RawColumn(**c) for c in data["continuous"]),
            tuple(RawColumn(**{"token_width": width, **c}) for c in data["categorical"]),
            width,
            tuple(RawColumn(**c) for c in data["lists"]),
        )

    def tensors(self) -> list[tuple[str, str, tuple[int, ...]]]:
        """(name, Triton data type, dims) of each raw input tensor; a group without columns has none."""
        specs = []
        if self.continuous:
            specs.append((RAW_DENSE, "TYPE_FP64", (len(self.continuous),)))
        if self.categorical:
            if self.token_width:
                specs.append((RAW_CATEGORICAL, "TYPE_UINT8", (len(self.categorical), self.token_width)))
            else:
                specs.append((RAW_CATEGORICAL, "TYPE_STRING", (len(self.categorical),)))
        for i, column in enumerate(self.lists):
            specs.append((raw_list(i), "TYPE_STRING", (column.max_length,)))
            specs.append((lengths_of(raw_list(i)), "TYPE_INT64", (1,)))
        return specs

    def batch(self, rows: pd.DataFrame) -> RawBatch:
        """Raw bronze rows (a pandas frame with the raw columns by name) as a RawBatch; fixed-width
        tokens are encoded here, a token too long for them refused as the server refuses the others
        that ingest would reject (refuse_bad_tokens)."""
        missing = [c.name for c in (*self.continuous, *self.categorical, *self.lists) if c.name not in rows]
        if missing:
            raise InputError(f"the rows lack the raw columns {missing} that the served workflow reads")
        if rows.empty:
            raise InputError("the batch has no rows: send one row or more")
        names = [c.name for c in self.continuous]
        _refuse_datetimes(rows, names)
        for column in self.continuous:
            if column.dtype == "int64":
                _require_exact_in_float64(rows[column.name], column.name)
        try:
            numbers = rows[names].astype("float64")
        except (TypeError, ValueError):
            raise InputError(_not_a_number(rows, names)) from None
        dense = numbers.to_numpy(np.float64, na_value=np.nan).reshape(len(rows), -1)
        tokens = rows[[c.name for c in self.categorical]].to_numpy(object).reshape(len(rows), -1)
        if self.token_width:
            try:
                tokens = token_bytes(tokens, self.token_width)
            except ValueError:  # a token too long for its bytes: refused as the server refuses one too short
                as_text = replace(self, token_width=None, lists=())
                refuse_bad_tokens(as_text, RawTokens.of(as_text, tokens, ()))
                raise
        lists = []
        for column in self.lists:
            width = column.max_length
            elements = np.full((len(rows), width), "", object)
            lengths = np.zeros(len(rows), np.int64)
            for r, value in enumerate(rows[column.name].to_numpy(object)):
                if value is None or (isinstance(value, float) and math.isnan(value)):
                    continue
                if isinstance(value, str | bytes):  # list() would take its characters for elements
                    raise InputError(
                        f"column {column.name} is a list: give each row a list of tokens, not {value!r}"
                    )
                # Ingest drops a list's empty and null elements before the first max_length are kept.
                present = [v for v in list(value) if v is not None and v not in ("", b"")]
                if column.distinct:  # each item at its latest place, then the latest max_length
                    present = list(dict.fromkeys(reversed(present)))[::-1][-width:]
                kept = present[:width]
                elements[r, : len(kept)] = kept
                lengths[r] = len(kept)
            lists.append((elements, lengths))
        return RawBatch(dense, tokens, tuple(lists))

    def encode(self, batch: RawBatch) -> dict[str, np.ndarray]:
        """The batch as Triton input tensors, by name, in tensors() order."""
        inputs: dict[str, np.ndarray] = {}
        if self.continuous:
            inputs[RAW_DENSE] = np.ascontiguousarray(batch.dense, np.float64)
        if self.categorical:
            if self.token_width:
                inputs[RAW_CATEGORICAL] = np.ascontiguousarray(batch.tokens, np.uint8)
            else:
                inputs[RAW_CATEGORICAL] = _bytes_tensor(batch.tokens)
        for i, (elements, lengths) in enumerate(batch.lists):
            inputs[raw_list(i)] = _bytes_tensor(elements)
            inputs[lengths_of(raw_list(i))] = np.asarray(lengths, np.int64).reshape(-1, 1)
        return inputs

    def decode(self, inputs: dict[str, np.ndarray]) -> RawBatch:
        """Triton input tensors (by name) back into a RawBatch."""
        rows = len(next(iter(inputs.values()))) if inputs else 0
        dense = inputs.get(RAW_DENSE, np.zeros((rows, 0), np.float64))
        tokens = inputs.get(RAW_CATEGORICAL, np.zeros((rows, 0), object))
        lists = tuple(
            (inputs[raw_list(i)], inputs[lengths_of(raw_list(i))].reshape(-1)) for i in range(len(self.lists))
        )
        return RawBatch(dense, tokens, lists)


def _refuse_datetimes(rows: pd.DataFrame, names: list[str]) -> None:
    """A column of pandas datetimes (a frame read back from parquet) is refused naming it: the served
    workflow reads the number bronze holds, which for a timestamp column is epoch milliseconds, but
    a long column of epoch seconds (DatePart's unit "s") looks the same to the client."""
    for name in names:
        if pd.api.types.is_datetime64_any_dtype(rows[name]):
            raise InputError(
                f"{RAW_DENSE}: {name} holds datetimes: send the number bronze holds (a timestamp "
                "column's epoch milliseconds, UTC)"
            )


def _not_a_number(rows: pd.DataFrame, names: list[str]) -> str:
    """What a numeric raw column holds that is no number, for the request's refusal."""
    for name in names:
        parsed = pd.to_numeric(rows[name], errors="coerce")
        wrong = rows[name][parsed.isna() & rows[name].notna()]
        if len(wrong):
            return f"{RAW_DENSE}: {name} = {wrong.iloc[0]!r} is not a number"
    return f"{RAW_DENSE}: {names} hold a value that is not a number"


def _require_exact_in_float64(values: pd.Series, name: str) -> None:
    """A long column's values reach the server as float64: one beyond 2^53 would arrive as another
    number (a 64-bit id as its neighbour's), so it is refused, naming the fix for an id (a measure
    that large is out of any range a workflow was fitted on)."""
    if values.dtype.kind in "iuf":  # a float beyond 2^53 may have been rounded already (pandas' None)
        with np.errstate(invalid="ignore"):
            beyond = values[np.abs(values.to_numpy()) > FLOAT64_EXACT]
    else:
        beyond = values[[isinstance(v, int | np.integer) and abs(int(v)) > FLOAT64_EXACT for v in values]]
    if len(beyond):
        raise InputError(
            f"{RAW_DENSE}: {name} = {beyond.iloc[0]} is beyond 2^53, the largest integer float64 carries "
            f"exactly; if {name} is an id, declare {name} a string column (integer ids are taken as "
            "their text)"
        )


def _bytes_tensor(values: np.ndarray) -> np.ndarray:
    """str or bytes (None or NaN = empty) -> an object array of bytes, what a BYTES tensor carries."""
    out = np.empty(values.shape, object)
    flat = values.reshape(-1)
    out.reshape(-1)[:] = [
        b""
        if v is None or (isinstance(v, float) and math.isnan(v))
        else v
        if isinstance(v, bytes)
        else str(v).encode()
        for v in flat
    ]
    return out


def dense_counts(raw_dense: np.ndarray, columns: Sequence[RawColumn]) -> dict[str, pa.Array]:
    """float64 [B, n] raw numbers (NaN = missing) -> each column typed as ingest types it (int32,
    int64 or float64; null = missing). A value that ingest would reject raises InputError naming its
    row, field, value and ingest's reason code: an int column's, cast anyway, would be truncated or
    wrapped into a count the model never saw, and a float column's infinity would make the score NaN.
    One cast and one comparison per int dtype: a value survives the round trip through its int type
    exactly when ingest accepts it."""
    missing = np.isnan(raw_dense)
    refused = np.zeros(raw_dense.shape, bool)
    typed: dict[str, np.ndarray] = {}
    for dtype in ("int32", "int64"):
        chosen = [j for j, c in enumerate(columns) if c.dtype == dtype]
        if not chosen:
            continue
        low, high = INT_RANGES[dtype]
        block = raw_dense[:, chosen]
        with np.errstate(invalid="ignore"):  # NaN, inf, out-of-range values cast to garbage: refused below
            inside = (block >= low) & (block <= high)
            counts = np.where(inside, block, 0).astype(dtype)
        refused[:, chosen] = ((counts != block) | ~inside) & ~missing[:, chosen]
        for k, j in enumerate(chosen):
            typed[columns[j].name] = counts[:, k]
    floats = [j for j, c in enumerate(columns) if c.name not in typed]
    refused[:, floats] = np.isinf(raw_dense[:, floats])
    if refused.any():
        row, column = np.argwhere(refused)[0]  # the first in row order, as ingest reports a line's first
        value = float(raw_dense[row, column])
        reason = INT_NOT_INTEGER if math.isfinite(value) and not value.is_integer() else INT_OUT_OF_RANGE
        what = "not an integer" if reason == INT_NOT_INTEGER else f"outside {columns[column].dtype} integers"
        if reason == INT_OUT_OF_RANGE and columns[column].dtype == "int32":
            what = "outside 32-bit integers"
        if columns[column].name not in typed:
            reason, what = FLOAT_NOT_NUMBER, "not a finite number"
        raise InputError(
            f"{RAW_DENSE} row {row}: {columns[column].name} = {value!r} is {what} ({reason}, as ingest "
            f"rejects it); {int(refused.sum())} refused value(s) in the batch"
        )
    arrays = {}
    for j, column in enumerate(columns):
        values = typed.get(column.name, raw_dense[:, j])
        arrays[column.name] = pa.array(values, mask=missing[:, j])
    return arrays


class Lookup:
    """A lookup table (value -> payload) with indexes built once: by string, and by fixed-width key."""

    def __init__(self, path: Path, payload: str) -> None:
        table = pq.read_table(path)
        self.values = table["value"].combine_chunks().cast(pa.string())
        self.payload = table[payload].to_numpy()
        self._strings: pd.Index | None = None
        self._keys: tuple[pd.Index, np.ndarray] | None = None

    def by_strings(self, values: pa.Array) -> np.ndarray:
        """Positions of string values in the table, -1 where absent (null is never found)."""
        if self._strings is None:
            self._strings = pd.Index(self.values.to_numpy(zero_copy_only=False), dtype=object)
        return self._strings.get_indexer(values.to_numpy(zero_copy_only=False))

    def by_keys(self, keys: np.ndarray) -> np.ndarray:
        """Positions of fixed-width token keys (serving/tokens.py) in the table, -1 where absent."""
        if self._keys is None:
            values = self.values.to_numpy(zero_copy_only=False)
            fits = np.array([0 < len(v.encode()) <= TOKEN_BYTES and v.isascii() for v in values], bool)
            where = np.flatnonzero(fits)
            index = (
                pd.Index(token_keys(token_bytes(values[where].astype(object))))
                if len(where)
                else pd.Index([])
            )
            self._keys = (index, where)
        index, where = self._keys
        found = index.get_indexer(keys)
        positions = np.full(found.shape, -1, dtype=np.int64)
        hits = found >= 0
        positions[hits] = where[found[hits]]  # not where[found]: -1 indexes nothing in an empty table
        return positions


class Preprocessor:
    """Runs an exported preprocess folder on raw fields: what Triton's preprocess model calls, and
    what in-process serving and the benchmarks call."""

    def __init__(self, folder: Path) -> None:
        folder = Path(folder)
        plan = json.loads((folder / EXPRESSIONS).read_text())
        self.spec = RawSpec.from_dict(plan["raw"])
        self.steps = plan["steps"]
        self.materialized = set(plan.get("materialized", []))
        self.tables = {
            step["table"]: Lookup(
                folder / step["table"], "encoding" if step["op"] == "TargetEncoding" else "id"
            )
            for step in self.steps
            if "table" in step
        }
        self.inputs = {
            i: pl.sql_expr(sql)
            for i, sql in enumerate(s for step in self.steps for s in step.get("inputs", []))
        }
        self.continuous = [
            (name, pl.sql_expr(sql).alias(name)) for name, sql in plan["outputs"]["continuous"]
        ]
        self.categorical = [
            (name, pl.sql_expr(sql).alias(name)) for name, sql in plan["outputs"]["categorical"]
        ]
        self.lists = [output for _, output in plan["outputs"]["lists"]]
        self.names = {
            "continuous": [n for n, _ in self.continuous],
            "categorical": [n for n, _ in self.categorical],
            "lists": [n for n, _ in plan["outputs"]["lists"]],
        }

    def __call__(self, dense: np.ndarray, tokens: np.ndarray | None = None, lists: Sequence = ()) -> Features:
        """A RawBatch's parts -> the model's Features, in row order; a dense value or a token that
        ingest would reject raises InputError (dense_counts, refuse_bad_tokens)."""
        spec = self.spec
        rows = len(dense)
        if len(spec.categorical):
            expected = (
                (len(spec.categorical), spec.token_width) if spec.token_width else (len(spec.categorical),)
            )
            if tokens is None or tokens.shape[1:] != expected:
                shape = None if tokens is None else tokens.shape
                raise ValueError(f"raw tokens must be [B, {', '.join(map(str, expected))}], got {shape}")
        if dense.shape[1:] != (len(spec.continuous),):
            raise ValueError(f"raw dense values must be [B, {len(spec.continuous)}], got {dense.shape}")
        if len(lists) != len(spec.lists) or any(len(lengths) != rows for _, lengths in lists):
            raise ValueError(f"raw lists must be {len(spec.lists)} of B = {rows} rows each")
        columns: dict[str, pa.Array] = dense_counts(dense, spec.continuous)
        raw = RawTokens.of(spec, tokens, lists)
        refuse_bad_tokens(spec, raw)
        keys = token_keys(tokens) if raw.fixed is not None else None
        for j, column in enumerate(spec.categorical):
            if keys is None:
                columns[column.name] = raw.strings[j]
            elif column.name in self.materialized:
                columns[column.name] = fixed_width_strings(tokens[:, j, :])
        frame = pl.from_arrow(pa.table(columns)) if columns else pl.DataFrame({"__rows": np.zeros(rows)})
        if isinstance(frame, pl.Series):
            frame = frame.to_frame()
        list_results: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        position = 0
        raw_index = {c.name: j for j, c in enumerate(spec.categorical)}
        for step in self.steps:
            inputs = []
            for dtype in step.get("dtypes", []):
                expression = self.inputs[position]
                position += 1
                if step.get("raw") is None:
                    inputs.append(frame.select(expression.cast(POLARS_TYPES[dtype])).to_series().to_arrow())
            if step["kind"] == "list":
                list_results[step["output"]] = self._list_ids(step, *raw.elements[step["list"]], rows)
                continue
            if step["kind"] == "hash":
                result = self._hashed(step, inputs)
            else:
                table = self.tables[step["table"]]
                if step.get("raw") is not None and keys is not None:
                    result = self._looked_up(step, table, table.by_keys(keys[:, raw_index[step["raw"]]]))
                else:
                    value = (inputs[0] if inputs else frame[step["raw"]].to_arrow()).cast(pa.string())
                    result = self._looked_up(step, table, table.by_strings(value))
                    if step.get("buckets"):  # absent values (null ids) take their hash bucket
                        result = result.fill_null(pl.Series(self._hashed(step, [value])))
            frame = frame.with_columns(pl.Series(step["output"], result))
        if not self.continuous and not self.categorical:
            out = pl.DataFrame()
        else:
            out = frame.select([e for _, e in self.continuous] + [e for _, e in self.categorical])
        dense_out = (
            out.select(self.names["continuous"]).to_numpy().astype(np.float32)
            if self.continuous
            else np.zeros((rows, 0), np.float32)
        )
        ids = (
            out.select(self.names["categorical"]).to_numpy().astype(np.int64)
            if self.categorical
            else np.zeros((rows, 0), np.int64)
        )
        values = [list_results[o][0] for o in self.lists]
        offsets = [list_results[o][1] for o in self.lists]
        return Features(dense_out.reshape(rows, -1), ids.reshape(rows, -1), values, offsets)

    @staticmethod
    def _hashed(step: dict, inputs: list[pa.Array]) -> pl.Series | np.ndarray:
        """Spark's `CAST(pmod(xxhash64(x[, y]), buckets) AS INT) + 1`, 0 where an input is null."""
        seeds = None
        missing = np.zeros(len(inputs[0]), bool)
        for value in inputs:
            seeds = xxhash64(value, seeds)
            missing |= np.asarray(value.is_null().to_numpy(zero_copy_only=False), bool)
        bucket = seeds.view(np.int64) % np.int64(step["buckets"])  # non-negative, as Spark's pmod
        return np.where(missing, 0, bucket + 1).astype(np.int32)

    @staticmethod
    def _looked_up(step: dict, table: Lookup, found: np.ndarray) -> pl.Series:
        """Categorify: the id, null where absent (its expression applies category_id); TargetEncoding:
        the encoding, the prior where absent."""
        hit = found >= 0
        if step["op"] == "TargetEncoding":
            return pl.Series(
                np.where(hit, table.payload[found], np.float32(step["missing"])).astype(np.float32)
            )
        ids = np.where(hit, table.payload[np.where(hit, found, 0)] if len(table.payload) else 0, 0)
        return pl.Series(pa.array(ids.astype(np.int32), mask=~hit))

    def _list_ids(
        self, step: dict, strings: pa.Array, element_rows: np.ndarray, batch_rows: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """ListCategorify: each row's first max_length elements (RawTokens.elements: the strings and the
        row of each) -> ids (0 = unseen or rare), as values and offsets."""
        # A null or empty element is none, as in Spark's ListCategorify (a client of its own may send one).
        present = pc.fill_null(pc.greater(pc.utf8_length(strings), 0), False).to_numpy(zero_copy_only=False)
        strings, lengths = (
            strings.filter(pa.array(present)),
            np.bincount(element_rows[present], minlength=batch_rows),
        )
        table = self.tables[step["table"]]
        found = table.by_strings(strings) if len(strings) else np.zeros(0, np.int64)
        ids = np.where(
            found >= 0, table.payload[np.where(found >= 0, found, 0)] if len(table.payload) else 0, 0
        )
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        if step.get("distinct"):
            return _distinct_per_row(ids.astype(np.int64), offsets)
        return ids.astype(np.int64), offsets


def kept_elements(elements: np.ndarray, lengths: np.ndarray, width: int) -> tuple[pa.Array, np.ndarray]:
    """A raw list's elements object [B, max_length] (str or bytes) and lengths [B] -> each row's first
    `width` elements as Arrow strings, and the row of each."""
    lengths = np.clip(np.asarray(lengths, np.int64).reshape(-1), 0, min(width, elements.shape[1]))
    flat = elements[np.arange(elements.shape[1])[None, :] < lengths[:, None]]
    if len(flat) and isinstance(flat[0], bytes):
        strings = pa.array(flat, type=pa.binary()).cast(pa.string())
    else:
        strings = pa.array(flat, type=pa.string(), from_pandas=True)
    return strings, np.repeat(np.arange(len(lengths)), lengths)


class RawTokens(NamedTuple):
    """A batch's tokens in the forms that both the check (refuse_bad_tokens) and the lookups read, each
    made once: the fixed-width tokens uint8 [B, n, width] (None when they travel as BYTES or there are
    no string columns), else each string column's Arrow strings (none without tokens); per list, its
    kept elements and the row of each (kept_elements)."""

    fixed: np.ndarray | None
    strings: list[pa.Array]
    elements: list[tuple[pa.Array, np.ndarray]]

    @classmethod
    def of(cls, spec: RawSpec, tokens: np.ndarray | None, lists: Sequence) -> RawTokens:
        """A RawBatch's tokens and lists, as `spec` takes them."""
        fixed = tokens if spec.token_width and len(spec.categorical) else None
        strings = []
        if fixed is None and tokens is not None:
            strings = [object_strings(tokens[:, j]) for j in range(len(spec.categorical))]
        kept = [kept_elements(e, n, c.max_length) for c, (e, n) in zip(spec.lists, lists)]
        return cls(fixed, strings, kept)


def refuse_bad_tokens(spec: RawSpec, raw: RawTokens) -> None:
    """A token or list element that ingest would reject (of another length than its column's
    token_width, or outside its alphabet) raises InputError naming the first one's row, field, value
    and ingest's reason code: looked up anyway, it would be scored as a value never seen."""
    checked = [j for j, c in enumerate(spec.categorical) if c.token_width or c.alphabet]
    if checked and (raw.fixed is not None or raw.strings):
        columns = [spec.categorical[j] for j in checked]
        if raw.fixed is not None:
            chosen = raw.fixed if len(checked) == raw.fixed.shape[1] else raw.fixed[:, checked]
            wrong_length, outside = fixed_width_refusals(chosen, [c.alphabet for c in columns])
        else:
            masks = [
                string_refusals(raw.strings[j], c.token_width, c.alphabet) for j, c in zip(checked, columns)
            ]
            wrong_length, outside = (np.stack(each, axis=1) for each in zip(*masks))
        refused = wrong_length | outside
        if refused.any():
            row, k = np.argwhere(refused)[0]
            if raw.fixed is not None:
                value = bytes(raw.fixed[row, checked[k]]).rstrip(b"\0").decode("utf-8", "replace")
            else:
                value = raw.strings[checked[k]][row].as_py()
            where = f"{RAW_CATEGORICAL} row {row}"
            _refuse_token(where, columns[k], value, bool(wrong_length[row, k]), int(refused.sum()))
    for i, (column, (strings, element_rows)) in enumerate(zip(spec.lists, raw.elements)):
        if not (column.token_width or column.alphabet):
            continue
        wrong_length, outside = string_refusals(strings, column.token_width, column.alphabet)
        refused = wrong_length | outside
        if refused.any():  # the first refused row's, its length first as ingest reports a list's
            in_row = np.flatnonzero(refused & (element_rows == element_rows[np.argmax(refused)]))
            first = int(next((e for e in in_row if wrong_length[e]), in_row[0]))
            where = f"{raw_list(i)} row {element_rows[first]}"
            _refuse_token(
                where, column, strings[first].as_py(), bool(wrong_length[first]), int(refused.sum())
            )


def _refuse_token(where: str, column: RawColumn, value: object, wrong_length: bool, refused: int) -> None:
    if wrong_length:
        what, reason = f"not {column.token_width} characters long", CAT_BAD_LENGTH
    else:
        characters, reason = TOKEN_ALPHABETS[column.alphabet]
        what = f"outside the {column.alphabet} alphabet {characters}"
    raise InputError(
        f"{where}: {column.name} = {value!r} is {what} ({reason}, as ingest rejects it); "
        f"{refused} refused value(s) in the batch"
    )


def _distinct_per_row(values: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's ids once, in their first order: a bag of items made outside the workflow (Mult-VAE's)
    trains on each user's distinct items, so an item sent twice must not weigh twice."""
    rows = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
    _, first = np.unique(np.stack([rows, values]), axis=1, return_index=True)
    kept = np.sort(first)
    counts = np.bincount(rows[kept], minlength=len(offsets) - 1)
    return values[kept], np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)


def padded(values: np.ndarray, offsets: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """A list feature's values and offsets -> int64 [B, width] padded with 0, and lengths [B, 1]."""
    lengths = np.diff(offsets)
    out = np.zeros((len(lengths), width), np.int64)
    out[np.arange(width)[None, :] < lengths[:, None]] = values
    return out, lengths.reshape(-1, 1).astype(np.int64)


def unpadded(padded_values: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """int64 [B, width] padded ids and lengths [B, 1] -> values [N] and offsets [B + 1]."""
    lengths = np.clip(lengths.reshape(-1), 0, padded_values.shape[1])
    values = padded_values[np.arange(padded_values.shape[1])[None, :] < lengths[:, None]]
    return values.astype(np.int64), np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)


def id_tokens(path: Path) -> np.ndarray:
    """A vocabulary's raw tokens by id (a lookup table: value, id), UTF-8 bytes, b"" for id 0 (rare or
    unseen): what turns a recommender's item ids back into items."""
    table = pq.read_table(path)
    ids = table["id"].to_numpy().astype(np.int64)
    tokens = np.full(int(ids.max(initial=0)) + 1, b"", object)
    tokens[ids] = [value.encode() for value in table["value"].cast(pa.string()).to_pylist()]
    return tokens
