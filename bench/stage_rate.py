"""One throughput figure of one checkout, in a fresh process: generate, ingest, featurize, loader or
training rows/s on a generated Criteo data set. bench/before_after.py runs it against each tree it
compares (cwd and PYTHONPATH = that tree), so the figure measures that tree's code.

    python bench/stage_rate.py generate|ingest|featurize|loader|train --raw R --bronze B --scratch S
        [--schema-from WF] [--rows-per-day N]

generate writes 4 days of N rows into S/data (before_after.py made R so too): what a test or the demo
pays to make data;
ingest reads R into S/bronze; featurize reads B (one bronze table for every tree) into S/features and
S/workflow; loader and train read those. A baseline from before the
schema contract (#12) built its loader and model without a schema: `--schema-from` names a workflow
fitted on the same data whose cardinalities size that baseline's DLRM.
"""

from __future__ import annotations

import argparse
import inspect
import json
import time
from pathlib import Path

from delta.tables import DeltaTable
from harness import scratch_folder

from spark_jobs.featurize import featurize
from spark_jobs.generate import GeneratorConfig, generate
from spark_jobs.ingest import ingest
from spark_jobs.session import build_session
from spark_jobs.train import feature_files
from training.data import BatchLoader
from training.loop import TrainSpec, train_worker
from training.models import ModelConfig

SPLITS = {"train": [0, 1], "valid": [2], "test": [3]}


def _schema_json(workflow: str) -> dict:
    return json.loads((Path(workflow) / "schema.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stage", choices=["generate", "ingest", "featurize", "loader", "train"])
    parser.add_argument("--raw", required=True)
    parser.add_argument("--bronze", required=True)
    parser.add_argument("--scratch", required=True, type=Path)
    parser.add_argument("--schema-from", help="a fitted workflow of the same data (for a pre-#12 baseline)")
    parser.add_argument("--rows-per-day", type=int, default=GeneratorConfig.rows_per_day, help="(generate)")
    args = parser.parse_args()
    spark = build_session("local", "bench-stage-rate", {"spark.ui.showConsoleProgress": "false"})
    features, workflow = str(args.scratch / "features"), str(args.scratch / "workflow")
    if args.stage == "generate":
        config = GeneratorConfig(days=4, rows_per_day=args.rows_per_day)
        started = time.perf_counter()
        generate(spark, str(args.scratch / "data"), config)
        print("RATE", config.days * config.rows_per_day / (time.perf_counter() - started))
        return
    if args.stage == "ingest":
        bronze = str(args.scratch / "bronze")
        started = time.perf_counter()
        ingest(spark, args.raw, bronze, str(args.scratch / "rejects"))
        elapsed = time.perf_counter() - started
        print("RATE", spark.read.format("delta").load(bronze).count() / elapsed)
        return
    if args.stage == "featurize":
        started = time.perf_counter()
        report = featurize(spark, args.bronze, features, workflow, SPLITS)
        print("RATE", report["rows_out"] / (time.perf_counter() - started))
        return
    version = DeltaTable.forPath(spark, features).history(1).first()["version"]
    train = feature_files(spark, features, version, SPLITS["train"])
    schema_based = "schema" in inspect.signature(BatchLoader).parameters
    if schema_based:
        from rec_plugin.workflow import Workflow

        schema = Workflow.load_schema(workflow, spark)
        loader = BatchLoader(train, schema, 1024)
        model = ModelConfig.from_schema("dlrm", schema)
        extra = {"schema": json.loads(schema.to_json())}
    else:
        columns = _schema_json(args.schema_from)["columns"]
        loader = BatchLoader(train, 1024)
        model = ModelConfig("dlrm", tuple(c["cardinality"] for c in columns if c.get("cardinality")))
        extra = {}
    if args.stage == "loader":
        started = time.perf_counter()
        for _ in loader.epoch(0):
            pass
        print("RATE", loader.rows_read / (time.perf_counter() - started))
        return
    run_dir = str(scratch_folder("bench-stage-rate-"))
    spec = TrainSpec(model=model.to_dict(), train=train.to_dict(), run_dir=run_dir, progress=False, **extra)
    print("RATE", train_worker(spec.to_dict())["samples_per_s"])


if __name__ == "__main__":
    main()
