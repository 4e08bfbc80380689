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
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rec_plugin.errors import InputError
from rec_plugin.schema import DAY, LINE_NUMBER, SOURCE_FILE, ColumnSchema, Schema, Tags

if TYPE_CHECKING:
    from pyspark.sql.types import StructType

    from rec_plugin.workflow import Workflow

DATASETS_DIR = Path(__file__).resolve().parents[1] / "conf" / "datasets"
# The dataset every stage assumes when none is named.
DEFAULT_DATASET = "criteo"
# Raw column type -> (schema dtype, Spark SQL type).
RAW_TYPES = {
    "int": ("int32", "int"),
    "long": ("int64", "bigint"),
    "float": ("float64", "double"),
    "string": ("string", "string"),
    "list<string>": ("list<string>", "array<string>"),
}
SEPARATORS = {"tsv": "\t", "csv": ","}


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

    @property
    def dtype(self) -> str:
        return RAW_TYPES[self.type][0]

    @property
    def spark_type(self) -> str:
        return RAW_TYPES[self.type][1]


@dataclass(frozen=True)
class DatasetDefinition:
    """A parsed definition; `workflow` is the default ops graph with columns chosen by name or tag."""

    name: str
    format: str
    file_patterns: tuple[str, ...]
    columns: tuple[RawColumn, ...]
    workflow: dict[str, Any] = field(default_factory=dict)

    @property
    def separator(self) -> str:
        return SEPARATORS[self.format]

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

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
        """The bronze columns as a schema: what the default workflow's ops start from."""
        return Schema(
            tuple(ColumnSchema(c.name, c.dtype, c.tags, token_width=c.token_width) for c in self.columns)
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
            columns = list(node.get("columns", [])) + [
                n for t in node.get("tags", []) for n in self.tagged(t)
            ]
            ops = []
            for entry in node["ops"]:
                op_type = OPS[entry["op"]]
                params = dict(entry.get("params", {}))
                op = op_type(**params)
                op.params.update({k: v for k, v in overrides.items() if k in op.params and v is not None})
                ops.append(op)
            graph.append(Node(tuple(dict.fromkeys(columns)), tuple(ops)))
        passthrough = list(self.workflow.get("passthrough", []))
        passthrough += [n for t in self.workflow.get("passthrough_tags", []) for n in self.tagged(t)]
        return Workflow([*graph, *passthrough], input_schema=self.input_schema())

    @classmethod
    def from_dict(cls, data: dict) -> DatasetDefinition:
        columns = tuple(
            RawColumn(
                **{**{k: v for k, v in c.items() if not k.startswith("_")}, "tags": tuple(c.get("tags", ()))}
            )
            for c in data["columns"]
        )
        unknown = sorted({c.type for c in columns} - set(RAW_TYPES))
        if unknown:
            raise InputError(
                f"dataset {data['name']}: unknown column types {unknown} (known: {sorted(RAW_TYPES)})"
            )
        if data["format"] not in SEPARATORS:
            raise InputError(
                f"dataset {data['name']}: format {data['format']!r} is not one of {sorted(SEPARATORS)}"
            )
        definition = cls(
            data["name"], data["format"], tuple(data["file_patterns"]), columns, data.get("workflow", {})
        )
        if len(definition.tagged(Tags.LABEL)) != 1:
            raise InputError(f"dataset {definition.name}: exactly one column must be tagged label")
        return definition


@cache
def load_dataset(name_or_path: str) -> DatasetDefinition:
    """A bundled definition by name (conf/datasets/<name>.json) or a user's by path."""
    path = Path(name_or_path)
    if not path.suffix:
        path = DATASETS_DIR / f"{name_or_path}.json"
    if not path.is_file():
        bundled = ", ".join(sorted(p.stem for p in DATASETS_DIR.glob("*.json")))
        raise InputError(f"no dataset definition {name_or_path} (bundled: {bundled}; or give a .json path)")
    try:
        return DatasetDefinition.from_dict(json.loads(path.read_text()))
    except (KeyError, TypeError, json.JSONDecodeError) as error:
        raise InputError(f"dataset definition {path} is malformed: {error}") from None
