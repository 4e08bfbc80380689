"""Each feature op on small hand-made frames, the ops graph, and the workflow's save/load."""

from __future__ import annotations

import json
import math
import re
import shutil
import statistics
from datetime import UTC, datetime
from pathlib import Path

import pytest
from delta.tables import DeltaTable
from pyspark.ml import Pipeline, PipelineModel
from pyspark.sql import functions as F

from rec_plugin.errors import InputError
from rec_plugin.gpu import gpu_plan
from rec_plugin.ml import WorkflowEstimator
from rec_plugin.ops import (
    Categorify,
    Clip,
    Cross,
    DatePart,
    FillMissing,
    HashBucket,
    ListCategorify,
    LogOp,
    Normalize,
    TargetEncoding,
)
from rec_plugin.ops.categorify import (
    BROADCAST_MAX_VALUES,
    DEFAULT_BROADCAST_MAX_VALUES,
    LEGACY_VOCABULARY_FOLDER,
    VOCABULARY_COLUMN,
    VOCABULARY_TABLE,
    merge_vocabularies,
)
from rec_plugin.schema import VocabularyPin
from rec_plugin.workflow import SCHEMA_FILE, VERSIONS_FOLDER, WORKFLOW_FILE, Workflow, inferred_schema
from spark_jobs.session import session_conf

ROWS = [
    (1, -5, "a", "x"),
    (2, None, "b", "x"),
    (3, 7, "a", None),
    (4, 100, "c", "y"),
    (5, 2, "a", "y"),
    (6, None, "b", "y"),
    (7, 3, None, "x"),
    (8, 9, "d", "x"),
]


@pytest.fixture()
def frame(spark):
    return spark.createDataFrame(ROWS, "row int, n int, c string, d string")


def run(frame, graph):
    workflow = Workflow([*graph, "row"]).fit(frame)
    return {r.row: r for r in workflow.transform(frame).collect()}, workflow


def test_fill_clip_log_normalize(frame):
    out, _ = run(frame, [["n"] >> FillMissing(0) >> Clip(min=0, max=50) >> LogOp()])
    assert out[1].n == 0.0 and out[2].n == 0.0
    assert out[4].n == pytest.approx(3.9318256, abs=1e-6)  # log1p(50)
    out, _ = run(frame, [["n"] >> LogOp()])  # no Clip: -5 is taken as 0, a missing value stays missing
    assert (out[1].n, out[2].n) == (0.0, None) and out[3].n == pytest.approx(math.log(8), abs=1e-6)
    out, workflow = run(frame, [["n"] >> FillMissing(0) >> Normalize()])
    values = [r.n for r in out.values()]
    assert sum(values) / len(values) == pytest.approx(0.0, abs=1e-6)
    assert sum(v * v for v in values) / len(values) == pytest.approx(1.0, abs=1e-5)
    assert set(workflow.state(0, 1)["n"]) == {"mean", "std"}


def test_normalize_keeps_the_spread_of_values_far_from_0(spark):
    """An epoch time (1.7e9 +- 100): its variance as E[x^2] - E[x]^2 in doubles once came out below
    0, so the std fell back to 1 and the feature reached the model ~29x too large."""
    seconds = [1_767_225_600 + 7 * i for i in range(-15, 15)]
    frame = spark.createDataFrame([(i, s) for i, s in enumerate(seconds)], "row int, ts long")
    out, workflow = run(frame, [["ts"] >> Normalize()])
    state = workflow.state(0, 0)["ts"]
    assert state["mean"] == pytest.approx(statistics.fmean(seconds))
    assert state["std"] == pytest.approx(statistics.pstdev(seconds))  # 60.6, not 1
    values = [out[i].ts for i in range(len(seconds))]
    assert statistics.fmean(values) == pytest.approx(0.0, abs=1e-5)
    assert statistics.pstdev(values) == pytest.approx(1.0, abs=1e-5)


def test_clip_keeps_missing_missing(frame):
    out, _ = run(frame, [["n"] >> Clip(min=0)])
    assert out[1].n == 0 and out[2].n is None and out[3].n == 7


