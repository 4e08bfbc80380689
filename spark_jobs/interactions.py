"""sparkrec interactions: a featurized Delta table -> the NCF and Mult-VAE training and evaluation tables.

Reads the features table (a pinned Delta version, the latest by default) whose workflow schema tags one
user_id and one item_id column, and writes the tables of rec_plugin/interactions.py under --out. Implicit
feedback: a positive is a row whose label is 1, all days, deduplicated per (user, item); id 0 (rare or
unknown) is never a positive's user or item; at alpha 0 it is a training negative (_negative_draw).
The data knows no time finer than the day, so a user's positives are ordered by the (day, source_file,
line_number) of each pair's last click: a total order, the same on every run, and "the latest positive"
is the last in it.

ncf_train holds every positive but each evaluated user's latest (a user with 2+ distinct positives, whom
the catalogue can give EVAL_NEGATIVES negatives, is evaluated), plus `negatives` items per positive
drawn on the executors with probability ~ popularity^alpha over the item vocabulary (popularity: the
item's positives in ncf_train; alpha 0 draws every id alike, as He et al. 2017), from a hash of
(seed, user, positive, j, round) and, for alpha above 0, an inverse-CDF lookup over the trained items:
reproducible whatever the partitioning. A draw that is any positive of the user (the held-out one
included) is drawn again, up to NEGATIVE_ROUNDS times; one still colliding is dropped and counted. A
user may get the same negative twice (as in He et al. 2017's sampler: with replacement).
ncf_train is written shuffled: spread over files of about NCF_TRAIN_FILE_ROWS rows (at least
NCF_TRAIN_MIN_FILES files, so that every data-parallel worker gets rows) by a seeded hash of
each row's key (user, positive, j) and ordered within each file by another, so that every file mixes
positives and negatives at the table's rate (the loader reads file by file, shuffling only within a
buffer) in an order that depends on the seed and the data alone.
ncf_eval holds each evaluated user's latest positive and EVAL_NEGATIVES distinct items that are no
positive of theirs, drawn uniformly over the item vocabulary (He et al.'s protocol); POPULARITY is the
item's positives in ncf_train.

vae, partitioned by SPLIT (training reads the train users' files alone), holds each user's distinct
items (their latest max_items_per_user, oldest first). Users with at least MIN_HELDOUT_ITEMS items are
split by a seeded hash: heldout_share each to valid and test, at most max_heldout_users each (in
expectation: the share is lowered to fit); every other user (fewer items, or not drawn) trains. A
held-out user's items are split by a seeded hash: round(20%) (at least 1) are HELDOUT, the rest ITEMS
(fold-in). POPULARITY_RANKING ranks items by the train users in whose bag they are.

With --planted (the generator's data folder, holding planted_model.json) the oracle columns are the
Bayes-optimal ranking of what the user clicks (spark_jobs/ecommerce_oracle.py): ORACLE_SCORE in
ncf_eval, ORACLE_RANKING in vae.

    spark-submit spark_jobs/interactions.py --features lake/features --workflow lake/workflow \\
        --out lake/interactions --planted data
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable

import numpy as np
import pandas as pd
from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from rec_plugin import storage
from rec_plugin.errors import CommandParser, InputError, run_command
from rec_plugin.interactions import (
    EVAL_NEGATIVES,
    FOLD_IN_SHARE,
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
    item_column,
    user_column,
)
from rec_plugin.schema import DAY, LINE_NUMBER, SOURCE_FILE, ColumnSchema, Schema, SchemaError
from rec_plugin.workflow import Workflow
from spark_jobs.ecommerce_oracle import CANDIDATES, KEY_USER, KNOWN, LAST, EcommerceOracle
from spark_jobs.session import build_session

NEGATIVE_ROUNDS = 4  # draws of one training negative before it is dropped
MIN_HELDOUT_ITEMS = 5  # a valid or test user's items, so that fold-in and held-out parts are both real
# Fewer valid or test users than this get a warning: per-user NDCG@100 spreads about 0.3, so the mean
# of 1,000 users moves by about 0.01 between draws, and that of 26 (seen on a user's log) by 0.06.
FEW_HELDOUT_USERS = 1_000
# About this many ncf_train rows a file: files to share among loader workers, each a few times the
# loader's shuffle buffer (200k rows), whose reads stay large.
NCF_TRAIN_FILE_ROWS = 500_000
# ncf_train's fewest files: data-parallel workers each read whole files (row groups), so a small table
# in one file could feed one worker only.
NCF_TRAIN_MIN_FILES = 16
# Salts of the seeded hashes, one per purpose, so that no two draws are correlated.
_TRAIN_SALT, _EVAL_SALT, _SPLIT_SALT, _FOLD_SALT, _FILE_SALT, _ORDER_SALT = 1, 2, 3, 4, 5, 6
# Columns of the per-user frames: their clicked (last, item) pairs, whether they are evaluated, and
# (the evaluated users' frame alone) their evaluation negatives.
_CLICKED, _EVALUATED, _NEGATIVES = "clicked", "evaluated", "negatives"


def _uniform(seed: int, salt: int, *keys: Column) -> Column:
    """A uniform draw in [0, 1) from 53 bits of a hash of (seed, salt, keys): the same on any partition."""
    return F.shiftrightunsigned(F.xxhash64(F.lit(seed), F.lit(salt), *keys), 11) / float(1 << 53)


def _uniform_sql(seed: int, salt: int, *keys: str) -> str:
    """_uniform inside a SQL lambda."""
    return f"(shiftrightunsigned(xxhash64({seed}L, {salt}, {', '.join(keys)}), 11) / {float(1 << 53)}D)"


def _check_arguments(
    negatives: int, alpha: float, max_items: int, share: float, cap: int, file_rows: int
) -> None:
    if negatives < 0 or alpha < 0 or cap < 0:
        raise InputError("negatives, popularity exponent and max held-out users must be 0 or more")
    if file_rows < 1:
        raise InputError(f"ncf_train's rows per file must be 1 or more, got {file_rows}")
    if max_items < MIN_HELDOUT_ITEMS:
        raise InputError(f"max items per user must be at least {MIN_HELDOUT_ITEMS}, got {max_items}")
    if not 0 <= share <= 0.5:
        raise InputError(f"the held-out share (each of valid and test) must be in [0, 0.5], got {share}")


def _features_schema(spark: SparkSession, workflow: str) -> Schema:
    """The workflow's schema, refused in one line unless it tags one user and one item column."""
    schema = Workflow.load_schema(workflow, spark)
    try:
        user_column(schema), item_column(schema), schema.label
    except SchemaError as error:
        raise InputError(f"workflow {workflow}: {error}") from None
    return schema


