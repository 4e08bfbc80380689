"""Serving's preprocessing generated from any workflow and its schema (serving/preprocess.py exports it,
serving/preprocessor.py runs it, no Triton): Spark's transform and the polars preprocessor on the same
raw rows of a small click log with string, float, int, long and array<string> columns, through every op."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import functions as F

from rec_plugin.dataset import RawColumn
from rec_plugin.errors import InputError
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
from rec_plugin.schema import ColumnSchema, Schema, Tags
from rec_plugin.workflow import Workflow
from serving.preprocess import export_preprocess
from serving.preprocessor import Preprocessor, RawSpec, RawTokens, dense_counts, refuse_bad_tokens
from serving.preprocessor import RawColumn as ServedColumn
from serving.tokens import token_bytes, xxhash64

ROWS = 600
# Tokens of the fixed width that input_schema(8) declares (ingest holds a column to its token_width).
WIDTH_8 = ["aaaaaaaa", "bbbbbbbb", "c0ffee00", "deadbeef", "77777777", "zzzzzzzz", "q1q1q1q1", "x9yx9yx9"]
ANY = ["a", "été", "x" * 40, "spam and eggs, a long-ish token", "日本", "b", "c d", "0" * 33, "7", "ü"]


def input_schema(width: int | None) -> Schema:
    strings = ("s", "t", "u")
    return Schema(
        (
            ColumnSchema("label", "int32", (Tags.LABEL,)),
            ColumnSchema("f", "float64", (Tags.CONTINUOUS,)),
            ColumnSchema("n", "int32", (Tags.CONTINUOUS,)),
            ColumnSchema("l", "int64", (Tags.CATEGORICAL,)),
            ColumnSchema("ts", "int64", ()),
            ColumnSchema("n_cat", "int32", (Tags.CATEGORICAL,)),
            *(ColumnSchema(c, "string", (Tags.CATEGORICAL,), token_width=width) for c in strings),
            ColumnSchema("tags", "list<string>", (Tags.CATEGORICAL, Tags.LIST)),
        )
    )


def raw_rows(seed: int, tokens: list[str], rows: int = ROWS) -> pd.DataFrame:
    """Bronze-like rows: nulls in every column, negative and fractional floats, empty and null lists."""
    rng = np.random.default_rng(seed)

    def pick(values: list, missing: float = 0.1) -> list:
        drawn = [values[i] for i in rng.zipf(1.6, rows) % len(values)]
        return [None if rng.random() < missing else v for v in drawn]

    tags = []
    for _ in range(rows):
        r = rng.random()
        if r < 0.08:
            tags.append(None)
        elif r < 0.15:
            tags.append([])
        else:
            drawn = pick(tokens, 0.05)[: rng.integers(1, 6)]
            tags.append(drawn)
    return pd.DataFrame(
        {
            "label": rng.integers(0, 2, rows).astype(np.int32),
            "f": [None if rng.random() < 0.1 else float(v) for v in rng.normal(3, 4, rows)],
            "n": pd.Series(
                [None if rng.random() < 0.1 else int(v) for v in rng.integers(-5, 5000, rows)], dtype=object
            ),
            "l": pd.Series(
                [None if rng.random() < 0.1 else int(v) for v in rng.integers(-(2**53), 2**53, rows)],
                dtype=object,
            ),
            # Epoch seconds of 2026-2027, and a few before 1970 (negative: floor, not truncation).
            "ts": pd.Series(
                [
                    None if r < 0.1 else int(v) if r < 0.95 else -int(v) // 1000
                    for r, v in zip(rng.random(rows), rng.integers(1_767_225_600, 1_830_297_600, rows))
                ],
                dtype=object,
            ),
            "n_cat": pd.Series(
                [None if rng.random() < 0.1 else int(v) for v in rng.integers(0, 12, rows)], dtype=object
            ),
            "s": pick(tokens),
            "t": pick(tokens[::-1]),
            "u": pick(tokens),
            "tags": tags,
            "source_file": "part-0.tsv",
            "line_number": np.arange(1, rows + 1, dtype=np.int64),
        }
    )


SPARK_TYPES = (
    "label int, f double, n int, l bigint, ts bigint, n_cat int, s string, t string, u string, "
    "tags array<string>, source_file string, line_number bigint"
)


def every_op_workflow(schema: Schema) -> Workflow:
    cross = ["s", "t"] >> Cross(buckets=97)
    int_cross = ["n_cat", "t"] >> Cross(buckets=31)
    hashed = ["t", "l"] >> HashBucket(buckets=50)
    encoded = ["u", "s"] >> TargetEncoding(target="label", folds=3, smoothing=10.0)
    categories = ["n_cat"] >> Categorify(freq_threshold=2)
    bucketed = ["s"] >> Categorify(freq_threshold=2, num_buckets=5)
    tags = ["tags"] >> ListCategorify(max_length=3, freq_threshold=2)
    continuous = ["f", "n"] >> FillMissing(0) >> Clip(min=0) >> LogOp() >> Normalize()
    # Before `hashed`, which rewrites l in place.
    times = (["ts"] >> DatePart("hour")) + (["ts"] >> DatePart("weekday")) + (["l"] >> DatePart("hour", "ms"))
    return Workflow(
        times + cross + int_cross + hashed + encoded + categories + bucketed + tags + continuous + ["label"],
        schema,
    )


# The raw type (rec_plugin/dataset.py's RAW_TYPES) of each input schema dtype.
RAW_TYPE = {
    "int32": "int",
    "int64": "long",
    "float64": "float",
    "string": "string",
    "list<string>": "list<string>",
}


def every_op_dataset(width: int | None) -> dict:
    """every_op_workflow over input_schema(width) as a dataset definition (conf/datasets/<name>.json's
    form): what featurize fits when given its path."""
    schema = input_schema(width)
    workflow = every_op_workflow(schema)
    columns = []
    for c in schema:
        column = {"name": c.name, "type": RAW_TYPE[c.dtype], "tags": list(c.tags)}
        column.update({"token_width": c.token_width} if c.token_width else {})
        column.update({"list_separator": "|"} if c.is_list else {})
        columns.append(column)
    nodes = [
        {"columns": list(n.columns), "ops": [{"op": type(op).__name__, "params": op.params} for op in n.ops]}
        for n in workflow.nodes
    ]
    return {
        "name": "every_op",
        "format": "tsv",
        "file_patterns": ["*.tsv"],
        "columns": columns,
        "workflow": {"nodes": nodes, "passthrough": workflow.passthrough},
    }


def records(rows: pd.DataFrame) -> list[dict]:
    """Rows as dicts for spark.createDataFrame, a missing float None (pandas holds it as NaN)."""
    return [
        {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in row.items()}
        for row in rows.to_dict("records")
    ]


def _frame(spark, rows: pd.DataFrame):  # noqa: ANN001, ANN202
    return spark.createDataFrame(records(rows), SPARK_TYPES)


@pytest.mark.parametrize("width", [8, None], ids=["fixed-width tokens", "tokens of any length"])
def test_the_preprocessor_equals_sparks_transform_through_every_op(spark, tmp_path, width):
    tokens = WIDTH_8 if width else ANY
    fit_rows = _frame(spark, raw_rows(0, tokens))
    workflow = every_op_workflow(input_schema(width)).fit(fit_rows)
    workflow.save(str(tmp_path / "workflow"))
    workflow.release()
    served = export_preprocess(spark, str(tmp_path / "workflow"), tmp_path / "preprocess")
    preprocess = Preprocessor(served.parent)
    assert preprocess.spec.token_width == width
    assert [c.name for c in preprocess.spec.continuous] == ["f", "n", "l", "ts", "n_cat"]
    # Other rows than the fitted ones: unseen tokens, and every row encoded with all folds.
    raw = raw_rows(1, tokens + ["unseen00"])
    keys = ("line_number",)
    by_spark = (
        Workflow.load(str(tmp_path / "workflow"), spark)
        .transform(_frame(spark, raw), keep=keys)
        .toPandas()
        .sort_values("line_number")
        .reset_index(drop=True)
    )
    batch = preprocess.spec.batch(raw)
    features = preprocess(*batch)
    # The same through the Triton tensors (what a client sends and the python backend reads).
    again = preprocess(*preprocess.spec.decode(preprocess.spec.encode(batch)))
    schema = workflow.schema
    assert preprocess.names["continuous"] == schema.continuous.names
    assert preprocess.names["categorical"] == schema.categorical.names
    assert preprocess.names["lists"] == schema.lists.names == ["tags"]
    assert {"TE_u", "TE_s", "f", "n"} == set(schema.continuous.names)
    assert {"s_x_t", "n_cat_x_t", "t", "l", "s", "n_cat", "ts_hour", "ts_weekday", "l_hour"} == set(
        schema.categorical.names
    )
    # Hour and weekday ids as Python's UTC calendar gives them (0: no time).
    times = [None if s is None else datetime.fromtimestamp(s, UTC) for s in raw["ts"]]
    for part, of in (("ts_hour", lambda t: t.hour + 1), ("ts_weekday", lambda t: t.weekday() + 1)):
        ids = by_spark.sort_values("line_number")[part].to_numpy()
        np.testing.assert_array_equal(ids, [0 if t is None else of(t) for t in times])
    expected_dense = by_spark[schema.continuous.names].to_numpy(np.float32)
    expected_ids = by_spark[schema.categorical.names].to_numpy(np.int64)
    for result in (features, again):
        assert result.dense.shape == expected_dense.shape and result.ids.shape == expected_ids.shape
        assert np.abs(result.dense - expected_dense).max() <= 1e-5
        np.testing.assert_array_equal(result.ids, expected_ids)
        (values,), (offsets,) = result.list_values, result.list_offsets
        served_lists = [list(values[a:b]) for a, b in zip(offsets[:-1], offsets[1:])]
        spark_lists = [[] if v is None else [int(i) for i in v] for v in by_spark["tags"]]
        assert served_lists == spark_lists
    # Real ids, hashes and encodings, not only defaults.
    for name in ("s", "s_x_t", "n_cat_x_t", "t", "l", "n_cat", "ts_hour", "ts_weekday", "l_hour"):
        assert len(np.unique(expected_ids[:, schema.categorical.names.index(name)])) > 3, name
    assert (features.list_values[0] > 0).any() and (features.list_values[0] == 0).any()
    bucketed = expected_ids[:, schema.categorical.names.index("s")]
    assert ((bucketed >= 1) & (bucketed <= 5)).any() and (bucketed > 5).any(), "hash buckets and ids"
    te = expected_dense[:, schema.continuous.names.index("TE_u")]
    assert len(np.unique(te)) > 3


@pytest.mark.parametrize("width", [8, None], ids=["fixed-width tokens", "tokens of any length"])
def test_a_vocabulary_left_empty_by_its_threshold_serves_every_value_as_spark_does(spark, tmp_path, width):
    """Fitted on too few rows for any value to reach the threshold (the demo at 40 rows a day), a
    vocabulary is empty: every value is out of vocabulary, in serving as in Spark."""
    tokens = WIDTH_8 if width else ANY
    rare = ROWS + 1
    workflow = Workflow(
        [
            ["s"] >> Categorify(freq_threshold=rare),
            ["t"] >> Categorify(freq_threshold=rare, num_buckets=5),
            ["tags"] >> ListCategorify(max_length=3, freq_threshold=rare),
            "label",
        ],
        input_schema(width),
    ).fit(_frame(spark, raw_rows(0, tokens)))
    workflow.save(str(tmp_path / "workflow"))
    workflow.release()
    preprocess = Preprocessor(export_preprocess(spark, str(tmp_path / "workflow"), tmp_path / "out").parent)
    raw = raw_rows(1, tokens)
    by_spark = (
        Workflow.load(str(tmp_path / "workflow"), spark)
        .transform(_frame(spark, raw), keep=("line_number",))
        .toPandas()
        .sort_values("line_number")
    )
    features = preprocess(*preprocess.spec.batch(raw))
    expected = by_spark[["s", "t"]].to_numpy(np.int64)
    np.testing.assert_array_equal(features.ids, expected)
    assert (expected[:, 0] == 0).all() and (expected[:, 1] > 0).any(), "out of vocabulary: 0, or a bucket"
    (values,), (offsets,) = features.list_values, features.list_offsets
    served_lists = [list(values[a:b]) for a, b in zip(offsets[:-1], offsets[1:])]
    assert served_lists == [[] if v is None else [int(i) for i in v] for v in by_spark["tags"]]


def test_serving_refuses_what_it_cannot_serve_with_parity(spark, tmp_path):
    rows = _frame(spark, raw_rows(2, WIDTH_8, rows=100))
    schema = input_schema(None)
    unservable = Workflow([["f"] >> LogOp() >> Categorify(), "label"], schema).fit(rows)
    unservable.save(str(tmp_path / "float_categories"))
    unservable.release()
    with pytest.raises(InputError) as refused:
        export_preprocess(spark, str(tmp_path / "float_categories"), tmp_path / "out")
    message = str(refused.value)
    assert (
        message.startswith("Categorify cannot be served with parity: column 'f' is float64")
        and "\n" not in message
    )
    # A bound past 32-bit integers widens an int column to bigint in Spark, not in polars.
    wide = Workflow([["n"] >> Clip(min=0, max=2**31) >> HashBucket(10), "label"], schema).fit(rows)
    wide.save(str(tmp_path / "wide"))
    wide.release()
    with pytest.raises(
        InputError, match=r"^Clip cannot be served with parity: column 'n' is int32 and 2147483648"
    ):
        export_preprocess(spark, str(tmp_path / "wide"), tmp_path / "out_wide")
    # A backslash or quote in a text literal: Spark's SQL escapes it, polars' reads it otherwise.
    quoted = Workflow([["s"] >> FillMissing("it's") >> Categorify(), "label"], schema).fit(rows)
    quoted.save(str(tmp_path / "quoted"))
    quoted.release()
    with pytest.raises(
        InputError, match=r"^FillMissing cannot be served with parity: column 's': fill value"
    ):
        export_preprocess(spark, str(tmp_path / "quoted"), tmp_path / "out_quoted")


def test_xxhash64_is_sparks(spark):
    """Every served dtype, nulls, empty and long strings, multi-byte characters, -0.0 and NaN."""
    strings = [None, "", "a", "été", "x" * 31, "y" * 32, "z" * 33, "日本語" * 20, "68fd1e64"]
    ints = [None, 0, -1, 7, 2**31 - 1, -(2**31)]
    longs = [None, 0, -1, 2**40, 2**63 - 1, -(2**63)]
    doubles = [None, 0.0, -0.0, 1.5, float("nan"), -3e300]
    frame = spark.createDataFrame(
        [(s, i, lo, d) for s in strings for i, lo, d in zip(ints, longs, doubles)],
        "s string, i int, l bigint, d double",
    )
    hashed = frame.select(
        "*",
        F.xxhash64("s").alias("hs"),
        F.xxhash64("i").alias("hi"),
        F.xxhash64("l").alias("hl"),
        F.xxhash64("d").alias("hd"),
        F.xxhash64("s", "i").alias("hsi"),
    ).toArrow()
    arrays = {c: hashed[c].combine_chunks() for c in ("s", "i", "l", "d")}
    for column in ("s", "i", "l", "d"):
        expected = hashed[f"h{column}"].to_numpy()
        np.testing.assert_array_equal(xxhash64(arrays[column]).view(np.int64), expected, column)
    chained = xxhash64(arrays["i"], xxhash64(arrays["s"]))
    np.testing.assert_array_equal(chained.view(np.int64), hashed["hsi"].to_numpy())


def test_an_infinite_float_is_refused_as_ingest_refuses_it_and_missing_stays_null():
    columns = [RawColumn("visits", "int"), RawColumn("price", "float")]
    raw = np.array([[1.0, 2.5], [np.nan, np.nan], [3.0, -np.inf]])
    refused = r"^RAW_DENSE row 2: price = -inf is not a finite number \(FLOAT_NOT_NUMBER, as ingest"
    with pytest.raises(InputError, match=refused):
        dense_counts(raw, columns)
    served = dense_counts(raw[:2], columns)
    assert served["visits"].to_pylist() == [1, None] and served["price"].to_pylist() == [2.5, None]


def test_a_token_that_ingest_rejects_is_refused_with_its_reason_as_bytes_as_text_and_in_a_list():
    """A token of another width or outside its alphabet (ingest's CAT_BAD_LENGTH, CAT_NOT_HEX) would be
    looked up as a value never seen: in fixed-width bytes, as text or as a list's element it is refused
    in one line naming the first one; missing tokens are served."""
    hex8 = {"token_width": 8, "alphabet": "hex"}
    strings = (ServedColumn("C1", "string", **hex8), ServedColumn("C2", "string", **hex8))
    recent = ServedColumn("recent", "list<string>", 3, **hex8)
    rows = pd.DataFrame(
        {
            "C1": ["00ff00ff", None, "00ff00ff", "00ff"],
            "C2": ["0a0b0c0d", "0a0b0c0d", "0A0B0C0D", "0a0b0c0d"],
            "recent": [["0a0b0c0d"], None, ["0A0B0C0D", "0a0b0c0"], []],
        }
    )
    # (rows, the refusal, how many values it counts)
    refusals = [
        (
            [0, 1, 2],
            r"RAW_CATEGORICAL row 2: C2 = '0A0B0C0D' is outside the hex alphabet \[0-9a-f\] \(CAT_NOT_HEX",
            1,
        ),
        ([3], r"RAW_CATEGORICAL row 0: C1 = '00ff' is not 8 characters long \(CAT_BAD_LENGTH", 1),
        # A list with both: its length code first, as ingest gives it.
        ([0, 2], r"RAW_LIST_0 row 1: recent = '0a0b0c0' is not 8 characters long \(CAT_BAD_LENGTH", 2),
        ([0, 1], None, 0),
    ]
    as_text = RawSpec(categorical=strings, lists=(recent,))
    as_bytes = RawSpec(categorical=strings, token_width=8, lists=(recent,))
    for chosen, refused, count in refusals:
        frame = rows.iloc[chosen].reset_index(drop=True)
        if chosen == [0, 2]:  # the list alone
            frame["C2"] = "0a0b0c0d"
        sent = as_text.batch(frame)  # as a client of its own sends them: unchecked
        for spec, tokens in ((as_text, sent.tokens), (as_bytes, token_bytes(sent.tokens, 8))):
            if refused is None:
                refuse_bad_tokens(spec, RawTokens.of(spec, tokens, sent.lists))
                continue
            with pytest.raises(
                InputError, match=f"^{refused}, as ingest rejects it\\); {count} refused value"
            ):
                refuse_bad_tokens(spec, RawTokens.of(spec, tokens, sent.lists))
    # An export from before columns carried their width: each takes the fixed width, so is checked.
    exported = as_bytes.to_dict()
    for column in exported["categorical"]:
        del column["token_width"], column["alphabet"]
    old = RawSpec.from_dict(exported)
    assert [c.token_width for c in old.categorical] == [8, 8] and old.lists == as_bytes.lists
    cut_short = token_bytes(as_text.batch(rows.iloc[[3]].reset_index(drop=True)).tokens, 8)
    with pytest.raises(InputError, match=r"^RAW_CATEGORICAL row 0: C1 = '00ff' is not 8 characters long"):
        refuse_bad_tokens(old, RawTokens.of(old, cut_short, ()))
    # A token too long for the bytes is refused by the client's encoding (RawSpec.batch).
    with pytest.raises(
        InputError, match=r"^RAW_CATEGORICAL row 0: C2 = '0a0b0c0d0' is not 8 characters long"
    ):
        as_bytes.batch(pd.DataFrame({"C1": [None], "C2": ["0a0b0c0d0"], "recent": [None]}))


def test_a_bag_of_items_is_held_to_its_item_columns_width_and_alphabet(spark, tmp_path):
    """Mult-VAE's bag is made outside the workflow from the item column's tokens (interactions.py):
    served, its items are refused where the item column's own tokens would be, and known ones found."""
    items = ["00ff00ff", "0a0b0c0d", "deadbeef", "c0ffee00"]
    schema = Schema(tuple(replace(c, alphabet="hex") if c.name == "s" else c for c in input_schema(8)))
    path = str(tmp_path / "workflow")
    workflow = Workflow([["s"] >> Categorify(freq_threshold=1), "label"], schema).fit(
        _frame(spark, raw_rows(0, items))
    )
    workflow.save(path)
    workflow.release()
    fitted = Workflow.load_schema(path, spark)
    item = fitted["s"]
    bag = ColumnSchema(
        "bag", "list<int64>", (Tags.CATEGORICAL, Tags.LIST), cardinality=item.cardinality, max_length=3,
        vocabulary=item.vocabulary, embedding_table=item.embedding_table_name,
    )  # fmt: skip
    preprocess = Preprocessor(
        export_preprocess(spark, path, tmp_path / "out", Schema((bag, fitted.label))).parent
    )
    (served_bag,) = preprocess.spec.lists
    assert (served_bag.token_width, served_bag.alphabet, served_bag.distinct) == (8, "hex", True)
    known = preprocess(*preprocess.spec.batch(pd.DataFrame({"bag": [items[:2], ["0a0b0c0e"]]})))
    (values,), (offsets,) = known.list_values, known.list_offsets
    assert (values[:2] > 0).all() and values[2] == 0 and offsets.tolist() == [0, 2, 3]
    for sent, refused in (
        ("DEADBEEF", r"'DEADBEEF' is outside the hex alphabet \[0-9a-f\] \(CAT_NOT_HEX"),
        ("deadbee", r"'deadbee' is not 8 characters long \(CAT_BAD_LENGTH"),
    ):
        batch = preprocess.spec.batch(pd.DataFrame({"bag": [items[:1], [items[1], sent]]}))
        with pytest.raises(InputError, match=f"^RAW_LIST_0 row 1: bag = {refused}, as ingest rejects it"):
            preprocess(*batch)


def test_a_served_lists_empty_elements_are_dropped_before_its_first_max_length_as_ingest_does():
    """Ingest drops a list's null and empty elements before featurize keeps the first max_length: a
    served list must not count them (they would push its last item out), and a string is no list."""
    spec = RawSpec(lists=(ServedColumn("recent", "list<string>", 2),))
    batch = spec.batch(pd.DataFrame({"recent": [["", "a", None, "b", "c"], [], None]}))
    ((elements, lengths),) = batch.lists
    assert elements.tolist() == [["a", "b"], ["", ""], ["", ""]] and lengths.tolist() == [2, 0, 0]
    # A bag (Mult-VAE's) is a user's latest distinct items, as interactions builds it from clicks.
    bag = RawSpec(lists=(ServedColumn("bag", "list<string>", 3, distinct=True),))
    ((elements, _),) = bag.batch(pd.DataFrame({"bag": [["i1", "i1", "i2", "i1", "", "i3", "i4"]]})).lists
    assert elements.tolist() == [["i1", "i3", "i4"]]
    with pytest.raises(
        InputError, match=r"^column recent is a list: give each row a list of tokens, not 'a\|b'$"
    ):
        spec.batch(pd.DataFrame({"recent": [["a"], "a|b"]}))


def test_a_batch_without_a_raw_column_or_without_rows_is_refused_in_one_line():
    """A client's frame lacking a column ended in pandas' KeyError, an empty one in numpy's reshape."""
    spec = RawSpec((ServedColumn("price", "float64"),), lists=(ServedColumn("recent", "list<string>", 2),))
    with pytest.raises(InputError, match=r"^the rows lack the raw columns \['recent'\] that the served"):
        spec.batch(pd.DataFrame({"price": [1.0]}))
    with pytest.raises(InputError, match="^the batch has no rows: send one row or more$"):
        spec.batch(pd.DataFrame({"price": [], "recent": []}))
    assert spec.batch(pd.DataFrame({"price": [1.0], "recent": [["a"]]})).dense.tolist() == [[1.0]]


def test_a_raw_number_float64_cannot_carry_is_refused_in_one_line():
    """A long column travels in RAW_DENSE (float64): 2^53 + 1 would arrive as 2^53, another id, and a
    text is no number at all."""
    spec = RawSpec(continuous=(ServedColumn("user_id", "int64"), ServedColumn("price", "float64")))
    exact = spec.batch(pd.DataFrame({"user_id": [2**53, -(2**53), None], "price": [1.0, 2.0, 3.0]}))
    np.testing.assert_array_equal(exact.dense[:, 0], [2**53, -(2**53), np.nan])
    for ids in ([1, 2**53 + 1], pd.Series([1, -(2**60)], dtype="int64"), [None, 2**62]):
        rows = pd.DataFrame({"user_id": ids, "price": [1.0, 2.0]})
        refused = r"^RAW_DENSE: user_id = -?[\d.e+]+ is beyond 2\^53.*declare user_id a string"
        with pytest.raises(InputError, match=refused):
            spec.batch(rows)
    with pytest.raises(InputError, match=r"^RAW_DENSE: user_id = 'abc' is not a number$"):
        spec.batch(pd.DataFrame({"user_id": [1, "abc"], "price": [1.0, 2.0]}))


def test_a_column_of_pandas_datetimes_is_refused_naming_it():
    """A frame read back from parquet holds datetimes where bronze holds epoch milliseconds: they were
    refused as a value that any of the numeric columns might hold."""
    spec = RawSpec(continuous=(ServedColumn("price", "float64"), ServedColumn("event_time", "int64")))
    sent = pd.to_datetime(["2024-01-03T10:22:00.123Z", None], utc=True, format="ISO8601")
    with pytest.raises(InputError, match=r"^RAW_DENSE: event_time holds datetimes: send the number bronze"):
        spec.batch(pd.DataFrame({"price": [1.0, 2.0], "event_time": sent}))
    as_bronze = spec.batch(pd.DataFrame({"price": [1.0, 2.0], "event_time": [1_704_277_320_123, None]}))
    np.testing.assert_array_equal(as_bronze.dense[:, 1], [1_704_277_320_123, np.nan])
