"""TargetEncoding: a categorical value -> the smoothed mean of the target over rows with that value.

    encoding = (sum + smoothing * prior) / (count + smoothing),   prior = the target's global mean

Statistics are kept per fold (fold = a hash of the row's `fold_key` columns, modulo `folds`). A row
that carries its fold key is encoded from the other folds only, so no row's own label leaks into its
feature (k-fold); rows without the key (serving) use all folds. Writes a new float column TE_<column>;
unseen values get the prior. One Delta table of (value, fold, sum, count) per column."""

from __future__ import annotations

from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from rec_plugin import storage
from rec_plugin.ops.base import Op


class TargetEncoding(Op):
    def __init__(
        self,
        target: str = "label",
        folds: int = 5,
        smoothing: float = 20.0,
        fold_key: tuple[str, ...] = ("source_file", "line_number"),
    ) -> None:
        super().__init__(target=target, folds=folds, smoothing=smoothing, fold_key=list(fold_key))

    def output_columns(self, columns: list[str]) -> list[str]:
        return [f"TE_{c}" for c in columns]

    def _fold(self) -> Any:
        return F.pmod(F.xxhash64(*self.params["fold_key"]), F.lit(self.params["folds"])).cast("int")

    def fit_query(self, frame: DataFrame, columns: list[str]) -> DataFrame:
        target = F.col(self.params["target"]).cast("double")
        pairs = [F.struct(F.lit(c).alias("column"), F.col(c).cast("string").alias("value")) for c in columns]
        exploded = frame.select(
            F.explode(F.array(*pairs)).alias("pair"), self._fold().alias("fold"), target.alias("y")
        )
        return exploded.groupBy("pair.column", "pair.value", "fold").agg(
            F.sum("y").alias("sum"), F.count("*").alias("count")
        )

    def state_from(self, query: DataFrame, columns: list[str]) -> dict[str, Any]:
        stats = query.persist()
        totals = stats.where(F.col("column") == columns[0]).agg(F.sum("sum"), F.sum("count")).first()
        prior = float(totals[0]) / float(totals[1]) if totals[1] else 0.0
        tables = {c: stats.where(F.col("column") == c).drop("column") for c in columns}
        return {"prior": prior, "stats": tables}

    def transform(self, frame: DataFrame, columns: list[str], state: dict[str, Any]) -> DataFrame:
        prior, w = state["prior"], float(self.params["smoothing"])
        keyed = all(k in frame.columns for k in self.params["fold_key"])
        if keyed:
            frame = frame.withColumn("_te_fold", self._fold())
        for c in columns:
            stats = state["stats"][c]
            totals = stats.groupBy("value").agg(F.sum("sum").alias("s"), F.sum("count").alias("n"))
            if keyed:
                totals = totals.join(
                    stats.withColumnRenamed("sum", "fs").withColumnRenamed("count", "fn"), "value"
                )
                totals = totals.select(
                    "value",
                    "fold",
                    (F.col("s") - F.col("fs")).alias("s"),
                    (F.col("n") - F.col("fn")).alias("n"),
                )
            totals = totals.select(
                F.col("value").alias("_te_value"),
                *([F.col("fold").alias("_te_value_fold")] if keyed else []),
                ((F.col("s") + w * prior) / (F.col("n") + w)).cast("float").alias("_te"),
            )
            condition = frame[c].cast("string") == totals["_te_value"]
            if keyed:
                condition = condition & (frame["_te_fold"] == totals["_te_value_fold"])
            frame = frame.join(F.broadcast(totals), condition, "left")
            frame = frame.withColumn(f"TE_{c}", F.coalesce(F.col("_te"), F.lit(prior).cast("float")))
            frame = frame.drop("_te_value", "_te_value_fold", "_te")
        return frame.drop("_te_fold") if keyed else frame

    def save_state(self, spark: SparkSession, state: dict[str, Any], path: str) -> dict[str, Any]:
        return {
            "prior": state["prior"],
            "tables": storage.save_tables(state["stats"], path, "target_encoding"),
        }

    def load_state(self, spark: SparkSession, saved: dict[str, Any], path: str) -> dict[str, Any]:
        return {"prior": saved["prior"], "stats": storage.load_tables(spark, saved["tables"], path)}
