"""Training a model of a schema on some feature files: the step `sparkrec train` shares between the
CTR models (spark_jobs/train.py) and the collaborative-filtering ones (spark_jobs/train_cf.py)."""

from __future__ import annotations

import json
from collections.abc import Mapping

import torch
from pyspark.sql import SparkSession

from rec_plugin import storage
from rec_plugin.errors import InputError
from rec_plugin.schema import Schema, SchemaError
from training.data import FileSet
from training.grow import check_warm_start
from training.launch import check_backend_settings, check_workers, launch
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
    anew: str | None = None,
    **options: object,
) -> tuple[torch.nn.Module, dict]:
    """Trains `model` (its inputs and tables from `schema`) on `train_files` and writes the run
    directory's config, spec, checkpoints and weights; returns the trained model (in this process) and
    the workers' summary. `options` as train()'s; `anew` as check_resumable's."""
    # Qualified as Spark resolves the other paths (relative paths against its working directory or
    # default filesystem), so the workers, which have no JVM, write where the driver reads.
    run = RunDirectory(storage.qualified(spark, run_dir))
    config = model_config(model, schema, options)
    if options.get("warm_start"):
        options["warm_start"] = warm_start_uri(spark, str(options["warm_start"]), run, config, backend)
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
    check_workers(backend, workers)  # before the run directory is written
    check_backend_settings(spark, spec)
    if backend != "single":  # its workers run in the executors' tasks on a cluster
        storage.require_folder_shared_with_executors(spark, run.uri, "--run-dir")
    if spec.resume and run.latest_checkpoint() is not None:
        check_resumable(run, spec, anew)
        run.clear_finished_mark()  # unfinished until the resumed run ends (a fresh run's rank 0 clears)
    run.write_model_config(config)
    run.write_spec(spec.to_dict())
    summary = launch(spark, spec, workers)
    trained = build_model(config)
    trained.load_state_dict(run.weights())
    return trained, summary


def model_config(model: str, schema: Schema, options: Mapping[str, object]) -> ModelConfig:
    """The config `fit` trains `model` of `schema` with, given train()'s `options`; one that cannot be
    built (an embedding dim a model cannot split) is refused in one line."""
    try:
        config = ModelConfig.from_schema(
            model, schema, **{k: v for k, v in options.items() if k in MODEL_OPTIONS}
        )
        with torch.device("meta"):  # built as the workers will, without allocating its tables
            build_model(config)
    except SchemaError as error:
        raise InputError(f"--model {model}: {error}") from None
    return config


def check_resumable(run: RunDirectory, spec: TrainSpec, anew: str | None = None) -> None:
    """Refuses, before anything is written, a resume its checkpoint cannot continue: another model or
    table optimizer (the saved weights and states do not fit), between TorchRec's fused optimizer
    states and the data-parallel backends' layout, or of a run that finished the epochs asked for.
    `anew` says how the caller's command starts over instead (sparkrec train's flags by default)."""
    saved = TrainSpec(**run.spec())
    again = anew or f"train anew without --resume, or into another --run-dir than {run.uri}"
    model = json.loads(json.dumps(spec.model))  # tuples as the saved spec's lists
    if saved.model != model:
        raise InputError(
            f"cannot resume {run.uri}: the run's checkpoint is of another model ({saved.model['name']}, "
            f"differing in {', '.join(_differences(saved.model, model))}): {again}"
        )
    if saved.sparse_optimizer != spec.sparse_optimizer:
        raise InputError(
            f"cannot resume {run.uri}: the run's tables were updated by {saved.sparse_optimizer}, not "
            f"{spec.sparse_optimizer}: give --sparse-optimizer {saved.sparse_optimizer}, or {again}"
        )
    if (saved.backend == "torchrec") != (spec.backend == "torchrec"):
        raise InputError(
            f"cannot resume {run.uri}: the run trained on --backend {saved.backend}, whose optimizer states "
            f"do not load on {spec.backend}: resume on {saved.backend}, or {again}"
        )
    if run.metrics() is not None and spec.epochs <= saved.epochs:
        raise InputError(
            f"cannot resume {run.uri}: the run finished its {saved.epochs} epochs: give more --epochs, "
            f"or {again}"
        )


def _differences(saved: dict, given: dict) -> list[str]:
    """The top-level keys two configs differ in."""
    return sorted(k for k in saved.keys() | given.keys() if saved.get(k) != given.get(k))


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
