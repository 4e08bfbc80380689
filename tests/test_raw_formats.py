"""Ingest of JSON lines, parquet files and an existing Delta table: each row lands in bronze (typed)
or rejects (with the same reason codes as TSV), counts reconcile, and reruns replace rather than add."""

from __future__ import annotations

import datetime
import gzip
import json
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from delta.tables import DeltaTable

from rec_plugin.dataset import load_dataset
from rec_plugin.errors import InputError
from rec_plugin.ops import DatePart
from rec_plugin.schema import Tags
from rec_plugin.workflow import Workflow
from spark_jobs import ingest as ing
from spark_jobs import quoted_records
from spark_jobs.layout import PipelineLayout
from spark_jobs.raw_formats import UNKNOWN_DAY, read_fields
from spark_jobs.retrain import NEW_FILES, RetrainRecord, ingest_day, ingested_day_rows
from spark_jobs.session import session_conf

COLUMNS = [
    {"name": "click", "type": "int", "rule": "binary", "tags": ["label"]},
    {"name": "user_id", "type": "string", "tags": ["categorical", "user_id"]},
    {"name": "item", "type": "string", "token_width": 4, "alphabet": "hex", "tags": ["categorical"]},
    {"name": "price", "type": "float", "tags": ["continuous"]},
    {"name": "hour", "type": "int", "tags": ["categorical"]},
    {"name": "recent", "type": "list<string>", "list_separator": "|", "tags": ["categorical", "list"]},
]
BRONZE_TYPES = {
    "day": "int",
    "click": "int",
    "user_id": "string",
    "item": "string",
    "price": "double",
    "hour": "int",
    "recent": "array<string>",
    "source_file": "string",
    "line_number": "bigint",
}
FIELDS = ["day", "click", "user_id", "item", "price", "hour", "recent"]


def definition(tmp_path: Path, columns: list[dict] = COLUMNS, **source):
    path = tmp_path / "dataset.json"
    path.write_text(json.dumps({"name": "shop", "columns": columns, **source}))
    return load_dataset(str(path))


def tables(spark, lake: Path) -> tuple[dict, dict]:
    """Bronze rows by (file, line) as field tuples, and rejects by (file, line) as (reason, field);
    each file's rows are numbered 1..n between the two."""
    bronze = spark.read.format("delta").load(str(lake / "bronze"))
    assert dict(bronze.dtypes) == BRONZE_TYPES
    rejects = spark.read.format("delta").load(str(lake / "rejects")).collect()
    rows = {(r.source_file, r.line_number): tuple(r[f] for f in FIELDS) for r in bronze.collect()}
    refused = {(r.source_file, r.line_number): (r.reason, r.reason_field) for r in rejects}
    lines: dict[str, list[int]] = {}
    for name, line in sorted([*rows, *refused]):
        lines.setdefault(name, []).append(line)
    assert all(numbers == list(range(1, len(numbers) + 1)) for numbers in lines.values()), lines
    return rows, refused


def run(spark, lake: Path, dataset, input_dir: Path | None = None) -> dict:
    raw = None if input_dir is None else str(input_dir)
    report = ing.ingest(spark, raw, str(lake / "bronze"), str(lake / "rejects"), dataset=dataset)
    assert report["accepted"] + report["rejected"] == report["lines_read"]
    return report


GOOD = {"click": 1, "user_id": "u1", "item": "00af", "price": 1.5, "hour": 7, "recent": ["0001", "", "b"]}
# (the JSON line, the reason code it must get, the field it must name); None = accepted.
JSON_CASES = [
    (json.dumps({**GOOD, "date": "2024-01-03", "extra": {"ignored": True}}), None, None),
    (
        json.dumps({"click": 0, "user_id": None, "item": "beef", "price": 2e-3, "recent": "a|b|", "date": 5}),
        None,
        None,
    ),
    ("not json", ing.JSON_NOT_OBJECT, None),
    ("[1, 2]", ing.JSON_NOT_OBJECT, None),
    ("", ing.EMPTY_LINE, None),
    (json.dumps({**GOOD, "date": 1, "hour": "abc"}), ing.INT_NOT_INTEGER, "hour"),
    (json.dumps({**GOOD, "date": 1, "hour": "7"}), ing.INT_NOT_INTEGER, "hour"),
    (json.dumps({**GOOD, "date": 1, "hour": 1.5}), ing.INT_NOT_INTEGER, "hour"),
    (json.dumps({**GOOD, "date": 1, "hour": 99999999999}), ing.INT_OUT_OF_RANGE, "hour"),
    (json.dumps({**GOOD, "date": 1, "price": "1.5"}), ing.FLOAT_NOT_NUMBER, "price"),
    (json.dumps({**GOOD, "date": 1, "click": 2}), ing.BAD_LABEL, "click"),
    (json.dumps({**GOOD, "date": 1, "click": None}), ing.BAD_LABEL, "click"),
    (json.dumps({**GOOD, "date": 1, "user_id": 4.2}), ing.WRONG_TYPE, "user_id"),
    (json.dumps({**GOOD, "date": 1, "item": "ABCD"}), ing.CAT_NOT_HEX, "item"),
    (json.dumps({**GOOD, "date": 1, "item": "abc\n"}), ing.CAT_NOT_HEX, "item"),  # 4 characters, one no digit
    (json.dumps({**GOOD, "date": 1, "recent": [1.5, 2]}), ing.WRONG_TYPE, "recent"),
    (json.dumps({**GOOD, "date": 1, "recent": [1, "a"]}), ing.WRONG_TYPE, "recent"),
    (json.dumps({**GOOD, "date": "2023-12-31"}), ing.BAD_DAY, "date"),
    (json.dumps(GOOD), ing.BAD_DAY, "date"),
    (json.dumps({**GOOD, "date": 1704277320}), ing.BAD_DAY, "date"),  # epoch seconds, not a day
    (json.dumps({**GOOD, "date": 4, "click": False}), None, None),  # a boolean is an int: false is 0
    (json.dumps({**GOOD, "date": 4, "user_id": 2**62 + 1}), None, None),  # an integer id, as its text
    (json.dumps({**GOOD, "date": 4, "recent": [2**62 + 1, None, 7]}), None, None),  # integer ids too
]