def test_categorify_orders_ids_by_frequency_then_value(frame):
    out, workflow = run(frame, [["c"] >> Categorify()])
    ids = {r.row: r.c for r in out.values()}
    assert ids == {1: 1, 3: 1, 5: 1, 2: 2, 6: 2, 4: 3, 8: 4, 7: 0}  # a:3, b:2, then c<d by value


def test_categorify_threshold_and_max_size_send_rare_values_to_zero(frame):
    out, _ = run(frame, [["c"] >> Categorify(freq_threshold=2)])
    assert {r.row: r.c for r in out.values()} == {1: 1, 3: 1, 5: 1, 2: 2, 6: 2, 4: 0, 8: 0, 7: 0}
    out, _ = run(frame, [["c"] >> Categorify(max_size=1)])
    assert sorted({r.c for r in out.values()}) == [0, 1]


def test_categorify_maps_unseen_values_to_zero(spark, frame):
    workflow = Workflow([["c"] >> Categorify()]).fit(frame)
    unseen = spark.createDataFrame([("zzz",), ("a",)], "c string")
    assert [r.c for r in workflow.transform(unseen).collect()] == [0, 1]


def test_hash_bucket_and_cross(frame):
    # Nodes run in order over one frame: the cross reads c before HashBucket rewrites it.
    out, _ = run(frame, [["c", "d"] >> Cross(buckets=100), ["c"] >> HashBucket(10)])
    assert all(1 <= r.c <= 10 for r in out.values() if r.row != 7) and out[7].c == 0
    assert out[1].c == out[3].c, "same value, same bucket"
    assert out[3].c_x_d == 0 and out[7].c_x_d == 0, "a missing side gives 0"
    assert 1 <= out[1].c_x_d <= 100 and out[1].c_x_d != out[5].c_x_d


def test_date_part_gives_utc_hour_and_weekday_ids_on_the_gpu_and_refuses_what_is_no_epoch_time(spark):
    """Epoch seconds (or milliseconds) -> hour ids 1-24 and Monday-Sunday ids 1-7 as Python's UTC
    calendar has them, before 1970 too; 0 for a missing time; every expression GPU-eligible."""
    times = [1767229200, 1767311999, 1767398400 + 3600 * 13 + 59, 0, -1, -86400 * 3 - 1, None]
    frame = spark.createDataFrame(
        [(t, None if t is None else t * 1000) for t in times], "s bigint, ms bigint"
    )
    graph = [["s"] >> DatePart("hour"), ["s"] >> DatePart("weekday"), ["ms"] >> DatePart("weekday", "ms")]
    workflow = Workflow([*graph, "s"]).fit(frame)
    out = workflow.transform(frame)
    assert gpu_plan(out).not_on_gpu == []
    rows = {r.s: r for r in out.collect()}
    for t in times:
        when = None if t is None else datetime.fromtimestamp(t, UTC)
        assert rows[t].s_hour == (0 if when is None else when.hour + 1), t
        assert rows[t].s_weekday == rows[t].ms_weekday == (0 if when is None else when.weekday() + 1), t
    assert [(c.name, c.cardinality) for c in workflow.schema.categorical] == [
        ("s_hour", 25), ("s_weekday", 8), ("ms_weekday", 8),
    ]  # fmt: skip
    text = spark.createDataFrame([("2026-01-01",)], "s string")
    with pytest.raises(InputError, match=r"^DatePart reads numbers, and columns \['s'\] hold strings"):
        Workflow([["s"] >> DatePart("hour")]).fit(text)
    with pytest.raises(ValueError, match="part='minute' is not one of"):
        DatePart("minute")


