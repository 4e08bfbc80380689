"""Growing a trained model to grown vocabularies (training/grow.py) and warm-starting a run from it:
old rows and predictions bit-identical, new rows freshly initialised, optimizer state carried."""

from __future__ import annotations

import pytest
import torch
from test_models_schema import SCHEMA, make_schema, small_file  # noqa: F401 - small_file is a fixture
from torch import nn

from rec_plugin.errors import InputError
from rec_plugin.schema import Schema
from training.grow import check_warm_start, grow_model_state, grow_optimizer_states
from training.loop import TrainSpec, train_worker
from training.models import ALL_MODELS, ModelConfig, TableConfig, build_model, example_inputs
from training.models.cf import MULTVAE, MultVAE, multvae_loss
from training.models.parts import FusedTables
from training.run_directory import RunDirectory
from training.step import OptimizerSettings, bce_loss

GROWN = make_schema(c1=8, history=14)  # c1 (the first table) 5 -> 8 rows, history 11 -> 14
SEED = 3


def configs(name: str) -> tuple[ModelConfig, ModelConfig]:
    """(production, grown) configs of model `name`: the CTR models on the test schema, NCF on a user
    and an item table, Mult-VAE on an item table."""
    if name == "ncf":  # the user table, before the item table, grows from 6 to 9 rows
        tables = [
            (TableConfig("user", users, 4, ("user",)), TableConfig("item", 4, 4, ("item",)))
            for users in (6, 9)
        ]
        return tuple(ModelConfig(name, pair, (), ("user", "item")) for pair in tables)
    if name == MULTVAE:
        hyper = dict(list_features=("items",), vae_hidden=(8,), vae_latent=3)
        return tuple(ModelConfig(name, (TableConfig("items", n, 8, ("items",)),), **hyper) for n in (9, 12))
    return tuple(ModelConfig.from_schema(name, schema, embedding_dim=4) for schema in (SCHEMA, GROWN))


def table_layout(model: nn.Module) -> dict[str, list[tuple[str, int]]]:
    """Each state entry whose rows are tables' ids: its (table, rows), in row order."""
    layout = {}
    for path, module in model.named_modules():
        if isinstance(module, FusedTables):
            layout[f"{path}.table.weight"] = list(zip(module.table_names, module.table_rows.tolist()))
        elif isinstance(module, MultVAE):
            last = f"decoder.{len(module.decoder) - 1}"
            for key in ("encoder_table.weight", f"{last}.weight", f"{last}.bias"):
                layout[key] = [(module.table_name, module.n_items)]
    return layout


def by_table(tensor: torch.Tensor, tables: list[tuple[str, int]]) -> dict[str, torch.Tensor]:
    return dict(zip([name for name, _ in tables], tensor.split([rows for _, rows in tables])))


def built(config: ModelConfig, seed: int = SEED) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(config)


def inputs_of(config: ModelConfig, seed: int) -> tuple:
    return example_inputs(config, 16, torch.Generator().manual_seed(seed), max_length=4)


def predict(model: nn.Module, inputs: tuple) -> torch.Tensor:
    """Click logits [B]; Mult-VAE's item scores [B, items]."""
    model.eval()
    with torch.no_grad():
        return model.item_scores(inputs[2][0], inputs[3][0]) if isinstance(model, MultVAE) else model(*inputs)


def train_step(model: nn.Module, config: ModelConfig, optimizers: list, inputs: tuple) -> None:
    """One step of the training loop's loss and the real optimizers."""
    outputs, weight = model(*inputs), torch.ones(16)
    if config.name == MULTVAE:
        loss = multvae_loss(outputs, inputs[2], inputs[3], weight, 0.2)
    else:
        loss = bce_loss(outputs, (torch.arange(16) % 3 == 0).float(), weight)
    for optimizer in optimizers:
        optimizer.zero_grad()
    loss.backward()
    for optimizer in optimizers:
        optimizer.step()


