"""sparkrec ingest: raw click logs -> a Delta bronze table partitioned by day.

The raw source is a dataset definition's (rec_plugin/dataset.py; Criteo's by default, or any
conf/datasets/<name>.json or a user's .json): its format (TSV/CSV lines, plain or gzip; JSON lines;
parquet files; or an existing Delta table, spark_jobs/raw_formats.py reads each), its columns, their
types and rules. Every row ends up in exactly one place: the bronze table (typed by the definition, no
inference) or the rejects table (the raw row, its file and line number, and a reason code).
Re-ingesting a file atomically replaces that file's rows in both tables (one Delta replaceWhere commit
each), so reruns never duplicate (--replace-days replaces the days its files' paths name whole, for a
day exported again under other names); a Delta source's rows (all, or those of some days and the
dayless ones) replace its rows of every earlier version. A file's day comes from
`day_<d>` in its path, as in Criteo's layout, unless the definition names a day_column.

    spark-submit spark_jobs/ingest.py --input data/criteo/raw --bronze lake/bronze --rejects lake/rejects
    spark-submit spark_jobs/ingest.py --dataset ecommerce --input data/shop/raw --bronze ... --rejects ...
"""

from __future__ import annotations

import fnmatch
import json
import os
import sys
from collections import Counter, defaultdict
from collections.abc import Callable, Collection, Sequence
from dataclasses import replace
from functools import reduce

from delta.tables import DeltaTable
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StructType

from rec_plugin import storage
from rec_plugin.dataset import (
    BINARY,
    DEFAULT_DATASET,
    DELTA,
    TIMESTAMP,
    DatasetDefinition,
    RawColumn,
    bundled_datasets,
    load_dataset,
)
from rec_plugin.errors import CommandParser, InputError, run_command
from rec_plugin.schema import (
    CAT_BAD_LENGTH,
    CAT_NOT_HEX,
    DAY,
    FLOAT_NOT_NUMBER,
    INT_NOT_INTEGER,
    INT_OUT_OF_RANGE,
    LINE_NUMBER,
    RAW_LINE,
    REASON,
    REASON_FIELD,
    ROW_KEY_STATISTICS,
    SOURCE_FILE,
    TOKEN_ALPHABETS,
    rejects_schema,
)
from spark_jobs.layout import day_list
from spark_jobs.raw_formats import (
    BAD_BYTES,
    BAD_DAY,
    DAY_IN_PATH,
    DAYS_IN_PATH,
    EMPTY_LINE,
    FIELD_COUNT,
    JSON_NOT_OBJECT,
    LAST_DAY,
    LIST,
    READ_CONF,
    ROW_PROBLEM,
    VALUE_COLUMN,
    WRONG_TYPE_COLUMN,
    Source,
    epoch_millis_of_text,
    problem,
    read_fields,
)
from spark_jobs.session import WIDE_PROJECTIONS, build_session, session_conf

