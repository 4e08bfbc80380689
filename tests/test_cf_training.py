"""NCF and Mult-VAE through `sparkrec train` on real interaction tables (tests/conftest.py's
shop_interactions): distributed backends, resume after a kill, the ranking report, and `sparkrec
recommend`'s Delta table of each user's top items."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import kill_at_first_checkpoint
from delta.tables import DeltaTable
from pyspark.sql import functions as F

from rec_plugin import storage
from rec_plugin.errors import InputError, raised_in_a_task
from rec_plugin.interactions import (
    HELDOUT,
    ITEMS,
    ORACLE_RANKING,
    POPULARITY_RANKING,
    SPLIT,
    TEST_SPLIT,
    VALID_SPLIT,
    InteractionsLayout,
    item_column,
    ncf_schema,
    user_column,
    vae_schema,
)
from rec_plugin.schema import ROW_KEYS, ColumnSchema, Schema, Tags
from rec_plugin.workflow import Workflow
from spark_jobs.recommend import (
    ITEM_ID,
    ITEM_TOKEN,
    RANK,
    RUN,
    SCORE,
    USER_ID,
    USER_TOKEN,
    candidate_items,
    recommend,
)
from spark_jobs.train_cf import (
    CF_REPORT_KEYS,
    DEFAULT_EPOCHS,
    FUSED_LR_SCALE,
    POPULARITY_START,
    table_files,
    train_cf,
    vae_report,
)
from training.evaluate import candidate_logits, heldout_ndcg_sum, ncf_top_items
from training.loop import TrainSpec
from training.models import ModelConfig, build_model
from training.models.cf import MULTVAE, NCF, fuse_pretrained
from training.models.config import GMF, MLP, NEUMF
from training.run_directory import RunDirectory
from training.step import SPARSE_LEARNING_RATES

REPO = Path(__file__).resolve().parents[1]
# One candidate in 101 at random: HR@10 of a ranking that learnt nothing is about 10 / 101.
RANDOM_HIT_RATE = 10 / 101


@pytest.fixture(scope="module")
def runs(spark, shop_features, shop_interactions, tmp_path_factory):
    """NCF on two torch DDP workers and Mult-VAE on two Horovod workers, trained on the interactions."""
    layout, _ = shop_interactions
    folder = tmp_path_factory.mktemp("cf_runs")
    trained = {}
    # The small shop's tables make a few dozen steps an epoch: NCF gets five (Mult-VAE's default is ten).
    for model, backend, epochs in ((NCF, "torch", 5), (MULTVAE, "horovod", None)):
        options = {"progress": False} if epochs is None else {"progress": False, "epochs": epochs}
        trained[model] = train_cf(
            spark, layout.root, shop_features.workflow, str(folder / model), model, backend, 2, **options
        )
    return trained


def test_both_models_train_on_two_workers_and_report_every_ranking_metric(runs):
    for model, keys in CF_REPORT_KEYS.items():
        report = runs[model]
        assert report["workers"] == 2 and report["eval_users"] > 0
        assert all(isinstance(report[key], float) for key in keys), report
        run = RunDirectory(report["run_dir"])
        assert run.metrics()["model"] == model
        for png in (run.loss_plot(), run.ranking_plot()):
            assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert runs[NCF]["hr_at_10"] > 2 * RANDOM_HIT_RATE, runs[NCF]
    vae = RunDirectory(runs[MULTVAE]["run_dir"])  # started from popularity, the planted counts' ranking
    assert vae.spec()["initial_weights"] == vae.pretrained(POPULARITY_START).uri
    # The planted oracle knows each user's taste: it must rank better than popularity alone.
    assert runs[NCF]["oracle_ndcg_at_10"] > runs[NCF]["popularity_ndcg_at_10"], runs[NCF]


def test_multvae_keeps_the_epoch_of_best_validation_ndcg(spark, shop_interactions, runs):
    """Each epoch is scored on the validation users' held-out items (each Horovod rank its share of
    their files), every epoch trains; the run's weights are those of the epoch of highest NDCG@100, as
    Liang et al. pick."""
    layout, _ = shop_interactions
    metrics = RunDirectory(runs[MULTVAE]["run_dir"]).metrics()
    scores, best = metrics["valid_per_epoch"], metrics["best_epoch"]
    assert metrics["valid_metric"] == "ndcg_at_100" and len(scores) >= 2, metrics
    assert scores[best - 1] == max(scores) and len(scores) == DEFAULT_EPOCHS[MULTVAE]  # no early stop
    model = build_model(RunDirectory(runs[MULTVAE]["run_dir"]).model_config())
    model.load_state_dict(RunDirectory(runs[MULTVAE]["run_dir"]).weights())
    valid = table_files(spark, layout.vae, (SPLIT, VALID_SPLIT))
    total, users = heldout_ndcg_sum(model, valid.files)
    assert users == valid.rows > 0
    assert abs(total / users - scores[best - 1]) < 1e-5, (total / users, scores)


def run_train(layout_root: str, workflow: str, run_dir: Path, *extra: str) -> subprocess.Popen:
    command = [
        sys.executable, "-m", "spark_jobs.cli", "train", "--interactions", layout_root,
        "--workflow", workflow, "--model", MULTVAE, "--run-dir", str(run_dir), "--backend", "single",
        "--workers", "1", "--batch-size", "64", "--epochs", "3", "--checkpoint-every", "20", *extra,
    ]  # fmt: skip
    return subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def test_resume_after_kill_reaches_the_same_ranking_metrics(shop_features, shop_interactions, tmp_path):
    layout, _ = shop_interactions
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    assert run_train(layout.root, shop_features.workflow, whole).wait(timeout=600) == 0
    kill_at_first_checkpoint(lambda: run_train(layout.root, shop_features.workflow, killed), killed)
    assert run_train(layout.root, shop_features.workflow, killed, "--resume").wait(timeout=600) == 0
    first, resumed = (RunDirectory(d).metrics() for d in (whole, killed))
    assert first["steps"] == resumed["steps"]
    for key in CF_REPORT_KEYS[MULTVAE]:
        assert abs(first[key] - resumed[key]) <= 1e-3, (key, first[key], resumed[key])


def test_training_a_cf_model_without_interaction_tables_is_one_line(shop_features, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "spark_jobs.cli", "train", "--interactions", str(tmp_path / "none"),
         "--workflow", shop_features.workflow, "--model", NCF, "--run-dir", str(tmp_path / "run")],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 2
    assert "sparkrec interactions" in result.stderr and "Traceback" not in result.stderr


def ranking(rows) -> pd.DataFrame:
    return rows.drop(SCORE).toPandas().sort_values([USER_ID, RANK], ignore_index=True)


def test_recommend_writes_each_users_top_k_unseen_items_and_a_rerun_replaces_them(
    spark, shop_features, shop_interactions, runs, tmp_path
):
    """The rerun ranks with a copy of the workflow that a retrain's extend has grown since the runs
    trained: it ranks the runs' own items, as the first run did."""
    layout, _ = shop_interactions
    out = str(tmp_path / "recommendations")
    schema = ncf_schema(Workflow.load_schema(shop_features.workflow, spark))
    user, item = user_column(schema).name, item_column(schema)
    # Every item a user clicked, from the features the interaction tables were built of.
    features = spark.read.format("delta").load(shop_features.features)
    clicked = features.where((F.col(schema.label.name) == 1) & (F.col(item.name) > 0)).select(
        F.col(user).cast("long").alias(USER_ID), F.col(item.name).cast("long").alias(ITEM_ID)
    )
    # Each id with its raw token: a feature row's id beside its bronze row's value.
    bronze = spark.read.format("delta").load(shop_features.bronze)
    raw = features.select(
        *ROW_KEYS, F.col(user).cast("long").alias(USER_ID), F.col(item.name).cast("long").alias(ITEM_ID)
    ).join(
        bronze.select(*ROW_KEYS, F.col(user).alias(USER_TOKEN), F.col(item.name).alias(ITEM_TOKEN)), ROW_KEYS
    )
    # The extend: the same rows with every item renamed bring as many new items.
    grown = str(tmp_path / "workflow")
    shutil.copytree(shop_features.workflow, grown)
    renamed = bronze.withColumn(item.name, F.concat(F.col(item.name), F.lit("-new")))
    Workflow.load(grown, spark).extend(renamed, grown, {"day": 99})
    assert item_column(Workflow.load_schema(grown, spark)).cardinality > item.cardinality
    # A first write killed before its commit left a log folder without one: written over as new.
    (tmp_path / "recommendations" / "_delta_log" / "_staged_commits").mkdir(parents=True)
    for model in (NCF, MULTVAE):
        run_uri = runs[model]["run_dir"]
        first = recommend(spark, run_uri, layout.root, shop_features.workflow, out, k=5)
        ranked = ranking(spark.read.format("delta").load(out).where(F.col(RUN) == run_uri))
        again = recommend(spark, run_uri, layout.root, grown, out, k=5)
        rows = spark.read.format("delta").load(out).where(F.col(RUN) == run_uri)
        assert again["rows"] == first["rows"] == 5 * first["users"] > 0
        assert again["version"] > first["version"]
        assert rows.count() == first["rows"]  # replaced, not appended
        pd.testing.assert_frame_equal(ranking(rows), ranked)
        assert rows.groupBy(USER_ID).agg(F.countDistinct(ITEM_ID).alias("n")).where("n != 5").count() == 0
        assert sorted(r[RANK] for r in rows.select(RANK).distinct().collect()) == [1, 2, 3, 4, 5]
        assert (
            rows.where(F.col(ITEM_TOKEN).isNull() | F.col(USER_TOKEN).isNull() | F.isnan(SCORE)).count() == 0
        )
        assert rows.agg(F.max(ITEM_ID)).first()[0] < item.cardinality
        for pair in ((USER_ID, USER_TOKEN), (ITEM_ID, ITEM_TOKEN)):
            assert rows.select(*pair).join(raw.select(*pair), list(pair), "left_anti").count() == 0, pair
        assert rows.join(clicked, [USER_ID, ITEM_ID]).count() == 0, f"{model} recommended a clicked item"
    # Both runs' rows live side by side in the one table.
    assert spark.read.format("delta").load(out).select(RUN).distinct().count() == 2
    # A folder without interaction tables is refused in one line.
    with pytest.raises(InputError, match="holds no interaction tables: build them first"):
        recommend(spark, runs[NCF]["run_dir"], str(tmp_path / "none"), grown, out, k=5)
    # Candidates for a Mult-VAE run (its decoder ranks the catalogue) were once ignored without a word.
    with pytest.raises(InputError, match="^--candidates is for ncf runs; run .* trained multvae: drop it$"):
        recommend(spark, runs[MULTVAE]["run_dir"], layout.root, grown, out, k=5, candidates=out)
    # A mistyped --out naming another table is refused, and the table left as it was.
    version = DeltaTable.forPath(spark, shop_features.features).history(1).first()["version"]
    with pytest.raises(InputError, match="other columns than a recommendations table: choose another --out"):
        recommend(spark, runs[NCF]["run_dir"], layout.root, grown, shop_features.features, k=5)
    assert DeltaTable.forPath(spark, shop_features.features).history(1).first()["version"] == version
    # A diverged run's NaN scores are said (in one line, by run_command), not dropped as padding is.
    diverged = tmp_path / "diverged"
    shutil.copytree(runs[NCF]["run_dir"].removeprefix("file:"), diverged)
    copy = RunDirectory(str(diverged))
    weights = copy.weights()
    copy.save_weights({n: w.fill_(float("nan")) if w.is_floating_point() else w for n, w in weights.items()})
    with pytest.raises(Exception) as failed:  # noqa: PT011 - a task's error reaches the driver as Py4J's
        recommend(spark, str(diverged), layout.root, grown, out, k=5)
    assert "scores NaN or inf: its weights diverged; retrain it" in str(raised_in_a_task(failed.value))


