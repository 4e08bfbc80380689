"""sparkrec ingest: raw Criteo TSV (plain or gzip) -> a Delta bronze table partitioned by day.

Every line ends up in exactly one place: the bronze table (typed by rec_plugin.schema, no inference)
or the rejects table (the raw line, its file and line number, and a reason code). Re-ingesting a file
atomically replaces that file's rows in both tables (one Delta replaceWhere commit each), so reruns
never duplicate. A file's day comes from `day_<d>` in its path, as in Criteo's own layout.

    spark-submit spark_jobs/ingest.py --input data/criteo/raw --bronze lake/bronze --rejects lake/rejects
"""

from __future__ import annotations

import fnmatch
import json
import re

from delta.tables import DeltaTable
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StructType

from rec_plugin import storage
from rec_plugin.errors import CommandParser, InputError, run_command
from rec_plugin.schema import (
    CATEGORICAL,
    CATEGORY_HEX_LENGTH,
    DAY,
    DENSE,
    FIELD_SEPARATOR,
    INT_NOT_INTEGER,
    INT_OUT_OF_RANGE,
    LABEL,
    LINE_NUMBER,
    RAW_COLUMNS,
    SOURCE_FILE,
    bronze_schema,
    partition_line_number,
    rejects_schema,
)
from rec_plugin.templates import sql_literal
from spark_jobs.layout import day_list
from spark_jobs.session import build_session, session_conf

DAY_IN_PATH = re.compile(r"day_(\d+)")
# Which files under --input are raw logs (file names; --glob overrides).
RAW_PATTERNS = ["*.tsv", "*.tsv.gz"]
# Reason codes of the rejects table, in the order they are checked.
EMPTY_LINE = "EMPTY_LINE"
BAD_BYTES = "BAD_BYTES"
FIELD_COUNT = "FIELD_COUNT"
BAD_LABEL = "BAD_LABEL"
CAT_BAD_LENGTH = "CAT_BAD_LENGTH"
CAT_NOT_HEX = "CAT_NOT_HEX"
# Each file is read whole by one task, so a row's index in its partition is its line number.
_ONE_FILE_PER_PARTITION = {
    "spark.sql.files.maxPartitionBytes": str(1 << 40),
    "spark.sql.files.openCostInBytes": str(1 << 40),
}


def raw_files(
    spark: SparkSession, input_dir: str, days: list[int] | None = None, patterns: list[str] = RAW_PATTERNS
) -> dict[str, int]:
    """Raw files below input_dir whose names match `patterns` (relative path -> day), optionally only
    the given days; says which files it takes and which it leaves, and refuses before any work when
    there is nothing to take, a day has no file, or a taken file has no day in its path."""
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


def parse(lines: DataFrame) -> DataFrame:
    """Lines -> typed Criteo columns plus `problem` (reason, field), null for a well-formed line.

    Splitting happens once per line in its own projection: inlined into the checks, Spark would
    split the line again for each of the ~100 places that read a field."""
    # A CRLF file's lines end in '\r': the line ends there, as the data intends.
    split = lines.select("*", F.regexp_replace("raw_line", "\r$", "").alias("_line")).select(
        "*", F.split("_line", FIELD_SEPARATOR, -1).alias("_fields")
    )
    fields = split.select(
        "*",
        *[F.try_element_at("_fields", F.lit(i + 1)).alias(f"_{name}") for i, name in enumerate(RAW_COLUMNS)],
    )
    line, value = F.col("_line"), {name: F.col(f"_{name}") for name in RAW_COLUMNS}
    problems = [
        _problem(line == "", EMPTY_LINE, None),
        _problem(line.contains("\ufffd"), BAD_BYTES, None),
        _problem(F.size("_fields") != len(RAW_COLUMNS), FIELD_COUNT, None),
        _problem(~value[LABEL].isin("0", "1"), BAD_LABEL, LABEL),
    ]
    for name in DENSE:
        present = value[name] != ""
        problems.append(_problem(present & ~value[name].rlike("^-?[0-9]+$"), INT_NOT_INTEGER, name))
        problems.append(_problem(present & value[name].try_cast("int").isNull(), INT_OUT_OF_RANGE, name))
    for name in CATEGORICAL:
        present = value[name] != ""
        wrong_length = present & (F.length(value[name]) != CATEGORY_HEX_LENGTH)
        problems.append(_problem(wrong_length, CAT_BAD_LENGTH, name))
        problems.append(_problem(present & ~value[name].rlike("^[0-9a-f]+$"), CAT_NOT_HEX, name))
    typed = [value[LABEL].try_cast("int").alias(LABEL)]
    typed += [F.nullif(value[name], F.lit("")).try_cast("int").alias(name) for name in DENSE]
    typed += [F.nullif(value[name], F.lit("")).alias(name) for name in CATEGORICAL]
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
    patterns: list[str] = RAW_PATTERNS,
) -> dict:
    """Ingests the raw files of `days` (all by default) whose names match `patterns`; returns the
    report section."""
    _require_columns_of(spark, bronze, bronze_schema(), "bronze table")
    _require_columns_of(spark, rejects, rejects_schema(), "rejects table")
    files = raw_files(spark, input_dir, days, patterns)
    with (
        session_conf(spark, _ONE_FILE_PER_PARTITION),
        storage.new_table_removed_on_failure(spark, bronze),
        storage.new_table_removed_on_failure(spark, rejects),
    ):
        parsed = parse(read_lines(spark, input_dir, files)).persist()
        counts = dict(parsed.groupBy(F.col("problem").isNull().alias("ok")).count().collect())
        lines_read, accepted, rejected = sum(counts.values()), counts.get(True, 0), counts.get(False, 0)
        accepted_rows = parsed.where("problem IS NULL")
        _replace_files(_conform(accepted_rows, bronze_schema()), bronze, files, [DAY])
        rejected_rows = parsed.where("problem IS NOT NULL").select(
            "*", F.col("problem.reason").alias("reason"), F.col("problem.field").alias("reason_field")
        )
        _replace_files(_conform(rejected_rows, rejects_schema()), rejects, files, [])
        parsed.unpersist()
    if accepted + rejected != lines_read:
        raise AssertionError(f"ingest lost lines: {lines_read} read != {accepted} + {rejected}")
    print(f"ingest: lines read {lines_read}, accepted {accepted}, rejected {rejected}")
    return {
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
        "--glob",
        type=lambda text: [p for p in text.split(",") if p],
        default=RAW_PATTERNS,
        help=f"comma-separated file-name patterns of the raw files (default: {','.join(RAW_PATTERNS)})",
    )
    parser.add_argument("--profile", default="local", help="Spark profile from conf/spark/")
    args = parser.parse_args(argv)
    spark = build_session(args.profile, "sparkrec-ingest")
    report = ingest(spark, args.input, args.bronze, args.rejects, args.days, args.glob)
    print(json.dumps({"ingest": report}, indent=2))
    return report


if __name__ == "__main__":
    run_command(main, "sparkrec ingest")