def test_json_lines_are_validated_by_field_name_and_json_type(spark, tmp_path):
    raw = tmp_path / "raw" / "clicks" / "a.jsonl"
    raw.parent.mkdir(parents=True)
    raw.write_text("\n".join(line for line, _, _ in JSON_CASES) + "\n")
    # A label given no rule is held to 0 or 1 all the same (a click 2, a null one: BAD_LABEL).
    label_without_rule = {k: v for k, v in COLUMNS[0].items() if k != "rule"}
    dataset = definition(
        tmp_path,
        [label_without_rule, *COLUMNS[1:]],
        format="jsonl",
        file_patterns=["*.jsonl"],
        day_column="date",
        day_origin="2024-01-01",
    )
    report = run(spark, tmp_path / "lake", dataset, tmp_path / "raw")

    expected_rejects = {("clicks/a.jsonl", n + 1): (r, f) for n, (_, r, f) in enumerate(JSON_CASES) if r}
    assert report["lines_read"] == len(JSON_CASES) and report["rejected"] == len(expected_rejects)
    bronze, rejects = tables(spark, tmp_path / "lake")
    assert rejects == expected_rejects
    assert bronze == {
        ("clicks/a.jsonl", 1): (2, 1, "u1", "00af", 1.5, 7, ["0001", "b"]),
        ("clicks/a.jsonl", 2): (5, 0, None, "beef", 0.002, None, ["a", "b"]),
        ("clicks/a.jsonl", len(JSON_CASES) - 2): (4, 0, "u1", "00af", 1.5, 7, ["0001", "b"]),
        ("clicks/a.jsonl", len(JSON_CASES) - 1): (4, 1, str(2**62 + 1), "00af", 1.5, 7, ["0001", "b"]),
        ("clicks/a.jsonl", len(JSON_CASES)): (4, 1, "u1", "00af", 1.5, 7, [str(2**62 + 1), "7"]),
    }
    not_json = spark.read.format("delta").load(str(tmp_path / "lake" / "rejects")).where("line_number = 3")
    assert [(r.day, r.raw_line) for r in not_json.collect()] == [(UNKNOWN_DAY, "not json")]

    again = run(spark, tmp_path / "lake", dataset, tmp_path / "raw")
    assert again["bronze_version"] == report["bronze_version"] + 1
    assert tables(spark, tmp_path / "lake") == (bronze, rejects)

    # A daily ingest (retrain's) of rows that name their day takes the files not ingested yet; the
    # definition given by path is recorded for the stages after.
    (raw.parent / "b.jsonl").write_text(json.dumps({**GOOD, "date": "2024-01-09"}) + "\n")
    lake, path = tmp_path / "lake", str(tmp_path / "dataset.json")
    tables_at = (str(tmp_path / "raw"), str(lake / "bronze"), str(lake / "rejects"))
    new = ing.files_not_ingested(spark, tables_at[0], path, tables_at[1:])
    assert new == ["clicks/b.jsonl"]
    daily = ing.ingest(spark, *tables_at, dataset=path, files=new)
    assert (daily["lines_read"], daily["accepted"]) == (1, 1)
    grown, _ = tables(spark, lake)
    assert grown == {**bronze, ("clicks/b.jsonl", 1): (8, 1, "u1", "00af", 1.5, 7, ["0001", "b"])}
    assert ing.ingested_dataset(spark, str(lake / "bronze")) == path
    assert ing.files_not_ingested(spark, tables_at[0], path, tables_at[1:]) == []
    with pytest.raises(InputError, match=r"no raw files \['clicks/c.jsonl'\]"):
        ing.ingest(spark, *tables_at, dataset=path, files=["clicks/c.jsonl"])
    # The recorded definition, edited into one this version refuses, is read again in this process
    # (a notebook's session outlives edits) and does not hide what is wrong with the dataset given.
    Path(path).write_text(json.dumps({**json.loads(Path(path).read_text()), "format": "xml"}))
    refusal = (
        rf"columns than a bronze table of dataset 'criteo': it was ingested with {re.escape(path)}, which"
    )
    with pytest.raises(InputError, match=refusal):
        ing.ingest(spark, *tables_at, dataset="criteo")


def test_csv_with_a_header_and_quoted_fields_is_read_by_field_and_a_header_of_other_columns_refused(
    spark, tmp_path
):
    """A header names the columns: checked against the definition's order (fields are read by position),
    then skipped, each line keeping its number in its file. A quoted field may hold the separator, and
    a doubled quote inside it is one quote."""
    names = [c["name"] for c in COLUMNS]
    header, good = ",".join(f'"{n}"' if n == "user_id" else n for n in names), "1,u1,00af,1.5,7,0001|b"
    raw = tmp_path / "raw" / "day_0"
    raw.mkdir(parents=True)
    lines = [header, good, '0,"u,2",beef,,3,', '1,"say ""hi""",00af,2,1,a', f"{good},extra", "1,u1,00af"]
    (raw / "a.csv").write_text("\ufeff" + "\r\n".join(lines) + "\r\n")  # as Excel writes it
    (raw / "b.csv.gz").write_bytes(gzip.compress(f"{header}\n{good.replace('1.5', 'x')}\n".encode()))
    definition(tmp_path, format="csv", file_patterns=["*.csv", "*.csv.gz"], header=True, quote='"')
    dataset, lake = str(tmp_path / "dataset.json"), tmp_path / "lake"
    assert run(spark, lake, dataset, tmp_path / "raw")["lines_read"] == 6
    bronze = spark.read.format("delta").load(str(lake / "bronze")).collect()
    assert sorted((r.source_file, r.line_number, r.user_id, r.price, r.recent) for r in bronze) == [
        ("day_0/a.csv", 2, "u1", 1.5, ["0001", "b"]),
        ("day_0/a.csv", 3, "u,2", None, None),
        ("day_0/a.csv", 4, 'say "hi"', 2.0, ["a"]),
    ]
    rejects = spark.read.format("delta").load(str(lake / "rejects")).collect()
    assert sorted((r.source_file, r.line_number, r.reason) for r in rejects) == [
        ("day_0/a.csv", 5, ing.FIELD_COUNT),
        ("day_0/a.csv", 6, ing.FIELD_COUNT),
        ("day_0/b.csv.gz", 2, ing.FLOAT_NOT_NUMBER),
    ]
    # A file naming the columns in another order is refused, naming it, before any write.
    (raw / "c.csv").write_text(",".join([names[0], names[2], names[1], *names[3:]]) + f"\n{good}\n")
    with pytest.raises(InputError, match=r"day_0/c\.csv: its header names \['click', 'item', 'user_id'"):
        run(spark, lake, dataset, tmp_path / "raw")
    assert DeltaTable.forPath(spark, str(lake / "bronze")).history().count() == 1