def test_chunked_ncf_top_k_equals_scoring_every_candidate_at_once(spark, shop_features):
    schema = ncf_schema(Workflow.load_schema(shop_features.workflow, spark))
    torch.manual_seed(0)
    model = build_model(ModelConfig.from_schema(NCF, schema)).eval()
    items = item_column(schema).cardinality
    users = np.arange(1, 9, dtype=np.int64)
    candidates = np.arange(1, items, dtype=np.int64)
    seen = [np.array([3, 5], dtype=np.int64)] + [np.zeros(0, np.int64)] * 6 + [candidates[:10]]
    ids, scores = ncf_top_items(model, users, seen, candidates, k=7, pairs_per_call=8 * 16)
    for row, user in enumerate(users):
        logits = candidate_logits(model, np.full(len(candidates), user), candidates)
        logits[np.isin(candidates, seen[row])] = -np.inf
        best = np.argsort(-logits, kind="stable")[:7]
        np.testing.assert_array_equal(ids[row], candidates[best])
        np.testing.assert_allclose(scores[row], logits[best], rtol=1e-5)


def test_pretraining_starts_neumf_from_its_fused_towers(spark, shop_features, shop_interactions, tmp_path):
    layout, _ = shop_interactions
    run_dir = tmp_path / "neumf"
    # Five epochs, as in `runs`: the small shop's tables make a few dozen steps an epoch.
    report = train_cf(
        spark, layout.root, shop_features.workflow, str(run_dir), NCF, pretrain=True, progress=False, epochs=5
    )
    run = RunDirectory(run_dir)
    towers = {mode: run.pretrained(mode) for mode in (GMF, MLP)}
    for mode, tower in towers.items():
        assert tower.model_config().ncf_mode == mode and tower.model_config().embedding_dims == (8,)
        assert report["pretrained"][mode]["ndcg_at_10"] == tower.metrics()["ndcg_at_10"]
        assert tower.metrics()["hr_at_10"] > 2 * RANDOM_HIT_RATE, tower.metrics()  # each tower learnt
    fused = run.pretrained(NEUMF)
    expected = fuse_pretrained(towers[GMF].weights(), towers[MLP].weights(), run.model_config())
    assert all(torch.equal(fused.weights()[k], expected[k]) for k in expected)
    assert run.spec()["initial_weights"] == fused.uri and run.metrics()["pretrained"] == report["pretrained"]
    assert run.spec()["dense_lr"] == pytest.approx(TrainSpec.dense_lr * FUSED_LR_SCALE)
    assert run.spec()["sparse_lr"] == pytest.approx(SPARSE_LEARNING_RATES["adam"] * FUSED_LR_SCALE)
    # Starting from the fused weights with learning rates of zero keeps them: they are what NeuMF loads.
    frozen = tmp_path / "frozen"
    train_cf(
        spark, layout.root, shop_features.workflow, str(frozen), NCF, progress=False,
        initial_weights=fused.uri, dense_lr=0.0, sparse_lr=0.0, sparse_optimizer="adagrad",
    )  # fmt: skip
    kept = RunDirectory(frozen).weights()
    assert all(torch.equal(kept[k], expected[k]) for k in expected)
    assert any(not torch.equal(run.weights()[k], expected[k]) for k in expected)  # NeuMF then learnt
    # A run cut off in NeuMF's own training (its checkpoints kept, no metrics yet) resumes: the
    # finished towers are taken as they are, not trained or refused again.
    (run_dir / "metrics.json").unlink()
    checkpoints = {mode: tower.latest_checkpoint() for mode, tower in towers.items()}
    resumed = train_cf(
        spark, layout.root, shop_features.workflow, str(run_dir), NCF, pretrain=True, progress=False,
        epochs=5, resume=True,
    )  # fmt: skip
    assert resumed["pretrained"] == report["pretrained"]
    assert {mode: tower.latest_checkpoint() for mode, tower in towers.items()} == checkpoints
    # A resume whose options would make other towers is refused, not fused into a shape error's trace.
    (run_dir / "metrics.json").unlink()
    again = dict(progress=False, epochs=5, resume=True, pretrain=True)
    with pytest.raises(InputError, match="its pretrained gmf tower has another config than these options"):
        train_cf(spark, layout.root, shop_features.workflow, str(run_dir), NCF, embedding_dim=32, **again)
    # A resume as Mult-VAE is refused as of another model (it was blamed on rebuilt tables: Mult-VAE
    # reads another table than NCF's).
    with pytest.raises(InputError, match=r"the run's checkpoint is of another model \(ncf, "):
        train_cf(
            spark, layout.root, shop_features.workflow, str(run_dir), MULTVAE, progress=False, resume=True
        )
    # So is one on interaction tables rebuilt since the checkpoint (here: as if a file were new).
    spec = json.loads((run_dir / "spec.json").read_text())
    spec["train"]["files"][0] += ".rebuilt"
    (run_dir / "spec.json").write_text(json.dumps(spec))
    with pytest.raises(InputError, match="its interaction tables were rebuilt since its checkpoint"):
        train_cf(spark, layout.root, shop_features.workflow, str(run_dir), NCF, **again)


