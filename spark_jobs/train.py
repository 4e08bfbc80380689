"""sparkrec train: the featurized Delta table -> a trained CTR model, evaluated per day against the oracle.

Reads a pinned version of the features table (latest by default), trains on its train days with
N Horovod workers launched from Spark (or torch DDP workers via TorchDistributor, or in-process),
then scores every validation and test day it holds and writes the metrics and their plots into the
run directory (training/run_directory.py: a path or URI on any filesystem) beside the checkpoints and
the final weights. Bad input is refused before training starts.

    spark-submit spark_jobs/train.py --features lake/features --workflow lake/workflow \\
        --oracle data/oracle --model dlrm --workers 2 --backend horovod --run-dir runs/dlrm

With --model ncf or multvae it trains on the interaction tables instead (spark_jobs/train_cf.py):

    spark-submit spark_jobs/train.py --interactions lake/interactions --workflow lake/workflow \
        --model ncf --workers 2 --backend torch --run-dir runs/ncf
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass

import torch
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from rec_plugin import storage
from rec_plugin.errors import CommandParser, InputError, run_command
from rec_plugin.features_description import TEST_SPLIT, TRAIN_SPLIT, VALID_SPLIT, FeaturesDescription
from rec_plugin.schema import DAY, ROW_KEYS, Schema, Tags
from rec_plugin.workflow import Workflow, spark_type
from spark_jobs.generate import oracle_figures
from spark_jobs.model_fit import fit
from spark_jobs.session import build_session
from spark_jobs.tracking import track_run, workflow_inputs
from spark_jobs.train_cf import train_cf
from training import plots
from training.data import FileSet
from training.distributed import BACKENDS, SHARDINGS
from training.evaluate import metrics, predict
from training.launch import check_workers
from training.loop import RUN_COST_KEYS, VALIDATION_KEYS, TrainSpec
from training.models import ALL_MODELS, CF_MODELS
from training.models.cf import NCF
from training.run_directory import RunDirectory
from training.step import PRECISIONS, SPARSE_LEARNING_RATES, SPARSE_OPTIMIZERS
from training.tune_directory import TunedConfig

# Epochs without a lower validation log loss after which a CTR model's training stops: with large
# tables they overfit from their second epoch and do not recover (the 8M-row Criteo-like data: 0.4577
# after one epoch, 0.4807 after two).
CTR_PATIENCE = 1


@dataclass(frozen=True)
class FeatureFileIndex:
    """Some days of a features table version: their parquet files (qualified URIs, readable from any
    worker) and rows by day, listed and counted in one pass for all the sets of those days that a run
    trains or evaluates on (each listing is a Delta query, ~1 s on a small table)."""

    files_by_day: dict[int, tuple[str, ...]]
    rows_by_day: dict[int, int]

    @classmethod
    def read(cls, spark: SparkSession, features: str, version: int, days: list[int]) -> FeatureFileIndex:
        """The index of `days` of `features` at `version` (the days it lacks are absent)."""
        table = spark.read.format("delta").option("versionAsOf", version).load(features)
        table = table.where(F.col(DAY).isin(days))
        named = {str(day): day for day in days}
        listed = storage.partition_files(table, DAY)
        files = {named[value]: tuple(names) for value, names in listed.items() if value in named}
        rows = {int(row[DAY]): int(row["count"]) for row in table.groupBy(DAY).count().collect()}
        return cls(files, rows)

    @property
    def days(self) -> set[int]:
        """The indexed days that the version holds (that have files)."""
        return set(self.files_by_day)

    def file_set(self, days: list[int]) -> FileSet:
        """The files holding `days` (in name order) and their row count."""
        files = sorted(name for day in set(days) for name in self.files_by_day.get(day, ()))
        return FileSet(tuple(files), sum(self.rows_by_day.get(day, 0) for day in set(days)))


def feature_files(spark: SparkSession, features: str, version: int, days: list[int]) -> FileSet:
    """The parquet files holding `days` at table version `version`, and their row count."""
    return FeatureFileIndex.read(spark, features, version, days).file_set(days)


def features_version_to_read(spark: SparkSession, features: str, version: int | None) -> int:
    """`version` of the features table (default: the latest), refused when the table or the version
    is not there."""
    try:
        return storage.delta_version(spark, features, "features table", version)
    except InputError as error:
        raise InputError(f"{error}: featurize it first (sparkrec featurize) or fix --features") from None


def require_features_of(spark: SparkSession, features: str, version: int, schema: Schema) -> None:
    """The features table holds every column of the workflow's schema, stored as its dtype says (the
    label in any number type): another table (bronze, a features table of another workflow) is refused
    in one line before any work, not by the loader's parse error mid-epoch."""
    held = dict(spark.read.format("delta").option("versionAsOf", version).load(features).dtypes)
    wrong = [
        f"{c.name} ({held[c.name] if c.name in held else 'absent'}, not {spark_type(c.dtype)})"
        for c in schema
        if c.name not in held or (not c.has(Tags.LABEL) and held[c.name] != spark_type(c.dtype))
    ]
    if wrong:
        raise InputError(
            f"{features} is not a features table of this workflow: columns {', '.join(wrong)}: "
            "give the table sparkrec featurize wrote with it (--features) or its workflow (--workflow)"
        )


