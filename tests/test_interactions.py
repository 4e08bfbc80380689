"""sparkrec interactions on generated e-commerce data: negatives are never positives, draws are seeded,
ncf_train's files each mix both labels, the eval and VAE tables hold what NCF and Mult-VAE evaluation
read, and the oracle columns are the generator's own click model: exposure times click probability."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import SHOP, SHOP_NCF_TRAIN_FILE_ROWS
from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from rec_plugin.errors import EXIT_INPUT_ERROR, InputError, run_command
from rec_plugin.interactions import (
    EVAL_NEGATIVES,
    HELDOUT,
    ITEMS,
    NCF_EVAL,
    NCF_TRAIN,
    ORACLE_RANKING,
    ORACLE_SCORE,
    POPULARITY,
    POPULARITY_RANKING,
    RANKING_DEPTH,
    SPLIT,
    VAE,
    VAE_SPLITS,
    InteractionsDescription,
    InteractionsLayout,
)
from rec_plugin.schema import DAY, LINE_NUMBER, SOURCE_FILE, Tags
from rec_plugin.workflow import SCHEMA_FILE, Workflow
from spark_jobs.ecommerce_oracle import KEY_ITEM, KEY_USER, EcommerceOracle
from spark_jobs.generate_ecommerce import EcommerceModel, item_exposure
from spark_jobs.interactions import FEW_HELDOUT_USERS, NCF_TRAIN_MIN_FILES, build_interactions
from spark_jobs.layout import GeneratedData, PipelineLayout
from spark_jobs.train_cf import table_files
from training.ranking import ndcg_at_k

USER, ITEM, LABEL = "user_id", "item_id", "click"


def read(spark: SparkSession, path: str) -> DataFrame:
    return spark.read.format("delta").load(path)


def positives(spark: SparkSession, shop: PipelineLayout) -> DataFrame:
    """Every (user, item) clicked, with its last click's line, from the features table itself."""
    rows = read(spark, shop.features).where(f"{LABEL} = 1 AND {USER} > 0 AND {ITEM} > 0")
    line = F.struct(DAY, SOURCE_FILE, LINE_NUMBER)
    return rows.groupBy(F.col(USER).cast("bigint").alias(USER), F.col(ITEM).cast("bigint").alias(ITEM)).agg(
        F.max(line).alias("line")
    )


def file_rows(spark: SparkSession, path: str) -> list[pd.DataFrame]:
    """Each parquet file of the table's latest version, its rows in file order, files by content."""
    files = read(spark, path).inputFiles()
    frames = [pd.read_parquet(f.removeprefix("file:")) for f in files]
    return sorted(frames, key=lambda f: tuple(f.iloc[0]))


def test_negatives_are_never_a_positive_of_the_user(spark, shop_features, shop_interactions):
    layout, built = shop_interactions
    clicked = positives(spark, shop_features).select(USER, ITEM)
    train, evaluation = read(spark, layout.ncf_train), read(spark, layout.ncf_eval)
    for table in (train, evaluation):
        negatives = table.where(f"{LABEL} = 0").select(USER, ITEM)
        assert negatives.count() > 0
        assert negatives.join(clicked, [USER, ITEM], "left_semi").count() == 0
    # The positives of both tables are every clicked pair, once.
    labelled = train.where(f"{LABEL} = 1").unionByName(
        evaluation.where(f"{LABEL} = 1").select(*train.columns)
    )
    assert labelled.count() == clicked.count()
    assert labelled.select(USER, ITEM).exceptAll(clicked).count() == 0
    rows = built.rows
    assert rows["ncf_train_negatives"] + built.negatives_dropped == 4 * rows["ncf_train_positives"]
    assert built.negatives_dropped < 0.01 * rows["ncf_train_negatives"]
    # Drawn over the whole item vocabulary (alpha 0: uniform), items no one trains on among them, and
    # the bucket of rare and unseen items (id 0), so that NCF learns to score those low.
    cardinality = Workflow.load_schema(shop_features.workflow, spark)[ITEM].cardinality
    trained = train.where(f"{LABEL} = 1").select(ITEM).distinct()
    untrained = spark.range(0, cardinality).withColumnRenamed("id", ITEM).join(trained, ITEM, "left_anti")
    unknown = train.where(f"{ITEM} = 0")
    assert unknown.count() > 0 and unknown.where(f"{LABEL} = 1").count() == 0  # a negative, never a positive
    drawn = train.where(f"{LABEL} = 0").select(ITEM).distinct()
    assert untrained.count() > 0
    assert drawn.join(untrained, ITEM, "left_semi").count() == untrained.count()


