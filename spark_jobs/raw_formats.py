"""Raw formats: how the source a dataset definition names (rec_plugin/dataset.py) becomes rows of
fields for ingest (spark_jobs/ingest.py) to validate.

Every format yields one frame: each row's lineage (DAY, SOURCE_FILE, LINE_NUMBER), the row as read
(`raw_line`, what the rejects table keeps), its first row-level problem (ROW_PROBLEM), and per column
its value as text (a list column's: its elements) with a flag for a value of a type the column does
not take. Every rule is then written once, on text, and a failure gets one reason code in any format.

- tsv/csv: a line split by the separator, or by Spark's CSV parser where the definition names a quote
  character (a field within quotes may hold the separator, and a line end where the definition says
  `multiline`: lines are then joined into rows first, spark_jobs/quoted_records.py, each numbered by
  its first line). Where the definition says
  each file has a header, its first line must name the columns in order (else the ingest is refused)
  and is skipped.
  jsonl: a line holding one JSON object, fields by name; a missing key or null is an empty field, and
  a value's JSON type must be its column's (a number for int and float, a string for string; for a
  list an array of strings, or a string split by its list_separator). Both: SOURCE_FILE is the file
  relative to the input, LINE_NUMBER the line's.
- parquet: columns by name. Each file's schema is checked before a row is read: a missing column, or
  one of a type that does not cast to the column's without loss (int and long take any integer type,
  a value out of range being quarantined; float any number type), is an InputError naming the file.
  LINE_NUMBER is the row's 1-based position in its file, in Parquet's own row order.
- delta: the table at the definition's `table`, read at a pinned version (its `version`, else the
  latest when ingest starts), its schema checked as a parquet file's. SOURCE_FILE is
  `<table>@v<version>/<data file>` and LINE_NUMBER the row's position in that data file (rows a
  deletion vector removed not counted): the version says what was read and lets a rerun at a newer
  version replace every older version's rows; the data file makes a row's position exact without
  numbering the whole table in one task. "Used as bronze directly" is done by validating and copying
  it into bronze, not by pointing at it: its rows get the same lineage keys and quarantine as every
  other format's, and later writes to the source cannot change a bronze table that featurize pinned.
  An ingest of some days (a daily retrain's) reads only their rows and those without a day, Delta
  skipping the data files whose statistics of an int, date or timestamp day_column rule them out, so
  a day's ingest costs that day, not the table's history; it numbers a data file's rows among those it
  reads (DAY is part of the row key), and replaces only those days' rows and the dayless ones.

A row's day is the `day_<d>` in its file's path unless the definition names a `day_column`: an int
day as it is, a date as days since `day_origin`. A timestamp's date is its UTC date when it is an
instant (parquet's and Delta's timestamp, an ISO 8601 string with a zone or offset) and its own date
when it names no zone (timestamp_ntz, a string without one), whatever the session's time zone: the
same rows get the same days on any cluster. In JSON a date is a "YYYY-MM-DD" string and a timestamp
an ISO 8601 one ("2024-01-03T10:22:00Z", a space for the T, seconds and fraction optional).
A fixed origin, not the source's earliest date: a rerun over a source that grew older rows keeps every
row's day. A row without a readable day is rejected (BAD_DAY) on day UNKNOWN_DAY.
"""

from __future__ import annotations

import datetime
import operator
import re
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import reduce

from pyspark.sql import Column, DataFrame, DataFrameReader, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from rec_plugin import storage
from rec_plugin.dataset import DELTA, JSONL, LIST, PARQUET, TIMESTAMP, DatasetDefinition, RawColumn
from rec_plugin.errors import InputError
from rec_plugin.schema import DAY, LINE_NUMBER, RAW_LINE, SOURCE_FILE, partition_line_number
from rec_plugin.templates import sql_literal
from spark_jobs.quoted_records import LINE, LINES_BEFORE, ROWS_SCHEMA, joined_rows

