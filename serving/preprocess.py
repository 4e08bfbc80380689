"""Exports a fitted workflow in serving form, generated from the workflow and its schema: the raw
inputs (RawSpec: one group per kind of input column), the steps serving runs, each model input's
expression, and one parquet lookup table per vocabulary or target encoding. serving/preprocessor.py
runs them; nothing is pickled.

Every op is served with Spark's transform semantics (rows not fitted on, as at scoring):
- FillMissing, Clip, LogOp, Normalize, DatePart: their op_templates.json SQL, rendered as Spark renders
  it and nested per column (polars' SQL runs it).
- Categorify: the vocabulary (value, id) looked up by the value cast to string; absent -> 0, or with
  num_buckets the value's hash bucket (HashBucket's formula over the text: xxhash64, pmod, + 1).
- HashBucket, Cross: Spark's xxhash64 (serving/tokens.py), pmod, + 1; 0 when an input is null.
- TargetEncoding: TE_<column> from the all-folds statistics, (sum + w * prior) / (count + w) computed
  here by Spark as float, the prior for an unseen value.
- ListCategorify: the raw list's first max_length elements looked up in its vocabulary (absent -> 0).
  An op with `vocabulary_of` (ids from another column's vocabulary) reads that column's lookup table:
  one parquet file per vocabulary, whichever columns share it.
- A list model input that no ListCategorify makes but that names a Categorify's vocabulary (Mult-VAE's
  bag of items, rec_plugin/interactions.py) is served the same way from a raw list of that
  vocabulary's tokens, by the input's name and max_length.

Only what the model's inputs depend on is served: a model of part of the workflow's outputs (NCF: the
user and item ids) takes only the raw columns those need.

What cannot be served with parity is refused here in one line naming the op: an op of another kind,
a vocabulary or hash of float values (Spark's double-to-string and float hashing of computed values
are not reproduced), row ops on strings (but FillMissing with a string), and lists read by anything
but one ListCategorify of the raw column.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from rec_plugin.errors import InputError
from rec_plugin.ops import Categorify, Cross, HashBucket, ListCategorify, TargetEncoding
from rec_plugin.ops.base import RowOp
from rec_plugin.ops.date_part import EPOCH_DTYPES, PARTS
from rec_plugin.schema import Schema, Tags
from rec_plugin.templates import render_over
from rec_plugin.workflow import Workflow
from serving.preprocessor import EXPRESSIONS, RawColumn, RawSpec
from serving.tokens import TOKEN_BYTES

NUMERIC = ("int32", "int64", "float32", "float64")
KEYED = ("string", "int32", "int64")
HASHED = ("string", "int32", "int64")
DATE_PART_TEMPLATES = {template for template, _ in PARTS.values()}


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _standard_sql(sql: str) -> str:
    """Spark SQL quotes identifiers with backticks, standard SQL (polars) with double quotes."""
    return sql.replace("`", '"')


def _refuse(op: object, why: str) -> InputError:
    return InputError(f"{type(op).__name__} cannot be served with parity: {why}")


def _row_dtype(op: RowOp, column: str, dtype: str) -> str:
    """The Spark type a row op's template leaves `column` in; refuses what serving cannot match."""
    template, params = op.template, op.params
    if dtype == "string" and template == "fill_missing" and isinstance(params.get("value"), str):
        if set(params["value"]) & set("\\'`"):  # Spark's escapes and quoting are not polars' SQL's
            raise _refuse(op, f"column {column!r}: fill value {params['value']!r} holds a quote or backslash")
        return "string"
    if dtype not in NUMERIC:
        raise _refuse(
            op, f"column {column!r} is {dtype}, and serving applies {type(op).__name__} to numbers only"
        )
    wide = [
        v for v in params.values() if isinstance(v, int) and not isinstance(v, bool) and abs(v) > 2**31 - 1
    ]
    if dtype == "int32" and wide:  # Spark widens the column to bigint, which polars' int32 would not follow
        raise _refuse(
            op, f"column {column!r} is int32 and {wide[0]} is beyond 32-bit integers: declare it long"
        )
    if template == "fill_missing":
        value = params.get("value")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _refuse(op, f"column {column!r}: fill value {value!r} is not a number")
        return "float64" if isinstance(value, float) and dtype.startswith("int") else dtype
    if template == "clip":
        bounds = [params.get("min"), params.get("max")]
        return "float64" if any(isinstance(b, float) for b in bounds) and dtype.startswith("int") else dtype
    if template == "log":
        return "float64"
    if template == "normalize":
        return "float32"
    if template in DATE_PART_TEMPLATES:
        if dtype not in EPOCH_DTYPES:
            raise _refuse(
                op, f"column {column!r} is {dtype}, not an epoch time ({' or '.join(EPOCH_DTYPES)})"
            )
        return "int32"
    raise _refuse(op, f"template {template!r} has no serving form")


