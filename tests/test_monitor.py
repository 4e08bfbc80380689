"""sparkrec monitor on the default data, against its training window (days 0-1): the test day as
ingested stays quiet (exit 0, no warning), and the same day with a shift injected is flagged on exactly
the shifted fields (exit 3, one warning line each). Triton's counters come from a real tritonserver
serving two versions of a tiny click model."""

from __future__ import annotations

import json
from dataclasses import asdict, replace

import numpy as np
import pytest
import torch
import tritonclient.http as triton_http
from conftest import SPLITS
from pyspark.sql import functions as F

from rec_plugin.errors import InputError
from rec_plugin.schema import DAY, LINE_NUMBER, ROW_KEYS, Schema
from rec_plugin.workflow import Workflow
from serving.client import predict
from serving.repository import add_version
from serving.server import TritonServer
from spark_jobs.generate import ORACLE_LABEL
from spark_jobs.layout import GeneratedData
from spark_jobs.monitor import (
    AUC,
    CALIBRATION,
    EXIT_THRESHOLD_CROSSED,
    PREDICTIONS,
    TRITON,
    TRITON_MODELS,
    WARNINGS,
    Crossing,
    Thresholds,
    main,
    monitor,
    report_file,
)
from spark_jobs.score import PROBABILITY
from spark_jobs.session import session_conf
from training.metrics import auc

TEST_DAY = SPLITS["test"][0]
# The injected shift: most of a categorical column's values never seen in training, a continuous
# column ten times larger, and predictions half what the planted model says.
UNSEEN_COLUMN, SCALED_COLUMN, SCALE, PREDICTION_FACTOR = "C3", "I2", 10, 0.5
# A baseline schema as of a model trained before the vocabulary of this column grew past its first
# ids (Workflow.extend adds ids after the last): the day's larger ids are new to that model.
GROWN_COLUMN, TRAINED_CARDINALITY = "C5", 3
# Requests sent to each version of the served model.
REQUESTS = {"1": 3, "2": 2}
SERVED = "ctr"


