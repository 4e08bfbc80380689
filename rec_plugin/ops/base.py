"""The op protocol: fit learns a state from data (Estimator), transform applies it (Transformer)."""

from __future__ import annotations

import types
import typing
from typing import Any

from pyspark.sql import DataFrame, SparkSession

from rec_plugin.schema import ColumnSchema, Tags
from rec_plugin.templates import expression

# The boolean column by which Workflow marks the rows it was fitted on (all rows while it fits, the
# caller's `fitted_rows` when it transforms): ops that learn from the label encode only those rows from
# statistics without their own label.
FITTED_ROW = "_sparkrec_fitted_row"


def continuous(column: ColumnSchema, name: str | None = None) -> ColumnSchema:
    """`column` as a float32 continuous feature (optionally renamed), keeping its free tags (no longer
    an event time)."""
    kept = column.with_tags([Tags.CONTINUOUS], [Tags.CATEGORICAL, Tags.LIST, Tags.EPOCH_MS])
    return ColumnSchema(name or column.name, "float32", kept.tags)


def categorical(
    column: ColumnSchema, cardinality: int, name: str | None = None, **extra: Any
) -> ColumnSchema:
    """`column` as an int32 id feature of `cardinality` embedding rows (id 0 reserved), keeping its
    free tags (user_id, item_id, ...; no longer an event time)."""
    kept = column.with_tags([Tags.CATEGORICAL], [Tags.CONTINUOUS, Tags.LIST, Tags.EPOCH_MS])
    return ColumnSchema(name or column.name, "int32", kept.tags, cardinality=cardinality, **extra)


class Op:
    """A feature op over columns. Subclasses keep their constructor arguments in `params`."""

    # Whether the op's state keeps frames of its fit query (vocabularies, statistics tables) rather
    # than values read from it: fit persists that query, so those frames do not recompute it.
    state_holds_frames = False
    # Whether the op computes with its inputs' values as numbers (a string column is refused when the
    # workflow is built), and whether a string input stays a string through it (else it becomes ids
    # or numbers).
    reads_numbers = False
    keeps_strings = False

    def __init__(self, **params: Any) -> None:
        self.params = params

    def fit_query(self, frame: DataFrame, columns: list[str]) -> DataFrame | None:
        """The aggregation fit runs over `frame` (the upstream ops' output); None for a stateless op."""
        return None

    def state_from(self, query: DataFrame, columns: list[str]) -> dict[str, Any]:
        """The op's state, from its fit query."""
        return {}

    def fit(self, frame: DataFrame, columns: list[str], persisted: list[DataFrame]) -> dict[str, Any]:
        """The op's state learnt from `frame`. A fit query whose frames the state keeps is persisted and
        appended to `persisted`: its owner (the Workflow) releases it, and nothing else is cached."""
        query = self.fit_query(frame, columns)
        if query is None:
            return {}
        if self.state_holds_frames:
            query = query.persist()
            persisted.append(query)
        return self.state_from(query, columns)

    def transform(self, frame: DataFrame, columns: list[str], state: dict[str, Any]) -> DataFrame:
        raise NotImplementedError

    def output_columns(self, columns: list[str]) -> list[str]:
        """Columns the op writes; by default it replaces its inputs in place."""
        return columns

    def reads(self) -> list[str]:
        """Columns the op reads besides its inputs (a target, a fold key): a definition names them."""
        return []

    def output_schema(self, inputs: list[ColumnSchema], state: dict[str, Any]) -> list[ColumnSchema]:
        """What the op makes of its input columns (one per output column): NVTabular's
        compute_output_schema. The default, for ops that rewrite values in place, keeps strings as they
        are and makes numbers float32 continuous features."""
        return [c if c.dtype == "string" or c.is_list else continuous(c) for c in inputs]

    def save_state(self, spark: SparkSession, state: dict[str, Any], path: str) -> dict[str, Any]:
        """The JSON form of a state; ops with tables write them under `path`."""
        return state

    def load_state(
        self, spark: SparkSession, saved: dict[str, Any], path: str, pins: dict[str, int | None]
    ) -> dict[str, Any]:
        """The state save_state wrote; tables named in `pins` (relative path -> Delta version, from the
        saved schema) are read at that version."""
        return saved

    def __rrshift__(self, columns: list[str] | str) -> Any:
        from rec_plugin.workflow import Node

        return Node(tuple([columns] if isinstance(columns, str) else columns)) >> self

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{type(self).__name__}({args})"


class RowOp(Op):
    """An op that rewrites each column through one template of op_templates.json."""

    template = ""

    def template_params(self, column: str, state: dict[str, Any]) -> dict[str, Any]:
        return self.params

    def transform(self, frame: DataFrame, columns: list[str], state: dict[str, Any]) -> DataFrame:
        """Each column rewritten in place, or written to the op's output column for it."""
        outputs = zip(columns, self.output_columns(columns), strict=True)
        return frame.withColumns(
            {out: expression(self.template, {"x": c}, self.template_params(c, state)) for c, out in outputs}
        )


def require_at_least(op: Op, least: int, **params: int) -> None:
    """A ValueError naming an integer param below `least`: Spark would otherwise fail mid-transform
    (a modulo by 0) or give ids outside the op's cardinality."""
    for name, value in params.items():
        if isinstance(value, int) and value < least:
            raise ValueError(f"{type(op).__name__} param {name}={value!r} must be {least} or more")


def check_params(op_type: type[Op], params: dict[str, Any]) -> None:
    """`params` (a dataset definition's JSON values) of the types `op_type`'s constructor declares,
    else a ValueError naming the param: Spark would otherwise stop mid-fit with a cast's trace.
    Names the constructor lacks are left to it (a TypeError naming them)."""
    hints = typing.get_type_hints(op_type.__init__)
    for name, value in params.items():
        expected = hints.get(name)
        if expected is not None and not _is_a(value, expected):
            raise ValueError(f"{op_type.__name__} param {name}={value!r} is not {_described(expected)}")


def _is_a(value: Any, expected: Any) -> bool:
    """Whether a JSON value fits a constructor's annotation (an int is a float; a bool is neither)."""
    if expected is Any:
        return True
    if isinstance(expected, types.UnionType) or typing.get_origin(expected) is typing.Union:
        return any(_is_a(value, arm) for arm in typing.get_args(expected))
    if expected is type(None):
        return value is None
    if expected in (int, float):
        numbers = (int,) if expected is int else (int, float)
        return isinstance(value, numbers) and not isinstance(value, bool)
    origin = typing.get_origin(expected)
    if origin in (tuple, list):
        (element, *_) = typing.get_args(expected) or (Any,)
        return isinstance(value, list | tuple) and all(_is_a(v, element) for v in value)
    return isinstance(value, origin or expected)


def _described(expected: Any) -> str:
    """An annotation in words: 'a float or None'."""
    if isinstance(expected, types.UnionType) or typing.get_origin(expected) is typing.Union:
        return " or ".join(_described(arm) for arm in typing.get_args(expected))
    if expected is type(None):
        return "None"
    if typing.get_origin(expected) in (tuple, list):
        return f"a list of {_type_name(typing.get_args(expected)[0])}s"
    name = _type_name(expected)
    return f"an {name}" if name[0] in "aeiou" else f"a {name}"


# Types as a definition's JSON writes them.
_JSON_NAMES = {str: "string", bool: "boolean"}


def _type_name(expected: Any) -> str:
    return _JSON_NAMES.get(expected) or getattr(expected, "__name__", str(expected))
