"""sparkrec ingest: raw click logs (plain or gzip) -> a Delta bronze table partitioned by day.

The raw format is a dataset definition's (rec_plugin/dataset.py; Criteo's by default, or any
conf/datasets/<name>.json or a user's .json): its separator, its columns in order, their types and
rules. Every line ends up in exactly one place: the bronze table (typed by the definition, no
inference) or the rejects table (the raw line, its file and line number, and a reason code).
Re-ingesting a file atomically replaces that file's rows in both tables (one Delta replaceWhere commit
each), so reruns never duplicate. A file's day comes from `day_<d>` in its path, as in Criteo's layout.

    spark-submit spark_jobs/ingest.py --input data/criteo/raw --bronze lake/bronze --rejects lake/rejects
    spark-submit spark_jobs/ingest.py --dataset ecommerce --input data/shop/raw --bronze ... --rejects ...
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Callable, Sequence

from delta.tables import DeltaTable
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StructType

from rec_plugin import storage
from rec_plugin.dataset import DatasetDefinition, RawColumn, load_dataset
from rec_plugin.errors import CommandParser, InputError, run_command
from rec_plugin.schema import (
    DAY,
    INT_NOT_INTEGER,
    INT_OUT_OF_RANGE,
    LINE_NUMBER,
    SOURCE_FILE,
    partition_line_number,
    rejects_schema,
)
from rec_plugin.templates import sql_literal
from spark_jobs.layout import day_list
from spark_jobs.session import build_session, session_conf

DAY_IN_PATH = re.compile(r"day_(\d+)")
DEFAULT_DATASET = "criteo"
# Reason codes of the rejects table. A line gets the first that applies: the line-level ones in this
# order, then each column's own, column by column in the definition's order.
EMPTY_LINE = "EMPTY_LINE"
BAD_BYTES = "BAD_BYTES"
FIELD_COUNT = "FIELD_COUNT"
# A column of rule "binary" that is not 0 or 1 (an empty one too: it is the label's rule).
BAD_LABEL = "BAD_LABEL"
# int/long columns: INT_NOT_INTEGER, then INT_OUT_OF_RANGE (rec_plugin.schema, shared with serving).
# A float column's field that is not a finite decimal number (1.5, -2, 3e-4; not nan, inf or 1e999).
FLOAT_NOT_NUMBER = "FLOAT_NOT_NUMBER"
# A string column (or a list's element) of another length than its token_width, or outside its alphabet.
CAT_BAD_LENGTH = "CAT_BAD_LENGTH"
CAT_NOT_HEX = "CAT_NOT_HEX"
_DECIMAL = r"^[+-]?([0-9]+[.]?[0-9]*|[.][0-9]+)([eE][+-]?[0-9]+)?$"
_ALPHABETS = {"hex": ("[0-9a-f]", CAT_NOT_HEX)}
# The columns a raw line is parsed into besides its own fields (a raw column may not take these names).
_PARSE_COLUMNS = (DAY, SOURCE_FILE, LINE_NUMBER, "raw_line", "problem")
# Each file is read whole by one task, so a row's index in its partition is its line number.
_ONE_FILE_PER_PARTITION = {
    "spark.sql.files.maxPartitionBytes": str(1 << 40),
    "spark.sql.files.openCostInBytes": str(1 << 40),
}


def raw_files(
    spark: SparkSession,
    input_dir: str,
    days: list[int] | None = None,
    patterns: Sequence[str] | None = None,
) -> dict[str, int]:
    """Raw files below input_dir whose names match `patterns` (default: Criteo's file patterns;
    relative path -> day), optionally only the given days; says which files it takes and which it
    leaves, and refuses before any work when there is nothing to take, a day has no file, or a taken
    file has no day in its path."""
    if patterns is None:
        patterns = load_dataset(DEFAULT_DATASET).file_patterns
    if not storage.exists(spark, input_dir):
        raise InputError(f"input folder {input_dir} does not exist")
    taken, skipped = {}, []
    for relative in storage.list_files_recursive(spark, input_dir):
        if not any(fnmatch.fnmatchcase(relative.rsplit("/", 1)[-1], p) for p in patterns):
            skipped.append(relative)
            continue
        match = DAY_IN_PATH.search(relative)
        if match is None:
            raise InputError(
                f"{input_dir}/{relative} has no day_<d> in its path, so its day is unknown: "
                "move it under a day_<d> folder or leave it out with --glob"
            )
        taken[relative] = int(match.group(1))
    wanted = taken if days is None else {f: d for f, d in taken.items() if d in days}
    globs = ",".join(patterns)
    if not wanted:
        raise InputError(
            f"no raw files matching {globs} under {input_dir}" + (f" for days {days}" if days else "")
        )
    missing = sorted(set(days or []) - set(wanted.values()))
    if missing:
        found = ",".join(map(str, sorted(set(taken.values()))))
        raise InputError(f"no raw files for days {missing} under {input_dir} (days found: {found})")
    print(f"ingest: taking {len(wanted)} files matching {globs} under {input_dir}", flush=True)
    if skipped:
        shown = ", ".join(skipped[:5]) + (f" and {len(skipped) - 5} more" if len(skipped) > 5 else "")
        print(f"ingest: skipping {len(skipped)} files not matching {globs}: {shown}", flush=True)
    return wanted


def read_lines(spark: SparkSession, input_dir: str, files: dict[str, int]) -> DataFrame:
    """Raw lines with their file (relative to input_dir), day and 1-based line number."""
    root = storage.qualified(spark, input_dir).rstrip("/") + "/"
    paths = {relative: root + relative for relative in sorted(files)}
    # The listed paths are read as they are, not as Hadoop globs (where `\` escapes and `[` opens a
    # class): Spark's own switch for that, which its file-stream source sets too.
    lines = spark.read.option("lineSep", "\n").option("__globPaths__", "false").text(list(paths.values()))
    # input_file_name gives each file's URI, percent-encoded (a space is %20) and as file:///x where
    # Hadoop writes file:/x: each file's relative name is looked up by the URI's raw path.
    relative_of = F.create_map(
        *[F.lit(x) for relative, path in paths.items() for x in (storage.raw_path(spark, path), relative)]
    )
    source = relative_of[F.parse_url(F.input_file_name(), F.lit("PATH"))]
    return lines.select(
        F.regexp_extract(source, DAY_IN_PATH.pattern, 1).cast("int").alias(DAY),
        source.alias(SOURCE_FILE),
        partition_line_number().alias(LINE_NUMBER),
        F.col("value").alias("raw_line"),
    )


def _problem(condition: Column, reason: str, field: str | None) -> Column:
    return F.when(condition, F.struct(F.lit(reason).alias("reason"), F.lit(field).alias("field")))


def _regex_literal(text: str) -> str:
    """A separator as a Java regex matching it literally (F.split takes a pattern); plain text as is."""
    return "".join("\\" + c if c in r"\^$.|?*+()[]{}" else c for c in text)


def _column_problems(column: RawColumn, value: Column) -> list[Column]:
    """A raw field's checks from its column's type and rule, in the order a line reports them."""
    name, present = column.name, value != ""
    if column.rule == "binary":
        return [_problem(~value.isin("0", "1"), BAD_LABEL, name)]
    if column.rule is not None:
        raise InputError(f"column {name}: unknown rule {column.rule!r} (known: binary)")
    if column.type in ("int", "long"):
        return [
            _problem(present & ~value.rlike("^-?[0-9]+$"), INT_NOT_INTEGER, name),
            _problem(present & value.try_cast(column.spark_type).isNull(), INT_OUT_OF_RANGE, name),
        ]
    if column.type == "float":
        number = value.try_cast("double")
        not_finite = number.isNull() | F.isnan(number) | (F.abs(number) == float("inf"))
        return [_problem(present & (~value.rlike(_DECIMAL) | not_finite), FLOAT_NOT_NUMBER, name)]

    # Strings, and each element of a list: its token width and alphabet, when the column fixes them.
    def any_token(predicate: Callable[[Column], Column]) -> Column:
        if column.type == "list<string>":
            return present & F.exists(_list_of(column, value), predicate)
        return present & predicate(value)

    problems = []
    if column.token_width is not None:
        width = column.token_width
        problems.append(_problem(any_token(lambda t: F.length(t) != width), CAT_BAD_LENGTH, name))
    if column.alphabet is not None:
        if column.alphabet not in _ALPHABETS:
            known = sorted(_ALPHABETS)
            raise InputError(f"column {name}: unknown alphabet {column.alphabet!r} (known: {known})")
        characters, reason = _ALPHABETS[column.alphabet]
        problems.append(_problem(any_token(lambda t: ~t.rlike(f"^{characters}+$")), reason, name))
    return problems


def _list_of(column: RawColumn, value: Column) -> Column:
    """A list field's elements (empty ones dropped: a trailing separator adds none)."""
    if not column.list_separator:
        raise InputError(f"column {column.name}: a list<string> column needs its list_separator")
    elements = F.split(value, _regex_literal(column.list_separator), -1)
    return F.filter(elements, lambda e: e != "")


