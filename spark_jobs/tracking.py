"""MLflow run tracking and model registry for training and continuous retraining, when MLflow is installed.

The run directory (training/run_directory.py) stays the record every stage reads; MLflow is a second,
searchable copy of it: a training run's params, its per-step loss and per-day metrics, its plots, the
bronze, features and vocabulary Delta tables it read with their versions (as run inputs), and the
exported model registered under aliases that deploying and retraining move (`candidate`: the newest
export being tried; `production`: the one served). Without MLflow, or with tracking turned off, every
call returns None and changes nothing.

The store is a SQLite file under the project (mlruns/mlflow.db, artifacts beside it) unless the
environment variable SPARKREC_TRACKING_URI or the caller names another tracking URI (a server, a
database, a folder). This module alone names what sparkrec writes to MLflow.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import os
import posixpath
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pyspark.sql import SparkSession

from rec_plugin import storage
from rec_plugin.errors import InputError
from rec_plugin.features_description import FeaturesDescription
from rec_plugin.workflow import Workflow
from training.models import ModelConfig
from training.run_directory import RunDirectory, RunLocation

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import DatasetInput

TRACKING_URI_ENV = "SPARKREC_TRACKING_URI"
DEFAULT_STORE = Path(__file__).resolve().parents[1] / "mlruns" / "mlflow.db"
EXPERIMENT = "sparkrec"
# The registered model's aliases: the version served, and the newest export being tried beside it.
PRODUCTION = "production"
CANDIDATE = "candidate"
# The roles of a run's input tables (each input's context in MLflow).
BRONZE = "bronze"
FEATURES = "features"
VOCABULARY = "vocabulary"
# The per-step training loss; each validation/test day's metrics are `day_<name>` with the day as step.
LOSS = "loss"
DAY_PREFIX = "day_"
# MLflow's charts stay responsive up to about this many points a series.
MAX_LOSS_POINTS = 1000
# A run's artifacts: its plots, its run directory's report and model description, the registered model.
PLOTS = "plots"
REPORT = "metrics.json"
MODEL_CONFIG = "model_config.json"
MODEL = "model"
# Run tags: the key that makes tracking a run twice find the first, and the run directory it copies.
KEY_TAG = "sparkrec.key"
RUN_DIR_TAG = "sparkrec.run_dir"
# The run directory's plots, by their artifact name (a run has those its trainer drew).
_PLOT_READERS: dict[str, Callable[[RunDirectory], bytes]] = {
    "loss.png": RunDirectory.loss_plot,
    "auc_per_day.png": RunDirectory.auc_plot,
    "ranking.png": RunDirectory.ranking_plot,
}
# MLflow's limits on one log_batch call.
_PARAMS_PER_BATCH = 100
_METRICS_PER_BATCH = 1000
_SQLITE = "sqlite:///"


def tracking_available() -> bool:
    """Whether MLflow is installed (it is optional: nothing else needs it)."""
    return importlib.util.find_spec("mlflow") is not None


def default_tracking_uri() -> str:
    """SPARKREC_TRACKING_URI when set, else the SQLite store under the project."""
    return os.environ.get(TRACKING_URI_ENV) or f"{_SQLITE}{DEFAULT_STORE}"


@dataclass(frozen=True)
class TableInput:
    """A Delta table a run read, at the version it read: what reproduces the run's data."""

    role: str
    name: str
    uri: str
    version: int


def workflow_inputs(
    spark: SparkSession, workflow: str, features: str | None = None, features_version: int | None = None
) -> list[TableInput]:
    """The Delta tables behind a training run on `workflow`'s features, at their versions: the bronze
    table and the features table its features.json names (or the `features` table at
    `features_version`, what train read), and every vocabulary table its schema.json pins."""
    description = FeaturesDescription.load(spark, workflow)
    table = features or description.table
    version = description.version if features_version is None else features_version
    pins = {
        c.vocabulary.table: c.vocabulary.version
        for c in Workflow.load_schema(workflow, spark)
        if c.vocabulary
    }
    return [
        TableInput(
            BRONZE, BRONZE, storage.qualified(spark, description.bronze_table), description.bronze_version
        ),
        TableInput(FEATURES, FEATURES, storage.qualified(spark, table), version),
        *(
            TableInput(
                VOCABULARY, f"{VOCABULARY}/{name}", storage.qualified(spark, f"{workflow}/{name}"), pinned
            )
            for name, pinned in pins.items()
            if pinned is not None
        ),
    ]