def _clicks_per_user(table: DataFrame, schema: Schema, context: list[str], seed: int) -> DataFrame:
    """One row per user with a positive: ITEMS, their distinct items oldest first, LAST the (day,
    source_file, line_number, *context) of the latest's last click, and whether they are evaluated:
    2+ items, and the catalogue gives them EVAL_NEGATIVES negatives (drawn here for the count only,
    and again, the same, for the evaluated: 800 bytes a user stay out of the persisted frame). A
    user who is not evaluated trains on every item, the latest too."""
    user, item, label = user_column(schema).name, item_column(schema).name, schema.label.name
    missing = [
        c for c in [user, item, label, DAY, SOURCE_FILE, LINE_NUMBER, *context] if c not in table.columns
    ]
    if missing:
        raise InputError(f"the features table has no columns {missing}: featurize it with this workflow")
    positives = table.where((F.col(label) == 1) & (F.col(user) > 0) & (F.col(item) > 0))
    order = F.struct(DAY, SOURCE_FILE, LINE_NUMBER, *context)
    pairs = positives.groupBy(F.col(user).cast("bigint").alias(user), F.col(item).cast("bigint").alias(item))
    pairs = pairs.agg(F.max(order).alias(LAST))
    clicked = F.sort_array(F.collect_list(F.struct(LAST, item))).alias(_CLICKED)
    per_user = pairs.groupBy(user).agg(clicked)
    items = F.transform(_CLICKED, lambda c: c[item])
    per_user = per_user.select(user, items.alias(ITEMS), F.element_at(_CLICKED, -1)[LAST].alias(LAST))
    negatives = F.size(_eval_negatives(schema, seed)) == EVAL_NEGATIVES
    return per_user.withColumn(_EVALUATED, (F.size(ITEMS) >= 2) & negatives)


