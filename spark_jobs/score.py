"""sparkrec score: raw rows of the bronze Delta table -> a Delta predictions table, in batch.

In-process (the run's TorchScript model, loaded once per Python worker, applied with mapInPandas
after the Spark workflow) or through Triton (`--via-triton HOST:GRPC_PORT`: raw fields in batches of
2,048 over gRPC to the ensemble, which runs the same workflow). The table is partitioned by day and
each run replaces exactly the days it scores, so rerunning for the same input adds no duplicates.

    spark-submit spark_jobs/score.py --bronze lake/bronze --days 3 --predictions lake/predictions \\
        --run-dir runs/dlrm --workflow lake/workflow   # or: --via-triton 127.0.0.1:8001 --name ctr
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from delta.tables import DeltaTable
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from rec_plugin.schema import CATEGORICAL, DAY, DENSE, LINE_NUMBER, SOURCE_FILE
from rec_plugin.workflow import Workflow
from serving.allocator import keep_freed_memory
from serving.export import torchscript
from spark_jobs.session import build_session

KEYS = [DAY, SOURCE_FILE, LINE_NUMBER]
SCHEMA = f"{DAY} int, {SOURCE_FILE} string, {LINE_NUMBER} long, probability float"
TORCHSCRIPT = "model_torchscript.pt"
TRITON_BATCH = 2048


@cache
def _model(path: str) -> torch.jit.ScriptModule:
    """Loaded once per Python worker process (Spark reuses its workers across tasks), which keeps
    freed batch memory from then on (serving/allocator.py)."""
    keep_freed_memory()
    return torch.jit.load(path).eval()


def in_process(model_path: str) -> Callable[[Iterator[pd.DataFrame]], Iterator[pd.DataFrame]]:
    def score(frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        model = _model(model_path)
        for frame in frames:
            dense = torch.from_numpy(frame[DENSE].to_numpy(np.float32))
            ids = torch.from_numpy(frame[CATEGORICAL].to_numpy(np.int64))
            with torch.no_grad():
                probability = model(dense, ids).numpy()[:, 0]
            yield frame[KEYS].assign(probability=probability)

    return score


def via_triton(url: str, name: str) -> Callable[[Iterator[pd.DataFrame]], Iterator[pd.DataFrame]]:
    def score(frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        import tritonclient.grpc as triton_grpc

        from serving.client import predict_raw

        client = triton_grpc.InferenceServerClient(url)
        for frame in frames:
            parts = []
            for start in range(0, len(frame), TRITON_BATCH):
                chunk = frame.iloc[start : start + TRITON_BATCH]
                dense = chunk[DENSE].astype("float64").to_numpy()
                tokens = chunk[CATEGORICAL].to_numpy(object)
                parts.append(predict_raw(client, name, dense, tokens)[:, 0])
            yield frame[KEYS].assign(probability=np.concatenate(parts) if parts else np.zeros(0, np.float32))
        client.close()

    return score


def score(
    spark: SparkSession,
    bronze: str,
    days: list[int],
    predictions: str,
    run_dir: str | None = None,
    workflow: str | None = None,
    via_triton_url: str | None = None,
    name: str = "ctr",
    bronze_version: int | None = None,
) -> dict:
    """Scores the days' rows and replaces those days in the predictions table; the report section."""
    if bronze_version is None:
        bronze_version = DeltaTable.forPath(spark, bronze).history(1).first()["version"]
    rows = (
        spark.read.format("delta")
        .option("versionAsOf", bronze_version)
        .load(bronze)
        .where(F.col(DAY).isin(days))
    )
    if via_triton_url:
        scored = rows.mapInPandas(via_triton(via_triton_url, name), SCHEMA)
        source = {"triton": via_triton_url, "model": name}
    else:
        if not (run_dir and workflow):
            raise ValueError("in-process scoring needs --run-dir and --workflow (or use --via-triton)")
        model_path = Path(run_dir) / TORCHSCRIPT
        torchscript(Path(run_dir)).save(str(model_path))
        features = Workflow.load(workflow, spark).transform(rows, keep=(SOURCE_FILE, LINE_NUMBER, DAY))
        scored = features.mapInPandas(in_process(str(model_path.resolve())), SCHEMA)
        source = {"run_dir": str(Path(run_dir).resolve())}
    lineage = {"bronze_table": bronze, "bronze_version": bronze_version, "days": days, **source}
    (
        scored.write.format("delta")
        .mode("overwrite")
        .option("replaceWhere", f"{DAY} IN ({', '.join(map(str, days))})")
        .option("userMetadata", json.dumps(lineage))
        .partitionBy(DAY)
        .save(predictions)
    )
    written = spark.read.format("delta").load(predictions).where(F.col(DAY).isin(days)).count()
    return {"rows": written, "predictions_table": predictions}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="sparkrec score", description=__doc__.splitlines()[0])
    parser.add_argument("--bronze", required=True, help="Delta table of raw rows (the bronze table)")
    parser.add_argument("--bronze-version", type=int, help="Delta version to read (default: latest)")
    parser.add_argument("--days", required=True, type=lambda t: [int(d) for d in t.split(",") if d])
    parser.add_argument("--predictions", required=True, help="Delta predictions table path")
    parser.add_argument("--run-dir", help="in-process: the trained run")
    parser.add_argument("--workflow", help="in-process: the fitted workflow")
    parser.add_argument(
        "--via-triton", metavar="HOST:GRPC_PORT", help="score through a Triton server instead"
    )
    parser.add_argument("--name", default="ctr", help="the ensemble's name on the Triton server")
    parser.add_argument("--profile", default="local", help="Spark profile from conf/spark/")
    args = parser.parse_args(argv)
    spark = build_session(args.profile, "sparkrec-score")
    report = score(
        spark, args.bronze, args.days, args.predictions, args.run_dir, args.workflow, args.via_triton,
        args.name, args.bronze_version,
    )  # fmt: skip
    print(json.dumps({"score": report}, indent=2))
    return report


if __name__ == "__main__":
    main()