def test_multiline_csv_joins_quoted_line_ends_into_one_row_and_a_stray_quote_costs_one_row(spark, tmp_path):
    """With `multiline`, a quoted field may hold line ends (as Excel and database exports write them):
    the lines make one row, numbered by its first line. A stray quote, closed by a later line into a row
    of another field count or never closed, is one bad row, and the lines after it are rows again; a
    line that is not UTF-8 is refused alone."""
    names = [c["name"] for c in COLUMNS]
    good = "1,u1,00af,1.5,7,0001|b"
    lines = [
        ",".join(names),
        good,
        '1,"two',
        'lines, and ""quotes""",00af,2,1,a',
        good,
        '0,"three',
        "line",
        'field",beef,,3,',
        '1,27" tall,00af,2,1,a',  # a quote inside an unquoted field is a character of it
        '1,6" wide,00af,2,1,a',
        '1,"stray,00af,2,1,a',
        good,
        good.replace("u1", "u9"),
        '1,"Smith, J",00af,2,1,a',  # closes the stray quote's join: 7 fields, not 6
        '1,"caf\udce9',  # a Latin-1 byte, and a quote that opens a row
        'au lait",00af,2,1,a',
        '0,"last',
    ]
    raw = tmp_path / "raw" / "day_0"
    raw.mkdir(parents=True)
    (raw / "a.csv").write_bytes(("\r\n".join(lines) + "\r\n").encode(errors="surrogateescape"))
    (raw / "b.csv.gz").write_bytes(gzip.compress(f"{lines[0]}\n{good}\n".encode()))
    definition(tmp_path, format="csv", file_patterns=["*.csv*"], header=True, quote='"', multiline=True)
    lake = tmp_path / "lake"
    assert run(spark, lake, str(tmp_path / "dataset.json"), tmp_path / "raw")["lines_read"] == 13
    bronze, rejects = (spark.read.format("delta").load(str(lake / t)) for t in ("bronze", "rejects"))
    assert sorted((r.source_file, r.line_number, r.user_id, r.item) for r in bronze.collect()) == [
        ("day_0/a.csv", 2, "u1", "00af"),
        ("day_0/a.csv", 3, 'two\nlines, and "quotes"', "00af"),
        ("day_0/a.csv", 5, "u1", "00af"),
        ("day_0/a.csv", 6, "three\nline\nfield", "beef"),
        ("day_0/a.csv", 9, '27" tall', "00af"),
        ("day_0/a.csv", 10, '6" wide', "00af"),
        ("day_0/a.csv", 12, "u1", "00af"),
        ("day_0/a.csv", 13, "u9", "00af"),
        ("day_0/a.csv", 14, "Smith, J", "00af"),
        ("day_0/b.csv.gz", 2, "u1", "00af"),
    ]
    refused = sorted((r.line_number, r.reason) for r in rejects.collect())
    assert refused == [(11, ing.FIELD_COUNT), (15, ing.BAD_BYTES), (17, ing.FIELD_COUNT)]
    stray = rejects.where("line_number = 11").first()
    assert stray.raw_line == lines[10] + "\r"
    with pytest.raises(InputError, match="only quoted fields hold line ends"):
        definition(tmp_path, format="csv", file_patterns=["*.csv"], multiline=True)


def test_a_quote_open_past_the_row_line_limit_costs_its_first_line_across_batches(monkeypatch):
    monkeypatch.setattr(quoted_records, "MAX_ROW_LINES", 3)
    lines = ['"a', 'b"', '"c', "d", "e", "f", '"g', 'h"', "i"]  # the quote opened at "c never closes in 3
    batches = [
        pa.RecordBatch.from_arrays(
            [
                pa.array([0] * len(part), pa.int32()),
                pa.array(["f"] * len(part)),
                pa.array(part),
                pa.array(part),
            ],
            list(quoted_records.LINE_COLUMNS),
        )
        for part in (lines[:2], lines[2:5], lines[5:])
    ]
    made = pa.Table.from_batches(list(quoted_records.joined_rows(",", '"', 1)(iter(batches))))
    first_lines = [
        n + 1 + before for n, before in enumerate(made.column(quoted_records.LINES_BEFORE).to_pylist())
    ]
    assert list(zip(made.column("_line").to_pylist(), first_lines, strict=True)) == [
        ('"a\nb"', 1),
        ('"c', 3),
        ("d", 4),
        ("e", 5),
        ("f", 6),
        ('"g\nh"', 7),
        ("i", 9),
    ]


def test_lines_read_again_after_a_row_gives_up_are_not_matched_again():
    """Lines that both open a row and keep one open (a quote closed and another opened) make every row
    give up at the line limit, and each give-up reads the lines after it again: their states are
    worked out once, so the work stays linear in the lines."""
    joiner = quoted_records._RowJoiner(",", '"', 3)
    matched = []

    class Counting:
        def __init__(self, pattern: re.Pattern) -> None:
            self.pattern = pattern

        def match(self, line: bytes) -> re.Match | None:
            matched.append(line)
            return self.pattern.match(line)

    joiner.reader.stays_open = Counting(joiner.reader.stays_open)
    lines = [f'{n},a"b,"c' for n in range(3 * quoted_records.MAX_ROW_LINES)]
    batch = pa.RecordBatch.from_arrays(
        [
            pa.array([0] * len(lines), pa.int32()),
            pa.array(["f"] * len(lines)),
            pa.array(lines),
            pa.array(lines),
        ],
        list(quoted_records.LINE_COLUMNS),
    )
    made = [joiner.feed(batch), joiner.finish()]
    rows = pa.Table.from_batches([b for b in made if b is not None])
    assert rows.column(quoted_records.LINE).to_pylist() == lines  # each line a row of its own
    assert len(matched) == len(set(matched)) == len(lines) - 1


def test_a_retrain_ingests_a_days_new_files_once_and_a_rerun_the_same_files(spark, tmp_path):
    """retrain's ingest where rows name their day: the raw files neither table holds, chosen once."""
    layout = PipelineLayout(tmp_path)
    raw = Path(layout.raw) / "clicks"
    raw.mkdir(parents=True)

    def lines(*dates: str) -> str:
        return "".join(json.dumps({**GOOD, "date": date}) + "\n" for date in dates)

    (raw / "a.jsonl").write_text(lines("2024-01-01", "2024-01-02"))
    by_date = {"day_column": "date", "day_origin": "2024-01-01"}
    definition(tmp_path, format="jsonl", file_patterns=["*.jsonl"], **by_date)
    dataset = str(tmp_path / "dataset.json")
    ing.ingest(spark, layout.raw, layout.bronze, layout.rejects, dataset=dataset)
    record = RetrainRecord.load(layout.retrain(2) / "record.json")
    with pytest.raises(InputError, match="is ingested already: add day 2's files there"):
        ingest_day(spark, layout, 2, dataset, record)
    assert record.done(NEW_FILES) is None  # nothing chosen: a rerun once the files are there finds them

    (raw / "b.jsonl").write_text(lines("2024-01-03") + "not json\n")
    first = ingest_day(spark, layout, 2, dataset, record)
    assert (first["lines_read"], first["accepted"], first["rejected"]) == (2, 1, 1)
    assert record.done(NEW_FILES) == {"files": ["clicks/b.jsonl"]}
    # Killed after ingest's commit: the rerun ingests the files chosen, not one that came meanwhile.
    (raw / "c.jsonl").write_text(lines("2024-01-04"))
    again = ingest_day(spark, layout, 2, dataset, RetrainRecord.load(record.path))
    assert (again["lines_read"], again["source"]) == (2, first["source"])
    assert again["bronze_version"] == first["bronze_version"] + 1  # its rows replaced, not added
    bronze, rejects = tables(spark, tmp_path / "lake")
    assert {(name, row[0]) for (name, _), row in bronze.items()} == {
        ("clicks/a.jsonl", 0),
        ("clicks/a.jsonl", 1),
        ("clicks/b.jsonl", 2),
    }
    assert list(rejects) == [("clicks/b.jsonl", 2)]
    # A retrain of a day that an earlier retrain's files brought ingests nothing.
    (raw / "c.jsonl").unlink()
    fresh = RetrainRecord.load(tmp_path / "again" / "record.json")
    assert ingest_day(spark, layout, 2, dataset, fresh) == {"lines_read": 0, "accepted": 0, "rejected": 0}


