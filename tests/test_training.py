"""Training on the default featurized data: the loader, every model, both distributed backends, and
resuming after a kill."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from conftest import cut_features, kill_at_first_checkpoint
from delta.tables import DeltaTable
from pyspark.sql import functions as F
from tqdm import tqdm

from rec_plugin import storage
from rec_plugin.errors import InputError
from rec_plugin.schema import DAY, LINE_NUMBER
from rec_plugin.workflow import Workflow
from spark_jobs.layout import GeneratedData
from spark_jobs.model_fit import check_resumable, fit
from spark_jobs.train import feature_files, train
from spark_jobs.train import main as train_main
from training import checkpoint
from training.data import BatchLoader, EpochRowCountError, FileSet, balanced_shards, parquet_rows
from training.evaluate import metrics, predict
from training.loop import TrainSpec, report_native_crashes, train_worker, weights_digest
from training.models import MODELS, ModelConfig, build_model
from training.run_directory import RunDirectory

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def files(spark, default_features):
    root, report = default_features
    version = report["features_version"]
    features = str(root / "features")
    return {
        "train": feature_files(spark, features, version, [0, 1]),
        "valid": feature_files(spark, features, version, [2]),
        "schema": Workflow.load_schema(str(root / "workflow"), spark),
    }


def row_fingerprints(batches: list) -> np.ndarray:
    """One int64 per row from its categorical ids and dense values, sorted: a multiset of rows."""
    categorical, dense = batches[0].ids.values.shape[1], batches[0].dense.shape[1]
    weights = np.random.default_rng(0).integers(1, 2**31, categorical + dense)
    keys = [
        b.ids.values.numpy() @ weights[:categorical]
        + np.round(b.dense.numpy().astype(np.float64) * 1e4).astype(np.int64) @ weights[categorical:]
        for b in batches
    ]
    return np.sort(np.concatenate(keys))


def test_shards_cover_every_row_once_and_each_epoch_reshuffles(files):
    train, schema = files["train"], files["schema"]
    categorical, dense = schema.categorical.names, schema.continuous.names
    assert len(categorical) == 26 and len(dense) == 13 and not schema.lists  # the Criteo layout
    assert len(train.files) >= 2  # features are written in files of at most 50k rows
    columns = [*categorical, *dense]
    table = pa.concat_tables(pq.read_table(f, columns=columns) for f in train.files).to_pandas()
    everything = row_fingerprints(
        [
            SimpleNamespace(
                ids=SimpleNamespace(values=torch.tensor(table[categorical].to_numpy(np.int64))),
                dense=torch.tensor(table[dense].to_numpy(np.float32)),
            )
        ]
    )
    shards = [BatchLoader(train, schema, 1000, rank, 2, seed=7) for rank in (0, 1)]
    epoch0 = [list(loader.epoch(0)) for loader in shards]
    assert all(len(batches) > 0 for batches in epoch0)
    assert sum(loader.rows_read for loader in shards) == train.rows == len(table)
    # whole files dealt by their rows (balanced_shards), so the ranks differ by at most one file
    dealt = balanced_shards(parquet_rows(train.files), 2)
    assert [loader.rows_read for loader in shards] == [
        sum(parquet_rows([train.files[i] for i in d])) for d in dealt
    ]
    assert abs(shards[0].rows_read - shards[1].rows_read) <= max(parquet_rows(train.files))
    assert np.array_equal(row_fingerprints(epoch0[0] + epoch0[1]), everything)
    assert all(len(b.label) == 1000 for b in epoch0[0][:-1])
    assert all(b.ids.keys == tuple(categorical) and b.lists == {} for b in epoch0[0])
    again = list(BatchLoader(train, schema, 1000, 0, 2, seed=7).epoch(0))
    assert all(torch.equal(a.ids.values, b.ids.values) for a, b in zip(again, epoch0[0]))
    epoch1 = list(shards[0].epoch(1))
    assert not torch.equal(epoch1[0].ids.values, epoch0[0][0].ids.values)
    resumed = list(BatchLoader(train, schema, 1000, 0, 2, seed=7).epoch(0, skip_batches=5))
    assert len(resumed) == len(epoch0[0]) - 5
    assert all(torch.equal(a.dense, b.dense) for a, b in zip(resumed, epoch0[0][5:]))


def test_ranks_are_dealt_whole_files_by_their_rows():
    rows = [50_000, 25_000] * 6  # featurize's files of a day: 50k rows and a task's remainder
    shards = balanced_shards(rows, 2)
    assert sorted(index for shard in shards for index in shard) == list(range(12))
    assert [sum(rows[index] for index in shard) for shard in shards] == [225_000, 225_000]
    uneven = [9, 5, 4, 3, 3]
    assert [sum(uneven[index] for index in shard) for shard in balanced_shards(uneven, 2)] == [12, 12]
    assert balanced_shards([7], 3) == [[0], [], []]


def test_a_file_of_fewer_row_groups_than_ranks_is_read_whole_by_one_rank(files):
    """A tiny day: one features file of one row group and three ranks, which Petastorm cannot shard."""
    train, schema = files["train"], files["schema"]
    tiny = FileSet(train.files[:1], parquet_rows(train.files[:1])[0])
    assert pq.ParquetFile(tiny.files[0].removeprefix("file:")).metadata.num_row_groups == 1
    shards = [BatchLoader(tiny, schema, 1000, rank, 3, seed=7) for rank in range(3)]
    batches = [list(loader.epoch(0)) for loader in shards]
    assert sorted(loader.rows_read for loader in shards) == [0, 0, tiny.rows]
    assert sum(len(b.label) for rank in batches for b in rank) == tiny.rows


def test_a_checkpoint_of_another_dealing_retrains_its_epoch_and_one_of_this_dealing_skips(
    files, tmp_path, capsys
):
    """A checkpoint 5 batches into an epoch skips them on resume only when the rows were dealt to the
    same batches: not one written before the dealing was recorded, nor one resumed with another batch
    size (its 5 batches held other rows)."""
    config = ModelConfig.from_schema("logistic", files["schema"])
    rows, batch = files["train"].rows, 1024
    this_dealing = files["train"].dealing(1, batch, TrainSpec.seed)
    # (the dealing the checkpoint records, "" for none; the resumed run's batch size; rows it skips)
    cases = (("", batch, 0), (this_dealing, batch, 5 * batch), (this_dealing, batch // 2, 0))
    for case, (sharding, resumed_batch, skipped) in enumerate(cases):
        run_dir = tmp_path / str(case)
        train_worker(spec_of(files, config, run_dir, batch_size=batch, progress=False).to_dict())
        run = RunDirectory(run_dir)
        state = run.load_checkpoint(str(run.latest_checkpoint()))
        state["position"].update(epoch=0, batches=5)  # as if killed 5 batches into the epoch
        state["position"].pop("sharding")
        state["position"].update({"sharding": sharding} if sharding else {})
        run.save_checkpoint(state, state["position"]["step"] + 1)
        resumed = spec_of(files, config, run_dir, batch_size=resumed_batch, progress=True, resume=True)
        assert train_worker(resumed.to_dict())["samples"] == rows - skipped
        error = capsys.readouterr().err
        assert ("its 5 batches are trained again" in error) == (not skipped), error
        # The bar counts rows, not batches of the batch size: it ends at the table's rows.
        assert f" {tqdm.format_sizeof(rows)}/{tqdm.format_sizeof(rows)} " in error.splitlines()[-1], error


def test_an_epoch_with_missing_rows_fails_loudly(files):
    short = FileSet(files["valid"].files, files["valid"].rows + 1)
    schema = files["schema"]
    with pytest.raises(EpochRowCountError, match="read 100,000 rows but the table holds 100,001"):
        predict(build_model(ModelConfig.from_schema("logistic", schema)), short, schema)


def spec_of(files: dict, config: ModelConfig, run_dir: Path, *args: object, **options: object) -> TrainSpec:
    schema = TrainSpec.schema_dict(files["schema"])
    return TrainSpec(config.to_dict(), files["train"].to_dict(), str(run_dir), schema, *args, **options)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_learns_in_one_epoch(files, tmp_path, name):
    config = ModelConfig.from_schema(name, files["schema"])
    spec = spec_of(files, config, tmp_path, progress=False)
    summary = train_worker(spec.to_dict())
    model = build_model(config)
    model.load_state_dict(RunDirectory(tmp_path).weights())
    result = metrics(*predict(model, files["valid"], files["schema"]))
    losses = summary["losses"]
    assert summary["samples"] == files["train"].rows
    assert np.mean(losses[-20:]) < np.mean(losses[:20]) - 0.02
    assert result["auc"] > 0.68, result  # random scores give 0.5; every model reaches 0.69-0.73 here


def test_horovod_workers_on_spark_keep_sparse_embeddings_identical(files, tmp_path):
    import horovod.spark

    config = ModelConfig.from_schema("dlrm", files["schema"])
    spec = spec_of(files, config, tmp_path, "horovod", batch_size=4096, progress=False)
    results = horovod.spark.run(train_worker, args=(spec.to_dict(),), num_proc=2, use_gloo=True, nics={"lo"})
    torch.manual_seed(spec.seed)
    initial = weights_digest(build_model(config).state_dict())
    assert sorted(r["rank"] for r in results) == [0, 1]
    assert results[0]["steps"] == results[1]["steps"] > 5
    assert results[0]["weights_digest"] == results[1]["weights_digest"] != initial
    assert results[0]["samples"] == files["train"].rows


def test_torch_ddp_backend_via_torch_distributor(spark, default_features, tmp_path):
    root, _ = default_features
    features, workflow = str(root / "features"), str(root / "workflow")
    report = train(spark, features, workflow, str(tmp_path), "dlrm", "torch", 2, progress=False)
    assert report["backend"] == "torch" and report["workers"] == 2
    assert report["auc"] > 0.70
    assert report["run_dir"] == RunDirectory(tmp_path).uri and RunDirectory(tmp_path).weights()


# One rank of average_sparse_rows over gloo: argv is the store file, the rank, the rows this rank's
# gradient touches (JSON; a row twice makes it uncoalesced, as nn.Embedding's is) and the output file.
AVERAGE_ON_A_RANK = """
import json, sys, torch, torch.distributed as dist
from training.distributed import average_sparse_rows
store, rank, rows, out = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3]), sys.argv[4]
dist.init_process_group("gloo", store=dist.FileStore(store, 2), rank=rank, world_size=2)
values = torch.arange(len(rows) * 4, dtype=torch.float32).reshape(len(rows), 4) + 10 * rank + 1
gradient = torch.sparse_coo_tensor(torch.tensor(rows, dtype=torch.int64).reshape(1, -1), values, (12, 4))
averaged = average_sparse_rows(gradient)
torch.save({"input": gradient.to_dense(), "averaged": averaged.to_dense(), "sparse": averaged.is_sparse}, out)
dist.destroy_process_group()  # frees the group, joining gloo's threads: one left at exit can abort it
"""


def test_a_spark_task_looks_for_what_the_workers_and_scoring_tasks_will_read(spark, tmp_path):
    """On a cluster a run directory or model file on the driver's own disk was found empty after the
    workers trained into their disks, or missing in a scoring task's trace: a task looks first (here,
    on a local master, it runs on this host), and says why it did not find it."""
    (tmp_path / "model.pt").write_bytes(b"model")
    for seen in (str(tmp_path), tmp_path.as_uri(), str(tmp_path / "model.pt")):
        assert storage.executor_lookup(spark, seen) is None
    assert storage.executor_lookup(spark, str(tmp_path / "elsewhere")) == "absent there"
    assert storage.executor_lookup(spark, "nosuchfs://bucket/run").startswith(
        "ValueError: Protocol not known"
    )
    # A local master's tasks share this disk: nothing is looked for, nor written.
    storage.require_folder_shared_with_executors(spark, str(tmp_path / "run"), "--run-dir")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "rows", [([3, 7, 7], [7, 9, 11]), ([3, 7], [])], ids=["overlapping", "one-rank-empty"]
)
def test_sparse_gradients_average_over_ranks_by_their_rows(tmp_path, rows):
    outputs = [tmp_path / f"rank{rank}.pt" for rank in range(2)]
    ranks = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                AVERAGE_ON_A_RANK,
                str(tmp_path / "store"),
                str(rank),
                json.dumps(rows[rank]),
                str(out),
            ],
            cwd=REPO,
        )
        for rank, out in enumerate(outputs)
    ]
    assert [rank.wait(timeout=120) for rank in ranks] == [0, 0]
    results = [torch.load(out) for out in outputs]
    expected = (results[0]["input"] + results[1]["input"]) / 2
    for result in results:
        assert result["sparse"]
        torch.testing.assert_close(result["averaged"], expected)


def test_a_worker_killed_by_a_native_fault_prints_its_python_stack():
    crash = (
        f"import faulthandler; from training.loop import {report_native_crashes.__name__} as report; "
        "report(); faulthandler._sigsegv()"
    )
    result = subprocess.run([sys.executable, "-c", crash], capture_output=True, text=True, timeout=120)
    assert result.returncode == -11
    assert "Fatal Python error: Segmentation fault" in result.stderr
    assert 'File "<string>", line 1' in result.stderr


def run_train(root: Path, run_dir: Path, *extra: str) -> subprocess.Popen:
    command = [
        sys.executable, "-m", "spark_jobs.cli", "train", "--features", str(root / "features"),
        "--workflow", str(root / "workflow"), "--run-dir", str(run_dir), "--backend", "single",
        "--workers", "1", "--batch-size", "128", "--checkpoint-every", "200", *extra,
    ]  # fmt: skip
    return subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def test_resume_after_kill_reaches_the_same_metrics(default_features, tmp_path):
    root, _ = default_features
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    assert run_train(root, whole).wait(timeout=600) == 0
    kill_at_first_checkpoint(lambda: run_train(root, killed), killed)
    assert run_train(root, killed, "--resume").wait(timeout=600) == 0
    first, resumed = (RunDirectory(d).metrics() for d in (whole, killed))
    assert first["steps"] == resumed["steps"]
    assert abs(first["auc"] - resumed["auc"]) <= 1e-3, (first["auc"], resumed["auc"])
    for png in (RunDirectory(killed).loss_plot(), RunDirectory(killed).auc_plot()):
        assert png[:8] == b"\x89PNG\r\n\x1a\n"


def valid_logloss_of_the_run(spark, features: Path, workflow: Path, run_path: Path) -> float:
    """The log loss of the run's final weights on the validation day, scored here."""
    model = build_model(RunDirectory(run_path).model_config())
    model.load_state_dict(RunDirectory(run_path).weights())
    valid = feature_files(spark, str(features), 0, [2])
    return metrics(*predict(model, valid, Workflow.load_schema(str(workflow), spark)))["logloss"]


