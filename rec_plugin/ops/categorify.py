"""Categorify: values -> dense integer ids by descending frequency, from vocabularies fitted on data.

Ids start at 1 in order of descending count, ties broken by the value itself, so a refit on the same
data gives the same ids; 0 is reserved for missing, rare (below freq_threshold) and unseen values.
With `num_buckets=n`, rare and unseen values are not all 0 but hashed into ids 1..n (HashBucket's
formula over the value's text, so an int hashes as its digits), and the vocabulary's ids start at
n + 1: NVTabular's Categorify(num_buckets=...), for fields whose long tail still says something.
Each column's vocabulary is a table (value, id, count), saved as its own Delta table, which `extend`
grows in place with a new day's data (see Workflow.extend).

Transform joins each column with its vocabulary: a broadcast join up to BROADCAST_MAX_VALUES values (a
Spark setting), above it a shuffled hash join, so that no task holds more than its hash partition of a
vocabulary of tens of millions of values. The choice is per column, from the fitted vocabulary's size.

`vocabulary_of="item_id"` makes the op fit nothing and use the vocabulary that an earlier node's
Categorify fitted for item_id (the Workflow hands it over): the same value gets the same id in both
columns, and its values unknown to item_id get item_id's 0, so both can index one embedding table."""

from __future__ import annotations

from functools import reduce
from typing import Any

from delta.tables import DeltaTable
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from rec_plugin import storage
from rec_plugin.errors import InputError
from rec_plugin.ops.base import Op, categorical
from rec_plugin.schema import ColumnSchema, VocabularyPin
from rec_plugin.templates import render_over

# The workflow folder's subfolder of vocabulary tables.
VOCABULARY_FOLDER = "vocab"
# Spark setting: the most values a vocabulary may hold for transform to broadcast it to every task.
BROADCAST_MAX_VALUES = "spark.sparkrec.categorify.broadcastMaxValues"
DEFAULT_BROADCAST_MAX_VALUES = 1_000_000


def lookup_join(frame: DataFrame, ids: DataFrame, on: str | Column, values: int) -> DataFrame:
    """`frame` left-joined with a vocabulary's (value, id) rows, `values` of them: broadcast when that
    is at most BROADCAST_MAX_VALUES, else a shuffled hash join (AQE splits a skewed partition, such as
    the one that takes every missing value)."""
    limit = int(frame.sparkSession.conf.get(BROADCAST_MAX_VALUES, str(DEFAULT_BROADCAST_MAX_VALUES)))
    looked_up = F.broadcast(ids) if values <= limit else ids.hint("shuffle_hash")
    return frame.join(looked_up, on, "left")


