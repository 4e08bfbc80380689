"""The bundled e-commerce dataset: its generator's lines are what its definition ingests, its default
workflow makes list, cross and target-encoded features, and its planted truth is more than first order."""

from __future__ import annotations

from pathlib import Path

import pytest
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, DoubleType, IntegerType, StringType

from rec_plugin.dataset import DEFAULT_DATASET, load_dataset
from rec_plugin.errors import InputError
from rec_plugin.schema import Tags
from spark_jobs import ingest as ing
from spark_jobs.generate_ecommerce import EcommerceConfig, EcommerceModel, generate_ecommerce
from spark_jobs.layout import GeneratedData

ECOMMERCE = load_dataset("ecommerce")
SMALL = EcommerceConfig(days=2, rows_per_day=5_000, users=500, items=300)
BAD_FILE = "hand-written.tsv"


def line(**changes: str) -> str:
    good = dict(zip(ECOMMERCE.names, ["1", "u1", "i2", "c3", "b4", "12.5", "7", "mobile", "i5|i6"]))
    good.update(changes)
    return "\t".join(good.values())


# (line, the reason code it must get, the field it must name); None = accepted.
CASES = [
    (line(), None, None),
    (line(price="", recent_items=""), None, None),
    (line(price="-3e2", recent_items="i9|"), None, None),
    (line(price="abc"), ing.FLOAT_NOT_NUMBER, "price"),
    (line(price="nan"), ing.FLOAT_NOT_NUMBER, "price"),
    (line(price="1e999"), ing.FLOAT_NOT_NUMBER, "price"),
    (line(hour="7.5"), ing.INT_NOT_INTEGER, "hour"),
    (line(click="yes"), ing.BAD_LABEL, "click"),
    (line() + "\textra", ing.FIELD_COUNT, None),
    ("\t".join(line().split("\t")[:-1]), ing.FIELD_COUNT, None),
]


@pytest.fixture(scope="module")
def shop(spark, tmp_path_factory) -> tuple[Path, dict, str, dict]:
    """SMALL generated, a file of CASES added to its day 1, all ingested: the folder, the generate report,
    the bronze path and the ingest report."""
    root = tmp_path_factory.mktemp("shop")
    report = generate_ecommerce(spark, str(root), SMALL)
    (root / "raw" / "day_1" / BAD_FILE).write_text("\n".join(text for text, _, _ in CASES) + "\n")
    bronze = str(root / "lake" / "bronze")
    ingested = ing.ingest(
        spark, str(root / "raw"), bronze, str(root / "lake" / "rejects"), dataset="ecommerce"
    )
    return root, report, bronze, ingested


def test_every_generated_line_is_ingested_typed(spark, shop):
    root, report, bronze, ingested = shop
    assert sorted(p.relative_to(root / "raw").as_posix() for p in (root / "raw").rglob("part-*")) == [
        "day_0/part-00000.tsv",
        "day_0/part-00001.tsv",
        "day_1/part-00000.tsv",
        "day_1/part-00001.tsv",
    ]
    assert report["rows"] == 10_000 and ingested["dataset"] == "ecommerce"
    assert ingested["lines_read"] == report["rows"] + len(CASES)
    generated = spark.read.format("delta").load(bronze).where(F.col("source_file") != f"day_1/{BAD_FILE}")
    assert generated.count() == report["rows"], "every generated line is accepted"
    types = {f.name: f.dataType for f in generated.schema.fields}
    assert types["recent_items"] == ArrayType(StringType(), True)
    assert (types["price"], types["click"], types["hour"]) == (DoubleType(), IntegerType(), IntegerType())
    stats = generated.select(
        F.avg(F.col("price").isNull().cast("int")).alias("price_missing"),
        F.avg(F.col("recent_items").isNull().cast("int")).alias("no_history"),
        F.max(F.size("recent_items")).alias("longest"),
        F.min(F.size("recent_items")).alias("shortest"),
        F.avg("click").alias("rate"),
    ).first()
    assert 0.03 < stats.price_missing < 0.08, "about 5% of prices are missing"
    assert 0.02 < stats.no_history < 0.1, "an empty list field is a null list"
    assert (stats.shortest, stats.longest) == (1, SMALL.history_length)
    assert 0.1 < stats.rate < 0.2
    # Drift: users born after day 0 show up on day 1 only.
    newcomer = F.regexp_extract("user_id", "u([0-9]+)", 1).cast("int") >= SMALL.users
    per_day = dict(generated.where(newcomer).groupBy("day").count().collect())
    assert 0 not in per_day and 0 < per_day[1] < 0.05 * SMALL.rows_per_day
    # A user's recent items are one list all day.
    lists = generated.groupBy("day", "user_id").agg(F.countDistinct("recent_items").alias("lists"))
    assert lists.where("lists > 1").count() == 0
    # The oracle is keyed by line and holds each line's drawn click.
    oracle = spark.read.format("delta").load(str(root / "oracle"))
    assert set(oracle.columns) == {"day", "source_file", "line_number", "label", "p_click", "p_first_order"}
    joined = generated.join(oracle, ["day", "source_file", "line_number"])
    assert joined.count() == 10_000 and joined.where(F.col("click") != F.col("label")).count() == 0
    model = EcommerceModel.from_json(Path(GeneratedData(str(root)).planted_model).read_text())
    assert model.users == SMALL.users and model.term_scales is not None