def test_epochs_are_validated_the_run_stops_once_they_worsen_and_keeps_the_best(
    spark, default_features, tmp_path
):
    """Two DDP workers train DLRM for up to 4 epochs on ~4,000 rows, where its 64-wide tables overfit
    after the first epochs: each epoch is scored on the validation day, the run stops at the first
    epoch that is not better than the best (patience 1), and its weights are the best epoch's."""
    features, workflow = cut_features(
        spark, default_features, tmp_path, {"train": [0, 1], "valid": [2], "test": [3]}
    )
    run_path = tmp_path / "run"
    train(
        spark, str(features), str(workflow), str(run_path), "dlrm", "torch", 2, epochs=4, batch_size=256,
        progress=False,
    )  # fmt: skip
    written = RunDirectory(run_path).metrics()
    losses, best = written["valid_per_epoch"], written["best_epoch"]
    assert written["valid_metric"] == "logloss"
    assert len(losses) == best + 1 < 4, losses  # stopped one epoch after the best
    assert losses[best - 1] == min(losses) < losses[-1]
    scored = valid_logloss_of_the_run(spark, features, workflow, run_path)
    assert abs(scored - losses[best - 1]) < 1e-4, (scored, losses)
    assert [d["logloss"] for d in written["days"] if d["split"] == "valid"] == [scored]
    assert RunDirectory(run_path).loss_plot()[:8] == b"\x89PNG\r\n\x1a\n"
    # A warm start (retrain's) grows the kept epoch, not the last one trained.
    kept = checkpoint.final_state(RunDirectory(run_path))["model"]
    assert all(torch.equal(kept[k], v) for k, v in RunDirectory(run_path).weights().items())