def _train_items(users: DataFrame) -> Column:
    """A user's ncf_train positives: all their items but an evaluated user's latest."""
    return F.when(F.col(_EVALUATED), F.slice(ITEMS, 1, F.size(ITEMS) - 1)).otherwise(F.col(ITEMS))


def _popularity(users: DataFrame, item: str) -> DataFrame:
    """(item, POPULARITY): each item's positives in ncf_train (items no one trains on are absent)."""
    return (
        users.select(F.explode(_train_items(users)).alias(item))
        .groupBy(item)
        .agg(F.count("*").alias(POPULARITY))
    )


def _negative_draw(popularity: DataFrame, item: ColumnSchema, alpha: float) -> Callable[[Column], Column]:
    """A vectorized draw: uniform -> item id with probability ~ popularity^alpha. Alpha 0 draws every
    id of the vocabulary alike (0 .. cardinality - 1, items no one trains on too, as He et al. 2017),
    in SQL: id 0, the bucket of rare and unseen items, is a negative like any item no one clicked, so
    NCF scores such an item low, not from an untrained row. Otherwise by an inverse CDF over the
    trained items (sorted by id: the cumulative array ships to the executors, 16 bytes an item)."""
    if popularity.isEmpty():
        raise InputError("the features table holds no positive (label 1) with a known user and item")
    if alpha == 0:
        return lambda uniform: F.floor(uniform * item.cardinality).cast("bigint")
    rows = popularity.orderBy(item.name).toPandas()
    ids = rows[item.name].to_numpy(dtype=np.int64)
    cdf = np.cumsum(rows[POPULARITY].to_numpy(dtype=np.float64) ** alpha)
    cdf /= cdf[-1]

    @F.pandas_udf("bigint")
    def draw(uniform: pd.Series) -> pd.Series:
        index = np.searchsorted(cdf, uniform.to_numpy(), side="right")
        return pd.Series(ids[np.minimum(index, len(ids) - 1)])

    return draw


def _ncf_train(
    users: DataFrame, schema: Schema, draw: Callable[[Column], Column], negatives: int, seed: int
) -> DataFrame:
    """Every training positive (label 1) and its negatives (label 0): per (positive, j) the first of
    NEGATIVE_ROUNDS draws that is no positive of the user; none such: no row. Each row keeps its key
    (user, positive, j), j = -1 for the positive itself, unique in the table."""
    user, item, label = user_column(schema).name, item_column(schema).name, schema.label.name
    rows = users.select(user, ITEMS, F.explode(_train_items(users)).alias("positive"))
    positives = rows.select(
        user, F.col("positive").alias(item), F.lit(1).alias(label), "positive", F.lit(-1).alias("j")
    )
    if negatives == 0:
        return positives
    slots = rows.withColumn("j", F.explode(F.sequence(F.lit(0), F.lit(negatives - 1))))
    keys = [F.col(user), F.col("positive"), F.col("j")]
    draws = [draw(_uniform(seed, _TRAIN_SALT, *keys, F.lit(r))) for r in range(NEGATIVE_ROUNDS)]
    drawn = slots.select(user, ITEMS, "positive", "j", *[d.alias(f"draw_{r}") for r, d in enumerate(draws)])
    rounds = [F.col(f"draw_{r}") for r in range(NEGATIVE_ROUNDS)]
    first_free = F.coalesce(*[F.when(~F.array_contains(ITEMS, d), d) for d in rounds])
    negative = drawn.select(user, first_free.alias(item), F.lit(0).alias(label), "positive", "j")
    negative = negative.where(F.col(item).isNotNull())
    return positives.unionByName(negative)


