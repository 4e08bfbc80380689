"""A fresh process's Spark session with and without the JVM's class archive (spark_jobs/class_archive.py):
the seconds to build the session, then to run its first Delta write and read, interleaved round by
round; prints the medians and the ratio. Without: the same process with $SPARKREC_CACHE on an empty
folder (the jars stay where $SPARKREC_JAR_DIR says).

    .venv/bin/python bench/session_start.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from harness import print_medians, probe_result, report_quiet, scratch_folder

from spark_jobs.session import JAR_DIR, class_archive

# One process: a session, a small Delta table written and read back, the seconds it took.
PROBE = """
import sys, time
from spark_jobs.session import build_session
started = time.perf_counter()
spark = build_session("local", "bench-session-start", {"spark.ui.showConsoleProgress": "false"})
spark.range(1000).selectExpr("id", "id % 4 AS day").write.format("delta").partitionBy("day").save(sys.argv[1])
spark.read.format("delta").load(sys.argv[1]).where("day = 1").count()
print("SECONDS", time.perf_counter() - started)
"""


def _seconds(table: Path, cache: str | None) -> float:
    environment = {**os.environ, "SPARKREC_JAR_DIR": str(JAR_DIR)}
    if cache is not None:
        environment["SPARKREC_CACHE"] = cache
    return float(
        probe_result([sys.executable, "-c", PROBE, str(table)], "SECONDS ", "the probe", env=environment)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if not class_archive().is_file():
        raise SystemExit(f"{class_archive()} is missing: run make setup")
    scratch = scratch_folder("bench-session-start-")
    variants = {"with the class archive": None, "without": str(scratch / "empty-cache")}
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    report_quiet()
    for round_ in range(args.rounds):
        for name, cache in sorted(variants.items(), reverse=round_ % 2 == 1):
            seconds[name].append(
                _seconds(scratch / f"round-{round_}" / ("archived" if cache is None else "plain"), cache)
            )
            print(f"round {round_ + 1} {name}: {seconds[name][-1]:.1f} s", flush=True)
    report_quiet()
    medians = print_medians(seconds, 1000, unit="s")
    print(f"without / with = {medians['without'] / medians['with the class archive']:.2f}x")


if __name__ == "__main__":
    main()
