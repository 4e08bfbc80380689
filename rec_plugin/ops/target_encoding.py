"""TargetEncoding: a categorical value -> the smoothed mean of the target over rows with that value.

    encoding = (sum + smoothing * prior) / (count + smoothing),   prior = the target's global mean

Statistics are kept per fold (fold = a hash of the row's `fold_key` columns, modulo `folds`). A row
the workflow was fitted on (marked by Workflow.transform's `fitted_rows`) is encoded from the other
folds only, so no row's own label leaks into its feature (k-fold); every other row (validation, test,
serving), fold key or not, uses all folds, as serving does. Writes a new float column TE_<column>;
unseen values get the prior. One Delta table of (value, fold, sum, count) per column."""

from __future__ import annotations

from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from rec_plugin import storage
from rec_plugin.ops.base import FITTED_ROW, Op, require_at_least
from rec_plugin.schema import LINE_NUMBER, SOURCE_FILE, ColumnSchema, Tags

# The fold a row not fitted on is looked up under: its value's statistics over all folds.
ALL_FOLDS = -1


class TargetEncoding(Op):
    state_holds_frames = True

    def __init__(
        self,
        target: str = "label",
        folds: int = 5,
        smoothing: float = 20.0,
        fold_key: tuple[str, ...] = (SOURCE_FILE, LINE_NUMBER),
    ) -> None:
        require_at_least(self, 2, folds=folds)  # out of fold: a row's own fold is left out
        if not smoothing > 0:  # the weight of the prior: a value of one fold alone has no other rows
            raise ValueError(f"TargetEncoding param smoothing={smoothing!r} must be above 0")
        super().__init__(target=target, folds=folds, smoothing=smoothing, fold_key=list(fold_key))

    def output_columns(self, columns: list[str]) -> list[str]:
        return [f"TE_{c}" for c in columns]

    def reads(self) -> list[str]:
        return [self.params["target"], *self.params["fold_key"]]

    def output_schema(self, inputs: list[ColumnSchema], state: dict[str, Any]) -> list[ColumnSchema]:
        """A new float32 feature per column; it is not an id, so it drops the input's tags."""
        return [ColumnSchema(f"TE_{c.name}", "float32", (Tags.CONTINUOUS,)) for c in inputs]

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
        totals = query.where(F.col("column") == columns[0]).agg(F.sum("sum"), F.sum("count")).first()
        prior = float(totals[0]) / float(totals[1]) if totals[1] else 0.0
        tables = {c: query.where(F.col("column") == c).drop("column") for c in columns}
        return {"prior": prior, "stats": tables}

    def transform(self, frame: DataFrame, columns: list[str], state: dict[str, Any]) -> DataFrame:
        """Rows marked FITTED_ROW get their fold's out-of-fold encoding, all others the all-folds one:
        one broadcast join per column on (value, fold), the fold of an unmarked row being ALL_FOLDS."""
        prior, w = state["prior"], float(self.params["smoothing"])
        marked = FITTED_ROW in frame.columns
        if marked:
            missing = [k for k in self.params["fold_key"] if k not in frame.columns]
            if missing:
                raise ValueError(f"rows marked as fitted need their fold key {missing} (out of fold)")
            frame = frame.withColumn("_te_fold", F.when(F.col(FITTED_ROW), self._fold()).otherwise(ALL_FOLDS))
        for c in columns:
            stats = state["stats"][c]
            totals = stats.groupBy("value").agg(F.sum("sum").alias("s"), F.sum("count").alias("n"))
            if marked:
                out_of_fold = totals.join(stats, "value").select(
                    "value",
                    "fold",
                    (F.col("s") - F.col("sum")).alias("s"),
                    (F.col("n") - F.col("count")).alias("n"),
                )
                totals = out_of_fold.unionByName(totals.withColumn("fold", F.lit(ALL_FOLDS)))
            totals = totals.select(
                F.col("value").alias("_te_value"),
                *([F.col("fold").alias("_te_value_fold")] if marked else []),
                ((F.col("s") + w * prior) / (F.col("n") + w)).cast("float").alias("_te"),
            )
            condition = frame[c].cast("string") == totals["_te_value"]
            if marked:
                condition = condition & (frame["_te_fold"] == totals["_te_value_fold"])
            frame = frame.join(F.broadcast(totals), condition, "left")
            frame = frame.withColumn(f"TE_{c}", F.coalesce(F.col("_te"), F.lit(prior).cast("float")))
            frame = frame.drop("_te_value", "_te_value_fold", "_te")
        return frame.drop("_te_fold")

    def save_state(self, spark: SparkSession, state: dict[str, Any], path: str) -> dict[str, Any]:
        return {
            "prior": state["prior"],
            "tables": storage.save_tables(state["stats"], path, "target_encoding"),
        }

    def load_state(
        self, spark: SparkSession, saved: dict[str, Any], path: str, pins: dict[str, int | None]
    ) -> dict[str, Any]:
        return {"prior": saved["prior"], "stats": storage.load_tables(spark, saved["tables"], path, pins)}