# The reason codes of the rejects table, all importable from here. A row gets the first that applies:
# its row-level ones (raw_formats: EMPTY_LINE, BAD_BYTES, FIELD_COUNT, JSON_NOT_OBJECT, BAD_DAY), then
# each column's own, column by column in the definition's order.
__all__ = [
    "BAD_BYTES",
    "BAD_DAY",
    "BAD_LABEL",
    "BAD_TIMESTAMP",
    "CAT_BAD_LENGTH",
    "CAT_NOT_HEX",
    "EMPTY_LINE",
    "FIELD_COUNT",
    "FLOAT_NOT_NUMBER",
    "INT_NOT_INTEGER",
    "INT_OUT_OF_RANGE",
    "JSON_NOT_OBJECT",
    "WRONG_TYPE",
    "ingest",
    "main",
]
# Above this share of lines rejected, ingest warns that the definition may not fit the files.
REJECTED_SHARE_WARNED = 0.5
# Lines whose reasons a refusal of a wrong --dataset counts.
SAMPLED_LINES = 100
# A column of rule BINARY that is not 0 or 1 (an empty one too: it is the label's rule).
BAD_LABEL = "BAD_LABEL"
# int/long columns: INT_NOT_INTEGER, then INT_OUT_OF_RANGE; float columns FLOAT_NOT_NUMBER
# (rec_plugin.schema, shared with serving).
# A timestamp column's value that is no ISO 8601 date or time ("2024-01-03", "2024-01-03T10:22:00Z").
BAD_TIMESTAMP = "BAD_TIMESTAMP"
# string columns and list elements: CAT_BAD_LENGTH, then their alphabet's CAT_NOT_HEX (rec_plugin.schema,
# shared with serving).
# A typed source's value that a string or list column does not take (a JSON number for a string); an
# int, float or label column reports its own code instead (INT_NOT_INTEGER for a JSON string "5").
WRONG_TYPE = "WRONG_TYPE"
_DECIMAL = r"^[+-]?([0-9]+[.]?[0-9]*|[.][0-9]+)([eE][+-]?[0-9]+)?$"
# The columns a row is validated into besides its own fields (a raw column may not take these names).
_PARSE_COLUMNS = (DAY, SOURCE_FILE, LINE_NUMBER, RAW_LINE, "problem", REASON, REASON_FIELD)


def find_source(
    spark: SparkSession,
    definition: DatasetDefinition,
    input_dir: str | None,
    days: list[int] | None,
    patterns: Sequence[str] | None,
) -> Source:
    """The source of one ingest, refused before any work where the arguments do not fit the format."""
    where = f"dataset {definition.name}"
    if days == []:
        raise InputError("--days names no day: give day numbers such as 3 or 3,4, or leave it out")
    if definition.format == DELTA:
        if input_dir is not None or patterns is not None:
            raise InputError(f"{where} reads the Delta table {definition.table}: give no --input or --glob")
        version = storage.delta_version(spark, definition.table, "source table", definition.version)
        return Source(table=definition.table, version=version, days=None if days is None else tuple(days))
    if input_dir is None:
        raise InputError(
            f"{where} reads {definition.format} files: give the folder that holds them (--input)"
        )
    if days is not None and definition.day_column is not None:
        raise InputError(f"{where} takes each row's day from {definition.day_column}: give no --days")
    patterns = definition.file_patterns if patterns is None else patterns
    return file_source(spark, input_dir, days, patterns, definition.day_column is None)


def file_source(
    spark: SparkSession,
    input_dir: str,
    days: list[int] | None,
    patterns: Sequence[str],
    day_from_path: bool,
) -> Source:
    """The raw files below input_dir whose names match `patterns` (relative path -> day, None unless
    `day_from_path`), optionally only the given days; says which files it takes and which it leaves,
    and refuses before any work when there is nothing to take, a day has no file, or a taken file has
    no day in its path."""
    if not storage.exists(spark, input_dir):
        raise InputError(f"input folder {input_dir} does not exist")
    taken: dict[str, int | None] = {}
    skipped = []
    listed = storage.list_files_recursive(spark, input_dir)
    for relative in listed:
        if not any(fnmatch.fnmatchcase(relative.rsplit("/", 1)[-1], p) for p in patterns):
            skipped.append(relative)
            continue
        match = DAY_IN_PATH.search(relative)
        if match is None and day_from_path:
            raise InputError(
                f"{input_dir}/{relative} has no day_<d> in its path, so its day is unknown: "
                "move it under a day_<d> folder, leave it out with --glob, or (jsonl, parquet) name the "
                "column holding its rows' dates as the dataset's day_column"
            )
        day = int(match.group(1)) if day_from_path and match else None
        named = {int(d) for d in DAYS_IN_PATH.findall(relative)}
        if day_from_path and len(named) > 1:
            raise InputError(
                f"{input_dir}/{relative} names days {sorted(named)} in its path: which is its day? "
                "Leave one day_<d> in it"
            )
        if day is not None and day > LAST_DAY:
            raise InputError(
                f"{input_dir}/{relative} names day {day} in its path, past the last day {LAST_DAY}: "
                "number days from 0"
            )
        taken[relative] = day
    wanted = taken if days is None else {f: d for f, d in taken.items() if d in days}
    globs = ",".join(patterns)
    shown = ", ".join(skipped[:5]) + (f" and {len(skipped) - 5} more" if len(skipped) > 5 else "")
    if not wanted:
        others = f" (it holds {shown}: give --glob to take them)" if skipped and not taken else ""
        raise InputError(
            f"no raw files matching {globs} under {input_dir}"
            + (f" for days {days}" if days else "")
            + others
        )
    missing = sorted(set(days or []) - set(wanted.values()))
    if missing:
        found = ",".join(map(str, sorted({d for d in taken.values() if d is not None})))
        raise InputError(f"no raw files for days {missing} under {input_dir} (days found: {found})")
    print(f"ingest: taking {len(wanted)} files matching {globs} under {input_dir}", flush=True)
    if skipped:
        print(f"ingest: skipping {len(skipped)} files not matching {globs}: {shown}", flush=True)
    return Source(input_dir, wanted, listed=frozenset(listed))


