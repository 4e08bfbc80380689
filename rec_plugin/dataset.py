"""Dataset definitions: a click log's raw format, columns, validation rules, label and default workflow,
as data (conf/datasets/<name>.json) rather than code.

Ingest parses and validates raw files from it, featurize fits its default workflow, and the generator
of a bundled dataset writes files it accepts. Criteo is one definition (conf/datasets/criteo.json);
a user's own click log is another file of the same form:

    {"name": "shop", "format": "tsv", "file_patterns": ["*.tsv"],
     "columns": [{"name": "click", "type": "int", "rule": "binary", "tags": ["label"]},
                 {"name": "user_id", "type": "string", "tags": ["categorical", "user_id"]},
                 {"name": "price", "type": "float", "tags": ["continuous"]},
                 {"name": "recent_items", "type": "list<string>", "list_separator": "|",
                  "tags": ["categorical", "list"]}],
     "workflow": {"nodes": [{"tags": ["continuous"], "ops": [{"op": "Normalize"}]},
                            {"columns": ["user_id"], "ops": [{"op": "Categorify"}]},
                            {"columns": ["recent_items"], "ops": [{"op": "ListCategorify",
                                                                   "params": {"max_length": 20}}]}],
                  "passthrough_tags": ["label"]}}

`format` names the raw source (spark_jobs/raw_formats.py reads each): "tsv" or "csv" lines split by the
separator, "jsonl" (one JSON object per line, fields by name), "parquet" (columns by name), each from
the files under ingest's input matching `file_patterns`; or "delta": the existing Delta table at
`table` (a path or URI), read at `version` (default: its latest when ingest starts). A file's day is
the `day_<d>` in its path unless the definition names a `day_column` (jsonl and parquet may, delta
must): an int day, or a date or timestamp (its UTC date) counted in days since `day_origin` (default
1970-01-01). An event time as a feature is a "timestamp" column (ISO 8601 text such as
"2024-01-03T10:22:00Z", or a parquet/Delta timestamp or date; bronze keeps its epoch milliseconds,
UTC) or a "long" column of epoch seconds or milliseconds, which the DatePart op turns into
hour-of-day and day-of-week ids (unit "ms" for a timestamp column).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, fields, replace
from datetime import date
from difflib import get_close_matches
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rec_plugin.errors import InputError
from rec_plugin.schema import (
    DAY,
    LINE_NUMBER,
    ROW_KEYS,
    SOURCE_FILE,
    TOKEN_ALPHABETS,
    ColumnSchema,
    Schema,
    Tags,
)

if TYPE_CHECKING:
    from pyspark.sql.types import StructType

    from rec_plugin.workflow import Workflow

DATASETS_DIR = Path(__file__).resolve().parents[1] / "conf" / "datasets"
# The dataset every stage assumes when none is named.
DEFAULT_DATASET = "criteo"
# A column of several values a row (a list of recent items): a list of tokens.
LIST = "list<string>"
# An event time: ISO 8601 text, or a parquet/Delta timestamp or date.
TIMESTAMP = "timestamp"
# Raw column type -> (schema dtype, Spark SQL type).
RAW_TYPES = {
    "int": ("int32", "int"),
    "long": ("int64", "bigint"),
    "float": ("float64", "double"),
    "string": ("string", "string"),
    LIST: (LIST, "array<string>"),
    # An event time, kept as epoch milliseconds (UTC): what DatePart(unit="ms") and serving take.
    TIMESTAMP: ("int64", "bigint"),
}
NUMBER_TYPES = ("int", "long", "float")
# What a raw column's name may not hold: Delta's invalid characters in column names, and the dot of a
# struct's field in Spark.
UNSTORABLE_NAME = re.compile(r"[\s.,;{}()=`]")
TSV, CSV, JSONL, PARQUET, DELTA = "tsv", "csv", "jsonl", "parquet", "delta"
# Delimited text formats -> their field separator.
SEPARATORS = {TSV: "\t", CSV: ","}
FORMATS = (TSV, CSV, JSONL, PARQUET, DELTA)
# Formats whose rows name their fields, so one of them may give each row's day.
DAY_COLUMN_FORMATS = (JSONL, PARQUET, DELTA)
DEFAULT_DAY_ORIGIN = "1970-01-01"
# A column's validation beyond its type: "binary", 0 or 1 (a label's).
BINARY = "binary"
RULES = (BINARY,)


@dataclass(frozen=True)
class RawColumn:
    """One raw field. `rule` names a validation beyond the type ("binary": 0 or 1); a string column may
    fix its `token_width` and `alphabet` ("hex"), a list column names its element separator."""

    name: str
    type: str
    tags: tuple[str, ...] = ()
    rule: str | None = None
    token_width: int | None = None
    alphabet: str | None = None
    list_separator: str | None = None

    def __post_init__(self) -> None:
        if self.rule is not None and self.rule not in RULES:
            raise InputError(f"column {self.name}: unknown rule {self.rule!r} (known: {list(RULES)})")
        if self.alphabet is not None and self.alphabet not in TOKEN_ALPHABETS:
            known = sorted(TOKEN_ALPHABETS)
            raise InputError(f"column {self.name}: unknown alphabet {self.alphabet!r} (known: {known})")

    @property
    def dtype(self) -> str:
        return RAW_TYPES[self.type][0]

    @property
    def spark_type(self) -> str:
        return RAW_TYPES[self.type][1]


@dataclass(frozen=True)
class DatasetDefinition:
    """A parsed definition; `workflow` is the default ops graph with columns chosen by name or tag.
    `table` and `version` locate a delta source; `day_column` and `day_origin` say where rows give
    their day (None: the file's path does); `header` that each tsv/csv file's first line names the
    columns, in the definition's order (checked, then skipped); `quote` the character quoting a tsv/csv
    field that holds the separator, and `multiline` that such a field may hold line ends too."""

    name: str
    format: str
    file_patterns: tuple[str, ...]
    columns: tuple[RawColumn, ...]
    workflow: dict[str, Any] = field(default_factory=dict)
    table: str | None = None
    version: int | None = None
    day_column: str | None = None
    day_origin: str = DEFAULT_DAY_ORIGIN
    header: bool = False  # tsv/csv: each file's first line names its columns
    quote: str | None = None  # tsv/csv: the character that quotes a field holding the separator
    multiline: bool = False  # with a quote: a quoted field may hold line ends (a row spans lines)

    @property
    def separator(self) -> str:
        return SEPARATORS[self.format]

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def read_names(self) -> list[str]:
        """The fields a row is read from: its columns, then its day_column if it names one (a timestamp
        column may give the day too)."""
        return list(dict.fromkeys([*self.names, *([self.day_column] if self.day_column else [])]))

    def column(self, name: str) -> RawColumn:
        for column in self.columns:
            if column.name == name:
                return column
        raise InputError(f"dataset {self.name} has no column {name!r}")

    def tagged(self, tag: str) -> list[str]:
        return [c.name for c in self.columns if tag in c.tags]

    @property
    def label(self) -> str:
        (label,) = self.tagged(Tags.LABEL)
        return label

    def input_schema(self) -> Schema:
        """The bronze columns as a schema: what the default workflow's ops start from (a timestamp
        column tagged as epoch milliseconds, which DatePart refuses to read as seconds)."""
        return Schema(
            tuple(
                ColumnSchema(
                    c.name, c.dtype, c.tags, token_width=c.token_width, alphabet=c.alphabet
                ).with_tags([Tags.EPOCH_MS] if c.type == TIMESTAMP else [])
                for c in self.columns
            )
        )

    def bronze_schema(self) -> StructType:
        """Raw fields typed (empty field = null; the label never null), plus the day partition and
        each row's line lineage."""
        from pyspark.sql.types import StructType, _parse_datatype_string

        fields = [f"{DAY} int NOT NULL"]
        fields += [
            f"`{c.name}` {c.spark_type}" + (" NOT NULL" if Tags.LABEL in c.tags else "") for c in self.columns
        ]
        fields += [f"{SOURCE_FILE} string NOT NULL", f"{LINE_NUMBER} bigint NOT NULL"]
        parsed = _parse_datatype_string(", ".join(fields))
        assert isinstance(parsed, StructType)
        return parsed

    def default_workflow(self, **overrides: Any) -> Workflow:
        """The definition's workflow; each override replaces that parameter in every op that has it
        (e.g. freq_threshold=3)."""
        from rec_plugin.ops import OPS
        from rec_plugin.workflow import Node, Workflow

        graph: list[Node | str] = []
        for node in self.workflow.get("nodes", []):
            columns = self._node_columns(node)
            ops = []
            for entry in node["ops"]:
                op_type = OPS[entry["op"]]
                params = dict(entry.get("params", {}))
                op = op_type(**params)
                op.params.update({k: v for k, v in overrides.items() if k in op.params and v is not None})
                ops.append(op)
            graph.append(Node(tuple(columns), tuple(ops)))
        passthrough = list(self.workflow.get("passthrough", []))
        passthrough += [n for t in self.workflow.get("passthrough_tags", []) for n in self.tagged(t)]
        return Workflow([*graph, *passthrough], input_schema=self.input_schema())

    def _node_columns(self, node: dict) -> list[str]:
        """A workflow node's columns: those it names, then those its tags select, each once."""
        named = list(node.get("columns", [])) + [n for t in node.get("tags", []) for n in self.tagged(t)]
        return list(dict.fromkeys(named))

    def _check_workflow(self) -> None:
        """Every node's columns exist when it runs (the raw columns, or an earlier node's outputs), it
        selects some, and its ops exist and take their params: refused at load, before any work."""
        from rec_plugin.ops import OPS
        from rec_plugin.ops.base import check_params
        from rec_plugin.ops.date_part import DatePart

        available = set(self.names)
        lineage = set(ROW_KEYS)  # what bronze adds to the raw columns, e.g. TargetEncoding's fold key
        for number, node in enumerate(self.workflow.get("nodes", []), start=1):
            where = f"dataset {self.name}: workflow node {number}"
            absent = [c for c in node.get("columns", []) if c not in available]
            if absent:
                raise InputError(f"{where} reads columns {absent} that no column or earlier node makes")
            columns = self._node_columns(node)
            if not columns:
                raise InputError(f"{where} selects no column (no column has its tags {node.get('tags', [])})")
            if not node.get("ops"):
                raise InputError(f'{where} has no ops: give its "ops" list')
            for entry in node["ops"]:
                name = entry.get("op")
                if name not in OPS:
                    raise InputError(f"{where}: unknown op {name!r} (known: {', '.join(sorted(OPS))})")
                times = [c for c in columns if c in self.names and self.column(c).type == TIMESTAMP]
                if OPS[name] is DatePart and times and entry.get("params", {}).get("unit") != "ms":
                    raise InputError(
                        f"{where}: {times} hold epoch milliseconds (type timestamp): "
                        'give DatePart "unit": "ms"'
                    )
                try:
                    check_params(OPS[name], entry.get("params", {}))
                    op = OPS[name](**entry.get("params", {}))
                    columns = op.output_columns(columns)
                except (TypeError, ValueError) as error:
                    raise InputError(f"{where}: {str(error).replace('.__init__()', '')}") from None
                unread = [c for c in op.reads() if c not in available | lineage]
                if unread:
                    raise InputError(f"{where}: {name} reads {unread}, which no column or earlier node makes")
            available.update(columns)
        passed = [*self.workflow.get("passthrough", [])]
        absent = [c for c in passed if c not in available]
        if absent:
            raise InputError(f"dataset {self.name}: workflow passthrough names columns {absent} it lacks")
        try:  # what the workflow checks of its graph (shared vocabularies, columns fitted twice) and
            # of its inputs (feature names, number ops on strings)
            self.default_workflow().check(self.input_schema())
        except InputError as error:
            raise InputError(f"dataset {self.name}: {error}") from None

    @classmethod
    def from_dict(cls, data: dict) -> DatasetDefinition:
        where = f"dataset {data.get('name')}"
        for key in ("columns", "file_patterns"):  # a string would be taken as its characters
            if not isinstance(data.get(key, []), list):
                raise InputError(f"{where}: {key} is a JSON list, not {json.dumps(data[key])}")
        for column in data["columns"]:
            _refuse_unknown_keys(f"{where}, column {column.get('name')}", column, RawColumn)
        _refuse_unknown_keys(where, data, cls)
        try:
            columns = tuple(
                RawColumn(
                    **{
                        **{k: v for k, v in c.items() if not k.startswith("_")},
                        "tags": tuple(c.get("tags", ())),
                    }
                )
                for c in data["columns"]
            )
        except InputError as error:
            raise InputError(f"dataset {data['name']}: {error}") from None
        # The label is a click, 0 or 1, whatever rule the definition gives it (or none): the models
        # learn a click's probability, and a null label has no row in bronze.
        columns = tuple(replace(c, rule=BINARY) if Tags.LABEL in c.tags else c for c in columns)
        names = [c.name for c in columns]
        unstorable = [n for n in names if UNSTORABLE_NAME.search(n)]
        if unstorable:  # Spark reads a dot as a struct's field; Delta refuses the others
            raise InputError(
                f"dataset {data['name']}: columns {unstorable} have names bronze cannot hold: leave out "
                "spaces and the characters .,;{}()=` (a feature's name is letters, digits and _)"
            )
        doubled = sorted({n for n in names if names.count(n) > 1})
        if doubled:
            raise InputError(f"dataset {data['name']}: columns {doubled} are named twice: name each once")
        unknown = sorted({c.type for c in columns} - set(RAW_TYPES))
        if unknown:
            raise InputError(
                f"dataset {data['name']}: unknown column types {unknown} (known: {sorted(RAW_TYPES)})"
            )
        not_numbers = [c.name for c in columns if Tags.CONTINUOUS in c.tags and c.type not in NUMBER_TYPES]
        if not_numbers:  # the ops of continuous columns (Clip, LogOp, Normalize) compute with numbers
            raise InputError(
                f"dataset {data['name']}: columns {not_numbers} are tagged continuous but are not of type "
                f"{' or '.join(NUMBER_TYPES)}: tag them categorical, or declare their numeric type"
            )
        definition = cls(
            data["name"],
            data["format"],
            tuple(data.get("file_patterns", ())),
            columns,
            data.get("workflow", {}),
            table=data.get("table"),
            version=data.get("version"),
            day_column=data.get("day_column"),
            day_origin=data.get("day_origin", DEFAULT_DAY_ORIGIN),
            header=data.get("header", False),
            quote=data.get("quote"),
            multiline=data.get("multiline", False),
        )
        definition._check_source()
        definition._check_workflow()
        if len(definition.tagged(Tags.LABEL)) != 1:
            raise InputError(f"dataset {definition.name}: exactly one column must be tagged label")
        if definition.column(definition.label).type not in NUMBER_TYPES:
            raise InputError(
                f"dataset {definition.name}: the label {definition.label} is a click, 0 or 1: declare its "
                f"type {' or '.join(NUMBER_TYPES)}"
            )
        return definition

    def _check_source(self) -> None:
        """The source fields fit the format: refused at load, before Spark starts."""
        where = f"dataset {self.name}"
        if self.format not in FORMATS:
            raise InputError(f"{where}: format {self.format!r} is not one of {list(FORMATS)}")
        if (self.format == DELTA) != (self.table is not None):
            raise InputError(f"{where}: a delta source names its `table`, and only a delta source does")
        if self.format == DELTA and self.file_patterns:
            raise InputError(f"{where}: a delta source reads its table, not files: drop file_patterns")
        if self.format != DELTA and not self.file_patterns:
            raise InputError(f"{where}: format {self.format} needs file_patterns")
        if self.version is not None and not (
            self.table and isinstance(self.version, int) and self.version >= 0
        ):
            raise InputError(f"{where}: `version` pins a delta table's version: an int >= 0")
        if self.day_column is None and self.format == DELTA:
            raise InputError(f"{where}: a delta source names the `day_column` that gives each row's day")
        if self.day_column in self.names and self.column(self.day_column).type != TIMESTAMP:
            raise InputError(
                f"{where}: day_column {self.day_column} is bronze's day, so it cannot be a column "
                "(but a timestamp column: an event time gives both)"
            )
        if self.header not in (True, False) or (self.header and self.format not in SEPARATORS):
            raise InputError(f"{where}: `header` is true or false, and only tsv and csv files have one")
        if self.quote is not None and (
            self.format not in SEPARATORS or not (isinstance(self.quote, str) and len(self.quote) == 1)
        ):
            raise InputError(f"{where}: `quote` is one character, and only tsv and csv fields are quoted")
        if self.multiline not in (True, False) or (self.multiline and self.quote is None):
            raise InputError(f"{where}: `multiline` is true or false, and only quoted fields hold line ends")
        if self.multiline and not str(self.quote).isascii():  # rows are joined over the lines' bytes
            raise InputError(f"{where}: a `multiline` definition's quote is an ASCII character")
        unsplit = [c.name for c in self.columns if c.type == LIST and not c.list_separator]
        if unsplit and self.format in SEPARATORS:
            raise InputError(f"{where}: list columns {unsplit} read from {self.format} need a list_separator")
        if self.day_column is not None and self.format not in DAY_COLUMN_FORMATS:
            raise InputError(f"{where}: {self.format} files take their day from their path, not a day_column")
        try:  # in the one form Spark's cast to date takes too (Python's also takes 20240101)
            if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", self.day_origin):
                raise ValueError(self.day_origin)
            date.fromisoformat(self.day_origin)
        except (TypeError, ValueError):
            raise InputError(f"{where}: day_origin {self.day_origin!r} is not a date (YYYY-MM-DD)") from None


