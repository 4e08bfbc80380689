"""Categorify: values -> dense integer ids by descending frequency, from vocabularies fitted on data.

Ids start at 1 in order of descending count, ties broken by the value itself, so a refit on the same
data gives the same ids; 0 is reserved for missing, rare (below freq_threshold) and unseen values.
With `num_buckets=n`, rare and unseen values are not all 0 but hashed into ids 1..n (HashBucket's
formula over the value's text, so an int hashes as its digits), and the vocabulary's ids start at
n + 1: NVTabular's Categorify(num_buckets=...), for fields whose long tail still says something.
Every vocabulary of a workflow lies in one Delta table, VOCABULARY_TABLE (column, value, id, count),
partitioned by column: a fit writes them all in one commit and an extend (Workflow.extend) grows them
all with a new day's data in one MERGE, so one table version pins every vocabulary of a workflow
version, and a reader of one column prunes to its partition.

Transform joins each column with its vocabulary: a broadcast join up to BROADCAST_MAX_VALUES values (a
Spark setting), above it a shuffled hash join, so that no task holds more than its hash partition of a
vocabulary of tens of millions of values. The choice is per column, from the fitted vocabulary's size.
An op's small vocabularies share broadcasts: packed into groups of at most SHARED_BROADCAST_MAX_VALUES
values, each group is one scan of the table and one broadcast keyed by (column, value), which every
column of the group joins (Spark reuses the exchange). A broadcast per column costs a Delta file
listing and a broadcast job each: Criteo's 26 columns at 8,000 rows took 54 jobs a transform against 4.

`vocabulary_of="item_id"` makes the op fit nothing and use the vocabulary that an earlier node's
Categorify fitted for item_id (the Workflow hands it over): the same value gets the same id in both
columns, and its values unknown to item_id get item_id's 0, so both can index one embedding table."""

from __future__ import annotations

from dataclasses import replace
from functools import reduce
from typing import Any

from delta.tables import DeltaTable
from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from rec_plugin import storage
from rec_plugin.errors import InputError
from rec_plugin.ops.base import Op, categorical
from rec_plugin.schema import ColumnSchema, VocabularyPin
from rec_plugin.templates import render_over

# The workflow folder's table of every vocabulary, partitioned by VOCABULARY_COLUMN.
VOCABULARY_TABLE = "vocabularies"
VOCABULARY_COLUMN = "column"
# Workflows saved before VOCABULARY_TABLE kept one table per column here, vocab/<column>: they still
# load, and their first extend moves them into VOCABULARY_TABLE.
LEGACY_VOCABULARY_FOLDER = "vocab"
# Spark setting: the most values a vocabulary may hold for transform to broadcast it to every task.
BROADCAST_MAX_VALUES = "spark.sparkrec.categorify.broadcastMaxValues"
DEFAULT_BROADCAST_MAX_VALUES = 1_000_000


# The most values of one shared broadcast. Larger, the probes of every column miss the CPU's caches: at
# 8M Criteo rows (fields of up to 1M values, 218k values after threshold 15) the transform took 35.9
# and 32.6 s with all 26 vocabularies in one broadcast against 29.5 and 32.2 s with a broadcast each,
# and 29.5 and 31.5 s with the 15 smallest (11.7k values) shared.
SHARED_BROADCAST_MAX_VALUES = 12_000
# The columns of transform's shared broadcasts: a vocabulary's (column, value) key and the id.
_SHARED_KEY, _SHARED_ID = "__vocabulary_key", "__vocabulary_id"


def broadcast_limit(spark: SparkSession) -> int:
    """BROADCAST_MAX_VALUES as the session sets it."""
    return int(spark.conf.get(BROADCAST_MAX_VALUES, str(DEFAULT_BROADCAST_MAX_VALUES)))


def lookup_join(frame: DataFrame, ids: DataFrame, on: str | Column, values: int) -> DataFrame:
    """`frame` left-joined with a vocabulary's (value, id) rows, `values` of them: broadcast when that
    is at most BROADCAST_MAX_VALUES, else a shuffled hash join (AQE splits a skewed partition, such as
    the one that takes every missing value)."""
    looked_up = (
        F.broadcast(ids) if values <= broadcast_limit(frame.sparkSession) else ids.hint("shuffle_hash")
    )
    return frame.join(looked_up, on, "left")


def broadcast_groups(values: dict[str, int], limit: int) -> list[list[str]]:
    """The columns whose vocabularies (`values` each) may be broadcast, packed smallest first into
    groups of at most `limit` values together; the rest (above `limit` alone) are left out."""
    groups: list[list[str]] = []
    total = limit + 1
    for column in sorted((c for c in values if values[c] <= limit), key=lambda c: (values[c], c)):
        if total + values[column] > limit:
            groups.append([])
            total = 0
        groups[-1].append(column)
        total += values[column]
    return groups


