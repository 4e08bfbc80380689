"""The schema: what each column a workflow outputs is (name, dtype, tags, embedding cardinality), the
contract that featurize, the loader, the models and serving all read instead of naming columns.

`Workflow.fit` computes it from the ops graph (each op says what it makes of its input columns) and
saves it as schema.json beside workflow.json. It also names the lineage columns every table carries
(day, source file, line number) and the rejects table's layout. Spark is imported inside the
functions that build Spark objects, so serving code reads a schema without pyspark installed."""

from __future__ import annotations

import json
import keyword
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import Column
    from pyspark.sql.types import StructType

DAY = "day"
SOURCE_FILE = "source_file"
LINE_NUMBER = "line_number"
RAW_LINE = "raw_line"  # a rejected row's text as read
REASON, REASON_FIELD = "reason", "reason_field"  # why the rejects table holds a row, and in which field
# A row's key from ingest on: the day, raw file and line it came from.
ROW_KEYS = [DAY, SOURCE_FILE, LINE_NUMBER]
# Table properties for a new table of lineage-keyed rows (bronze, rejects, features): Delta's per-file
# statistics on the row keys only, what reruns and lookups filter on beside the day partition. Delta
# otherwise gathers min, max and null count of the first 32 columns for every row it writes, which
# no query here reads (4M Criteo lines: ingest 65.9 and 65.7 s against 72.1 and 69.5 s).
ROW_KEY_STATISTICS = {"delta.dataSkippingStatsColumns": f"{SOURCE_FILE},{LINE_NUMBER}"}
# Why a field is refused: the rejects table's reason codes that serving gives too (a value that would
# otherwise be truncated or wrapped into an int32 the model never saw in training, or an infinity that
# makes the model's output NaN).
INT_NOT_INTEGER = "INT_NOT_INTEGER"
INT_OUT_OF_RANGE = "INT_OUT_OF_RANGE"
# A float column's field that is not a finite decimal number (1.5, -2, 3e-4; not nan, inf or 1e999).
FLOAT_NOT_NUMBER = "FLOAT_NOT_NUMBER"
# A string column's token (or a list's element) of another length than its token_width, or with a
# character outside its alphabet: looked up anyway, it would be scored as a value never seen.
CAT_BAD_LENGTH = "CAT_BAD_LENGTH"
CAT_NOT_HEX = "CAT_NOT_HEX"
# The alphabets a dataset definition may fix for a string column: each one's characters (a regex
# character class) and the reason code of a token outside them.
TOKEN_ALPHABETS = {"hex": ("[0-9a-f]", CAT_NOT_HEX)}


def unusable_column_names(names: Iterable[str]) -> list[str]:
    """The names a feature column cannot take: training hands a batch's columns to the models as the
    fields of a named tuple (Petastorm), which must be Python identifiers, not keywords and not starting
    with `_`; such names also need no quoting in Spark SQL and are ones Delta takes."""
    return [n for n in names if not n.isidentifier() or keyword.iskeyword(n) or n.startswith("_")]


# How a refusal of unusable_column_names says what a name may be.
COLUMN_NAME_RULE = "letters, digits and _, starting with a letter, and no Python keyword"


class Tags:
    """The tags a column carries; any other string is a free tag the user reads back."""

    CONTINUOUS = "continuous"
    CATEGORICAL = "categorical"
    LIST = "list"
    LABEL = "label"
    USER_ID = "user_id"
    ITEM_ID = "item_id"
    TIMESTAMP = "timestamp"
    # Added to a dataset's timestamp column (epoch milliseconds): DatePart refuses it as seconds.
    EPOCH_MS = "epoch_ms"


@dataclass(frozen=True)
class VocabularyPin:
    """The Delta table (relative to the workflow folder) and version a categorical column's ids come
    from, and the `column` whose partition of that table holds them (None: the table is the column's
    own, as in workflows saved before one table held every vocabulary)."""

    table: str
    version: int | None = None
    column: str | None = None