def test_a_number_op_on_strings_or_an_unreadable_name_is_refused_before_fitting(frame):
    """Normalize of a string column stopped fit with a Python TypeError after the earlier ops' jobs."""
    schema = inferred_schema(frame.withColumn("tags", F.array("c")))
    strings = r"^Normalize reads numbers, and columns \['c'\] hold strings or lists: give them a number"
    with pytest.raises(InputError, match=strings):
        Workflow([["c"] >> Normalize()]).fit(frame)
    with pytest.raises(InputError, match=strings):
        Workflow([["c"] >> FillMissing("z") >> Normalize()]).check(schema)
    with pytest.raises(InputError, match=r"^Clip reads numbers, and columns \['tags'\] hold strings or"):
        Workflow([["tags"] >> ListCategorify(max_length=2) >> Clip(min=0)]).check(schema)
    Workflow([["c"] >> HashBucket(4) >> Normalize(), ["n"] >> LogOp()]).check(schema)
    with pytest.raises(InputError, match=r"^workflow outputs \['c-d'\]: feature columns need names of"):
        Workflow([["c-d"] >> Categorify()]).fit(frame.withColumnRenamed("c", "c-d"))


def test_a_column_a_later_node_rewrites_is_written_once_through_both_nodes_ops(frame):
    """The second node sees `n` as the first left it (as a Categorify of a Cross's column does); `n`
    was written twice and Delta refused the duplicate column after the whole fit."""
    workflow = Workflow([["n"] >> Clip(min=0), ["n"] >> LogOp(), "row"]).fit(frame)
    assert workflow.schema.names == ["n", "row"] and workflow.output_columns() == ["n", "row"]
    rows = {r.row: r.n for r in workflow.transform(frame).collect()}
    assert rows == {i: None if n is None else pytest.approx(math.log1p(max(n, 0))) for i, n, _, _ in ROWS}


def test_cross_needs_two_columns(frame):
    with pytest.raises(ValueError, match="two columns"):
        Workflow([["c"] >> Cross(buckets=4)]).output_columns()


def test_transform_before_fit_is_an_error(frame):
    with pytest.raises(RuntimeError, match="fit"):
        Workflow([["c"] >> Categorify()]).transform(frame)


def test_save_load_round_trip_without_pickle(spark, frame, tmp_path):
    graph = [
        ["n"] >> FillMissing(0) >> Normalize(),
        ["c", "d"] >> Categorify(),
        ["c", "d"] >> Cross(buckets=8),
    ]
    workflow = Workflow([*graph, "row"]).fit(frame)
    workflow.save(str(tmp_path / "wf"))
    loaded = Workflow.load(str(tmp_path / "wf"))
    assert (
        loaded.transform(frame).orderBy("row").collect() == workflow.transform(frame).orderBy("row").collect()
    )
    saved = {p.name for p in Path(tmp_path / "wf").rglob("*") if p.is_file()}
    assert "workflow.json" in saved and not any(n.endswith((".pkl", ".pickle")) for n in saved)
    assert (tmp_path / "wf" / VOCABULARY_TABLE / "column=c").is_dir()


def _vocabulary(spark, path: str, column: str) -> dict:
    """value -> (id, count) of `column`'s partition of the workflow's vocabulary table (latest version)."""
    table = spark.read.format("delta").load(f"{path}/{VOCABULARY_TABLE}")
    table = table.where(F.col(VOCABULARY_COLUMN) == column)
    return {r.value: (r.id, r["count"]) for r in table.collect()}


def test_extend_keeps_every_id_and_appends_new_values(spark, tmp_path):
    day0 = spark.createDataFrame([(v,) for v in "aaabbc"], "c string")
    day1 = spark.createDataFrame([(v,) for v in "zzzyyyyxbbw"], "c string")
    path = str(tmp_path / "wf")
    workflow = Workflow([["c"] >> Categorify(freq_threshold=2)]).fit(day0)
    workflow.save(path)
    assert _vocabulary(spark, path, "c") == {"a": (1, 3), "b": (2, 2)}

    Workflow.load(path).extend(day1, path)
    after = _vocabulary(spark, path, "c")
    # Known ids unchanged (b's count grows); y (4) and z (3) pass the threshold and follow the last id;
    # x and w (once each) stay out.
    assert after == {"a": (1, 3), "b": (2, 4), "y": (3, 4), "z": (4, 3)}
    history = DeltaTable.forPath(spark, f"{path}/{VOCABULARY_TABLE}").history(1).first()
    assert history["operation"] == "MERGE"

    extended = Workflow.load(path)
    out = extended.transform(spark.createDataFrame([("a",), ("y",), ("z",), ("x",)], "c string"))
    assert [r.c for r in out.collect()] == [1, 3, 4, 0]


