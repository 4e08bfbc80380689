"""Ingest: every raw line lands in bronze or rejects with a reason; reruns add nothing."""

from __future__ import annotations

import gzip
import json
import shutil
from collections import Counter
from pathlib import Path

import pytest
from delta.tables import DeltaTable
from pyspark.sql import functions as F

from rec_plugin import storage
from rec_plugin.dataset import load_dataset
from rec_plugin.errors import EXIT_INPUT_ERROR, InputError, run_command
from rec_plugin.schema import LINE_NUMBER, ROW_KEY_STATISTICS, SOURCE_FILE
from spark_jobs import ingest as ing
from spark_jobs.layout import GeneratedData

CRITEO = load_dataset("criteo")
GOOD = ["1", *[str(i) for i in range(1, 14)], *[f"{i:08x}" for i in range(1, 27)]]


def line(**changes: str) -> bytes:
    fields = dict(zip(CRITEO.names, GOOD))
    fields.update(changes)
    return "\t".join(fields.values()).encode()


# (raw bytes of the line, the reason code it must get, the field it must name); None = accepted.
CASES = [
    (line(), None, None),
    (b"", ing.EMPTY_LINE, None),
    (line().replace(b"00000003", b"0000\xff\xfe00"), ing.BAD_BYTES, None),
    (b"\t".join(line().split(b"\t")[:-1]), ing.FIELD_COUNT, None),
    (line() + b"\t", ing.FIELD_COUNT, None),
    (b"   ", ing.FIELD_COUNT, None),
    (line(label="2"), ing.BAD_LABEL, "label"),
    (line(label=""), ing.BAD_LABEL, "label"),
    (line(I3="abc"), ing.INT_NOT_INTEGER, "I3"),
    (line(I5="1.5"), ing.INT_NOT_INTEGER, "I5"),
    (line(I4="99999999999"), ing.INT_OUT_OF_RANGE, "I4"),
    (line(C5="abc"), ing.CAT_BAD_LENGTH, "C5"),
    (line(C6="zzzzzzzz"), ing.CAT_NOT_HEX, "C6"),
    (line(C7="ABCDEF12"), ing.CAT_NOT_HEX, "C7"),
    (line(I2="5\r3"), ing.INT_NOT_INTEGER, "I2"),
    (line(I1="", C26=""), None, None),
    (line(I2="-3", I7="0042"), None, None),
    (line() + b"\r", None, None),  # a CRLF line: the carriage return ends the line
    (line() + b"\xc3\r", ing.BAD_BYTES, None),  # a stray byte before a CRLF line's end
    # Valid rows pass one check per group of int or token columns; these fail it and must still get
    # the reason a field-by-field check gives, for the first field in the definition's order.
    (line(I3="1-2"), ing.INT_NOT_INTEGER, "I3"),
    (line(I4="-"), ing.INT_NOT_INTEGER, "I4"),
    (line(C5="\u00e9\u00e9\u00e9\u00e9"), ing.CAT_BAD_LENGTH, "C5"),  # 8 bytes, 4 characters
    (line(I6="x", C2="abc"), ing.INT_NOT_INTEGER, "I6"),
    (line(C3="abc", C9="zzzzzzzz"), ing.CAT_BAD_LENGTH, "C3"),
    (line(I9="--1"), ing.INT_NOT_INTEGER, "I9"),
]


def write_raw(root: Path, name: str, compress: bool) -> Path:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = b"\n".join(raw for raw, _, _ in CASES) + b"\n" + line(label="0")  # no final newline
    path.write_bytes(gzip.compress(payload) if compress else payload)
    return path


