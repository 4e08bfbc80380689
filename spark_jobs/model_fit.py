"""Training a model of a schema on some feature files: the step `sparkrec train` shares between the
CTR models (spark_jobs/train.py) and the collaborative-filtering ones (spark_jobs/train_cf.py)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from pyspark.sql import SparkSession

from rec_plugin import storage
from rec_plugin.errors import InputError
from rec_plugin.schema import Schema
from training.data import FileSet
from training.grow import check_warm_start
from training.launch import launch
from training.loop import TrainSpec
from training.models import ModelConfig, build_model
from training.run_directory import RunDirectory

# Options that shape the model's tables rather than its layers.
TABLE_OPTIONS = ("embedding_dim",)
# The options that go into the model's config; the others are the TrainSpec's.
MODEL_OPTIONS = frozenset((*TABLE_OPTIONS, *ModelConfig.HYPERPARAMETERS))


def fit(
    spark: SparkSession,
    schema: Schema,
    train_files: FileSet,
    run_dir: str,
    model: str,
    backend: str,
    workers: int,
    **options: object,
) -> tuple[torch.nn.Module, dict]:
    """Trains `model` (its inputs and tables from `schema`) on `train_files` and writes the run
    directory's config, spec, checkpoints and weights; returns the trained model (in this process) and
    the workers' summary. `options` as train()'s."""
    # Qualified as Spark resolves the other paths (relative paths against its working directory or
    # default filesystem), so the workers, which have no JVM, write where the driver reads.
    run = RunDirectory(storage.qualified(spark, run_dir))
    config = model_config(model, schema, options)
    if options.get("warm_start"):
        options["warm_start"] = warm_start_uri(spark, str(options["warm_start"]), run, config, backend)
    if not options.get("resume"):  # a fresh run: no checkpoints of an earlier run to mix with
        run.clear_checkpoints()
    spec_options = {k: v for k, v in options.items() if k not in MODEL_OPTIONS}
    if spec_options.get("sparse_optimizer") is None:
        spec_options["sparse_optimizer"] = default_sparse_optimizer(backend)
    spec = TrainSpec(
        model=config.to_dict(),
        train=train_files.to_dict(),
        run_dir=run.uri,
        schema=TrainSpec.schema_dict(schema),
        backend=backend,
        **spec_options,
    )
    run.write_model_config(config)
    run.write_spec(spec.to_dict())
    summary = launch(spark, spec, workers)
    trained = build_model(config)
    trained.load_state_dict(run.weights())
    return trained, summary


def model_config(model: str, schema: Schema, options: Mapping[str, object]) -> ModelConfig:
    """The config `fit` trains `model` of `schema` with, given train()'s `options`."""
    return ModelConfig.from_schema(model, schema, **{k: v for k, v in options.items() if k in MODEL_OPTIONS})


def warm_start_uri(
    spark: SparkSession, production: str, run: RunDirectory, config: ModelConfig, backend: str
) -> str:
    """The production run's URI, once warm starting `run` (a model of `config` on `backend`) from it
    is possible (training/grow.py); refused in one line before anything is written, the production
    run being `run` itself too."""
    uri = RunDirectory(storage.qualified(spark, production)).uri
    if uri == run.uri:
        raise InputError(
            f"--warm-start {production} is the run directory this run trains into (its checkpoints are "
            "cleared): train into another --run-dir"
        )
    check_warm_start(uri, config, backend)
    return uri


def default_sparse_optimizer(backend: str) -> str:
    """SparseAdam, except for TorchRec's fused tables, which on CPU have Adagrad but no Adam."""
    return "adagrad" if backend == "torchrec" else TrainSpec.sparse_optimizer
