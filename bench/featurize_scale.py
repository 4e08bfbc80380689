"""Featurize where vocabularies outgrow a broadcast: 50M rows, fields of up to 10M values, sparkrec only.

Generates and ingests once (or reuses --data / --bronze), then runs featurize once while a thread
samples the resident memory of this process (the driver's Python) and of Spark's JVM (in local mode
the driver and the executors) every second. Prints and writes artifacts/bench/featurize_scale.json:
the time, rows/s, the peak memory of each, and each vocabulary's values with the join transform chose
for it (broadcast up to the Categorify broadcast limit, shuffle above it).

    .venv/bin/python bench/featurize_scale.py [--rows-per-day 12500000] [--days 4]
        [--max-cardinality 10000000] [--data DIR] [--bronze TABLE] [--broadcast-max-values N]
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from pathlib import Path

import psutil
from harness import bench_bronze, bench_setup, report_quiet, scratch_folder

from rec_plugin.ops.categorify import BROADCAST_MAX_VALUES, DEFAULT_BROADCAST_MAX_VALUES
from rec_plugin.schema import Tags
from rec_plugin.workflow import Workflow
from spark_jobs.featurize import featurize

REPORT = Path(__file__).resolve().parents[1] / "artifacts" / "bench" / "featurize_scale.json"


class PeakMemory:
    """The largest resident set seen, per role, while the block runs (sampled every second)."""

    def __init__(self) -> None:
        self.peak = {"driver_python": 0, "spark_jvm": 0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        me = psutil.Process()
        while not self._stop.wait(1.0):
            self.peak["driver_python"] = max(self.peak["driver_python"], me.memory_info().rss)
            for child in me.children(recursive=True):
                try:  # a child (a Python worker) may end between listing and reading it
                    if child.name() == "java":
                        self.peak["spark_jvm"] = max(self.peak["spark_jvm"], child.memory_info().rss)
                except psutil.NoSuchProcess:
                    continue

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def main() -> None:
    def broadcast_limit(parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--broadcast-max-values",
            type=int,
            default=DEFAULT_BROADCAST_MAX_VALUES,
            help=f"{BROADCAST_MAX_VALUES}: the largest vocabulary transform broadcasts",
        )

    args, spark, config = bench_setup(
        __doc__, "bench-featurize-scale", 12_500_000, 10_000_000, True, broadcast_limit
    )
    spark.conf.set(BROADCAST_MAX_VALUES, str(args.broadcast_max_values))
    scratch = scratch_folder("bench-featurize-scale-")
    bronze, splits = bench_bronze(spark, args, config, scratch)
    report_quiet()
    with PeakMemory() as memory:
        started = time.perf_counter()
        featured = featurize(spark, bronze, str(scratch / "features"), str(scratch / "wf"), splits)
        seconds = time.perf_counter() - started
    limit = args.broadcast_max_values
    schema = Workflow.load_schema(str(scratch / "wf"), spark)
    vocabularies = {
        c.name: {"values": c.cardinality - 1, "join": "shuffle" if c.cardinality - 1 > limit else "broadcast"}
        for c in schema
        if c.has(Tags.CATEGORICAL)
    }
    report = {
        "rows": featured["rows_out"],
        "max_cardinality": args.max_cardinality,
        "seconds": round(seconds, 1),
        "rows_per_s": round(featured["rows_out"] / seconds, 1),
        "peak_rss_gib": {role: round(rss / 2**30, 2) for role, rss in memory.peak.items()},
        "broadcast_max_values": limit,
        "vocabularies": vocabularies,
    }
    print(json.dumps(report, indent=2))
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {REPORT}")


if __name__ == "__main__":
    main()