@pytest.mark.parametrize("compress", [False, True])
def test_every_malformation_is_quarantined_and_counts_reconcile(spark, tmp_path, compress, capsys):
    raw = tmp_path / "raw"
    write_raw(raw, "day_5/part-00000.tsv" + (".gz" if compress else ""), compress)
    bronze, rejects = str(tmp_path / "bronze"), str(tmp_path / "rejects")
    report = ing.ingest(spark, str(raw), bronze, rejects)

    expected_rejects = {n + 1: (reason, field) for n, (_, reason, field) in enumerate(CASES) if reason}
    lines = len(CASES) + 1
    assert report["lines_read"] == lines
    assert report["rejected"] == len(expected_rejects)
    assert report["accepted"] == lines - len(expected_rejects)
    # Most of these lines are rejected: ingest warns, naming their commonest reason.
    reasons = Counter(reason for reason, _ in expected_rejects.values())
    (commonest, count), share = reasons.most_common(1)[0], len(expected_rejects) / lines
    warned = f"{share:.0%} of the {lines} lines read were rejected, mostly {commonest} ({count} lines)"
    assert f"ingest: warning: {warned}: is the dataset definition right?" in capsys.readouterr().err
    got = {
        r.line_number: (r.reason, r.reason_field) for r in spark.read.format("delta").load(rejects).collect()
    }
    assert got == expected_rejects

    accepted = {r.line_number: r for r in spark.read.format("delta").load(bronze).collect()}
    assert sorted(accepted) == [n for n in range(1, lines + 1) if n not in expected_rejects]
    first = accepted[1]
    assert (first.day, first.label, first.I1, first.I13, first.C1, first.C26) == (
        5,
        1,
        1,
        13,
        "00000001",
        "0000001a",
    )
    assert first.source_file.startswith("day_5/part-00000.tsv")
    missing = accepted[16]
    assert missing.I1 is None and missing.C26 is None
    assert (accepted[17].I2, accepted[17].I7) == (-3, 42)
    assert accepted[18].C26 == "0000001a", "the CRLF line's last field loses its carriage return"
    assert accepted[lines].label == 0


def test_reingest_replaces_a_files_rows_atomically(spark, tmp_path, capsys):
    raw = tmp_path / "raw"
    write_raw(raw, "day_1/a.tsv", False)
    write_raw(raw, "day_2/b.tsv", False)
    bronze, rejects = str(tmp_path / "bronze"), str(tmp_path / "rejects")
    ing.ingest(spark, str(raw), bronze, rejects)
    counts = spark.read.format("delta").load(bronze).count(), spark.read.format("delta").load(rejects).count()
    version = DeltaTable.forPath(spark, bronze).history(1).first()["version"]

    again = ing.ingest(spark, str(raw), bronze, rejects, days=[2])
    assert again["bronze_version"] == version + 1
    assert (
        spark.read.format("delta").load(bronze).count(),
        spark.read.format("delta").load(rejects).count(),
    ) == counts
    ing.ingest(spark, str(raw), bronze, rejects)
    assert spark.read.format("delta").load(bronze).count() == counts[0]
    # A day exported again under another file name: its old file's rows stay, said, unless the day is
    # replaced whole.
    (raw / "day_2" / "b.tsv").rename(raw / "day_2" / "b-again.tsv")
    capsys.readouterr()
    ing.ingest(spark, str(raw), bronze, rejects, days=[2])
    assert "bronze holds rows of days [2] from 1 file no longer under" in capsys.readouterr().err
    assert spark.read.format("delta").load(bronze).count() == counts[0] + again["accepted"]
    ing.ingest(spark, str(raw), bronze, rejects, days=[2], replace_days=True)
    assert "no longer under" not in capsys.readouterr().err
    for table, count in zip((bronze, rejects), counts):
        rows = spark.read.format("delta").load(table)
        assert rows.count() == count
        assert {name for (name,) in rows.select(SOURCE_FILE).distinct().collect()} == {
            "day_1/a.tsv",
            "day_2/b-again.tsv",
        }

    # Both tables keep file statistics on the row keys a rerun replaces by, and on no other column.
    for table in (bronze, rejects):
        assert DeltaTable.forPath(spark, table).detail().first()["properties"] == ROW_KEY_STATISTICS
        stats = spark.read.json(f"{table}/_delta_log/*.json").where("add IS NOT NULL").select("add.stats")
        assert {key for (text,) in stats.collect() for key in json.loads(text)["minValues"]} == {
            SOURCE_FILE,
            LINE_NUMBER,
        }


def test_an_ingest_failing_after_bronzes_commit_leaves_both_tables_as_they_were(spark, tmp_path, monkeypatch):
    """Bronze and rejects are two commits: a failure after bronze's (a rejects write that fails)
    restores bronze, so new rows never stand beside the old rows' rejects."""
    raw = tmp_path / "raw"
    write_raw(raw, "day_1/a.tsv", False)
    bronze, rejects = str(tmp_path / "bronze"), str(tmp_path / "rejects")
    ing.ingest(spark, str(raw), bronze, rejects)
    before = [sorted(map(repr, spark.read.format("delta").load(t).collect())) for t in (bronze, rejects)]
    version = DeltaTable.forPath(spark, bronze).history(1).first()["version"]
    (raw / "day_1" / "a.tsv").write_bytes(line() + b"\n" + line(I3="x") + b"\n")
    replace_rows = ing._replace_rows

    def rejects_write_fails(frame, path, *arguments):  # noqa: ANN001, ANN202 - ingest's own signature
        if path == rejects:
            raise OSError("the rejects table's store went away")
        replace_rows(frame, path, *arguments)

    monkeypatch.setattr(ing, "_replace_rows", rejects_write_fails)
    with pytest.raises(OSError, match="went away"):
        ing.ingest(spark, str(raw), bronze, rejects)
    assert [
        sorted(map(repr, spark.read.format("delta").load(t).collect())) for t in (bronze, rejects)
    ] == before
    assert DeltaTable.forPath(spark, bronze).history(1).first()["version"] == version + 2  # written, restored


