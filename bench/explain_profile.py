"""The rapids-explain profile as it is (the RAPIDS jar, asked through ExplainPlan) against the same
profile with the RAPIDS plugin on in explain-only mode (how it was until the plugin's start-up cost
was measured): fresh processes, interleaved round by round, each building its session, then ingesting
and featurizing the same small generated Criteo data (featurize asks the jar for its plans' GPU
eligibility). Prints the medians and the ratios of session start and of ingest plus featurize.

    .venv/bin/python bench/explain_profile.py [--rows-per-day 20000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from harness import print_medians, probe_result, report_quiet, scratch_folder

from spark_jobs.generate import GeneratorConfig, generate
from spark_jobs.layout import GeneratedData, day_splits
from spark_jobs.session import build_session

PLUGIN = {"spark.plugins": "com.nvidia.spark.SQLPlugin"}
# One process: the session, then ingest and featurize into a scratch folder; prints its seconds.
PROBE = """
import json, sys, time
started = time.perf_counter()
from spark_jobs.featurize import featurize
from spark_jobs.ingest import ingest
from spark_jobs.session import build_session
raw, scratch, conf, splits = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), json.loads(sys.argv[4])
spark = build_session("rapids-explain", "bench-explain-profile", conf)
session = time.perf_counter()
ingest(spark, raw, f"{scratch}/bronze", f"{scratch}/rejects")
report = featurize(spark, f"{scratch}/bronze", f"{scratch}/features", f"{scratch}/workflow", splits)
done = time.perf_counter()
print("RESULT", json.dumps({"session_s": session - started, "stages_s": done - session,
                            "gpu_eligible_fraction": report["gpu_eligible_fraction"]}))
"""


def _probe(raw: Path, scratch: Path, conf: dict[str, str], splits: dict) -> dict:
    command = [sys.executable, "-c", PROBE, str(raw), str(scratch), json.dumps(conf), json.dumps(splits)]
    return json.loads(probe_result(command, "RESULT ", "the probe"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows-per-day", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    scratch = scratch_folder("bench-explain-profile-")
    config = GeneratorConfig(rows_per_day=args.rows_per_day)
    spark = build_session("local", "bench-explain-profile-data", {"spark.ui.showConsoleProgress": "false"})
    data = GeneratedData(str(scratch / "data"))
    generate(spark, data.root, config)
    spark.stop()
    jar_only, with_plugin = "rapids-explain (jar only)", "with the plugin in explain-only mode"
    variants = {jar_only: {}, with_plugin: PLUGIN}
    seconds: dict[str, dict[str, list[float]]] = {"session_s": {}, "stages_s": {}}
    report_quiet()
    for round_ in range(args.rounds):
        for name, conf in sorted(variants.items(), reverse=round_ % 2 == 1):
            folder = scratch / f"round-{round_}-{'plugin' if conf else 'jar'}"
            result = _probe(Path(data.raw), folder, conf, day_splits(config.days))
            for key in seconds:
                seconds[key].setdefault(name, []).append(result[key])
            print(f"round {round_ + 1} {name}: {json.dumps(result)}", flush=True)
    report_quiet()
    for key, label in (("session_s", "session start"), ("stages_s", "ingest + featurize")):
        print(f"{label} ({config.days * args.rows_per_day:,} rows):")
        medians = print_medians(seconds[key], None, unit="s", digits=1)
        print(f"  with the plugin / jar only = {medians[with_plugin] / medians[jar_only]:.2f}x")


if __name__ == "__main__":
    main()
