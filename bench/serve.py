"""Serving latency and throughput: raw-feature requests through the Triton ensemble over gRPC and
HTTP at batch 1, 64 and 2048, against in-process inference (the same preprocessing and the same
TorchScript model, no server) in the same run.

Generates, ingests and featurizes a data set, trains DLRM for one epoch, exports it with its
workflow, starts tritonserver, then runs every variant interleaved, several rounds; prints p50/p99
latency and rows/s with one request at a time, rows/s with two requests in flight (two client
threads; in-process gets two threads too), and each ratio to in-process. Writes the table as
serve.json and a latency histogram at batch 2048 as a PNG beside it.

    .venv/bin/python bench/serve.py [--rows-per-day 100000] [--repeats 3]
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import numpy as np
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from harness import BENCH_REPORTS, bench_setup, featurized_data, report_quiet
from pyspark.sql import functions as F

from rec_plugin.schema import DAY
from serving.allocator import keep_freed_memory
from serving.client import predict_raw
from serving.pipeline import NAME, build_repository, call_model
from serving.preprocessor import Preprocessor
from serving.server import TritonServer
from training.loop import TrainSpec, train_worker
from training.run_directory import RunDirectory

BATCHES = (1, 64, 2048)
REQUESTS = {1: 200, 64: 100, 2048: 60}
IN_FLIGHT = 2


def main() -> None:
    args, spark, config = bench_setup(__doc__, "bench-serve", default_rows_per_day=100_000)
    keep_freed_memory()  # as the python-backend models do: the in-process variant gets the same allocator
    data = featurized_data(spark, config, "bench-serve-")
    scratch, train, model_config = data.scratch, data.train, data.dlrm
    run = RunDirectory(scratch / "run")
    run.write_model_config(model_config)
    schema = TrainSpec.schema_dict(data.schema)
    train_worker(
        TrainSpec(model_config.to_dict(), train.to_dict(), run.uri, schema, progress=False).to_dict()
    )
    model = build_repository(spark, run, str(scratch / "wf"), scratch / "repository")
    preprocess = Preprocessor(scratch / "repository" / f"{NAME}_preprocess" / "1")
    raw = (
        spark.read.format("delta")
        .load(str(scratch / "bronze"))
        .where(F.col(DAY) == data.test_day)
        .limit(2048)
    )
    # Raw rows as each variant takes them: by the workflow's raw inputs (its input schema). The
    # in-process variant encodes the same columns as a client does (the fixed-width tokens too).
    spec = preprocess.spec
    raw = raw.toPandas()
    rows = {b: raw.iloc[:b] for b in BATCHES}

    def in_process() -> Callable[[object], np.ndarray]:
        def call(frame: object) -> np.ndarray:
            return call_model(model, preprocess(*spec.batch(frame)))

        return call

    with TritonServer(scratch / "repository", log=scratch / "tritonserver.log") as server:
        # One client per caller: tritonclient's HTTP client stays on the thread that first used it.
        clients = [triton_http.InferenceServerClient(server.http_url)]  # each closed at the end
        clients[0].load_model(NAME)

        def triton(protocol: Any, url: str) -> Callable[[], Callable[[object], np.ndarray]]:
            def caller() -> Callable[[object], np.ndarray]:
                clients.append(protocol.InferenceServerClient(url))
                return lambda frame, c=clients[-1]: predict_raw(c, NAME, frame, spec=spec)

            return caller

        variants = {
            "triton grpc": triton(triton_grpc, server.grpc_url),
            "triton http": triton(triton_http, server.http_url),
            "in-process": in_process,
        }
        callers = {name: make() for name, make in variants.items()}
        for call in callers.values():  # warm-up: first-request costs are not what we measure
            call(raw.iloc[:64])
        latencies = {(name, b): [] for name in variants for b in BATCHES}
        rates = {(name, b): [] for name in variants for b in BATCHES}
        report_quiet()
        for _ in range(args.repeats):
            for b in BATCHES:
                requests = REQUESTS[b] // args.repeats
                for name, call in callers.items():
                    for _ in range(requests):
                        started = time.perf_counter()
                        call(rows[b])
                        latencies[(name, b)].append((time.perf_counter() - started) * 1000)
                    rate = in_flight_rate(variants[name], rows[b], requests)
                    rates[(name, b)].append(rate)
        report_quiet()
        for client in clients:
            client.close()
    results = summary(latencies, rates)
    out = BENCH_REPORTS  # not the scratch folder, which goes when the script ends
    out.mkdir(parents=True, exist_ok=True)
    (out / "serve.json").write_text(json.dumps(results, indent=1) + "\n")
    plot_latencies(latencies, 2048, out / "serve_latency_b2048.png")
    print(f"report: {out / 'serve.json'}, histogram: {out / 'serve_latency_b2048.png'}")


def in_flight_rate(make: Callable, frame: object, requests: int) -> float:
    """Rows/s with IN_FLIGHT callers (threads) sending `requests` requests in all, back to back: a
    server's throughput once its two stages can overlap (the in-process variant gets the same threads)."""
    callers = [make() for _ in range(IN_FLIGHT)]
    requests = max(1, requests // IN_FLIGHT) * IN_FLIGHT

    def send(call: Callable) -> None:
        for _ in range(requests // IN_FLIGHT):
            call(frame)

    started = time.perf_counter()
    with ThreadPoolExecutor(IN_FLIGHT) as pool:
        for sent in [pool.submit(send, call) for call in callers]:
            sent.result()  # a failed request fails the benchmark instead of inflating the rate
    return requests * len(frame) / (time.perf_counter() - started)


def summary(latencies: dict, rates: dict) -> list[dict]:
    """Prints the table (rows/s one request at a time, and median rows/s with IN_FLIGHT requests)
    with each variant's ratio to in-process; returns its rows."""
    print(
        f"{'variant':14s} {'batch':>5s} {'p50 ms':>8s} {'p99 ms':>8s} {'rows/s':>10s} {'vs in-proc':>10s}"
        f" {f'rows/s {IN_FLIGHT} in flight':>20s} {'vs in-proc':>10s}"
    )
    rows = []
    for b in BATCHES:
        local = b / (statistics.mean(latencies[("in-process", b)]) / 1000)
        local_in_flight = statistics.median(rates[("in-process", b)])
        for name in ("triton grpc", "triton http", "in-process"):
            values = latencies[(name, b)]
            rate = b / (statistics.mean(values) / 1000)
            in_flight = statistics.median(rates[(name, b)])
            row = {
                "variant": name,
                "batch": b,
                "p50_ms": round(statistics.median(values), 2),
                "p99_ms": round(float(np.percentile(values, 99)), 2),
                "rows_per_s": round(rate),
                "vs_in_process": round(rate / local, 2),
                f"rows_per_s_{IN_FLIGHT}_in_flight": round(in_flight),
                f"vs_in_process_{IN_FLIGHT}_in_flight": round(in_flight / local_in_flight, 2),
            }
            rows.append(row)
            print(
                f"{name:14s} {b:5d} {row['p50_ms']:8.2f} {row['p99_ms']:8.2f} {rate:10,.0f}"
                f" {rate / local:9.2f}x {in_flight:20,.0f} {in_flight / local_in_flight:9.2f}x"
            )
    return rows


def plot_latencies(latencies: dict, batch: int, path: Path) -> None:
    """A histogram of each variant's request latencies at one batch size."""
    figure, axes = plt.subplots(figsize=(7, 4))
    for (name, b), values in latencies.items():
        if b == batch:
            axes.hist(values, bins=40, alpha=0.5, label=f"{name} (p99 {np.percentile(values, 99):.1f} ms)")
    axes.set_xlabel("latency (ms)")
    axes.set_ylabel("requests")
    axes.set_title(f"raw-feature requests, batch {batch}")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


if __name__ == "__main__":
    main()