def _shuffled(rows: DataFrame, user: str, files: int, seed: int) -> DataFrame:
    """ncf_train's rows (keyed by user, positive, j) spread over `files` partitions, one file each, by a
    seeded hash of the key and ordered within each by another: every file mixes positives and negatives
    at the table's rate, in an order that depends on the seed and the rows alone, whatever the
    partitioning upstream. Written as built, a union puts positives and negatives in different files,
    and a loader reading file by file sees long runs of one label."""
    keys = [F.col(user), F.col("positive"), F.col("j")]
    spread = rows.repartition(files, F.xxhash64(F.lit(seed), F.lit(_FILE_SALT), *keys))
    ordered = spread.sortWithinPartitions(F.xxhash64(F.lit(seed), F.lit(_ORDER_SALT), *keys), *keys)
    return ordered.drop("positive", "j")


def _eval_negatives(schema: Schema, seed: int) -> Column:
    """EVAL_NEGATIVES distinct ids of the item vocabulary (1 .. cardinality - 1), uniform, none a
    positive of the user: the first of enough hashed draws that no realistic catalogue runs short."""
    user, cardinality = user_column(schema).name, item_column(schema).cardinality
    draws = f"4 * {EVAL_NEGATIVES} + 2 * size({ITEMS})"
    uniform = _uniform_sql(seed, _EVAL_SALT, f"`{user}`", "k")
    candidates = (
        f"transform(sequence(0, {draws} - 1), k -> 1L + CAST(floor({uniform} * {cardinality - 1}) AS BIGINT))"
    )
    free = f"filter({candidates}, x -> NOT array_contains({ITEMS}, x))"
    return F.expr(f"slice(array_distinct({free}), 1, {EVAL_NEGATIVES})")


def _eval_candidates(users: DataFrame, schema: Schema, seed: int) -> DataFrame:
    """Per evaluated user (and their `last`): CANDIDATES, their latest positive (label 1) and
    their EVAL_NEGATIVES negatives (label 0)."""
    user, item, label = user_column(schema).name, item_column(schema).name, schema.label.name
    evaluated = users.where(_EVALUATED).withColumn(_NEGATIVES, _eval_negatives(schema, seed))
    candidates = F.concat(
        F.array(F.struct(F.element_at(ITEMS, -1).alias(item), F.lit(1).alias(label))),
        F.transform(_NEGATIVES, lambda x: F.struct(x.alias(item), F.lit(0).alias(label))),
    )
    return evaluated.select(user, LAST, candidates.alias(CANDIDATES))


def _ncf_eval(
    oracle: EcommerceOracle | None, users: DataFrame, schema: Schema, popularity: DataFrame, seed: int
) -> DataFrame:
    """ncf_eval's rows with POPULARITY and ORACLE_SCORE (the candidate's planted logit in the held-out
    impression; null without a planted model or where the context is not the generator's)."""
    user, item, label = user_column(schema).name, item_column(schema).name, schema.label.name
    per_user = _eval_candidates(users, schema, seed)
    if oracle is None:
        exploded = per_user.select(user, F.explode(CANDIDATES).alias("c"))
        rows = exploded.select(
            user, f"c.{item}", f"c.{label}", F.lit(None).cast("double").alias(ORACLE_SCORE)
        )
    else:
        rows = oracle.candidate_scores(per_user).select(user, item, label, ORACLE_SCORE)
    with_popularity = rows.join(F.broadcast(popularity), item, "left")
    return with_popularity.withColumn(POPULARITY, F.coalesce(POPULARITY, F.lit(0)).cast("bigint"))