def test_a_retrain_whose_files_hold_no_row_of_its_day_reads_them_again_with_those_added(spark, tmp_path):
    """Where rows name their day, the files chosen for a day that turned out to hold none of its rows
    were kept, and every rerun read those alone, never the day's files added since."""
    layout = PipelineLayout(tmp_path)
    raw = Path(layout.raw) / "clicks"
    raw.mkdir(parents=True)
    definition(
        tmp_path, format="jsonl", file_patterns=["*.jsonl"], day_column="date", day_origin="2024-01-01"
    )
    dataset = str(tmp_path / "dataset.json")

    def line(date: str) -> str:
        return json.dumps({**GOOD, "date": date}) + "\n"

    (raw / "a.jsonl").write_text(line("2024-01-01"))
    ing.ingest(spark, layout.raw, layout.bronze, layout.rejects, dataset=dataset)
    (raw / "b.jsonl").write_text(line("2024-01-04"))  # day 3's, not 2's
    record = RetrainRecord.load(layout.retrain(2) / "record.json")
    ingest_day(spark, layout, 2, dataset, record)
    with pytest.raises(InputError, match="^bronze table .* holds no rows of day 2 after its ingest"):
        ingested_day_rows(spark, layout, 2, record)
    (raw / "b.jsonl").write_text(line("2024-01-03"))  # corrected in place
    (raw / "c.jsonl").write_text(line("2024-01-03"))  # and one added
    rerun = RetrainRecord.load(layout.retrain(2) / "record.json")
    assert ingest_day(spark, layout, 2, dataset, rerun)["accepted"] == 2
    assert rerun.done(NEW_FILES) == {"files": ["clicks/b.jsonl", "clicks/c.jsonl"]}
    assert ingested_day_rows(spark, layout, 2, rerun).count() == 2


