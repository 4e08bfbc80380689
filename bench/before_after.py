"""Before/after on Criteo: generate, ingest, featurize, loader and training rows/s of this checkout
against a baseline commit, interleaved round by round in one run on the same bronze table; prints the
medians and the candidate/baseline ratios.

    .venv/bin/python bench/before_after.py --baseline 7f5fa48 [--rows-per-day 50000] [--rounds 3]
        [--stages generate,ingest,featurize,loader,train]

The baseline runs from a temporary git worktree of that commit with this checkout's virtualenv. Every
figure is a fresh process (bench/stage_rate.py), so JVM and import costs are paid alike; the featurize
figure is rows out over the whole featurize call (fit, save, transform, write, describe).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from harness import print_medians, probe_result, report_quiet, scratch_folder

from spark_jobs.generate import GeneratorConfig, generate
from spark_jobs.ingest import ingest
from spark_jobs.layout import GeneratedData
from spark_jobs.session import build_session

CHECKOUT = Path(__file__).resolve().parents[1]
PROBE = CHECKOUT / "bench" / "stage_rate.py"
STAGES = ("generate", "ingest", "featurize", "loader", "train")


def _rate(
    tree: Path, stage: str, raw: str, bronze: str, scratch: Path, schema_from: Path, rows_per_day: int
) -> float:
    """One figure: the probe run with `tree`'s code."""
    command = [sys.executable, str(PROBE), stage, "--raw", raw, "--bronze", bronze, "--scratch", str(scratch)]
    command += ["--schema-from", str(schema_from), "--rows-per-day", str(rows_per_day)]
    environment = {**os.environ, "PYTHONPATH": str(tree), "PYSPARK_PYTHON": sys.executable}
    return float(probe_result(command, "RATE ", f"{stage} in {tree}", cwd=tree, env=environment))


def _stages(text: str) -> tuple[str, ...]:
    """The named stages in pipeline order (the loader and training read a featurize's output)."""
    named = set(text.split(","))
    if unknown := sorted(named - set(STAGES)):
        raise argparse.ArgumentTypeError(f"unknown stages {unknown}: give some of {','.join(STAGES)}")
    return tuple(s for s in STAGES if s in named)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", required=True, help="the commit to compare against")
    parser.add_argument("--rows-per-day", type=int, default=GeneratorConfig.rows_per_day)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--stages", type=_stages, default=STAGES, help=f"some of {','.join(STAGES)}, in that order"
    )
    args = parser.parse_args()
    scratch = scratch_folder("bench-before-after-")
    spark = build_session("local", "bench-before-after", {"spark.ui.showConsoleProgress": "false"})
    data = GeneratedData(str(scratch / "data"))
    generate(spark, data.root, GeneratorConfig(days=4, rows_per_day=args.rows_per_day))
    raw, bronze = data.raw, str(scratch / "bronze")
    ingest(spark, raw, bronze, str(scratch / "rejects"))
    spark.stop()
    baseline = scratch / "baseline"
    git = ["git", "-C", str(CHECKOUT), "worktree"]
    subprocess.run([*git, "add", "-q", "--detach", str(baseline), args.baseline], check=True)
    trees = {f"baseline {args.baseline}": baseline, "candidate (this checkout)": CHECKOUT}
    fitted = scratch / "candidate-0" / "workflow"  # sizes a pre-schema baseline's model
    rates: dict[str, dict[str, list[float]]] = {stage: {name: [] for name in trees} for stage in args.stages}
    try:
        report_quiet()
        for round_ in range(args.rounds):
            # The candidate first in even rounds (its first workflow sizes the baseline's model).
            for name, tree in sorted(trees.items(), reverse=round_ % 2 == 0):
                out = scratch / f"{name.split()[0]}-{round_}"
                for stage in args.stages:
                    rate = _rate(tree, stage, raw, bronze, out, fitted, args.rows_per_day)
                    rates[stage][name].append(rate)
                    print(f"round {round_ + 1} {name} {stage}: {rate:,.0f} rows/s", flush=True)
        report_quiet()
    finally:
        subprocess.run([*git, "remove", "--force", str(baseline)], check=True)
    for stage in args.stages:
        print(f"== {stage}")
        # generate, ingest and featurize cover all 4 days; the loader and training the 2 training days.
        rows = (4 if stage in ("generate", "ingest", "featurize") else 2) * args.rows_per_day
        medians = list(print_medians(rates[stage], rows).values())
        print(f"{stage}: candidate / baseline = {medians[1] / medians[0]:.2f}x")


if __name__ == "__main__":
    main()