# A path's day: a folder named day_<d>, or a file name day_<d>.<extension> (`day_3/`, `day_3.tsv.gz`;
# not `holiday_2023/` nor `day_2024-01-05/`); the deepest where several do (ingest refuses a path
# naming two days). Java's regex (regexp_extract) reads it as Python's does.
_DAY_NAME = r"day_([0-9]+)(?=/|[.][^/]*$|$)"
DAY_IN_PATH = re.compile(rf"^(?:.*/)?{_DAY_NAME}")
DAYS_IN_PATH = re.compile(rf"(?:^|/){_DAY_NAME}")  # every day a path names
# Row-level reason codes, in the order a row reports them (before its columns' own).
EMPTY_LINE = "EMPTY_LINE"
BAD_BYTES = "BAD_BYTES"
FIELD_COUNT = "FIELD_COUNT"
# A JSON line that is not one JSON object: not JSON, an array or a number, a key given twice.
JSON_NOT_OBJECT = "JSON_NOT_OBJECT"
# A row whose day_column is missing, not an int day from 0 to LAST_DAY, or a date before day_origin
# or more than LAST_DAY days after it.
BAD_DAY = "BAD_DAY"
UNKNOWN_DAY = -1
# 273 years of days: an epoch time in seconds given as an int day (1.7e9) would make a partition of
# bronze per second, so it is refused as a day.
LAST_DAY = 99_999
ROW_PROBLEM = "_row_problem"
_INTEGERS = (T.ByteType, T.ShortType, T.IntegerType, T.LongType)
# The parquet/Delta types each column type takes (a list takes array<string>, or a string to split).
# A boolean is an int without loss (true is 1): real tables keep their labels so.
_TAKES: dict[str, tuple[type[T.DataType], ...]] = {
    "int": (*_INTEGERS, T.BooleanType),
    "long": (*_INTEGERS, T.BooleanType),
    "float": (*_INTEGERS, T.FloatType, T.DoubleType, T.DecimalType),
    "string": (T.StringType, *_INTEGERS),  # an integer id as its decimal text, exactly
    TIMESTAMP: (T.TimestampType, T.TimestampNTZType, T.DateType, T.StringType),  # a string: ISO 8601
}
_DAY_TYPES = (*_INTEGERS, T.DateType, T.TimestampType, T.TimestampNTZType)
# A JSON number as schema_of_variant names it.
_JSON_NUMBER = "^(BIGINT|DOUBLE|DECIMAL)"
_ISO_DATE = "[0-9]{4}-[0-9]{2}-[0-9]{2}"
_ZONE = "(Z|[+-][0-9]{2}:?[0-9]{2})"
_ISO_TIMESTAMP = f"^{_ISO_DATE}[T ][0-9]{{2}}:[0-9]{{2}}(:[0-9]{{2}}([.][0-9]{{1,9}})?)?{_ZONE}?$"
_MICROS_PER_DAY = 86_400_000_000
# The SQL settings reading takes: each file (a Delta table's data files too) is read whole by one task,
# so a row's index in its partition is its line number, or its position in the file.
READ_CONF = {
    "spark.sql.files.maxPartitionBytes": str(1 << 40),
    "spark.sql.files.openCostInBytes": str(1 << 40),
}
_SCHEMA_THREADS = 8


# Where the CSV parser of quoted fields keeps a line of another field count.
_CORRUPT = "_corrupt_line"
# Column i's value and wrong-type flag in the fields frame.
VALUE_COLUMN = "_f{}"
WRONG_TYPE_COLUMN = "_w{}"


