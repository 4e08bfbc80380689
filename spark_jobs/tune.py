"""sparkrec tune: a hyperparameter search whose trials are full trainings on one pinned features version.

Optuna's TPE sampler proposes each trial's options from SEARCH_SPACE: the dense and sparse learning
rates, the batch size, the embedding width and the model's layer sizes. Its draws for a trial are
seeded by --seed and the trial's number (TrialSeededSampler), so the same seed gives the same first
trials however many run at once. `--parallel` trials run at once, each a `sparkrec train` of the model
into its own run directory by a TorchDistributor job of one worker (a Spark barrier task on a cluster,
a process here), ranked by its AUC on the validation days alone (its run holds its test days' metrics
too, as any training's does; the search never reads them). Every trial trains with the same seed, so a
trial's options reproduce its model. A trial that fails (say, out of memory) is recorded as failed and
the search goes on.

The study is a journal file in the tune folder (training/tune_directory.py): a search that stopped
(killed, or the host lost) continues with the next `sparkrec tune` of the folder, keeping its ended
trials and running a trial it cut off again with its options, until --trials trials have ended. The
best trial's options, with the epochs, seed, backend and workers the trials trained with, are
written as the folder's config.json, which `sparkrec train --config` trains with.

    sparkrec tune --features lake/features --workflow lake/workflow --model dlrm \\
        --trials 8 --parallel 2 --tune-dir runs/tune-dlrm
"""

from __future__ import annotations

import fcntl
import json
import statistics
import threading
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import optuna
import torch
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler, TPESampler
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, Trial, TrialState
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from rec_plugin import storage
from rec_plugin.errors import CommandParser, InputError, run_command
from rec_plugin.features_description import VALID_SPLIT, FeaturesDescription
from rec_plugin.json_files import write_json
from rec_plugin.schema import DAY
from rec_plugin.workflow import Workflow
from spark_jobs.session import build_session
from spark_jobs.train import count, days_held, features_version_to_read, train
from training import plots
from training.loop import host_share_of_cores
from training.models import MODELS
from training.run_directory import RunDirectory
from training.tune_directory import TunedConfig, TuneDirectory

STUDY_NAME = "sparkrec-tune"
# The study attribute that records what the search trains on: a rerun must train on the same.
SETTINGS_ATTR = "settings"
# A trial's attribute naming the trial whose options it runs again.
RETRY_OF_ATTR = "retry_of"
# Each trial is a TorchDistributor job of one worker (--batch-size is per worker).
TRIAL_BACKEND, TRIAL_WORKERS = "torch", 1


@dataclass(frozen=True)
class Dimension:
    """One searched option: log-uniform between low and high, or one of `choices` (layer sizes as
    "256-128"); only for `models` (empty: every model)."""

    name: str
    low: float = 0.0
    high: float = 0.0
    choices: tuple = ()
    models: tuple[str, ...] = ()

    def suggest(self, trial: Trial) -> object:
        if not self.choices:
            return trial.suggest_float(self.name, self.low, self.high, log=True)
        value = trial.suggest_categorical(self.name, self.choices)
        return layer_sizes(value) if isinstance(value, str) else value


def layer_sizes(text: str) -> tuple[int, ...]:
    return tuple(int(width) for width in text.split("-"))


DEEP = ("dcnv2", "wide_deep", "deepfm")
SEARCH_SPACE: tuple[Dimension, ...] = (
    Dimension("dense_lr", 1e-4, 3e-2),
    Dimension("sparse_lr", 1e-3, 1e-1),
    Dimension("batch_size", choices=(512, 1024, 2048, 4096)),
    Dimension("embedding_dim", choices=(8, 16, 32, 64), models=("dlrm", *DEEP)),
    Dimension("bottom_mlp", choices=("32", "64", "128-64"), models=("dlrm",)),
    Dimension("top_mlp", choices=("64", "128-64", "256-128"), models=("dlrm",)),
    Dimension("deep_mlp", choices=("128-64", "256-128", "512-256-128"), models=DEEP),
    Dimension("cross_layers", choices=(1, 2, 3, 4), models=("dcnv2",)),
)