def test_a_run_killed_after_a_validated_epoch_resumes_to_the_same_epochs_and_weights(files, tmp_path):
    """Killed at its first checkpoint, the one after epoch 1's validation, a run resumes with that
    epoch's validation loss and kept weights and ends as the uninterrupted run does."""
    config = ModelConfig.from_schema("dlrm", files["schema"])
    valid = files["valid"].to_dict()

    def spec(run_dir: Path, **options: object) -> Path:
        written = spec_of(
            files, config, run_dir, epochs=2, batch_size=4096, checkpoint_every=10_000, valid=valid,
            progress=False, **options,
        )  # fmt: skip
        path = run_dir.with_suffix(".json")
        path.write_text(json.dumps(written.to_dict()))
        return path

    def start(path: Path) -> subprocess.Popen:
        command = [sys.executable, "-c", TRAIN_FROM_SPEC, str(path)]
        return subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    whole, killed = tmp_path / "whole", tmp_path / "killed"
    expected = train_worker(json.loads(spec(whole).read_text()))
    kill_at_first_checkpoint(lambda: start(spec(killed)), killed)
    assert start(spec(killed, resume=True)).wait(timeout=600) == 0
    resumed = json.loads((tmp_path / "killed.summary.json").read_text())
    assert resumed["best_epoch"] == expected["best_epoch"] is not None
    losses = [run["valid_per_epoch"] for run in (resumed, expected)]
    assert len(losses[0]) == len(losses[1])
    np.testing.assert_allclose(losses[0], losses[1], atol=1e-4)
    runs = [build_model(config) for _ in range(2)]
    for model, run_dir in zip(runs, (whole, killed), strict=True):
        model.load_state_dict(RunDirectory(run_dir).weights())
    scores = [predict(model, files["valid"], files["schema"])[1] for model in runs]
    np.testing.assert_allclose(scores[0], scores[1], atol=1e-4)