def write_parquet(path: Path, columns: dict[str, tuple[pa.DataType, list]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    schema = pa.schema([(name, kind) for name, (kind, _) in columns.items()])
    pq.write_table(pa.table({name: values for name, (_, values) in columns.items()}, schema=schema), path)


def test_parquet_columns_are_cast_without_loss_and_bad_values_quarantined(spark, tmp_path):
    # Day 1: pandas-like types (int64 for int columns, float32 prices, a list column).
    write_parquet(
        tmp_path / "raw" / "day_1" / "a.parquet",
        {
            "click": (pa.int64(), [1, 0, 2, None, 1, 1, 1]),
            "user_id": (pa.string(), ["u1", None, "u3", "u4", "u5", "u6", "u7"]),
            "item": (pa.string(), ["00af", "beef", "00af", "00af", "zz", "ABCD", "00af"]),
            "price": (pa.float32(), [0.25, None, 1.0, 1.0, 1.0, 1.0, float("nan")]),
            "hour": (pa.int64(), [3, None, 3, 3, 3, 3, 3]),
            "recent": (pa.list_(pa.string()), [["0001", ""], None, [], [], [], [], []]),
        },
    )
    # Day 2: other types and another column order, a list as separated text, a column not read.
    write_parquet(
        tmp_path / "raw" / "day_2" / "b.parquet",
        {
            "note": (pa.string(), ["x", "y"]),
            "recent": (pa.string(), ["a|b", ""]),
            "hour": (pa.int8(), [23, 4]),
            "price": (pa.int32(), [5, 6]),
            "item": (pa.string(), ["0a0a", "0b0b"]),
            "user_id": (pa.int64(), [8, 2**62 + 9]),  # integer ids of a string column: their text
            "click": (pa.int32(), [0, 1]),
        },
    )
    (tmp_path / "raw" / "day_2" / "b.parquet.crc").write_text("not a raw file")
    # Day 3: the label as a boolean, as real tables keep it (true is 1).
    write_parquet(
        tmp_path / "raw" / "day_3" / "c.parquet",
        {
            "click": (pa.bool_(), [True, False, None]),
            "user_id": (pa.string(), ["u1"] * 3),
            "item": (pa.string(), ["00af"] * 3),
            "recent": (pa.list_(pa.int64()), [[2**62 + 1, None], [7], None]),  # integer ids: their text
            "price": (pa.float64(), [1.0] * 3),
            "hour": (pa.int64(), [2] * 3),
        },
    )
    dataset = definition(tmp_path, format="parquet", file_patterns=["*.parquet"])
    report = run(spark, tmp_path / "lake", dataset, tmp_path / "raw")

    assert (report["lines_read"], report["accepted"], report["rejected"]) == (12, 6, 6)
    bronze, rejects = tables(spark, tmp_path / "lake")
    assert rejects == {
        ("day_1/a.parquet", 3): (ing.BAD_LABEL, "click"),
        ("day_1/a.parquet", 4): (ing.BAD_LABEL, "click"),
        ("day_1/a.parquet", 5): (ing.CAT_BAD_LENGTH, "item"),
        ("day_1/a.parquet", 6): (ing.CAT_NOT_HEX, "item"),
        ("day_1/a.parquet", 7): (ing.FLOAT_NOT_NUMBER, "price"),
        ("day_3/c.parquet", 3): (ing.BAD_LABEL, "click"),
    }
    refused = spark.read.format("delta").load(str(tmp_path / "lake" / "rejects")).where("line_number = 4")
    assert json.loads(refused.first().raw_line)["click"] is None  # the missing label is in the line
    assert bronze == {
        ("day_1/a.parquet", 1): (1, 1, "u1", "00af", 0.25, 3, ["0001"]),
        ("day_1/a.parquet", 2): (1, 0, None, "beef", None, None, None),
        ("day_2/b.parquet", 1): (2, 0, "8", "0a0a", 5.0, 23, ["a", "b"]),
        ("day_2/b.parquet", 2): (2, 1, str(2**62 + 9), "0b0b", 6.0, 4, None),
        ("day_3/c.parquet", 1): (3, 1, "u1", "00af", 1.0, 2, [str(2**62 + 1)]),
        ("day_3/c.parquet", 2): (3, 0, "u1", "00af", 1.0, 2, ["7"]),
    }

    run(spark, tmp_path / "lake", dataset, tmp_path / "raw")
    assert tables(spark, tmp_path / "lake") == (bronze, rejects)


# (a JSON timestamp, the day it gives since 2024-01-01; None: BAD_DAY)
TIMESTAMPS = [
    ("2024-01-03T10:22:00Z", 2),
    ("2024-01-03T23:30:00-05:00", 3),  # 04:30 on the 4th in UTC
    ("2024-01-04 00:10:00", 3),  # no zone: its own date
    ("2024-01-03T10:22:00.123456789+02:00", 2),
    ("2024-01-05T01:00+0200", 3),  # no seconds
    ("2024-01-05T01:00-05:30", 4),
    ("2024-01-03T10:22", 2),
    ("2024-01-03T25:00:00Z", None),
    ("2024-01-03T10:22:00 UTC", None),
    ("2023-12-31T23:59:59Z", None),  # before day_origin
]


def test_a_timestamps_day_is_its_utc_date_whatever_the_sessions_time_zone(spark, tmp_path):
    """Click logs stamp events with times, not dates: an instant's day is its UTC date, a time that
    names no zone its own date, in JSON and parquet alike, under a session in another time zone."""
    raw = tmp_path / "raw" / "events.jsonl"
    raw.parent.mkdir(parents=True)
    raw.write_text("\n".join(json.dumps({**GOOD, "ts": stamp}) for stamp, _ in TIMESTAMPS) + "\n")
    write_parquet(
        tmp_path / "raw" / "events.parquet",
        {
            **{name: (pa.string(), [GOOD[name]] * 2) for name in ("user_id", "item")},
            "click": (pa.int64(), [1, 1]),
            "price": (pa.float64(), [1.5, 1.5]),
            "hour": (pa.int64(), [7, 7]),
            "recent": (pa.list_(pa.string()), [["b"], ["b"]]),
            "ts": (pa.timestamp("us", tz="UTC"), [datetime.datetime(2024, 1, 3, 2, tzinfo=datetime.UTC)] * 2),
            "local_ts": (pa.timestamp("us"), [datetime.datetime(2024, 1, 3, 23, 30)] * 2),
        },
    )
    origin = {"day_origin": "2024-01-01"}
    with session_conf(spark, {"spark.sql.session.timeZone": "America/New_York"}):
        jsonl = definition(tmp_path, format="jsonl", file_patterns=["*.jsonl"], day_column="ts", **origin)
        run(spark, tmp_path / "lake", jsonl, tmp_path / "raw")
        for column in ("ts", "local_ts"):
            (tmp_path / column).mkdir()
            fields = {"format": "parquet", "file_patterns": ["*.parquet"], "day_column": column, **origin}
            run(spark, tmp_path / column / "lake", definition(tmp_path / column, **fields), tmp_path / "raw")
    bronze, rejects = tables(spark, tmp_path / "lake")
    days = {line: row[0] for (_, line), row in bronze.items()} | {line: r for (_, line), r in rejects.items()}
    assert days == {
        n + 1: (ing.BAD_DAY, "ts") if day is None else day for n, (_, day) in enumerate(TIMESTAMPS)
    }
    # 02:00 UTC is the evening before in New York: the day is the UTC date's.
    assert {row[0] for row in tables(spark, tmp_path / "ts" / "lake")[0].values()} == {2}
    assert {row[0] for row in tables(spark, tmp_path / "local_ts" / "lake")[0].values()} == {2}


# An event time's text -> the epoch milliseconds a timestamp column keeps (ing.BAD_TIMESTAMP: refused).
EVENT_TIMES = [
    ("2024-01-03T10:22:00Z", 1704277320000),
    ("2024-01-03T10:22:00.123456+02:00", 1704270120123),  # an instant: its offset counts
    ("2024-01-03 10:22:00", 1704277320000),  # no zone: its wall clock, as UTC
    ("2024-01-03T10:22+0000", 1704277320000),  # no seconds
    ("2024-01-03", 1704240000000),
    ("2024-03-10T02:30:00", 1710037800000),  # in New York's daylight-saving gap: no matter here
    ("", None),
    ("1704277320", ing.BAD_TIMESTAMP),  # epoch seconds are a long column's
    ("2024-01-03T25:00:00Z", ing.BAD_TIMESTAMP),
]


def test_a_timestamp_column_keeps_epoch_milliseconds_from_text_json_and_parquet(spark, tmp_path):
    """An event time as a feature: ISO 8601 text (TSV, JSON) or a parquet timestamp, timestamp_ntz or
    date, kept as epoch milliseconds (UTC) whatever the session's time zone, for DatePart(unit="ms")."""
    columns = [COLUMNS[0], {"name": "seen", "type": "timestamp"}]
    raw = tmp_path / "raw"
    (raw / "day_1").mkdir(parents=True)
    (raw / "day_1" / "a.tsv").write_text("".join(f"1\t{text}\n" for text, _ in EVENT_TIMES))
    (raw / "b.jsonl").write_text(
        "\n".join(json.dumps({"click": 1, "seen": seen, "day": 1}) for seen in ("2024-01-03", 1704277320))
    )
    at = datetime.datetime(2024, 1, 3, 10, 22, 0, 500000)
    write_parquet(
        raw / "c.parquet",
        {
            "click": (pa.int64(), [1, 1, 1]),
            "seen": (
                pa.timestamp("us", tz="UTC"),
                [at.replace(tzinfo=datetime.UTC), datetime.datetime(1800, 1, 1, tzinfo=datetime.UTC), None],
            ),
            "day": (pa.int64(), [1, 1, 1]),
        },
    )
    write_parquet(
        raw / "d.parquet",
        {
            "click": (pa.int64(), [1, 1]),
            "seen": (pa.timestamp("us"), [at, datetime.datetime(2024, 3, 10, 2, 30)]),
            "day": (pa.int64(), [1, 1]),
        },
    )
    write_parquet(
        raw / "e.parquet",
        {"click": (pa.int64(), [1]), "seen": (pa.date32(), [at.date()]), "day": (pa.int64(), [1])},
    )
    lakes = {name: tmp_path / name for name in ("tsv", "jsonl", "parquet")}
    for lake in lakes.values():
        lake.mkdir()
    with session_conf(spark, {"spark.sql.session.timeZone": "America/New_York"}):
        run(
            spark,
            lakes["tsv"],
            definition(tmp_path / "tsv", columns, format="tsv", file_patterns=["*.tsv"]),
            raw,
        )
        fields = {"file_patterns": ["*.jsonl"], "day_column": "day"}
        run(spark, lakes["jsonl"], definition(tmp_path / "jsonl", columns, format="jsonl", **fields), raw)
        fields = {"file_patterns": ["*.parquet"], "day_column": "day"}
        run(
            spark,
            lakes["parquet"],
            definition(tmp_path / "parquet", columns, format="parquet", **fields),
            raw,
        )

    def kept(lake: Path) -> dict[int, int | str | None]:
        rows = spark.read.format("delta").load(str(lake / "bronze"))
        assert dict(rows.dtypes)["seen"] == "bigint"
        rejects = spark.read.format("delta").load(str(lake / "rejects"))
        return {r.line_number: r.seen for r in rows.collect()} | {
            r.line_number: r.reason for r in rejects.collect()
        }

    assert kept(lakes["tsv"]) == {n + 1: expected for n, (_, expected) in enumerate(EVENT_TIMES)}
    assert kept(lakes["jsonl"]) == {1: 1704240000000, 2: ing.BAD_TIMESTAMP}  # a JSON number is no time
    parquet = spark.read.format("delta").load(str(lakes["parquet"] / "bronze"))
    assert sorted(r.seen for r in parquet.where("seen IS NOT NULL").collect()) == [
        -5364662400000,  # 1800-01-01 UTC, when New York's offset was -4:56:02
        1704240000000,  # the date
        1704277320500,  # the instant and the wall clock alike
        1704277320500,
        1710037800000,  # a wall clock in New York's daylight-saving gap
    ]
    # The event time may give the row's day too.
    (tmp_path / "both").mkdir()
    both = definition(
        tmp_path / "both", columns, format="jsonl", file_patterns=["*.jsonl"], day_column="seen"
    )
    run(spark, tmp_path / "both", both, raw)
    rows = spark.read.format("delta").load(str(tmp_path / "both" / "bronze")).collect()
    assert [(r.day, r.seen) for r in rows] == [(19725, 1704240000000)]  # 2024-01-03, in days since 1970
    with pytest.raises(
        InputError,
        match=r'\[\'seen\'\] hold epoch milliseconds \(type timestamp\): give DatePart "unit": "ms"',
    ):
        hour = {"nodes": [{"columns": ["seen"], "ops": [{"op": "DatePart", "params": {"part": "hour"}}]}]}
        definition(tmp_path, columns, format="tsv", file_patterns=["*.tsv"], workflow=hour)
    # A workflow built in code from the definition's input schema is held to the same unit, before
    # its fit writes anything; the hour of epoch milliseconds read as seconds would be silently wrong.
    schema = definition(tmp_path, columns, format="jsonl", file_patterns=["*.jsonl"]).input_schema()
    assert schema["seen"].has(Tags.EPOCH_MS) and not schema["click"].has(Tags.EPOCH_MS)
    frame = spark.read.format("delta").load(str(tmp_path / "both" / "bronze"))
    with pytest.raises(InputError, match=r"^DatePart\(hour\) of \['seen'\]: epoch milliseconds .* unit='ms'"):
        Workflow([["seen"] >> DatePart("hour")], schema).fit(frame)
    fitted = Workflow([["seen"] >> DatePart("hour", "ms")], schema).fit(frame)
    assert fitted.schema["seen_hour"].tags == (Tags.CATEGORICAL,)  # an hour id is no event time
    assert [r.seen_hour for r in fitted.transform(frame).collect()] == [1]  # 00:00 UTC: id 1


def test_a_float_label_of_parquet_doubles_takes_1_0_and_0_0_and_quarantines_the_rest(spark, tmp_path):
    """A label column is a click whatever its rule: a pandas-made parquet file keeps it as doubles."""
    columns = [{"name": "click", "type": "float", "tags": ["label"]}, COLUMNS[1]]
    write_parquet(
        tmp_path / "raw" / "day_1" / "a.parquet",
        {"click": (pa.float64(), [1.0, 0.0, 0.5, None, 2.0]), "user_id": (pa.string(), ["u"] * 5)},
    )
    dataset = definition(tmp_path, columns, format="parquet", file_patterns=["*.parquet"])
    report = run(spark, tmp_path / "lake", dataset, tmp_path / "raw")
    assert (report["accepted"], report["rejected"]) == (2, 3)
    rejects = spark.read.format("delta").load(str(tmp_path / "lake" / "rejects")).collect()
    assert {(r.line_number, r.reason) for r in rejects} == {
        (3, ing.BAD_LABEL),
        (4, ing.BAD_LABEL),
        (5, ing.BAD_LABEL),
    }


@pytest.mark.parametrize(
    ("hour", "message"),
    [
        (None, "day_2/b.parquet has no column 'hour' (dataset shop reads it)"),
        ((pa.string(), ["7"]), "day_2/b.parquet: column 'hour' is string, not int without loss"),
    ],
)
def test_a_parquet_file_without_a_column_of_its_type_is_refused_before_any_write(
    spark, tmp_path, hour, message
):
    good = {
        "click": (pa.int32(), [1]),
        "user_id": (pa.string(), ["u"]),
        "item": (pa.string(), ["00af"]),
        "price": (pa.float64(), [1.0]),
        "hour": (pa.int32(), [7]),
        "recent": (pa.list_(pa.string()), [["a"]]),
    }
    write_parquet(tmp_path / "raw" / "day_1" / "a.parquet", good)
    bad = {k: v for k, v in good.items() if k != "hour"} | ({"hour": hour} if hour else {})
    if hour is None:  # a type refused too: the missing name is said first
        bad["click"] = (pa.string(), ["1"])
    write_parquet(tmp_path / "raw" / "day_2" / "b.parquet", bad)
    dataset = definition(tmp_path, format="parquet", file_patterns=["*.parquet"])
    with pytest.raises(InputError) as error:
        run(spark, tmp_path / "lake", dataset, tmp_path / "raw")
    assert message in str(error.value) and "\n" not in str(error.value)
    assert not (tmp_path / "lake").exists()


SOURCE_SCHEMA = (
    "click long, user_id string, item string, price double, hour int, recent array<string>, "
    "event_date date, note string"
)


def source_rows(day: datetime.date) -> list[tuple]:
    """Two good rows and four bad ones (the note: the reason and field each must get)."""
    return [
        (1, "u1", "00af", 0.5, 3, ["0001", None], day, "good"),
        (0, None, "beef", None, None, None, day, "good"),
        (3, "u3", "00af", 0.5, 3, [], day, "BAD_LABEL click"),
        (1, "u4", "0g00", 0.5, 3, [], day, "CAT_NOT_HEX item"),
        (1, "u5", "00af", float("inf"), 3, [], day, "FLOAT_NOT_NUMBER price"),
        (1, "u6", "00af", 0.5, 3, [], datetime.date(2023, 12, 31), "BAD_DAY event_date"),
    ]


def test_a_delta_table_is_read_at_a_pinned_version_validated_and_copied(spark, tmp_path):
    source = str(tmp_path / "events")
    first = spark.createDataFrame(source_rows(datetime.date(2024, 1, 4)), SOURCE_SCHEMA)
    first.coalesce(1).write.format("delta").save(source)
    fields = {"format": "delta", "table": source, "day_column": "event_date", "day_origin": "2024-01-01"}
    latest = definition(tmp_path, **fields)
    lake = tmp_path / "lake"
    report = run(spark, lake, latest)

    assert report["source"] == {"table": source, "version": 0}
    assert (report["lines_read"], report["accepted"], report["rejected"]) == (6, 2, 4)
    bronze, rejects = tables(spark, lake)
    (data_file,) = {name for name, _ in [*bronze, *rejects]}
    assert data_file.startswith(f"{source}@v0/") and data_file.endswith(".parquet")
    notes = [note for *_, note in first.collect()]
    assert {line: reason for (_, line), reason in rejects.items()} == {
        n + 1: tuple(note.split()) for n, note in enumerate(notes) if note != "good"
    }
    assert bronze == {
        (data_file, 1): (3, 1, "u1", "00af", 0.5, 3, ["0001"]),
        (data_file, 2): (3, 0, None, "beef", None, None, None),
    }
    commit = DeltaTable.forPath(spark, str(lake / "bronze")).history(1).first()
    assert json.loads(commit["userMetadata"])["source"] == {"table": source, "version": 0}

    # retrain's ingest of a day the source does not hold yet is refused before any write.
    layout, dataset = PipelineLayout(tmp_path), str(tmp_path / "dataset.json")
    record = RetrainRecord.load(layout.retrain(5) / "record.json")
    with pytest.raises(InputError, match=r"events holds no rows of days \[5\] at its version 0 \(event_date"):
        ingest_day(spark, layout, 5, dataset, record)
    assert DeltaTable.forPath(spark, str(lake / "bronze")).history().count() == 1

    # The source grows; retrain's ingest of day 5 at its latest version reads day 5's rows and the
    # dayless one, and replaces only those: day 3's rows keep version 0's lineage.
    more = spark.createDataFrame(source_rows(datetime.date(2024, 1, 6))[:2], SOURCE_SCHEMA)
    more.coalesce(1).write.format("delta").mode("append").save(source)
    report = ingest_day(spark, layout, 5, dataset, record)
    assert report["source"] == {"table": source, "version": 1, "days": [5]}
    assert (report["lines_read"], report["accepted"], report["rejected"]) == (3, 2, 1)
    grown, grown_rejects = tables(spark, lake)
    assert {key: row for key, row in grown.items() if row[0] == 3} == bronze
    assert sorted(day for day, *_ in grown.values()) == [3, 3, 5, 5]
    assert all(name.startswith(f"{source}@v1/") for (name, _), row in grown.items() if row[0] == 5)
    requarantined = [why for (name, _), why in grown_rejects.items() if name.startswith(f"{source}@v1/")]
    assert requarantined == [("BAD_DAY", "event_date")] and len(grown_rejects) == len(rejects)
    # A day's read skips the data files whose statistics hold neither that day nor a dayless row.
    only_day_3 = spark.createDataFrame(source_rows(datetime.date(2024, 1, 4))[:2], SOURCE_SCHEMA)
    only_day_3.coalesce(1).write.format("delta").mode("append").save(source)
    day_5 = read_fields(spark, latest, ing.find_source(spark, latest, None, [5], None)).inputFiles()
    every_file = spark.read.format("delta").load(source).inputFiles()
    assert len(every_file) == 3 and len(day_5) == 2, day_5
    with pytest.raises(InputError, match=r"events holds no rows of days \[4\] at its version 2 \(event_date"):
        ing.ingest(spark, None, str(lake / "bronze"), str(lake / "rejects"), [4, 5], dataset=latest)
    with pytest.raises(
        InputError, match=r"^--days names no day"
    ):  # `--days ,` would read the dayless rows alone
        ing.ingest(spark, None, str(lake / "bronze"), str(lake / "rejects"), [], dataset=latest)

    # A definition pinned to version 0 reads it again: the first ingest's rows, exactly.
    (tmp_path / "pinned").mkdir()
    run(spark, lake, definition(tmp_path / "pinned", **fields, version=0))
    assert tables(spark, lake) == (bronze, rejects)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ({"format": "xml", "file_patterns": ["*.xml"]}, "format 'xml' is not one of"),
        ({"format": "delta", "day_column": "d"}, "a delta source names its `table`"),
        ({"format": "delta", "table": "/t"}, "names the `day_column`"),
        ({"format": "delta", "table": "/t", "day_column": "d", "version": -1}, "`version` pins"),
        ({"format": "tsv", "file_patterns": ["*"], "day_column": "d"}, "take their day from their path"),
        ({"format": "jsonl", "file_patterns": ["*"], "day_column": "hour"}, "cannot be a column"),
        ({"format": "parquet", "file_patterns": ["*"], "day_column": "d", "day_origin": "x"}, "not a date"),
        ({"format": "jsonl", "file_patterns": ["*"], "day_column": "d", "day_origin": "20240101"}, "a date"),
        ({"format": "jsonl", "file_patterns": ["*"], "header": True}, "only tsv and csv files have one"),
        ({"format": "csv", "file_patterns": ["*"], "quote": "''"}, "`quote` is one character"),
        ({"format": "tsv", "file_patterns": "*.tsv"}, 'file_patterns is a JSON list, not "*.tsv"'),
    ],
)
def test_a_definition_whose_source_fields_do_not_fit_its_format_is_refused_at_load(tmp_path, source, message):
    with pytest.raises(InputError, match="^dataset shop: ") as error:
        definition(tmp_path, **source)
    assert message in str(error.value)


