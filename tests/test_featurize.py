"""The featurize job on the default data: outputs, lineage, GPU eligibility and an independent check."""

from __future__ import annotations

import json

import duckdb
import numpy as np
import polars as pl
import pytest
from conftest import SPLITS
from delta.tables import DeltaTable
from pyspark.sql import functions as F
from reference import duckdb_features_sql, polars_features

from rec_plugin import storage
from rec_plugin.dataset import load_dataset
from rec_plugin.errors import InputError
from rec_plugin.features_description import FeaturesDescription
from rec_plugin.gpu import gpu_plan
from rec_plugin.ops.categorify import BROADCAST_MAX_VALUES
from rec_plugin.schema import DAY, ROW_KEY_STATISTICS, Schema, Tags
from rec_plugin.workflow import Workflow
from spark_jobs.featurize import featurize
from spark_jobs.session import session_conf

CRITEO = load_dataset("criteo")
DENSE, CATEGORICAL = CRITEO.tagged(Tags.CONTINUOUS), CRITEO.tagged(Tags.CATEGORICAL)


# Operators allowed off the GPU, with the reason; empty: every operator of fit and transform is eligible.
ALLOWED_OFF_GPU: dict[str, str] = {}


@pytest.fixture(scope="module")
def featurized(default_features):
    return default_features


def test_features_table_holds_what_training_consumes(spark, featurized, default_bronze):
    out, report = featurized
    _, ingested = default_bronze
    features = spark.read.format("delta").load(str(out / "features"))
    assert report["rows_out"] == ingested["accepted"] == features.count()
    types = dict(features.dtypes)
    assert types[CRITEO.label] == "float" and {types[c] for c in DENSE} == {"float"}
    assert {types[c] for c in CATEGORICAL} == {"int"}
    assert {
        r.split: sorted(r.days)
        for r in features.groupBy("split").agg(F.collect_set(DAY).alias("days")).collect()
    } == {"train": [0, 1], "valid": [2], "test": [3]}
    described = FeaturesDescription.load(spark, str(out / "workflow"))
    assert described.bronze_version == report["bronze_version"] == 0
    assert (described.version, described.rows) == (report["features_version"], report["rows_out"])
    schema = Workflow.load_schema(str(out / "workflow"), spark)
    assert schema.names == [*DENSE, *CATEGORICAL, CRITEO.label]
    assert schema.continuous.names == DENSE and schema.categorical.names == CATEGORICAL
    max_ids = features.agg(*[F.max(c).alias(c) for c in CATEGORICAL]).first()
    assert all(schema[c].cardinality == max_ids[c] + 1 for c in CATEGORICAL)
    # Every vocabulary is pinned to the Delta version it was fitted with.
    assert {schema[c].vocabulary.version for c in CATEGORICAL} == {0}
    # ... and the features table's commit records that schema.
    commit = DeltaTable.forPath(spark, str(out / "features")).history(1).first()
    assert Schema.from_json(json.dumps(json.loads(commit["userMetadata"])["schema"])) == schema
    assert report["gpu_eligible_fraction"] == 1.0
    detail = DeltaTable.forPath(spark, str(out / "features")).detail().first()
    assert detail["properties"] == ROW_KEY_STATISTICS


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
    # Again into the same folders: the fit is kept (a refit would pin new vocabulary versions that no
    # model trained on these finds), and the features are written again, the same.
    fitted = Workflow.load_schema(str(tmp_path / "w"), spark)
    featurize(spark, bronze, str(tmp_path / "f"), str(tmp_path / "w"), SPLITS, report["bronze_version"])
    assert Workflow.load_schema(str(tmp_path / "w"), spark) == fitted
    assert Workflow.version_of(str(tmp_path / "w"), fitted, spark) == 1
    third = spark.read.format("delta").load(str(tmp_path / "f"))
    assert storage.delta_version(spark, str(tmp_path / "f"), "features table") == 1
    assert first.exceptAll(third).count() == 0 and third.exceptAll(first).count() == 0


def test_fit_and_transform_plans_run_on_the_gpu_under_rapids(spark, featurized, default_bronze):
    out, _ = featurized
    bronze = spark.read.format("delta").load(default_bronze[0])
    workflow = Workflow.load(str(out / "workflow"))
    # Vocabularies joined by broadcast, and all of them by shuffle (as above BROADCAST_MAX_VALUES).
    with session_conf(spark, {BROADCAST_MAX_VALUES: "0"}):
        shuffled = workflow.transform(bronze)
    assert "ShuffledHashJoin" in shuffled._jdf.queryExecution().executedPlan().toString()
    plans = [
        *workflow.fit_queries(bronze.where(F.col(DAY).isin(SPLITS["train"]))),
        workflow.transform(bronze),
        shuffled,
    ]
    for plan in plans:
        report = gpu_plan(plan)
        assert report.on_gpu, "the explain output was parsed"
        unexpected = [(name, why) for name, why in report.not_on_gpu if name not in ALLOWED_OFF_GPU]
        assert unexpected == [], report.text


def test_parity_with_independent_duckdb_and_polars_implementations(spark, featurized, default_bronze):
    out, _ = featurized
    bronze = spark.read.format("delta").load(default_bronze[0])
    keys = ["day", "source_file", "line_number"]
    ours = Workflow.load(str(out / "workflow")).transform(bronze, keep=tuple(keys)).toPandas()
    raw = bronze.toPandas()
    con = duckdb.connect()
    con.register("bronze", raw)
    by_duckdb = con.sql(duckdb_features_sql("bronze", SPLITS["train"], threshold=15)).df()
    by_polars = (
        polars_features(pl.from_pandas(raw).lazy(), SPLITS["train"], threshold=15).collect().to_pandas()
    )
    ours = ours.sort_values(keys).reset_index(drop=True)
    for theirs in (by_duckdb, by_polars):
        theirs = theirs.sort_values(keys).reset_index(drop=True)
        assert len(ours) == len(theirs) == bronze.count()
        for c in CATEGORICAL:
            assert (ours[c].to_numpy() == theirs[c].to_numpy()).all(), c
        for c in DENSE:
            assert np.abs(ours[c].to_numpy(np.float64) - theirs[c].to_numpy(np.float64)).max() <= 1e-6, c


def test_another_datasets_definition_is_refused_before_fitting(spark, default_bronze, tmp_path):
    bronze, _ = default_bronze
    out = tmp_path / "out"
    lacks = r"lacks dataset ecommerce's columns \['click', 'user_id', 'item_id'\] \.\.\. "
    with pytest.raises(InputError, match=lacks):
        featurize(spark, bronze, str(out / "features"), str(out / "workflow"), SPLITS, dataset="ecommerce")
    assert not out.exists()


def test_a_featurize_failing_after_its_fit_leaves_no_workflow_folder(spark, default_bronze, tmp_path):
    """Past its fit (its features path lies under a file here), a failed featurize removes the new
    workflow folder as it removes the new features table: no half-made workflow is left to load."""
    bronze, _ = default_bronze
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(Exception, match="a_file") as failure:
        featurize(spark, bronze, str(blocker / "features"), str(tmp_path / "workflow"), SPLITS)
    assert not isinstance(failure.value, InputError)  # it failed writing, not in the checks before the fit
    assert not (tmp_path / "workflow").exists()