def _typed(column: RawColumn, value: Column) -> Column:
    """A valid raw field as its bronze value: empty = null (the label is never empty)."""
    if column.rule == "binary":
        return value.try_cast(column.spark_type)
    present = F.nullif(value, F.lit(""))
    if column.type == "list<string>":
        return F.when(present.isNotNull(), _list_of(column, value))
    if column.type == "string":
        return present
    return present.try_cast(column.spark_type)


def parse(lines: DataFrame, definition: DatasetDefinition | None = None) -> DataFrame:
    """Lines -> the definition's typed columns (Criteo's by default) plus `problem` (reason, field),
    null for a well-formed line.

    Splitting happens once per line in its own projection: inlined into the checks, Spark would
    split the line again for each of the many places that read a field (~100 for Criteo)."""
    definition = definition or load_dataset(DEFAULT_DATASET)
    clashing = sorted(set(definition.names) & set(_PARSE_COLUMNS))
    if clashing:
        raise InputError(f"dataset {definition.name}: raw columns may not be named {clashing}")
    # A CRLF file's lines end in '\r': the line ends there, as the data intends.
    split = lines.select("*", F.regexp_replace("raw_line", "\r$", "").alias("_line")).select(
        "*", F.split("_line", _regex_literal(definition.separator), -1).alias("_fields")
    )
    # Fields by position (no user-chosen name inside the parse's own columns).
    fields = split.select(
        "*",
        *[F.try_element_at("_fields", F.lit(i + 1)).alias(f"_f{i}") for i in range(len(definition.columns))],
    )
    line = F.col("_line")
    problems = [
        _problem(line == "", EMPTY_LINE, None),
        _problem(line.contains("\ufffd"), BAD_BYTES, None),
        _problem(F.size("_fields") != len(definition.columns), FIELD_COUNT, None),
    ]
    typed = []
    for i, column in enumerate(definition.columns):
        problems += _column_problems(column, F.col(f"_f{i}"))
        typed.append(_typed(column, F.col(f"_f{i}")).alias(column.name))
    problem = F.coalesce(*problems).alias("problem")
    return fields.select(DAY, SOURCE_FILE, LINE_NUMBER, "raw_line", problem, *typed)