def test_every_ncf_train_file_mixes_both_labels_at_the_tables_rate(spark, shop_interactions):
    """The loader reads file by file and shuffles within a buffer only: a file of one label would feed
    the model long runs of it."""
    layout, built = shop_interactions
    files = file_rows(spark, layout.ncf_train)
    rate = built.rows["ncf_train_positives"] / built.rows["ncf_train"]
    expected = max(NCF_TRAIN_MIN_FILES, math.ceil(built.rows["ncf_train"] / SHOP_NCF_TRAIN_FILE_ROWS))
    assert len(files) == expected and sum(map(len, files)) == built.rows["ncf_train"]
    for frame in files:
        assert len(frame) > built.rows["ncf_train"] / expected / 2
        assert abs(frame[LABEL].mean() - rate) < 5 * math.sqrt(rate * (1 - rate) / len(frame))
        # Shuffled within the file too: its first and second halves hold both labels alike.
        halves = np.array_split(frame[LABEL].to_numpy(), 2)
        assert abs(halves[0].mean() - halves[1].mean()) < 10 * math.sqrt(rate * (1 - rate) / len(frame))


def test_eval_holds_each_users_latest_positive_and_100_distinct_negatives(
    spark, shop_features, shop_interactions
):
    layout, _ = shop_interactions
    evaluation = read(spark, layout.ncf_eval)
    per_user = evaluation.groupBy(USER).agg(
        F.count("*").alias("rows"),
        F.countDistinct(ITEM).alias("items"),
        F.sum(LABEL).alias("positives"),
        F.max(F.when(F.col(LABEL) == 1, F.col(ITEM))).alias("latest"),
    )
    assert per_user.where(f"rows != {EVAL_NEGATIVES + 1} OR items != rows OR positives != 1").count() == 0
    # Evaluated: every user with 2+ distinct positives, on the one clicked last.
    clicked = positives(spark, shop_features)
    latest = clicked.groupBy(USER).agg(
        F.count("*").alias("n"), F.max(F.struct("line", ITEM))[ITEM].alias("latest")
    )
    expected = latest.where("n >= 2").select(USER, "latest")
    assert per_user.count() == expected.count() > 50
    assert per_user.select(USER, "latest").exceptAll(expected).count() == 0
    assert evaluation.where(f"{POPULARITY} IS NULL OR {POPULARITY} < 0").count() == 0


