"""What the e-commerce data's clicks and features tell beyond popularity, against the planted oracle:
rankings from simple signals, on the users and candidates that NCF and Mult-VAE are measured on (their
bar: 0.9x the oracle's NDCG and 1.2x popularity's). The recent-items lists are features the two
ID-only models do not read, merged over all of the user's impressions: more context than the oracle's
one impression, though no label.

Each user's score of an item is

    log(1 + popularity) + lam * log(the user's share of the item's category / its share overall)
                        + gamma * [the item is in one of the user's recent-items lists]

the user's category shares taken from the items they clicked (Mult-VAE: the fold-in bag; NCF: their
ncf_train positives), smoothed toward the overall shares by SMOOTHING clicks. lam and gamma are chosen
on Mult-VAE's valid users (NDCG@100) and then scored on its test users (NDCG@100) and on NCF's
leave-last-out candidates (NDCG@10), beside the models' figures in the pipeline's report. Prints each
ranking's NDCG and its share of the oracle's, and writes artifacts/bench/cf_headroom.json and .png.
Reads a pipeline folder that `sparkrec demo --dataset ecommerce` wrote (its features, workflow,
interaction tables with the planted oracle, and report).

    .venv/bin/python bench/cf_headroom.py [--pipeline artifacts/demo-ecommerce] [--category category]
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from rec_plugin.interactions import (
    HELDOUT,
    ITEMS,
    ORACLE_RANKING,
    ORACLE_SCORE,
    POPULARITY,
    SPLIT,
    TRAIN_SPLIT,
    InteractionsLayout,
    item_column,
    user_column,
)
from rec_plugin.schema import Schema
from rec_plugin.workflow import Workflow
from spark_jobs.layout import PipelineLayout
from spark_jobs.session import build_session
from spark_jobs.train_cf import NCF_CUTOFF, load_description
from training import plots
from training.models.cf import MULTVAE, NCF
from training.ranking import VAE_NDCG_CUTOFF, ndcg_at_k, ndcg_at_k_sets, top_k

SMOOTHING = 5.0  # clicks' worth of the overall category shares in each user's shares
LAMBDAS = (0.0, 0.25, 0.5, 1.0)
GAMMAS = (0.0, 0.5, 1.0, 2.0)
OUT = Path("artifacts/bench")


class Signals:
    """Per item id: log(1 + popularity) and category; per user id: their recent-items lists' items."""

    def __init__(self, popularity: np.ndarray, category: np.ndarray, recent: dict[int, np.ndarray]) -> None:
        self.log_popularity, self.category, self.recent = np.log1p(popularity), category, recent
        clicks = np.bincount(category, weights=popularity) + 1.0  # each category's clicks (one added)
        self.overall = clicks / clicks.sum()

    def scores(self, user: int, clicked: np.ndarray, lam: float, gamma: float) -> np.ndarray:
        """Every item's score for `user` who clicked `clicked` (see the module's docstring)."""
        score = self.log_popularity.copy()
        if lam:
            mine = np.bincount(self.category[clicked], minlength=len(self.overall))
            share = (mine + SMOOTHING * self.overall) / (len(clicked) + SMOOTHING)
            score += lam * np.log(share / self.overall)[self.category]
        if gamma:
            score[self.recent.get(user, np.zeros(0, dtype=np.int64))] += gamma
        return score


def _recent_items(features: DataFrame, schema: Schema, users: DataFrame) -> dict[int, np.ndarray]:
    """Each of `users`' items over all their recent-items lists (the list columns that take the item
    column's vocabulary)."""
    user, item = user_column(schema).name, item_column(schema).name
    lists = [
        c.name
        for c in schema
        if c.is_list and c.vocabulary is not None and c.vocabulary.column == schema[item].vocabulary.column
    ]
    if not lists:
        return {}
    values = F.flatten(F.array(*[F.coalesce(F.col(c), F.array().cast("array<int>")) for c in lists]))
    rows = (
        features.join(users, user)
        .select(user, F.explode(values).alias(item))
        .where(F.col(item) > 0)
        .groupBy(user)
        .agg(F.collect_set(item).alias(item))
        .toPandas()
    )
    return {int(u): np.asarray(v, dtype=np.int64) for u, v in zip(rows[user], rows[item])}