def test_num_buckets_hash_rare_and_unseen_values_before_the_vocabulary_ids(spark, frame, tmp_path):
    path = str(tmp_path / "wf")
    workflow = Workflow([["c"] >> Categorify(freq_threshold=2, num_buckets=3), "row"]).fit(frame)
    workflow.save(path)
    assert workflow.schema["c"].cardinality == 6  # 0, buckets 1-3, a and b
    later = spark.createDataFrame([(1, "a"), (2, "b"), (3, "c"), (4, "zzz"), (5, None)], "row int, c string")
    out = {r.row: r.c for r in Workflow.load(path).transform(later).collect()}
    buckets = spark.sql(
        "SELECT CAST(pmod(xxhash64('c'), 3) AS INT) + 1 AS c, CAST(pmod(xxhash64('zzz'), 3) AS INT) + 1 AS z"
    ).first()
    assert out == {1: 4, 2: 5, 3: buckets.c, 4: buckets.z, 5: 0}
    # A value that reaches the threshold later follows the last id; the buckets stay where they are.
    Workflow.load(path).extend(spark.createDataFrame([(9, v) for v in "qqqa"], "row int, c string"), path)
    extended = Workflow.load(path)
    assert extended.schema["c"].cardinality == 7
    assert [r.c for r in extended.transform(later.where("row <= 2")).orderBy("row").collect()] == [4, 5]
    with pytest.raises(InputError, match="num_buckets"):
        Categorify(vocabulary_of="c", num_buckets=2)


def test_vocabularies_above_the_broadcast_limit_join_by_shuffle_with_the_same_ids(spark, tmp_path):
    tags = ["p", "q", "r", "s"]
    rows = [(i, "abcdef"[i % 6] if i % 7 else None, "xyz"[i % 3], tags[: i % 5]) for i in range(60)]
    fitted = spark.createDataFrame(rows, "row int, c string, d string, tags array<string>")
    graph = [
        ["c"] >> Categorify(num_buckets=2),
        ["d"] >> Categorify(),
        ["tags"] >> ListCategorify(max_length=3),
        "row",
    ]
    Workflow(graph).fit(fitted).save(str(tmp_path / "wf"))
    workflow = Workflow.load(str(tmp_path / "wf"))
    assert [workflow.schema[c].cardinality for c in ("c", "d", "tags")] == [9, 4, 5]
    unseen = [(100, "new", "w", ["p", "new"]), (101, None, None, None)]
    later = fitted.unionByName(spark.createDataFrame(unseen, fitted.schema))

    def transformed(broadcast_max_values: int) -> tuple[list, set[tuple[str, str]]]:
        """The rows, and each vocabulary lookup's join as run: (join, the vocabulary's key column)."""
        with session_conf(spark, {BROADCAST_MAX_VALUES: str(broadcast_max_values)}):
            out = workflow.transform(later).orderBy("row")
        rows = out.collect()
        final = out._jdf.queryExecution().executedPlan().toString().split("== Initial Plan ==")[0]
        joins = re.findall(r"(\w+HashJoin) \[\w+#\d+L?\], \[(\w+)#", final)
        return rows, {(join, key) for join, key in joins if key != "_row"}

    broadcast, joins = transformed(DEFAULT_BROADCAST_MAX_VALUES)
    assert joins == {("BroadcastHashJoin", k) for k in ("c__value", "d__value", "_value")}
    # Per column, from its vocabulary's values: d (3) broadcast, c (6, and 2 buckets) and tags (4)
    # shuffled.
    mixed, joins = transformed(3)
    expected = {("ShuffledHashJoin", "c__value"), ("BroadcastHashJoin", "d__value")}
    assert joins == expected | {("ShuffledHashJoin", "_value")}
    shuffled, joins = transformed(0)
    assert joins == {("ShuffledHashJoin", k) for k in ("c__value", "d__value", "_value")}
    assert broadcast == mixed == shuffled
    new, missing = broadcast[-2:]
    assert new.c in (1, 2) and new.d == 0 and new.tags == [1, 0]  # p is the most frequent tag
    assert (missing.c, missing.d, missing.tags) == (0, 0, None)