def _vae_splits(
    users: DataFrame, schema: Schema, max_items: int, share: float, cap: int, seed: int
) -> DataFrame:
    """Per user: the bag (their latest max_items items), SPLIT, and for held-out users ITEMS (fold-in)
    and HELDOUT (round 20% of the bag, at least 1, by a seeded hash of (user, item))."""
    user = user_column(schema).name
    bag = F.slice(ITEMS, F.greatest(F.size(ITEMS) - max_items + 1, F.lit(1)), max_items)
    bags = users.select(user, bag.alias("bag")).withColumn("eligible", F.size("bag") >= MIN_HELDOUT_ITEMS)
    eligible = bags.where("eligible").count()
    share = min(share, cap / eligible) if eligible else 0.0
    draw = _uniform(seed, _SPLIT_SALT, F.col(user))
    train, valid, test = VAE_SPLITS
    split = (
        F.when(F.col("eligible") & (draw < share), valid)
        .when(F.col("eligible") & (draw < 2 * share), test)
        .otherwise(train)
    )
    bags = bags.withColumn(SPLIT, split)
    held = f"greatest(1, CAST(round(size(bag) * {1 - FOLD_IN_SHARE}D) AS INT))"
    hashed = f"struct(xxhash64({seed}L, {_FOLD_SALT}, `{user}`, x) AS h, x AS item)"
    ranked = f"array_sort(transform(bag, x -> {hashed}))"
    heldout = F.expr(f"array_sort(transform(slice({ranked}, 1, {held}), s -> s.item))")
    heldout = F.when(F.col(SPLIT) == train, F.array().cast("array<bigint>")).otherwise(heldout)
    bags = bags.withColumn(HELDOUT, heldout)
    return bags.select(
        user, F.filter("bag", lambda x: ~F.array_contains(HELDOUT, x)).alias(ITEMS), HELDOUT, SPLIT
    )


def _popularity_ranking(bags: DataFrame, max_items: int) -> Column:
    """Held-out users: the RANKING_DEPTH items most often in train users' bags (ties: the lower id),
    fold-in items left out; null for train users."""
    train = VAE_SPLITS[0]
    counts = bags.where(F.col(SPLIT) == train).select(F.explode(ITEMS).alias("item")).groupBy("item").count()
    top = [
        r["item"] for r in counts.orderBy(F.desc("count"), "item").limit(RANKING_DEPTH + max_items).collect()
    ]
    ranked = F.filter(
        F.array(*[F.lit(x) for x in top]).cast("array<bigint>"), lambda x: ~F.array_contains(ITEMS, x)
    )
    return F.when(F.col(SPLIT) != train, F.slice(ranked, 1, RANKING_DEPTH))


def _write(spark: SparkSession, frame: DataFrame, path: str, partition_by: tuple[str, ...] = ()) -> None:
    """Replaces the table at `path` in one Delta commit, its schema and partitioning too (a table an
    earlier version wrote otherwise is rewritten, not refused); a failed first write leaves nothing."""
    with storage.new_table_removed_on_failure(spark, path):
        writer = frame.write.format("delta").mode("overwrite").option("overwriteSchema", "true")
        writer.partitionBy(*partition_by).save(path)


def _with_oracle_rankings(
    oracle: EcommerceOracle | None, users: DataFrame, bags: DataFrame, schema: Schema
) -> DataFrame:
    """vae rows with ORACLE_RANKING for held-out users (null for train users and without a model)."""
    if oracle is None:
        return bags.withColumn(ORACLE_RANKING, F.lit(None).cast("array<bigint>"))
    user = user_column(schema).name
    held = bags.where(F.col(SPLIT) != VAE_SPLITS[0]).select(F.col(user).alias(KEY_USER), ITEMS)
    held_users = users.join(held.select(F.col(KEY_USER).alias(user)), user)
    rankings = oracle.rankings(oracle.user_days(held_users).where(KNOWN), held)
    return bags.join(rankings.withColumnRenamed(KEY_USER, user), user, "left")