class Categorify(Op):
    state_holds_frames = True

    def __init__(
        self,
        freq_threshold: int = 1,
        max_size: int | None = None,
        vocabulary_of: str | None = None,
        num_buckets: int = 0,
    ) -> None:
        if num_buckets < 0:
            raise InputError(f"{type(self).__name__}(num_buckets={num_buckets}): give 0 or more buckets")
        if vocabulary_of is None:
            super().__init__(freq_threshold=freq_threshold, max_size=max_size)
            if num_buckets:  # only when asked: saved workflows from before num_buckets load unchanged
                self.params["num_buckets"] = num_buckets
        elif freq_threshold != 1 or max_size is not None or num_buckets:
            raise InputError(
                f"{type(self).__name__}(vocabulary_of={vocabulary_of!r}) keeps the values that "
                f"{vocabulary_of!r}'s vocabulary keeps: give freq_threshold, max_size and num_buckets "
                "to its Categorify"
            )
        else:
            super().__init__(vocabulary_of=vocabulary_of)

    @property
    def vocabulary_of(self) -> str | None:
        """The column whose vocabulary this op uses instead of fitting one (None: it fits its own)."""
        return self.params.get("vocabulary_of")

    @property
    def num_buckets(self) -> int:
        """Ids 1..num_buckets that rare and unseen values hash into (0: they all get id 0)."""
        return int(self.params.get("num_buckets", 0))

    @staticmethod
    def table_location(column: str) -> str:
        """Where a column's vocabulary table lies, relative to the workflow folder."""
        return f"{VOCABULARY_FOLDER}/{column}"

    def shared_state(self, vocabulary: DataFrame, columns: list[str]) -> dict[str, Any]:
        """The state of an op with `vocabulary_of`: every column looks its values up in `vocabulary`,
        the fitted (value, id, count) table of the column it names."""
        return {c: vocabulary for c in columns}

    def value_counts(self, frame: DataFrame, columns: list[str]) -> DataFrame:
        """(column, value, count) of every non-null value of the columns, in one aggregation for all."""
        pairs = [F.struct(F.lit(c).alias("column"), F.col(c).cast("string").alias("value")) for c in columns]
        exploded = frame.select(F.explode(F.array(*pairs)).alias("pair")).select("pair.column", "pair.value")
        return exploded.where("value IS NOT NULL").groupBy("column", "value").count()

    def fit_query(self, frame: DataFrame, columns: list[str]) -> DataFrame | None:
        """None with `vocabulary_of`: the Workflow gives that op its state (shared_state)."""
        if self.vocabulary_of is not None:
            return None
        counts = self.value_counts(frame, columns).where(F.col("count") >= self.params["freq_threshold"])
        order = Window.partitionBy("column").orderBy(F.desc("count"), F.asc("value"))
        ranked = counts.withColumn("id", (F.row_number().over(order) + self.num_buckets).cast("int"))
        return self._capped(ranked)

    def _capped(self, vocab: DataFrame) -> DataFrame:
        size = self.params["max_size"]
        return vocab if size is None else vocab.where(F.col("id") <= size + self.num_buckets)

    def extend(self, frame: DataFrame, columns: list[str], path: str) -> dict[str, Any]:
        """Grows the saved vocabularies with `frame` (a new day's data): existing ids never change, and
        values not yet known that reach freq_threshold in `frame` get ids after the last one, by
        descending count. One Delta MERGE per vocabulary table, which also adds the new counts."""
        spark = frame.sparkSession
        counts = self.value_counts(frame, columns).persist()
        state = {}
        for c in columns:
            location = f"{path}/{self.table_location(c)}"
            table = DeltaTable.forPath(spark, location)
            known = table.toDF()
            last_id = max(known.agg(F.max("id")).first()[0] or 0, self.num_buckets)
            seen = counts.where(F.col("column") == c).select("value", "count")
            fresh = seen.join(known.select("value"), "value", "left_anti")
            fresh = fresh.where(F.col("count") >= self.params["freq_threshold"])
            order = Window.orderBy(F.desc("count"), F.asc("value"))
            fresh = self._capped(fresh.withColumn("id", (F.row_number().over(order) + last_id).cast("int")))
            updates = seen.join(fresh.select("value", "id"), "value", "left")
            (
                table.alias("v")
                .merge(updates.alias("u"), "v.value = u.value")
                .whenMatchedUpdate(set={"count": "v.count + u.count"})
                .whenNotMatchedInsert(
                    condition="u.id IS NOT NULL",
                    values={"value": "u.value", "id": "u.id", "count": "u.count"},
                )
                .execute()
            )
            state[c] = spark.read.format("delta").load(location)
        counts.unpersist()
        return state

    def state_from(self, query: DataFrame, columns: list[str]) -> dict[str, Any]:
        return {c: query.where(F.col("column") == c).select("value", "id", "count") for c in columns}

    def transform(
        self, frame: DataFrame, columns: list[str], state: dict[str, Any], ids: dict[str, int] | None = None
    ) -> DataFrame:
        """`ids`: each vocabulary's ids (cardinality) where the caller knows them, else counted here."""
        sizes = ids or self.cardinalities(state, columns)
        for c in columns:
            vocabulary = state[c].select(F.col("value").alias(f"{c}__value"), F.col("id").alias(f"{c}__id"))
            on = frame[c].cast("string") == vocabulary[f"{c}__value"]
            joined = lookup_join(frame, vocabulary, on, self.vocabulary_values(sizes[c]))
            frame = joined.withColumn(c, F.expr(self.id_sql(f"`{c}__id`", f"CAST(`{c}` AS STRING)"))).drop(
                f"{c}__value", f"{c}__id"
            )
        return frame

    def vocabulary_values(self, cardinality: int) -> int:
        """The values a vocabulary of `cardinality` ids holds: less the reserved 0 and the buckets."""
        return max(0, cardinality - 1 - self.num_buckets)

    def id_sql(self, looked_up: str, text: str) -> str:
        """The SQL of a value's id from its vocabulary lookup (`looked_up`, NULL when absent) and its
        text (for the hash buckets of num_buckets)."""
        if self.num_buckets:
            bucket = render_over("hash_bucket", {"x": text}, {"buckets": self.num_buckets})
            looked_up = f"coalesce({looked_up}, {bucket})"
        return render_over("category_id", {"id": looked_up}, {})

    def output_schema(self, inputs: list[ColumnSchema], state: dict[str, Any]) -> list[ColumnSchema]:
        """int32 ids, one embedding row per id plus the reserved 0; the vocabulary table is pinned to its
        Delta version when the workflow is saved. With `vocabulary_of`, that column's table is pinned
        and its embedding table named: the same table, hence the same cardinality."""
        sizes = self.cardinalities(state, [c.name for c in inputs])
        owner = self.vocabulary_of
        return [
            categorical(
                c,
                sizes[c.name],
                vocabulary=VocabularyPin(self.table_location(owner or c.name)),
                token_width=c.token_width,
                embedding_table=owner,
                hashed_ids=self.num_buckets or None,
            )
            for c in inputs
        ]

    def save_state(self, spark: SparkSession, state: dict[str, Any], path: str) -> dict[str, Any]:
        """The saved tables' locations; with `vocabulary_of`, that column's (saved by its own op), so
        load_state reads it at the version the schema pins, and nothing is written."""
        if self.vocabulary_of is not None:
            return {"tables": {c: self.table_location(self.vocabulary_of) for c in state}}
        return {"tables": storage.save_tables(state, path, VOCABULARY_FOLDER)}

    def load_state(
        self, spark: SparkSession, saved: dict[str, Any], path: str, pins: dict[str, int | None]
    ) -> dict[str, Any]:
        return storage.load_tables(spark, saved["tables"], path, pins)

    def cardinalities(self, state: dict[str, Any], columns: list[str]) -> dict[str, int]:
        """Embedding rows a model needs per column: the largest id (at least the last hash bucket) plus
        the reserved 0 (one query)."""
        if not columns:
            return {}
        largest = [
            state[c].agg(F.max("id").alias("largest")).select(F.lit(c).alias("column"), "largest")
            for c in columns
        ]
        rows = reduce(DataFrame.unionAll, largest).collect()
        return {row["column"]: max(int(row["largest"] or 0), self.num_buckets) + 1 for row in rows}
