"""Categorify: values -> dense integer ids by descending frequency, from vocabularies fitted on data.

Ids start at 1 in order of descending count, ties broken by the value itself, so a refit on the same
data gives the same ids; 0 is reserved for missing, rare (below freq_threshold) and unseen values.
Each column's vocabulary is a table (value, id, count), saved as its own Delta table."""

from __future__ import annotations

from typing import Any

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from rec_plugin.ops.base import Op
from rec_plugin.templates import expression


class Categorify(Op):
    def __init__(self, freq_threshold: int = 1, max_size: int | None = None) -> None:
        super().__init__(freq_threshold=freq_threshold, max_size=max_size)

    def fit_query(self, frame: DataFrame, columns: list[str]) -> DataFrame:
        """One pass for all columns: (column, value) pairs counted in a single aggregation."""
        pairs = frame.select(
            F.explode(
                F.array(
                    *[
                        F.struct(F.lit(c).alias("column"), F.col(c).cast("string").alias("value"))
                        for c in columns
                    ]
                )
            ).alias("pair")
        ).select("pair.column", "pair.value")
        counts = pairs.where("value IS NOT NULL").groupBy("column", "value").count()
        counts = counts.where(F.col("count") >= self.params["freq_threshold"])
        order = Window.partitionBy("column").orderBy(F.desc("count"), F.asc("value"))
        vocab = counts.withColumn("id", F.row_number().over(order).cast("int"))
        if self.params["max_size"] is not None:
            vocab = vocab.where(F.col("id") <= self.params["max_size"])
        return vocab

    def state_from(self, query: DataFrame, columns: list[str]) -> dict[str, Any]:
        vocab = query.persist()
        return {c: vocab.where(F.col("column") == c).select("value", "id", "count") for c in columns}

    def transform(self, frame: DataFrame, columns: list[str], state: dict[str, Any]) -> DataFrame:
        for c in columns:
            ids = state[c].select(F.col("value").alias(f"{c}__value"), F.col("id").alias(f"{c}__id"))
            joined = frame.join(F.broadcast(ids), frame[c].cast("string") == ids[f"{c}__value"], "left")
            frame = joined.withColumn(c, expression("category_id", {"id": f"{c}__id"}, {})).drop(
                f"{c}__value", f"{c}__id"
            )
        return frame

    def save_state(self, spark: SparkSession, state: dict[str, Any], path: str) -> dict[str, Any]:
        saved = {}
        for c, vocab in state.items():
            vocab.write.format("delta").mode("overwrite").save(f"{path}/vocab/{c}")
            saved[c] = {"table": f"vocab/{c}"}
        return saved

    def load_state(self, spark: SparkSession, saved: dict[str, Any], path: str) -> dict[str, Any]:
        return {c: spark.read.format("delta").load(f"{path}/{entry['table']}") for c, entry in saved.items()}

    @staticmethod
    def cardinality(state: dict[str, Any], column: str) -> int:
        """Embedding rows a model needs for the column: the largest id plus the reserved 0."""
        return int(state[column].agg(F.max("id")).first()[0] or 0) + 1