def test_a_raw_column_named_as_a_rejects_column_is_refused_before_any_read(spark, tmp_path):
    path = tmp_path / "dataset.json"
    named = [*COLUMNS, {"name": "reason", "type": "string", "tags": ["categorical"]}]
    path.write_text(json.dumps({"name": "shop", "columns": named, "format": "tsv", "file_patterns": ["*"]}))
    with pytest.raises(InputError, match=r"raw columns may not be named \['reason'\]"):
        ing.validate(spark.range(1), load_dataset(str(path)))


def test_a_column_named_twice_is_refused_at_load(tmp_path):
    path = tmp_path / "dataset.json"
    path.write_text(json.dumps({"name": "shop", "columns": [*COLUMNS, COLUMNS[1]], "format": "tsv"}))
    with pytest.raises(InputError, match="^dataset shop: columns ") as error:
        load_dataset(str(path))
    assert f"['{COLUMNS[1]['name']}'] are named twice" in str(error.value)


@pytest.mark.parametrize(
    "name, refusal",
    [
        ("dwell.sec", "columns \\['dwell.sec'\\] have names bronze cannot hold: leave out spaces"),
        ("user id", "columns \\['user id'\\] have names bronze cannot hold"),
        ("event-time", "workflow outputs \\['event-time'\\]: feature columns need names of letters"),
        ("class", "workflow outputs \\['class'\\]: feature columns need names of letters"),
        ("_hidden", "workflow outputs \\['_hidden'\\]: feature columns need names of letters"),
    ],
)
def test_a_column_named_as_bronze_or_training_cannot_take_is_refused_at_load(tmp_path, name, refusal):
    """`dwell.sec` stopped ingest with Spark's trace; `event-time` or `class` passed ingest and featurize
    and stopped train with Petastorm's (it reads a batch's columns as a named tuple's fields). A raw
    column no feature is made of may have such a name, and a feature any identifier (catégorie)."""
    renamed = [*COLUMNS[:3], {**COLUMNS[3], "name": name}, *COLUMNS[4:]]
    workflow = {"nodes": [{"columns": [name], "ops": [{"op": "Normalize"}]}]}
    with pytest.raises(InputError, match=f"^dataset shop: {refusal}"):
        definition(tmp_path, renamed, format="tsv", file_patterns=["*"], workflow=workflow)
    if "." not in name and " " not in name:
        assert name in definition(tmp_path, renamed, format="tsv", file_patterns=["*"]).names
    accented = [*COLUMNS[:3], {**COLUMNS[3], "name": "catégorie"}, *COLUMNS[4:]]
    features = {"nodes": [{"columns": ["catégorie"], "ops": [{"op": "Normalize"}]}]}
    assert definition(tmp_path, accented, format="tsv", file_patterns=["*"], workflow=features).names