# Trains from the spec file named by argv[1] and writes the summary beside it (.summary.json).
TRAIN_FROM_SPEC = """
import json, sys
from pathlib import Path
from training.loop import train_worker
spec = Path(sys.argv[1])
spec.with_suffix(".summary.json").write_text(json.dumps(train_worker(json.loads(spec.read_text()))))
"""


@pytest.mark.parametrize("flag", ["--epochs", "--patience", "--workers", "--batch-size"])
def test_a_count_below_one_is_refused_before_spark_starts(flag):
    from spark_jobs.train import main

    given = ["--features", "f", "--workflow", "w", "--run-dir", "r", flag, "0"]
    with pytest.raises(InputError, match=f"argument {flag}: 0 is not a count"):
        main(given)


def test_a_run_directory_given_as_a_uri_is_written_and_exported_there(
    spark, default_features, tmp_path, monkeypatch
):
    """Every stage takes Hadoop-style URIs: nothing lands in a folder named `file:` in the working
    directory, and the run is found again by its plain local path."""
    from serving.export import torchscript, trained_model

    features, workflow = cut_features(
        spark, default_features, tmp_path, {"train": [0], "valid": [2], "test": [3]}
    )
    working = tmp_path / "working"
    working.mkdir()
    monkeypatch.chdir(working)
    run_path = tmp_path / "runs" / "uri"
    report = train(
        spark, features.as_uri(), workflow.as_uri(), run_path.as_uri(), "logistic", "single", 1,
        batch_size=512, checkpoint_every=3, progress=False,
    )  # fmt: skip
    assert list(working.iterdir()) == []
    run = RunDirectory(run_path)
    assert report["run_dir"] == run.uri == f"file://{run_path}"
    written = run.metrics()  # read back by the plain local path: the files are in that folder
    rows = feature_files(spark, str(features), 0, [0]).rows
    assert written["steps"] == math.ceil(rows / 512) and written["auc"] == report["auc"] is not None
    assert [d["day"] for d in written["days"]] == [2, 3]
    assert run.spec()["train"]["rows"] == rows and run.latest_checkpoint() is not None
    schema = Workflow.load_schema(str(workflow), spark)
    test_day = feature_files(spark, str(features), 0, [3])
    batch = next(BatchLoader(test_day, schema, 64, shuffle=False).epoch(0))
    with torch.no_grad():
        eager = torch.sigmoid(trained_model(run_path.as_uri())(*batch.inputs()))
        scripted = torchscript(run_path.as_uri())(*batch.inputs())
    torch.testing.assert_close(scripted[:, 0], eager)
    assert list(working.iterdir()) == []