def bundled_datasets() -> list[str]:
    """The names of the definitions in conf/datasets."""
    return sorted(p.stem for p in DATASETS_DIR.glob("*.json"))


def _refuse_unknown_keys(where: str, given: dict, kind: type) -> None:
    """A key `kind` (a dataclass) has no field for is refused, naming the nearest one: a misspelt key
    (Spark's `multiLine`) would otherwise be left at its default without a word. Keys starting with `_`
    are comments."""
    known = [f.name for f in fields(kind)]
    for key in given:
        if not key.startswith("_") and key not in known:
            near = get_close_matches(key.lower(), known, n=1, cutoff=0.6)
            hint = f": did you mean {near[0]!r}?" if near else f" (known: {', '.join(known)})"
            raise InputError(f"{where}: unknown key {key!r}{hint}")


def load_dataset(name_or_path: str) -> DatasetDefinition:
    """A bundled definition by name (conf/datasets/<name>.json) or a user's by path: read again once
    the file changes (a notebook's session outlives edits of its definition)."""
    path = Path(name_or_path)
    if not path.suffix:
        path = DATASETS_DIR / f"{name_or_path}.json"
    if not path.is_file():
        bundled = ", ".join(bundled_datasets())
        raise InputError(f"no dataset definition {name_or_path} (bundled: {bundled}; or give a .json path)")
    status = path.stat()
    return _parsed_definition(path, status.st_mtime_ns, status.st_size)


@cache
def _parsed_definition(path: Path, modified_ns: int, size: int) -> DatasetDefinition:
    """The definition in `path` as of its modification time and size (the cache's key)."""
    try:
        return DatasetDefinition.from_dict(json.loads(path.read_text()))
    except KeyError as error:
        raise InputError(f"dataset definition {path} lacks the key {error}: is it a definition?") from None
    except (TypeError, AttributeError, json.JSONDecodeError) as error:  # e.g. a name where an object goes
        raise InputError(f"dataset definition {path} is malformed: {error}") from None