def test_a_list_column_of_delimited_text_without_its_separator_and_a_file_without_columns_are_refused_at_load(
    tmp_path,
):
    unsplit = {k: v for k, v in COLUMNS[-1].items() if k != "list_separator"}
    columns = [*COLUMNS[:-1], unsplit]
    path = tmp_path / "dataset.json"
    path.write_text(json.dumps({"name": "shop", "columns": columns, "format": "csv", "file_patterns": ["*"]}))
    with pytest.raises(InputError, match=r"^dataset shop: list columns \['recent'\] read from csv need"):
        load_dataset(str(path))
    path.write_text(json.dumps({"name": "counts", "rows": 10}))
    with pytest.raises(InputError, match=r"lacks the key 'columns': is it a definition\?$"):
        load_dataset(str(path))


def test_a_misspelt_key_is_refused_at_load_naming_the_key_meant(tmp_path):
    path = tmp_path / "dataset.json"
    source = {"format": "csv", "file_patterns": ["*"], "quote": '"'}
    path.write_text(json.dumps({"name": "shop", "columns": COLUMNS, **source, "multiLine": True}))
    with pytest.raises(
        InputError, match=r"^dataset shop: unknown key 'multiLine': did you mean 'multiline'\?$"
    ):
        load_dataset(str(path))
    columns = [{**COLUMNS[0], "tpye": "int"}, *COLUMNS[1:]]
    path.write_text(json.dumps({"name": "shop", "columns": columns, **source, "_comment": "kept"}))
    with pytest.raises(
        InputError, match=r"^dataset shop, column click: unknown key 'tpye': did you mean 'type'\?$"
    ):
        load_dataset(str(path))
    path.write_text(
        json.dumps({"name": "shop", "columns": COLUMNS, **source, "multiline": True, "quote": "\u00ab"})
    )
    with pytest.raises(
        InputError, match=r"^dataset shop: a `multiline` definition's quote is an ASCII character$"
    ):
        load_dataset(str(path))


