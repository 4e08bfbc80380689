"""Growing a trained model to a grown vocabulary, for continuous retraining.

`Workflow.extend` appends new ids after a vocabulary's existing ones, so an id keeps its meaning and
its table row: a production model can keep learning on data that holds new ids once its tables have
the new cardinalities. Growing copies every trained row bit for bit to its new place (FusedTables
stacks a dim's tables, so a table's rows move when a table before it grows), gives the new rows the
values a fresh model built with the run's seed would have, and carries the optimizers' per-row state
(new rows start at zero, as a fresh optimizer's do); every other weight is copied unchanged. A
warm-started run (`TrainSpec.warm_start`) starts from the grown production checkpoint at step 0.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

import torch
from torch import nn

from rec_plugin.errors import InputError
from training.checkpoint import Position, Saved, final_state
from training.models import ModelConfig, build_model
from training.models.cf import MultVAE
from training.models.parts import FusedTables
from training.run_directory import RunDirectory, RunLocation
from training.step import OptimizerSettings

# Backends whose optimizer states are torch's own (per parameter); TorchRec's fused ones are not.
WARM_START_BACKENDS = ("single", "horovod", "torch")
# The per-row state each sparse optimizer of training/step.py keeps (torch's SparseAdam, Adagrad).
SPARSE_STATE = {"adam": {"step", "exp_avg", "exp_avg_sq"}, "adagrad": {"step", "sum"}}


class _Layout(NamedTuple):
    """Where a model's state depends on its tables' sizes."""

    rows: dict[str, tuple[str, ...]]  # entries whose dim 0 stacks tables' ids: the tables, in order
    sizes: set[str]  # entries recording the tables' sizes (FusedTables.table_rows)


def check_growable(old: ModelConfig, new: ModelConfig) -> None:
    """Refuses (InputError, one line naming the difference) a `new` config that is not `old` with
    tables of as many rows or more: other model, inputs, tables, dims or hyperparameters."""
    if old.name != new.name:
        raise InputError(f"cannot grow a {old.name} model into a {new.name} model: train the same --model")
    for field in ("dense_features", "categorical_features", "list_features"):
        if getattr(old, field) != getattr(new, field):
            raise InputError(
                f"cannot grow the model: its {field} {list(getattr(old, field))} became "
                f"{list(getattr(new, field))}; warm start only on the same features"
            )
    old_tables = {t.name: t for t in old.tables}
    new_tables = {t.name: t for t in new.tables}
    if list(old_tables) != list(new_tables):
        raise InputError(f"cannot grow the model: its tables {list(old_tables)} became {list(new_tables)}")
    for name, table in new_tables.items():
        before = old_tables[name]
        if (before.embedding_dim, before.features, before.pooling) != (
            table.embedding_dim,
            table.features,
            table.pooling,
        ):
            raise InputError(
                f"cannot grow table {name}: dim {before.embedding_dim}, features {list(before.features)}, "
                f"pooling {before.pooling} became {table.embedding_dim}, {list(table.features)}, "
                f"{table.pooling}"
            )
        if table.num_embeddings < before.num_embeddings:
            raise InputError(
                f"cannot grow table {name}: it shrank from {before.num_embeddings:,} to "
                f"{table.num_embeddings:,} rows; a vocabulary only grows (Workflow.extend)"
            )
    shaping = [h for h in ModelConfig.HYPERPARAMETERS if h not in ModelConfig.SCHEDULE_HYPERPARAMETERS]
    changed = [h for h in shaping if getattr(old, h) != getattr(new, h)]
    if changed:
        raise InputError(f"cannot grow the model: its hyperparameters {changed} changed; keep them")


def grow_model_state(
    old: ModelConfig, new: ModelConfig, state: Mapping[str, torch.Tensor], seed: int
) -> dict[str, torch.Tensor]:
    """`state` (a model of config `old`) for config `new`: each table's trained rows at their new
    offsets, bit for bit; its new rows those of `new`'s model freshly built after
    `torch.manual_seed(seed)` (as train_worker builds it; torch's RNG is left as it was); the
    tables' sizes `new`'s; every other entry unchanged."""
    check_growable(old, new)
    old_model = _skeleton(old)
    _check_fits(state, old_model)
    old_layout = _layout(old_model)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        fresh_model = build_model(new)
    new_layout = _layout(fresh_model)
    old_rows, new_rows = _table_sizes(old), _table_sizes(new)
    grown: dict[str, torch.Tensor] = {}
    for key, fresh in fresh_model.state_dict().items():
        if key in new_layout.rows:
            before = [(t, old_rows[t]) for t in old_layout.rows[key]]
            after = [(t, new_rows[t]) for t in new_layout.rows[key]]
            grown[key] = _grow_rows(state[key], fresh, before, after)
        else:
            grown[key] = fresh.clone() if key in new_layout.sizes else state[key]
    return grown


def grow_optimizer_states(
    old: ModelConfig, new: ModelConfig, states: Sequence[dict], settings: OptimizerSettings
) -> list[dict]:
    """The optimizers' states of a model of config `old` (as `settings.build` orders them: the sparse
    optimizer, then the dense one) for its model grown to `new`: per-row state (Adam's moments,
    Adagrad's sums) carried to the rows' new offsets, zero for new rows; scalar state (the step)
    kept; the param groups (learning rates) `settings`'. Refuses states of another sparse optimizer."""
    check_growable(old, new)
    old_model, new_model = _skeleton(old), _skeleton(new)
    old_layout, new_layout = _layout(old_model), _layout(new_model)
    old_rows, new_rows = _table_sizes(old), _table_sizes(new)
    old_shapes = {name: p.shape for name, p in old_model.named_parameters()}
    pairs = settings.build(new_model)
    if len(states) != len(pairs) or any("param_groups" not in s for s in states):
        raise InputError(
            f"the production run's {len(states)} optimizer states do not fit this run's {len(pairs)} "
            "optimizers (states of TorchRec's fused tables cannot warm start): train it on another backend"
        )
    grown_states: list[dict] = []
    for index, (state, (optimizer, named)) in enumerate(zip(states, pairs, strict=True)):
        if index == 0:
            _check_sparse_state(state, settings.sparse)
        fresh = optimizer.state_dict()
        if sum(len(g["params"]) for g in state["param_groups"]) != len(named):
            raise InputError(f"the production run's optimizer {index} holds other parameters than this run's")
        per_parameter: dict[int, dict] = {}
        for slot, values in state["state"].items():
            name, parameter = named[slot]
            per_parameter[slot] = {
                key: _grow_rows(
                    value,
                    torch.zeros((parameter.shape[0], *value.shape[1:]), dtype=value.dtype),
                    [(t, old_rows[t]) for t in old_layout.rows[name]],
                    [(t, new_rows[t]) for t in new_layout.rows[name]],
                )
                if name in new_layout.rows and _per_row(value, old_shapes[name])
                else value
                for key, value in values.items()
            }
        grown_states.append({"state": per_parameter, "param_groups": fresh["param_groups"]})
    return grown_states


def check_warm_start(production: RunLocation, config: ModelConfig, backend: str) -> ModelConfig:
    """The production run's model config, once a warm start of a model of `config` on `backend`
    from it is possible: the backend keeps torch's optimizer states, the run has a checkpoint and its
    model grows into `config`; else an InputError."""
    if backend not in WARM_START_BACKENDS:
        raise InputError(
            f"--warm-start works on the backends {', '.join(WARM_START_BACKENDS)}, not {backend} "
            "(its fused optimizer state is sharded): warm start on a data-parallel backend"
        )
    run = RunDirectory.at(production)
    production_config = run.model_config()
    if run.latest_checkpoint() is None:
        raise InputError(
            f"run directory {run.uri} holds no checkpoint to warm start from: finish its training"
        )
    check_growable(production_config, config)
    return production_config


def warm_start(
    production: RunLocation, config: ModelConfig, settings: OptimizerSettings, backend: str, seed: int
) -> Saved:
    """The production run's final state (model and optimizers: its kept epoch's, checkpoint.final_state)
    grown to `config`, at step 0: what a warm-started run restores before its first step. Torch's RNG is
    left as it was."""
    production_config = check_warm_start(production, config, backend)
    saved = final_state(RunDirectory.at(production))
    model = grow_model_state(production_config, config, saved["model"], seed)
    optimizers = grow_optimizer_states(production_config, config, saved["optimizers"], settings)
    return Saved(model, optimizers, Position())


def _skeleton(config: ModelConfig) -> nn.Module:
    """The model of `config` on the meta device: its state's names, shapes and table layout, with
    no memory and no draws from torch's RNG."""
    with torch.device("meta"):
        return build_model(config)


def _layout(model: nn.Module) -> _Layout:
    """Which state entries of `model` stack table rows (FusedTables' fused weight; Mult-VAE's encoder
    table and its decoder's last layer, one output per item) and which record the tables' sizes."""
    layout = _Layout({}, set())
    for path, module in model.named_modules():
        prefix = f"{path}." if path else ""
        if isinstance(module, FusedTables):
            layout.rows[f"{prefix}table.weight"] = tuple(module.table_names)
            layout.sizes.add(f"{prefix}table_rows")
        elif isinstance(module, MultVAE):
            last = f"{prefix}decoder.{len(module.decoder) - 1}"
            for key in (f"{prefix}encoder_table.weight", f"{last}.weight", f"{last}.bias"):
                layout.rows[key] = (module.table_name,)
    return layout


def _check_fits(state: Mapping[str, torch.Tensor], model: nn.Module) -> None:
    """Refuses a state that is not the model's (other entries or shapes) in one line."""
    expected = model.state_dict()
    if set(state) != set(expected):
        raise InputError(
            f"the production weights' entries {sorted(set(state) ^ set(expected))} do not fit its model "
            "config: its run directory is inconsistent"
        )
    for key, tensor in expected.items():
        if state[key].shape != tensor.shape:
            raise InputError(
                f"the production weights' {key} has shape {list(state[key].shape)} but its model config "
                f"gives {list(tensor.shape)}: its run directory is inconsistent"
            )


def _check_sparse_state(state: dict, sparse: str) -> None:
    """Refuses the embedding rows' optimizer state of another sparse optimizer than `sparse`."""
    for values in state["state"].values():
        if set(values) != SPARSE_STATE[sparse]:
            other = [name for name, keys in SPARSE_STATE.items() if keys == set(values)]
            kind = other[0] if other else f"an optimizer keeping {sorted(values)}"
            raise InputError(
                f"the production run's embedding rows were trained with {kind}, this run's with "
                f"{sparse}: warm start with the production run's --sparse-optimizer"
            )


def _table_sizes(config: ModelConfig) -> dict[str, int]:
    return {table.name: table.num_embeddings for table in config.tables}


def _per_row(value: object, shape: torch.Size) -> bool:
    """Whether an optimizer state entry has one row per row of its parameter of `shape`."""
    return isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == shape[0]


def _grow_rows(
    saved: torch.Tensor,
    fresh: torch.Tensor,
    old_tables: Sequence[tuple[str, int]],
    new_tables: Sequence[tuple[str, int]],
) -> torch.Tensor:
    """`fresh` (the grown layout's tensor) with each table's `saved` rows copied over its first rows:
    the tables (name, rows) stacked along dim 0 in `old_tables` order in `saved`, `new_tables` order
    in `fresh`."""
    parts = dict(zip([name for name, _ in old_tables], saved.split([rows for _, rows in old_tables])))
    grown = fresh.clone()
    start = 0
    for name, rows in new_tables:
        part = parts[name]
        grown[start : start + len(part)] = part
        start += rows
    return grown