def _conform(frame: DataFrame, schema: StructType) -> DataFrame:
    """The frame's columns of `schema`, in its order and types: the explicit schema of a table."""
    return frame.select(*[F.col(f.name).cast(f.dataType) for f in schema.fields])


def _replace_files(frame: DataFrame, path: str, files: dict[str, int], partition_by: list[str]) -> None:
    """Atomically replaces the given files' rows in a Delta table (creating it on first write)."""
    days = ", ".join(str(d) for d in sorted(set(files.values())))
    names = ", ".join(sql_literal(name) for name in sorted(files))
    (
        frame.write.format("delta")
        .mode("overwrite")
        .option("replaceWhere", f"{DAY} IN ({days}) AND {SOURCE_FILE} IN ({names})")
        .partitionBy(*partition_by)
        .save(path)
    )


def _require_columns_of(spark: SparkSession, path: str, schema: StructType, role: str) -> None:
    """An existing table at `path` must be this stage's own (same columns): never overwrite another."""
    if storage.exists(spark, path):
        storage.delta_version(spark, path, role)
        columns = spark.read.format("delta").load(path).columns
        if sorted(columns) != sorted(schema.fieldNames()):
            raise InputError(
                f"{path} holds a Delta table with other columns than a {role}: choose another path"
            )