def oracle_on(spark: SparkSession, features: str, version: int, oracle: str, days: list[int]) -> dict:
    """The planted model's AUC and logloss on exactly the feature rows of `days` (joined by line);
    {} where the oracle table lacks some of them."""
    rows = spark.read.format("delta").option("versionAsOf", version).load(features).select(*ROW_KEYS)
    return oracle_figures(spark, oracle, rows.where(F.col(DAY).isin(days)), "train")


def evaluate(
    spark: SparkSession,
    model: torch.nn.Module,
    schema: Schema,
    index: FeatureFileIndex,
    features: str,
    version: int,
    days: list[int],
    oracle: str | None,
) -> dict:
    """The model's metrics on the rows of `days` (files from `index`, of `features` at `version`),
    beside the oracle's on the same rows."""
    labels, scores = predict(model, index.file_set(days), schema)
    truth = oracle_on(spark, features, version, oracle, days) if oracle else {}
    return {
        **metrics(labels, scores),
        "oracle_auc": truth.get("oracle_auc"),
        "oracle_logloss": truth.get("oracle_logloss"),
    }


def days_held(spark: SparkSession, features: str, version: int) -> set[int]:
    """The days the features table holds at `version`, from its file list (no data is read)."""
    table = spark.read.format("delta").option("versionAsOf", version).load(features)
    return {int(day) for day in storage.partition_values(table, DAY)}


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

    The model's inputs and tables come from the workflow's schema (schema.json), the day splits from
    its features description (features.json). Bad input (no features table or no such version, no
    features.json or schema.json, no rows on the train days) is refused with an InputError before
    anything is written. The test metrics are None when the table has no test days. `options` are
    TrainSpec fields (epochs, batch_size, dense_lr, sparse_lr, sparse_optimizer, precision, seed,
    checkpoint_every, resume, warm_start, progress, patience), embedding_dim and the model's hyperparameters
    (ModelConfig.HYPERPARAMETERS)."""
    features_version = features_version_to_read(spark, features, features_version)
    if oracle is not None:  # checked before training, which its figures would otherwise follow
        storage.delta_version(spark, oracle, "oracle table (--oracle)")
    splits = FeaturesDescription.load(spark, workflow).splits
    schema = Workflow.load_schema(workflow, spark)
    require_features_of(spark, features, features_version, schema)
    named_days = [d for days in splits.values() for d in days]
    index = FeatureFileIndex.read(spark, features, features_version, named_days)
    train_files = index.file_set(splits[TRAIN_SPLIT])
    if train_files.rows == 0:
        raise InputError(
            f"the train days {splits['train']} hold no rows in features table {features} at version "
            f"{features_version}: featurize them (sparkrec featurize --train-days) or fix --features-version"
        )
    valid_files = index.file_set(splits.get(VALID_SPLIT, []))
    if valid_files.rows:  # scored after each epoch of a run of 2+ epochs, its best epoch kept
        options["valid"] = valid_files.to_dict()
        options.setdefault("patience", CTR_PATIENCE)
    trained, summary = fit(spark, schema, train_files, run_dir, model, backend, workers, **options)
    run = RunDirectory(storage.qualified(spark, run_dir))
    scored = {
        split: [d for d in splits.get(split, []) if d in index.days] for split in (VALID_SPLIT, TEST_SPLIT)
    }

    def evaluated(days: list[int]) -> dict:
        return evaluate(spark, trained, schema, index, features, features_version, days, oracle)

    days = [{"day": d, "split": split, **evaluated([d])} for split in scored for d in scored[split]]
    test = evaluated(scored[TEST_SPLIT]) if scored[TEST_SPLIT] else {}
    report = {
        "model": model,
        "backend": backend,
        "workers": workers,
        "samples_per_s": summary["samples_per_s"],
        "auc": test.get("auc"),
        "logloss": test.get("logloss"),
        "oracle_auc": test.get("oracle_auc"),
        "oracle_logloss": test.get("oracle_logloss"),
        "run_dir": run.uri,
    }
    costs = {key: summary[key] for key in (*RUN_COST_KEYS, *VALIDATION_KEYS)}
    details = {**report, "features_version": features_version, "steps": summary["steps"], **costs}
    details["days"] = days
    run.write_loss_plot(plots.loss_curve(summary["losses"], f"{model}: training loss", summary))
    run.write_auc_plot(plots.auc_per_day(days, f"{model}: AUC per day"))
    run.write_metrics(details)
    track_run(run.uri, summary["losses"], workflow_inputs(spark, workflow, features, features_version))
    return report


def _tuned_config(argv: list[str] | None) -> TunedConfig | None:
    """The --config file's contents, read before the other options so that it sets their defaults."""
    early = argparse.ArgumentParser(add_help=False)
    early.add_argument("--config")
    given, _ = early.parse_known_args(argv)
    return TunedConfig.load(given.config) if given.config else None