def test_same_seed_same_tables_and_another_seed_other_draws(
    spark, shop_features, shop_interactions, tmp_path, capsys
):
    ours, _ = shop_interactions
    again = InteractionsLayout(str(tmp_path / "again"))
    # A vae table an earlier version wrote unpartitioned there: replaced by a partitioned one.
    read(spark, ours.vae).write.format("delta").save(again.vae)
    built = build_interactions(
        spark,
        shop_features.features,
        shop_features.workflow,
        again.root,
        seed=0,
        ncf_train_file_rows=SHOP_NCF_TRAIN_FILE_ROWS,
    )
    # The small shop's few held-out users are said, in one line.
    valid, test = built.rows["vae_valid"], built.rows["vae_test"]
    assert 0 < valid < FEW_HELDOUT_USERS
    warning = f"rest on {valid:,} validation and {test:,} test users (--heldout-share 0.1 of the users"
    assert capsys.readouterr().err.count(warning) == 1
    oracle_free = {"ncf_train": [], "ncf_eval": [ORACLE_SCORE], "vae": [ORACLE_RANKING]}
    for table, oracle_columns in oracle_free.items():
        first = read(spark, getattr(ours, table)).drop(*oracle_columns)
        second = read(spark, getattr(again, table)).drop(*oracle_columns)
        assert first.count() == second.count()
        assert first.exceptAll(second).count() == 0, table
    # ncf_train: the same files, each in the same order.
    for mine, theirs in zip(file_rows(spark, ours.ncf_train), file_rows(spark, again.ncf_train), strict=True):
        pd.testing.assert_frame_equal(mine, theirs)
    assert DeltaTable.forPath(spark, again.vae).detail().first()["partitionColumns"] == [SPLIT]
    assert all(f"/{SPLIT}=" in f for f in read(spark, again.vae).inputFiles())
    # Another seed into the same folder: replaced, other draws and splits.
    other = build_interactions(spark, shop_features.features, shop_features.workflow, again.root, seed=1)
    second = read(spark, again.ncf_train)
    assert second.count() == other.rows["ncf_train"]
    assert read(spark, ours.ncf_train).exceptAll(second).count() > 0
    splits = read(spark, again.vae).select(USER, SPLIT).exceptAll(read(spark, ours.vae).select(USER, SPLIT))
    assert splits.count() > 0
    saved = json.loads(Path(again.description).read_text())
    assert InteractionsDescription(**saved) == other and other.seed == 1 and not other.planted
    assert other.table_versions == {NCF_TRAIN: 1, NCF_EVAL: 1, VAE: 2}
    # A rebuild cut off after its first table leaves the description of the build before it, whose
    # pinned versions the readers read: one build's tables, not the new ncf_train beside the old rest.
    read(spark, again.ncf_train).limit(10).write.format("delta").mode("overwrite").save(again.ncf_train)
    pinned = InteractionsLayout(again.root).pinned(other)
    kept = table_files(spark, pinned.ncf_train, version=pinned.version(NCF_TRAIN))
    assert kept.rows == other.rows["ncf_train"] and read(spark, again.ncf_train).count() == 10


def test_vae_fold_in_and_heldout_parts_partition_a_held_out_users_items(
    spark, shop_features, shop_interactions
):
    layout, built = shop_interactions
    vae = read(spark, layout.vae)
    bags = positives(spark, shop_features).groupBy(USER).agg(F.sort_array(F.collect_list(ITEM)).alias("bag"))
    rows = vae.join(bags, USER).collect()
    assert len(rows) == vae.count() == built.users
    by_split = {split: [r for r in rows if r[SPLIT] == split] for split in VAE_SPLITS}
    assert all(by_split.values()), {split: len(r) for split, r in by_split.items()}
    assert {split: len(r) for split, r in by_split.items()} == {
        split: built.rows[f"vae_{split}"] for split in VAE_SPLITS
    }
    for row in rows:
        fold_in, heldout = set(row[ITEMS]), set(row[HELDOUT])
        assert len(fold_in) == len(row[ITEMS]) and not fold_in & heldout
        assert sorted(fold_in | heldout) == row["bag"]
        if row[SPLIT] == VAE_SPLITS[0]:
            assert not heldout and row[POPULARITY_RANKING] is None and row[ORACLE_RANKING] is None
            continue
        assert len(row["bag"]) >= 5 and len(heldout) == max(1, round(0.2 * len(row["bag"])))
        for ranking in (row[POPULARITY_RANKING], row[ORACLE_RANKING]):
            assert len(ranking) == len(set(ranking)) == RANKING_DEPTH and not set(ranking) & fold_in