def write_vocabularies(rows: list[DataFrame], path: str) -> None:
    """Replaces the workflow's vocabulary table at `path` by `rows` ((column, value, id, count) frames,
    one per Categorify that fits its own): one commit, whatever the number of columns."""
    if rows:
        table = reduce(DataFrame.unionByName, rows)
        (
            table.write.format("delta")
            .mode("overwrite")
            .option("overwriteSchema", "true")
            .partitionBy(VOCABULARY_COLUMN)
            .save(f"{path}/{VOCABULARY_TABLE}")
        )


def merge_vocabularies(spark: SparkSession, updates: list[DataFrame], columns: list[str], path: str) -> None:
    """Adds an extend's (column, value, count, id) `updates` of `columns` to the workflow's vocabulary
    table in one MERGE: counts add to known values, and values given an id are inserted. The condition
    names the columns, so Delta reads only their partitions."""
    if not updates:
        return
    known, given = F.col(f"v.{VOCABULARY_COLUMN}"), F.col(f"u.{VOCABULARY_COLUMN}")
    matched = known.isin(columns) & (known == given) & (F.col("v.value") == F.col("u.value"))
    (
        DeltaTable.forPath(spark, f"{path}/{VOCABULARY_TABLE}")
        .alias("v")
        .merge(reduce(DataFrame.unionByName, updates).alias("u"), matched)
        .whenMatchedUpdate(set={"count": "v.count + u.count"})
        .whenNotMatchedInsert(
            condition="u.id IS NOT NULL",
            values={c: f"u.{c}" for c in (VOCABULARY_COLUMN, "value", "id", "count")},
        )
        .execute()
    )


def read_vocabularies(spark: SparkSession, path: str, pins: dict[str, VocabularyPin]) -> dict[str, DataFrame]:
    """(value, id, count) of each pinned vocabulary of the workflow at `path`, at its pinned version:
    a partition of VOCABULARY_TABLE, or a legacy pin's own table (its `column` is None)."""
    opened: dict[tuple[str, int | None], DataFrame] = {}

    def table(pin: VocabularyPin) -> DataFrame:
        key = (pin.table, pin.version)
        if key not in opened:
            opened[key] = storage.read_delta(spark, f"{path}/{pin.table}", pin.version)
        return opened[key]

    return {
        name: table(pin) if pin.column is None else _partition(table(pin), pin.column)
        for name, pin in pins.items()
    }


def _partition(table: DataFrame, column: str) -> DataFrame:
    """(value, id, count) of one column's vocabulary in VOCABULARY_TABLE."""
    return table.where(F.col(VOCABULARY_COLUMN) == column).select("value", "id", "count")