def test_a_first_ingest_of_another_datasets_lines_is_refused_and_leaves_no_table(spark, tmp_path):
    raw = tmp_path / "raw"
    write_raw(raw, "day_1/a.tsv", False)
    bronze, rejects = tmp_path / "bronze", tmp_path / "rejects"
    # Criteo's lines read as the e-commerce click log: not one is valid (all would go to rejects).
    refused = rf"not one of the {len(CASES) + 1} lines read is a valid ecommerce line \(mostly FIELD_COUNT\)"
    with pytest.raises(InputError, match=refused):
        ing.ingest(spark, str(raw), str(bronze), str(rejects), dataset="ecommerce")
    assert not bronze.exists() and not rejects.exists()


def test_bronze_rows_line_up_with_the_generators_oracle(spark, default_data, default_bronze):
    root, report = default_data
    path, result = default_bronze
    assert result["lines_read"] == report["rows"] == result["accepted"] and result["rejected"] == 0
    bronze = spark.read.format("delta").load(path)
    oracle = spark.read.format("delta").load(GeneratedData(str(root)).oracle)
    joined = bronze.join(oracle, ["day", "source_file", "line_number"])
    assert joined.count() == report["rows"]
    assert joined.where(bronze.label != oracle.label).count() == 0


def test_files_under_hidden_and_underscore_folders_are_not_read(spark, tmp_path):
    """A notebook's checkpoint copy and a running or killed Spark write's _temporary files match the
    patterns and name a day: as Spark lists a table's folder, ingest skips them."""
    raw = tmp_path / "raw"
    write_raw(raw, "day_1/a.tsv", False)
    write_raw(raw, "day_1/.ipynb_checkpoints/a-checkpoint.tsv", False)
    write_raw(raw, "day_1/_temporary/0/part-00000.tsv", False)
    bronze, rejects = str(tmp_path / "bronze"), str(tmp_path / "rejects")
    report = ing.ingest(spark, str(raw), bronze, rejects)
    assert report["lines_read"] == len(CASES) + 1
    for table in (bronze, rejects):
        files = spark.read.format("delta").load(table).select(SOURCE_FILE).distinct().collect()
        assert {name for (name,) in files} == {"day_1/a.tsv"}


def test_files_without_a_day_are_a_clear_error(spark, tmp_path):
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "clicks.tsv").write_bytes(line())
    with pytest.raises(
        InputError, match="clicks.tsv has no day_<d> in its path, .* as the dataset's day_column$"
    ):
        ing.ingest(spark, str(tmp_path / "raw"), str(tmp_path / "b"), str(tmp_path / "r"))
    # Only a folder or file name that begins with day_<d> names a day.
    (tmp_path / "raw" / "clicks.tsv").unlink()
    write_raw(tmp_path / "raw", "holiday_2023/clicks.tsv", False)
    with pytest.raises(InputError, match="holiday_2023/clicks.tsv has no day_<d> in its path"):
        ing.ingest(
            spark, str(tmp_path / "raw"), str(tmp_path / "b"), str(tmp_path / "r"), patterns=["c*.tsv"]
        )
    for folder in ("day_2024-01-05", "day_3.bak"):
        write_raw(tmp_path / "raw", f"{folder}/clicks.tsv", False)
        with pytest.raises(InputError, match=f"{folder}/clicks.tsv has no day_<d> in its path"):
            ing.ingest(
                spark, str(tmp_path / "raw"), str(tmp_path / "b"), str(tmp_path / "r"), patterns=["c*.tsv"]
            )
        shutil.rmtree(tmp_path / "raw" / folder)
    write_raw(tmp_path / "raw", "holiday_2023/day_3/part-0.tsv", False)
    refusals = {
        "day_123456/part-0.tsv": "day_123456/part-0.tsv names day 123456 in its path, past the last",
        "day_1/day_2/part-0.tsv": r"day_1/day_2/part-0.tsv names days \[1, 2\] in its path: which is its day",
    }
    for path, refusal in refusals.items():
        write_raw(tmp_path / "raw", path, False)
        with pytest.raises(InputError, match=refusal):
            ing.ingest(spark, str(tmp_path / "raw"), str(tmp_path / "b"), str(tmp_path / "r"))
        shutil.rmtree(tmp_path / "raw" / path.split("/")[0])
    assert not (tmp_path / "b").exists() and not (tmp_path / "r").exists()
    ing.ingest(spark, str(tmp_path / "raw"), str(tmp_path / "b"), str(tmp_path / "r"), patterns=["part-*"])
    days = spark.read.format("delta").load(str(tmp_path / "b")).select("day").distinct().collect()
    assert [day for (day,) in days] == [3]