@dataclass(frozen=True)
class Source:
    """What one ingest reads: raw files under `root` (relative path -> the day its path names, None
    where rows name their day) or the Delta `table` at `version`, all of it or only the rows of `days`
    (and those without a day, which every ingest of the table quarantines again). `listed`: every file
    under `root` as it was listed, taken or not; `whole_days`: the days its files' paths name are
    replaced whole (ingest --replace-days)."""

    root: str | None = None
    files: dict[str, int | None] = field(default_factory=dict)
    table: str | None = None
    version: int | None = None
    days: tuple[int, ...] | None = None
    listed: frozenset[str] = frozenset()
    whole_days: bool = False

    @property
    def file_days(self) -> list[int]:
        """The days the taken files' paths name (none where rows name their day)."""
        return sorted({day for day in self.files.values() if day is not None})

    @property
    def replace_where(self) -> str:
        """The bronze and rejects rows this source's rows replace, so that a rerun never adds rows: its
        files' (on their days), or the table's at any version (on the days read); with `whole_days`,
        every row of its files' days."""
        if self.table is not None:
            rows = f"startswith({SOURCE_FILE}, {sql_literal(self.table + '@v')})"
            days = None if self.days is None else [*self.days, UNKNOWN_DAY]
        else:
            rows = f"{SOURCE_FILE} IN ({', '.join(sql_literal(name) for name in sorted(self.files))})"
            days = self.file_days or None
            if days is not None and self.whole_days:
                return f"{DAY} IN ({', '.join(map(str, days))})"
        return rows if days is None else f"{DAY} IN ({', '.join(map(str, days))}) AND {rows}"

    def describe(self) -> dict:
        """The source as ingest's report and commits record it."""
        if self.table is not None:
            days = {} if self.days is None else {"days": list(self.days)}
            return {"table": self.table, "version": self.version, **days}
        return {"input": self.root, "files": len(self.files)}


def problem(condition: Column, reason: str, name: str | None) -> Column:
    """A row's refusal (reason, the field it names) where `condition` holds, else null."""
    return F.when(condition, F.struct(F.lit(reason).alias("reason"), F.lit(name).alias("field")))


def read_fields(spark: SparkSession, definition: DatasetDefinition, source: Source) -> DataFrame:
    """The source's rows as the fields frame the module docstring describes."""
    if definition.format == DELTA:
        return _delta_fields(spark, definition, source)
    if definition.format == PARQUET:
        return _parquet_fields(spark, definition, source)
    if definition.header:
        _check_headers(spark, definition, source)
    lines = _read_lines(spark, source)
    return (_json_fields if definition.format == JSONL else _text_fields)(lines, definition)


def _check_headers(spark: SparkSession, definition: DatasetDefinition, source: Source) -> None:
    """Each file's header names the definition's columns in its order: fields are read by position,
    so a file of other or reordered columns is refused (naming it) before any work, never misread."""
    paths = _file_paths(spark, source)
    with ThreadPoolExecutor(_SCHEMA_THREADS) as pool:
        headers = dict(zip(paths, pool.map(lambda path: storage.first_line(spark, path), paths.values())))
    for relative, header in headers.items():
        names = None if header is None else _header_names(header, definition)
        if names is not None and names != definition.names:
            raise InputError(
                f"{source.root}/{relative}: its header names {names}, not dataset {definition.name}'s "
                f"columns {definition.names} in that order: fix the file or the definition"
            )


def _file_paths(spark: SparkSession, source: Source) -> dict[str, str]:
    root = storage.qualified(spark, str(source.root)).rstrip("/") + "/"
    return {relative: root + relative for relative in sorted(source.files)}


def _relative_name(spark: SparkSession, paths: dict[str, str]) -> Column:
    """The file a row was read from, relative to the input. input_file_name gives each file's URI,
    percent-encoded (a space is %20) and as file:///x where Hadoop writes file:/x: each file's
    relative name is looked up by the URI's raw path."""
    relative_of = F.create_map(
        *[F.lit(x) for relative, path in paths.items() for x in (storage.raw_path(spark, path), relative)]
    )
    return relative_of[F.parse_url(F.input_file_name(), F.lit("PATH"))]


def _reader(spark: SparkSession) -> DataFrameReader:
    """A reader of listed paths as they are, not as Hadoop globs (where a backslash escapes and `[`
    opens a class): Spark's own switch for that, which its file-stream source sets too."""
    return spark.read.option("__globPaths__", "false")