def _column_problems(column: RawColumn, value: Column, wrong_type: Column) -> list[Column]:
    """A field's checks from its column's type and rule, in the order a row reports them; `value` is
    its text (a list's elements), `wrong_type` whether the source gave it a type the column does not take."""
    name = column.name
    if column.type == LIST:
        present = value.isNotNull()
    else:
        value = F.coalesce(value, F.lit(""))
        present = value != ""
    if column.rule == BINARY:
        zero_or_one = value.isin("0", "1")
        if column.type == "float":  # a parquet double's or a JSON number's 1.0 too
            zero_or_one = value.rlike(_DECIMAL) & value.try_cast("double").isin(0.0, 1.0)
        return [problem(wrong_type | ~zero_or_one, BAD_LABEL, name)]
    if column.type in ("int", "long"):
        return [
            problem(wrong_type | (present & ~value.rlike("^-?[0-9]+$")), INT_NOT_INTEGER, name),
            problem(present & value.try_cast(column.spark_type).isNull(), INT_OUT_OF_RANGE, name),
        ]
    if column.type == TIMESTAMP:
        return [problem(wrong_type | (present & epoch_millis_of_text(value).isNull()), BAD_TIMESTAMP, name)]
    if column.type == "float":
        number = value.try_cast("double")
        not_finite = number.isNull() | F.isnan(number) | (F.abs(number) == float("inf"))
        return [
            problem(wrong_type | (present & (~value.rlike(_DECIMAL) | not_finite)), FLOAT_NOT_NUMBER, name)
        ]

    # Strings, and each element of a list: its token width and alphabet, when the column fixes them.
    def any_token(predicate: Callable[[Column], Column]) -> Column:
        if column.type == LIST:
            return present & F.exists(value, predicate)
        return present & predicate(value)

    problems = [problem(wrong_type, WRONG_TYPE, name)]
    if column.token_width is not None:
        width = column.token_width
        problems.append(problem(any_token(lambda t: F.length(t) != width), CAT_BAD_LENGTH, name))
    if column.alphabet is not None:  # a known one (checked as the definition loads)
        characters, reason = TOKEN_ALPHABETS[column.alphabet]
        # \z, not $: a Java regex's $ matches before a final line end too ("abc\n" would pass).
        problems.append(problem(any_token(lambda t: ~t.rlike(f"^{characters}+\\z")), reason, name))
    return problems


def _typed(column: RawColumn, value: Column) -> Column:
    """A valid field as its bronze value: empty = null (the label is never empty)."""
    if column.type == LIST:
        return value
    if column.rule == BINARY:
        return value.try_cast(column.spark_type)
    present = F.nullif(value, F.lit(""))
    if column.type == TIMESTAMP:
        return epoch_millis_of_text(present)
    return present if column.type == "string" else present.try_cast(column.spark_type)