def count(text: str) -> int:
    """An option that counts something (workers, epochs, rows): 0 or less would train nothing."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a count (1 or more)")
    return value


def learning_rate(text: str) -> float:
    """A learning rate: above 0 (torch refuses any other, but only once a worker builds its optimizer)."""
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{value} is not a learning rate (above 0)")
    return value


def _refuse_flags_of_other_models(
    parser: CommandParser, args: argparse.Namespace, collaborative: bool
) -> None:
    """A flag the model's training would not read is refused, not ignored."""
    if collaborative:
        unread = {
            "--features": (args.features, "it trains on the interaction tables (--interactions)"),
            "--features-version": (
                args.features_version,
                "sparkrec interactions built its tables from one features version",
            ),
            "--oracle": (args.oracle, "the oracle's columns are in the interaction tables (--planted)"),
        }
        if args.model == NCF:
            unread["--patience"] = (args.patience, "it has no validation rows (ncf_eval is its test)")
    else:
        unread = {
            "--interactions": (args.interactions, "it trains on a features table"),
            "--pretrain": (args.pretrain or None, "only ncf pretrains towers"),
        }
    for flag, (value, why) in unread.items():
        if value is not None:
            parser.error(f"{flag} does not apply to --model {args.model}: {why}")


def main(argv: list[str] | None = None) -> dict:
    parser = CommandParser(prog="sparkrec train", description=__doc__.splitlines()[0])
    parser.add_argument("--features", help="Delta features table path (the CTR models)")
    parser.add_argument(
        "--interactions", help="the interaction tables' folder (ncf, multvae: sparkrec interactions)"
    )
    parser.add_argument("--features-version", type=int, help="Delta version to read (default: latest)")
    parser.add_argument(
        "--workflow", required=True, help="the saved workflow (holds schema.json and features.json)"
    )
    parser.add_argument(
        "--oracle", help="the generator's oracle table, to report the planted model's metrics"
    )
    parser.add_argument(
        "--run-dir", required=True, help="checkpoints, weights, metrics and plots go here (a path or URI)"
    )
    parser.add_argument("--model", choices=sorted(ALL_MODELS), default="dlrm")
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default="horovod",
        help="horovod or torch: data-parallel workers; torchrec: tables sharded across the workers "
        "by TorchRec, dense layers data-parallel; single: in this process",
    )
    parser.add_argument(
        "--sharding",
        choices=SHARDINGS,
        default=TrainSpec.sharding,
        help="torchrec: how tables are split across workers (row_wise needs GPUs; auto: the planner picks)",
    )
    parser.add_argument("--workers", type=count, help="default: 2; 1 for --backend single")
    parser.add_argument("--epochs", type=count, help="default: 1; multvae: 10")
    parser.add_argument(
        "--patience",
        type=count,
        help="2+ epochs: stop once this many epochs in a row have not bettered the validation score (CTR "
        "models: the validation days' log loss; multvae: its validation users' NDCG@100), whose best "
        f"epoch's weights are the run's (default: {CTR_PATIENCE} for CTR models; multvae trains every epoch)",
    )
    parser.add_argument("--batch-size", type=count, default=TrainSpec.batch_size, help="per worker")
    parser.add_argument("--dense-lr", type=learning_rate, default=TrainSpec.dense_lr)
    parser.add_argument(
        "--sparse-lr",
        type=learning_rate,
        help=f"the tables' learning rate (default per optimizer: {SPARSE_LEARNING_RATES})",
    )
    parser.add_argument(
        "--sparse-optimizer",
        choices=SPARSE_OPTIMIZERS,
        help="the embedding rows' optimizer (default adam; adagrad for torchrec: its CPU kernels lack adam)",
    )
    parser.add_argument(
        "--precision", choices=PRECISIONS, default=TrainSpec.precision, help="on GPUs: tf32 or bf16 autocast"
    )
    parser.add_argument(
        "--embedding-dim",
        type=count,
        help="every embedding table's width (default: the model's; 64 for dlrm, 16 for the other CTR models)",
    )
    parser.add_argument(
        "--prefetch",
        type=int,
        help="batches a thread reads ahead of the step (0: none; default 2 on GPUs, 0 on CPU)",
    )
    parser.add_argument("--seed", type=int, default=TrainSpec.seed)
    parser.add_argument("--checkpoint-every", type=count, default=TrainSpec.checkpoint_every, help="steps")
    parser.add_argument("--resume", action="store_true", help="continue from the run's latest checkpoint")
    parser.add_argument(
        "--warm-start",
        metavar="RUN_DIR",
        help="start from this (production) run's latest checkpoint, its tables grown to the workflow's "
        "vocabularies (new ids appended by Workflow.extend); another run directory than --run-dir",
    )
    parser.add_argument(
        "--pretrain",
        action="store_true",
        help="ncf: train the GMF and MLP towers alone at half the embedding dim first, then start NeuMF "
        "from their fused weights (He et al. 2017); their runs go under <run-dir>/pretrained",
    )
    parser.add_argument(
        "--config",
        help="a config sparkrec tune wrote (<tune-dir>/config.json): its model and options, which the "
        "options given here override",
    )
    parser.add_argument("--profile", default="local", help="Spark profile from conf/spark/")
    tuned = _tuned_config(argv)
    flags = {action.dest for action in parser._actions}
    if tuned is not None:
        parser.set_defaults(model=tuned.model, **{k: v for k, v in tuned.options.items() if k in flags})
    args = parser.parse_args(argv)
    collaborative = args.model in CF_MODELS
    if collaborative and not args.interactions:
        parser.error(f"--model {args.model} trains on interaction tables: give --interactions")
    if not collaborative and not args.features:
        parser.error(f"--model {args.model} trains on a features table: give --features")
    _refuse_flags_of_other_models(parser, args, collaborative)
    workers = args.workers or (1 if args.backend == "single" else 2)
    check_workers(args.backend, workers)
    spark = build_session(args.profile, "sparkrec-train")
    options = dict(
        epochs=args.epochs,
        patience=args.patience,
        batch_size=args.batch_size,
        dense_lr=args.dense_lr,
        sparse_lr=args.sparse_lr,
        sparse_optimizer=args.sparse_optimizer,
        precision=args.precision,
        sharding=args.sharding,
        prefetch=args.prefetch,
        embedding_dim=args.embedding_dim,
        seed=args.seed,
        checkpoint_every=args.checkpoint_every,
        resume=args.resume,
        warm_start=args.warm_start,
    )
    options = {key: value for key, value in options.items() if value is not None}
    if tuned is not None:  # its options without flags: the model's hyperparameters, torch_threads
        options = {**{k: v for k, v in tuned.options.items() if k not in flags}, **options}
    if collaborative:
        report = train_cf(
            spark,
            args.interactions,
            args.workflow,
            args.run_dir,
            args.model,
            args.backend,
            workers,
            args.pretrain,
            **options,
        )
    else:
        report = train(
            spark,
            args.features,
            args.workflow,
            args.run_dir,
            args.model,
            args.backend,
            workers,
            args.oracle,
            args.features_version,
            **options,
        )
    print(json.dumps({"train": report}, indent=2))
    return report


if __name__ == "__main__":
    run_command(main, "sparkrec train")