class TinyClickModel(torch.nn.Module):
    """A click model of the served interface (dense features, ids): enough for Triton to count."""

    def forward(self, dense: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(dense.sum(1, keepdim=True) + ids.sum(1, keepdim=True).float())


@pytest.fixture(scope="module")
def schema(spark, default_features) -> Schema:
    root, _ = default_features
    return Workflow.load_schema(str(root / "workflow"), spark)


@pytest.fixture(scope="module")
def triton(schema, tmp_path_factory):
    """A tritonserver serving two versions of TinyClickModel after REQUESTS; its metrics URL."""
    repository = tmp_path_factory.mktemp("monitor_triton") / "repository"
    for _ in REQUESTS:
        add_version(repository, SERVED, torch.jit.script(TinyClickModel()), schema=schema)
    with TritonServer(repository) as server:
        client = triton_http.InferenceServerClient(server.http_url)
        client.load_model(SERVED)
        dense = np.zeros((4, len(schema.continuous)), np.float32)
        ids = np.ones((4, len(schema.categorical)), np.int64)
        for version, requests in REQUESTS.items():
            for _ in range(requests):
                predict(client, SERVED, dense, ids, version)
        client.close()
        yield server.metrics_url


@pytest.fixture(scope="module")
def lake(spark, default_data, default_bronze, tmp_path_factory) -> dict[str, str]:
    """Predictions of the test day (the planted model's true probabilities), and the shifted day: a
    bronze table of the test day with the shift injected, and its predictions."""
    root, _ = default_data
    bronze, _ = default_bronze
    out = tmp_path_factory.mktemp("monitor_lake")
    day = spark.read.format("delta").load(bronze).where(F.col(DAY) == TEST_DAY)
    never_seen = F.format_string("%08x", F.col(LINE_NUMBER) + 0x70000000)
    shifted = day.withColumns(
        {
            UNSEEN_COLUMN: F.when(F.col(LINE_NUMBER) % 10 < 9, never_seen).otherwise(F.col(UNSEEN_COLUMN)),
            SCALED_COLUMN: F.col(SCALED_COLUMN) * SCALE,
        }
    )
    shifted.write.format("delta").partitionBy(DAY).save(str(out / "shifted_bronze"))
    oracle = spark.read.format("delta").load(GeneratedData(str(root)).oracle).where(F.col(DAY) == TEST_DAY)
    truth = F.col("p_click").cast("float")
    for name, probability in (("predictions", truth), ("shifted_predictions", truth * PREDICTION_FACTOR)):
        scored = oracle.select(*ROW_KEYS, probability.alias(PROBABILITY))
        scored.write.format("delta").partitionBy(DAY).save(str(out / name))
    return {name: str(out / name) for name in ("shifted_bronze", "predictions", "shifted_predictions")}


def run_monitor(spark, argv: list[str], capsys) -> tuple[int, dict, list[str]]:
    """`sparkrec monitor` in this process: its exit status, report and warning lines. The session's
    shuffle partitions are restored after it (the command's profile sets its own)."""
    kept = {"spark.sql.shuffle.partitions": spark.conf.get("spark.sql.shuffle.partitions")}
    with session_conf(spark, kept):
        try:
            main(argv)
            status = 0
        except SystemExit as stop:
            status = stop.code
    out = argv[argv.index("--out") + 1]
    report = json.loads(report_file(out, TEST_DAY).read_text())
    assert report_file(out, TEST_DAY).with_suffix(".png").read_bytes().startswith(b"\x89PNG")
    warnings = [
        line
        for line in capsys.readouterr().err.splitlines()
        if line.startswith("sparkrec monitor: warning: ")
    ]
    return status, report, warnings


def test_an_unshifted_day_is_quiet(
    spark, default_data, default_bronze, default_features, lake, triton, tmp_path, capsys
):
    root, _ = default_data
    bronze, _ = default_bronze
    features, _ = default_features
    status, report, warnings = run_monitor(
        spark,
        ["--bronze", bronze, "--workflow", str(features / "workflow"), "--day", str(TEST_DAY),
         "--predictions", lake["predictions"], "--triton-metrics", triton, "--out", str(tmp_path)],
        capsys,
    )  # fmt: skip
    assert (status, report[WARNINGS], warnings) == (0, [], [])
    # The predictions joined to their bronze labels: the planted model's own AUC on the day, calibrated.
    oracle = spark.read.format("delta").load(GeneratedData(str(root)).oracle)
    truth = oracle.where(F.col(DAY) == TEST_DAY).toPandas()
    assert report[PREDICTIONS][AUC] == pytest.approx(auc(truth[ORACLE_LABEL], truth["p_click"]), abs=1e-3)
    assert report[PREDICTIONS][CALIBRATION] == pytest.approx(1.0, abs=0.05)
    served = report[TRITON][TRITON_MODELS][SERVED]
    assert {version: served[version]["success"] for version in served} == REQUESTS
    assert all(served[version]["mean_latency_ms"] > 0 for version in served)


def test_a_shifted_day_is_flagged_on_exactly_the_shifted_fields(
    spark, default_features, schema, lake, triton, tmp_path, capsys
):
    features, _ = default_features
    # No latency is low enough: every served version's mean latency crosses.
    strict = replace(Thresholds.load(), max_mean_latency_ms=0.0)
    thresholds = tmp_path / "thresholds.json"
    thresholds.write_text(json.dumps(asdict(strict)))
    trained = Schema(
        tuple(replace(c, cardinality=TRAINED_CARDINALITY) if c.name == GROWN_COLUMN else c for c in schema)
    )
    baseline = tmp_path / "trained_schema.json"
    baseline.write_text(trained.to_json())
    status, report, warnings = run_monitor(
        spark,
        ["--bronze", lake["shifted_bronze"], "--workflow", str(features / "workflow"), "--day", str(TEST_DAY),
         "--predictions", lake["shifted_predictions"], "--triton-metrics", triton,
         "--thresholds", str(thresholds), "--baseline-schema", str(baseline), "--out", str(tmp_path / "out")],
        capsys,
    )  # fmt: skip
    crossed = [Crossing(**w) for w in report[WARNINGS]]
    assert status == EXIT_THRESHOLD_CROSSED
    assert {(c.threshold, c.subject) for c in crossed} == {
        ("max_unseen_share_increase", UNSEEN_COLUMN),
        ("max_new_id_share", GROWN_COLUMN),
        ("max_psi", SCALED_COLUMN),
        ("calibration", PREDICTIONS),
        *(("max_mean_latency_ms", f"{SERVED}/{version}") for version in REQUESTS),
    }
    assert warnings == [f"sparkrec monitor: warning: {c.message}" for c in crossed]
    assert report[PREDICTIONS][CALIBRATION] == pytest.approx(PREDICTION_FACTOR, abs=0.05)


def test_a_list_feature_is_reported_by_its_elements(spark, shop_features):
    """The shop's recent_items (a list of item ids): its shares are of the day's elements, its mean
    length the day's elements a row, each equal to a count over the features table's arrays; its
    baseline cardinality is one more than the training window's largest element, or the model's."""
    paths = shop_features
    schema = Workflow.load_schema(paths.workflow, spark)
    (listed,) = schema.lists.names
    day, trained_cardinality = 2, 100
    features = spark.read.format("delta").load(paths.features)
    largest = features.where(F.col(DAY) < day).agg(F.max(F.array_max(listed))).first()[0]
    day_rows = features.where(F.col(DAY) == day)
    ids = day_rows.select(F.explode(listed).alias("id"))
    elements, zeros, past_window, new = ids.agg(
        F.count("*"),
        F.sum((F.col("id") == 0).cast("int")),
        F.sum((F.col("id") > largest).cast("int")),
        F.sum((F.col("id") >= trained_cardinality).cast("int")),
    ).first()
    assert elements > day_rows.count() > 0 and zeros > 0 and new > 0
    trained = Schema(
        tuple(replace(c, cardinality=trained_cardinality) if c.name == listed else c for c in schema)
    )
    for baseline, cardinality, new_share in (
        (None, largest + 1, past_window / elements),
        (trained, trained_cardinality, new / elements),
    ):
        report = monitor(spark, paths.bronze, paths.workflow, day, baseline_schema=baseline)
        section = report["categorical"][listed]
        assert section["baseline_cardinality"] == cardinality
        assert section["unseen_share"] == pytest.approx(zeros / elements, abs=1e-6)
        assert section["new_id_share"] == pytest.approx(new_share, abs=1e-6)
        assert section["mean_length"] == pytest.approx(elements / day_rows.count(), abs=1e-6)
        assert section["training_mean_length"] > 0
    # 100 rows of the model's table: the day's new elements cross max_new_id_share, said of elements.
    (warning,) = [
        w for w in report[WARNINGS] if w["threshold"] == "max_new_id_share" and w["subject"] == listed
    ]
    assert f"of day {day}'s list elements are new" in warning["message"]


def test_a_file_that_is_no_schema_or_another_datasets_bronze_is_refused_in_one_line(
    spark, default_features, shop_features, tmp_path
):
    """Each once ended in a trace: a features.json or a folder given as --baseline-schema (beside
    --workflow, an easy slip), and a bronze table of another dataset than the workflow's."""
    features, _ = default_features
    workflow = features / "workflow"
    kept = {"spark.sql.shuffle.partitions": spark.conf.get("spark.sql.shuffle.partitions")}
    for wrong, says in ((workflow / "features.json", "is not a schema.json"), (workflow, "is a folder")):
        argv = ["--bronze", shop_features.bronze, "--workflow", str(workflow), "--day", "2"]
        with session_conf(spark, kept), pytest.raises(InputError, match=says) as refused:
            main([*argv, "--baseline-schema", str(wrong), "--out", str(tmp_path)])
        assert "\n" not in str(refused.value)
    with pytest.raises(InputError, match=r"^the rows lack the workflow's input columns \[.* \.\.\.: give"):
        monitor(spark, shop_features.bronze, str(workflow), 2)