def build_interactions(
    spark: SparkSession,
    features: str,
    workflow: str,
    out: str,
    *,
    negatives: int = 4,
    popularity_exponent: float = 0.0,
    max_items_per_user: int = 200,
    heldout_share: float = 0.1,
    max_heldout_users: int = 10_000,
    seed: int = 0,
    planted: str | None = None,
    features_version: int | None = None,
    ncf_train_file_rows: int = NCF_TRAIN_FILE_ROWS,
) -> InteractionsDescription:
    """Writes ncf_train, ncf_eval, vae and interactions.json under `out` (each table replaced) from the
    features table at `features_version` (default: the latest). `negatives` per training positive,
    drawn ~ popularity^`popularity_exponent` (0: uniform); `heldout_share` of the users with enough items
    to each of valid and test, at most `max_heldout_users` each; `planted`: the generator's data folder
    (planted_model.json), for the oracle columns (null without it); ncf_train is shuffled into files of
    about `ncf_train_file_rows` rows."""
    started = time.perf_counter()
    _check_arguments(
        negatives,
        popularity_exponent,
        max_items_per_user,
        heldout_share,
        max_heldout_users,
        ncf_train_file_rows,
    )
    schema = _features_schema(spark, workflow)
    version = storage.delta_version(spark, features, "features table", features_version)
    table = spark.read.format("delta").option("versionAsOf", version).load(features)
    oracle = None if planted is None else EcommerceOracle(spark, planted, workflow, schema)
    users = _clicks_per_user(table, schema, oracle.context if oracle else [], seed)
    users = users.persist(StorageLevel.MEMORY_AND_DISK)
    layout = InteractionsLayout(out)
    user, item, label = user_column(schema).name, item_column(schema).name, schema.label.name
    try:
        popularity = _popularity(users, item).persist(StorageLevel.MEMORY_AND_DISK)
        draw = _negative_draw(popularity, item_column(schema), popularity_exponent)
        positives = popularity.agg(F.sum(POPULARITY)).first()[0]
        files = max(NCF_TRAIN_MIN_FILES, math.ceil(positives * (1 + negatives) / ncf_train_file_rows))
        train = _shuffled(_ncf_train(users, schema, draw, negatives, seed), user, files, seed)
        _write(spark, train, layout.ncf_train)
        _progress(f"{NCF_TRAIN} written", started)
        rows = _ncf_eval(oracle, users, schema, popularity, seed)
        _write(spark, rows.select(user, item, label, ORACLE_SCORE, POPULARITY), layout.ncf_eval)
        _progress(f"{NCF_EVAL} written", started)
        bags = _vae_splits(users, schema, max_items_per_user, heldout_share, max_heldout_users, seed)
        bags = bags.withColumn(POPULARITY_RANKING, _popularity_ranking(bags, max_items_per_user))
        bags = _with_oracle_rankings(oracle, users, bags, schema)
        columns = [user, ITEMS, HELDOUT, SPLIT, ORACLE_RANKING, POPULARITY_RANKING]
        _write(spark, bags.select(*columns, F.lit(1).alias(label)), layout.vae, (SPLIT,))
        _progress(f"{VAE} written", started)
        counts = _row_counts(spark, layout, label)
        totals = users.count(), users.select(F.explode(ITEMS)).distinct().count()
        if heldout_share > 0 and max_heldout_users >= FEW_HELDOUT_USERS:  # not asked for few
            _warn_of_few_heldout_users(counts, totals[0], heldout_share)
    finally:
        users.unpersist()
        if oracle is not None:
            oracle.release()
    description = InteractionsDescription(
        features_table=features,
        features_version=version,
        seed=seed,
        negatives=negatives,
        popularity_exponent=popularity_exponent,
        max_items_per_user=max_items_per_user,
        users=totals[0],
        items=totals[1],
        rows=counts,
        planted=oracle is not None,
        heldout_share=heldout_share,
        max_heldout_users=max_heldout_users,
        negatives_dropped=counts[f"{NCF_TRAIN}_positives"] * negatives - counts[f"{NCF_TRAIN}_negatives"],
        table_versions={
            name: storage.delta_version(spark, f"{layout.root}/{name}", f"{name} table")
            for name in (NCF_TRAIN, NCF_EVAL, VAE)
        },
    )
    storage.write_text(spark, layout.description, description.to_json())
    _progress(f"{layout.description} written", started)
    return description