@dataclass(frozen=True)
class Tracker:
    """Where runs and models are tracked; a disabled tracker (MLflow missing, or turned off) does
    nothing and answers None."""

    uri: str
    experiment: str = EXPERIMENT
    enabled: bool = True

    @classmethod
    def configured(
        cls, uri: str | None = None, experiment: str = EXPERIMENT, disabled: bool = False
    ) -> Tracker:
        """The tracker of `uri` (default: default_tracking_uri()), enabled when MLflow is installed
        and the caller did not turn tracking off."""
        return cls(uri or default_tracking_uri(), experiment, not disabled and tracking_available())

    def track_training(
        self,
        run_dir: RunLocation,
        losses: Sequence[float],
        inputs: Sequence[TableInput] = (),
        params: Mapping[str, object] | None = None,
        key: str | None = None,
    ) -> str | None:
        """Copies the finished run in `run_dir` into an MLflow run and returns its id: the spec's and
        model's settings and `params` as params, `losses` (one per step with data) as the `loss` series, the
        report's numbers as metrics and each scored day's as `day_<name>` at step = day, the plots,
        report and model config as artifacts, and `inputs` as run inputs.

        Tracking the same run again (same `key`; by default the same run directory and report) returns
        the run tracked first instead of a duplicate; a run whose tracking failed is not reused."""
        if not self.enabled:
            return None
        run = RunDirectory.at(run_dir)
        report = run.metrics()
        if report is None:
            raise InputError(f"run directory {run.uri} holds no finished run: train into it first")
        key = _digest(key or f"{run.uri}#{json.dumps(report, sort_keys=True)}")
        client = self._client()
        experiment_id = self._experiment_id(client)
        tracked = client.search_runs(
            [experiment_id],
            f"tags.`{KEY_TAG}` = '{key}' and attributes.status = 'FINISHED'",
            max_results=1,
        )
        if tracked:
            return tracked[0].info.run_id
        created = client.create_run(
            experiment_id, run_name=posixpath.basename(run.uri), tags={KEY_TAG: key, RUN_DIR_TAG: run.uri}
        )
        run_id = created.info.run_id
        try:
            _log_batches(
                client, run_id, {**_run_params(run, report), **(params or {})}, _metrics(report, losses)
            )
            client.log_inputs(run_id, [_dataset_input(table) for table in inputs])
            _log_files(client, run_id, run, report)
        except BaseException:
            client.set_terminated(run_id, "FAILED")
            raise
        client.set_terminated(run_id)
        return run_id

    def register_model(
        self,
        run_id: str | None,
        name: str,
        model: str | os.PathLike,
        alias: str | None = CANDIDATE,
        tags: Mapping[str, str] | None = None,
    ) -> int | None:
        """Registers the exported `model` (a file, e.g. the TorchScript, or a Triton version folder)
        as a version of registered model `name`, its files stored as the artifact `model` of run
        `run_id`, and points `alias` at it; returns the version (None without tracking or run).

        Registering the same run's model again returns the version it got first."""
        if not self.enabled or run_id is None:
            return None
        client = self._client()
        _ensure_registered_model(client, name)
        source = f"{client.get_run(run_id).info.artifact_uri}/{MODEL}"
        registered = client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
        versions = [int(v.version) for v in registered if v.source == source]
        if versions:
            version = min(versions)
        else:
            path = Path(model)
            if path.is_dir():
                client.log_artifacts(run_id, str(path), MODEL)
            else:
                client.log_artifact(run_id, str(path), MODEL)
            created = client.create_model_version(name, source, run_id=run_id, tags=dict(tags or {}))
            version = int(created.version)
        if alias is not None:
            client.set_registered_model_alias(name, alias, str(version))
        return version

    def move_alias(self, name: str, alias: str, version: int) -> None:
        """Points `alias` of registered model `name` at `version` (e.g. production at the candidate
        retraining promoted, or back at the previous version on a rollback)."""
        if self.enabled:
            self._client().set_registered_model_alias(name, alias, str(version))

    def alias_version(self, name: str, alias: str) -> int | None:
        """The version `alias` of registered model `name` points at; None when it points nowhere."""
        if not self.enabled:
            return None
        from mlflow.exceptions import MlflowException

        try:
            return int(self._client().get_model_version_by_alias(name, alias).version)
        except MlflowException as error:  # MLflow's answers for no such model and no such alias
            if error.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                return None
            raise

    def promote(self, name: str, version: int | None = None) -> int | None:
        """Moves `production` to `version` (default: the candidate's) and drops the `candidate` alias
        if it points there (no candidate is being tried any more); returns the promoted version, None
        when there was no candidate."""
        version = self.alias_version(name, CANDIDATE) if version is None else version
        if version is None or not self.enabled:
            return None
        self.move_alias(name, PRODUCTION, version)
        self.drop_candidate(name, version)
        return version

    def drop_candidate(self, name: str, version: int | None = None) -> int | None:
        """Drops the `candidate` alias (a candidate rolled back is no longer tried; `production` stays
        where it was), only where it points at `version` when one is given; returns the version it
        pointed at, None when it was not dropped."""
        candidate = self.alias_version(name, CANDIDATE)
        if candidate is None or version not in (None, candidate):
            return None
        self._client().delete_registered_model_alias(name, CANDIDATE)
        return candidate

    def _client(self) -> MlflowClient:
        from mlflow import MlflowClient

        if self.uri.startswith(_SQLITE):
            _sqlite_file(self.uri).parent.mkdir(parents=True, exist_ok=True)
        return MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)

    def _experiment_id(self, client: MlflowClient) -> str:
        """The experiment's id, created on first use with its artifacts beside a SQLite store (MLflow
        would otherwise put them under the working directory)."""
        experiment = client.get_experiment_by_name(self.experiment)
        if experiment is not None:
            return experiment.experiment_id
        location = (
            (_sqlite_file(self.uri).parent / "artifacts").as_uri() if self.uri.startswith(_SQLITE) else None
        )
        return client.create_experiment(self.experiment, artifact_location=location)


