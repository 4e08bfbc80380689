"""sparkrec train: the featurized Delta table -> a trained CTR model, evaluated per day against the oracle.

Reads a pinned version of the features table (latest by default), trains on its train days with
N Horovod workers launched from Spark (or torch DDP workers via TorchDistributor, or in-process),
then scores every validation and test day and writes metrics.json, loss.png and auc_per_day.png
into the run directory beside the checkpoints and the final weights.

    spark-submit spark_jobs/train.py --features lake/features --workflow lake/workflow \\
        --oracle data/oracle --model dlrm --workers 2 --backend horovod --run-dir runs/dlrm
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch
from delta.tables import DeltaTable
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from rec_plugin import storage
from rec_plugin.schema import DAY, LABEL, LINE_NUMBER, SOURCE_FILE
from spark_jobs.generate import oracle_metrics
from spark_jobs.session import build_session
from training import plots
from training.data import FileSet
from training.evaluate import metrics, predict
from training.launch import launch
from training.loop import WEIGHTS, TrainSpec
from training.models import MODELS, ModelConfig, build_model

CONFIG = "model_config.json"


def feature_files(spark: SparkSession, features: str, version: int, days: list[int]) -> FileSet:
    """The parquet files holding `days` at table version `version`, and their row count."""
    table = spark.read.format("delta").option("versionAsOf", version).load(features)
    files = [f for f in table.inputFiles() if any(f"/{DAY}={d}/" in f for d in days)]
    rows = table.where(F.col(DAY).isin(days)).count()
    return FileSet(tuple(sorted(f.removeprefix("file:") for f in files)), rows)


def oracle_on(spark: SparkSession, features: str, version: int, oracle: str, days: list[int]) -> dict:
    """The planted model's AUC and logloss on exactly the feature rows of `days` (joined by line)."""
    keys = [DAY, SOURCE_FILE, LINE_NUMBER]
    rows = spark.read.format("delta").option("versionAsOf", version).load(features).select(*keys)
    truth = spark.read.format("delta").load(oracle).select(*keys, LABEL, "p_click", "p_first_order")
    return oracle_metrics(rows.where(F.col(DAY).isin(days)).join(truth, keys))


def evaluate(
    spark: SparkSession,
    model: torch.nn.Module,
    features: str,
    version: int,
    days: list[int],
    oracle: str | None,
) -> dict:
    """The model's metrics on the rows of `days`, beside the oracle's on the same rows."""
    labels, scores = predict(model, feature_files(spark, features, version, days))
    truth = oracle_on(spark, features, version, oracle, days) if oracle else {}
    return {
        **metrics(labels, scores),
        "oracle_auc": truth.get("oracle_auc"),
        "oracle_logloss": truth.get("oracle_logloss"),
    }


