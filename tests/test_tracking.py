"""MLflow tracking (spark_jobs/tracking.py) against a real SQLite store in a temporary folder: a tracked
run holds params, the loss series, per-day metrics, plots and its Delta inputs at their versions; a
second tracking of the same run finds the first; registered versions get aliases that move; a
disabled tracker does nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow import MlflowClient
from pyspark.sql import SparkSession

from rec_plugin import storage
from rec_plugin.features_description import FeaturesDescription
from rec_plugin.schema import ColumnSchema, Schema, Tags, VocabularyPin
from rec_plugin.workflow import SCHEMA_FILE
from spark_jobs.tracking import (
    BRONZE,
    CANDIDATE,
    DAY_PREFIX,
    FEATURES,
    LOSS,
    MAX_LOSS_POINTS,
    PLOTS,
    PRODUCTION,
    TRACKING_URI_ENV,
    VOCABULARY,
    TableInput,
    Tracker,
    tracking_available,
    workflow_inputs,
)
from training import plots
from training.loop import TrainSpec
from training.models import ModelConfig
from training.run_directory import RunDirectory

DAYS = [
    {
        "day": 2,
        "split": "valid",
        "rows": 100,
        "auc": 0.71,
        "logloss": 0.52,
        "oracle_auc": 0.8,
        "oracle_logloss": 0.4,
    },
    {
        "day": 3,
        "split": "test",
        "rows": 90,
        "auc": 0.69,
        "logloss": 0.55,
        "oracle_auc": None,
        "oracle_logloss": None,
    },
]
LOSSES = [1.0 / (1 + step) for step in range(2500)]


def finished_run(folder: Path, auc: float = 0.69) -> RunDirectory:
    """A run directory as train() leaves it: model config, spec, plots and report."""
    run = RunDirectory(folder)
    run.write_model_config(ModelConfig("dlrm"))
    spec = TrainSpec(model={}, train={}, run_dir=run.uri, schema={}, epochs=2, batch_size=256)
    run.write_spec(spec.to_dict())
    run.write_loss_plot(plots.loss_curve(LOSSES, "loss"))
    run.write_auc_plot(plots.auc_per_day(DAYS, "auc"))
    run.write_metrics(
        {"model": "dlrm", "backend": "single", "samples_per_s": 1000.0, "auc": auc, "days": DAYS}
    )
    return run


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One SQLite store for the module's tests (creating its tables takes seconds)."""
    return f"sqlite:///{tmp_path_factory.mktemp('tracking') / 'mlflow.db'}"


@pytest.fixture
def tracker(store: str, request: pytest.FixtureRequest) -> Tracker:
    """A tracker of its own experiment in the module's store."""
    return Tracker.configured(store, experiment=request.node.name)


def client_of(tracker: Tracker) -> MlflowClient:
    return MlflowClient(tracking_uri=tracker.uri, registry_uri=tracker.uri)


def delta(spark: SparkSession, path: Path, versions: int) -> None:
    """A Delta table at `path` with versions 0 to `versions - 1`."""
    for _ in range(versions):
        spark.range(3).write.format("delta").mode("append").save(str(path))


@pytest.fixture
def workflow(spark: SparkSession, tmp_path: Path) -> Path:
    """A workflow folder as featurize leaves it: features.json naming bronze (at version 1) and the
    features table (version 0), and schema.json pinning two vocabulary tables (versions 0 and 1)."""
    lake, folder = tmp_path / "lake", tmp_path / "workflow"
    delta(spark, lake / "bronze", 2)
    delta(spark, lake / "features", 1)
    delta(spark, folder / "categories" / "C1", 1)
    delta(spark, folder / "categories" / "C2", 2)
    FeaturesDescription(str(lake / "features"), 0, str(lake / "bronze"), 1, {"train": [0, 1]}, 6).save(
        spark, str(folder)
    )
    columns = (
        ColumnSchema("label", "float32", (Tags.LABEL,)),
        ColumnSchema("C1", "int64", (Tags.CATEGORICAL,), 4, vocabulary=VocabularyPin("categories/C1", 0)),
        ColumnSchema("C2", "int64", (Tags.CATEGORICAL,), 4, vocabulary=VocabularyPin("categories/C2", 1)),
        ColumnSchema("C3", "int64", (Tags.CATEGORICAL,), 4, vocabulary=VocabularyPin("categories/C2", 1)),
    )
    storage.write_text(spark, f"{folder}/{SCHEMA_FILE}", Schema(columns).to_json())
    return folder