def _passes(definition: DatasetDefinition, problems: list[list[Column]]) -> Column:
    """Whether a row passes every check (`problems`: each column's), the int and fixed-width token
    columns tested together: one alphabet check over their joined text (_all_in), a cast per int and a
    byte length per token, instead of a regex, a cast or a character count per field. Only a row that
    fails it is checked field by field, for the reason it reports (a joined text in the alphabet is
    ASCII, so its tokens' byte lengths are their lengths; chars in [-0-9] that an int cast takes form an
    integer)."""
    conditions, grouped = [F.col(ROW_PROBLEM).isNull()], defaultdict(list)
    for i, (column, checks) in enumerate(zip(definition.columns, problems)):
        value = F.coalesce(F.col(VALUE_COLUMN.format(i)), F.lit(""))
        wrong_type = F.col(WRONG_TYPE_COLUMN.format(i))
        if column.rule is None and column.type in ("int", "long"):
            grouped["[-0-9]"].append(value)
            conditions += [~wrong_type, (value == "") | value.try_cast(column.spark_type).isNotNull()]
        elif (
            column.rule is None
            and column.type == "string"
            and column.token_width
            and column.alphabet in TOKEN_ALPHABETS
        ):
            grouped[TOKEN_ALPHABETS[column.alphabet][0]].append(value)
            conditions += [~wrong_type, F.octet_length(value).isin(0, column.token_width)]
        else:
            conditions.append(F.coalesce(*checks).isNull())
    conditions += [_all_in(chars, F.concat_ws("", *values)) for chars, values in grouped.items()]
    return F.coalesce(reduce(Column.__and__, conditions), F.lit(False))


def _all_in(chars: str, text: Column) -> Column:
    """Whether every character of `text` is in the regex class `chars`. Lowercase hex without a regex:
    unhex takes hex digits only (null otherwise) and lower() changes none of them, only an A-F (ingest's
    checking pass over 8M Criteo lines 1.16x faster than the regex; DEVELOPERS.md)."""
    if chars == TOKEN_ALPHABETS["hex"][0]:
        return F.unhex(text).isNotNull() & (F.lower(text) == text)
    return text.rlike(f"^{chars}*\\z")


def validate(fields: DataFrame, definition: DatasetDefinition) -> DataFrame:
    """A format's fields (spark_jobs/raw_formats.py) -> the definition's typed columns plus `problem`
    (reason, field), null for a valid row; `raw_line` is kept for refused rows only (the rejects table's)."""
    clashing = sorted(set(definition.names) & set(_PARSE_COLUMNS))
    if clashing:
        raise InputError(f"dataset {definition.name}: raw columns may not be named {clashing}")
    problems, typed = [], []
    for i, column in enumerate(definition.columns):
        value = F.col(VALUE_COLUMN.format(i))
        problems.append(_column_problems(column, value, F.col(WRONG_TYPE_COLUMN.format(i))))
        typed.append(_typed(column, value).alias(column.name))
    first_problem = F.coalesce(F.col(ROW_PROBLEM), *[p for checks in problems for p in checks])
    checked = fields.select(
        DAY,
        SOURCE_FILE,
        LINE_NUMBER,
        RAW_LINE,
        F.when(~_passes(definition, problems), first_problem).alias("problem"),
        *typed,
    )
    return checked.withColumn(RAW_LINE, F.when(F.col("problem").isNotNull(), F.col(RAW_LINE)))


def _another_dataset(parsed: DataFrame, definition: DatasetDefinition, lines_read: int) -> InputError:
    """The refusal of a first ingest of which not one line is valid: a wrong --dataset (or files of
    another format), which would make an empty bronze table and put every line in rejects. It names
    the commonest reason among SAMPLED_LINES lines. (Into an existing table, such a day is quarantined.)"""
    sample = parsed.limit(SAMPLED_LINES).select("problem.reason", "problem.field").collect()
    reason, field = Counter((row["reason"], row["field"]) for row in sample).most_common(1)[0][0]
    named = f"{reason} in {field}" if field else reason
    return InputError(
        f"not one of the {lines_read} lines read is a valid {definition.name} line (mostly {named}): "
        "is --dataset right? Nothing was written"
    )