def test_exposure_is_the_generators_impression_distribution(spark, shop_features):
    """P(shown) sums to 1 over each day's catalogue and matches how often the raw lines show the most
    popular items, and how often items born after day 0."""
    model = EcommerceModel.from_json(Path(GeneratedData(shop_features.data).planted_model).read_text())
    shown = read(spark, shop_features.bronze).groupBy(DAY, ITEM).count().toPandas()
    shown["index"] = shown[ITEM].str.removeprefix("i").astype(int)
    for day, lines in shown.groupby(DAY):
        exposure = item_exposure(model, day)
        catalogue = model.categories * (model.items_per_category + day * model.new_items_per_category_per_day)
        assert len(exposure) == catalogue and math.isclose(exposure.sum(), 1.0, abs_tol=1e-12)
        assert (exposure > 0).all()
        n = lines["count"].sum()
        assert n == SHOP.rows_per_day and lines["index"].max() < catalogue
        counts = lines.set_index("index")["count"]
        for index in np.argsort(-exposure)[:5]:
            p = exposure[index]
            assert abs(counts.get(index, 0) / n - p) < 5 * math.sqrt(p * (1 - p) / n), (day, index)
        newcomers = model.categories * model.items_per_category
        p = exposure[newcomers:].sum()
        assert (day == 0) == (p == 0)
        assert abs(counts[counts.index >= newcomers].sum() / n - p) < 5 * math.sqrt(p * (1 - p) / n) + 1e-12


def test_oracle_columns_are_the_generators_click_model(spark, shop_features, shop_interactions):
    """ORACLE_SCORE of a held-out positive is log P(shown that day) + log of the generator's own click
    probability for that line; ORACLE_RANKING is the top of every vocabulary item scored so by the
    generator's SQL; and the oracle ranks the held-out positive better than popularity does."""
    shop = shop_features
    layout, built = shop_interactions
    evaluation = read(spark, layout.ncf_eval)
    assert built.planted and evaluation.where(F.col(ORACLE_SCORE).isNull()).count() == 0
    lines = positives(spark, shop).select(USER, ITEM, "line.*")
    truth = read(spark, shop.oracle).select(DAY, SOURCE_FILE, LINE_NUMBER, "p_click")
    oracle = EcommerceOracle(spark, shop.data, shop.workflow, Workflow.load_schema(shop.workflow, spark))
    try:
        indices = oracle.items.select(F.col(KEY_ITEM).alias(ITEM), "item")
        held = (
            evaluation.where(f"{LABEL} = 1")
            .join(lines, [USER, ITEM])
            .join(truth, [DAY, SOURCE_FILE, LINE_NUMBER])
            .join(indices, ITEM)
            .toPandas()
        )
        assert len(held) == evaluation.where(f"{LABEL} = 1").count()
        exposure = np.concatenate(
            [oracle.log_exposure(r[DAY], np.array([r["item"]])) for _, r in held.iterrows()]
        )
        assert np.isfinite(exposure).all()
        np.testing.assert_allclose(np.exp(held[ORACLE_SCORE] - exposure), held["p_click"], rtol=0, atol=1e-9)
        # The ranking of three held-out users against a brute-force scoring of every item in SQL.
        vae = read(spark, layout.vae).where(F.col(SPLIT) != VAE_SPLITS[0]).orderBy(USER).limit(3).collect()
        users = spark.createDataFrame([(r[USER],) for r in vae], f"{USER} bigint")
        latest = lines.join(
            read(spark, shop.features).select(DAY, SOURCE_FILE, LINE_NUMBER, "hour", "device"),
            [DAY, SOURCE_FILE, LINE_NUMBER],
        )
        last = latest.groupBy(USER).agg(
            F.max(F.struct(DAY, SOURCE_FILE, LINE_NUMBER, "hour", "device")).alias("last")
        )
        user_days = oracle.user_days(users.join(last, USER))
        every = user_days.select(KEY_USER).crossJoin(oracle.items.select(KEY_ITEM))
        scores = oracle.scores(user_days, every).join(user_days.select(KEY_USER, DAY), KEY_USER)
        scores = scores.join(oracle.items.select(KEY_ITEM, "item"), KEY_ITEM).toPandas()
        scores["score"] = [
            oracle.log_exposure(day, np.array([index]))[0] - np.logaddexp(0.0, -logit)
            for day, index, logit in zip(scores[DAY], scores["item"], scores["logit"])
        ]
    finally:
        oracle.release()
    for row in vae:
        mine = scores[(scores[KEY_USER] == row[USER]) & ~scores[KEY_ITEM].isin(row[ITEMS])]
        mine = mine.set_index(KEY_ITEM)["score"]
        best = np.sort(mine.to_numpy())[::-1][:RANKING_DEPTH]
        assert len(best) == RANKING_DEPTH and np.isfinite(best).all()
        np.testing.assert_allclose(mine[row[ORACLE_RANKING]].to_numpy(), best, rtol=0, atol=1e-9)
    # What the oracle is for: the best ranking of what a user clicks, so no worse than popularity.
    frame = evaluation.orderBy(USER, F.col(LABEL).desc(), ITEM).toPandas()
    labels = frame[LABEL].to_numpy().reshape(-1, EVAL_NEGATIVES + 1)
    ndcg = {
        column: ndcg_at_k(frame[column].to_numpy(np.float64).reshape(labels.shape), labels, 10)
        for column in (ORACLE_SCORE, POPULARITY)
    }
    assert ndcg[ORACLE_SCORE] > ndcg[POPULARITY], ndcg