def test_training_without_test_days_reports_no_test_metrics(spark, default_features, tmp_path):
    features, workflow = cut_features(
        spark, default_features, tmp_path, {"train": [0], "valid": [2], "test": []}
    )
    run_path = tmp_path / "run"
    report = train(
        spark, str(features), str(workflow), str(run_path), "logistic", "single", 1, batch_size=1024,
        progress=False,
    )  # fmt: skip
    assert report["auc"] is None and report["logloss"] is None and report["oracle_auc"] is None
    run = RunDirectory(run_path)
    assert [(d["day"], d["split"]) for d in run.metrics()["days"]] == [(2, "valid")]
    assert run.auc_plot()[:8] == b"\x89PNG\r\n\x1a\n"
    # What the run cost beside its speed: one rank's parameter bytes, the share of time spent waiting.
    assert 0.0 <= run.metrics()["data_wait_share"] < 1.0 and len(run.metrics()["param_bytes_per_rank"]) == 1


def test_a_day_of_one_label_class_gets_its_log_loss_and_no_auc(
    spark, default_data, default_features, tmp_path, capsys
):
    """AUC ranks clicks against non-clicks, so a day without a click has none: the run reports that
    day's log loss and an AUC of None (in the report, metrics.json and the plot) instead of ending in
    a trace once training is done. An oracle table that lacks a day's rows gives that day no oracle
    figures (it once ended the run in a trace too)."""
    features, workflow = cut_features(
        spark, default_features, tmp_path, {"train": [0], "valid": [2], "test": [3]}
    )
    DeltaTable.forPath(spark, str(features)).update(F.col(DAY) == 3, {"label": F.lit(0)})
    oracle = spark.read.format("delta").load(GeneratedData(str(default_data[0])).oracle)
    lacking = (F.col(DAY) == 2) | ((F.col(DAY) == 3) & (F.col(LINE_NUMBER) < 1000))
    oracle.where(lacking).write.format("delta").save(str(tmp_path / "oracle"))
    report = train(
        spark, str(features), str(workflow), str(tmp_path / "run"), "logistic", "single", 1,
        batch_size=1024, progress=False, oracle=str(tmp_path / "oracle"),
    )  # fmt: skip
    assert report["auc"] is None and 0 < report["logloss"] < 1, report
    days = {d["day"]: d for d in RunDirectory(tmp_path / "run").metrics()["days"]}
    assert days[3]["auc"] is None and days[3]["logloss"] > 0 and days[3]["rows"] > 0
    assert 0.5 < days[2]["auc"] < 1 and 0.5 < days[2]["oracle_auc"] < 1
    assert days[3]["oracle_auc"] is None and report["oracle_logloss"] is None
    assert f"train: {tmp_path / 'oracle'} holds " in capsys.readouterr().out
    assert RunDirectory(tmp_path / "run").auc_plot()[:8] == b"\x89PNG\r\n\x1a\n"