def test_a_first_ingest_killed_before_its_commit_is_rerun_and_a_folder_of_other_files_refused(
    spark, tmp_path
):
    """A first Delta write killed before its commit leaves its data files and no log (a table's
    folder with them is no table): the rerun writes the tables. A folder of anything else is refused."""
    raw = tmp_path / "raw"
    write_raw(raw, "day_1/a.tsv", False)
    bronze, rejects = tmp_path / "bronze", tmp_path / "rejects"
    (bronze / "day=1").mkdir(parents=True)
    data_file = "part-00026-f5381f83-8f47-427f-bdeb-0fc4ff089836-c000.snappy.parquet"  # as Delta names it
    (bronze / "day=1" / data_file).write_bytes(b"PAR1 cut short")
    (bronze / "day=1" / f".{data_file}.crc").write_bytes(b"crc")
    (rejects / "_delta_log").mkdir(parents=True)
    # A failed ingest over them leaves them as they were: its own log goes, their files stay.
    with pytest.raises(InputError, match="is --dataset right"):
        ing.ingest(spark, str(raw), str(bronze), str(rejects), dataset="ecommerce")
    assert not storage.has_commit(spark, str(bronze)) and (bronze / "day=1" / data_file).exists()
    report = ing.ingest(spark, str(raw), str(bronze), str(rejects))
    assert (report["lines_read"], report["bronze_version"]) == (len(CASES) + 1, 0)
    assert spark.read.format("delta").load(str(bronze)).count() == report["accepted"]
    assert spark.read.format("delta").load(str(rejects)).count() == report["rejected"]

    # Another writer's files (pyarrow's part-0.parquet) are no killed write: never written into.
    for folder, name in (("notes", "todo.txt"), ("export/day=1", "part-0.parquet")):
        (tmp_path / folder).mkdir(parents=True)
        (tmp_path / folder / name).write_text("not a table")
        table = str(tmp_path / folder.split("/")[0])
        with pytest.raises(InputError, match=r"^rejects table .* is not a Delta table: choose another path$"):
            ing.ingest(spark, str(raw), str(tmp_path / "b"), table)
        assert (tmp_path / folder / name).exists() and not (tmp_path / "b").exists()


def test_a_first_ingest_of_empty_files_is_refused_and_a_later_one_warned_of(spark, tmp_path, capsys):
    """Empty files made empty bronze and rejects tables at version 0 without a word, and featurize then
    said the table held no days."""
    raw, bronze, rejects = tmp_path / "raw", tmp_path / "bronze", tmp_path / "rejects"
    (raw / "day_1").mkdir(parents=True)
    (raw / "day_1" / "a.tsv").write_bytes(b"")
    (raw / "day_1" / "b.tsv.gz").write_bytes(gzip.compress(b""))
    refusal = r"^the 2 files read hold no line \(empty, or a header only\): nothing was written$"
    with pytest.raises(InputError, match=refusal):
        ing.ingest(spark, str(raw), str(bronze), str(rejects))
    assert not bronze.exists() and not rejects.exists()
    write_raw(raw, "day_2/c.tsv", False)
    assert ing.ingest(spark, str(raw), str(bronze), str(rejects), days=[2])["lines_read"] == len(CASES) + 1
    capsys.readouterr()
    assert ing.ingest(spark, str(raw), str(bronze), str(rejects), days=[1])["lines_read"] == 0
    assert "ingest: warning: the 2 files read hold no line" in capsys.readouterr().err
    # A file emptied since its ingest would take its rows with it: refused, the tables untouched.
    (raw / "day_2" / "c.tsv").write_bytes(b"")
    version = storage.delta_version(spark, str(bronze), "bronze table")
    with pytest.raises(
        InputError, match=rf"^the 1 file read holds no line .*, and would replace the {len(CASES) + 1} rows"
    ):
        ing.ingest(spark, str(raw), str(bronze), str(rejects), days=[2])
    assert storage.delta_version(spark, str(bronze), "bronze table") == version