def ingest(
    spark: SparkSession,
    input_dir: str,
    bronze: str,
    rejects: str,
    days: list[int] | None = None,
    patterns: Sequence[str] | None = None,
    dataset: str | DatasetDefinition = DEFAULT_DATASET,
) -> dict:
    """Ingests the raw files of `days` (all by default) whose names match `patterns` (default: the
    dataset's file patterns), parsed as `dataset` (a bundled name, a .json path or a definition);
    returns the report section."""
    definition = dataset if isinstance(dataset, DatasetDefinition) else load_dataset(dataset)
    bronze_schema = definition.bronze_schema()
    _require_columns_of(spark, bronze, bronze_schema, "bronze table")
    _require_columns_of(spark, rejects, rejects_schema(), "rejects table")
    files = raw_files(spark, input_dir, days, definition.file_patterns if patterns is None else patterns)
    with (
        session_conf(spark, _ONE_FILE_PER_PARTITION),
        storage.new_table_removed_on_failure(spark, bronze),
        storage.new_table_removed_on_failure(spark, rejects),
    ):
        parsed = parse(read_lines(spark, input_dir, files), definition).persist()
        counts = dict(parsed.groupBy(F.col("problem").isNull().alias("ok")).count().collect())
        lines_read, accepted, rejected = sum(counts.values()), counts.get(True, 0), counts.get(False, 0)
        accepted_rows = parsed.where("problem IS NULL")
        _replace_files(_conform(accepted_rows, bronze_schema), bronze, files, [DAY])
        rejected_rows = parsed.where("problem IS NOT NULL").select(
            "*", F.col("problem.reason").alias("reason"), F.col("problem.field").alias("reason_field")
        )
        _replace_files(_conform(rejected_rows, rejects_schema()), rejects, files, [])
        parsed.unpersist()
    if accepted + rejected != lines_read:
        raise AssertionError(f"ingest lost lines: {lines_read} read != {accepted} + {rejected}")
    print(f"ingest: lines read {lines_read}, accepted {accepted}, rejected {rejected}")
    return {
        "dataset": definition.name,
        "lines_read": lines_read,
        "accepted": accepted,
        "rejected": rejected,
        "bronze_table": bronze,
        "bronze_version": DeltaTable.forPath(spark, bronze).history(1).first()["version"],
    }


def main(argv: list[str] | None = None) -> dict:
    parser = CommandParser(prog="sparkrec ingest", description=__doc__.splitlines()[0])
    parser.add_argument("--input", required=True, help="directory of raw files (day_<d> in each path)")
    parser.add_argument("--bronze", required=True, help="Delta bronze table path")
    parser.add_argument("--rejects", required=True, help="Delta rejects table path")
    parser.add_argument("--days", type=day_list, help="only these days, e.g. 0,1,2 (default: all)")
    parser.add_argument(
        "--dataset",
        default=DEFAULT_DATASET,
        help="the raw format: a bundled dataset definition by name (conf/datasets/<name>.json) or a "
        f".json path (default: {DEFAULT_DATASET})",
    )
    parser.add_argument(
        "--glob",
        type=lambda text: [p for p in text.split(",") if p],
        help="comma-separated file-name patterns of the raw files (default: the dataset's file_patterns)",
    )
    parser.add_argument("--profile", default="local", help="Spark profile from conf/spark/")
    args = parser.parse_args(argv)
    definition = load_dataset(args.dataset)  # a wrong name or path is refused before Spark starts
    spark = build_session(args.profile, "sparkrec-ingest")
    report = ingest(spark, args.input, args.bronze, args.rejects, args.days, args.glob, definition)
    print(json.dumps({"ingest": report}, indent=2))
    return report


if __name__ == "__main__":
    run_command(main, "sparkrec ingest")
