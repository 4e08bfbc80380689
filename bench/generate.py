"""Generator throughput: whole-stage codegen off (sparkrec's setting) against on (Spark's default).

Both run interleaved in one Spark session on the same config, median of several runs each.

    .venv/bin/python bench/generate.py [--rows-per-day 500000] [--days 4] [--repeats 3]
"""

from __future__ import annotations

import tempfile

from harness import bench_setup, print_medians, report_quiet

from spark_jobs.generate import generate
from spark_jobs.session import WIDE_PROJECTIONS


def main() -> None:
    args, spark, config = bench_setup(__doc__, "bench-generate")
    report_quiet()
    variants = {
        "whole-stage codegen (baseline)": {"spark.sql.codegen.wholeStage": "true"},
        "per-operator codegen (sparkrec)": WIDE_PROJECTIONS,
    }
    rates: dict[str, list[float]] = {name: [] for name in variants}
    with tempfile.TemporaryDirectory() as scratch:
        generate(spark, f"{scratch}/warmup", config)
        for repeat in range(args.repeats):
            # Each variant writes its own folder (no timed delete of the other's output), and the two
            # take turns going first.
            order = list(variants.items())[:: 1 if repeat % 2 == 0 else -1]
            for number, (name, conf) in enumerate(order):
                out = f"{scratch}/{repeat}-{number}"
                rates[name].append(generate(spark, out, config, conf)["rows_per_s"])
    medians = print_medians(rates, args.days * args.rows_per_day)
    baseline, candidate = medians.values()
    print(f"ratio sparkrec / baseline: {candidate / baseline:.2f}x")


if __name__ == "__main__":
    main()