def _conform(frame: DataFrame, schema: StructType) -> DataFrame:
    """The frame's columns of `schema`, in its order and types: the explicit schema of a table."""
    return frame.select(*[F.col(f.name).cast(f.dataType) for f in schema.fields])


def files_not_ingested(spark: SparkSession, input_dir: str, dataset: str, tables: Sequence[str]) -> list[str]:
    """The dataset's raw files under input_dir (relative paths) whose lines none of `tables` (bronze,
    rejects) holds: what a daily ingest takes where rows name their day, so no path says which files
    a day brings. The tables' file statistics answer for most of their data files, which are not read."""
    source = find_source(spark, load_dataset(dataset), input_dir, None, None)
    held: set[str] = set()
    for table in tables:
        if storage.has_commit(spark, table):  # a killed first write's files hold no rows
            held |= storage.distinct_strings(spark, table, SOURCE_FILE)
    return sorted(name for name in source.files if name not in held)


def _only(source: Source, files: Collection[str]) -> Source:
    """`source` restricted to `files`; refused in one line when it lacks one, or none is given."""
    absent = sorted(set(files) - set(source.files))
    if absent or not files:
        raise InputError(f"no raw files {absent} under {source.root}" if absent else "no raw file to ingest")
    print(f"ingest: {len(files)} of them asked for", flush=True)
    return replace(source, files={name: source.files[name] for name in files})


def _lines_read(parsed: DataFrame, source: Source, definition: DatasetDefinition) -> int:
    """The rows the source holds; a Delta table's days asked for are each checked to hold some first
    (a file source's were checked by their files): a day not there yet is refused before any write."""
    if source.table is None or source.days is None:
        return parsed.count()
    per_day = {row[DAY]: row["count"] for row in parsed.groupBy(DAY).count().collect()}
    if missing := sorted(set(source.days) - set(per_day)):
        raise InputError(
            f"the Delta table {source.table} holds no rows of days {missing} at its version "
            f"{source.version} ({definition.day_column} counted from {definition.day_origin})"
        )
    return sum(per_day.values())


def _replace_rows(frame: DataFrame, path: str, source: Source, partition_by: list[str], note: str) -> None:
    """Atomically replaces the source's rows in a Delta table (creating it on first write, with
    statistics on its row keys only); the commit records `note` (the dataset and source)."""
    (
        frame.write.format("delta")
        .mode("overwrite")
        .option("replaceWhere", source.replace_where)
        .option("userMetadata", note)
        .options(**ROW_KEY_STATISTICS)
        .partitionBy(*partition_by)
        .save(path)
    )


def _source_rows(spark: SparkSession, path: str, source: Source) -> int:
    """The rows of `source` a table holds: after a replace, exactly what this ingest wrote to it."""
    return spark.read.format("delta").load(path).where(source.replace_where).count()


def _nothing_read(source: Source) -> str:
    """What an ingest that read no line says: of files, that they are empty or a header only."""
    if source.table is not None:
        return f"table {source.table} holds no row to ingest"
    files = "1 file read holds" if len(source.files) == 1 else f"{len(source.files)} files read hold"
    return f"the {files} no line (empty, or a header only)"


def _refuse_nothing_read(
    spark: SparkSession, bronze: str, rejects: str, source: Source, bronze_is_new: bool
) -> None:
    """A source of no line makes no new table, nor replaces rows ingested before (a day's files
    exported empty by mistake, with --replace-days, would delete the day): refused in one line. Files
    that were empty before too are only warned of, after the ingest."""
    if bronze_is_new:
        raise InputError(f"{_nothing_read(source)}: nothing was written")
    held = sum(_source_rows(spark, t, source) for t in (bronze, rejects) if storage.has_commit(spark, t))
    if held:
        raise InputError(
            f"{_nothing_read(source)}, and would replace the {held} rows ingested from it before: nothing "
            "was written (delete those rows with Delta if that is meant)"
        )