class Vocabularies(dict):
    """A Categorify state: each column's (value, id, count) frame, and the one (column, value, id,
    count) table they are parts of where there is one (a fit's query, or the vocabulary table at its
    pinned version), which transform's shared broadcasts read once. A fit's also keeps each column's
    ids, counted in one aggregation when it was fitted, so that fit's transform, the output schema and
    the save do not query every column again."""

    def __init__(
        self, frames: dict[str, DataFrame], table: DataFrame | None = None, ids: dict[str, int] | None = None
    ) -> None:
        super().__init__(frames)
        self.table = table
        self.ids = dict(ids or {})


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

    def reads_pin(self, pin: VocabularyPin, column: str) -> bool:
        """Whether `pin`, at any version, names the vocabulary `column` takes its ids from: its
        partition of VOCABULARY_TABLE, or in a workflow saved before that table, its own table."""
        owner = self.vocabulary_of or column
        return (pin.table, pin.column) in {
            (VOCABULARY_TABLE, owner),
            (f"{LEGACY_VOCABULARY_FOLDER}/{owner}", None),
        }

    def vocabulary_pin(self, column: str) -> VocabularyPin:
        """The (unversioned) pin of the vocabulary `column` takes its ids from: its own partition of
        VOCABULARY_TABLE, or with `vocabulary_of` that column's."""
        return VocabularyPin(VOCABULARY_TABLE, column=self.vocabulary_of or column)

    def shared_state(self, owner: dict[str, Any], columns: list[str]) -> dict[str, Any]:
        """The state of an op with `vocabulary_of`: every column looks its values up in the vocabulary
        that the `owner` state (the Categorify fitting it) holds for the column it names."""
        shared = self.vocabulary_of
        ids = owner.ids if isinstance(owner, Vocabularies) else {}
        known = {c: ids[shared] for c in columns if shared in ids}
        return Vocabularies({c: owner[shared] for c in columns}, ids=known)

    def value_counts(self, frame: DataFrame, columns: list[str]) -> DataFrame:
        """(column, value, count) of every non-null value of the columns, in one aggregation for all."""
        named = [(F.lit(c).alias(VOCABULARY_COLUMN), F.col(c).cast("string").alias("value")) for c in columns]
        pairs = [F.struct(name, value) for name, value in named]
        exploded = frame.select(F.explode(F.array(*pairs)).alias("pair")).select("pair.*")
        return exploded.where("value IS NOT NULL").groupBy(VOCABULARY_COLUMN, "value").count()

    def fit_query(self, frame: DataFrame, columns: list[str]) -> DataFrame | None:
        """None with `vocabulary_of`: the Workflow gives that op its state (shared_state)."""
        if self.vocabulary_of is not None:
            return None
        counts = self.value_counts(frame, columns).where(F.col("count") >= self.params["freq_threshold"])
        order = Window.partitionBy(VOCABULARY_COLUMN).orderBy(F.desc("count"), F.asc("value"))
        ranked = counts.withColumn("id", (F.row_number().over(order) + self.num_buckets).cast("int"))
        return self._capped(ranked)

    def _capped(self, vocab: DataFrame) -> DataFrame:
        size = self.params["max_size"]
        return vocab if size is None else vocab.where(F.col("id") <= size + self.num_buckets)

    def vocabulary_updates(
        self, frame: DataFrame, columns: list[str], state: dict[str, Any]
    ) -> tuple[DataFrame, dict[str, Any]]:
        """What `frame` (a new day's data) adds to the vocabularies `state`: (column, value, count, id)
        of every value it holds, with an id only for a value not yet known that reaches
        freq_threshold in it (after its column's last id, by descending count: known ids never
        change), persisted for merge_vocabularies; and the grown state, for the ops after this one."""
        counts = self.value_counts(frame, columns)
        known = reduce(
            DataFrame.unionByName,
            [state[c].select(F.lit(c).alias(VOCABULARY_COLUMN), "value") for c in columns],
        )
        last_ids = [F.lit(x) for c, size in self.cardinalities(state, columns).items() for x in (c, size - 1)]
        order = Window.partitionBy(VOCABULARY_COLUMN).orderBy(F.desc("count"), F.asc("value"))
        fresh = counts.join(known, [VOCABULARY_COLUMN, "value"], "left_anti").where(
            F.col("count") >= self.params["freq_threshold"]
        )
        fresh = fresh.withColumn(
            "id", (F.row_number().over(order) + F.create_map(*last_ids)[F.col(VOCABULARY_COLUMN)]).cast("int")
        )
        keys = [VOCABULARY_COLUMN, "value"]
        updates = counts.join(self._capped(fresh).select(*keys, "id"), keys, "left")
        updates = updates.persist(StorageLevel.MEMORY_AND_DISK)
        added = updates.where(F.col("id").isNotNull())
        grown = {
            c: state[c]
            .select("value", "id", "count")
            .unionByName(added.where(F.col(VOCABULARY_COLUMN) == c).select("value", "id", "count"))
            for c in columns
        }
        return updates, grown

    def vocabulary_rows(self, state: dict[str, Any]) -> DataFrame:
        """The op's fitted vocabularies as rows of VOCABULARY_TABLE (column, value, id, count)."""
        if isinstance(state, Vocabularies) and state.table is not None:
            return state.table
        return reduce(
            DataFrame.unionByName,
            [
                frame.select(F.lit(c).alias(VOCABULARY_COLUMN), "value", "id", "count")
                for c, frame in state.items()
            ],
        )

    def state_from(self, query: DataFrame, columns: list[str]) -> dict[str, Any]:
        """Each column's part of the (persisted) fit query, and every column's ids from one aggregation."""
        largest = query.groupBy(VOCABULARY_COLUMN).agg(F.max("id").alias("largest")).collect()
        found = {row[VOCABULARY_COLUMN]: int(row["largest"]) for row in largest}
        return Vocabularies(
            {c: query.where(F.col(VOCABULARY_COLUMN) == c).select("value", "id", "count") for c in columns},
            table=query.select(VOCABULARY_COLUMN, "value", "id", "count"),
            ids={c: max(found.get(c, 0), self.num_buckets) + 1 for c in columns},
        )

    def transform(
        self, frame: DataFrame, columns: list[str], state: dict[str, Any], ids: dict[str, int] | None = None
    ) -> DataFrame:
        """`ids`: each vocabulary's ids (cardinality) where the caller knows them, else counted here."""
        sizes = ids or self.cardinalities(state, columns)
        values = {c: self.vocabulary_values(sizes[c]) for c in columns}
        cap = min(broadcast_limit(frame.sparkSession), SHARED_BROADCAST_MAX_VALUES)
        # Only a state read from one table: an extend's grown state is a union per column, and one
        # broadcast of all of them made the killed-retrain test take 139 s against 72 s.
        has_table = isinstance(state, Vocabularies) and state.table is not None
        shared = [g for g in broadcast_groups(values, cap) if len(g) > 1] if has_table else []
        for group in shared:
            frame = self._shared_lookups(frame, group, state)
        in_shared = {c for group in shared for c in group}
        for c in (c for c in columns if c not in in_shared):
            vocabulary = state[c].select(F.col("value").alias(f"{c}__value"), F.col("id").alias(f"{c}__id"))
            on = frame[c].cast("string") == vocabulary[f"{c}__value"]
            joined = lookup_join(frame, vocabulary, on, values[c])
            frame = joined.withColumn(c, F.expr(self.id_sql(f"`{c}__id`", f"CAST(`{c}` AS STRING)"))).drop(
                f"{c}__value", f"{c}__id"
            )
        return frame

    def _shared_lookups(self, frame: DataFrame, group: list[str], state: Vocabularies) -> DataFrame:
        """The group's columns looked up in one broadcast of their vocabularies keyed by the vocabulary's
        column name and the value (a name holds no NUL, so the key is unique), one join per column."""
        owners = {c: self.vocabulary_of or c for c in group}
        rows = state.table.where(F.col(VOCABULARY_COLUMN).isin(sorted(set(owners.values()))))
        key = F.concat(F.col(VOCABULARY_COLUMN), F.lit("\x00"), F.col("value"))
        lookups = F.broadcast(rows.select(key.alias(_SHARED_KEY), F.col("id").alias(_SHARED_ID)))
        for c in group:
            on = F.concat(F.lit(f"{owners[c]}\x00"), F.col(c).cast("string")) == F.col(_SHARED_KEY)
            joined = frame.join(lookups, on, "left")
            id_sql = self.id_sql(f"`{_SHARED_ID}`", f"CAST(`{c}` AS STRING)")
            frame = joined.withColumn(c, F.expr(id_sql)).drop(_SHARED_KEY, _SHARED_ID)
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
        """int32 ids, one embedding row per id plus the reserved 0; the column's partition of the
        vocabulary table is pinned to its Delta version when the workflow is saved. With
        `vocabulary_of`, that column's partition is pinned and its embedding table named: the same
        table, hence the same cardinality."""
        sizes = self.cardinalities(state, [c.name for c in inputs])
        owner = self.vocabulary_of
        return [
            categorical(
                c,
                sizes[c.name],
                vocabulary=self.vocabulary_pin(c.name),
                token_width=c.token_width,
                embedding_table=owner,
                hashed_ids=self.num_buckets or None,
            )
            for c in inputs
        ]

    def save_state(self, spark: SparkSession, state: dict[str, Any], path: str) -> dict[str, Any]:
        """The op's columns: the Workflow writes every fitted vocabulary into VOCABULARY_TABLE at once
        (write_vocabularies), and the schema pins its version, so nothing is written here."""
        return {"columns": list(state)}

    def load_state(
        self, spark: SparkSession, saved: dict[str, Any], path: str, pins: dict[str, int | None]
    ) -> dict[str, Any]:
        if "tables" in saved and VOCABULARY_TABLE not in pins:  # a table per column, by location
            return storage.load_tables(spark, saved["tables"], path, pins)
        version = pins.get(VOCABULARY_TABLE)
        columns = saved["columns"] if "columns" in saved else list(saved["tables"])  # extended since
        pins_of = {c: replace(self.vocabulary_pin(c), version=version) for c in columns}
        if not pins_of:  # an unfitted op, saved as a stage of a Spark ML Pipeline
            return Vocabularies({})
        table = storage.read_delta(spark, f"{path}/{VOCABULARY_TABLE}", version)
        owners = sorted({pin.column for pin in pins_of.values()})
        return Vocabularies(
            {c: _partition(table, pin.column) for c, pin in pins_of.items()},
            table=table.where(F.col(VOCABULARY_COLUMN).isin(owners)),
        )

    def cardinalities(self, state: dict[str, Any], columns: list[str]) -> dict[str, int]:
        """Embedding rows a model needs per column: the largest id (at least the last hash bucket) plus
        the reserved 0 (one query)."""
        if isinstance(state, Vocabularies) and all(c in state.ids for c in columns):
            return {c: state.ids[c] for c in columns}
        if not columns:
            return {}
        largest = [
            state[c].agg(F.max("id").alias("largest")).select(F.lit(c).alias(VOCABULARY_COLUMN), "largest")
            for c in columns
        ]
        rows = reduce(DataFrame.unionAll, largest).collect()
        return {row[VOCABULARY_COLUMN]: max(int(row["largest"] or 0), self.num_buckets) + 1 for row in rows}