def test_a_tracked_run_holds_params_losses_days_plots_and_inputs(
    spark: SparkSession, tracker: Tracker, workflow: Path, tmp_path: Path
):
    assert tracking_available() and tracker.enabled
    run = finished_run(tmp_path / "run")
    inputs = workflow_inputs(spark, str(workflow))
    assert [(t.role, t.name, t.version) for t in inputs] == [
        (BRONZE, BRONZE, 1),
        (FEATURES, FEATURES, 0),
        (VOCABULARY, f"{VOCABULARY}/categories/C1", 0),
        (VOCABULARY, f"{VOCABULARY}/categories/C2", 1),
    ]
    run_id = tracker.track_training(run, LOSSES, inputs, params={"workers": 2})
    client = client_of(tracker)
    tracked = client.get_run(run_id)
    assert tracked.info.status == "FINISHED"
    params = tracked.data.params
    assert (params["epochs"], params["batch_size"], params["workers"]) == ("2", "256", "2")
    assert (params["model"], params["backend"], params["top_mlp"]) == ("dlrm", "single", "(128, 64)")
    assert tracked.data.metrics["auc"] == 0.69

    loss = client.get_metric_history(run_id, LOSS)
    assert 0 < len(loss) <= MAX_LOSS_POINTS
    assert [(p.step, p.value) for p in loss[:2]] == [(1, LOSSES[0]), (4, LOSSES[3])]
    day_auc = client.get_metric_history(run_id, f"{DAY_PREFIX}auc")
    assert sorted((p.step, p.value) for p in day_auc) == [(2, 0.71), (3, 0.69)]
    assert [p.step for p in client.get_metric_history(run_id, f"{DAY_PREFIX}oracle_auc")] == [2]

    artifacts = {a.path for a in client.list_artifacts(run_id, PLOTS)}
    assert artifacts == {f"{PLOTS}/loss.png", f"{PLOTS}/auc_per_day.png"}
    report = json.loads(Path(client.download_artifacts(run_id, "metrics.json", str(tmp_path))).read_text())
    assert report["days"] == DAYS

    recorded = {
        i.dataset.name: (
            json.loads(i.dataset.source),
            {t.key: t.value for t in i.tags}["mlflow.data.context"],
        )
        for i in tracked.inputs.dataset_inputs
    }
    assert {
        name: (source["path"], source["delta_table_version"], role)
        for name, (source, role) in recorded.items()
    } == {t.name: (t.uri, t.version, t.role) for t in inputs}
    assert {i.dataset.source_type for i in tracked.inputs.dataset_inputs} == {"delta_table"}


def test_tracking_the_same_run_again_returns_the_first(tracker: Tracker, tmp_path: Path):
    run = finished_run(tmp_path / "run")
    first = tracker.track_training(run, LOSSES[:10])
    assert tracker.track_training(run, LOSSES[:10]) == first
    keyed = tracker.track_training(run, LOSSES[:10], key="retrain/day-5")
    assert keyed != first
    assert tracker.track_training(run, LOSSES[:10], key="retrain/day-5") == keyed
    retrained = finished_run(tmp_path / "run", auc=0.7)  # trained again into the same directory
    assert tracker.track_training(retrained, LOSSES[:10]) not in (first, keyed)
    experiment = client_of(tracker).get_experiment_by_name(tracker.experiment)
    assert len(client_of(tracker).search_runs([experiment.experiment_id])) == 3