def _warn_of_rejects(
    spark: SparkSession, rejects: str, source: Source, rejected: int, lines_read: int
) -> None:
    """A warning that most lines were rejected, naming their commonest reason: a definition that does
    not fit the files (a float column typed int) is quarantined, not refused, once bronze exists."""
    rows = spark.read.format("delta").load(rejects).where(source.replace_where)
    top = rows.groupBy("reason").count().orderBy(F.desc("count"), "reason").first()
    lines = f"{top['count']} line" + ("s" if top["count"] > 1 else "")
    print(
        f"ingest: warning: {rejected / lines_read:.0%} of the {lines_read} lines read were rejected, "
        f"mostly {top['reason']} ({lines}): is the dataset definition right?",
        file=sys.stderr,
        flush=True,
    )


def _warn_of_files_gone(spark: SparkSession, bronze: str, source: Source) -> None:
    """A warning that bronze holds rows of the days ingested from files no longer under the input: a
    day exported again under other names, or a file withdrawn, keeps the old rows unless the days are
    replaced whole (--replace-days). Bronze's file names come from its file statistics (a file's day
    from its path, as ingest read it), so its data is mostly not read."""
    if not source.file_days:
        return
    held = storage.distinct_strings(spark, bronze, SOURCE_FILE) - source.listed
    gone = sorted(
        name for name in held if (day := DAY_IN_PATH.search(name)) and int(day[1]) in source.file_days
    )
    if gone:
        shown = ", ".join(gone[:3]) + (f" and {len(gone) - 3} more" if len(gone) > 3 else "")
        print(
            f"ingest: warning: bronze holds rows of days {source.file_days} from {len(gone)} "
            f"file{'s' if len(gone) > 1 else ''} no longer under {source.root} ({shown}): they stay; "
            "give --replace-days to replace those days whole by the files there now",
            file=sys.stderr,
            flush=True,
        )


def _bronze_hint(spark: SparkSession, bronze: str, dataset: str) -> str:
    """What to give instead of `dataset` for a bronze table of other columns, from its ingest's note."""
    recorded = ingested_dataset(spark, bronze)
    if recorded is None:
        return "if it is one, give the --dataset it was ingested with, or "
    try:
        recorded_name = load_dataset(recorded).name
    except InputError:  # a definition an earlier sparkrec accepted
        refused = f"it was ingested with {recorded}, which this version refuses"
        return f"{refused} (give it as --dataset to see why): fix it or "
    if recorded_name != dataset:
        return f"it was ingested as {recorded}: give --dataset {recorded} or "
    return f"it was ingested by another definition of {dataset!r} ({recorded}): give that one or "


def _require_columns_of(
    spark: SparkSession, path: str, schema: StructType, role: str, dataset: str | None = None
) -> None:
    """An existing table at `path` must be this stage's own (same columns, same types): never overwrite
    another, nor fail mid-write on a column whose type changed.
    For a bronze table of another `dataset`, the refusal names the dataset its ingest recorded."""
    if storage.holds_table(spark, path, role):
        held = spark.read.format("delta").load(path).schema
        same_columns = sorted(held.fieldNames()) == sorted(schema.fieldNames())
        retyped = [  # by type names: a nested type's nullability is no difference
            f"{f.name} {held[f.name].dataType.simpleString()}, now {f.dataType.simpleString()}"
            for f in (schema.fields if same_columns else [])
            if held[f.name].dataType.simpleString() != f.dataType.simpleString()
        ]
        if same_columns and not retyped:
            return
        of, fix = "", ""
        if dataset is not None:
            of, fix = f" of dataset {dataset!r}", _bronze_hint(spark, path, dataset)
        if retyped:
            what = f"a {role}{of} whose columns have other types ({'; '.join(retyped)})"
        else:
            what = f"a Delta table with other columns than a {role}{of}"
        raise InputError(f"{path} holds {what}: {fix}choose another path")