def test_a_schema_without_a_user_column_is_refused_in_one_line(spark, shop_features, tmp_path, capsys):
    shop = shop_features
    schema = json.loads(Path(shop.workflow, SCHEMA_FILE).read_text())
    for column in schema["columns"]:
        column["tags"] = [t for t in column["tags"] if t != Tags.USER_ID]
    untagged = tmp_path / "workflow"
    untagged.mkdir()
    (untagged / SCHEMA_FILE).write_text(json.dumps(schema))
    with pytest.raises(InputError, match="exactly one single-id categorical column tagged 'user_id'"):
        build_interactions(spark, shop.features, str(untagged), str(tmp_path / "out"))

    def command(argv: list[str]) -> None:
        build_interactions(spark, shop.features, str(untagged), str(tmp_path / "out"))

    with pytest.raises(SystemExit) as exit_info:
        run_command(command, "sparkrec interactions", [])
    error = capsys.readouterr().err
    assert exit_info.value.code == EXIT_INPUT_ERROR and error.count("\n") == 1 and "Traceback" not in error
    assert not (tmp_path / "out").exists()


def test_a_user_the_catalogue_cannot_give_100_negatives_trains_on_every_item(spark, shop_features, tmp_path):
    """A user who clicked all but 99 items of the vocabulary is not evaluated, so their latest click
    stays in ncf_train: held out for an evaluation that cannot take them, it was in neither table."""
    cardinality = Workflow.load_schema(shop_features.workflow, spark)[ITEM].cardinality
    features = read(spark, shop_features.features)
    first = features.where(f"{LABEL} = 1 AND {USER} > 0 AND {ITEM} > 0").orderBy(LINE_NUMBER).limit(1)
    heavy_user = first.first()[USER]
    items = spark.range(1, cardinality - EVAL_NEGATIVES + 1)  # leaves 99 items unclicked
    clicks = first.crossJoin(items).withColumn(ITEM, F.col("id").cast("int"))
    clicks = clicks.withColumn(LINE_NUMBER, F.col("id") + 10**9).drop("id")
    table = str(tmp_path / "features")
    features.unionByName(clicks.select(*features.columns)).write.format("delta").save(table)
    layout = InteractionsLayout(str(tmp_path / "interactions"))
    build_interactions(spark, table, shop_features.workflow, layout.root, seed=0)
    train, evaluation = read(spark, layout.ncf_train), read(spark, layout.ncf_eval)
    assert evaluation.where(F.col(USER) == heavy_user).count() == 0
    assert evaluation.select(USER).distinct().count() > 50  # the other users are evaluated as before
    trained = train.where((F.col(USER) == heavy_user) & (F.col(LABEL) == 1)).select(ITEM).distinct()
    clicked = read(spark, table).where((F.col(USER) == heavy_user) & (F.col(LABEL) == 1) & (F.col(ITEM) > 0))
    assert trained.count() == clicked.select(ITEM).distinct().count() >= cardinality - EVAL_NEGATIVES