def test_pretraining_is_refused_in_one_line_for_mult_vae_and_beside_a_warm_start(
    spark, shop_features, shop_interactions, tmp_path
):
    layout, _ = shop_interactions
    with pytest.raises(InputError, match="it is for --model ncf, not multvae"):
        train_cf(spark, layout.root, shop_features.workflow, str(tmp_path / "vae"), MULTVAE, pretrain=True)
    with pytest.raises(InputError, match="give one"):
        train_cf(
            spark, layout.root, shop_features.workflow, str(tmp_path / "ncf"), NCF, pretrain=True,
            warm_start=str(tmp_path / "production"),
        )  # fmt: skip
    with pytest.raises(InputError, match="--pretrain starts from weights it writes first.*not: train on one"):
        train_cf(
            spark, layout.root, shop_features.workflow, str(tmp_path / "ncf"), NCF, "torchrec", pretrain=True
        )
    assert not (tmp_path / "vae").exists() and not (tmp_path / "ncf").exists()
    # Tables whose report could rank no user (a catalogue too small for 100 negatives, a held-out
    # share of 0) once ended the run in an InputError after every epoch had trained.
    copied = InteractionsLayout(str(tmp_path / "interactions"))
    shutil.copytree(layout.root, copied.root)
    DeltaTable.forPath(spark, copied.ncf_eval).delete()
    DeltaTable.forPath(spark, copied.vae).delete(F.col(SPLIT) == TEST_SPLIT)
    described = json.loads(Path(copied.description).read_text())  # as a build of such tables pins them
    for table in ("ncf_eval", "vae"):
        latest = DeltaTable.forPath(spark, f"{copied.root}/{table}").history(1).first()["version"]
        described["table_versions"][table] = latest
    storage.write_text(spark, copied.description, json.dumps(described))  # and its checksum file
    for model, says in ((NCF, "holds no evaluation users: each needs 100 items"), (MULTVAE, "no test users")):
        with pytest.raises(InputError, match=says):
            train_cf(spark, copied.root, shop_features.workflow, str(tmp_path / model), model)
        assert not (tmp_path / model).exists()


