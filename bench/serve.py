"""Serving latency and throughput: raw-feature requests through the Triton ensemble over gRPC and
HTTP at batch 1, 64 and 2048, against in-process inference (the same preprocessing and the same
TorchScript model, no server) in the same run.

Generates, ingests and featurizes a data set, trains DLRM for one epoch, exports it with its
workflow, starts tritonserver, then runs every variant interleaved, several rounds; prints p50/p99
latency and rows/s (one client, requests back to back) and the ratio to in-process throughput.

    .venv/bin/python bench/serve.py [--rows-per-day 100000] [--repeats 3]
"""

from __future__ import annotations

import json
import statistics
import time

import numpy as np
import torch
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from harness import bench_setup, featurized_data, report_quiet
from pyspark.sql import functions as F

from rec_plugin.schema import CATEGORICAL, DAY, DENSE
from serving.client import predict_raw
from serving.pipeline import NAME, build_repository
from serving.preprocess import Preprocessor
from serving.server import TritonServer
from serving.tokens import token_bytes
from training.loop import TrainSpec, train_worker

BATCHES = (1, 64, 2048)
REQUESTS = {1: 200, 64: 100, 2048: 20}


def main() -> None:
    args, spark, config = bench_setup(__doc__, "bench-serve", default_rows_per_day=100_000)
    data = featurized_data(spark, config, "bench-serve-")
    scratch, train, model_config = data.scratch, data.train, data.dlrm
    run_dir = scratch / "run"
    run_dir.mkdir()
    (run_dir / "model_config.json").write_text(json.dumps(model_config.to_dict()))
    train_worker(TrainSpec(model_config.to_dict(), train.to_dict(), str(run_dir), progress=False).to_dict())
    model = build_repository(spark, run_dir, str(scratch / "wf"), scratch / "repository")
    preprocess = Preprocessor(scratch / "repository" / f"{NAME}_preprocess" / "1")
    raw = (
        spark.read.format("delta")
        .load(str(scratch / "bronze"))
        .where(F.col(DAY) == data.test_day)
        .limit(2048)
    )
    raw = raw.toPandas()
    raw_dense = raw[DENSE].astype("float64").to_numpy()
    raw_tokens = raw[CATEGORICAL].to_numpy(object)

    def in_process(dense: np.ndarray, tokens: np.ndarray) -> np.ndarray:
        features, ids = preprocess(dense, token_bytes(tokens))
        with torch.no_grad():
            return model(torch.from_numpy(features), torch.from_numpy(ids)).numpy()

    with TritonServer(scratch / "repository", log=scratch / "tritonserver.log") as server:
        clients = {
            "grpc": triton_grpc.InferenceServerClient(server.grpc_url),
            "http": triton_http.InferenceServerClient(server.http_url),
        }
        clients["http"].load_model(NAME)
        variants = {f"triton {p}": (lambda d, t, c=c: predict_raw(c, NAME, d, t)) for p, c in clients.items()}
        variants["in-process"] = in_process
        for call in variants.values():  # warm-up: first-request costs are not what we measure
            call(raw_dense[:64], raw_tokens[:64])
        latencies = {(name, b): [] for name in variants for b in BATCHES}
        report_quiet()
        for _ in range(args.repeats):
            for b in BATCHES:
                for name, call in variants.items():
                    for _ in range(REQUESTS[b] // args.repeats):
                        started = time.perf_counter()
                        call(raw_dense[:b], raw_tokens[:b])
                        latencies[(name, b)].append((time.perf_counter() - started) * 1000)
        report_quiet()
    print(
        f"{'variant':14s} {'batch':>5s} {'p50 ms':>8s} {'p99 ms':>8s} {'rows/s':>10s} {'vs in-process':>14s}"
    )
    for b in BATCHES:
        local = b / (statistics.mean(latencies[("in-process", b)]) / 1000)
        for name in variants:
            values = latencies[(name, b)]
            rate = b / (statistics.mean(values) / 1000)
            p50, p99 = statistics.median(values), float(np.percentile(values, 99))
            print(f"{name:14s} {b:5d} {p50:8.2f} {p99:8.2f} {rate:10,.0f} {rate / local:13.2f}x")


if __name__ == "__main__":
    main()