def _read_lines(spark: SparkSession, source: Source) -> DataFrame:
    """Raw lines with their file (relative to the input) and the day in its path; each text format
    numbers them (_line_number) in the projection that parses them."""
    paths = _file_paths(spark, source)
    lines = _reader(spark).option("lineSep", "\n").text(list(paths.values()))
    name = _relative_name(spark, paths)
    return lines.select(
        F.regexp_extract(name, DAY_IN_PATH.pattern, 1).try_cast("int").alias(DAY),
        name.alias(SOURCE_FILE),
        # A CRLF file's lines end in '\r': the line ends there, as the data intends.
        F.col("value").alias(RAW_LINE),
        _without_final_cr(F.col("value")).alias(LINE),
    )


def _line_number() -> Column:
    """A line's 1-based number, for the projection that parses the line into its fields. Ingest
    filters on the checks built over those fields; Spark pushes a filter below deterministic
    projections only, and below the parse it would parse the line again for every check reading a
    field (~100 for Criteo): numbering there, nondeterministic by nature, is where the filter stops."""
    return partition_line_number().alias(LINE_NUMBER)


def _without_final_cr(line: Column) -> Column:
    """The line less one final carriage return (a string test, not a regex scan of the whole line)."""
    return F.when(line.endswith("\r"), line.substr(F.lit(1), F.length(line) - 1)).otherwise(line)


def _regex_literal(text: str) -> str:
    """A separator as a Java regex matching it literally (F.split takes a pattern); plain text as is."""
    return "".join("\\" + c if c in r"\^$.|?*+()[]{}" else c for c in text)


def _split_list(column: RawColumn, text: Column) -> Column:
    """A list field's elements from its text, null when empty (empty elements dropped: a trailing
    separator adds none)."""
    if not column.list_separator:
        raise InputError(
            f"column {column.name}: a list<string> column read from text needs its list_separator"
        )
    elements = F.split(text, _regex_literal(column.list_separator), -1)
    return F.when(text != "", F.filter(elements, lambda e: e != ""))


def _fields(
    frame: DataFrame,
    definition: DatasetDefinition,
    day: Column,
    lineage: tuple[Column, Column, Column],
    problems: list[Column],
    values: list[tuple[Column, Column]],
) -> DataFrame:
    """The fields frame from a format's columns: `lineage` is (source file, line number, raw line),
    `day` the row's day from its day_column when the definition names one, `values` each column's
    (value, wrong type)."""
    if definition.day_column is not None:
        problems = [*problems, problem(day.isNull(), BAD_DAY, definition.day_column)]
        day = F.coalesce(day, F.lit(UNKNOWN_DAY))
    source_file, line_number, raw_line = lineage
    return frame.select(
        day.alias(DAY),
        source_file.alias(SOURCE_FILE),
        line_number.alias(LINE_NUMBER),
        raw_line.alias(RAW_LINE),
        (F.coalesce(*problems) if problems else F.lit(None)).alias(ROW_PROBLEM),
        *[
            c
            for i, (v, w) in enumerate(values)
            for c in (v.alias(VALUE_COLUMN.format(i)), w.alias(WRONG_TYPE_COLUMN.format(i)))
        ],
    )


def _line_problems() -> list[Column]:
    """An empty line, or one whose bytes as read (`raw_line`: before its final CR goes, which could
    take a stray byte with it) are not UTF-8 or hold U+FFFD (a decoder's mark of such bytes)."""
    raw = F.col(RAW_LINE)
    bad_bytes = ~F.is_valid_utf8(raw) | raw.contains("\ufffd")
    return [problem(F.col(LINE) == "", EMPTY_LINE, None), problem(bad_bytes, BAD_BYTES, None)]


