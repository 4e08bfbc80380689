"""sparkrec recommend: every user's top-K items from a trained NCF or Mult-VAE run, as a Delta table.

The users come from the interaction tables the run trained on (NCF: the users of its positives;
Mult-VAE: the vae table's users, each ranked from their whole bag, fold-in and held-out items), and
so do the items each has clicked (every positive of ncf_train and ncf_eval, the held-out latest
included), which are never recommended. Executors rank (mapInPandas): each Python worker loads the
run's weights once; NCF scores a batch of users against the candidates a chunk at a time into a
running top K, so memory stays bounded with a million candidate items; Mult-VAE ranks every item for
a user in one pass.
Candidates are every item of the vocabulary, or the ids in a candidate table's item column.

The table (one row per user and rank: user id, the user's raw token, rank from 1, item id, the item's
raw token, score) is partitioned by run (the run directory's URI): a rerun of the same run replaces
exactly its rows.

    spark-submit spark_jobs/recommend.py --run-dir runs/ncf --interactions lake/interactions \\
        --workflow lake/workflow --out lake/recommendations --k 10
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from functools import cache

import numpy as np
import pandas as pd
import torch
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, LongType

from rec_plugin import storage
from rec_plugin.errors import CommandParser, InputError, run_command
from rec_plugin.interactions import (
    HELDOUT,
    ITEMS,
    NCF_EVAL,
    NCF_TRAIN,
    VAE,
    InteractionsLayout,
    item_column,
    user_column,
)
from rec_plugin.ops.categorify import read_vocabularies
from rec_plugin.schema import ColumnSchema, Schema
from rec_plugin.templates import sql_literal
from rec_plugin.workflow import Workflow
from spark_jobs.session import build_session
from spark_jobs.train_cf import load_description
from training.evaluate import ncf_top_items, top_items
from training.models import build_model
from training.models.cf import CF_MODELS, NCF
from training.run_directory import RunDirectory

RUN, RANK, ITEM_ID, ITEM_TOKEN, SCORE = "run", "rank", "item_id", "item", "score"
USER_ID, USER_TOKEN = "user_id", "user"
SEEN, BAG = "seen", "bag"
RANKED_SCHEMA = f"{USER_ID} long, {RANK} int, {ITEM_ID} long, {SCORE} float"
USERS_PER_BATCH = 256


# Ranking tasks: one per core at the least, and up to 8 a core at one per USERS_PER_TASK users of the
# vocabulary, so that a long ranking shows progress (NCF over 75k items for 28k users ran 16 minutes in
# 2 tasks with none shown) and a small one pays no task's overhead more than once a core.
RANKING_TASKS_PER_CORE = 8
USERS_PER_TASK = 2_000


@cache
def _model(run_uri: str) -> torch.nn.Module:
    """The run's trained model, loaded once per Python worker (Spark reuses workers across tasks)."""
    run = RunDirectory(run_uri)
    model = build_model(run.model_config())
    model.load_state_dict(run.weights())
    return model.eval()


