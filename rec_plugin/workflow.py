"""Workflow: an NVTabular-style ops graph over Spark DataFrames, fitted once, applied anywhere.

    cont = DENSE >> FillMissing(0) >> Clip(min=0) >> LogOp() >> Normalize()
    cat = CATEGORICAL >> Categorify(freq_threshold=15)
    wf = Workflow(cont + cat + ["label"])
    wf.fit(bronze); features = wf.transform(bronze); wf.save(path); wf2 = Workflow.load(path)

The workflow folder (this module owns it) holds workflow.json (the graph, parameters and scalar
statistics), schema.json (the output schema, every vocabulary pinned to its Delta version), one Delta
table of every vocabulary (Categorify's VOCABULARY_TABLE, partitioned by column) and one per statistics
table: no pickle. Each fit and each extend also writes
versions/<k>/schema.json (k = 1 for the fit, + 1 per extend): since the schema pins every vocabulary's
Delta version, version k stays loadable and unchanged (`load(path, version=k)`) while later days grow
the tables, and a model trained on version k is served with exactly its vocabularies."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from delta.tables import DeltaTable
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from rec_plugin import storage
from rec_plugin.errors import InputError
from rec_plugin.ops import OPS, Categorify, Op
from rec_plugin.ops.base import FITTED_ROW
from rec_plugin.ops.categorify import (
    LEGACY_VOCABULARY_FOLDER,
    VOCABULARY_TABLE,
    merge_vocabularies,
    write_vocabularies,
)
from rec_plugin.schema import COLUMN_NAME_RULE, ColumnSchema, Schema, Tags, unusable_column_names

WORKFLOW_FILE = "workflow.json"
SCHEMA_FILE = "schema.json"
VERSIONS_FOLDER = "versions"
SOURCE_FILE = "source.json"  # in a version's folder: what an extend grew the vocabularies with
# Spark SQL type of each schema dtype (lists map element-wise).
SPARK_TYPES = {"float32": "float", "float64": "double", "int32": "int", "int64": "bigint", "string": "string"}


def spark_type(dtype: str) -> str:
    """The Spark SQL type a column of this schema dtype is stored as."""
    if dtype.startswith("list<"):
        return f"array<{spark_type(dtype[len('list<') : -1])}>"
    return SPARK_TYPES[dtype]


def inferred_schema(frame: DataFrame, label: str = "label") -> Schema:
    """A frame's columns as a schema when no dataset definition gives one: numbers continuous, strings
    categorical, arrays lists, and a column named `label` the label."""
    from pyspark.sql.types import ArrayType, StringType

    columns = []
    for f in frame.schema.fields:
        if f.name == label:
            columns.append(ColumnSchema(f.name, "float32", (Tags.LABEL,)))
        elif isinstance(f.dataType, ArrayType):
            columns.append(ColumnSchema(f.name, "list<string>", (Tags.CATEGORICAL, Tags.LIST)))
        elif isinstance(f.dataType, StringType):
            columns.append(ColumnSchema(f.name, "string", (Tags.CATEGORICAL,)))
        else:
            columns.append(ColumnSchema(f.name, "float64", (Tags.CONTINUOUS,)))
    return Schema(tuple(columns))


@dataclass(frozen=True)
class Node:
    """Columns and the chain of ops applied to them, in order."""

    columns: tuple[str, ...]
    ops: tuple[Op, ...] = field(default=())

    def __rshift__(self, op: Op) -> Node:
        return Node(self.columns, (*self.ops, op))

    def __add__(self, other: Node | list) -> list:
        return [self, *(other if isinstance(other, list) else [other])]

    def __radd__(self, other: list) -> list:
        return [*other, self]

    def output_columns(self) -> list[str]:
        columns = list(self.columns)
        for op in self.ops:
            columns = op.output_columns(columns)
        return columns

    def steps(self) -> list[tuple[Op, list[str]]]:
        """Each op with the columns it reads."""
        steps, columns = [], list(self.columns)
        for op in self.ops:
            steps.append((op, columns))
            columns = op.output_columns(columns)
        return steps


def _vocabulary_owners(nodes: list[Node]) -> dict[tuple[int, int], tuple[int, int]]:
    """(node, op) of each Categorify with `vocabulary_of` -> (node, op) of the Categorify that fits
    that column's vocabulary before it (the latest, as nodes see columns as earlier ones left them).
    A workflow where it is fitted later, or nowhere, is refused in one line naming both columns."""
    owners: dict[str, tuple[int, int]] = {}
    borrowed: dict[str, str] = {}
    shared: dict[tuple[int, int], tuple[int, int]] = {}
    for n, node in enumerate(nodes):
        for k, (op, columns) in enumerate(node.steps()):
            if not isinstance(op, Categorify):
                continue
            name = op.vocabulary_of
            if name is None:
                owners.update({c: (n, k) for c in columns})
            elif name in owners:
                shared[n, k] = owners[name]
                borrowed.update({c: name for c in columns})
            else:
                later = any(
                    isinstance(o, Categorify) and o.vocabulary_of is None and name in read
                    for node_after in nodes[n:]
                    for o, read in node_after.steps()
                )
                if name in borrowed:
                    why = f"{name!r} uses that of {borrowed[name]!r}: name that column"
                elif later:
                    why = f"the Categorify of {name!r} comes in a later node: move that node first"
                else:
                    why = f"no node fits one: add a node [{name!r}] >> Categorify() before it"
                raise InputError(
                    f"{type(op).__name__} of {columns} uses the vocabulary of {name!r}, but {why}"
                )
    return shared


def _refuse_columns_fitted_twice(nodes: list[Node]) -> None:
    """One vocabulary per column: VOCABULARY_TABLE holds a column's values in one partition."""
    fitted: list[str] = []
    for node in nodes:
        columns = list(node.columns)
        for op in node.ops:
            if isinstance(op, Categorify) and op.vocabulary_of is None:
                fitted.extend(columns)
            columns = op.output_columns(columns)
    twice = sorted({c for c in fitted if fitted.count(c) > 1})
    if twice:
        raise InputError(
            f"columns {twice} are each fitted by two Categorify ops: a column has one vocabulary "
            "(give the second op another column, or vocabulary_of)"
        )