def test_registered_versions_get_aliases_that_retraining_moves(tracker: Tracker, tmp_path: Path):
    name = "criteo"
    exported = tmp_path / "export" / "model.pt"
    exported.parent.mkdir()
    exported.write_bytes(b"torchscript")
    assert tracker.alias_version(name, PRODUCTION) is None
    assert tracker.promote(name) is None

    first_run = tracker.track_training(finished_run(tmp_path / "first"), LOSSES[:10])
    first = tracker.register_model(first_run, name, exported, tags={"triton_version": "1"})
    assert tracker.register_model(first_run, name, exported) == first  # exported again: the same version
    assert (tracker.alias_version(name, CANDIDATE), tracker.alias_version(name, PRODUCTION)) == (first, None)
    assert tracker.promote(name) == first
    assert (tracker.alias_version(name, CANDIDATE), tracker.alias_version(name, PRODUCTION)) == (None, first)

    version_folder = tmp_path / "repository" / "criteo_model" / "2"
    version_folder.mkdir(parents=True)
    (version_folder / "model.pt").write_bytes(b"torchscript 2")
    second_run = tracker.track_training(finished_run(tmp_path / "second", auc=0.7), LOSSES[:10])
    second = tracker.register_model(second_run, name, version_folder)
    assert second == first + 1
    assert (tracker.alias_version(name, CANDIDATE), tracker.alias_version(name, PRODUCTION)) == (
        second,
        first,
    )
    client = client_of(tracker)
    stored = client.get_model_version(name, str(second))
    assert stored.run_id == second_run
    assert [a.path for a in client.list_artifacts(second_run, "model")] == ["model/model.pt"]
    assert client.get_model_version(name, str(first)).tags == {"triton_version": "1"}

    assert tracker.drop_candidate(name, first) is None  # another retrain's candidate is left alone
    assert tracker.drop_candidate(name, second) == second  # rolled back: production stays
    assert (tracker.alias_version(name, CANDIDATE), tracker.alias_version(name, PRODUCTION)) == (None, first)
    assert tracker.drop_candidate(name) is None
    tracker.move_alias(name, PRODUCTION, second)
    assert tracker.alias_version(name, PRODUCTION) == second
    tracker.move_alias(name, PRODUCTION, first)  # rolled back
    assert tracker.alias_version(name, PRODUCTION) == first


def test_a_disabled_tracker_does_nothing(tmp_path: Path):
    store = tmp_path / "store"
    tracker = Tracker.configured(f"sqlite:///{store / 'mlflow.db'}", disabled=True)
    assert not tracker.enabled
    run = finished_run(tmp_path / "run")
    assert tracker.track_training(run, LOSSES, [TableInput(BRONZE, BRONZE, "file:/nowhere", 0)]) is None
    assert tracker.register_model("some-run", "criteo", tmp_path / "model.pt") is None
    tracker.move_alias("criteo", PRODUCTION, 1)
    assert tracker.alias_version("criteo", PRODUCTION) is None
    assert tracker.promote("criteo") is None
    assert tracker.drop_candidate("criteo") is None
    assert not store.exists()


def test_the_tracking_uri_comes_from_the_argument_the_environment_or_the_project(
    monkeypatch: pytest.MonkeyPatch,
):
    monkeypatch.delenv(TRACKING_URI_ENV, raising=False)
    default = Tracker.configured().uri
    assert default.startswith("sqlite:///") and default.endswith("/mlruns/mlflow.db")
    monkeypatch.setenv(TRACKING_URI_ENV, "http://tracking:5000")
    assert Tracker.configured().uri == "http://tracking:5000"
    assert Tracker.configured("sqlite:////tmp/other.db").uri == "sqlite:////tmp/other.db"