# The key of ingest's commit note that holds the path of a user's dataset definition (None when bundled).
DEFINITION_NOTE = "definition"


def _definition_file(dataset: str | DatasetDefinition) -> str | None:
    """The absolute path of a dataset given as a .json path, which later stages reload it from."""
    if isinstance(dataset, str) and dataset not in bundled_datasets():
        return os.path.abspath(dataset)
    return None


def ingested_dataset(spark: SparkSession, bronze: str, version: int | None = None) -> str | None:
    """What the latest ingest up to `version` (the latest by default) recorded in its commit: the
    bundled dataset's name or the user's definition file; None when no ingest recorded one. Refused in
    one line when that definition file is gone."""
    history = DeltaTable.forPath(spark, bronze).history().where(F.col("userMetadata").isNotNull())
    if version is not None:
        history = history.where(F.col("version") <= version)
    for (text,) in history.orderBy(F.desc("version")).select("userMetadata").collect():
        try:
            note = json.loads(text)
            name = note.get("dataset")
        except (AttributeError, ValueError):  # a note another writer left
            continue
        if not isinstance(name, str):
            continue
        path = note.get(DEFINITION_NOTE)
        if path is None and name in bundled_datasets():
            return name
        if path is not None and os.path.isfile(path):
            return path
        raise InputError(
            f"bronze table {bronze} was ingested as dataset {name!r}"
            + (f" from {path}, which no longer exists" if path else ", which is not bundled")
            + ": give its definition with --dataset PATH.json"
        )
    return None


def dataset_to_ingest(spark: SparkSession, bronze: str, given: str | None) -> str:
    """`given`, else the dataset that bronze's latest ingest recorded (a rerun need not repeat it),
    else DEFAULT_DATASET."""
    if given is None and storage.has_commit(spark, bronze):
        given = ingested_dataset(spark, bronze)
    return given or DEFAULT_DATASET