def test_a_candidate_table_is_one_that_exists_and_holds_ids_the_run_knows(spark, tmp_path, capsys):
    """Candidates of no known id would replace a run's recommendations by none."""
    item = ColumnSchema("item_id", "int32", cardinality=10)
    table = str(tmp_path / "candidates")
    with pytest.raises(InputError, match=r"^candidate table .* does not exist$"):
        candidate_items(spark, item, table)
    spark.createDataFrame([(0,), (10,), (12,)], "item_id int").write.format("delta").save(table)
    with pytest.raises(InputError, match=r"holds no item id of the run's vocabulary \(1 to 9 in 'item_id'\)"):
        candidate_items(spark, item, table)
    spark.createDataFrame([(3,), (3,), (1,)], "item_id int").write.format("delta").mode("append").save(table)
    assert candidate_items(spark, item, table).tolist() == [1, 3]
    assert "3 of the 5 candidate ids are not in the run's vocabulary (1 to 9)" in capsys.readouterr().err
    # Raw item tokens are no ids: refused, not cast (a cast error in each task, or tokens read as ids).
    tokens = str(tmp_path / "tokens")
    spark.createDataFrame([("3",), ("i7",)], "item_id string").write.format("delta").save(tokens)
    with pytest.raises(InputError, match="column 'item_id' holds string, not featurized item ids"):
        candidate_items(spark, item, tokens)