def test_training_refuses_bad_input_before_writing_anything(spark, default_features, tmp_path):
    features, workflow = cut_features(
        spark, default_features, tmp_path, {"train": [0], "valid": [], "test": []}
    )
    no_train_rows = tmp_path / "no_train_rows"
    no_train_rows.mkdir()
    described = json.loads((workflow / "features.json").read_text())
    (no_train_rows / "features.json").write_text(json.dumps({**described, "splits": {"train": [1]}}))
    shutil.copy(workflow / "schema.json", no_train_rows / "schema.json")
    no_schema = tmp_path / "no_schema"
    no_schema.mkdir()
    shutil.copy(workflow / "features.json", no_schema / "features.json")
    missing = tmp_path / "missing"
    other = tmp_path / "other"  # a Delta table of other columns: bronze, say
    spark.range(3).withColumn(DAY, F.lit(0)).write.format("delta").partitionBy(DAY).save(str(other))
    refusals = {
        f"{other} is not a features table of this workflow: columns ": dict(features=other),
        f"features table {missing} does not exist: featurize": dict(features=missing),
        f"features table {features} has versions 0 to 0, not 3": dict(features_version=3),
        f"workflow {missing} holds no features.json: featurize into it": dict(workflow=missing),
        f"workflow {no_schema} holds no schema.json: featurize": dict(workflow=no_schema),
        f"oracle table (--oracle) {missing} does not exist": dict(oracle=str(missing)),
        f"the train days [1] hold no rows in features table {features}": dict(workflow=no_train_rows),
    }
    run_path = tmp_path / "run"
    for message, changes in refusals.items():
        arguments = {"features": features, "workflow": workflow, **changes}
        with pytest.raises(InputError, match=re.escape(message)):
            train(
                spark, str(arguments.pop("features")), str(arguments.pop("workflow")), str(run_path),
                "logistic", "single", 1, progress=False, **arguments,
            )  # fmt: skip
    assert not run_path.exists()