def test_a_text_column_tagged_continuous_is_refused_at_load(tmp_path):
    """featurize once ended in a trace (greatest(genre, 0)) computing with such a column."""
    columns = [*COLUMNS, {"name": "genre", "type": "string", "tags": ["continuous"]}]
    path = tmp_path / "dataset.json"
    path.write_text(json.dumps({"name": "shop", "columns": columns, "format": "tsv", "file_patterns": ["*"]}))
    with pytest.raises(
        InputError, match=r"^dataset shop: columns \['genre'\] are tagged continuous but are not"
    ):
        load_dataset(str(path))


def test_an_unknown_rule_or_alphabet_and_a_text_label_are_refused_at_load(tmp_path):
    columns = [{**COLUMNS[0], "rule": "bool"}, *COLUMNS[1:]]
    path = tmp_path / "dataset.json"
    path.write_text(json.dumps({"name": "shop", "columns": columns, "format": "tsv", "file_patterns": ["*"]}))
    with pytest.raises(
        InputError, match=r"^dataset shop: column click: unknown rule 'bool' \(known: \['binary'\]\)$"
    ):
        load_dataset(str(path))
    base32 = [*COLUMNS, {"name": "code", "type": "string", "alphabet": "base32", "tags": ["categorical"]}]
    path.write_text(json.dumps({"name": "shop", "columns": base32, "format": "tsv", "file_patterns": ["*"]}))
    with pytest.raises(
        InputError, match=r"^dataset shop: column code: unknown alphabet 'base32' \(known: \['hex'\]\)$"
    ):
        load_dataset(str(path))
    text_label = [{"name": "click", "type": "string", "tags": ["label"]}, *COLUMNS[1:]]
    path.write_text(
        json.dumps({"name": "shop", "columns": text_label, "format": "tsv", "file_patterns": ["*"]})
    )
    with pytest.raises(
        InputError, match=r"^dataset shop: the label click is a click, 0 or 1: declare its type int or long"
    ):
        load_dataset(str(path))


@pytest.mark.parametrize(
    ("node", "message"),
    [
        (
            {"columns": ["item"], "ops": [{"op": "Categorfy"}]},
            "workflow node 1: unknown op 'Categorfy' (known: ",
        ),
        (
            {"columns": ["item"], "ops": [{"op": "Categorify", "params": {"freq_treshold": 3}}]},
            "workflow node 1: Categorify got an unexpected keyword argument 'freq_treshold'",
        ),
        ({"columns": ["itme"], "ops": [{"op": "Categorify"}]}, "reads columns ['itme'] that no column"),
        (
            {"tags": ["continous"], "ops": [{"op": "Normalize"}]},
            "selects no column (no column has its tags ['continous'])",
        ),
        ({"columns": ["item"]}, "workflow node 1 has no ops"),
        (
            {"columns": ["item"], "ops": [{"op": "Categorify", "params": {"vocabulary_of": "sku"}}]},
            "uses the vocabulary of 'sku', but no node fits one",
        ),
        (
            {"columns": ["price"], "ops": [{"op": "FillMissing", "params": {"value": "zero"}}]},
            "workflow node 1: FillMissing param value='zero' is not a float",
        ),
        (
            {"columns": ["item"], "ops": [{"op": "Categorify", "params": {"freq_threshold": True}}]},
            "workflow node 1: Categorify param freq_threshold=True is not an int",
        ),
        (
            {"columns": ["price"], "ops": [{"op": "Clip", "params": {"min": "0"}}]},
            "workflow node 1: Clip param min='0' is not a float or None",
        ),
        (
            {"columns": ["item"], "ops": [{"op": "TargetEncoding", "params": {"target": 1}}]},
            "workflow node 1: TargetEncoding param target=1 is not a string",
        ),
        (
            {"columns": ["item"], "ops": [{"op": "TargetEncoding", "params": {"target": "clicked"}}]},
            "workflow node 1: TargetEncoding reads ['clicked'], which no column or earlier node makes",
        ),
        # Values Spark would fail on mid-featurize (a division or a modulo by 0), or turn into ids
        # outside the op's cardinality.
        (
            {"columns": ["item"], "ops": [{"op": "TargetEncoding", "params": {"smoothing": 0}}]},
            "workflow node 1: TargetEncoding param smoothing=0 must be above 0",
        ),
        (
            {"columns": ["item"], "ops": [{"op": "TargetEncoding", "params": {"folds": 0}}]},
            "workflow node 1: TargetEncoding param folds=0 must be 2 or more",
        ),
        (
            {"columns": ["item"], "ops": [{"op": "HashBucket", "params": {"buckets": 0}}]},
            "workflow node 1: HashBucket param buckets=0 must be 1 or more",
        ),
        (
            {"columns": ["user_id", "hour"], "ops": [{"op": "Cross", "params": {"buckets": -3}}]},
            "workflow node 1: Cross param buckets=-3 must be 1 or more",
        ),
        (
            {"columns": ["recent"], "ops": [{"op": "ListCategorify", "params": {"max_length": -1}}]},
            "workflow node 1: ListCategorify param max_length=-1 must be 1 or more",
        ),
        (
            {"columns": ["price"], "ops": [{"op": "Clip", "params": {"min": 5, "max": 1}}]},
            "workflow node 1: Clip param min=5 is above max=1",
        ),
        # Entries of the wrong JSON kind.
        ({"columns": ["item"], "ops": ["Normalize"]}, "is malformed"),
        ({"columns": ["item"], "ops": [{"op": "Normalize", "params": None}]}, "is malformed"),
    ],
)
def test_a_workflow_naming_what_does_not_exist_is_refused_at_load(tmp_path, node, message):
    with pytest.raises(InputError, match="^dataset (definition |shop: )") as error:
        definition(tmp_path, format="tsv", file_patterns=["*.tsv"], workflow={"nodes": [node]})
    assert message in str(error.value) and "\n" not in str(error.value)
    # A node may read what an earlier node makes.
    crossed = {"columns": ["user_id", "hour"], "ops": [{"op": "Cross", "params": {"buckets": 10}}]}
    later = {"columns": ["user_id_x_hour"], "ops": [{"op": "Categorify"}]}
    # Target encoding reads the label, and bronze's row keys as its default fold key.
    encoded = {"columns": ["item"], "ops": [{"op": "TargetEncoding", "params": {"target": "click"}}]}
    workflow = {"nodes": [crossed, later, encoded]}
    assert definition(tmp_path, format="tsv", file_patterns=["*.tsv"], workflow=workflow).name == "shop"