def test_an_ops_small_vocabularies_share_one_broadcast_with_the_same_ids(spark, tmp_path):
    rows = [(i, "abc"[i % 3], "xy"[i % 2], None if i % 5 == 0 else "pq"[i % 2]) for i in range(30)]
    fitted = spark.createDataFrame(rows, "row int, a string, b string, c string")
    Workflow([["a", "b", "c"] >> Categorify(), "row"]).fit(fitted).save(str(tmp_path / "wf"))
    unseen = spark.createDataFrame([(100, "z", "x", "q")], fitted.schema)
    out = Workflow.load(str(tmp_path / "wf")).transform(fitted.unionByName(unseen)).orderBy("row")
    ids = {r.row: (r.a, r.b, r.c) for r in out.collect()}
    # Ids by descending count, ties by value; 0 for missing and unseen values.
    assert ids[0] == (1, 1, 0) and ids[7] == (2, 2, 2) and ids[8] == (3, 1, 1) and ids[100] == (0, 1, 2)
    final = out._jdf.queryExecution().executedPlan().toString().split("== Initial Plan ==")[0]
    assert final.count("ReusedExchange") == 2  # the three lookups probe one broadcast


def test_workflow_runs_and_persists_as_a_spark_ml_pipeline(spark, frame, tmp_path):
    graph = [["n"] >> FillMissing(0) >> Normalize(), ["c", "d"] >> Categorify(), "row"]
    pipeline = Pipeline(stages=[WorkflowEstimator(Workflow(graph))])
    model = pipeline.fit(frame)
    expected = Workflow(graph).fit(frame).transform(frame).orderBy("row").collect()
    assert model.transform(frame).orderBy("row").collect() == expected

    model.write().overwrite().save(str(tmp_path / "model"))
    assert PipelineModel.load(str(tmp_path / "model")).transform(frame).orderBy("row").collect() == expected
    pipeline.write().overwrite().save(str(tmp_path / "pipeline"))
    refit = Pipeline.load(str(tmp_path / "pipeline")).fit(frame)
    assert refit.transform(frame).orderBy("row").collect() == expected


def test_target_encoding_is_out_of_fold_for_fitted_rows_and_smoothed(spark):
    rows = [("f", i, "abc"[i % 3] if i < 30 else "solo", int(i % 3 == 0 or i == 30)) for i in range(31)]
    frame = spark.createDataFrame(rows, "source_file string, line_number int, c string, label int")
    encoding = TargetEncoding(folds=3, smoothing=2.0)
    workflow = Workflow([["c"] >> encoding, "line_number"]).fit(frame)
    out = {r.line_number: r.TE_c for r in workflow.transform(frame, fitted_rows=F.lit(True)).collect()}

    data = frame.withColumn("fold", F.pmod(F.xxhash64("source_file", "line_number"), F.lit(3))).toPandas()
    prior = data["label"].mean()
    for _, row in data.iterrows():
        others = data[(data["c"] == row["c"]) & (data["fold"] != row["fold"])]
        expected = (others["label"].sum() + 2.0 * prior) / (len(others) + 2.0)
        assert out[row["line_number"]] == pytest.approx(expected, abs=1e-6)
    assert out[30] == pytest.approx(prior, abs=1e-6), "a value's only row never sees its own label"

    serving = spark.createDataFrame([("a",), ("zzz",)], "c string")
    served = [r.TE_c for r in Workflow([["c"] >> encoding]).fit(frame).transform(serving).collect()]
    a = data[data["c"] == "a"]
    assert served == pytest.approx([(a["label"].sum() + 2.0 * prior) / (len(a) + 2.0), prior], abs=1e-6)