def test_a_raw_file_spark_cannot_read_is_one_line_naming_it(spark, tmp_path, capsys):
    """A gzip cut short and a parquet file of no bytes fail inside Spark's read with a Java trace:
    ingest's command says the file and the cause in one line, and writes nothing."""
    whole = gzip.compress(b"\n".join([line()] * 2000))
    (tmp_path / "raw" / "day_1").mkdir(parents=True)
    (tmp_path / "raw" / "day_1" / "a.tsv.gz").write_bytes(whole[: len(whole) // 2])
    (tmp_path / "parquet" / "day_1").mkdir(parents=True)
    (tmp_path / "parquet" / "day_1" / "a.parquet").write_bytes(b"")
    definition = tmp_path / "clicks.json"
    columns = [{"name": "click", "type": "int", "tags": ["label"]}, {"name": "item", "type": "string"}]
    definition.write_text(
        json.dumps(
            {"name": "clicks", "format": "parquet", "file_patterns": ["*.parquet"], "columns": columns}
        )
    )
    cases = [
        (
            ["--input", str(tmp_path / "raw")],
            "day_1/a.tsv.gz cannot be read (java.io.EOFException: Unexpected end",
        ),
        (
            ["--input", str(tmp_path / "parquet"), "--dataset", str(definition)],
            "day_1/a.parquet cannot be read",
        ),
    ]
    for arguments, said in cases:
        tables = ["--bronze", str(tmp_path / "bronze"), "--rejects", str(tmp_path / "rejects")]
        with pytest.raises(SystemExit) as exited:
            run_command(ing.main, "sparkrec ingest", [*arguments, *tables])
        error = capsys.readouterr().err.strip().splitlines()[-1]
        assert exited.value.code == EXIT_INPUT_ERROR
        assert error.startswith("sparkrec ingest: error: file:/") and said in error, error
        assert "is it cut short or damaged? Replace it" in error
        assert not (tmp_path / "bronze").exists() and not (tmp_path / "rejects").exists()


def test_a_tables_source_files_come_from_its_file_statistics_and_only_unsettled_files_are_read(
    spark, tmp_path
):
    """What retrain's daily ingest asks of bronze and rejects (files_not_ingested): a data file of one
    source file, or of none, is answered by its statistics; a file of two, or of one name longer than
    the 32 characters Delta keeps, is read; a deletion vector sends the question to the whole table."""
    long_name = "clicks/" + "x" * 40 + ".jsonl"
    names = [(0, "a.tsv"), (1, "b.tsv"), (2, "c.tsv"), (2, "d.tsv"), (3, long_name), (4, None)]
    rows = [(day, name, line) for line, (day, name) in enumerate(names)]
    frame = spark.createDataFrame(rows, f"day int, {SOURCE_FILE} string, {LINE_NUMBER} long").coalesce(1)
    every_name = {"a.tsv", "b.tsv", "c.tsv", "d.tsv", long_name}
    folder = tmp_path / "a table 100%"  # a path Delta and Hadoop write encoded
    frame.write.format("delta").options(**ROW_KEY_STATISTICS).partitionBy("day").save(str(folder))
    # The files that statistics settle are gone from disk: read, they would fail the query.
    for day in (0, 1, 4):
        for data_file in (folder / f"day={day}").glob("*.parquet"):
            data_file.unlink()
    assert storage.distinct_strings(spark, str(folder), SOURCE_FILE) == every_name
    deleted = str(tmp_path / "deleted")
    with_deletions = {**ROW_KEY_STATISTICS, "delta.enableDeletionVectors": "true"}
    frame.write.format("delta").options(**with_deletions).partitionBy("day").save(deleted)
    DeltaTable.forPath(spark, deleted).delete(F.col(SOURCE_FILE) == "d.tsv")  # c.tsv's file keeps d's stats
    assert storage.distinct_strings(spark, deleted, SOURCE_FILE) == every_name - {"d.tsv"}
    with pytest.raises(InputError, match="is not a Delta table"):
        storage.distinct_strings(spark, str(tmp_path / "a table 100%" / "day=2"), SOURCE_FILE)