def _text_fields(lines: DataFrame, definition: DatasetDefinition) -> DataFrame:
    """Delimited lines split once, in their own projection (where they are numbered: _line_number)."""
    if definition.quote is None:
        parsed = F.split(LINE, _regex_literal(definition.separator), -1)
        field = lambda i: F.try_element_at("_split", F.lit(i + 1))  # noqa: E731
        wrong_count = F.size("_split") != len(definition.columns)
    else:
        parsed = _quoted_split(definition)
        field = lambda i: F.col("_split")[f"_{i}"]  # noqa: E731
        wrong_count = F.col("_split")[_CORRUPT].isNotNull()
    number = _line_number()
    if definition.multiline:
        lines = lines.mapInArrow(
            joined_rows(definition.separator, str(definition.quote), len(definition.columns)), ROWS_SCHEMA
        )
        number = (partition_line_number() + F.col(LINES_BEFORE)).alias(LINE_NUMBER)
    split = lines.select("*", number, parsed.alias("_split"))
    values = []
    for i, column in enumerate(definition.columns):
        text = field(i)
        values.append((_split_list(column, text) if column.type == LIST else text, F.lit(False)))
    count = problem(wrong_count, FIELD_COUNT, None)
    lineage = F.col(SOURCE_FILE), F.col(LINE_NUMBER), F.col(RAW_LINE)
    if definition.header:  # checked by _check_headers; not a row (nor a line read)
        split = split.where(F.col(LINE_NUMBER) > 1)
    return _fields(split, definition, F.col(DAY), lineage, [*_line_problems(), count], values)


def _header_names(header: str, definition: DatasetDefinition) -> list[str]:
    """A header line's column names (a byte-order mark dropped; each unquoted where the definition
    quotes fields)."""
    names = header.removeprefix("\ufeff").removesuffix("\r").split(definition.separator)
    quote = definition.quote
    return [n[1:-1] if quote and len(n) > 1 and n[0] == n[-1] == quote else n for n in names]


def _quoted_split(definition: DatasetDefinition) -> Column:
    """A line's fields as Spark's CSV parser reads them with the definition's quote character (a
    doubled quote inside quotes is one quote), as a struct of strings _0.._n-1; the parser keeps a line
    of another field count in _CORRUPT. An empty field is null either way, as ingest reads it."""
    fields = ", ".join(f"_{i} STRING" for i in range(len(definition.columns)))
    options = {
        "sep": definition.separator,
        "quote": definition.quote,
        "escape": definition.quote,
        "mode": "PERMISSIVE",
        "columnNameOfCorruptRecord": _CORRUPT,
    }
    return F.from_csv(F.col(LINE), f"{fields}, {_CORRUPT} STRING", options)