def test_list_categorify_maps_arrays_in_order_and_truncates(spark, tmp_path):
    rows = [(1, ["a", "b", "c"]), (2, ["b", "a", "a", "zz"]), (3, []), (4, None), (5, ["b", "q"])]
    frame = spark.createDataFrame(rows, "row int, tags array<string>")
    workflow = Workflow([["tags"] >> ListCategorify(max_length=3, freq_threshold=2), "row"]).fit(frame)
    workflow.save(str(tmp_path / "wf"))
    out = {r.row: r.tags for r in Workflow.load(str(tmp_path / "wf")).transform(frame).collect()}
    # a: 3, b: 3 -> ids 1, 2 (tie broken by value); c, zz, q are rare -> 0.
    assert out == {1: [1, 2, 0], 2: [2, 1, 1], 3: [], 4: None, 5: [2, 0]}
    # Rows with bronze's row keys come back to their lists by those keys (a shuffle upstream cannot
    # move them), not by numbers monotonically_increasing_id gives each side of a join.
    keyed = frame.selectExpr(
        "1 AS day", "'day_1/a.tsv' AS source_file", "CAST(row AS BIGINT) AS line_number", "*"
    )
    keyed = keyed.repartition(3, "line_number")
    transformed = Workflow.load(str(tmp_path / "wf")).transform(keyed)
    assert "monotonically_increasing_id" not in transformed._jdf.queryExecution().analyzed().toString()
    assert {r.row: r.tags for r in transformed.collect()} == out


def test_the_schema_is_computed_from_the_graph_for_every_op(spark, tmp_path):
    rows = [("f", i, f"u{i % 4}", "ab"[i % 2], 1.5 * i, ["x", "y", "x"][: i % 4], i % 2) for i in range(40)]
    frame = spark.createDataFrame(
        rows,
        "source_file string, line_number int, user string, cat string, price double, "
        "recent array<string>, label int",
    )
    graph = [
        ["user", "cat"] >> Cross(buckets=10),
        ["user"] >> TargetEncoding(),
        ["cat"] >> HashBucket(buckets=7),
        ["user"] >> Categorify(),
        ["recent"] >> ListCategorify(max_length=2),
        ["price"] >> FillMissing(0) >> Clip(min=0) >> LogOp() >> Normalize(),
        "label",
    ]
    workflow = Workflow(graph).fit(frame)
    schema = workflow.schema
    assert schema.names == workflow.output_columns()
    assert schema.names == ["user_x_cat", "TE_user", "cat", "user", "recent", "price", "label"]
    assert schema.categorical.names == ["user_x_cat", "cat", "user"]
    assert schema.continuous.names == ["TE_user", "price"] and schema.label.name == "label"
    assert schema.lists.names == ["recent"] and schema["recent"].max_length == 2
    assert schema["recent"].dtype == "list<int32>" and schema["user"].dtype == "int32"
    assert (schema["user_x_cat"].cardinality, schema["cat"].cardinality) == (11, 8)
    assert (schema["user"].cardinality, schema["recent"].cardinality) == (5, 3)
    # The types the features table stores agree with the schema.
    out = workflow.transform(frame)
    assert dict(out.dtypes)["recent"] == "array<int>"
    assert out.agg(F.max("user")).first()[0] == schema["user"].cardinality - 1

    workflow.save(str(tmp_path / "wf"))
    saved = Workflow.load_schema(str(tmp_path / "wf"), spark)
    assert saved.names == schema.names and saved["user"].vocabulary.version == 0
    assert saved["user"].vocabulary == VocabularyPin(VOCABULARY_TABLE, 0, "user")


def test_a_loaded_workflow_reads_its_vocabularies_at_the_pinned_versions(spark, tmp_path):
    day0 = spark.createDataFrame([(v,) for v in "aabb"], "c string")
    path = str(tmp_path / "wf")
    Workflow([["c"] >> Categorify()]).fit(day0).save(path)
    first_schema = Workflow.load_schema(path, spark)
    extended = Workflow.load(path).extend(spark.createDataFrame([("z",)], "c string"), path)
    assert extended.schema["c"].cardinality == 4 and extended.schema["c"].vocabulary.version == 1
    assert Workflow.versions(path, spark) == [1, 2]
    assert Workflow.load_schema(path, spark, version=1) == first_schema
    assert Workflow.version_of(path, first_schema, spark) == 1
    assert Workflow.version_of(path, extended.schema, spark) == 2
    # Version 1 still reads version 0 of the (since extended) vocabulary, by number or by a model's schema.
    rows = spark.createDataFrame([("a",), ("z",)], "c string")
    for first in (Workflow.load(path, version=1), Workflow.load(path, pinned_to=first_schema)):
        assert first.schema == first_schema and [r.c for r in first.transform(rows).collect()] == [1, 0]
    assert [r.c for r in Workflow.load(path).transform(rows).collect()] == [1, 3]
    with pytest.raises(InputError, match="older version"):
        Workflow.load(path, version=1).extend(rows, path)


