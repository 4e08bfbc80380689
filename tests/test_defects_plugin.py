"""Regression tests: TargetEncoding skew between fitted and other rows, the workflow's own cache
release, and SQL string literals (file names with quotes and backslashes) in ingest's replaceWhere."""

from __future__ import annotations

import pytest
from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from rec_plugin.dataset import load_dataset
from rec_plugin.ops import Categorify, TargetEncoding
from rec_plugin.schema import DAY, Tags
from rec_plugin.templates import sql_literal
from rec_plugin.workflow import Workflow
from spark_jobs import ingest as ing
from spark_jobs.featurize import featurize
from spark_jobs.raw_formats import Source
from tests.test_ingest import line

CRITEO = load_dataset("criteo")

FOLD_KEY = ["source_file", "line_number"]


@pytest.fixture()
def keyed(spark: SparkSession) -> DataFrame:
    """60 labelled rows with their fold key and a row id that is not part of it."""
    rows = [(i, "f", i, "abc"[i % 3], int(i % 3 == 0 or i % 5 == 0)) for i in range(60)]
    return spark.createDataFrame(rows, "row int, source_file string, line_number int, c string, label int")


def test_target_encoding_is_out_of_fold_only_for_rows_marked_as_fitted(spark, keyed):
    encoding = TargetEncoding(folds=3, smoothing=2.0)
    workflow = Workflow([["c"] >> encoding, "row"]).fit(keyed)
    all_folds = {r.row: r.TE_c for r in workflow.transform(keyed.drop(*FOLD_KEY)).collect()}

    unmarked = {r.row: r.TE_c for r in workflow.transform(keyed).collect()}
    assert unmarked == all_folds, "rows not marked as fitted get what serving computes, fold key or not"

    marked = {r.row: r.TE_c for r in workflow.transform(keyed, fitted_rows=F.col("row") < 30).collect()}
    data = keyed.withColumn("fold", F.pmod(F.xxhash64(*FOLD_KEY), F.lit(3))).toPandas()
    prior = data["label"].mean()
    for _, row in data[data["row"] < 30].iterrows():
        others = data[(data["c"] == row["c"]) & (data["fold"] != row["fold"])]
        expected = (others["label"].sum() + 2.0 * prior) / (len(others) + 2.0)
        assert marked[row["row"]] == pytest.approx(expected, abs=1e-6)
    assert any(marked[r] != all_folds[r] for r in range(30)), "out-of-fold values differ from all folds"
    assert {r: marked[r] for r in range(30, 60)} == {r: all_folds[r] for r in range(30, 60)}


def _is_cached(frame: DataFrame) -> bool:
    """Whether the session's cache holds `frame`'s plan (Spark's own lookup, unlike `is_cached`, a flag
    of the Python object that another object's unpersist or clearCache never resets)."""
    return frame.storageLevel != StorageLevel(False, False, False, False, 1)


def test_workflow_release_unpersists_what_fit_persisted_and_nothing_else(spark, keyed):
    users = spark.range(10).withColumnRenamed("id", "user")
    users.createOrReplaceTempView("defects_users")
    spark.catalog.cacheTable("defects_users")
    try:
        graph = [["c"] >> Categorify(), ["c"] >> TargetEncoding(folds=2), "row"]
        workflow = Workflow(graph).fit(keyed)
        fit_queries = workflow.fit_queries(keyed)
        assert len(fit_queries) == 2 and all(_is_cached(q) for q in fit_queries)

        workflow.release()
        assert not any(_is_cached(q) for q in fit_queries)
        assert spark.catalog.isCached("defects_users")
        assert workflow.transform(keyed).count() == 60, "the states still work, read from their source"
    finally:
        spark.catalog.uncacheTable("defects_users")


def _bronze_row(day: int, i: int) -> tuple:
    dense = [i % 7, None, *range(11)]
    categorical = [f"{(i * k) % 5:08x}" for k in range(1, len(CRITEO.tagged(Tags.CATEGORICAL)) + 1)]
    return (day, i % 2, *dense, *categorical, f"day_{day}/part.tsv", i + 1)


def test_featurize_keeps_the_sessions_other_caches(spark, tmp_path):
    bronze = str(tmp_path / "bronze")
    rows = [_bronze_row(day, i) for day in (0, 1) for i in range(20)]
    spark.createDataFrame(rows, CRITEO.bronze_schema()).write.format("delta").partitionBy(DAY).save(bronze)
    users = spark.range(10).withColumnRenamed("id", "user")
    users.createOrReplaceTempView("defects_notebook_frame")
    spark.catalog.cacheTable("defects_notebook_frame")
    try:
        workflow_path = str(tmp_path / "workflow")
        splits = {"train": [0], "valid": [1], "test": []}
        report = featurize(spark, bronze, str(tmp_path / "features"), workflow_path, splits, freq_threshold=1)
        assert report["rows_out"] == 40
        assert spark.catalog.isCached("defects_notebook_frame"), "featurize released a cache it does not own"
        bronze_v0 = spark.read.format("delta").option("versionAsOf", 0).load(bronze)
        training_rows = bronze_v0.where(F.col(DAY).isin(splits["train"]))
        fit_queries = Workflow.load(workflow_path, spark).fit_queries(training_rows)
        assert fit_queries and not any(_is_cached(q) for q in fit_queries), "fit's own cache was released"
    finally:
        spark.catalog.uncacheTable("defects_notebook_frame")


LITERALS = ["it's", "a\\b", "it\\'s", "''", "\\", "end\\", "\\u0041 \\n", "ünï 😀 '\\'"]


@pytest.mark.parametrize("text", LITERALS)
def test_sql_literal_round_trips_through_spark_sql(spark, text):
    assert spark.sql("SELECT " + sql_literal(text) + " AS v").first().v == text


def test_reingest_of_a_file_named_with_a_quote_and_a_backslash_replaces_its_rows(spark, tmp_path):
    raw = tmp_path / "raw"
    name = "day_0/it's\\x[1].tsv"
    (raw / "day_0").mkdir(parents=True)
    (raw / name).write_bytes(line() + b"\n" + line(label="0") + b"\n")
    bronze, rejects = str(tmp_path / "bronze"), str(tmp_path / "rejects")

    first = ing.ingest(spark, str(raw), bronze, rejects)
    again = ing.ingest(spark, str(raw), bronze, rejects)

    assert (first["accepted"], again["accepted"]) == (2, 2)
    rows = spark.read.format("delta").load(bronze).select("source_file", "line_number").collect()
    assert sorted(rows) == [(name, 1), (name, 2)]
    assert again["bronze_version"] == first["bronze_version"] + 1


def test_replace_files_replaces_rows_of_names_with_quotes_and_backslashes(spark, tmp_path):
    names = {"day_0/it's\\x.tsv": 0, "day_0/a\\'b''.tsv": 0}
    rows = [_bronze_row(0, i) for i in range(4)]
    frame = spark.createDataFrame(
        [(*r[:-2], name, r[-1]) for r in rows for name in names], CRITEO.bronze_schema()
    )
    table = str(tmp_path / "bronze")
    source = Source(root="raw", files=names)
    ing._replace_rows(frame, table, source, [DAY], "test")
    ing._replace_rows(frame, table, source, [DAY], "test")

    written = spark.read.format("delta").load(table).groupBy("source_file").count().collect()
    assert dict(written) == {name: 4 for name in names}