def trained(config: ModelConfig, settings: OptimizerSettings) -> tuple[nn.Module, list]:
    """A model of `config` after two steps of the real optimizers, and those optimizers."""
    model = built(config, seed=0)
    optimizers = [optimizer for optimizer, _ in settings.build(model)]
    for step in range(2):
        train_step(model, config, optimizers, inputs_of(config, step))
    return model, optimizers


@pytest.mark.parametrize("name", sorted(ALL_MODELS))
def test_old_rows_and_old_predictions_are_kept_bit_for_bit_and_new_rows_are_fresh(name):
    old, new = configs(name)
    production, _ = trained(old, OptimizerSettings())
    grown = built(new, seed=0)
    grown.load_state_dict(grow_model_state(old, new, production.state_dict(), SEED))
    fresh = built(new).state_dict()
    old_layout, new_layout = table_layout(production), table_layout(grown)
    assert new_layout and all(
        sum(r for _, r in new_layout[k]) > sum(r for _, r in old_layout[k]) for k in new_layout
    )
    for key, before in production.state_dict().items():
        after = grown.state_dict()[key]
        if key in new_layout:
            fresh_tables = by_table(fresh[key], new_layout[key])
            grown_tables = by_table(after, new_layout[key])
            for table, rows in by_table(before, old_layout[key]).items():
                assert torch.equal(grown_tables[table][: len(rows)], rows), (key, table)
                assert torch.equal(grown_tables[table][len(rows) :], fresh_tables[table][len(rows) :])
        elif not key.endswith("table_rows"):
            assert torch.equal(after, before), key
    for seed in (10, 11):
        inputs = inputs_of(old, seed)  # only ids the production tables hold
        before, after = predict(production, inputs), predict(grown, inputs)
        if after.shape == before.shape:
            assert torch.equal(after, before)
        else:  # Mult-VAE scores every item: its wider decoder GEMM may sum in another order (AMD EPYC)
            torch.testing.assert_close(after[..., : before.shape[-1]], before, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name, table", [("dlrm", "c1"), ("deepfm", "history"), ("ncf", "user")])
def test_a_new_id_reads_its_new_row(name, table):
    old, new = configs(name)
    production, _ = trained(old, OptimizerSettings())
    grown = built(new, seed=0)
    grown.load_state_dict(grow_model_state(old, new, production.state_dict(), SEED))
    dense, ids, values, offsets = inputs_of(old, 12)
    new_id = old.table_of(table).num_embeddings + 1
    if table in new.categorical_features:
        ids[0, new.categorical_features.index(table)] = new_id
    else:  # the list's first row holds exactly the new id
        slot = new.list_features.index(table)
        length = int(offsets[slot][1])
        values[slot] = torch.cat([torch.tensor([new_id]), values[slot][length:]])
        offsets[slot] = torch.cat([offsets[slot][:1], offsets[slot][1:] - length + 1])
    before = predict(grown, (dense, ids, values, offsets))
    with torch.no_grad():
        for key, tables in table_layout(grown).items():
            by_table(grown.get_parameter(key), tables)[table][new_id] += 0.5
    after = predict(grown, (dense, ids, values, offsets))
    assert after[0] != before[0] and torch.equal(after[1:], before[1:])


@pytest.mark.parametrize("name, sparse", [("dlrm", "adam"), ("deepfm", "adagrad"), (MULTVAE, "adam")])
def test_optimizer_state_rows_are_carried_and_new_rows_start_at_zero(name, sparse):
    old, new = configs(name)
    settings = OptimizerSettings(sparse)
    production, optimizers = trained(old, settings)
    states = [optimizer.state_dict() for optimizer in optimizers]
    grown_states = grow_optimizer_states(old, new, states, settings)
    grown = built(new, seed=0)
    grown.load_state_dict(grow_model_state(old, new, production.state_dict(), SEED))
    old_layout, new_layout = table_layout(production), table_layout(grown)
    pairs = settings.build(grown)
    for (optimizer, named), state, grown_state in zip(pairs, states, grown_states, strict=True):
        assert state["state"] and grown_state["state"].keys() == state["state"].keys()
        for slot, values in state["state"].items():
            key = named[slot][0]
            for entry, value in values.items():
                before, after = torch.as_tensor(value), torch.as_tensor(grown_state["state"][slot][entry])
                if key not in new_layout or before.dim() == 0:  # the step
                    assert torch.equal(after, before), (key, entry)
                    continue
                grown_tables = by_table(after, new_layout[key])
                assert before.any()  # trained: the carried state is not all zero
                for table, rows in by_table(before, old_layout[key]).items():
                    assert torch.equal(grown_tables[table][: len(rows)], rows), (key, entry, table)
                    assert not grown_tables[table][len(rows) :].any()
        optimizer.load_state_dict(grown_state)
    # The grown model trains on from its grown state, new ids included.
    train_step(grown, new, [optimizer for optimizer, _ in pairs], inputs_of(new, 13))


def test_incompatible_models_are_refused_in_one_line():
    old, new = configs("dlrm")
    cases = [
        (configs("deepfm")[1], "cannot grow a dlrm model into a deepfm model"),
        (
            ModelConfig.from_schema("dlrm", make_schema(c1=4), embedding_dim=4),
            "c1: it shrank from 5 to 4 rows",
        ),
        (ModelConfig.from_schema("dlrm", GROWN, embedding_dim=8), "dim 4, .* became 8"),
        (
            ModelConfig.from_schema("dlrm", GROWN, embedding_dim=4, top_mlp=[8]),
            r"hyperparameters \['top_mlp'\]",
        ),
        (
            ModelConfig.from_schema("dlrm", Schema(GROWN.columns[:-1]), embedding_dim=4),
            "categorical_features",
        ),
    ]
    for other, message in cases:
        with pytest.raises(InputError, match=message) as refused:
            grow_model_state(old, other, built(old).state_dict(), SEED)
        assert "\n" not in str(refused.value)
    _, optimizers = trained(old, OptimizerSettings("adagrad"))
    states = [optimizer.state_dict() for optimizer in optimizers]
    with pytest.raises(InputError, match="trained with adagrad, this run's with adam"):
        grow_optimizer_states(old, new, states, OptimizerSettings("adam"))
    with pytest.raises(InputError, match="not torchrec"):
        check_warm_start("anywhere", new, "torchrec")


def test_a_warm_started_run_starts_from_the_grown_production_checkpoint(small_file, tmp_path):  # noqa: F811
    old, new = configs("dlrm")

    def spec(config: ModelConfig, schema: Schema, run: RunDirectory, **options: object) -> dict:
        files, features = small_file.to_dict(), TrainSpec.schema_dict(schema)
        return TrainSpec(
            config.to_dict(), files, run.uri, features, batch_size=250, progress=False, **options
        ).to_dict()

    production = RunDirectory(tmp_path / "production")
    assert train_worker(spec(old, SCHEMA, production))["steps"] == 4
    production.write_model_config(old)
    saved = production.load_checkpoint(production.latest_checkpoint())
    started = RunDirectory(tmp_path / "started")
    summary = train_worker(spec(new, GROWN, started, epochs=0, warm_start=production.uri, seed=SEED))
    assert summary["steps"] == 0
    expected = grow_model_state(old, new, saved["model"], SEED)
    weights = started.weights()
    assert weights.keys() == expected.keys() and all(torch.equal(weights[k], v) for k, v in expected.items())
    expected_states = grow_optimizer_states(old, new, saved["optimizers"], OptimizerSettings())
    states = started.load_checkpoint(started.latest_checkpoint())["optimizers"]
    for state, expected_state in zip(states, expected_states, strict=True):
        for slot, values in expected_state["state"].items():
            assert all(
                torch.equal(torch.as_tensor(state["state"][slot][k]), torch.as_tensor(v))
                for k, v in values.items()
            )
    trained_on = RunDirectory(tmp_path / "trained")
    summary = train_worker(spec(new, GROWN, trained_on, warm_start=production.uri, seed=SEED))
    assert summary["steps"] == 4 and trained_on.latest_checkpoint() == "step-00000004-00.pt"
