"""sparkrec retrain on a real pipeline folder: a production DLRM trained on days 0-1 and deployed, then day
2 retrained by a command killed mid-way and rerun: every step is done once (no duplicate rows, workflow
versions, model versions or tracked runs), and version k of the served ensemble preprocesses with
workflow version k."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import kill_at_first_checkpoint
from mlflow import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT
from pyspark.sql import functions as F

from rec_plugin import storage
from rec_plugin.errors import InputError
from rec_plugin.features_description import FeaturesDescription
from rec_plugin.schema import DAY
from rec_plugin.workflow import Workflow
from serving.export import export_run
from serving.preprocessor import EXPRESSIONS
from serving.repository import ensemble_model_name, preprocess_model_name, versions
from spark_jobs.featurize import featurize
from spark_jobs.generate import GeneratorConfig, generate
from spark_jobs.ingest import ingest
from spark_jobs.layout import PipelineLayout
from spark_jobs.retrain import (
    Production,
    RetrainRecord,
    RetrainSettings,
    _export_once,
    deploy,
    oracle_on_rows,
    retrain,
)
from spark_jobs.retrain import main as retrain_main
from spark_jobs.score import score
from spark_jobs.tracking import (
    BRONZE,
    CANDIDATE,
    EXPERIMENT,
    FEATURES,
    LOSS,
    PRODUCTION,
    RUN_DIR_TAG,
    TRACKING_URI_ENV,
    VOCABULARY,
    Tracker,
)
from spark_jobs.train import train

ROOT = Path(__file__).resolve().parent.parent
NAME = "ctr"
# Small days: the test is about what each step writes, not about the model's quality.
DATA = GeneratorConfig(rows_per_day=20_000)
NEW_DAY = 2


@pytest.fixture(scope="module")
def deployed(spark, tmp_path_factory) -> tuple[PipelineLayout, Path, str]:
    """Days 0-1 ingested, featurized and trained on (DLRM, in process), the run deployed as version 1
    (tracked into the pipeline's own store): the pipeline folder, its model repository and the
    tracking store's URI."""
    layout = PipelineLayout(tmp_path_factory.mktemp("retrain"))
    tracking = f"sqlite:///{layout.out / 'mlflow.db'}"
    generate(spark, layout.data, DATA)
    ingest(spark, layout.raw, layout.bronze, layout.rejects, days=[0, 1])
    featurize(spark, layout.bronze, layout.features, layout.workflow, {"train": [0, 1]})
    run = layout.run("dlrm")
    repository = Path(layout.serving) / "repository"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(TRACKING_URI_ENV, tracking)
        train(spark, layout.features, layout.workflow, run, backend="single", workers=1, progress=False)
        deploy(spark, layout, run, repository, NAME, None)
    return layout, repository, tracking


def _retrain_command(layout: PipelineLayout, tracking: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "spark_jobs.cli", "retrain", "--out", str(layout.out), "--day", "2"]
    environment = {**os.environ, TRACKING_URI_ENV: tracking}
    return subprocess.Popen(command, cwd=ROOT, env=environment, stdout=subprocess.DEVNULL)


def test_a_killed_retrain_reruns_to_one_of_everything(spark, deployed, monkeypatch):
    layout, repository, tracking = deployed
    monkeypatch.setenv(TRACKING_URI_ENV, tracking)
    first = Production.load(layout)
    deployed_version = Tracker.configured(tracking).alias_version(NAME, PRODUCTION)  # registered by deploy
    assert deployed_version is not None
    candidate = Path(layout.run(f"candidate-day{NEW_DAY}"))
    kill_at_first_checkpoint(lambda: _retrain_command(layout, tracking), candidate)
    killed = RetrainRecord.load(layout.retrain(NEW_DAY) / "record.json")
    assert {"ingest", "extend", "featurize"} <= set(killed.steps) and "decide" not in killed.steps
    # A rerun that would hold other rows out, or train on days the features lack, is refused untouched.
    for changed, refusal in (
        (RetrainSettings(NEW_DAY, holdout_share=0.3), r"began with --holdout-share 0.1: .* rerun with it"),
        (RetrainSettings(NEW_DAY, window=(0, 9)), r"^--window day\(s\) 9 are not training days of "),
    ):
        with pytest.raises(InputError, match=refusal) as refused:
            retrain(spark, layout, repository, changed)
        assert "\n" not in str(refused.value)
    assert RetrainRecord.load(layout.retrain(NEW_DAY) / "record.json") == killed

    settings = RetrainSettings(NEW_DAY)
    steps = retrain(spark, layout, repository, settings)
    again = retrain(spark, layout, repository, settings)  # a finished retrain is not redone
    assert again == steps
    with pytest.raises(InputError, match=r"^day 1 is a training day of .* already"):  # the fit's day
        retrain(spark, layout, repository, RetrainSettings(1))
    assert not layout.retrain(1).exists()

    # Rows: day 2 ingested once; its featurized rows and its held-out rows are exactly its bronze rows.
    bronze = spark.read.format("delta").load(layout.bronze)
    day_rows = bronze.where(F.col(DAY) == NEW_DAY).count()
    assert day_rows == steps["ingest"]["accepted"] > 0
    features = spark.read.format("delta").load(layout.features).where(F.col(DAY) == NEW_DAY).count()
    assert features == steps["featurize"]["rows_written"]
    assert features + steps["featurize"]["held_out_rows"] == day_rows
    assert 0 < steps["featurize"]["held_out_rows"] < 0.2 * day_rows
    # One workflow version per day, one model version per run.
    assert Workflow.versions(layout.workflow, spark) == [1, 2] and steps["extend"]["workflow_version"] == 2
    assert (
        versions(repository, ensemble_model_name(NAME))
        == [1, 2]
        == [first.version, steps["export"]["version"]]
    )
    # The candidate's tables grew to version 2's vocabularies; both models were scored on the same rows.
    grown, old = Workflow.load_schema(layout.workflow, spark), Workflow.load_schema(layout.workflow, spark, 1)
    assert sum(c.cardinality for c in grown.categorical) > sum(c.cardinality for c in old.categorical)
    scores = steps["evaluate"]
    assert scores[PRODUCTION]["rows"] == scores[CANDIDATE]["rows"] == steps["featurize"]["held_out_rows"]
    assert 0.5 < scores[PRODUCTION]["auc"] < 1 and 0.5 < scores[CANDIDATE]["auc"] < 1
    # The decision and who serves now.
    promoted = steps["decide"]["promoted"]
    assert promoted == (scores[CANDIDATE]["auc"] >= scores[PRODUCTION]["auc"])
    now = Production.load(layout)
    assert now.version == (2 if promoted else 1) and now.workflow_version == (2 if promoted else 1)
    # Tracked once; the decision moves production to the candidate or leaves it at the deployed
    # version, and either way no candidate is left being tried.
    tracker, registered = Tracker.configured(tracking), steps["track"]["registered_version"]
    assert deployed_version < registered
    assert tracker.alias_version(NAME, PRODUCTION) == (registered if promoted else deployed_version)
    assert tracker.alias_version(NAME, CANDIDATE) is None


def test_featurize_refuses_to_refit_a_workflow_that_retrain_extended(spark, deployed):
    """A rerun of featurize would start the versions again under a model that serves version 2."""
    layout, _, _ = deployed
    if Workflow.versions(layout.workflow, spark) != [1, 2]:
        pytest.skip("needs the retrain of the test above")
    features_version = storage.delta_version(spark, layout.features, "features table")
    with pytest.raises(InputError, match=r"holds versions \[1, 2\] \(extended by retrain\)"):
        featurize(spark, layout.bronze, layout.features, layout.workflow, {"train": [0, 1]})
    assert Workflow.versions(layout.workflow, spark) == [1, 2]
    assert storage.delta_version(spark, layout.features, "features table") == features_version


def test_each_served_version_preprocesses_with_its_own_workflow_version(spark, deployed):
    """After the retrain, preprocess version k maps raw values through workflow version k's vocabularies."""
    layout, repository, _ = deployed
    if Workflow.versions(layout.workflow, spark) != [1, 2]:
        pytest.skip("needs the retrain of the test above")
    for version in (1, 2):
        folder = repository / preprocess_model_name(NAME) / str(version)
        plan = json.loads((folder / EXPRESSIONS).read_text())
        lookups = [s for s in plan["steps"] if s.get("op") == "Categorify"]
        schema = Workflow.load_schema(layout.workflow, spark, version)
        for step in lookups:
            rows = pq.read_metadata(folder / step["table"]).num_rows
            assert rows == schema[step["column"]].cardinality - 1, (version, step["column"])


def test_in_process_scoring_uses_the_workflow_version_of_its_model(spark, deployed, tmp_path):
    """Version 1's model scores the new day through workflow version 1: the day's new values, which
    version 2 gave ids past version 1's tables, are the rare id 0 for it, as its ensemble maps them."""
    layout, repository, _ = deployed
    if Workflow.versions(layout.workflow, spark) != [1, 2]:
        pytest.skip("needs the retrain of the test above")
    predictions = str(tmp_path / "predictions")
    scored = score(spark, layout.bronze, [NEW_DAY], predictions, str(repository), layout.workflow, version=1)
    assert scored["rows"] == DATA.rows_per_day
    bad = spark.read.format("delta").load(predictions).where("NOT probability BETWEEN 0 AND 1")
    assert bad.count() == 0


def test_a_trained_run_is_tracked_in_mlflow_with_its_delta_inputs_and_deployed_as_production(deployed):
    """`train` copies its finished run into the configured store; `deploy` registers that run's model
    (not a second run) as the `production` version."""
    layout, _, tracking = deployed
    client = MlflowClient(tracking)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs(
        [experiment.experiment_id], f"tags.`{RUN_DIR_TAG}` LIKE '%{layout.run('dlrm')}'"
    )
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    registered = client.search_model_versions(f"name='{NAME}' and run_id='{runs[0].info.run_id}'")
    assert [int(v.version) for v in registered] == [1]  # deploy's; production's alias: the retrain test
    assert [m.step for m in client.get_metric_history(runs[0].info.run_id, LOSS)][:2] == [1, 2]
    roles = {
        t.value for i in runs[0].inputs.dataset_inputs for t in i.tags if t.key == MLFLOW_DATASET_CONTEXT
    }
    assert {BRONZE, FEATURES, VOCABULARY} <= roles


@pytest.mark.parametrize("option", [("--ab-seconds", "-1"), ("--epochs", "0"), ("--workers", "0")])
def test_a_negative_wait_or_a_zero_count_is_refused_before_any_work(option, tmp_path):
    """A wait of -1 s once failed after the candidate was trained, exported and routed."""
    with pytest.raises(InputError, match=f"{option[0]}.*see sparkrec retrain --help"):
        retrain_main(["--out", str(tmp_path), "--day", "2", *option])
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("day, split", [(2, "valid"), (3, "test")])
def test_retraining_a_day_the_models_were_judged_on_is_warned_of(spark, tmp_path, capsys, day, split):
    """Retrained, featurize's validation or test day becomes training rows, and its split loses the
    day without a word: a rolling retrain does that each day, so it is said, not refused."""
    layout = PipelineLayout(tmp_path)
    splits = {"train": [0, 1], "valid": [2], "test": [3]}
    FeaturesDescription(layout.features, 0, layout.bronze, 0, splits, 4).save(spark, layout.workflow)
    with pytest.raises(InputError, match="^no production model recorded"):  # the next check
        retrain(spark, layout, tmp_path / "repository", RetrainSettings(day))
    warning = f"retrain: warning: day {day} is a {split} day of .*: its features become training rows"
    assert re.search(warning, capsys.readouterr().err)


def test_a_folder_of_the_oracles_name_that_is_not_its_table_gives_no_oracle_figures(spark, tmp_path, capsys):
    """A user's own data/oracle folder (the generator's name for its truth) once ended a retrain's
    evaluate step with a trace."""
    layout = PipelineLayout(tmp_path)
    rows = spark.createDataFrame([(2, "f", 1)], "day int, source_file string, line_number long")
    spark.range(3).write.parquet(layout.oracle)
    assert oracle_on_rows(spark, layout, rows) == {}
    assert "is not the generator's oracle table" in capsys.readouterr().out


def test_an_oracle_that_lacks_the_held_out_rows_gives_no_oracle_figures(spark, tmp_path, capsys):
    """A day of the user's own files beside the generator's oracle: its evaluate step once ended in
    a trace (no rows to take an AUC of)."""
    layout = PipelineLayout(tmp_path)
    truth = "day int, source_file string, line_number long, label int, p_click double, p_first_order double"
    oracle = [(0, "f", 1, 1, 0.9, 0.8), (0, "f", 2, 0, 0.1, 0.2)]
    spark.createDataFrame(oracle, truth).write.format("delta").save(layout.oracle)
    keys = "day int, source_file string, line_number long"
    held_out = spark.createDataFrame([(2, "g", 1), (2, "g", 2)], keys)
    assert oracle_on_rows(spark, layout, held_out) == {}
    assert "holds 0 of the 2 rows: no oracle figures" in capsys.readouterr().out
    covered = spark.createDataFrame([(0, "f", 1), (0, "f", 2)], keys)
    assert oracle_on_rows(spark, layout, covered) == {"oracle_auc": 1.0, "oracle_logloss": 0.10536}
    one_class = spark.createDataFrame([(0, "f", 1)], keys)  # AUC ranks clicks against non-clicks
    assert oracle_on_rows(spark, layout, one_class) == {"oracle_auc": None, "oracle_logloss": 0.10536}


def test_a_day_whose_every_line_is_rejected_is_ingested_again_by_the_rerun(spark, deployed):
    """Recorded as ingested, an empty day once failed every rerun, its corrected files never read."""
    layout, repository, _ = deployed
    # A day without files yet is refused, and nothing is recorded of it.
    with pytest.raises(InputError, match=r"^no raw files (matching .* )?under .* for days \[8\]"):
        retrain(spark, layout, repository, RetrainSettings(8))
    assert not layout.retrain(8).exists()
    empty_day = 7
    files = Path(layout.raw) / f"day_{empty_day}"
    files.mkdir()
    (files / "part-00000.tsv").write_text("not a criteo line\n" * 3)
    try:
        for _ in range(2):
            with pytest.raises(InputError, match=f"^bronze table .* holds no rows of day {empty_day} after"):
                retrain(spark, layout, repository, RetrainSettings(empty_day))
            assert not layout.retrain(empty_day).exists()
        rejects = spark.read.format("delta").load(layout.rejects).where(F.col(DAY) == empty_day)
        assert rejects.count() == 3, "the rerun ingested the day's file again, in place of its rows"
    finally:
        shutil.rmtree(files)


def test_a_run_exported_before_its_step_was_recorded_is_found_not_exported_again(spark, deployed, tmp_path):
    """A retrain killed between the export and its record once exported the candidate again as the
    next version: the version folder names its run from the moment it appears."""
    layout, _, _ = deployed
    repository, run = tmp_path / "repository", storage.qualified(spark, layout.run("dlrm"))
    assert export_run(run, repository, NAME, spark=spark, workflow=layout.workflow) == 1  # then killed
    assert _export_once(spark, layout.workflow, repository, NAME, run) == 1
    assert versions(repository, ensemble_model_name(NAME)) == [1]
    # Killed before its ensemble was written, the version is no export: the rerun writes it whole.
    shutil.rmtree(repository / f"{NAME}_v1")
    assert _export_once(spark, layout.workflow, repository, NAME, run) == 1
    assert (repository / f"{NAME}_v1" / "config.pbtxt").is_file()
    assert versions(repository, ensemble_model_name(NAME)) == [1]