@dataclass(frozen=True)
class ColumnSchema:
    """One column: `dtype` is float32, float64, int32, int64, string, or list<...> of one of them.
    `cardinality` is the embedding rows a model needs (largest id + 1: 0 is reserved); `max_length`
    bounds a list column's elements; `embedding_table` names the table its ids index when it shares
    one (e.g. a list of recent items and item_id), None for a table of its own; `hashed_ids` counts
    the ids 1..n that are hash buckets of rare and unseen values (Categorify's num_buckets)."""

    name: str
    dtype: str
    tags: tuple[str, ...] = ()
    cardinality: int | None = None
    max_length: int | None = None
    vocabulary: VocabularyPin | None = None
    # A raw string column's tokens all have this many characters and are in this alphabet
    # (TOKEN_ALPHABETS): ingest and serving refuse others. Tokens of one width of at most 8 (Criteo's
    # 8 hex characters) take serving's fixed-width path.
    token_width: int | None = None
    alphabet: str | None = None
    embedding_table: str | None = None
    hashed_ids: int | None = None

    def has(self, tag: str) -> bool:
        return tag in self.tags

    @property
    def embedding_table_name(self) -> str:
        """The embedding table this column's ids index: the declared shared one, else its own."""
        return self.embedding_table or self.name

    @property
    def is_list(self) -> bool:
        return self.dtype.startswith("list<")

    def with_tags(self, add: Iterable[str] = (), remove: Iterable[str] = ()) -> ColumnSchema:
        removed = set(remove)
        kept = [t for t in self.tags if t not in removed]
        return replace(self, tags=tuple(dict.fromkeys([*kept, *add])))

    def to_dict(self) -> dict:
        data = {k: v for k, v in asdict(self).items() if v is not None and v != ()}
        data["tags"] = list(self.tags)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> ColumnSchema:
        pin = data.get("vocabulary")
        return cls(
            **{
                **data,
                "tags": tuple(data.get("tags", ())),
                "vocabulary": VocabularyPin(**pin) if pin else None,
            }
        )


class SchemaError(ValueError):
    """A schema that does not fit what reads it (a missing column, a table of another size)."""


@dataclass(frozen=True)
class Schema:
    """Columns in order. Accessors select by tag, so no stage lists column names."""

    columns: tuple[ColumnSchema, ...] = field(default=())

    def __iter__(self) -> Iterator[ColumnSchema]:
        return iter(self.columns)

    def __len__(self) -> int:
        return len(self.columns)

    def __getitem__(self, name: str) -> ColumnSchema:
        for column in self.columns:
            if column.name == name:
                return column
        raise SchemaError(f"the schema has no column {name!r} (it has {', '.join(self.names)})")

    def __contains__(self, name: object) -> bool:
        return any(column.name == name for column in self.columns)

    @property
    def names(self) -> list[str]:
        return [column.name for column in self.columns]

    def tagged(self, tag: str) -> Schema:
        return Schema(tuple(c for c in self.columns if c.has(tag)))

    def select(self, names: Iterable[str]) -> Schema:
        return Schema(tuple(self[name] for name in names))

    @property
    def label(self) -> ColumnSchema:
        labels = self.tagged(Tags.LABEL).columns
        if len(labels) != 1:
            raise SchemaError(f"the schema needs exactly one column tagged label, it has {len(labels)}")
        return labels[0]

    @property
    def continuous(self) -> Schema:
        """Dense model inputs, in schema order (the label is not one)."""
        return Schema(tuple(c for c in self.columns if c.has(Tags.CONTINUOUS) and not c.has(Tags.LABEL)))

    @property
    def categorical(self) -> Schema:
        """Single-id sparse inputs, in schema order."""
        return Schema(tuple(c for c in self.columns if c.has(Tags.CATEGORICAL) and not c.is_list))

    @property
    def lists(self) -> Schema:
        """Multi-hot sparse inputs (arrays of ids), in schema order."""
        return Schema(tuple(c for c in self.columns if c.has(Tags.CATEGORICAL) and c.is_list))

    @property
    def model_inputs(self) -> Schema:
        return Schema((*self.continuous, *self.categorical, *self.lists))

    def to_json(self) -> str:
        return json.dumps({"columns": [c.to_dict() for c in self.columns]}, indent=2)

    @classmethod
    def from_json(cls, text: str) -> Schema:
        return cls(tuple(ColumnSchema.from_dict(c) for c in json.loads(text)["columns"]))


def rejects_schema() -> StructType:
    """One row per malformed raw line: what it was, where it came from, and why it was refused."""
    from pyspark.sql.types import IntegerType, LongType, StringType, StructField, StructType

    return StructType(
        [
            StructField(DAY, IntegerType(), False),
            StructField(SOURCE_FILE, StringType(), False),
            StructField(LINE_NUMBER, LongType(), False),
            StructField(RAW_LINE, StringType(), True),
            StructField(REASON, StringType(), False),
            StructField(REASON_FIELD, StringType(), True),
        ]
    )


def partition_line_number() -> Column:
    """1-based index of a row in its Spark partition (monotonically_increasing_id keeps it in the low
    33 bits): the line number wherever one partition is exactly one file, read or written in order."""
    from pyspark.sql import functions as F

    return F.monotonically_increasing_id().bitwiseAND(F.lit((1 << 33) - 1)) + 1