def ingest(
    spark: SparkSession,
    input_dir: str | None,
    bronze: str,
    rejects: str,
    days: list[int] | None = None,
    patterns: Sequence[str] | None = None,
    dataset: str | DatasetDefinition = DEFAULT_DATASET,
    files: Collection[str] | None = None,
    replace_days: bool = False,
) -> dict:
    """Ingests `dataset` (a bundled name, a .json path or a definition): its raw files under input_dir
    of `days` (all by default) whose names match `patterns` (default: its file patterns), or the Delta
    table it names (input_dir None); returns the report section. `files`: only these of the raw files
    (paths relative to input_dir), e.g. the ones `files_not_ingested` found. `replace_days`: the days
    the files' paths name are replaced whole, not file by file (a day exported again under other
    names)."""
    definition = dataset if isinstance(dataset, DatasetDefinition) else load_dataset(dataset)
    bronze_schema = definition.bronze_schema()
    _require_columns_of(spark, bronze, bronze_schema, "bronze table", definition.name)
    _require_columns_of(spark, rejects, rejects_schema(), "rejects table")
    source = find_source(spark, definition, input_dir, days, patterns)
    if files is not None:
        source = _only(source, files)
    if replace_days:
        if not source.file_days:
            raise InputError(
                f"dataset {definition.name}'s rows name their day: --replace-days replaces the days that "
                "files' paths name"
            )
        source = replace(source, whole_days=True)
    elif storage.has_commit(spark, bronze):
        _warn_of_files_gone(spark, bronze, source)
    note = json.dumps(
        {
            "dataset": definition.name,
            DEFINITION_NOTE: _definition_file(dataset),
            "format": definition.format,
            "source": source.describe(),
        }
    )
    bronze_is_new = not storage.has_commit(spark, bronze)
    with (
        session_conf(spark, {**READ_CONF, **WIDE_PROJECTIONS}),
        storage.table_restored_on_failure(spark, bronze),
        storage.table_restored_on_failure(spark, rejects),
    ):
        # Nothing is cached: bronze's pass validates every row, and the rejects' pass runs only when
        # bronze took fewer rows than were read (its empty write still replaces the files' old rejects).
        parsed = validate(read_fields(spark, definition, source), definition)
        lines_read = _lines_read(parsed, source, definition)
        if lines_read == 0:  # before any write: an empty table would pass for data
            _refuse_nothing_read(spark, bronze, rejects, source, bronze_is_new)
        _replace_rows(_conform(parsed.where("problem IS NULL"), bronze_schema), bronze, source, [DAY], note)
        accepted = _source_rows(spark, bronze, source)
        if accepted == 0 and lines_read > 0 and bronze_is_new:  # raised inside: the new table is removed
            raise _another_dataset(parsed, definition, lines_read)
        if accepted == lines_read:
            rejected_rows = spark.createDataFrame([], rejects_schema())
        else:
            rejected_rows = parsed.where("problem IS NOT NULL").select(
                "*", F.col("problem.reason").alias(REASON), F.col("problem.field").alias(REASON_FIELD)
            )
        _replace_rows(_conform(rejected_rows, rejects_schema()), rejects, source, [], note)
        rejected = _source_rows(spark, rejects, source)
        if accepted + rejected != lines_read:  # inside: both tables are left as they were
            raise AssertionError(f"ingest lost lines: {lines_read} read != {accepted} + {rejected}")
    print(f"ingest: lines read {lines_read}, accepted {accepted}, rejected {rejected}")
    if lines_read == 0:
        print(f"ingest: warning: {_nothing_read(source)}", file=sys.stderr, flush=True)
    if rejected > REJECTED_SHARE_WARNED * lines_read:
        _warn_of_rejects(spark, rejects, source, rejected, lines_read)
    return {
        "dataset": definition.name,
        "source": source.describe(),
        "lines_read": lines_read,
        "accepted": accepted,
        "rejected": rejected,
        "bronze_table": bronze,
        "bronze_version": storage.delta_version(spark, bronze, "bronze table"),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = CommandParser(prog="sparkrec ingest", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--input",
        help="directory of raw files (day_<d> in each path unless the dataset names a day_column); "
        "none for a dataset whose format is delta (it names its table)",
    )
    parser.add_argument("--bronze", required=True, help="Delta bronze table path")
    parser.add_argument("--rejects", required=True, help="Delta rejects table path")
    parser.add_argument(
        "--days",
        type=day_list,
        help="only these days, e.g. 0,1,2 (default: all); of a Delta source, only their rows are read",
    )
    parser.add_argument(
        "--dataset",
        help="the raw format: a bundled dataset definition by name (conf/datasets/<name>.json) or a "
        f".json path (default: the one bronze's latest ingest recorded, else {DEFAULT_DATASET})",
    )
    parser.add_argument(
        "--glob",
        type=lambda text: [p for p in text.split(",") if p],
        help="comma-separated file-name patterns of the raw files (default: the dataset's file_patterns)",
    )
    parser.add_argument(
        "--replace-days",
        action="store_true",
        help="replace each day the files' paths name whole, not file by file: for a day exported again "
        "under other file names, or with a file withdrawn (default: a day keeps the rows of files no "
        "longer under --input, and ingest warns of them)",
    )
    parser.add_argument("--profile", default="local", help="Spark profile from conf/spark/")
    args = parser.parse_args(argv)
    if args.dataset is not None:
        load_dataset(args.dataset)  # a wrong name or path is refused before Spark starts
    spark = build_session(args.profile, "sparkrec-ingest")
    dataset = dataset_to_ingest(spark, args.bronze, args.dataset)
    report = ingest(
        spark,
        args.input,
        args.bronze,
        args.rejects,
        args.days,
        args.glob,
        dataset,
        replace_days=args.replace_days,
    )
    print(json.dumps({"ingest": report}, indent=2))
    return report


if __name__ == "__main__":
    run_command(main, "sparkrec ingest")
