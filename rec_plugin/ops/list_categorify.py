"""ListCategorify: multi-hot columns (arrays of values) -> arrays of ids, at most max_length long.

The vocabulary counts every element (as Categorify does for single values, same ids and 0 rules);
each array keeps its order and its first max_length elements that are not null or empty (ingest drops
those, and serving too), unpadded (the loader pads). With
`vocabulary_of="item_id"` the elements take item_id's ids instead (see Categorify): a list of recent
items and item_id then share one vocabulary and one embedding table."""

from __future__ import annotations

from dataclasses import replace
from functools import reduce
from typing import Any

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from rec_plugin.ops.base import require_at_least
from rec_plugin.ops.categorify import VOCABULARY_COLUMN, Categorify, lookup_join
from rec_plugin.schema import ROW_KEYS, ColumnSchema, Tags


class ListCategorify(Categorify):
    def __init__(
        self,
        max_length: int,
        freq_threshold: int = 1,
        max_size: int | None = None,
        vocabulary_of: str | None = None,
    ) -> None:
        require_at_least(self, 1, max_length=max_length)
        super().__init__(freq_threshold=freq_threshold, max_size=max_size, vocabulary_of=vocabulary_of)
        self.params["max_length"] = max_length

    def output_schema(self, inputs: list[ColumnSchema], state: dict[str, Any]) -> list[ColumnSchema]:
        """Arrays of int32 ids (the vocabulary's), at most max_length long."""
        singles = super().output_schema(inputs, state)
        return [
            replace(c, dtype="list<int32>", max_length=self.params["max_length"]).with_tags([Tags.LIST])
            for c in singles
        ]

    def value_counts(self, frame: DataFrame, columns: list[str]) -> DataFrame:
        elements = [
            frame.select(
                F.lit(c).alias(VOCABULARY_COLUMN), F.explode(F.col(c).cast("array<string>")).alias("value")
            )
            for c in columns
        ]
        exploded = reduce(DataFrame.unionAll, elements)
        return exploded.where("value IS NOT NULL").groupBy(VOCABULARY_COLUMN, "value").count()

    def transform(
        self, frame: DataFrame, columns: list[str], state: dict[str, Any], ids: dict[str, int] | None = None
    ) -> DataFrame:
        """Per column: explode with positions, look ids up (lookup_join), regroup in order, and join the
        lists back to their rows by bronze's row keys. Only a frame without them numbers its rows
        (monotonically_increasing_id): a number computed on each side of that join is the same row's
        only while nothing upstream shuffles, which Categorify's shuffled joins of large vocabularies
        do."""
        order = frame.columns
        keys = list(ROW_KEYS) if set(ROW_KEYS) <= set(order) else ["_row"]
        if keys == ["_row"]:
            frame = frame.withColumn("_row", F.monotonically_increasing_id())
        sizes = ids or self.cardinalities(state, columns)
        for c in columns:
            # A null or empty element is none (ingest drops them so): the first max_length of the rest.
            elements_of = F.filter(F.col(c), lambda e: e.isNotNull() & (e.cast("string") != ""))
            kept = F.slice(elements_of, 1, self.params["max_length"])
            elements = frame.select(*keys, F.posexplode(kept).alias("_pos", "_value"))
            vocabulary = state[c].select(F.col("value").alias("_value"), F.col("id").alias("_id"))
            looked_up = lookup_join(elements, vocabulary, "_value", self.vocabulary_values(sizes[c]))
            pairs = F.sort_array(F.collect_list(F.struct("_pos", F.coalesce("_id", F.lit(0)).alias("_id"))))
            regrouped = looked_up.groupBy(*keys).agg(pairs.alias("_pairs"))
            frame = frame.join(regrouped, keys, "left").withColumn(
                c,
                F.when(F.col(c).isNull(), F.lit(None)).otherwise(
                    F.coalesce(F.transform("_pairs", lambda p: p["_id"]), F.array().cast("array<int>"))
                ),
            )
            frame = frame.drop("_pairs")
        return frame.select(*order)