def _sql(steps: list[dict], outputs: dict) -> list[str]:
    """Every SQL expression the steps and the model inputs read."""
    return [sql for step in steps for sql in step.get("inputs", [])] + [
        sql for group in ("continuous", "categorical") for _, sql in outputs[group]
    ]


def _needed_steps(
    steps: list[dict], outputs: dict, lists: list[RawColumn]
) -> tuple[list[dict], list[RawColumn]]:
    """The steps the model inputs depend on, and the raw lists they read (renumbered): a model of part
    of the workflow's outputs (NCF: its user and item ids) takes only the raw columns it needs."""
    read = _sql([], outputs)
    made = {output for _, output in outputs["lists"]}
    kept = []
    for step in reversed(steps):  # a step reads only the raw columns and the outputs of steps before it
        if step["output"] in made or any(_quoted(step["output"]) in sql for sql in read):
            kept.append(step)
            read += step.get("inputs", [])
    kept.reverse()
    used = [step["list"] for step in kept if step["kind"] == "list"]
    renumbered = [{**s, "list": used.index(s["list"])} if s["kind"] == "list" else s for s in kept]
    return renumbered, [lists[i] for i in used]


def export_preprocess(
    spark: SparkSession, workflow_path: str, out: Path, schema: Schema | None = None
) -> Path:
    """Writes preprocess.json and the lookup tables into `out`; returns preprocess.json's path.

    `schema` is the output schema the model was trained with (default: the workflow's): its model
    inputs are the served outputs, in its order."""
    # The workflow's version the model was trained with: version k of a model is served with the
    # vocabularies of its own workflow version, however far later days have grown them.
    workflow = Workflow.load(workflow_path, spark, pinned_to=schema)
    if workflow.states is None or workflow.input_schema is None:
        raise InputError(f"workflow {workflow_path} is not fitted: featurize (fit it) first")
    schema = schema or workflow.schema or workflow.output_schema()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    raw_columns = {c.name: c for c in workflow.input_schema}
    label = {c.name for c in workflow.input_schema if c.has(Tags.LABEL)}
    read = [c for node in workflow.nodes for c in node.columns] + list(schema.names)
    # The raw columns serving takes: those the graph reads (or a model input passes through).
    served_raw = [c for c in workflow.input_schema if c.name in read and c.name not in label]
    expressions = {c.name: _quoted(c.name) for c in served_raw if not c.is_list}
    dtypes = {c.name: c.dtype for c in served_raw}
    lists_read: dict[str, int] = {}
    list_spec: list[RawColumn] = []
    steps: list[dict] = []
    tables = 0

    def table_file(frame, payload: str) -> str:  # noqa: ANN001 - a Spark DataFrame (value, payload)
        nonlocal tables
        name = f"lookup_{tables}.parquet"
        tables += 1
        data = frame.where(F.col("value").isNotNull()).toPandas()
        pq.write_table(pa.Table.from_pandas(data[["value", payload]], preserve_index=False), out / name)
        return name

    # The lookup file of each column's vocabulary, by the column whose Categorify fitted it.
    vocabulary_files: dict[str, str] = {}

    def vocabulary_file(op: Categorify, column: str, state: dict) -> str:
        """The lookup file `op` maps `column` through: its own vocabulary's, written here, or with
        `vocabulary_of` the one written for that column by its (earlier) Categorify."""
        if op.vocabulary_of is not None:
            return vocabulary_files[op.vocabulary_of]
        vocabulary_files[column] = table_file(state[column].select("value", "id"), "id")
        return vocabulary_files[column]

    def step_output() -> str:
        return f"__step{len(steps)}"

    for node, states in zip(workflow.nodes, workflow.states):
        columns = list(node.columns)
        for op, state in zip(node.ops, states):
            for c in columns:
                if c not in dtypes:
                    raise _refuse(op, f"column {c!r} is neither a raw column nor made by an earlier op")
            listed = [c for c in columns if dtypes[c].startswith("list<")]
            if isinstance(op, ListCategorify):
                for c in columns:
                    if c not in raw_columns or dtypes[c] != "list<string>" or c in lists_read:
                        raise _refuse(
                            op, f"serving takes one ListCategorify of a raw list<string> column, not of {c!r}"
                        )
                    lists_read[c] = len(list_spec)
                    raw = raw_columns[c]
                    list_spec.append(
                        RawColumn(
                            c, raw.dtype, int(op.params["max_length"]),
                            token_width=raw.token_width, alphabet=raw.alphabet,
                        )
                    )  # fmt: skip
                    vocabulary = vocabulary_file(op, c, state)
                    output = step_output()
                    steps.append(
                        {"kind": "list", "op": "ListCategorify", "column": c, "list": lists_read[c],
                         "table": vocabulary, "max_length": int(op.params["max_length"]), "output": output}
                    )  # fmt: skip
                    expressions[c] = output
                    dtypes[c] = "list<int32>"
                continue
            if listed:
                raise _refuse(op, f"list columns {listed} are served through ListCategorify only")
            if isinstance(op, Categorify | TargetEncoding):
                for c in columns:
                    if dtypes[c] not in KEYED:
                        raise _refuse(
                            op, f"column {c!r} is {dtypes[c]}: lookups by a {dtypes[c]}'s text are not served"
                        )
                    # Hash buckets read the value's text: a raw token is then looked up by its text.
                    hashes = isinstance(op, Categorify) and op.num_buckets > 0
                    is_raw = (
                        expressions[c] == _quoted(c)
                        and c in raw_columns
                        and dtypes[c] == "string"
                        and not hashes
                    )
                    step = {
                        "kind": "lookup",
                        "op": type(op).__name__,
                        "column": c,
                        "raw": c if is_raw else None,
                        "inputs": [_standard_sql(expressions[c])],
                        "dtypes": [dtypes[c]],
                        "output": step_output(),
                    }
                    if isinstance(op, Categorify):
                        step["table"] = vocabulary_file(op, c, state)
                        step.update({"buckets": op.num_buckets} if hashes else {})
                        expressions[c] = render_over("category_id", {"id": _quoted(step["output"])}, {})
                        dtypes[c] = "int32"
                    else:
                        prior, w = state["prior"], float(op.params["smoothing"])
                        totals = (
                            state["stats"][c]
                            .groupBy("value")
                            .agg(F.sum("sum").alias("s"), F.sum("count").alias("n"))
                        )
                        encoded = totals.select(
                            "value",
                            ((F.col("s") + w * prior) / (F.col("n") + w)).cast("float").alias("encoding"),
                        )
                        step["table"] = table_file(encoded, "encoding")
                        step["missing"] = prior
                        (name,) = op.output_columns([c])
                        expressions[name] = _quoted(step["output"])
                        dtypes[name] = "float32"
                    steps.append(step)
            elif isinstance(op, HashBucket | Cross):
                groups = [columns] if isinstance(op, Cross) else [[c] for c in columns]
                for group in groups:
                    unhashed = [c for c in group if dtypes[c] not in HASHED]
                    if unhashed:
                        raise _refuse(
                            op,
                            f"columns {unhashed} are {[dtypes[c] for c in unhashed]}: only strings and "
                            "integers hash as Spark does",
                        )
                    output = step_output()
                    steps.append(
                        {"kind": "hash", "op": type(op).__name__, "column": "_x_".join(group),
                         "inputs": [_standard_sql(expressions[c]) for c in group],
                         "dtypes": [dtypes[c] for c in group], "buckets": int(op.params["buckets"]),
                         "output": output}
                    )  # fmt: skip
                    (name,) = op.output_columns(group) if isinstance(op, Cross) else (group[0],)
                    expressions[name] = _quoted(output)
                    dtypes[name] = "int32"
            elif isinstance(op, RowOp):
                for c, output in zip(columns, op.output_columns(columns), strict=True):
                    params = op.template_params(c, state)
                    dtypes[output] = _row_dtype(op, c, dtypes[c])
                    expressions[output] = _standard_sql(
                        render_over(op.template, {"x": expressions[c]}, params)
                    )
            else:
                raise _refuse(op, "it has no serving form")
            columns = op.output_columns(columns)

    outputs = {"continuous": [], "categorical": [], "lists": []}
    for group, columns, allowed in (
        ("continuous", schema.continuous, NUMERIC),
        ("categorical", schema.categorical, ("int32", "int64")),
    ):
        for column in columns:
            if column.name not in expressions or dtypes.get(column.name) not in allowed:
                raise InputError(
                    f"model input {column.name!r} ({group}) is "
                    f"{dtypes.get(column.name, 'not made by the workflow')}: "
                    "serving cannot give it to the model"
                )
            outputs[group].append([column.name, expressions[column.name]])
    # The column that owns each vocabulary pin: an input made outside the workflow (Mult-VAE's bag of
    # item ids) is served from that column's raw tokens, looked up in its vocabulary.
    owners = {
        c.vocabulary: c.name
        for c in workflow.schema or ()
        if c.vocabulary is not None and c.name in vocabulary_files
    }
    for column in schema.lists:
        if column.name not in lists_read:
            owner = owners.get(column.vocabulary) if column.vocabulary is not None else None
            if owner is None or not column.max_length:
                raise InputError(
                    f"list model input {column.name!r} has no ListCategorify to serve it by, nor a "
                    "max_length and the vocabulary of a Categorify of the workflow"
                )
            index, width = len(list_spec), int(column.max_length)
            lists_read[column.name] = index
            items = raw_columns.get(owner)  # its elements are the owner's raw tokens, when it is raw
            list_spec.append(
                RawColumn(
                    column.name, "list<string>", width, distinct=True,
                    token_width=items and items.token_width, alphabet=items and items.alphabet,
                )
            )  # fmt: skip
            steps.append(
                {"kind": "list", "op": "ListCategorify", "column": column.name, "list": index,
                 "table": vocabulary_files[owner], "max_length": width, "output": step_output(),
                 "distinct": True}
            )  # fmt: skip
            expressions[column.name] = steps[-1]["output"]
        outputs["lists"].append([column.name, expressions[column.name]])
    steps, list_spec = _needed_steps(steps, outputs, list_spec)
    served_raw = [c for c in served_raw if any(_quoted(c.name) in sql for sql in _sql(steps, outputs))]
    strings = [c for c in served_raw if c.dtype == "string"]
    # The fixed-width token path: every raw string column declares the same width, of at most 8.
    widths = {c.token_width for c in strings}
    width = next(iter(widths)) if len(widths) == 1 else None
    width = width if width is not None and 0 < width <= TOKEN_BYTES else None
    spec = RawSpec(
        tuple(RawColumn(c.name, c.dtype) for c in served_raw if c.dtype in NUMERIC),
        tuple(RawColumn(c.name, c.dtype, token_width=c.token_width, alphabet=c.alphabet) for c in strings),
        width,
        tuple(list_spec),
    )
    unknown = [
        c.name
        for c in served_raw
        if c.dtype not in NUMERIC and c.dtype != "string" and c.name not in lists_read
    ]
    if unknown:
        raise InputError(
            f"raw columns {unknown} have no serving form (numbers, strings and ListCategorify lists)"
        )
    # Raw string columns whose text (not only their key) an expression or a hash reads.
    texts = [sql for step in steps if step.get("raw") is None for sql in step.get("inputs", [])]
    texts += [sql for group in ("continuous", "categorical") for _, sql in outputs[group]]
    materialized = [c.name for c in strings if any(_quoted(c.name) in sql for sql in texts)]
    plan = {"raw": spec.to_dict(), "steps": steps, "outputs": outputs, "materialized": materialized}
    (out / EXPRESSIONS).write_text(json.dumps(plan, indent=1) + "\n")
    return out / EXPRESSIONS