def _refuse_number_ops_on_strings(nodes: list[Node], schema: Schema) -> None:
    """An op that computes with numbers (Normalize, Clip, LogOp, DatePart) given a string or list
    column is refused in one line before any job, not mid-fit with a Python or Spark trace.
    A column stays a string through the nodes until an op makes ids or numbers of it; a list stays a
    list (ListCategorify makes a list of ids)."""
    lists = {c.name for c in schema if c.is_list}
    strings = {c.name for c in schema if c.dtype == "string"}
    for node in nodes:
        for op, columns in node.steps():
            given = [c for c in columns if c in strings or c in lists]
            if op.reads_numbers and given:
                raise InputError(
                    f"{type(op).__name__} reads numbers, and columns {given} hold strings or lists: give "
                    "them a number type, or make ids of them (Categorify, HashBucket) instead"
                )
            if not op.keeps_strings:
                strings -= set(op.output_columns(columns))


def _marked(frame: DataFrame, fitted_rows: Column) -> DataFrame:
    """`frame` with the FITTED_ROW column the ops read (a null mark is not fitted)."""
    return frame.withColumn(FITTED_ROW, F.coalesce(fitted_rows, F.lit(False)))


class Workflow:
    """The fitted (or not yet fitted) graph: nodes, plus columns passed through unchanged."""

    def __init__(self, graph: list[Node | str], input_schema: Schema | None = None) -> None:
        """`input_schema` types and tags the input columns (a dataset definition's); without it fit
        infers one from the frame."""
        self.nodes = [item for item in graph if isinstance(item, Node)]
        self.passthrough = [item for item in graph if isinstance(item, str)]
        self.input_schema = input_schema
        self.states: list[list[dict[str, Any]]] | None = None
        self.schema: Schema | None = None
        self._persisted: list[DataFrame] = []
        self._vocabulary_owners = _vocabulary_owners(self.nodes)
        _refuse_columns_fitted_twice(self.nodes)

    def output_columns(self) -> list[str]:
        """Each column the nodes write (once: a later node may rewrite an earlier one's, as a
        Categorify of a Cross's column), then the passthrough columns."""
        written = [c for node in self.nodes for c in node.output_columns()]
        return list(dict.fromkeys(written + self.passthrough))

    def fit(self, frame: DataFrame) -> Workflow:
        """Learns every op's state; each op sees the data as transform hands it to that op for rows
        fitted on (every row of `frame` is one). The fit queries that states keep frames of stay
        persisted until `release` (a refit releases the previous fit's first)."""
        schema = self.input_schema or inferred_schema(frame)
        self.check(schema)
        self.input_schema = schema
        self.release()
        self.states = [[] for _ in self.nodes]

        def fit_op(node_index: int, op_index: int, op: Op, current: DataFrame, columns: list[str]) -> None:
            if (node_index, op_index) in self._vocabulary_owners:
                state = self._shared_state(node_index, op_index, op, columns)
            else:
                state = op.fit(current, columns, self._persisted)
            self.states[node_index].append(state)

        try:
            self._apply(_marked(frame, F.lit(True)), fit_op)
            self.schema = self.output_schema()  # where an op refuses its inputs' schema
        except BaseException:
            self.release()
            raise
        return self

    def check(self, input_schema: Schema) -> None:
        """Refuses, before any job, outputs that training cannot read by name and number ops given
        strings or lists: fit and a dataset definition's load run it (a saved workflow is not held to
        it again)."""
        unusable = unusable_column_names(self.output_columns())
        if unusable:
            raise InputError(f"workflow outputs {unusable}: feature columns need names of {COLUMN_NAME_RULE}")
        _refuse_number_ops_on_strings(self.nodes, input_schema)

    def input_columns(self) -> list[str]:
        """The columns the nodes read from the input (not from an earlier node's outputs), in order."""
        made: set[str] = set()
        read: list[str] = []
        for node in self.nodes:
            read += [c for c in node.columns if c not in made and c not in read]
            made.update(node.output_columns())
        return read

    def output_schema(self) -> Schema:
        """The fitted workflow's output, computed from the graph: each op says what it makes of its
        inputs (NVTabular's compute_output_schema), so no data moves but the vocabularies' sizes."""
        if self.states is None or self.input_schema is None:
            raise RuntimeError("fit the workflow (or load a fitted one) first")
        known = {c.name: c for c in self.input_schema}
        output: dict[str, ColumnSchema] = {}  # a column a later node rewrites keeps its place
        for node, states in zip(self.nodes, self.states):
            missing = [c for c in node.columns if c not in known]
            if missing:
                raise InputError(f"workflow node {list(node.columns)}: no input columns {missing}")
            columns = [known[c] for c in node.columns]
            for op, state in zip(node.ops, states):
                columns = op.output_schema(columns, state)
            known.update({c.name: c for c in columns})
            output.update({c.name: c for c in columns})
        for name in self.passthrough:  # the label is read as a float32 target whatever its raw type
            column = known[name]
            output[name] = replace(column, dtype="float32") if column.has(Tags.LABEL) else column
        return Schema(tuple(output.values()))

    def release(self) -> None:
        """Unpersists what fit persisted, and only that: never the rest of a shared session's cache. The
        states stay usable; their frames then read their source (or saved tables, after load) again."""
        for frame in self._persisted:
            frame.unpersist()
        self._persisted = []

    def fit_queries(self, frame: DataFrame) -> list[DataFrame]:
        """The aggregations fit runs over `frame`, rebuilt from the fitted graph (for plan inspection)."""
        queries: list[DataFrame] = []

        def collect(node_index: int, op_index: int, op: Op, current: DataFrame, columns: list[str]) -> None:
            query = op.fit_query(current, columns)
            queries.extend([] if query is None else [query])

        self._apply(_marked(frame, F.lit(True)), collect, sized_by=self.schema)
        return queries

    def transform(
        self, frame: DataFrame, keep: tuple[str, ...] = (), fitted_rows: Column | None = None
    ) -> DataFrame:
        """The workflow's output columns, plus the untouched input columns named in `keep`.

        `fitted_rows` is a boolean Column over `frame` marking the rows that were in the fit data
        (None: none were, as at serving or scoring). Ops that learn from the label (TargetEncoding)
        encode only those rows out of fold; every other row gets what serving computes."""
        missing = [c for c in self.input_columns() if c not in frame.columns]
        if missing:  # another dataset's rows (its bronze table): Spark would end in a trace
            more = " ..." if len(missing) > 3 else ""
            raise InputError(
                f"the rows lack the workflow's input columns {missing[:3]}{more}: give rows of the dataset "
                "it was fitted on"
            )
        frame = frame.withColumns({f"_keep_{c}": frame[c] for c in keep})
        marked = frame if fitted_rows is None else _marked(frame, fitted_rows)
        frame = self._apply(marked, lambda *_: None, sized_by=self.schema)
        return frame.select(*[frame[f"_keep_{c}"].alias(c) for c in keep], *self.output_columns())

    def extend(self, frame: DataFrame, path: str, source: dict | None = None) -> Workflow:
        """Grows the vocabularies of the workflow saved at `path` with new data (Categorify's
        vocabulary_updates), all in one MERGE: a deployed model keeps its ids, and only the new rows of
        its embedding tables need training. The new version records `source` (what `frame` is, e.g. a
        bronze version and day), so a rerun can find that it is done (`version_extended_by`)."""
        updates: list[DataFrame] = []
        updated: list[str] = []

        def extend_op(node_index: int, op_index: int, op: Op, current: DataFrame, columns: list[str]) -> None:
            if (node_index, op_index) in self._vocabulary_owners:
                self.states[node_index][op_index] = self._shared_state(node_index, op_index, op, columns)
            elif isinstance(op, Categorify):
                update, grown = op.vocabulary_updates(current, columns, self.states[node_index][op_index])
                self.states[node_index][op_index] = grown
                updates.append(update)
                updated.extend(columns)

        spark = frame.sparkSession
        latest = self.load_schema(path, spark)
        if self.schema != latest:
            raise InputError(
                f"workflow {path} was loaded at an older version: extend its latest version "
                f"({self.versions(path, spark)[-1]})"
            )
        if not _kept_versions(spark, path):  # fitted before versions were kept: its schema is version 1
            storage.write_text(spark, _version_file(path, 1, SCHEMA_FILE), latest.to_json())
        if _legacy_pins(latest) or not storage.exists(spark, f"{path}/{VOCABULARY_TABLE}"):
            # Saved with a table per column: their pinned versions become the one table this extends
            # (rewritten on a rerun, so a failed extend's MERGE is not counted twice).
            write_vocabularies(self._fitted_vocabularies(), path)
        else:
            self._undo_unfinished_extend(spark, path)
        states = [list(node_states) for node_states in self.states]
        try:
            self._apply(frame, extend_op)
            merge_vocabularies(spark, updates, updated, path)
            self.schema = self.output_schema()
            version = self.versions(path, spark)[-1] + 1
            if source is not None:  # before the schema: a version is there once its schema is
                storage.write_text(spark, _version_file(path, version, SOURCE_FILE), json.dumps(source))
            self._save_schema(spark, path, version)
            self._reload_vocabularies(spark, path)
        except BaseException:
            self.states = states  # as loaded: a rerun on this object extends from them again
            raise
        finally:
            for update in updates:
                update.unpersist()
        return self

    @classmethod
    def version_extended_by(cls, path: str, source: dict, spark: SparkSession | None = None) -> int | None:
        """The version an extend recording `source` made, None if no finished extend did."""
        spark = spark or SparkSession.getActiveSession()
        for version in cls.versions(path, spark):
            location = _version_file(path, version, SOURCE_FILE)
            if storage.exists(spark, location) and json.loads(storage.read_text(spark, location)) == source:
                return version
        return None

    def _undo_unfinished_extend(self, spark: SparkSession, path: str) -> None:
        """An extend that failed after its vocabulary MERGE but before its schema was written left the
        table past the version the latest schema pins: restore it (a Delta RESTORE, itself a commit),
        so a rerun counts the new day once."""
        for table, pinned in _pins(self.schema).items():
            location = f"{path}/{table}"
            if pinned is not None and storage.delta_version(spark, location, "vocabulary table") > pinned:
                DeltaTable.forPath(spark, location).restoreToVersion(pinned)

    def _apply(
        self,
        frame: DataFrame,
        before_op: Callable[[int, int, Op, DataFrame, list[str]], None],
        sized_by: Schema | None = None,
    ) -> DataFrame:
        """Runs the nodes in order over one frame (a node sees columns as earlier nodes left them),
        calling before_op ahead of each op's transform. `sized_by`: the schema of the states, whose
        cardinalities spare Categorify counting its vocabularies to choose its joins."""
        if self.states is None:
            raise RuntimeError("fit the workflow (or load a fitted one) first")
        for node_index, node in enumerate(self.nodes):
            columns = list(node.columns)
            for op_index, op in enumerate(node.ops):
                before_op(node_index, op_index, op, frame, columns)
                state = self.states[node_index][op_index]
                known = _vocabulary_ids(op, columns, sized_by)
                if known is None:
                    frame = op.transform(frame, columns, state)
                else:
                    frame = op.transform(frame, columns, state, ids=known)
                columns = op.output_columns(columns)
        return frame

    def state(self, node_index: int, op_index: int) -> dict[str, Any]:
        return self.states[node_index][op_index]

    def _shared_state(
        self, node_index: int, op_index: int, op: Categorify, columns: list[str]
    ) -> dict[str, Any]:
        """The state of a Categorify with `vocabulary_of`: the vocabulary its owner (fitted or extended
        before it) holds for that column."""
        owner_node, owner_op = self._vocabulary_owners[node_index, op_index]
        return op.shared_state(self.states[owner_node][owner_op], columns)

    def _categorify_ops(self) -> list[tuple[int, int, Categorify]]:
        """(node, op, the op) of every Categorify of the graph, in order."""
        return [
            (node_index, op_index, op)
            for node_index, node in enumerate(self.nodes)
            for op_index, op in enumerate(node.ops)
            if isinstance(op, Categorify)
        ]

    def _fitted_vocabularies(self) -> list[DataFrame]:
        """The rows of VOCABULARY_TABLE of every Categorify that fits its own vocabularies."""
        return [
            op.vocabulary_rows(self.states[node_index][op_index])
            for node_index, op_index, op in self._categorify_ops()
            if op.vocabulary_of is None
        ]

    def _reload_vocabularies(self, spark: SparkSession, path: str) -> None:
        """Every Categorify's state read from the vocabulary table at the version the schema pins."""
        pins = _pins(self.schema)
        for node_index, op_index, op in self._categorify_ops():
            saved = op.save_state(spark, self.states[node_index][op_index], path)
            self.states[node_index][op_index] = op.load_state(spark, saved, path, pins)

    def graph(self) -> dict[str, Any]:
        """The ops graph as workflow.json holds it, less the fitted states: what a fit depends on
        besides its rows."""
        nodes = [
            {
                "columns": list(n.columns),
                "ops": [{"op": type(op).__name__, "params": op.params} for op in n.ops],
            }
            for n in self.nodes
        ]
        return json.loads(json.dumps({"nodes": nodes, "passthrough": self.passthrough}))

    @staticmethod
    def saved_graph(path: str, spark: SparkSession | None = None) -> dict[str, Any] | None:
        """The graph (Workflow.graph) of the workflow saved at `path`; None where none is."""
        spark = spark or SparkSession.getActiveSession()
        location = f"{path}/{WORKFLOW_FILE}"
        if not storage.exists(spark, location):
            return None
        document = json.loads(storage.read_text(spark, location))
        for node in document["nodes"]:
            for op in node["ops"]:
                del op["state"]
        return {"nodes": document["nodes"], "passthrough": document["passthrough"]}

    def save(self, path: str) -> None:
        spark = SparkSession.getActiveSession()
        if self.states is not None:  # every vocabulary in one commit
            write_vocabularies(self._fitted_vocabularies(), path)
        document = self.graph()
        for entry, node, states in zip(
            document["nodes"], self.nodes, self.states or [[{}] * len(n.ops) for n in self.nodes]
        ):
            for op_entry, op, state in zip(entry["ops"], node.ops, states):
                op_entry["state"] = op.save_state(spark, state, path)
        document["fitted"] = self.states is not None
        document["input_schema"] = (
            None if self.input_schema is None else json.loads(self.input_schema.to_json())
        )
        storage.write_text(spark, f"{path}/{WORKFLOW_FILE}", json.dumps(document, indent=2))
        if self.schema is not None:
            # A (re)fit starts the folder's versions again: its vocabularies were rewritten.
            storage.delete(spark, f"{path}/{VERSIONS_FOLDER}")
            legacy = _legacy_pins(self.schema)  # loaded with a table per column, saved with the one table
            if legacy:
                self.schema = self.output_schema()
            self._save_schema(spark, path, 1)
            if legacy:  # its states read the tables deleted below
                self._reload_vocabularies(spark, path)
            storage.delete(spark, f"{path}/{LEGACY_VOCABULARY_FOLDER}")

    def _save_schema(self, spark: SparkSession, path: str, version: int) -> None:
        """schema.json and versions/<version>/schema.json, each vocabulary pinned to the Delta version
        saved under `path` now; the version's copy is written first, so schema.json never names a
        version that is not there."""
        tables = list(dict.fromkeys(c.vocabulary.table for c in self.schema if c.vocabulary is not None))
        versions = storage.delta_versions(spark, path, tables)
        pinned = [
            c
            if c.vocabulary is None
            else replace(c, vocabulary=replace(c.vocabulary, version=versions[c.vocabulary.table]))
            for c in self.schema
        ]
        self.schema = Schema(tuple(pinned))
        storage.write_text(spark, _version_file(path, version, SCHEMA_FILE), self.schema.to_json())
        storage.write_text(spark, f"{path}/{SCHEMA_FILE}", self.schema.to_json())

    @staticmethod
    def versions(path: str, spark: SparkSession | None = None) -> list[int]:
        """The versions of the fitted workflow at `path`, oldest first (a folder fitted before versions
        were kept has only its schema.json: version 1)."""
        spark = spark or SparkSession.getActiveSession()
        kept = _kept_versions(spark, path)
        return kept or ([1] if storage.exists(spark, f"{path}/{SCHEMA_FILE}") else [])

    @classmethod
    def load_schema(cls, path: str, spark: SparkSession | None = None, version: int | None = None) -> Schema:
        """The output schema of the fitted workflow saved at `path` (without loading its tables): its
        latest version (the newest versions/<k>; schema.json is a copy, written after it), or `version`."""
        spark = spark or SparkSession.getActiveSession()
        kept = _kept_versions(spark, path)
        if not kept and version in (None, 1):  # fitted before versions were kept: schema.json is version 1
            location = f"{path}/{SCHEMA_FILE}"
        elif version is None or version in kept:
            location = _version_file(path, version or kept[-1], SCHEMA_FILE)
        else:
            raise InputError(
                f"workflow {path} has versions {cls.versions(path, spark)}, not version {version}"
            )
        if not storage.exists(spark, location):
            raise InputError(
                f"workflow {path} holds no {SCHEMA_FILE}: featurize (fit a workflow) into it first"
            )
        return Schema.from_json(storage.read_text(spark, location))

    @classmethod
    def version_of(cls, path: str, schema: Schema, spark: SparkSession | None = None) -> int:
        """The newest version of the workflow at `path` whose vocabulary pins agree with every pin of
        `schema` (the schema a model was trained with: a workflow's, or one built from its columns)."""
        spark = spark or SparkSession.getActiveSession()
        wanted = _pins(schema)
        for version in reversed(cls.versions(path, spark)):
            pins = _pins(cls.load_schema(path, spark, version))
            if all(pins.get(table) == pinned for table, pinned in wanted.items()):
                return version
        raise InputError(
            f"no version of workflow {path} pins the vocabularies at {wanted}: the model was not "
            "trained on this workflow"
        )

    @classmethod
    def load(
        cls,
        path: str,
        spark: SparkSession | None = None,
        version: int | None = None,
        pinned_to: Schema | None = None,
    ) -> Workflow:
        """A saved workflow, fitted or not, at its latest version, at `version`, or at the version
        `pinned_to` (the schema a model was trained with) was made from; `spark` defaults to the
        active session."""
        spark = spark or SparkSession.getActiveSession()
        if pinned_to is not None:
            version = cls.version_of(path, pinned_to, spark)
        document = json.loads(storage.read_text(spark, f"{path}/{WORKFLOW_FILE}"))
        schema = cls.load_schema(path, spark, version) if document["fitted"] else None
        pins = _pins(schema) if schema is not None else {}
        graph: list[Node | str] = []
        states = []
        for entry in document["nodes"]:
            ops = [OPS[o["op"]](**o["params"]) for o in entry["ops"]]
            graph.append(Node(tuple(entry["columns"]), tuple(ops)))
            states.append([op.load_state(spark, o["state"], path, pins) for op, o in zip(ops, entry["ops"])])
        saved_input = document.get("input_schema")
        input_schema = Schema.from_json(json.dumps(saved_input)) if saved_input else None
        workflow = cls([*graph, *document["passthrough"]], input_schema)
        workflow.states = states if document["fitted"] else None
        workflow.schema = schema
        return workflow