def _json_fields(lines: DataFrame, definition: DatasetDefinition) -> DataFrame:
    """JSON lines parsed once, then each field's JSON type (as schema_of_variant names it: BIGINT,
    DECIMAL(2,1), STRING, ARRAY<STRING>, VOID for null) and text, each in its own projection (where
    lines are numbered: _line_number)."""
    as_map = F.try_variant_get(F.try_parse_json(LINE), "$", "map<string,variant>")
    parsed = lines.select("*", as_map.alias("_object"))
    value_of = {name: F.try_element_at("_object", F.lit(name)) for name in definition.read_names}
    split = parsed.select(
        "*",
        _line_number(),
        *[F.schema_of_variant(v).alias(f"_kind_{i}") for i, v in enumerate(value_of.values())],
        *[F.try_variant_get(v, "$", "string").alias(f"_text_{i}") for i, v in enumerate(value_of.values())],
        *[
            F.try_variant_get(value_of[c.name], "$", "array<string>").alias(f"_array_{i}")
            for i, c in enumerate(definition.columns)
            if c.type == LIST
        ],
    )
    kind = {name: F.col(f"_kind_{i}") for i, name in enumerate(value_of)}
    text = {name: F.col(f"_text_{i}") for i, name in enumerate(value_of)}
    values = []
    for i, column in enumerate(definition.columns):
        name = column.name
        if column.type == LIST:
            taken = kind[name].isin("ARRAY<STRING>", "ARRAY<VOID>", "ARRAY<BIGINT>")  # ids as their text
            value = F.when(taken, F.filter(f"_array_{i}", lambda e: e.isNotNull() & (e != "")))
            if column.list_separator:
                value = value.when(kind[name] == "STRING", _split_list(column, text[name]))
                taken = taken | (kind[name] == "STRING")
        elif column.type in ("int", "long"):
            boolean = kind[name] == "BOOLEAN"
            value = F.when(boolean, F.when(text[name] == "true", "1").otherwise("0")).otherwise(text[name])
            taken = kind[name].rlike(_JSON_NUMBER) | boolean
        elif column.type == "string":  # an integer id as its decimal text, exactly
            value, taken = text[name], kind[name].isin("STRING", "BIGINT")
        elif column.type == TIMESTAMP:
            value, taken = text[name], kind[name] == "STRING"
        else:
            value, taken = text[name], kind[name].rlike(_JSON_NUMBER)
        missing = kind[name].isNull() | (kind[name] == "VOID")
        values.append((value, ~missing & ~taken))
    day = F.col(DAY)
    if definition.day_column is not None:
        day_kind, day_text = kind[definition.day_column], text[definition.day_column]
        integer = day_kind.rlike(_JSON_NUMBER) & day_text.rlike("^[0-9]+$")
        iso_date = (day_kind == "STRING") & day_text.rlike(f"^{_ISO_DATE}$")
        iso_timestamp = (day_kind == "STRING") & day_text.rlike(_ISO_TIMESTAMP)
        day = F.when(integer, day_text.try_cast("int"))
        day = day.when(iso_date, _days_since(definition, day_text.try_cast("date")))
        day = day.when(iso_timestamp, _days_since(definition, _date_of_timestamp_text(day_text)))
        day = F.when(day.between(0, LAST_DAY), day)
    not_object = problem((F.col(LINE) != "") & F.col("_object").isNull(), JSON_NOT_OBJECT, None)
    lineage = F.col(SOURCE_FILE), F.col(LINE_NUMBER), F.col(RAW_LINE)
    return _fields(split, definition, day, lineage, [*_line_problems(), not_object], values)


def _days_since(definition: DatasetDefinition, date: Column) -> Column:
    return F.datediff(date, F.lit(definition.day_origin).cast("date"))


def _utc_date(instant: Column) -> Column:
    """An instant's date in UTC: from its microseconds since the epoch, not the session's time zone."""
    epoch_day = F.floor(F.unix_micros(instant) / _MICROS_PER_DAY).cast("int")
    return F.date_add(F.lit("1970-01-01").cast("date"), epoch_day)


def _date_of_timestamp_text(text: Column) -> Column:
    """An ISO 8601 timestamp's date: in UTC when it names a zone or offset, else its own (wall clock);
    null when it is no time (an hour of 25). Spark's cast takes a zone only after seconds: ":00" is added
    where they are left out."""
    text = F.regexp_replace(text, f"^({_ISO_DATE}[T ][0-9]{{2}}:[0-9]{{2}})({_ZONE}?)$", "$1:00$2")
    zoned = _utc_date(text.try_cast("timestamp"))
    return F.when(text.rlike(f"{_ZONE}$"), zoned).otherwise(text.try_cast("timestamp_ntz").cast("date"))


def epoch_millis_of_text(text: Column) -> Column:
    """An ISO 8601 date or timestamp's epoch milliseconds: the instant when it names a zone or offset,
    else its wall clock read as UTC (as a day_column's date is its own); null when it is none. Never
    through the session's time zone: a wall clock in that zone's daylight-saving gap is still itself."""
    timestamp = text.rlike(_ISO_TIMESTAMP)
    with_seconds = F.regexp_replace(text, f"^({_ISO_DATE}[T ][0-9]{{2}}:[0-9]{{2}})({_ZONE}?)$", "$1:00$2")
    instant = F.when(timestamp & text.rlike(f"{_ZONE}$"), with_seconds)
    instant = instant.when(timestamp, F.concat(with_seconds, F.lit("Z")))
    instant = instant.when(text.rlike(f"^{_ISO_DATE}$"), F.concat(text, F.lit("T00:00:00Z")))
    return F.unix_millis(instant.try_cast("timestamp"))