def test_extend_rerun_after_a_failure_counts_the_new_day_once(spark, tmp_path):
    """A failed extend that merged a vocabulary but wrote no schema is undone by the rerun."""
    path = str(tmp_path / "wf")
    Workflow([["c"] >> Categorify()]).fit(spark.createDataFrame([(v,) for v in "aab"], "c string")).save(path)
    day1 = spark.createDataFrame([(v,) for v in "abz"], "c string")
    loaded = Workflow.load(path)
    updates, _ = loaded.nodes[0].ops[0].vocabulary_updates(day1, ["c"], loaded.state(0, 0))
    merge_vocabularies(spark, [updates], ["c"], path)  # the MERGE of an extend that then died
    updates.unpersist()
    assert _vocabulary(spark, path, "c") == {"a": (1, 3), "b": (2, 2), "z": (3, 1)}
    assert Workflow.version_extended_by(path, {"day": 1}, spark) is None
    Workflow.load(path).extend(day1, path, source={"day": 1})
    assert _vocabulary(spark, path, "c") == {"a": (1, 3), "b": (2, 2), "z": (3, 1)}
    assert Workflow.versions(path, spark) == [1, 2]
    assert Workflow.version_extended_by(path, {"day": 1}, spark) == 2


def test_every_vocabulary_lies_in_one_table_written_once_per_fit_and_merged_once_per_extend(spark, tmp_path):
    """Two Categorify ops and a list that takes one's vocabulary: one Delta table partitioned by
    column, one commit for the fit and one MERGE for an extend, every column pinned to its version."""
    schema = "c string, d string, l array<string>"
    day0 = spark.createDataFrame([("a", "x", ["a", "q"]), ("a", "y", None), ("b", "x", [])], schema)
    graph = [
        ["c"] >> Categorify(),
        ["d"] >> Categorify(freq_threshold=2),
        ["l"] >> ListCategorify(max_length=2, vocabulary_of="c"),
    ]
    path = str(tmp_path / "wf")
    Workflow(graph).fit(day0).save(path)
    table = DeltaTable.forPath(spark, f"{path}/{VOCABULARY_TABLE}")
    assert table.history().count() == 1
    assert table.detail().first()["partitionColumns"] == [VOCABULARY_COLUMN]
    assert _vocabulary(spark, path, "c") == {"a": (1, 2), "b": (2, 1)}
    assert _vocabulary(spark, path, "d") == {"x": (1, 2)}

    day1 = spark.createDataFrame([("z", "y", ["z", "b"]), ("z", "y", None)], schema)
    extended = Workflow.load(path).extend(day1, path)
    assert table.history().count() == 2 and table.history(1).first()["operation"] == "MERGE"
    assert {c.name: c.vocabulary for c in extended.schema} == {
        "c": VocabularyPin(VOCABULARY_TABLE, 1, "c"),
        "d": VocabularyPin(VOCABULARY_TABLE, 1, "d"),
        "l": VocabularyPin(VOCABULARY_TABLE, 1, "c"),
    }
    assert _vocabulary(spark, path, "c") == {"a": (1, 2), "b": (2, 1), "z": (3, 2)}
    assert _vocabulary(spark, path, "d") == {"x": (1, 2), "y": (2, 2)}  # y reaches 2 in day 1 alone
    for workflow in (extended, Workflow.load(path)):
        out = workflow.transform(day1).collect()
        assert [(r.c, r.d, r.l) for r in out] == [(3, 2, [3, 2]), (3, 2, None)]