def _sqlite_file(uri: str) -> Path:
    return Path(uri.removeprefix(_SQLITE)).resolve()


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _run_params(run: RunDirectory, report: dict) -> dict[str, object]:
    """The settings of a run: the spec's (epochs, batch size, learning rates, ...), the model's
    hyperparameters and the report's words (model, backend, run directory)."""
    config = run.model_config()
    spec = {k: v for k, v in run.spec().items() if isinstance(v, str | int | float | bool)}
    model = {name: getattr(config, name) for name in ModelConfig.HYPERPARAMETERS}
    words = {k: v for k, v in report.items() if isinstance(v, str)}
    return {**spec, **model, **words}


def _metrics(report: dict, losses: Sequence[float]) -> list[tuple[str, float, int]]:
    """(name, value, step): the loss at most MAX_LOSS_POINTS evenly spaced steps (1-based, as the loss
    plot counts them), the report's numbers at step 0, each scored day's numbers at step = day."""
    stride = max(1, math.ceil(len(losses) / MAX_LOSS_POINTS))
    series = [(LOSS, float(losses[i]), i + 1) for i in range(0, len(losses), stride)]
    totals = [(name, float(value), 0) for name, value in report.items() if _is_number(value)]
    days = [
        (f"{DAY_PREFIX}{name}", float(value), int(day["day"]))
        for day in report.get("days", [])
        for name, value in day.items()
        if name != "day" and _is_number(value)
    ]
    return series + totals + days


def _log_batches(
    client: MlflowClient, run_id: str, params: Mapping[str, object], metrics: list[tuple[str, float, int]]
) -> None:
    """Params and metrics in as few calls as MLflow's batch limits allow (a SQLite write per call)."""
    from mlflow.entities import Metric, Param

    now = int(time.time() * 1000)
    entries = [Param(name, str(value)) for name, value in params.items() if value is not None]
    for start in range(0, len(entries), _PARAMS_PER_BATCH):
        client.log_batch(run_id, params=entries[start : start + _PARAMS_PER_BATCH])
    points = [Metric(name, value, now, step) for name, value, step in metrics]
    for start in range(0, len(points), _METRICS_PER_BATCH):
        client.log_batch(run_id, metrics=points[start : start + _METRICS_PER_BATCH])


def _dataset_input(table: TableInput) -> DatasetInput:
    """A Delta table at a version as MLflow's dataset input, its role as the input's context."""
    from mlflow.data.delta_dataset_source import DeltaDatasetSource
    from mlflow.entities import Dataset, DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    source = DeltaDatasetSource(path=table.uri, delta_table_version=table.version)
    # MLflow 3.17's source leaves version 0 out of what it records (a falsy check): put it back.
    recorded = json.dumps({**source.to_dict(), "delta_table_version": table.version})
    dataset = Dataset(table.name, _digest(recorded)[:8], source._get_source_type(), recorded)
    return DatasetInput(dataset, [InputTag(MLFLOW_DATASET_CONTEXT, table.role)])


def _log_files(client: MlflowClient, run_id: str, run: RunDirectory, report: dict) -> None:
    """The run directory's plots (those it has), report and model description as artifacts."""
    client.log_dict(run_id, report, REPORT)
    client.log_dict(run_id, run.model_config().to_dict(), MODEL_CONFIG)
    with tempfile.TemporaryDirectory() as folder:
        for name, read in _PLOT_READERS.items():
            try:
                png = read(run)
            except FileNotFoundError:
                continue
            (Path(folder) / name).write_bytes(png)
        client.log_artifacts(run_id, folder, PLOTS)


def _ensure_registered_model(client: MlflowClient, name: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(name)
    except MlflowException as error:
        if error.error_code != "RESOURCE_ALREADY_EXISTS":
            raise


def track_run(run_dir: RunLocation, losses: Sequence[float], inputs: Sequence[TableInput] = ()) -> str | None:
    """A finished training run copied into the configured store (none without MLflow): what `sparkrec
    train` does after writing the run directory; returns the MLflow run id."""
    tracker = Tracker.configured()
    try:
        tracked = tracker.track_training(run_dir, losses, inputs)
    except Exception as error:  # noqa: BLE001 - the run directory is complete; tracking is its copy
        print(f"train: warning: the run was not tracked in {tracker.uri}: {error}", file=sys.stderr)
        return None
    if tracked is not None:
        print(f"train: tracked as MLflow run {tracked} in {tracker.uri}")
    return tracked