def _utc_iso_text(instant: Column) -> Column:
    """A parquet/Delta timestamp as ISO 8601 text in UTC ("2024-01-03T10:22:00.500000Z"), by arithmetic
    on its microseconds: formatting through the session's zone would drop a historical offset's
    seconds."""
    clock = F.pmod(F.unix_micros(instant), F.lit(_MICROS_PER_DAY))
    parts = [(clock / 3_600_000_000) % 24, (clock / 60_000_000) % 60, (clock / 1_000_000) % 60]
    time = F.format_string(
        "%02d:%02d:%02d.%06d", *[F.floor(part).cast("long") for part in parts], clock % 1_000_000
    )
    return F.concat(_utc_date(instant).cast("string"), F.lit("T"), time, F.lit("Z"))


def _check_schema(definition: DatasetDefinition, schema: T.StructType, where: str) -> None:
    """A typed source holds every field the definition reads (a missing one is named first: a type
    refused is no help while a name is wrong), each of a type it takes."""
    missing = [name for name in definition.read_names if name not in schema.fieldNames()]
    if missing:
        names = ", ".join(map(repr, missing))
        raise InputError(f"{where} has no column {names} (dataset {definition.name} reads it)")
    for name in definition.read_names:
        source = schema[name].dataType
        checks = []
        if name == definition.day_column:
            checks.append((isinstance(source, _DAY_TYPES), "an int day, a date or a timestamp"))
        if name in definition.names:  # a timestamp column may be the day_column too
            checks.append((_takes(definition.column(name), source), definition.column(name).type))
        for takes, holds in checks:
            if not takes:
                raise InputError(
                    f"{where}: column {name!r} is {source.simpleString()}, not {holds} without loss"
                )


def _takes(column: RawColumn, source: T.DataType) -> bool:
    if column.type == LIST:  # elements as a string column takes them: integer ids as their text
        if isinstance(source, T.ArrayType):
            return isinstance(source.elementType, _TAKES["string"])
        return isinstance(source, T.StringType) and bool(column.list_separator)
    return isinstance(source, _TAKES[column.type])


def _named(name: str) -> Column:
    """A column by its name as it is (a dot in it does not select a nested field)."""
    return F.col("`" + name.replace("`", "``") + "`")


def _typed_fields(
    frame: DataFrame, definition: DatasetDefinition, day: Column, source_file: Column
) -> DataFrame:
    """A checked parquet/Delta frame's fields: numbers as their text, so they meet the same rules;
    `day` is the one its path gives where the definition names no day_column."""
    values = []
    for column in definition.columns:
        value = _named(column.name)
        held = frame.schema[column.name].dataType
        if isinstance(held, T.BooleanType):
            value = value.cast("int")
        if isinstance(held, T.TimestampType):  # a timestamp_ntz's and a date's text are zone-free
            value = _utc_iso_text(value)
        if column.type != LIST:
            value = value.cast("string")
        elif isinstance(held, T.ArrayType):
            value = F.filter(value.cast("array<string>"), lambda e: e.isNotNull() & (e != ""))
        else:
            value = _split_list(column, value)
        values.append((value, F.lit(False)))
    if definition.day_column is not None:
        day = _row_day(definition, frame.schema[definition.day_column].dataType)
    # Nulls kept: a row refused for a missing field shows it.
    fields = F.struct(*[_named(name) for name in definition.read_names])
    raw_line = F.to_json(fields, {"ignoreNullFields": "false"})
    return _fields(frame, definition, day, (source_file, partition_line_number(), raw_line), [], values)