class TrialSeededSampler(BaseSampler):
    """Optuna's TPE with each trial's draws from its own generator, seeded by the search's seed and the
    trial's number. A parallel search (n_jobs > 1) shares one sampler between threads, takes draws in
    the order the threads ask, and reseeds the sampler from the OS before each trial: a seeded
    TPESampler alone gives other options every run. Here the random first trials (TPE's startup) get
    the same options in every run; a later trial's also depend on the trials ended when it started."""

    def __init__(self, seed: int) -> None:
        self._seed = seed
        self._of_trial: dict[int, TPESampler] = {}
        self._lock = threading.Lock()

    def _sampler(self, trial: FrozenTrial) -> TPESampler:
        with self._lock:
            if trial.number not in self._of_trial:
                seed = zlib.crc32(f"{self._seed}/{trial.number}".encode())
                self._of_trial[trial.number] = TPESampler(seed=seed, constant_liar=True)
            return self._of_trial[trial.number]

    def infer_relative_search_space(
        self, study: optuna.Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        return self._sampler(trial).infer_relative_search_space(study, trial)

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, object]:
        return self._sampler(trial).sample_relative(study, trial, search_space)

    def sample_independent(
        self, study: optuna.Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> object:
        return self._sampler(trial).sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self._sampler(trial).before_trial(study, trial)

    def after_trial(
        self, study: optuna.Study, trial: FrozenTrial, state: TrialState, values: list[float] | None
    ) -> None:
        self._sampler(trial).after_trial(study, trial, state, values)
        with self._lock:
            self._of_trial.pop(trial.number, None)

    def reseed_rng(self) -> None:
        """Nothing: a trial's generator is seeded from its number, never from the OS."""


def searched(model: str) -> list[Dimension]:
    return [d for d in SEARCH_SPACE if not d.models or model in d.models]


def trial_options(trial: FrozenTrial, model: str) -> dict:
    """A trial's train() options from its parameters (layer sizes as tuples)."""
    return {d.name: d.suggest(trial) for d in searched(model)}  # type: ignore[arg-type]


def validation_auc(run_dir: str) -> float:
    """The mean AUC of a finished run's validation days, leaving out days of one label class (no AUC)."""
    metrics = RunDirectory(run_dir).metrics() or {}
    days = [d for d in metrics.get("days", []) if d["split"] == VALID_SPLIT]
    if not days:
        raise InputError(f"run {run_dir} scored no validation day")
    aucs = [d["auc"] for d in days if d["auc"] is not None]
    if not aucs:
        raise _no_auc_ranks([d["day"] for d in days])
    return statistics.fmean(aucs)


def _no_auc_ranks(days: list[int]) -> InputError:
    return InputError(
        f"the validation days {days} hold one label class each, so no AUC ranks the trials: validate "
        "on days with clicks and non-clicks (sparkrec featurize --valid-days)"
    )


def _require_a_day_with_an_auc(
    spark: SparkSession, features: str, version: int, days: list[int], label: str
) -> None:
    """Some validation day holds both label classes (one aggregation over their labels), checked before
    any trial trains: otherwise every trial would train and then have no AUC to be ranked by."""
    table = spark.read.format("delta").option("versionAsOf", version).load(features)
    classes = table.where(F.col(DAY).isin(days)).groupBy(DAY).agg(F.countDistinct(label).alias("classes"))
    if classes.where("classes = 2").isEmpty():
        raise _no_auc_ranks(days)


@contextmanager
def only_search_of(directory: TuneDirectory) -> Iterator[None]:
    """Holds the folder's lock: one search writes a folder at a time, so a trial found running when a
    search starts was cut off."""
    directory.path.mkdir(parents=True, exist_ok=True)
    with open(directory.path / ".lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InputError(f"another sparkrec tune is searching in {directory.path}") from None
        yield


def open_study(directory: TuneDirectory, settings: dict, seed: int, keep_version: bool) -> optuna.Study:
    """The folder's study, created or continued; refused when it searched on other settings (but for
    the features version when `keep_version`: the search goes on with its own). Trials an earlier
    search left running (cut off: one search holds a folder at a time) are marked failed and queued
    to run again with their options."""
    journal = JournalStorage(JournalFileBackend(str(directory.journal)))
    study = optuna.create_study(
        study_name=STUDY_NAME,
        storage=journal,
        direction="maximize",
        sampler=TrialSeededSampler(seed),
        load_if_exists=True,
    )
    recorded = study.user_attrs.get(SETTINGS_ATTR)
    if recorded is not None and keep_version:
        settings = {**settings, "features_version": recorded.get("features_version")}
    if recorded is None:
        study.set_user_attr(SETTINGS_ATTR, settings)
    elif recorded != settings:
        changed = sorted(k for k in settings if recorded.get(k) != settings[k])
        raise InputError(
            f"tune folder {directory.path} holds a search with other {', '.join(changed)} "
            f"({[recorded.get(k) for k in changed]}): give another --tune-dir"
        )
    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs.get(RETRY_OF_ATTR) for t in trials}
    for trial in trials:
        if trial.state == TrialState.RUNNING and trial.number not in retried:
            study_id = journal.get_study_id_from_name(STUDY_NAME)
            trial_id = journal.get_trial_id_from_study_id_trial_number(study_id, trial.number)
            journal.set_trial_state_values(trial_id, TrialState.FAIL)
            study.enqueue_trial(trial.params, user_attrs={RETRY_OF_ATTR: trial.number})
    return study


def ended_trials(study: optuna.Study) -> int:
    """Trials that finished or failed, less those cut off (a retry runs them again)."""
    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs.get(RETRY_OF_ATTR) for t in trials}
    ended = (TrialState.COMPLETE, TrialState.FAIL)
    return sum(t.state in ended and t.number not in retried for t in trials)