def _vocabulary_ids(op: Op, columns: list[str], schema: Schema | None) -> dict[str, int] | None:
    """A Categorify's ids per column as `schema` records them, where its output columns are pinned to
    its vocabulary (no later op rewrote them); None when the schema cannot say."""
    if schema is None or not isinstance(op, Categorify):
        return None
    for c in columns:
        pin = schema[c].vocabulary if c in schema else None
        if pin is None or not op.reads_pin(pin, c):
            return None
    return {c: int(schema[c].cardinality) for c in columns}


def _legacy_pins(schema: Schema) -> bool:
    """Whether the schema pins a vocabulary of its own table (saved before VOCABULARY_TABLE)."""
    return any(c.vocabulary is not None and c.vocabulary.column is None for c in schema)


def _pins(schema: Schema) -> dict[str, int | None]:
    return {c.vocabulary.table: c.vocabulary.version for c in schema if c.vocabulary is not None}


def _kept_versions(spark: SparkSession, path: str) -> list[int]:
    """The versions whose schema versions/<k>/schema.json holds (an extend that died before writing
    its schema left no version)."""
    folder = f"{path}/{VERSIONS_FOLDER}"
    if not storage.exists(spark, folder):
        return []
    files = storage.list_files_recursive(spark, folder)
    return sorted(int(p.split("/")[0]) for p in files if p.endswith(f"/{SCHEMA_FILE}"))


def _version_file(path: str, version: int, name: str) -> str:
    return f"{path}/{VERSIONS_FOLDER}/{version}/{name}"