def test_a_resume_its_checkpoint_cannot_continue_is_refused_and_a_fresh_run_clears_the_last_results(
    files, tmp_path
):
    """check_resumable (fit's, before anything is written) refuses another model, another table
    optimizer, a TorchRec checkpoint on a data-parallel backend, and a finished run given no more
    epochs; a fresh run's clear removes the earlier run's results, its finished mark first."""
    config = ModelConfig.from_schema("logistic", files["schema"])
    spec = spec_of(files, config, tmp_path, progress=False)
    train_worker(spec.to_dict())
    run = RunDirectory(tmp_path)
    run.write_spec(spec.to_dict())
    run.write_metrics({"auc": 0.5})
    resumed = replace(spec, resume=True, epochs=2)
    check_resumable(run, resumed)  # the same run, more epochs: resumable
    refused = {
        r"another model \(logistic, differing in [a-z_, ]*name": replace(
            resumed, model=ModelConfig.from_schema("deepfm", files["schema"]).to_dict()
        ),
        "updated by adam, not adagrad: give --sparse-optimizer adam": replace(
            resumed, sparse_optimizer="adagrad"
        ),
        "trained on --backend single, whose optimizer states do not load on torchrec": replace(
            resumed, backend="torchrec"
        ),
        "finished its 1 epochs: give more --epochs": replace(resumed, epochs=1),
    }
    for message, given in refused.items():
        with pytest.raises(InputError, match=f"cannot resume {run.uri}: .*{message}.*without --resume"):
            check_resumable(run, given)
    # A command without --resume (retrain) says how it starts over instead.
    with pytest.raises(InputError, match=r"give more --epochs, or remove the candidate\Z"):
        check_resumable(run, replace(resumed, epochs=1), anew="remove the candidate")
    run.clear()
    assert run.metrics() is None and run.latest_checkpoint() is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spec.json"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="local workers have this host's GPU")