def train(
    spark: SparkSession,
    features: str,
    workflow: str,
    run_dir: str,
    model: str = "dlrm",
    backend: str = "horovod",
    workers: int = 2,
    oracle: str | None = None,
    features_version: int | None = None,
    **options: object,
) -> dict:
    """Trains, evaluates per day and writes the run directory; returns the report's train section.

    `options` are TrainSpec fields (epochs, batch_size, dense_lr, sparse_lr, seed, checkpoint_every,
    resume, progress) and ModelConfig fields (embedding_dim, ...)."""
    run = Path(run_dir).resolve()
    if not options.get("resume"):  # a fresh run: no checkpoints of an earlier run to mix with
        shutil.rmtree(run / "checkpoints", ignore_errors=True)
    run.mkdir(parents=True, exist_ok=True)
    if features_version is None:
        features_version = DeltaTable.forPath(spark, features).history(1).first()["version"]
    described = json.loads(storage.read_text(spark, f"{workflow}/features.json"))
    sizes = tuple(described["cardinalities"][c] for c in described["categorical"])
    model_fields = set(ModelConfig.__dataclass_fields__) - {"name", "cardinalities"}
    config = ModelConfig(model, sizes, **{k: v for k, v in options.items() if k in model_fields})
    spec_options = {k: v for k, v in options.items() if k not in model_fields}
    splits = described["splits"]
    spec = TrainSpec(
        model=config.to_dict(),
        train=feature_files(spark, features, features_version, splits["train"]).to_dict(),
        run_dir=str(run),
        backend=backend,
        **spec_options,
    )
    (run / CONFIG).write_text(json.dumps(config.to_dict(), indent=2))
    (run / "spec.json").write_text(json.dumps(spec.to_dict(), indent=2))
    summary = launch(spark, spec, workers)
    trained = build_model(config)
    trained.load_state_dict(torch.load(run / WEIGHTS, weights_only=True))
    eval_days = [(d, split) for split in ("valid", "test") for d in splits.get(split, [])]
    days = [
        {"day": d, "split": split, **evaluate(spark, trained, features, features_version, [d], oracle)}
        for d, split in eval_days
    ]
    test = evaluate(spark, trained, features, features_version, splits["test"], oracle)
    report = {
        "model": model,
        "backend": backend,
        "workers": workers,
        "samples_per_s": summary["samples_per_s"],
        "auc": test["auc"],
        "logloss": test["logloss"],
        "oracle_auc": test["oracle_auc"],
        "oracle_logloss": test["oracle_logloss"],
        "run_dir": str(run),
    }
    details = {**report, "features_version": features_version, "steps": summary["steps"], "days": days}
    (run / "metrics.json").write_text(json.dumps(details, indent=2) + "\n")
    plots.loss_curve(summary["losses"], run / "loss.png", f"{model}: training loss")
    plots.auc_per_day(days, run / "auc_per_day.png", f"{model}: AUC per day")
    return report


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="sparkrec train", description=__doc__.splitlines()[0])
    parser.add_argument("--features", required=True, help="Delta features table path")
    parser.add_argument("--features-version", type=int, help="Delta version to read (default: latest)")
    parser.add_argument("--workflow", required=True, help="the saved workflow (holds features.json)")
    parser.add_argument(
        "--oracle", help="the generator's oracle table, to report the planted model's metrics"
    )
    parser.add_argument("--run-dir", required=True, help="checkpoints, weights, metrics and plots go here")
    parser.add_argument("--model", choices=sorted(MODELS), default="dlrm")
    parser.add_argument("--backend", choices=["horovod", "torch", "single"], default="horovod")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=TrainSpec.epochs)
    parser.add_argument("--batch-size", type=int, default=TrainSpec.batch_size, help="per worker")
    parser.add_argument("--dense-lr", type=float, default=TrainSpec.dense_lr)
    parser.add_argument("--sparse-lr", type=float, default=TrainSpec.sparse_lr)
    parser.add_argument("--embedding-dim", type=int, default=ModelConfig.embedding_dim)
    parser.add_argument("--seed", type=int, default=TrainSpec.seed)
    parser.add_argument("--checkpoint-every", type=int, default=TrainSpec.checkpoint_every, help="steps")
    parser.add_argument("--resume", action="store_true", help="continue from the run's latest checkpoint")
    parser.add_argument("--profile", default="local", help="Spark profile from conf/spark/")
    args = parser.parse_args(argv)
    spark = build_session(args.profile, "sparkrec-train")
    report = train(
        spark,
        args.features,
        args.workflow,
        args.run_dir,
        args.model,
        args.backend,
        args.workers,
        args.oracle,
        args.features_version,
        epochs=args.epochs,
        batch_size=args.batch_size,
        dense_lr=args.dense_lr,
        sparse_lr=args.sparse_lr,
        embedding_dim=args.embedding_dim,
        seed=args.seed,
        checkpoint_every=args.checkpoint_every,
        resume=args.resume,
    )
    print(json.dumps({"train": report}, indent=2))
    return report


if __name__ == "__main__":
    main()
