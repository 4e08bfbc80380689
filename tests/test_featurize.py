"""The featurize job on the default data: outputs, lineage, GPU eligibility and an independent check."""

from __future__ import annotations

import json

import duckdb
import numpy as np
import pytest
from pyspark.sql import functions as F

from rec_plugin.gpu import gpu_plan
from rec_plugin.schema import CATEGORICAL, DAY, DENSE, LABEL
from rec_plugin.workflow import Workflow
from spark_jobs.featurize import featurize

SPLITS = {"train": [0, 1], "valid": [2], "test": [3]}
# Operators allowed off the GPU, with the reason; empty: every operator of fit and transform is eligible.
ALLOWED_OFF_GPU: dict[str, str] = {}


@pytest.fixture(scope="module")
def featurized(spark, default_bronze, tmp_path_factory):
    bronze, _ = default_bronze
    out = tmp_path_factory.mktemp("features")
    report = featurize(spark, bronze, str(out / "features"), str(out / "workflow"), SPLITS)
    return out, report


def test_features_table_holds_what_training_consumes(spark, featurized, default_bronze):
    out, report = featurized
    _, ingested = default_bronze
    features = spark.read.format("delta").load(str(out / "features"))
    assert report["rows_out"] == ingested["accepted"] == features.count()
    types = dict(features.dtypes)
    assert types[LABEL] == "float" and {types[c] for c in DENSE} == {"float"}
    assert {types[c] for c in CATEGORICAL} == {"int"}
    assert {
        r.split: sorted(r.days)
        for r in features.groupBy("split").agg(F.collect_set(DAY).alias("days")).collect()
    } == {"train": [0, 1], "valid": [2], "test": [3]}
    saved = json.loads((out / "workflow" / "features.json").read_text())
    assert saved["bronze_version"] == report["bronze_version"] == 0
    max_ids = features.agg(*[F.max(c).alias(c) for c in CATEGORICAL]).first()
    assert all(saved["cardinalities"][c] == max_ids[c] + 1 for c in CATEGORICAL)
    assert report["gpu_eligible_fraction"] == 1.0


def test_rerun_at_the_pinned_version_reproduces_the_features(spark, featurized, default_bronze, tmp_path):
    out, report = featurized
    bronze, _ = default_bronze
    again = featurize(
        spark, bronze, str(tmp_path / "f"), str(tmp_path / "w"), SPLITS, report["bronze_version"]
    )
    first = spark.read.format("delta").load(str(out / "features"))
    second = spark.read.format("delta").load(str(tmp_path / "f"))
    assert again["rows_out"] == report["rows_out"]
    assert first.exceptAll(second).count() == 0 and second.exceptAll(first).count() == 0


def test_fit_and_transform_plans_run_on_the_gpu_under_rapids(spark, featurized, default_bronze):
    out, _ = featurized
    bronze = spark.read.format("delta").load(default_bronze[0])
    workflow = Workflow.load(spark, str(out / "workflow"))
    plans = [
        *workflow.fit_queries(bronze.where(F.col(DAY).isin(SPLITS["train"]))),
        workflow.transform(bronze),
    ]
    for plan in plans:
        report = gpu_plan(plan)
        assert report.on_gpu, "the explain output was parsed"
        unexpected = [(name, why) for name, why in report.not_on_gpu if name not in ALLOWED_OFF_GPU]
        assert unexpected == [], report.text


def test_parity_with_an_independent_duckdb_implementation(spark, featurized, default_bronze):
    out, _ = featurized
    bronze = spark.read.format("delta").load(default_bronze[0])
    keys = ["day", "source_file", "line_number"]
    ours = Workflow.load(spark, str(out / "workflow")).transform(bronze, keep=tuple(keys)).toPandas()
    theirs = duckdb_features(bronze.toPandas(), SPLITS["train"], threshold=15)
    ours, theirs = (f.sort_values(keys).reset_index(drop=True) for f in (ours, theirs))
    assert len(ours) == len(theirs) == bronze.count()
    for c in CATEGORICAL:
        assert (ours[c].to_numpy() == theirs[c].to_numpy()).all(), c
    for c in DENSE:
        assert np.abs(ours[c].to_numpy(np.float64) - theirs[c].to_numpy()).max() <= 1e-6, c


def duckdb_features(bronze, train_days: list[int], threshold: int):
    """The Criteo workflow written again in plain SQL, from its definition, for DuckDB."""
    con = duckdb.connect()
    con.register("bronze", bronze)
    train = f"(SELECT * FROM bronze WHERE day IN ({', '.join(map(str, train_days))}))"
    logged = {c: f"ln(1 + greatest(coalesce({c}, 0), 0))" for c in DENSE}
    stats = ", ".join(f"avg({x}) AS m_{c}, stddev_pop({x}) AS s_{c}" for c, x in logged.items())
    vocabularies = ",\n".join(
        f"""v_{c} AS (SELECT value, row_number() OVER (ORDER BY n DESC, value ASC) AS id
             FROM (SELECT {c} AS value, count(*) AS n FROM {train} WHERE {c} IS NOT NULL
                   GROUP BY {c} HAVING count(*) >= {threshold}))"""
        for c in CATEGORICAL
    )
    dense = ", ".join(f"({x} - stats.m_{c}) / stats.s_{c} AS {c}" for c, x in logged.items())
    ids = ", ".join(f"coalesce(v_{c}.id, 0) AS {c}" for c in CATEGORICAL)
    joins = " ".join(f"LEFT JOIN v_{c} ON b.{c} = v_{c}.value" for c in CATEGORICAL)
    query = f"""WITH stats AS (SELECT {stats} FROM {train}), {vocabularies}
        SELECT b.day, b.source_file, b.line_number, {dense}, {ids}
        FROM bronze b CROSS JOIN stats {joins}"""
    return con.sql(query).df()