def test_mult_vae_is_scored_on_a_catalogue_smaller_than_its_rankings(spark, tmp_path):
    """Ids 1-49: popularity's top 100 less a user's fold-in items is 45 items long for a user of 4 and
    44 for a user of 5 (the rankings are ragged), and the model ranks at most 49 other items."""
    items = 50
    schema = Schema(
        (
            ColumnSchema("click", "float32", (Tags.LABEL,)),
            ColumnSchema("user_id", "int32", (Tags.CATEGORICAL, Tags.USER_ID), cardinality=10),
            ColumnSchema("item_id", "int32", (Tags.CATEGORICAL, Tags.ITEM_ID), cardinality=items),
        )
    )
    config = ModelConfig.from_schema(MULTVAE, vae_schema(schema, 10), vae_hidden=(8,), vae_latent=4)
    model = build_model(config)
    bags = {1: [1, 2, 3, 4], 2: [1, 2, 3, 4, 5]}
    heldout = {1: [6], 2: [49]}
    popular = list(range(1, items))  # popularity ranks items by id
    rows = [
        (user, bag, heldout[user], TEST_SPLIT, None, [i for i in popular if i not in bag])
        for user, bag in bags.items()
    ]
    layout = InteractionsLayout(str(tmp_path / "interactions"))
    columns = f"user_id int, {ITEMS} array<bigint>, {HELDOUT} array<bigint>, {SPLIT} string, "
    columns += f"{ORACLE_RANKING} array<bigint>, {POPULARITY_RANKING} array<bigint>"
    spark.createDataFrame(rows, columns).write.format("delta").save(layout.vae)
    report = vae_report(spark, model, layout)
    assert report["eval_users"] == 2 and report["oracle_ndcg_at_100"] is None
    # user 1's item 6 is popularity's second after the fold-in items (1 / log2(3)); user 2's 49 its 44th
    expected = (1 / np.log2(3) + 1 / np.log2(45)) / 2
    assert report["popularity_ndcg_at_100"] == pytest.approx(expected, abs=1e-5)
    assert 0 <= report["recall_at_20"] <= report["recall_at_50"] == 1.0  # every other item is ranked


def test_a_neumf_dim_it_cannot_split_is_refused_before_training(
    spark, shop_features, shop_interactions, tmp_path
):
    layout, _ = shop_interactions
    run_dir = tmp_path / "run"
    with pytest.raises(InputError, match="--model ncf: NeuMF splits each row .* the dim 15 must be even"):
        train_cf(spark, layout.root, shop_features.workflow, str(run_dir), NCF, embedding_dim=15)
    assert not run_dir.exists()