def tune(
    spark: SparkSession,
    features: str,
    workflow: str,
    tune_dir: str,
    model: str = "dlrm",
    trials: int = 8,
    parallel: int = 2,
    epochs: int = 1,
    seed: int = 0,
    features_version: int | None = None,
) -> dict:
    """Runs the search until `trials` trials have ended; returns the report's tune section."""
    if model not in MODELS:
        raise InputError(f"sparkrec tune searches the CTR models {sorted(MODELS)}, not {model!r}")
    if trials < 1 or parallel < 1:
        raise InputError(f"--trials ({trials}) and --parallel ({parallel}) must be at least 1")
    if parallel > 1 and spark.sparkContext.master.startswith("local") and torch.cuda.is_available():
        raise InputError(
            "local trials would share this host's GPUs (TorchDistributor picks them per process, not "
            "per trial): give --parallel 1, or tune on a cluster"
        )
    version = features_version_to_read(spark, features, features_version)
    valid = FeaturesDescription.load(spark, workflow).splits.get(VALID_SPLIT, [])
    if not set(valid) & days_held(spark, features, version):
        raise InputError(
            f"features table {features}@v{version} holds no validation day to score trials on: "
            "featurize with --valid-days"
        )
    label = Workflow.load_schema(workflow, spark).label.name
    _require_a_day_with_an_auc(spark, features, version, sorted(set(valid)), label)
    directory = TuneDirectory(tune_dir)
    settings = {
        "features": storage.qualified(spark, features),
        "features_version": version,
        "workflow": storage.qualified(spark, workflow),
        "model": model,
        "epochs": epochs,
        "seed": seed,
    }
    threads = trial_threads(spark, parallel)
    with only_search_of(directory):
        study = open_study(directory, settings, seed, keep_version=features_version is None)
        version = study.user_attrs[SETTINGS_ATTR]["features_version"]
        ended = ended_trials(study)

        def objective(trial: Trial) -> float:
            started = time.perf_counter()
            options = trial_options(trial, model)  # type: ignore[arg-type]
            run_dir = directory.trial_run_dir(trial.number)
            train(
                spark, features, workflow, run_dir, model, TRIAL_BACKEND, TRIAL_WORKERS, None, version,
                epochs=epochs, seed=seed, progress=False, torch_threads=threads, **options,
            )  # fmt: skip
            score = validation_auc(run_dir)
            print(
                f"tune: trial {trial.number}: validation AUC {score:.4f} in "
                f"{time.perf_counter() - started:.0f} s with {trial.params}",
                flush=True,
            )
            return score

        remaining = max(0, trials - ended)
        print(f"tune: {ended} trials ended in {tune_dir}; running {remaining}, {parallel} at once")
        study.optimize(
            objective, n_trials=remaining, n_jobs=parallel, catch=(Exception,), gc_after_trial=True
        )
        if not any(t.state == TrialState.COMPLETE for t in study.get_trials(deepcopy=False)):
            raise InputError(f"no trial of the search in {tune_dir} finished: see their errors above")
        return _report(study, directory, model, {"epochs": epochs, "seed": seed})