def ranker(
    run_uri: str, model_name: str, candidates: np.ndarray, k: int, threads: int
) -> Callable[[Iterator[pd.DataFrame]], Iterator[pd.DataFrame]]:
    """Frames of (user id, bag, seen items) -> (user id, rank, item id, score), USERS_PER_BATCH users
    at a time, on `threads` torch threads (a task's cores: its executor runs one task per core)."""

    def rank(frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        torch.set_num_threads(threads)
        model = _model(run_uri)
        for frame in frames:
            for start in range(0, len(frame), USERS_PER_BATCH):
                part = frame.iloc[start : start + USERS_PER_BATCH]
                users = part[USER_ID].to_numpy(np.int64)
                seen = [np.asarray(s, dtype=np.int64) for s in part[SEEN]]
                if model_name == NCF:
                    ids, scores = ncf_top_items(model, users, seen, candidates, k)
                else:
                    bags = [np.asarray(b, dtype=np.int64) for b in part[BAG]]
                    ids, scores = _vae_top_unseen(model, bags, seen, k)
                if np.isnan(scores).any() or np.isposinf(scores).any():  # said, not dropped as padding is
                    raise InputError(f"run {run_uri} scores NaN or inf: its weights diverged; retrain it")
                width = ids.shape[1]
                yield pd.DataFrame(
                    {
                        USER_ID: np.repeat(users, width),
                        RANK: np.tile(np.arange(1, width + 1, dtype=np.int32), len(users)),
                        ITEM_ID: ids.reshape(-1),
                        SCORE: scores.reshape(-1).astype(np.float32),
                    }
                ).loc[lambda f: ~np.isneginf(f[SCORE])]  # the padding of a user short of k items

    return rank


def _vae_top_unseen(
    model: torch.nn.Module, bags: list[np.ndarray], seen: list[np.ndarray], k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Mult-VAE's k best items for each bag that the user has not clicked: the model leaves the bag
    out, and asks for as many more as a user's clicks outside their bag (older than the bag's cap)."""
    extra = max((len(np.setdiff1d(s, b)) for s, b in zip(seen, bags, strict=True)), default=0)
    ids, scores = top_items(model, bags, min(k + extra, model.n_items - 1))
    kept_ids = np.full((len(bags), k), -1, dtype=np.int64)
    kept_scores = np.full((len(bags), k), -np.inf, dtype=np.float32)
    for row, clicked in enumerate(seen):
        unseen = ~np.isin(ids[row], clicked)
        take = min(k, int(unseen.sum()))
        kept_ids[row, :take] = ids[row][unseen][:take]
        kept_scores[row, :take] = scores[row][unseen][:take]
    return kept_ids, kept_scores


def users_and_seen(
    spark: SparkSession, layout: InteractionsLayout, model: str, features: Schema
) -> DataFrame:
    """(user id, the bag Mult-VAE ranks from, every item the user clicked) for every user the run
    ranks; NCF ranks from the user alone (its bag is empty). `features`: the workflow's schema the run
    trained on, whose tables hold its ids (tables rebuilt after an extend may hold newer ones: the
    users its table lacks are left out, and Mult-VAE's bags keep the items it knows, a bag left
    empty leaving its user out)."""
    user, item, label = user_column(features).name, item_column(features).name, features.label.name
    users_known, items_known = user_column(features).cardinality, item_column(features).cardinality
    train, held_out = (
        storage.read_delta(spark, path, layout.version(table)).where(F.col(label) == 1).select(user, item)
        for path, table in ((layout.ncf_train, NCF_TRAIN), (layout.ncf_eval, NCF_EVAL))
    )
    seen = train.unionByName(held_out).groupBy(user).agg(F.collect_set(item).alias(SEEN))
    if model == NCF:
        users = seen.where(F.col(user) < users_known).withColumn(BAG, F.array().cast(ArrayType(LongType())))
    else:
        whole = F.when(F.col(HELDOUT).isNull(), F.col(ITEMS)).otherwise(F.array_union(ITEMS, HELDOUT))
        known = F.filter(whole, lambda id_: id_ < items_known)
        bags = storage.read_delta(spark, layout.vae, layout.version(VAE))
        bags = bags.select(user, known.alias(BAG)).where(F.size(BAG) > 0)
        bags = bags.where(F.col(user) < users_known)
        users = bags.join(seen, user, "left").withColumn(SEEN, F.coalesce(SEEN, BAG))
    return users.select(F.col(user).cast("long").alias(USER_ID), BAG, SEEN)


_INTEGER_TYPES = ("tinyint", "smallint", "int", "bigint")


def candidate_items(spark: SparkSession, item: ColumnSchema, candidates: str | None) -> np.ndarray:
    """Every item id of the vocabulary (not the unknown id 0), or the distinct ids in a candidate
    table's item column that the vocabulary holds."""
    if candidates is None:
        return np.arange(1, item.cardinality, dtype=np.int64)
    version = storage.delta_version(spark, candidates, "candidate table")
    table = storage.read_delta(spark, candidates, version)
    if item.name not in table.columns:
        raise InputError(f"candidate table {candidates} has no column {item.name!r} of item ids")
    kind = dict(table.dtypes)[item.name]
    if kind not in _INTEGER_TYPES:  # raw tokens: cast to ids they are not, or a cast error per task
        raise InputError(
            f"candidate table {candidates}: column {item.name!r} holds {kind}, not featurized item ids "
            "(integers): give a table of the features' ids"
        )
    distinct = table.select(item.name).distinct().toPandas()[item.name].dropna()
    ids = distinct[(distinct > 0) & (distinct < item.cardinality)]
    if len(ids) < len(distinct):
        print(
            f"recommend: {len(distinct) - len(ids):,} of the {len(distinct):,} candidate ids are not in "
            f"the run's vocabulary (1 to {item.cardinality - 1}) and are left out",
            file=sys.stderr,
        )
    if ids.empty:  # a run would replace its rows by none
        raise InputError(
            f"candidate table {candidates} holds no item id of the run's vocabulary (1 to "
            f"{item.cardinality - 1} in {item.name!r}): give a table of featurized item ids"
        )
    return np.sort(ids.to_numpy(np.int64))


def raw_tokens(
    spark: SparkSession, workflow: str, column: ColumnSchema, id_name: str, token: str
) -> DataFrame:
    """(id, raw token) of a column's vocabulary table at the version the schema pins."""
    if column.vocabulary is None:
        raise InputError(f"column {column.name!r} has no vocabulary pinned in the workflow's schema")
    tokens = read_vocabularies(spark, workflow, {column.name: column.vocabulary})[column.name]
    return tokens.select(F.col("id").cast("long").alias(id_name), F.col("value").alias(token))


def _written_before_user_tokens(spark: SparkSession, out: str, columns: tuple[str, ...]) -> bool:
    """Whether `out` is a recommendations table written before USER_TOKEN was a column (it takes the
    column); a table of other columns is refused in one line, never altered."""
    if not storage.has_commit(spark, out):
        return False
    held = spark.read.format("delta").load(out).columns
    if sorted(held) == sorted(columns):
        return False
    if sorted(held) == sorted(set(columns) - {USER_TOKEN}):
        return True
    raise InputError(
        f"{out} holds a Delta table with other columns than a recommendations table: choose another --out"
    )


def recommend(
    spark: SparkSession,
    run_dir: str,
    interactions: str,
    workflow: str,
    out: str,
    k: int = 10,
    candidates: str | None = None,
) -> dict:
    """Writes the run's top-k items per user into the Delta table `out` (replacing the run's earlier
    rows); returns the users, rows and the table's version."""
    if k < 1:
        raise InputError(f"--k must be at least 1, got {k}")
    run = RunDirectory(storage.qualified(spark, run_dir))
    if run.metrics() is None:
        raise InputError(f"run {run_dir} has not finished training (no metrics.json): train it first")
    model = run.model_config().name
    if model not in CF_MODELS:
        raise InputError(
            f"run {run_dir} trained {model!r}; sparkrec recommend ranks with {sorted(CF_MODELS)}"
        )
    if candidates is not None and model != NCF:  # Mult-VAE's decoder ranks the whole catalogue
        raise InputError(f"--candidates is for {NCF} runs; run {run_dir} trained {model}: drop it")
    # The workflow's version the run trained on: a retrain's extend since grew the vocabularies past
    # the run's tables.
    features = Workflow.load_schema(workflow, spark, Workflow.version_of(workflow, run.schema(), spark))
    item = item_column(features)
    layout = InteractionsLayout(storage.qualified(spark, interactions))
    layout = layout.pinned(load_description(spark, layout))  # refuses a folder that holds no tables
    pool = candidate_items(spark, item, candidates) if model == NCF else np.zeros(0, np.int64)
    users = users_and_seen(spark, layout, model, features)
    # The users' table is a small aggregate that Spark would rank in one task (each Python worker
    # loads the model once: _model is cached).
    cores = spark.sparkContext.defaultParallelism
    tasks = user_column(features).cardinality // USERS_PER_TASK
    users = users.repartition(min(max(cores, tasks), cores * RANKING_TASKS_PER_CORE))
    threads = int(spark.conf.get("spark.task.cpus", "1"))
    storage.require_folder_shared_with_executors(spark, run.uri, "--run-dir")  # each ranking task loads it
    ranked = users.mapInPandas(ranker(run.uri, model, pool, k, threads), RANKED_SCHEMA)
    rows = (
        ranked.join(raw_tokens(spark, workflow, item, ITEM_ID, ITEM_TOKEN), ITEM_ID, "left")
        .join(raw_tokens(spark, workflow, user_column(features), USER_ID, USER_TOKEN), USER_ID, "left")
        .withColumn(RUN, F.lit(run.uri))
    )
    columns = (RUN, USER_ID, USER_TOKEN, RANK, ITEM_ID, ITEM_TOKEN, SCORE)
    writer = rows.select(*columns).write.format("delta").mode("overwrite")
    if _written_before_user_tokens(spark, out, columns):
        writer = writer.option("mergeSchema", "true")
    if storage.has_commit(spark, out):
        writer.option("replaceWhere", f"{RUN} = {sql_literal(run.uri)}").save(out)
    else:
        writer.partitionBy(RUN).save(out)
    written = spark.read.format("delta").load(out).where(F.col(RUN) == run.uri)
    return {
        "model": model,
        "users": written.select(USER_ID).distinct().count(),
        "rows": written.count(),
        "k": k,
        "table": out,
        "version": storage.delta_version(spark, out, "recommendations table"),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = CommandParser(prog="sparkrec recommend", description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", required=True, help="a trained ncf or multvae run")
    parser.add_argument("--interactions", required=True, help="the interaction tables the run trained on")
    parser.add_argument("--workflow", required=True, help="the saved workflow (the item vocabulary)")
    parser.add_argument("--out", required=True, help="the recommendations Delta table")
    parser.add_argument("--k", type=int, default=10, help="items per user")
    parser.add_argument(
        "--candidates",
        help="NCF: a Delta table whose item column holds the candidate ids (default: all items)",
    )
    parser.add_argument("--profile", default="local", help="Spark profile from conf/spark/")
    args = parser.parse_args(argv)
    spark = build_session(args.profile, "sparkrec-recommend")
    report = recommend(
        spark, args.run_dir, args.interactions, args.workflow, args.out, args.k, args.candidates
    )
    print(json.dumps({"recommend": report}, indent=2))
    return report


if __name__ == "__main__":
    # Run from the importable module, not this __main__: Spark's Python workers unpickle the ranking
    # functions' cached model loader by module name, and under `spark-submit spark_jobs/recommend.py`
    # __main__ is not theirs.
    from spark_jobs import recommend as stage

    run_command(stage.main, "sparkrec recommend")
