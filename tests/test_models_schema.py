"""Models and the loader built from a schema (no Spark): any number of dense, single-id and list
features; ids checked against their own table; table sizes checked on load; keyed, jagged batches."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from rec_plugin.schema import ColumnSchema, Schema, SchemaError, Tags
from training import checkpoint
from training.data import BatchLoader, FileSet, JaggedIds, KeyedIds, padding_batch
from training.models import (
    MODELS,
    ModelConfig,
    build_model,
    example_inputs,
    sparse_and_dense_parameters,
)
from training.run_directory import RunDirectory
from training.step import bce_loss, optimizers

CARDINALITIES = {"c1": 5, "c2": 7, "c3": 3, "history": 11}


def make_schema(**cardinalities: int) -> Schema:
    """label, 2 continuous, 3 categorical and 1 list column (the list between the categoricals, so
    the accessors' order, not the column order, is what counts)."""
    sizes = {**CARDINALITIES, **cardinalities}
    categorical = (Tags.CATEGORICAL,)
    return Schema(
        (
            ColumnSchema("clicked", "float32", (Tags.LABEL,)),
            ColumnSchema("price", "float32", (Tags.CONTINUOUS,)),
            ColumnSchema("c1", "int32", categorical, cardinality=sizes["c1"]),
            ColumnSchema(
                "history",
                "list<int32>",
                (*categorical, Tags.LIST),
                cardinality=sizes["history"],
                max_length=4,
            ),
            ColumnSchema("age", "float32", (Tags.CONTINUOUS,)),
            ColumnSchema("c2", "int32", categorical, cardinality=sizes["c2"]),
            ColumnSchema("c3", "int32", categorical, cardinality=sizes["c3"]),
        )
    )


SCHEMA = make_schema()


def test_the_config_follows_the_schema_and_round_trips():
    config = ModelConfig.from_schema("dlrm", SCHEMA, embedding_dim=4, top_mlp=[32])
    assert config.dense_features == ("price", "age")
    assert config.categorical_features == ("c1", "c2", "c3")
    assert config.list_features == ("history",)
    assert [(t.name, t.num_embeddings, t.embedding_dim, t.pooling) for t in config.tables] == [
        ("c1", 5, 4, "sum"),
        ("c2", 7, 4, "sum"),
        ("c3", 3, 4, "sum"),
        ("history", 11, 4, "sum"),
    ]
    assert config.top_mlp == (32,) and config.flat_width == 2 + 4 * 4
    assert ModelConfig.from_dict(config.to_dict()) == config
    mean = ModelConfig.from_schema("dcnv2", SCHEMA, list_pooling="mean", table_dims={"c2": 8})
    assert mean.table_of("history").pooling == "mean" and mean.table_of("c2").embedding_dim == 8
    assert mean.flat_width == 2 + 16 * 3 + 8
    # DLRM's tables default to width 64 (its dot interaction needs the room), the others' to 16.
    with pytest.raises(SchemaError, match="the tables have dims \\[8, 64\\]"):
        build_model(ModelConfig.from_schema("dlrm", SCHEMA, table_dims={"c2": 8}))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_takes_dense_ids_and_lists(name):
    from serving.export import ClickProbability

    config = ModelConfig.from_schema(name, SCHEMA, embedding_dim=4)
    torch.manual_seed(0)
    model = build_model(config)
    inputs = example_inputs(config, 32, torch.Generator().manual_seed(1), max_length=4)
    dense, ids, values, offsets = inputs
    assert dense.shape == (32, 2) and ids.shape == (32, 3) and offsets[0].shape == (33,)
    assert int(offsets[0][-1]) == len(values[0]) and (offsets[0][1:] - offsets[0][:-1]).max() <= 4
    logits = model(*inputs)
    assert logits.shape == (32,) and torch.isfinite(logits).all()
    labels = (torch.rand(32, generator=torch.Generator().manual_seed(2)) < 0.3).float()
    bce_loss(logits, labels, torch.ones(32)).backward()
    sparse, dense_parameters = sparse_and_dense_parameters(model)
    assert sparse and all(p.grad is not None and p.grad.is_sparse for _, p in sparse)
    assert all(not p.grad.is_sparse for _, p in dense_parameters if p.grad is not None)
    # The list feature counts: its ids' rows get gradient (rows past the single-id tables' 15).
    touched = torch.cat([p.grad.coalesce().indices()[0] for _, p in sparse])
    assert (touched >= 15).any()
    for stepper, _ in optimizers(model, 0.01, 0.003):
        stepper.step()
    # Served: one scripted module for any batch size and list lengths.
    served = ClickProbability(model).eval()
    scripted = torch.jit.script(served)
    for rows, seed in ((32, 3), (1, 4), (7, 5)):
        example = example_inputs(config, rows, torch.Generator().manual_seed(seed), max_length=6)
        with torch.no_grad():
            expected = served(*example)
            torch.testing.assert_close(scripted(*example), expected)
        assert expected.shape == (rows, 1) and ((expected > 0) & (expected < 1)).all()


def test_a_model_without_lists_takes_empty_lists():
    schema = Schema(tuple(c for c in SCHEMA if not c.is_list))
    config = ModelConfig.from_schema("deepfm", schema, embedding_dim=4)
    dense, ids, values, offsets = example_inputs(config, 8, torch.Generator().manual_seed(0))
    assert values == [] and offsets == []
    assert build_model(config)(dense, ids, [], []).shape == (8,)


@pytest.mark.parametrize("name", ["dlrm", "logistic"])
def test_an_id_past_its_table_fails_naming_the_feature(name):
    config = ModelConfig.from_schema(name, SCHEMA, embedding_dim=4)
    model = build_model(config)
    dense, ids, values, offsets = example_inputs(config, 16, torch.Generator().manual_seed(0))
    # c1's table has 5 rows: id 5 would be row 0 of c2's table in the fused weight.
    past = ids.clone()
    past[3, 0] = 5
    with pytest.raises(SchemaError, match="feature c1: id 5 is outside its table c1 of 5 rows"):
        model(dense, past, values, offsets)
    negative = ids.clone()
    negative[0, 2] = -1
    with pytest.raises(SchemaError, match="feature c3: id -1 is outside its table c3 of 3 rows"):
        model(dense, negative, values, offsets)
    long = [torch.cat([values[0], torch.tensor([11])])]
    grown = [torch.cat([offsets[0][:-1], offsets[0][-1:] + 1])]
    with pytest.raises(SchemaError, match="feature history: id 11 is outside its table history of 11"):
        model(dense, ids, long, grown)
    scripted = torch.jit.script(model.eval())
    with pytest.raises(torch.jit.Error, match="feature c1: id 5 is outside its table c1"):
        scripted(dense, past, values, offsets)


def test_weights_of_other_table_sizes_fail_in_one_line(tmp_path):
    saved = build_model(ModelConfig.from_schema("wide_deep", SCHEMA, embedding_dim=4))
    grown = build_model(ModelConfig.from_schema("wide_deep", make_schema(c2=8), embedding_dim=4))
    message = "table c2: the saved weights hold 7 rows but the model's schema gives 8"
    with pytest.raises(SchemaError, match=message) as refused:
        grown.load_state_dict(saved.state_dict())
    assert "\n" not in str(refused.value)
    # A checkpoint of the other schema is refused the same way on resume.
    run = RunDirectory(tmp_path)
    steppers = [o for o, _ in optimizers(saved, 0.01, 0.003)]
    checkpoint.save(run, saved.state_dict(), [o.state_dict() for o in steppers], checkpoint.Position(step=1))
    with pytest.raises(SchemaError, match=message):
        checkpoint.restore_latest(run, grown, [o for o, _ in optimizers(grown, 0.01, 0.003)])
    same = build_model(ModelConfig.from_schema("wide_deep", SCHEMA, embedding_dim=4))
    same.load_state_dict(saved.state_dict())


def test_a_resumed_rank_draws_on_as_that_rank_would_have(tmp_path):
    """Each rank's random state is kept: ranks part where an epoch ends on batches of other sizes, and
    a rank restored to rank 0's state would draw other dropout masks than its run without the kill."""
    run = RunDirectory(tmp_path)
    states = []
    for seed in (1, 2):  # two ranks whose generators have parted
        torch.manual_seed(seed)
        torch.rand(seed * 3)
        states.append(checkpoint.rng_state())
    next_draws = []
    for state in states:
        torch.set_rng_state(state["torch"])
        next_draws.append(torch.rand(4))
    checkpoint.save(run, {}, [], checkpoint.Position(step=1), rngs=states)
    torch.manual_seed(99)
    assert checkpoint.load_latest(run, rank=1) is not None
    assert torch.equal(torch.rand(4), next_draws[1])
    checkpoint.load_latest(run, rank=0)
    assert torch.equal(torch.rand(4), next_draws[0])
    checkpoint.load_latest(run, rank=2)  # a rank the killed run did not have starts from rank 0's
    assert torch.equal(torch.rand(4), next_draws[0])


ROWS = 1_000


def history_of(row: int) -> list[int] | None:
    """Row `row`'s list: null every 13th row, empty every 4th, else 1 to 3 ids made from the row."""
    if row % 13 == 5:
        return None
    return [(row * (k + 3)) % 11 for k in range(row % 4)]


@pytest.fixture(scope="module")
def small_file(tmp_path_factory) -> FileSet:
    """ROWS rows in row groups of 128 over two files: `price` holds the row number."""
    folder = tmp_path_factory.mktemp("small")
    rows = np.arange(ROWS)
    table = pa.table(
        {
            "clicked": pa.array(rows % 3 == 0, pa.float32()),
            "price": pa.array(rows, pa.float32()),
            "c1": pa.array(rows % 5, pa.int32()),
            "history": pa.array([history_of(r) for r in rows], pa.list_(pa.int32())),
            "age": pa.array(rows / 10, pa.float32()),
            "c2": pa.array(rows % 7, pa.int32()),
            "c3": pa.array(rows % 3, pa.int32()),
            "ignored": pa.array(rows, pa.int64()),
        }
    )
    files = []
    for index, (start, stop) in enumerate(((0, 600), (600, ROWS))):
        path = folder / f"part-{index}.parquet"
        pq.write_table(table.slice(start, stop - start), path, row_group_size=128)
        files.append(f"file:{path}")
    return FileSet(tuple(files), ROWS)


def check_rows(batch, rows: np.ndarray) -> None:
    """The batch holds exactly rows `rows` of the file, every feature in its place."""
    assert np.array_equal(batch.dense.numpy(), np.stack([rows, rows / 10], axis=1).astype(np.float32))
    assert isinstance(batch.ids, KeyedIds) and batch.ids.keys == ("c1", "c2", "c3")
    assert batch.ids.values.dtype == torch.int64
    assert np.array_equal(batch.ids.values.numpy(), np.stack([rows % 5, rows % 7, rows % 3], axis=1))
    assert np.array_equal(batch.ids["c2"].numpy(), rows % 7)
    assert np.array_equal(batch.label.numpy(), (rows % 3 == 0).astype(np.float32))
    assert list(batch.lists) == ["history"]
    history = batch.lists["history"]
    assert isinstance(history, JaggedIds) and history.values.dtype == history.offsets.dtype == torch.int64
    expected = [history_of(int(r)) or [] for r in rows]
    lengths = [len(e) for e in expected]
    assert history.offsets.tolist() == [0, *np.cumsum(lengths).tolist()]
    assert history.values.tolist() == [i for e in expected for i in e]
    assert all(history.row(k).tolist() == e for k, e in enumerate(expected))


def test_the_loader_yields_keyed_ids_and_jagged_lists_as_in_the_file(small_file):
    batches = list(BatchLoader(small_file, SCHEMA, 96, shuffle=False).epoch(0))
    assert [len(b.label) for b in batches] == [96] * 10 + [40]
    for index, batch in enumerate(batches):
        check_rows(batch, np.arange(index * 96, min((index + 1) * 96, ROWS)))
        assert torch.equal(batch.weight, torch.ones(len(batch.label)))


def test_shuffled_rows_keep_their_lists_and_resume_skips_exactly(small_file):
    def epoch(rank: int, size: int, skip: int = 0) -> list:
        loader = BatchLoader(small_file, SCHEMA, 64, rank, size, seed=3, shuffle_rows=300)
        batches = list(loader.epoch(1, skip_batches=skip))
        return batches

    whole = epoch(0, 1)
    order = np.concatenate([b.dense[:, 0].numpy().astype(np.int64) for b in whole])
    assert sorted(order.tolist()) == list(range(ROWS)) and not np.array_equal(order, np.arange(ROWS))
    for batch in whole:  # each row's list (and ids, label) moved with it
        check_rows(batch, batch.dense[:, 0].numpy().astype(np.int64))
    resumed = epoch(0, 1, skip=5)
    assert len(resumed) == len(whole) - 5
    for again, first in zip(resumed, whole[5:]):
        assert torch.equal(again.dense, first.dense) and torch.equal(again.ids.values, first.ids.values)
        assert torch.equal(again.lists["history"].values, first.lists["history"].values)
        assert torch.equal(again.lists["history"].offsets, first.lists["history"].offsets)
    shards = [epoch(rank, 2) for rank in (0, 1)]
    rows = np.concatenate([b.dense[:, 0].numpy() for shard in shards for b in shard]).astype(np.int64)
    assert sorted(rows.tolist()) == list(range(ROWS)) and all(shards)


def test_a_model_trains_on_loader_and_padding_batches(small_file):
    config = ModelConfig.from_schema("dlrm", SCHEMA, embedding_dim=4)
    model = build_model(config)
    batch = next(BatchLoader(small_file, SCHEMA, 64).epoch(0))
    assert model(*batch.inputs()).shape == (64,)
    padding = padding_batch(SCHEMA, 64)
    assert padding.lists["history"].offsets.shape == (65,) and padding.ids.values.shape == (64, 3)
    loss = bce_loss(model(*padding.inputs()), padding.label, padding.weight)
    assert float(loss.detach()) == 0.0
    loss.backward()


def test_the_loader_reads_only_the_schema_columns(small_file, monkeypatch):
    import training.data

    asked = {}
    real = training.data.make_batch_reader

    def spy(*args, **kwargs):
        asked.update(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(training.data, "make_batch_reader", spy)
    next(BatchLoader(small_file, SCHEMA, 64).epoch(0))
    assert asked["schema_fields"] == ["clicked", "price", "age", "c1", "c2", "c3", "history"]


def test_onnx_exports_models_without_lists_and_refuses_lists_in_one_line(tmp_path):
    from rec_plugin.errors import InputError
    from serving.export import onnx_program

    for name, schema in (("plain", Schema(tuple(c for c in SCHEMA if not c.is_list))), ("lists", SCHEMA)):
        run = RunDirectory(tmp_path / name)
        config = ModelConfig.from_schema("dcnv2", schema, embedding_dim=4)
        run.write_model_config(config)
        run.save_weights(build_model(config).state_dict())
        if name == "plain":
            assert onnx_program(tmp_path / name).model_proto.graph.input  # checked against eager inside
        else:
            with pytest.raises(InputError, match="the onnxruntime flavour takes no list features") as refused:
                onnx_program(tmp_path / name)
            assert "\n" not in str(refused.value)
