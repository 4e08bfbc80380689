"""Declared shared embedding tables (issue #12): a list of recent items takes item_id's vocabulary
(ListCategorify(vocabulary_of="item_id")), so one id means one item in both columns, the schema names
one embedding table for both, every model trains with it, and serving maps the list through item_id's
lookup with Spark's ids. Real Spark, Delta tables on disk and torch."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from rec_plugin.dataset import load_dataset
from rec_plugin.errors import InputError
from rec_plugin.ops import Categorify, ListCategorify, Normalize
from rec_plugin.ops.categorify import VOCABULARY_TABLE
from rec_plugin.schema import ColumnSchema, Schema, SchemaError, Tags, VocabularyPin
from rec_plugin.workflow import SCHEMA_FILE, WORKFLOW_FILE, Workflow
from serving.preprocess import export_preprocess
from serving.preprocessor import EXPRESSIONS, Preprocessor
from training.models import MODELS, ModelConfig, build_model, example_inputs
from training.run_directory import RunDirectory
from training.step import bce_loss, optimizers

ITEMS = [f"item{k}" for k in range(30)]
SPARK_TYPES = (
    "label int, item_id string, price double, recent_items array<string>, "
    "source_file string, line_number bigint"
)
INPUT_SCHEMA = Schema(
    (
        ColumnSchema("label", "int32", (Tags.LABEL,)),
        ColumnSchema("item_id", "string", (Tags.CATEGORICAL, Tags.ITEM_ID)),
        ColumnSchema("price", "float64", (Tags.CONTINUOUS,)),
        ColumnSchema("recent_items", "list<string>", (Tags.CATEGORICAL, Tags.LIST)),
    )
)


def raw_rows(seed: int, list_only: list[str], rows: int = 300) -> pd.DataFrame:
    """Click rows whose lists hold item ids (frequent and rare), values that are never an item_id
    (`list_only`), null elements (which bronze would not hold), and empty and null lists; item_id is
    null now and then."""
    rng = np.random.default_rng(seed)
    items = [None if rng.random() < 0.05 else ITEMS[i] for i in rng.zipf(1.5, rows) % len(ITEMS)]
    recent = []
    for _ in range(rows):
        r = rng.random()
        if r < 0.1:
            recent.append(None)
        elif r < 0.2:
            recent.append([])
        else:
            pool = ITEMS + list_only + [None]
            recent.append([pool[i] for i in rng.integers(0, len(pool), rng.integers(1, 6))])
    return pd.DataFrame(
        {
            "label": rng.integers(0, 2, rows).astype(np.int32),
            "item_id": items,
            "price": rng.normal(10, 3, rows),
            "recent_items": recent,
            "source_file": "part-0.tsv",
            "line_number": np.arange(1, rows + 1, dtype=np.int64),
        }
    )


def frame(spark, rows: pd.DataFrame):  # noqa: ANN001, ANN201
    return spark.createDataFrame(rows.to_dict("records"), SPARK_TYPES)


def _vocabulary_partitions(path: Path) -> list[str]:
    return sorted(p.name for p in (path / VOCABULARY_TABLE).iterdir() if p.name.startswith("column="))


def shared_workflow() -> Workflow:
    return Workflow(
        [
            ["item_id"] >> Categorify(freq_threshold=3),
            ["recent_items"] >> ListCategorify(max_length=3, vocabulary_of="item_id"),
            ["price"] >> Normalize(),
            "label",
        ],
        INPUT_SCHEMA,
    )


@pytest.fixture(scope="module")
def fitted(spark, tmp_path_factory) -> tuple[Path, Schema]:
    """The shared workflow fitted on one day and saved: its folder and schema."""
    path = tmp_path_factory.mktemp("shared") / "workflow"
    workflow = shared_workflow().fit(frame(spark, raw_rows(0, ["list_only"])))
    workflow.save(str(path))
    workflow.release()
    return path, workflow.schema


def test_the_list_takes_item_ids_and_the_schema_declares_one_table(spark, fitted):
    path, schema = fitted
    workflow = Workflow.load(str(path), spark)
    rows = raw_rows(1, ["list_only", "unseen"])
    out = workflow.transform(frame(spark, rows), keep=("line_number",)).toPandas()
    vocabulary = {r.value: r.id for r in workflow.state(0, 0)["item_id"].collect()}
    assert 0 < len(vocabulary) < len(ITEMS)  # freq_threshold 3 drops the rarest items
    by_line = rows.set_index("line_number")
    for line, item, ids in zip(out["line_number"], out["item_id"], out["recent_items"]):
        raw_item, raw_list = by_line.at[line, "item_id"], by_line.at[line, "recent_items"]
        assert item == vocabulary.get(raw_item, 0)
        if raw_list is None:
            assert ids is None
        else:
            # The item's id where item_id knows it; 0 (item_id's unknown) for rare and list-only; a null
            # element is none (ingest drops it so), and the first 3 of the rest are kept.
            present = [v for v in raw_list if v is not None]
            assert list(ids) == [vocabulary.get(v, 0) for v in present[:3]]
    assert (np.concatenate([ids for ids in out["recent_items"] if ids is not None]) > 0).any()

    item, recent = schema["item_id"], schema["recent_items"]
    assert recent.embedding_table == "item_id" and item.embedding_table is None
    assert recent.embedding_table_name == item.embedding_table_name == "item_id"
    assert recent.cardinality == item.cardinality == max(vocabulary.values()) + 1
    assert recent.vocabulary == item.vocabulary == VocabularyPin(VOCABULARY_TABLE, 0, "item_id")
    assert recent.dtype == "list<int32>" and recent.max_length == 3
    # Saved: one vocabulary; schema.json records the shared table, and load_schema round-trips.
    assert _vocabulary_partitions(path) == ["column=item_id"]
    saved = json.loads((path / SCHEMA_FILE).read_text())["columns"]
    assert {c["name"]: c.get("embedding_table") for c in saved}["recent_items"] == "item_id"
    assert Workflow.load_schema(str(path), spark) == schema == workflow.schema
    ops = json.loads((path / WORKFLOW_FILE).read_text())["nodes"][1]["ops"]
    assert ops == [
        {
            "op": "ListCategorify",
            "params": {"vocabulary_of": "item_id", "max_length": 3},
            "state": {"columns": ["recent_items"]},
        }
    ]


def test_a_schema_without_the_key_still_loads():
    old = {"name": "c", "dtype": "int32", "tags": ["categorical"], "cardinality": 4}
    column = ColumnSchema.from_dict(old)
    assert column.embedding_table is None and column.embedding_table_name == "c"
    assert column.to_dict() == old


def test_extend_grows_the_shared_vocabulary_for_both_columns(spark, fitted, tmp_path):
    source, _ = fitted
    path = tmp_path / "workflow"
    Workflow.load(str(source), spark).save(str(path))  # a copy, the vocabulary table written anew
    assert _vocabulary_partitions(path) == ["column=item_id"]
    day = pd.DataFrame(
        {
            "label": [1, 0, 1],
            "item_id": ["fresh", "fresh", "fresh"],
            "price": [1.0, 2.0, 3.0],
            "recent_items": [["fresh", "item0"], None, []],
            "source_file": "part-1.tsv",
            "line_number": [1, 2, 3],
        }
    )
    extended = Workflow.load(str(path), spark).extend(frame(spark, day), str(path))
    item, recent = extended.schema["item_id"], extended.schema["recent_items"]
    assert recent.cardinality == item.cardinality and item.vocabulary.version == 1
    assert recent.vocabulary == item.vocabulary
    out = Workflow.load(str(path), spark).transform(frame(spark, day)).collect()
    assert out[0].recent_items[0] == out[0].item_id == item.cardinality - 1


def test_the_model_config_has_one_item_table_and_a_model_trains_a_step(spark, fitted, tmp_path):
    path, schema = fitted
    config = ModelConfig.from_schema("dlrm", schema, embedding_dim=4, table_dims={"item_id": 4})
    (table,) = config.tables
    assert (table.name, table.features) == ("item_id", ("item_id", "recent_items"))
    assert table.num_embeddings == schema["item_id"].cardinality and table.pooling == "sum"
    assert config.table_of("recent_items") is config.table_of("item_id")
    run = RunDirectory(tmp_path / "run")
    run.write_model_config(config)
    assert run.model_config() == config
    with pytest.raises(SchemaError, match="table_dims names \\['recent_items'\\]"):
        ModelConfig.from_schema("dlrm", schema, table_dims={"recent_items": 8})

    batch = frame(spark, raw_rows(2, ["x"], rows=24))
    features = Workflow.load(str(path), spark).transform(batch).toPandas()
    lists = [[] if v is None else list(v) for v in features["recent_items"]]
    dense = torch.tensor(features[["price"]].to_numpy(np.float32))
    ids = torch.tensor(features[["item_id"]].to_numpy(np.int64))
    values = [torch.tensor([i for ids_ in lists for i in ids_], dtype=torch.int64)]
    offsets = [torch.tensor(np.cumsum([0] + [len(v) for v in lists]), dtype=torch.int64)]
    labels = torch.tensor(features["label"].to_numpy(np.float32))
    torch.manual_seed(0)
    model = build_model(config)
    before = model.embeddings.groups[0].table.weight.detach().clone()
    loss = bce_loss(model(dense, ids, values, offsets), labels, torch.ones(len(labels)))
    loss.backward()
    for stepper, _ in optimizers(model, 0.01, 0.003):
        stepper.step()
    changed = (model.embeddings.groups[0].table.weight.detach() != before).any(dim=1)
    # Rows that only the list reads (items not shown as item_id in this batch) learn too.
    list_only = set(values[0].unique().tolist()) - set(ids.unique().tolist())
    assert list_only and list_only <= set(changed.nonzero().flatten().tolist())


def shared_schema(recent_rows: int = 9) -> Schema:
    categorical = (Tags.CATEGORICAL,)
    return Schema(
        (
            ColumnSchema("click", "float32", (Tags.LABEL,)),
            ColumnSchema("price", "float32", (Tags.CONTINUOUS,)),
            ColumnSchema("user_id", "int32", categorical, cardinality=5),
            ColumnSchema("item_id", "int32", categorical, cardinality=9),
            ColumnSchema(
                "recent_items",
                "list<int32>",
                (*categorical, Tags.LIST),
                cardinality=recent_rows,
                max_length=4,
                embedding_table="item_id",
            ),
        )
    )


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_runs_and_trains_with_a_shared_table(name):
    config = ModelConfig.from_schema(name, shared_schema(), embedding_dim=4, list_pooling="mean")
    assert [(t.name, t.features, t.num_embeddings, t.pooling) for t in config.tables] == [
        ("user_id", ("user_id",), 5, "sum"),
        ("item_id", ("item_id", "recent_items"), 9, "mean"),
    ]
    assert ModelConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    torch.manual_seed(0)
    model = build_model(config)
    dense, ids, values, offsets = example_inputs(config, 16, torch.Generator().manual_seed(1), max_length=4)
    logits = model(dense, ids, values, offsets)
    assert logits.shape == (16,) and torch.isfinite(logits).all()
    bce_loss(logits, (logits > 0).float(), torch.ones(16)).backward()
    for stepper, _ in optimizers(model, 0.01, 0.003):
        stepper.step()
    scripted = torch.jit.script(model.eval())
    with torch.no_grad():
        torch.testing.assert_close(scripted(dense, ids, values, offsets), model(dense, ids, values, offsets))
    # An id past the shared table fails naming the feature and the table.
    past = [torch.cat([values[0], torch.tensor([9])])]
    grown = [torch.cat([offsets[0][:-1], offsets[0][-1:] + 1])]
    with pytest.raises(SchemaError, match="feature recent_items: id 9 is outside its table item_id of 9"):
        model(dense, ids, past, grown)


def test_a_shared_table_of_another_size_fails_in_one_line():
    with pytest.raises(SchemaError, match="sharing table 'item_id' declare different cardinalities") as e:
        ModelConfig.from_schema("dlrm", shared_schema(recent_rows=8))
    assert "\n" not in str(e.value)
    saved = build_model(ModelConfig.from_schema("wide_deep", shared_schema(), embedding_dim=4))
    bigger = Schema(
        tuple(
            replace(c, cardinality=12) if c.embedding_table_name == "item_id" else c for c in shared_schema()
        )
    )
    grown = build_model(ModelConfig.from_schema("wide_deep", bigger, embedding_dim=4))
    with pytest.raises(
        SchemaError, match="table item_id: the saved weights hold 9 rows but the model's schema"
    ):
        grown.load_state_dict(saved.state_dict())


def test_serving_maps_the_list_through_item_ids_lookup_as_spark_does(spark, fitted, tmp_path):
    path, schema = fitted
    served = export_preprocess(spark, str(path), tmp_path / "preprocess")
    plan = json.loads(served.read_text())
    (item_step,) = [s for s in plan["steps"] if s["column"] == "item_id"]
    (list_step,) = [s for s in plan["steps"] if s["column"] == "recent_items"]
    assert item_step["op"] == "Categorify" and list_step["op"] == "ListCategorify"
    assert list_step["table"] == item_step["table"]
    assert sorted(p.name for p in (tmp_path / "preprocess").glob("*.parquet")) == [item_step["table"]]
    assert served.name == EXPRESSIONS
    preprocess = Preprocessor(served.parent)
    raw = raw_rows(3, ["list_only", "unseen"])
    by_spark = (
        Workflow.load(str(path), spark)
        .transform(frame(spark, raw), keep=("line_number",))
        .toPandas()
        .sort_values("line_number")
        .reset_index(drop=True)
    )
    features = preprocess(*preprocess.spec.batch(raw))
    np.testing.assert_array_equal(features.ids, by_spark[schema.categorical.names].to_numpy(np.int64))
    assert np.abs(features.dense - by_spark[schema.continuous.names].to_numpy(np.float32)).max() <= 1e-5
    (values,), (offsets,) = features.list_values, features.list_offsets
    served_lists = [list(values[a:b]) for a, b in zip(offsets[:-1], offsets[1:])]
    assert served_lists == [[] if v is None else [int(i) for i in v] for v in by_spark["recent_items"]]
    assert (values > 0).any() and (values == 0).any()


@pytest.mark.parametrize(
    ("graph", "message"),
    [
        (
            [
                ["recent_items"] >> ListCategorify(max_length=3, vocabulary_of="item_id"),
                ["item_id"] >> Categorify(),
            ],
            "ListCategorify of ['recent_items'] uses the vocabulary of 'item_id', but the Categorify "
            "of 'item_id' comes in a later node: move that node first",
        ),
        (
            [["recent_items"] >> ListCategorify(max_length=3, vocabulary_of="item")],
            "ListCategorify of ['recent_items'] uses the vocabulary of 'item', but no node fits one: "
            "add a node ['item'] >> Categorify() before it",
        ),
    ],
    ids=["wrong order", "unknown column"],
)
def test_a_vocabulary_not_fitted_before_is_refused_in_one_line(graph, message):
    with pytest.raises(InputError) as refused:
        Workflow(graph, INPUT_SCHEMA)
    assert str(refused.value) == message


def test_thresholds_beside_vocabulary_of_are_refused():
    with pytest.raises(InputError, match="give freq_threshold, max_size and num_buckets to its Categorify"):
        ListCategorify(max_length=3, freq_threshold=3, vocabulary_of="item_id")


def test_the_ecommerce_workflow_shares_item_ids_with_recent_items():
    workflow = load_dataset("ecommerce").default_workflow(freq_threshold=5)
    (recent,) = [op for node in workflow.nodes if node.columns == ("recent_items",) for op in node.ops]
    assert isinstance(recent, ListCategorify) and recent.params == {
        "vocabulary_of": "item_id",
        "max_length": 20,
    }