def test_the_planted_truth_is_more_than_first_order(shop):
    _, report, _, _ = shop
    assert report["oracle_auc"] - report["first_order_auc"] > 0.05, report
    assert 0.12 < report["positive_rate"] < 0.18


def test_default_workflow_makes_list_cross_and_target_encoded_features(spark, shop):
    _, _, bronze, _ = shop
    workflow = ECOMMERCE.default_workflow().fit(spark.read.format("delta").load(bronze).where("day = 0"))
    schema = workflow.schema
    try:
        recent = schema["recent_items"]
        assert recent.is_list and recent.has(Tags.LIST) and recent.max_length == 20
        assert schema.lists.names == ["recent_items"]
        assert schema["category_x_device"].cardinality == 1001
        assert schema["TE_item_id"].has(Tags.CONTINUOUS) and "TE_item_id" in schema.continuous.names
        assert schema["user_id"].has(Tags.USER_ID) and schema["item_id"].has(Tags.ITEM_ID)
        assert schema["hour"].cardinality == 25 and schema["device"].cardinality == 5
        assert schema.label.name == "click"
        assert set(schema.continuous.names) == {"TE_item_id", "price"}
    finally:
        workflow.release()


def test_malformed_lines_are_rejected_with_their_reason(spark, shop):
    root, _, bronze, ingested = shop
    expected = {n + 1: (reason, field) for n, (_, reason, field) in enumerate(CASES) if reason}
    assert ingested["rejected"] == len(expected)
    rejects = spark.read.format("delta").load(str(root / "lake" / "rejects")).collect()
    assert {r.source_file for r in rejects} == {f"day_1/{BAD_FILE}"}
    assert {r.line_number: (r.reason, r.reason_field) for r in rejects} == expected
    ours = spark.read.format("delta").load(bronze).where(F.col("source_file") == f"day_1/{BAD_FILE}")
    rows = {r.line_number: r for r in ours.collect()}
    assert sorted(rows) == [n + 1 for n, (_, reason, _) in enumerate(CASES) if reason is None]
    assert (rows[1].price, rows[1].recent_items, rows[1].hour) == (12.5, ["i5", "i6"], 7)
    assert rows[2].price is None and rows[2].recent_items is None
    assert (rows[3].price, rows[3].recent_items) == (-300.0, ["i9"])
    # A table of another dataset's columns is refused before any work, naming the one it holds; a
    # rerun without --dataset takes that one.
    with pytest.raises(
        InputError,
        match="other columns than a bronze table of dataset 'criteo': it was ingested as ecommerce: give "
        "--dataset ecommerce or choose another path",
    ):
        ing.ingest(spark, str(root / "raw"), bronze, str(root / "lake" / "rejects"), dataset="criteo")
    assert ing.dataset_to_ingest(spark, bronze, None) == "ecommerce"
    assert ing.dataset_to_ingest(spark, bronze, "criteo") == "criteo"
    assert ing.dataset_to_ingest(spark, str(root / "lake" / "new"), None) == DEFAULT_DATASET


@pytest.mark.parametrize(
    "bad", [dict(rows_per_day=1001, files_per_day=2), dict(latent_dim=9), dict(categories=400, items=300)]
)
def test_bad_config_is_a_clear_error(bad):
    with pytest.raises(ValueError):
        EcommerceConfig(**bad)