def _row_day(definition: DatasetDefinition, held: T.DataType) -> Column:
    """A typed row's day from its day_column (of type `held`): null where it has none."""
    value = _named(str(definition.day_column))
    if isinstance(held, _INTEGERS):
        return F.when(value.between(0, LAST_DAY), value.cast("int"))
    date = _utc_date(value) if isinstance(held, T.TimestampType) else F.to_date(value)
    day = _days_since(definition, date)
    return F.when(day.between(0, LAST_DAY), day)


def _in_days(definition: DatasetDefinition, held: T.DataType, days: tuple[int, ...]) -> Column:
    """The rows of `days` and those without a day, exactly; for an int, date or instant day_column
    also as ranges of the column itself, which Delta's file statistics skip files by (they cannot see
    through the day's arithmetic)."""
    day = _row_day(definition, held)
    exact = day.isin(*days) | day.isNull()
    origin = datetime.date.fromisoformat(definition.day_origin)
    if isinstance(held, _INTEGERS):
        start_of = F.lit
    elif isinstance(held, T.DateType):
        start_of = lambda d: F.lit(origin + datetime.timedelta(days=d))  # noqa: E731
    elif isinstance(held, T.TimestampType):  # an instant: its UTC midnight
        start_of = lambda d: F.lit(  # noqa: E731
            datetime.datetime.combine(origin + datetime.timedelta(days=d), datetime.time(), datetime.UTC)
        )
    else:  # a timestamp without a zone, or text: no statistics to skip by
        return exact
    value = _named(str(definition.day_column))
    no_day = value.isNull() | (value < start_of(0)) | (value >= start_of(LAST_DAY + 1))
    each_day = [(value >= start_of(d)) & (value < start_of(d + 1)) for d in days if d <= LAST_DAY]
    return reduce(operator.or_, each_day, no_day) & exact


def _parquet_fields(spark: SparkSession, definition: DatasetDefinition, source: Source) -> DataFrame:
    """Each file's schema checked first (read concurrently: each is a small Spark job), then the files
    of one schema read together."""
    paths = _file_paths(spark, source)
    with ThreadPoolExecutor(_SCHEMA_THREADS) as pool:
        schemas = dict(zip(paths, pool.map(lambda path: _reader(spark).parquet(path).schema, paths.values())))
    same_schema: dict[str, list[str]] = defaultdict(list)
    for relative, schema in schemas.items():
        _check_schema(definition, schema, f"{source.root}/{relative}")
        same_schema[schema.json()].append(relative)
    frames = []
    for relatives in same_schema.values():
        group = {relative: paths[relative] for relative in relatives}
        frame = _reader(spark).schema(schemas[relatives[0]]).parquet(*group.values())
        name = _relative_name(spark, group)
        day = F.regexp_extract(name, DAY_IN_PATH.pattern, 1).try_cast("int")
        frames.append(_typed_fields(frame, definition, day, name))
    union = frames[0]
    for frame in frames[1:]:
        union = union.unionByName(frame)
    return union


def _delta_fields(spark: SparkSession, definition: DatasetDefinition, source: Source) -> DataFrame:
    """The table at its pinned version; a row's data file relative to the table, as its log names it."""
    table = spark.read.format("delta").option("versionAsOf", source.version).load(source.table)
    label = f"{source.table}@v{source.version}"
    _check_schema(definition, table.schema, label)
    if source.days is not None:
        held = table.schema[str(definition.day_column)].dataType
        table = table.where(_in_days(definition, held, source.days))
    root = storage.raw_path(spark, storage.qualified(spark, str(source.table))).rstrip("/") + "/"
    data_file = F.substr(F.parse_url(F.col("_metadata.file_path"), F.lit("PATH")), F.lit(len(root) + 1))
    return _typed_fields(table, definition, F.lit(None), F.concat(F.lit(label + "/"), data_file))
