"""sparkrec score: raw rows of the bronze Delta table -> a Delta predictions table, in batch.

In-process (the TorchScript model that `sparkrec export` wrote to a Triton repository, loaded once per
Python worker, applied with mapInPandas after the Spark workflow) or through Triton (`--via-triton
HOST:GRPC_PORT`: raw fields in batches of 2,048 over gRPC to the ensemble, which runs the same
workflow). The table is partitioned by day and
each run replaces exactly the days it scores, so rerunning for the same input adds no duplicates.

    spark-submit spark_jobs/score.py --bronze lake/bronze --days 3 --predictions lake/predictions \\
        --repository serving_repo --name ctr --workflow lake/workflow   # or: --via-triton 127.0.0.1:8001
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from rec_plugin import storage
from rec_plugin.errors import CommandParser, InputError, run_command
from rec_plugin.schema import DAY, LINE_NUMBER, ROW_KEYS, SOURCE_FILE, Schema
from rec_plugin.workflow import Workflow
from serving.allocator import keep_freed_memory
from serving.repository import (
    DEFAULT_NAME,
    OUTPUTS,
    ensemble_version_name,
    is_click_model,
    torchscript_file,
    trained_schema,
)
from spark_jobs.layout import day_list
from spark_jobs.session import build_session
from training.data import jagged_arrays

PROBABILITY = "probability"
PREDICTION_COLUMNS = [*ROW_KEYS, PROBABILITY]
SCHEMA = f"{DAY} int, {SOURCE_FILE} string, {LINE_NUMBER} long, {PROBABILITY} float"
TRITON_BATCH = 2048
# What a refusal of a recommender's model says.
_CLICK_MODELS_ONLY = "score scores click models; sparkrec recommend writes a recommender's top items"


@cache
def _model(path: str) -> torch.jit.ScriptModule:
    """Loaded once per Python worker process (Spark reuses its workers across tasks), which keeps
    freed batch memory from then on (serving/allocator.py)."""
    keep_freed_memory()
    return torch.jit.load(path).eval()


def in_process(model_path: str, schema: Schema) -> Callable[[Iterator[pd.DataFrame]], Iterator[pd.DataFrame]]:
    """Scores frames of the workflow's output: the model's inputs are the schema's continuous,
    categorical and list columns in schema order (a list column as values and offsets)."""
    dense_columns, id_columns = schema.continuous.names, schema.categorical.names
    list_columns = schema.lists.names

    def score(frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        model = _model(model_path)
        for frame in frames:
            dense = torch.from_numpy(frame[dense_columns].to_numpy(np.float32))
            ids = torch.from_numpy(frame[id_columns].to_numpy(np.int64))
            jagged = [jagged_arrays(frame[c].to_numpy(object)) for c in list_columns]
            values = [torch.from_numpy(v) for v, _ in jagged]
            offsets = [torch.from_numpy(o) for _, o in jagged]
            with torch.no_grad():
                probability = model(dense, ids, values, offsets).numpy()[:, 0]
            yield frame[ROW_KEYS].assign(**{PROBABILITY: probability})

    return score


def via_triton(url: str, name: str) -> Callable[[Iterator[pd.DataFrame]], Iterator[pd.DataFrame]]:
    """Scores frames of raw bronze rows through the ensemble `name`: requests of TRITON_BATCH rows
    built by the raw inputs its config names (serving/client.py), read from the server once per task."""

    def score(frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        import tritonclient.grpc as triton_grpc

        from serving.client import predict_raw, raw_spec

        client = triton_grpc.InferenceServerClient(url)
        try:  # closed on an error too: a reused Python worker would keep the channel
            spec = raw_spec(client, name)
            for frame in frames:
                parts = []
                for start in range(0, len(frame), TRITON_BATCH):
                    chunk = frame.iloc[start : start + TRITON_BATCH]
                    parts.append(predict_raw(client, name, chunk, spec=spec)[:, 0])
                probability = np.concatenate(parts) if parts else np.zeros(0, np.float32)
                yield frame[ROW_KEYS].assign(**{PROBABILITY: probability})
        finally:
            client.close()

    return score


def _require_served(url: str, name: str, columns: list[str]) -> None:
    """A Triton server answers at `url` and has `name` ready, and the rows' `columns` hold its raw
    inputs: checked before any row is read."""
    import tritonclient.grpc as triton_grpc
    from tritonclient.utils import InferenceServerException

    from serving.client import raw_spec

    client = triton_grpc.InferenceServerClient(url)
    try:
        client.is_server_live(client_timeout=10)
        ready = client.is_model_ready(name, client_timeout=10)
        spec = raw_spec(client, name) if ready else None
        config = client.get_model_config(name, as_json=True)["config"] if ready else {}
    except InferenceServerException:
        raise InputError(
            f"no Triton server answers at {url}: start one (sparkrec serve) or fix --via-triton"
        ) from None
    finally:
        client.close()
    if spec is None:
        raise InputError(f"model {name} is not loaded on the Triton server at {url}: load it or fix --name")
    outputs = [output["name"] for output in config.get("output", [])]
    if OUTPUTS[0].name not in outputs:  # a recommender's top items: each task would end in a trace
        raise InputError(f"model {name} outputs {outputs}, not click probabilities: {_CLICK_MODELS_ONLY}")
    missing = [c.name for c in (*spec.continuous, *spec.categorical, *spec.lists) if c.name not in columns]
    if missing:  # another dataset's bronze: each task would end in a trace
        raise InputError(
            f"the rows lack the raw inputs {missing[:3]}{' ...' if len(missing) > 3 else ''} of model "
            f"{name}: give the bronze table of the dataset it serves"
        )


def require_predictions_table(spark: SparkSession, path: str, must_exist: bool = False) -> None:
    """Each run replaces days of the table at `path`: never let that hit a table of another kind (a
    killed first write's files are no table: the rerun writes the table anew)."""
    if storage.holds_table(spark, path, "predictions table"):
        if sorted(spark.read.format("delta").load(path).columns) != sorted(PREDICTION_COLUMNS):
            raise InputError(
                f"{path} holds a Delta table that is not a predictions table: choose another path"
            )
    elif must_exist:
        raise InputError(f"predictions table {path} does not exist")


def score(
    spark: SparkSession,
    bronze: str,
    days: list[int],
    predictions: str,
    repository: str | None = None,
    workflow: str | None = None,
    via_triton_url: str | None = None,
    name: str = DEFAULT_NAME,
    version: int | None = None,
    bronze_version: int | None = None,
) -> dict:
    """Scores the days' rows and replaces those days in the predictions table; the report section.

    In-process scoring loads the exported TorchScript model (version `version` of `name` in the
    Triton model repository, the newest by default) and writes nothing anywhere else."""
    bronze_version = storage.delta_version(spark, bronze, "bronze table", bronze_version)
    rows = spark.read.format("delta").option("versionAsOf", bronze_version).load(bronze)
    absent = sorted(d for d in days if str(d) not in storage.partition_values(rows, DAY))
    if not days or absent:
        raise InputError(f"days {absent or days} are not in bronze table {bronze}@v{bronze_version}")
    require_predictions_table(spark, predictions)
    rows = rows.where(F.col(DAY).isin(days))
    if via_triton_url:
        # A version is served by its own ensemble (its preprocessing and its model), the newest by `name`.
        served = name if version is None else ensemble_version_name(name, version)
        _require_served(via_triton_url, served, rows.columns)
        scored = rows.mapInPandas(via_triton(via_triton_url, served), SCHEMA)
        source = {"triton": via_triton_url, "model": served}
    else:
        if not (repository and workflow):
            raise InputError("in-process scoring needs --repository and --workflow (or use --via-triton)")
        model_path = torchscript_file(Path(repository), name, version)
        if not is_click_model(model_path):
            raise InputError(
                f"{model_path.parent} is a recommender's (it outputs top items, not click probabilities): "
                f"{_CLICK_MODELS_ONLY}"
            )
        # The model's inputs are the output columns of the workflow version it was trained on, in its
        # schema's order: a later version's new values would have ids past the model's tables.
        trained_on = trained_schema(model_path)
        schema = trained_on or Workflow.load_schema(workflow, spark)
        pinned = Workflow.load(workflow, spark, pinned_to=trained_on)
        features = pinned.transform(rows, keep=(SOURCE_FILE, LINE_NUMBER, DAY))
        storage.require_seen_by_executors(spark, str(model_path.resolve()), "--repository's model file")
        scored = features.mapInPandas(in_process(str(model_path.resolve()), schema), SCHEMA)
        source = {"model_file": str(model_path.resolve())}
    lineage = {"bronze_table": bronze, "bronze_version": bronze_version, "days": days, **source}
    with storage.new_table_removed_on_failure(spark, predictions):
        (
            scored.write.format("delta")
            .mode("overwrite")
            .option("replaceWhere", f"{DAY} IN ({', '.join(map(str, days))})")
            .option("userMetadata", json.dumps(lineage))
            .partitionBy(DAY)
            .save(predictions)
        )
    written = spark.read.format("delta").load(predictions).where(F.col(DAY).isin(days)).count()
    return {"rows": written, "predictions_table": predictions}


def main(argv: list[str] | None = None) -> dict:
    parser = CommandParser(prog="sparkrec score", description=__doc__.splitlines()[0])
    parser.add_argument("--bronze", required=True, help="Delta table of raw rows (the bronze table)")
    parser.add_argument("--bronze-version", type=int, help="Delta version to read (default: latest)")
    parser.add_argument("--days", required=True, type=day_list, help="e.g. 3")
    parser.add_argument("--predictions", required=True, help="Delta predictions table path")
    parser.add_argument(
        "--repository", help="in-process: the Triton model repository `sparkrec export` wrote"
    )
    parser.add_argument("--version", type=int, help="the model version (default: the newest)")
    parser.add_argument("--workflow", help="in-process: the fitted workflow")
    parser.add_argument(
        "--via-triton", metavar="HOST:GRPC_PORT", help="score through a running Triton server instead"
    )
    parser.add_argument(
        "--name", default=DEFAULT_NAME, help="the model (or ensemble, whose <name>_model is used in-process)"
    )
    parser.add_argument("--profile", default="local", help="Spark profile from conf/spark/")
    args = parser.parse_args(argv)
    spark = build_session(args.profile, "sparkrec-score")
    report = score(
        spark, args.bronze, args.days, args.predictions, args.repository, args.workflow, args.via_triton,
        args.name, args.version, args.bronze_version,
    )  # fmt: skip
    print(json.dumps({"score": report}, indent=2))
    return report


if __name__ == "__main__":
    # Run from the importable module, not this __main__: Spark's Python workers unpickle the scoring
    # functions by module name, and under `spark-submit spark_jobs/score.py` __main__ is not theirs.
    from spark_jobs import score as stage

    run_command(stage.main, "sparkrec score")