def _row_counts(spark: SparkSession, layout: InteractionsLayout, label: str) -> dict[str, int]:
    """Rows per table, per label of ncf_train and per VAE split, read back from what was written."""
    read = spark.read.format("delta").load
    by_label = dict(read(layout.ncf_train).groupBy(label).count().collect())
    by_split = dict(read(layout.vae).groupBy(SPLIT).count().collect())
    return {
        NCF_TRAIN: sum(by_label.values()),
        f"{NCF_TRAIN}_positives": by_label.get(1, 0),
        f"{NCF_TRAIN}_negatives": by_label.get(0, 0),
        NCF_EVAL: read(layout.ncf_eval).count(),
        VAE: sum(by_split.values()),
        **{f"{VAE}_{split}": by_split.get(split, 0) for split in VAE_SPLITS},
    }


def _warn_of_few_heldout_users(counts: dict[str, int], users: int, share: float) -> None:
    valid, test = (counts[f"{VAE}_{split}"] for split in VAE_SPLITS[1:])
    if min(valid, test) < FEW_HELDOUT_USERS:
        print(
            f"interactions: warning: Mult-VAE's epoch choice and metrics rest on {valid:,} validation "
            f"and {test:,} test users (--heldout-share {share:g} of the users with at least "
            f"{MIN_HELDOUT_ITEMS} items, of {users:,} users): figures of so few users move between draws",
            file=sys.stderr,
            flush=True,
        )


def _progress(step: str, started: float) -> None:
    print(f"interactions: {step} ({time.perf_counter() - started:.1f} s)", flush=True)


def main(argv: list[str] | None = None) -> dict:
    parser = CommandParser(prog="sparkrec interactions", description=__doc__.splitlines()[0])
    parser.add_argument("--features", required=True, help="Delta features table path")
    parser.add_argument("--features-version", type=int, help="Delta version to read (default: latest)")
    parser.add_argument("--workflow", required=True, help="the fitted workflow's folder")
    parser.add_argument("--out", required=True, help="folder of the interaction tables")
    parser.add_argument("--negatives", type=int, default=4, help="sampled negatives per training positive")
    parser.add_argument(
        "--popularity-exponent",
        type=float,
        default=0.0,
        help="negatives drawn ~ popularity^this (default 0: uniform, as He et al. 2017)",
    )
    parser.add_argument("--max-items-per-user", type=int, default=200, help="a user's latest items kept")
    parser.add_argument(
        "--heldout-share", type=float, default=0.1, help="share of users to each of valid and test"
    )
    parser.add_argument("--max-heldout-users", type=int, default=10_000, help="cap of valid and of test")
    parser.add_argument("--seed", type=int, default=0, help="seed of every draw")
    parser.add_argument("--planted", help="the generator's data folder (planted_model.json): oracle columns")
    parser.add_argument("--profile", default="local", help="Spark profile from conf/spark/")
    args = parser.parse_args(argv)
    spark = build_session(args.profile, "sparkrec-interactions")
    description = build_interactions(
        spark,
        args.features,
        args.workflow,
        args.out,
        negatives=args.negatives,
        popularity_exponent=args.popularity_exponent,
        max_items_per_user=args.max_items_per_user,
        heldout_share=args.heldout_share,
        max_heldout_users=args.max_heldout_users,
        seed=args.seed,
        planted=args.planted,
        features_version=args.features_version,
    )
    report = json.loads(description.to_json())
    print(json.dumps({"interactions": report}, indent=2))
    return report


if __name__ == "__main__":
    run_command(main, "sparkrec interactions")