def test_torchrec_settings_cpu_workers_cannot_run_are_refused_before_the_run_directory_is_written(
    spark, files, tmp_path
):
    """The test session's workers have no GPU: row-wise sharding and Adam tables are refused by fit
    in one line, before anything is written, instead of by each worker after the launch."""
    for options, message in (
        ({"sharding": "row_wise"}, "row_wise sharding needs GPUs"),
        ({"sparse_optimizer": "adam"}, "no 'adam' on CPU: use --sparse-optimizer adagrad"),
    ):
        with pytest.raises(InputError, match=message):
            fit(
                spark,
                files["schema"],
                files["train"],
                str(tmp_path / "run"),
                "dlrm",
                "torchrec",
                2,
                **options,
            )
        assert not (tmp_path / "run").exists()


def test_a_resumed_run_is_unfinished_until_it_ends_and_a_fresh_run_starts_clean(spark, files, tmp_path):
    """fit: a resume given more epochs takes the finished mark away (a later resume of it is not
    refused as finished), and a fresh run into the same folder clears the last run's results and
    checkpoints once its worker starts."""
    run_dir, run = str(tmp_path / "run"), RunDirectory(tmp_path / "run")
    options = dict(batch_size=4096, progress=False)

    def finished() -> None:  # what train() writes once fit returns
        run.write_metrics({"auc": 0.5})

    fit(spark, files["schema"], files["train"], run_dir, "logistic", "single", 1, epochs=1, **options)
    finished()
    first = run.latest_checkpoint()
    fit(
        spark,
        files["schema"],
        files["train"],
        run_dir,
        "logistic",
        "single",
        1,
        epochs=2,
        resume=True,
        **options,
    )
    assert run.metrics() is None and run.latest_checkpoint() != first
    finished()
    with pytest.raises(InputError, match="finished its 2 epochs"):
        check_resumable(run, replace(TrainSpec(**run.spec()), resume=True))
    fit(spark, files["schema"], files["train"], run_dir, "logistic", "single", 1, epochs=1, **options)
    assert run.metrics() is None
    assert checkpoint.load_latest(run).position.step == math.ceil(files["train"].rows / 4096)


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["--backend", "single", "--workers", "2"], "--backend single trains in this process: --workers 1"),
        (["--checkpoint-every", "0"], "argument --checkpoint-every: 0 is not a count"),
        (["--dense-lr", "-1"], r"argument --dense-lr: -1.0 is not a learning rate \(above 0\)"),
        (["--embedding-dim", "0"], "argument --embedding-dim: 0 is not a count"),
        (["--pretrain"], "--pretrain does not apply to --model dlrm: only ncf pretrains towers"),
        (["--interactions", "i"], "--interactions does not apply to --model dlrm"),
        (["--model", "ncf", "--interactions", "i"], "--features does not apply to --model ncf"),
    ],
)
def test_train_refuses_bad_flags_in_one_line_before_any_work(tmp_path, flags, says):
    """Refused as the command line is read (one line, by run_command), not by a worker's trace after
    the run directory was cleared, and a flag the model's training would not read is refused."""
    run_dir = tmp_path / "run"
    with pytest.raises(InputError, match=says):
        train_main(["--features", "f", "--workflow", "w", "--run-dir", str(run_dir), *flags])
    assert not run_dir.exists()


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["--model", "ncf", "--patience", "2"], "--patience does not apply to --model ncf: it has no valid"),
        (["--model", "multvae", "--features-version", "3"], "--features-version does not apply"),
        (["--model", "ncf", "--oracle", "o"], "--oracle does not apply to --model ncf"),
    ],
)
def test_train_refuses_flags_a_cf_model_would_not_read(tmp_path, flags, says):
    run_dir = tmp_path / "run"
    with pytest.raises(InputError, match=says):
        train_main(["--interactions", "i", "--workflow", "w", "--run-dir", str(run_dir), *flags])
    assert not run_dir.exists()