def _rewrite(file: Path, document: dict) -> None:
    """Rewrites a JSON file Hadoop wrote, and drops its checksum file (now stale)."""
    file.write_text(json.dumps(document))
    (file.parent / f".{file.name}.crc").unlink(missing_ok=True)


def test_a_workflow_saved_with_a_table_per_column_loads_and_its_extend_moves_them_into_one(spark, tmp_path):
    path = tmp_path / "wf"
    Workflow([["c"] >> Categorify()]).fit(spark.createDataFrame([(v,) for v in "aab"], "c string")).save(
        str(path)
    )
    # Rewritten as workflows were saved before: vocab/<column> tables, pinned by their location.
    own_table = f"{LEGACY_VOCABULARY_FOLDER}/c"
    vocab = spark.read.format("delta").load(str(path / VOCABULARY_TABLE))
    vocab.where(F.col(VOCABULARY_COLUMN) == "c").drop(VOCABULARY_COLUMN).write.format("delta").save(
        str(path / own_table)
    )
    shutil.rmtree(path / VOCABULARY_TABLE)
    document = json.loads((path / WORKFLOW_FILE).read_text())
    document["nodes"][0]["ops"][0]["state"] = {"tables": {"c": own_table}}
    _rewrite(path / WORKFLOW_FILE, document)
    for schema_file in (path / SCHEMA_FILE, path / VERSIONS_FOLDER / "1" / SCHEMA_FILE):
        saved = json.loads(schema_file.read_text())
        saved["columns"][0]["vocabulary"] = {"table": own_table, "version": 0}
        _rewrite(schema_file, saved)
    legacy = Workflow.load_schema(str(path), spark)
    assert legacy["c"].vocabulary == VocabularyPin(own_table, 0)
    copy = str(tmp_path / "copy")  # saved again: the one table, and transform still sized by the pins
    Workflow.load(str(path)).save(copy)
    assert Workflow.load_schema(copy, spark)["c"].vocabulary == VocabularyPin(VOCABULARY_TABLE, 0, "c")
    assert _vocabulary(spark, copy, "c") == {"a": (1, 2), "b": (2, 1)}

    rows = spark.createDataFrame([("a",), ("b",), ("z",)], "c string")
    assert [r.c for r in Workflow.load(str(path)).transform(rows).collect()] == [1, 2, 0]
    Workflow.load(str(path)).extend(spark.createDataFrame([("z",)], "c string"), str(path))
    assert Workflow.load_schema(str(path), spark)["c"].vocabulary == VocabularyPin(VOCABULARY_TABLE, 1, "c")
    assert _vocabulary(spark, str(path), "c") == {"a": (1, 2), "b": (2, 1), "z": (3, 1)}
    assert [r.c for r in Workflow.load(str(path)).transform(rows).collect()] == [1, 2, 3]
    version_1 = Workflow.load(str(path), version=1)  # still the table per column, at its pinned version
    assert version_1.schema == legacy and [r.c for r in version_1.transform(rows).collect()] == [1, 2, 0]


def test_a_column_fitted_by_two_categorify_ops_is_refused():
    with pytest.raises(InputError, match=r"columns \['c'\] are each fitted by two Categorify ops"):
        Workflow([["c", "d"] >> Categorify(), ["c"] >> Categorify(freq_threshold=2)])


def test_a_workflow_saved_before_versions_were_kept_is_version_1(spark, tmp_path):
    path = str(tmp_path / "wf")
    Workflow([["c"] >> Categorify()]).fit(spark.createDataFrame([(v,) for v in "aab"], "c string")).save(path)
    shutil.rmtree(tmp_path / "wf" / "versions")  # as a folder written before this layout
    first = Workflow.load_schema(path, spark)
    assert Workflow.versions(path, spark) == [1] and Workflow.version_of(path, first, spark) == 1
    assert Workflow.load(path, pinned_to=first).schema == first
    Workflow.load(path).extend(spark.createDataFrame([("z",)], "c string"), path)
    assert Workflow.versions(path, spark) == [1, 2] and Workflow.load_schema(path, spark, 1) == first
