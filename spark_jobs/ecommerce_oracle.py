"""The planted oracle of sparkrec interactions (--planted: the generator's data folder, holding
planted_model.json): the Bayes-optimal ranking of what a user clicks. A positive is an item the user was
shown and clicked, and the generator draws the shown item independently of the user, so in a context
(user u, day d, hour, device)

    P(u clicks i) = P(an impression on day d shows i) * sigmoid(planted logit(u, i, context))
    oracle score  = log P(shown i on day d) + log sigmoid(logit)

P(shown i on day d), from the generator's own draws (item_exposure, counted exactly over their hash
bits): P(category = i mod categories) * P(rank = i div categories | d), the category a Zipf rank over
the categories; the rank, on day 0, a Zipf rank over the items_per_category day-0 items, and on a later
day, with probability new_entity_rate (as drawn), an item born after day 0 (born on a uniform day of
1..d, at a uniform place in that day's cohort of new_items_per_category_per_day) and otherwise the
day-0 Zipf rank; 0 (log: -inf) for an item born after day d. Popularity thus enters the oracle as the
generator makes it, beside the user's taste: the planted logit alone ranks what a user would like if
shown everything, which is not what they click.
ORACLE_SCORE scores the candidate in the held-out positive's own impression (its user, day, hour and
device, hence the user's recent list on that day), exact: featurized ids are mapped back to raw tokens
through the workflow's vocabularies, then to the generator's indices, and scored by the generator's own
SQL. ORACLE_RANKING ranks the item vocabulary in the context of the user's latest positive (its day,
hour and device).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from rec_plugin import storage
from rec_plugin.errors import InputError
from rec_plugin.interactions import (
    ITEMS,
    ORACLE_RANKING,
    ORACLE_SCORE,
    RANKING_DEPTH,
    item_column,
    user_column,
)
from rec_plugin.ops.categorify import read_vocabularies
from rec_plugin.schema import DAY, Schema
from spark_jobs.generate_ecommerce import (
    DEVICES,
    EcommerceModel,
    field_indices,
    item_columns,
    item_exposure,
    planted_logits,
    user_day_columns,
)
from spark_jobs.layout import GeneratedData

# The oracle's input columns: per user, the latest positive (LAST: a struct of its day and context
# ids) and the candidates to score (CANDIDATES); its outputs key users and items by featurized id.
LAST = "last"
CANDIDATES = "candidates"
KEY_USER, KEY_ITEM = "key_user", "key_item"
KNOWN = "context_known"  # whether the user's context is one the generator wrote
_LOG_EXPOSURE = "log_exposure"
# Scores the ranking holds in memory at once per Python worker (users x items).
_RANKING_CELLS = 1 << 22


def _positions(keys: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """The positions in sorted `keys` of those `wanted` values that it holds."""
    at = np.minimum(np.searchsorted(keys, wanted), len(keys) - 1)
    return at[keys[at] == wanted]


class EcommerceOracle:
    """The planted model of generate-ecommerce over the features' ids: each context field's vocabulary
    mapped to the generator's indices (vocabulary id -> token -> index), and every item of the item
    vocabulary with its draws."""

    def __init__(self, spark: SparkSession, planted: str, workflow: str, schema: Schema) -> None:
        path = GeneratedData(planted).planted_model
        if not storage.exists(spark, path):
            raise InputError(
                f"--planted {planted} holds no planted model ({path}): give the generator's data folder"
            )
        try:
            self.model = EcommerceModel.from_json(storage.read_text(spark, path))
        except (TypeError, ValueError):
            raise InputError(f"{path} is not generate-ecommerce's planted model") from None
        self.fields = field_indices(self.model)
        self.user, self.item = user_column(schema).name, item_column(schema).name
        if (self.user, self.item) != tuple(list(self.fields)[:2]):
            raise InputError(
                f"the planted model reads user and item fields {list(self.fields)[:2]}, "
                f"the schema tags {[self.user, self.item]}"
            )
        columns = {}
        for name in self.fields:
            if name not in schema or schema[name].vocabulary is None:
                raise InputError(
                    f"the planted model needs the categorified column {name!r}, not in the features schema"
                )
            columns[name] = schema[name].vocabulary
        vocabularies = read_vocabularies(spark, workflow, columns)
        self.indices = {
            name: vocabularies[name]
            .selectExpr(f"CAST(id AS BIGINT) AS key_{name}", f"value AS `{name}`")
            .selectExpr(f"key_{name}", *[f"{sql} AS {index}" for index, sql in sql_of.items()])
            for name, sql_of in self.fields.items()
        }
        items = (
            self.indices[self.item].withColumnRenamed(f"key_{self.item}", KEY_ITEM).where("item IS NOT NULL")
        )
        self.items = item_columns(items, self.model).persist(StorageLevel.MEMORY_AND_DISK)

    @property
    def context(self) -> list[str]:
        """The fields of the latest positive's `last` struct the oracle reads beside user and item."""
        return [name for name in self.fields if name not in (self.user, self.item)]

    def release(self) -> None:
        self.items.unpersist()

    def user_days(self, users: DataFrame, keep: tuple[str, ...] = ()) -> DataFrame:
        """Per user (column user_column, beside `keep`): KEY_USER and user_day_columns in the context of
        their latest positive (`last`: its day, hour and device as generator indices); KNOWN says
        whether that context is one the generator wrote."""
        frame = users.select(
            F.col(self.user).alias(KEY_USER),
            F.col(f"{LAST}.{DAY}").alias(DAY),
            *[F.col(f"{LAST}.{c}").alias(f"id_{c}") for c in self.context],
            *keep,
        )
        frame = frame.join(self.indices[self.user], F.col(KEY_USER) == F.col(f"key_{self.user}"), "left")
        for name in self.context:
            index = F.broadcast(self.indices[name])
            frame = frame.join(index, F.col(f"id_{name}") == F.col(f"key_{name}"), "left")
        indices = ["user", *[i for name in self.context for i in self.fields[name]]]
        known = F.lit(True)
        for index in indices:
            known = known & F.col(index).isNotNull()
        frame = frame.select(KEY_USER, DAY, *indices, *keep, known.alias(KNOWN))
        return user_day_columns(frame, self.model)

    def log_exposure(self, day: int, indices: np.ndarray) -> np.ndarray:
        """log P(an impression on `day` shows the item), per generator item index: -inf for an item
        not yet born that day (one that no impression of the day can show)."""
        pmf = item_exposure(self.model, day)
        shown = np.zeros(len(indices))
        inside = indices < len(pmf)
        shown[inside] = pmf[indices[inside]]
        with np.errstate(divide="ignore"):
            return np.log(shown)

    def _item_indices(self) -> tuple[np.ndarray, np.ndarray]:
        """The item vocabulary's keys, sorted, and their generator indices."""
        items = self.items.select(KEY_ITEM, "item").orderBy(KEY_ITEM).toPandas()
        return items[KEY_ITEM].to_numpy(), items["item"].to_numpy()

    def _exposures(self, days: list[int]) -> DataFrame:
        """(DAY, KEY_ITEM, LOG_EXPOSURE) of every item of the vocabulary on each of `days`."""
        keys, indices = self._item_indices()
        table = pd.concat(
            pd.DataFrame({DAY: day, KEY_ITEM: keys, _LOG_EXPOSURE: self.log_exposure(day, indices)})
            for day in days
        )
        schema = f"{DAY} int, {KEY_ITEM} bigint, {_LOG_EXPOSURE} double"
        return self.items.sparkSession.createDataFrame(table, schema)

    def candidate_scores(self, per_user: DataFrame) -> DataFrame:
        """ncf_eval's rows (user, item, label) with ORACLE_SCORE from per-user CANDIDATES: joined to
        the user's context once, then to each candidate's item draws and its exposure on the user's
        day (small tables, broadcast)."""
        days = [r[0] for r in per_user.select(F.col(f"{LAST}.{DAY}")).distinct().collect()]
        user_days = self.user_days(per_user, (CANDIDATES,))
        exploded = user_days.withColumn("c", F.explode(CANDIDATES)).drop(CANDIDATES)
        pairs = exploded.withColumn(KEY_ITEM, F.col(f"c.{self.item}"))
        joined = pairs.join(F.broadcast(self.items), KEY_ITEM, "left")
        joined = joined.join(F.broadcast(self._exposures(days)), [DAY, KEY_ITEM], "left")
        scored = planted_logits(joined, self.model)
        clicked = F.col(_LOG_EXPOSURE) - F.log1p(F.exp(-F.col("logit")))
        score = F.when(F.col(KNOWN) & F.col("item").isNotNull(), clicked)
        return scored.select(F.col(KEY_USER).alias(self.user), "c.*", score.alias(ORACLE_SCORE))

    def scores(self, user_days: DataFrame, pairs: DataFrame) -> DataFrame:
        """(KEY_USER, KEY_ITEM, logit) of each pair whose user has a known context and item an index."""
        joined = pairs.join(user_days.where(KNOWN), KEY_USER).join(self.items, KEY_ITEM)
        return planted_logits(joined, self.model).select(KEY_USER, KEY_ITEM, "logit")

    def rankings(self, user_days: DataFrame, fold_in: DataFrame) -> DataFrame:
        """(KEY_USER, ORACLE_RANKING): per user of `user_days` the RANKING_DEPTH items of the vocabulary
        with the highest log P(shown on the user's day) + log sigmoid(planted logit in their context),
        fold-in items (fold_in: KEY_USER, ITEMS) left out. Exact and cheap: the logit is the first-order
        part of (item, device), the hour's term (the same for every item), and two second-order terms:
        <user_v, item_v> (a product in numpy) and the history term, which depends on the item only
        through its category unless the item is in the recent list (the generator's SQL scores every
        (user, category) and (user, recent item))."""
        scale, mean = self.model.term_scales, self.model.term_means
        contexts = user_days.select(DAY, "hour").distinct().collect()
        days, hours = [r[DAY] for r in contexts], [r["hour"] for r in contexts]
        first_order = self._first_order_by_device()
        by_hour = self._hour_terms(hours)
        dim = self.model.latent_dim
        items = (
            self.items.select(KEY_ITEM, "item", "category", *[f"item_v{d}" for d in range(dim)])
            .orderBy(KEY_ITEM)
            .toPandas()
        )
        keys = items[KEY_ITEM].to_numpy()
        exposure = np.stack(
            [self.log_exposure(day, items["item"].to_numpy()) for day in range(max(days, default=0) + 1)]
        )
        factors = items[[f"item_v{d}" for d in range(dim)]].to_numpy(dtype=np.float64)
        categories = items["category"].to_numpy()
        fixed = first_order.reindex(keys).to_numpy().T  # devices x items
        history = self._history_terms(user_days)
        users = user_days.select(
            KEY_USER, DAY, "hour", "device", F.array(*[f"user_v{d}" for d in range(dim)]).alias("factor")
        )
        users = users.join(history, KEY_USER).join(fold_in, KEY_USER)
        s_ui, m_ui, s_h, m_h = scale["user_item"], mean["user_item"], scale["history"], mean["history"]
        depth = min(RANKING_DEPTH, len(keys))

        def rank(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
            for batch in batches:
                for start in range(0, len(batch), max(1, _RANKING_CELLS // len(keys))):
                    chunk = batch.iloc[start : start + max(1, _RANKING_CELLS // len(keys))]
                    logit = fixed[chunk["device"].to_numpy()] + s_ui * (
                        np.stack(chunk["factor"].to_numpy()) @ factors.T - m_ui
                    )
                    logit += by_hour[chunk["hour"].to_numpy()][:, None]
                    by_category = np.stack(chunk["by_category"].to_numpy())
                    logit += s_h * (by_category[:, categories] - m_h)
                    for row, (recent, exact) in enumerate(zip(chunk["recent_keys"], chunk["recent_terms"])):
                        at = np.searchsorted(keys, recent)
                        logit[row, at] += s_h * (np.asarray(exact) - by_category[row, categories[at]])
                    score = exposure[chunk[DAY].to_numpy()] - np.logaddexp(0.0, -logit)
                    for row, fold in enumerate(chunk[ITEMS]):
                        score[row, _positions(keys, fold)] = -np.inf
                    top = np.argpartition(-score, depth - 1, axis=1)[:, :depth]
                    order = np.argsort(-np.take_along_axis(score, top, 1), axis=1, kind="stable")
                    ranked = keys[np.take_along_axis(top, order, 1)]
                    yield pd.DataFrame({KEY_USER: chunk[KEY_USER].to_numpy(), ORACLE_RANKING: list(ranked)})

        return users.mapInPandas(rank, f"{KEY_USER} bigint, {ORACLE_RANKING} array<bigint>")

    def _first_order(self, items: DataFrame, contexts: list[tuple[int, int]]) -> pd.DataFrame:
        """(KEY_ITEM, device, hour, first_order_logit) of `items` in each (device, hour) context: the
        first-order part reads neither the user nor the day, so any stands in."""
        spark = self.items.sparkSession
        anyone = user_day_columns(spark.range(1).selectExpr("0L AS user", "0 AS day"), self.model)
        at = spark.createDataFrame(contexts, "device int, hour int")
        frame = planted_logits(items.crossJoin(anyone).crossJoin(at), self.model)
        return frame.select(KEY_ITEM, "device", "hour", "first_order_logit").toPandas()

    def _first_order_by_device(self) -> pd.DataFrame:
        """Per item key, per device: the first-order logit at hour 0."""
        table = self._first_order(self.items, [(device, 0) for device in range(len(DEVICES))])
        return table.pivot(index=KEY_ITEM, columns="device", values="first_order_logit")

    def _hour_terms(self, hours: list[int]) -> np.ndarray:
        """Indexed by hour (0 .. the latest of `hours`): what the hour adds to the logit against hour 0,
        the same for every item and device (the hour's own term)."""
        table = self._first_order(self.items.limit(1), [(0, hour) for hour in {0, *hours}])
        logits = dict(zip(table["hour"], table["first_order_logit"]))
        terms = np.zeros(max(hours, default=0) + 1)
        for hour in hours:
            terms[hour] = logits[hour] - logits[0]
        return terms

    def _history_terms(self, user_days: DataFrame) -> DataFrame:
        """(KEY_USER, by_category, recent_keys, recent_terms): the history term for an item of each
        category outside the user's list (a stand-in item -1 of that category), and for each recent item
        of the vocabulary."""
        spark = user_days.sparkSession
        categories = spark.range(self.model.categories).selectExpr(
            "-1L AS item", "CAST(id AS INT) AS category"
        )
        stand_ins = item_columns(categories, self.model)
        recents = F.array(*[f"recent_{j}" for j in range(self.model.history_length)])
        lists = user_days.select(
            KEY_USER, F.explode(F.array_distinct(F.filter(recents, F.isnotnull))).alias("item")
        )
        recent_pairs = user_days.join(lists.join(self.items, "item"), KEY_USER)
        pairs = user_days.crossJoin(stand_ins).unionByName(recent_pairs, allowMissingColumns=True)
        terms = planted_logits(pairs, self.model).select(KEY_USER, KEY_ITEM, "category", "t_history")
        by_category = (
            terms.where(F.col(KEY_ITEM).isNull())
            .groupBy(KEY_USER)
            .agg(F.sort_array(F.collect_list(F.struct("category", "t_history"))).alias("c"))
        )
        by_category = by_category.select(
            KEY_USER, F.transform("c", lambda x: x["t_history"]).alias("by_category")
        )
        recent = (
            terms.where(F.col(KEY_ITEM).isNotNull())
            .groupBy(KEY_USER)
            .agg(
                F.collect_list(KEY_ITEM).alias("recent_keys"),
                F.collect_list("t_history").alias("recent_terms"),
            )
        )
        return by_category.join(recent, KEY_USER, "left").select(
            KEY_USER,
            "by_category",
            F.coalesce("recent_keys", F.array().cast("array<bigint>")).alias("recent_keys"),
            F.coalesce("recent_terms", F.array().cast("array<double>")).alias("recent_terms"),
        )
