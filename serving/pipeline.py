"""The serving steps of the pipeline, as one call for the demo and the notebook: export the trained
run with its workflow into a fresh repository, serve it from a real tritonserver, check parity on raw
rows against the in-process model after the Spark workflow, measure batch latency, score days into
Delta through the server, and stop it."""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import tritonclient.grpc as triton_grpc
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from rec_plugin.schema import CATEGORICAL, DAY, DENSE, LINE_NUMBER, SOURCE_FILE
from rec_plugin.workflow import Workflow
from serving.client import predict_raw
from serving.export import torchscript
from serving.preprocess import export_preprocess
from serving.repository import add_version, versions, write_ensemble
from serving.server import TritonServer
from spark_jobs.score import score
from training.run_directory import RunLocation

NAME = "ctr"


def build_repository(
    spark: SparkSession, run_dir: RunLocation, workflow: str, repository: Path
) -> torch.jit.ScriptModule:
    """A fresh repository: the ensemble NAME over NAME_preprocess and NAME_model version 1."""
    shutil.rmtree(repository, ignore_errors=True)
    model = torchscript(run_dir)
    add_version(repository, f"{NAME}_model", model)
    with tempfile.TemporaryDirectory() as staging:
        write_ensemble(repository, NAME, export_preprocess(spark, workflow, Path(staging)).parent)
    return model


def serve_and_score(
    spark: SparkSession,
    run_dir: RunLocation,
    workflow: str,
    bronze: str,
    days: list[int],
    out: Path,
    parity_rows: int = 256,
    latency_requests: int = 30,
) -> tuple[dict, dict]:
    """Returns the report's "serve" and "score" sections."""
    repository = out / "repository"
    model = build_repository(spark, run_dir, workflow, repository)
    keys = [SOURCE_FILE, LINE_NUMBER]
    rows = spark.read.format("delta").load(bronze).where(F.col(DAY).isin(days)).orderBy(*keys).limit(2048)
    raw = rows.toPandas()
    features = Workflow.load(workflow, spark).transform(rows, keep=tuple(keys)).toPandas()
    aligned = raw[keys].merge(features, on=keys, validate="one_to_one")
    with torch.no_grad():
        expected = model(
            torch.from_numpy(aligned[DENSE].to_numpy(np.float32)),
            torch.from_numpy(aligned[CATEGORICAL].to_numpy(np.int64)),
        ).numpy()
    raw_dense = raw[DENSE].astype("float64").to_numpy()
    raw_tokens = raw[CATEGORICAL].to_numpy(object)
    with TritonServer(repository, log=out / "tritonserver.log") as server:
        client = triton_grpc.InferenceServerClient(server.grpc_url)
        client.load_model(NAME)
        loaded = [
            v for v in versions(repository, f"{NAME}_model") if client.is_model_ready(f"{NAME}_model", str(v))
        ]
        served = predict_raw(client, NAME, raw_dense[:parity_rows], raw_tokens[:parity_rows])
        latencies = []
        for _ in range(latency_requests):
            started = time.perf_counter()
            predict_raw(client, NAME, raw_dense, raw_tokens)
            latencies.append((time.perf_counter() - started) * 1000)
        version = client.get_server_metadata().version
        client.close()
        scored = score(
            spark, bronze, days, str(out / "predictions"), via_triton_url=server.grpc_url, name=NAME
        )
    serve = {
        "triton_version": version,
        "versions_loaded": loaded,
        "parity_max_abs_diff": float(np.abs(served - expected[:parity_rows]).max()),
        "p50_ms_b2048": round(statistics.median(latencies), 2),
        "p99_ms_b2048": round(float(np.percentile(latencies, 99)), 2),
    }
    return serve, scored
