"""sparkrec tune end to end on the default features: two trials at once as TorchDistributor jobs, a
search that continues after a trial was cut off, and the best config trained again by sparkrec train."""

from __future__ import annotations

import json
import os

import optuna
import pytest
from conftest import cut_features
from delta.tables import DeltaTable
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState
from pyspark.sql import functions as F

from rec_plugin.errors import InputError
from rec_plugin.schema import DAY
from spark_jobs.train import main as train_main
from spark_jobs.tune import RETRY_OF_ATTR, STUDY_NAME, TrialSeededSampler, trial_options, tune, validation_auc
from training.run_directory import RunDirectory
from training.tune_directory import TunedConfig, TuneDirectory


def _study(directory: TuneDirectory) -> optuna.Study:
    return optuna.load_study(
        study_name=STUDY_NAME, storage=JournalStorage(JournalFileBackend(str(directory.journal)))
    )


def _draws(seed: int, trials: int, order: list[int]) -> dict[int, dict]:
    """The options a search with `seed` gives its first `trials` trials when they ask for them in
    `order`, the sampler reseeded before each (as a parallel search does)."""
    study = optuna.create_study(direction="maximize", sampler=TrialSeededSampler(seed))
    asked = [study.ask() for _ in range(trials)]
    drawn = {}
    for number in order:
        study.sampler.reseed_rng()
        drawn[number] = trial_options(asked[number], "dlrm")
    return drawn


def test_the_same_seed_draws_the_same_options_for_each_trial_whatever_order_trials_ask_in():
    first, reordered = _draws(0, 3, [0, 1, 2]), _draws(0, 3, [2, 0, 1])
    assert first == reordered
    assert len({json.dumps(options, sort_keys=True) for options in first.values()}) == 3
    assert _draws(1, 3, [0, 1, 2]) != first


def test_a_search_runs_in_parallel_continues_after_a_cut_off_trial_and_its_config_trains_again(
    spark, default_features, tmp_path
):
    out, _ = default_features
    features, workflow = str(out / "features"), str(out / "workflow")
    directory = TuneDirectory(tmp_path / "tune")
    first = tune(spark, features, workflow, str(directory.path), "dlrm", trials=2, parallel=2)
    finished = {t.number: t.value for t in _study(directory).trials if t.state == TrialState.COMPLETE}
    assert first["trials"] == 2 and len(finished) == 2
    assert len({tuple(sorted(t.params.items())) for t in _study(directory).trials}) == 2
    # Its options are the seed's: the same in every run, whichever trial's thread asked first.
    assert {t.number: trial_options(t, "dlrm") for t in _study(directory).trials} == _draws(0, 2, [0, 1])
    for number, value in finished.items():
        assert value == pytest.approx(validation_auc(directory.trial_run_dir(number)))
    # The search finds options that learn; a single trial need not.
    assert first["best_validation_auc"] == max(finished.values()) > 0.6
    assert directory.plot.read_bytes().startswith(b"\x89PNG")

    # A search killed mid-trial leaves that trial running in the journal: the next search runs it again
    # with its options and keeps the ended trials; a trial that fails (here: a batch size outside the
    # searched ones) is recorded as failed, the search goes on, and no later search runs it again.
    dense_lr = optuna.distributions.FloatDistribution(1e-4, 3e-2, log=True)
    cut_off = _study(directory).ask({"dense_lr": dense_lr})
    cut_off_params = cut_off.params
    _study(directory).enqueue_trial({"batch_size": 3})
    again = tune(spark, features, workflow, str(directory.path), "dlrm", trials=4, parallel=2)
    trials = _study(directory).trials
    retry = [t for t in trials if t.user_attrs.get(RETRY_OF_ATTR) == cut_off.number]
    assert len(retry) == 1 and retry[0].state == TrialState.COMPLETE
    assert retry[0].params["dense_lr"] == cut_off_params["dense_lr"]
    assert trials[cut_off.number].state == TrialState.FAIL
    assert [t.state for t in trials if "batch_size" not in t.params] == [TrialState.FAIL] * 2
    assert {t.number: t.value for t in trials if t.number in finished} == finished
    assert again["trials"] == 3 and len(trials) == 5
    tune(spark, features, workflow, str(directory.path), "dlrm", trials=4, parallel=2)
    assert len(_study(directory).trials) == 5, "4 trials have ended: nothing runs again"

    # The best options, trained again from config.json as the trials trained, give the trial's model.
    config = TunedConfig.load(directory.config)
    # Two trials at once here: each trained with half the cores' threads, and so does the config.
    trained_with = {
        "epochs": 1,
        "seed": 0,
        "backend": "torch",
        "workers": 1,
        "torch_threads": max(1, os.cpu_count() // 2),
    }
    assert config.options == {**again["best_options"], **trained_with}
    assert isinstance(config.options["top_mlp"], tuple)
    run_dir = tmp_path / "again"
    argv = ["--features", features, "--workflow", workflow, "--run-dir", str(run_dir)]
    train_main([*argv, "--config", str(directory.config)])
    trained = RunDirectory(str(run_dir))
    assert trained.model_config().top_mlp == config.options["top_mlp"]
    assert trained.spec()["batch_size"] == config.options["batch_size"]
    assert validation_auc(str(run_dir)) == pytest.approx(again["best_validation_auc"], abs=1e-6)

    # The folder searches on what it started on.
    with pytest.raises(InputError, match="other epochs"):
        tune(spark, features, workflow, str(directory.path), "dlrm", trials=3, epochs=2)
    assert json.loads(directory.report.read_text())["best_trial"] == again["best_trial"]


def test_a_trial_is_ranked_by_its_validation_days_that_have_an_auc(tmp_path):
    """A validation day of one label class has no AUC (None in metrics.json): the trial's value is the
    mean over the other validation days, and a run with none of them is one InputError line."""
    run = RunDirectory(str(tmp_path / "run"))
    days = [
        {"day": 2, "split": "valid", "auc": 0.7},
        {"day": 3, "split": "valid", "auc": None},
        {"day": 4, "split": "valid", "auc": 0.8},
        {"day": 5, "split": "test", "auc": 0.1},
    ]
    run.write_metrics({"days": days})
    assert validation_auc(run.uri) == pytest.approx(0.75)
    run.write_metrics({"days": [{**d, "auc": None} for d in days]})
    with pytest.raises(InputError, match=r"validation days \[2, 3, 4\] hold one label class each"):
        validation_auc(run.uri)


def test_a_search_whose_validation_days_hold_one_label_class_is_refused_before_any_trial(
    spark, default_features, tmp_path
):
    """No trial could be ranked: refused in one line before the first trains, not after each."""
    features, workflow = cut_features(spark, default_features, tmp_path, {"train": [0], "valid": [2]})
    DeltaTable.forPath(spark, str(features)).update(F.col(DAY) == 2, {"label": F.lit(1)})
    with pytest.raises(InputError, match=r"validation days \[2\] hold one label class each"):
        tune(spark, str(features), str(workflow), str(tmp_path / "search"), "dlrm", trials=2, parallel=1)
    assert not (tmp_path / "search").exists()