def _vae_ndcg(signals: Signals, frame: pd.DataFrame, user: str, lam: float, gamma: float) -> float:
    ranked = []
    for who, bag in zip(frame[user], frame[ITEMS]):
        bag = np.asarray(bag, dtype=np.int64)
        score = signals.scores(int(who), bag, lam, gamma)
        score[bag] = -np.inf
        score[0] = -np.inf
        ranked.append(top_k(score[None, :], VAE_NDCG_CUTOFF)[0])
    heldout = [np.asarray(items, dtype=np.int64) for items in frame[HELDOUT]]
    return ndcg_at_k_sets(ranked, heldout, VAE_NDCG_CUTOFF)


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pipeline", default="artifacts/demo-ecommerce", help="sparkrec demo's --out")
    parser.add_argument("--category", default="category", help="the features' item category column")
    args = parser.parse_args()
    paths = PipelineLayout(Path(args.pipeline).resolve())
    spark = build_session("local", "bench-cf-headroom", {"spark.ui.showConsoleProgress": "false"})
    schema = Workflow.load_schema(paths.workflow, spark)
    user, item, label = user_column(schema).name, item_column(schema).name, schema.label.name
    layout = InteractionsLayout(paths.interactions)
    description = load_description(spark, layout)
    if not description.planted:
        raise SystemExit(f"{layout.root} was built without --planted: there is no oracle to compare with")
    # The features version the interaction tables were built from.
    features = (
        spark.read.format("delta").option("versionAsOf", description.features_version).load(paths.features)
    )
    vae = spark.read.format("delta").load(layout.vae)
    ncf_eval = spark.read.format("delta").load(layout.ncf_eval)
    ncf_train = spark.read.format("delta").load(layout.ncf_train)

    rows = int(features.agg(F.max(item)).first()[0]) + 1
    categories = features.groupBy(item).agg(F.max(args.category).alias("c")).toPandas()
    category = np.zeros(rows, dtype=np.int64)
    category[categories[item].to_numpy()] = categories["c"].to_numpy()
    bags = vae.where(F.col(SPLIT) == TRAIN_SPLIT).select(F.explode(ITEMS).alias(item))
    counts = bags.groupBy(item).count().toPandas()
    popularity = np.zeros(rows)
    popularity[counts[item].to_numpy()] = counts["count"].to_numpy()
    evaluated = vae.where(F.col(SPLIT) != TRAIN_SPLIT).select(user).union(ncf_eval.select(user).distinct())
    signals = Signals(popularity, category, _recent_items(features, schema, evaluated.distinct()))

    held = {
        s: vae.where(F.col(SPLIT) == s).select(user, ITEMS, HELDOUT, ORACLE_RANKING).toPandas()
        for s in ("valid", "test")
    }
    grid = {
        (lam, gamma): _vae_ndcg(signals, held["valid"], user, lam, gamma)
        for lam, gamma in itertools.product(LAMBDAS, GAMMAS)
    }
    chosen = {
        "popularity": (0.0, 0.0),
        "+ category shares": max(((lam, 0.0) for lam in LAMBDAS), key=grid.get),
        "+ recent lists": max(((0.0, gamma) for gamma in GAMMAS), key=grid.get),
        "+ both": max(grid, key=grid.get),
    }
    test = held["test"]
    heldout = [np.asarray(items, dtype=np.int64) for items in test[HELDOUT]]
    oracle_rankings = [np.asarray(r, dtype=np.int64) for r in test[ORACLE_RANKING]]
    multvae = {name: _vae_ndcg(signals, test, user, *weights) for name, weights in chosen.items()}
    trained = json.loads(paths.report.read_text()) if paths.report.exists() else {}
    if MULTVAE in trained:
        multvae["Mult-VAE (demo)"] = trained[MULTVAE][f"ndcg_at_{VAE_NDCG_CUTOFF}"]
    multvae["oracle"] = ndcg_at_k_sets(oracle_rankings, heldout, VAE_NDCG_CUTOFF)

    # NCF: the candidates of each evaluated user (latest positive first), their ncf_train positives.
    candidates = (
        ncf_eval.select(user, item, label, ORACLE_SCORE, POPULARITY)
        .orderBy(user, F.col(label).desc(), item)
        .toPandas()
    )
    positives = (
        ncf_train.where(F.col(label) == 1).groupBy(user).agg(F.collect_list(item).alias(ITEMS)).toPandas()
    )
    clicked = {int(u): np.asarray(v, dtype=np.int64) for u, v in zip(positives[user], positives[ITEMS])}
    users = candidates[user].nunique()
    labels = candidates[label].to_numpy().reshape(users, -1)
    items = candidates[item].to_numpy().reshape(users, -1)
    ncf_popularity = np.zeros(rows)  # an item's positives in ncf_train, on each of its rows
    ncf_popularity[candidates[item].to_numpy()] = candidates[POPULARITY].to_numpy()
    ncf_signals = Signals(ncf_popularity, category, signals.recent)
    ncf = {}
    for name, (lam, gamma) in chosen.items():
        scores = np.stack(
            [
                ncf_signals.scores(int(who), clicked.get(int(who), np.zeros(0, dtype=np.int64)), lam, gamma)[
                    row
                ]
                for who, row in zip(candidates[user].to_numpy()[:: items.shape[1]], items)
            ]
        )
        ncf[name] = ndcg_at_k(scores, labels, NCF_CUTOFF)
    if NCF in trained:
        ncf["NCF (demo)"] = trained[NCF][f"ndcg_at_{NCF_CUTOFF}"]
    ncf["oracle"] = ndcg_at_k(
        candidates[ORACLE_SCORE].to_numpy(np.float64).reshape(users, -1), labels, NCF_CUTOFF
    )

    report = {
        "weights": {name: {"lam": lam, "gamma": gamma} for name, (lam, gamma) in chosen.items()},
        f"multvae_ndcg_at_{VAE_NDCG_CUTOFF}": {k: round(v, 5) for k, v in multvae.items()},
        f"ncf_ndcg_at_{NCF_CUTOFF}": {k: round(v, 5) for k, v in ncf.items()},
    }
    shares = {
        f"Mult-VAE test users (NDCG@{VAE_NDCG_CUTOFF})": {
            k: v / multvae["oracle"] for k, v in multvae.items()
        },
        f"NCF candidates (NDCG@{NCF_CUTOFF})": {k: v / ncf["oracle"] for k, v in ncf.items()},
    }
    for group, values in shares.items():
        print(group)
        for name, share in values.items():
            metric = (multvae if group.startswith("Mult") else ncf)[name]
            print(f"  {name:<18} {metric:.5f}  {share:.3f}x the oracle")
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "cf_headroom.json").write_text(json.dumps(report, indent=2) + "\n")
    (OUT / "cf_headroom.png").write_bytes(
        plots.grouped_bars(
            shares, "share of the oracle's NDCG", "What the clicks carry beyond popularity", (0.0, 1.05)
        )
    )
    print(f"wrote {OUT / 'cf_headroom.json'} and .png")
    return report


if __name__ == "__main__":
    main()