def trial_threads(spark: SparkSession, parallel: int) -> int | None:
    """Each trial's torch threads: this host's cores shared by the trials running on it at once (local
    trials), else None (a trial's worker takes its host's cores)."""
    if parallel > 1 and spark.sparkContext.master.startswith("local"):
        return host_share_of_cores(parallel)
    return None


def _report(study: optuna.Study, directory: TuneDirectory, model: str, trained_with: dict) -> dict:
    """Writes config.json (the best trial's options, its torch threads where the search set them, and
    what every trial `trained_with`, on the backend and workers of a trial), tune.json and tune.png;
    returns the tune section."""
    trials = study.get_trials(deepcopy=False)
    best = study.best_trial
    options = trial_options(best, model)
    threads = RunDirectory(directory.trial_run_dir(best.number)).spec().get("torch_threads")
    trial_run = {**trained_with, "backend": TRIAL_BACKEND, "workers": TRIAL_WORKERS}
    if threads is not None:
        trial_run["torch_threads"] = threads
    TunedConfig(model, {**options, **trial_run}).save(directory.config)
    report = {
        "model": model,
        "trials": sum(t.state == TrialState.COMPLETE for t in trials),
        "best_trial": best.number,
        "best_validation_auc": best.value,
        "best_options": options,
        "config": str(directory.config),
    }
    scores = [(t.number, t.value if t.state == TrialState.COMPLETE else None) for t in trials]
    listed = [{"trial": n, "validation_auc": s, "params": t.params} for (n, s), t in zip(scores, trials)]
    write_json(directory.report, {**report, "all_trials": listed})
    directory.plot.write_bytes(plots.trial_scores(scores, f"sparkrec tune: {model}"))
    return report


def main(argv: list[str] | None = None) -> dict:
    parser = CommandParser(prog="sparkrec tune", description=__doc__.splitlines()[0])
    parser.add_argument("--features", required=True, help="Delta features table path")
    parser.add_argument("--features-version", type=int, help="Delta version to train on (default: latest)")
    parser.add_argument("--workflow", required=True, help="the saved workflow (schema.json, features.json)")
    parser.add_argument("--tune-dir", required=True, help="the search's folder (local or mounted)")
    parser.add_argument("--model", choices=sorted(MODELS), default="dlrm")
    parser.add_argument("--trials", type=count, default=8, help="trials to finish, counting earlier ones")
    parser.add_argument("--parallel", type=count, default=2, help="trials training at once")
    parser.add_argument("--epochs", type=count, default=1, help="each trial's epochs")
    parser.add_argument("--seed", type=int, default=0, help="the sampler's and every trial's seed")
    parser.add_argument("--profile", default="local", help="Spark profile from conf/spark/")
    args = parser.parse_args(argv)
    spark = build_session(args.profile, "sparkrec-tune")
    report = tune(
        spark,
        args.features,
        args.workflow,
        args.tune_dir,
        args.model,
        args.trials,
        args.parallel,
        args.epochs,
        args.seed,
        args.features_version,
    )
    print(json.dumps({"tune": report}, indent=2))
    return report


if __name__ == "__main__":
    run_command(main, "sparkrec tune")
