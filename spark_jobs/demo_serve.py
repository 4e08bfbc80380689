"""The demo's serving step: export the trained run with its workflow into a fresh repository, serve it
from a real tritonserver, check parity on raw rows against the in-process model after the Spark
workflow, measure batch latency, score days into Delta through the server, and stop it."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np
import tritonclient.grpc as triton_grpc
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from rec_plugin.schema import DAY, ROW_KEYS
from rec_plugin.workflow import Workflow
from serving.client import predict_raw, raw_spec
from serving.pipeline import NAME, build_repository, call_model, table_features
from serving.repository import versions
from serving.server import TritonServer
from spark_jobs.score import score
from training.run_directory import RunLocation


def serve_and_score(
    spark: SparkSession,
    run_dir: RunLocation,
    workflow: str,
    bronze: str,
    days: list[int],
    out: Path,
    parity_rows: int = 256,
    latency_requests: int = 100,
) -> tuple[dict, dict]:
    """Returns the report's "serve" and "score" sections."""
    repository = out / "repository"
    model = build_repository(spark, run_dir, workflow, repository)
    keys = list(ROW_KEYS)  # with the day: a Delta source's day ingests number a data file's rows per day
    rows = spark.read.format("delta").load(bronze).where(F.col(DAY).isin(days)).orderBy(*keys).limit(2048)
    raw = rows.toPandas()
    fitted = Workflow.load(workflow, spark)
    features = fitted.transform(rows, keep=tuple(keys)).toPandas()
    aligned = raw[keys].merge(features, on=keys, validate="one_to_one")
    expected = call_model(model, table_features(aligned, fitted.schema))
    with TritonServer(repository, log=out / "tritonserver.log") as server:
        client = triton_grpc.InferenceServerClient(server.grpc_url)
        client.load_model(NAME)
        loaded = [
            v for v in versions(repository, f"{NAME}_model") if client.is_model_ready(f"{NAME}_model", str(v))
        ]
        spec = raw_spec(client, NAME)  # the raw inputs, as the ensemble's config names them
        served = predict_raw(client, NAME, raw.iloc[:parity_rows], spec=spec)
        batch = spec.batch(raw)
        predict_raw(client, NAME, batch, spec=spec)  # a first request of this size is not timed
        latencies = []
        for _ in range(latency_requests):
            started = time.perf_counter()
            predict_raw(client, NAME, batch, spec=spec)
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
