"""Generator throughput: whole-stage codegen off (sparkrec's setting) against on (Spark's default).

Both run interleaved in one Spark session on the same config, median of several runs each.

    .venv/bin/python bench/generate.py [--rows-per-day 500000] [--days 4] [--repeats 3]
"""

from __future__ import annotations

import argparse
import tempfile

from harness import print_medians, report_quiet

from spark_jobs.generate import WIDE_PROJECTIONS, GeneratorConfig, generate
from spark_jobs.session import build_session


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows-per-day", type=int, default=500_000)
    parser.add_argument("--days", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    report_quiet()
    spark = build_session("local", "bench-generate", {"spark.ui.showConsoleProgress": "false"})
    config = GeneratorConfig(days=args.days, rows_per_day=args.rows_per_day)
    variants = {
        "whole-stage codegen (baseline)": {"spark.sql.codegen.wholeStage": "true"},
        "per-operator codegen (sparkrec)": WIDE_PROJECTIONS,
    }
    rates: dict[str, list[float]] = {name: [] for name in variants}
    with tempfile.TemporaryDirectory() as scratch:
        generate(spark, f"{scratch}/warmup", config)
        for repeat in range(args.repeats):
            for name, conf in variants.items():
                rates[name].append(generate(spark, f"{scratch}/{repeat}", config, conf)["rows_per_s"])
    medians = print_medians(rates, args.days * args.rows_per_day)
    baseline, candidate = medians.values()
    print(f"ratio sparkrec / baseline: {candidate / baseline:.2f}x")


if __name__ == "__main__":
    main()
