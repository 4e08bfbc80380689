"""`--backend torchrec`: the models' embedding tables in TorchRec's EmbeddingBagCollection, sharded
across the workers by DistributedModelParallel and its planner; the dense layers stay data-parallel.

A model is built as usual with ShardedEmbeddings in place of EmbeddingCollection (same constructor,
same call), so every CTR model runs sharded; the dim-1 first-order weights of the wide parts, which
FBGEMM's kernels cannot hold, stay replicated like the dense layers. Each batch's ids become one
KeyedJaggedTensor (single-id features have length 1, list features their lengths); TorchRec sends
each feature's ids to the rank holding its table and the pooled vectors back. FBGEMM's fused
optimizer updates the tables inside backward (Adagrad on CPU, whose FBGEMM kernels have no Adam;
Adam or Adagrad on GPU), Adam the dense layers after DDP averages their gradients.

Checkpoints and final weights are unsharded, in the layout of the model built with
EmbeddingCollection: rank 0 gathers each table, and a resume on any number of workers copies each
rank's rows back out (a resume on a data-parallel backend is refused: the fused optimizer's states
have another layout). Serving and evaluation read the run like any other.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator, Sequence

import torch
import torch.distributed as dist
from fbgemm_gpu.split_embedding_configs import EmbOptimType
from torch import nn
from torch.distributed._shard.sharded_tensor import ShardedTensor
from torch.optim import Optimizer
from torchrec.distributed.embedding_types import EmbeddingComputeKernel
from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
from torchrec.distributed.model_parallel import DistributedModelParallel
from torchrec.distributed.planner import EmbeddingShardingPlanner
from torchrec.distributed.planner.storage_reservations import HeuristicalStorageReservation
from torchrec.distributed.planner.types import (
    KernelConfig,
    ParameterConstraints,
    TopologyFactory,
    TrainerConfig,
)
from torchrec.distributed.types import ShardingType
from torchrec.modules.embedding_configs import EmbeddingBagConfig, PoolingType
from torchrec.modules.embedding_modules import EmbeddingBagCollection
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from rec_plugin.schema import SchemaError
from training.checkpoint import Saved
from training.distributed import (
    AUTO_SHARDING,
    SHARDINGS,
    TorchCollective,
    average_rows_or_allreduce,
    refuse_torchrec_on_cpu,
)
from training.models import sparse_and_dense_parameters
from training.models.config import TableConfig
from training.models.parts import EmbeddingCollection, initial_rows, refuse_id
from training.step import ADAGRAD_EPS, OptimizerSettings

POOLING = {"sum": PoolingType.SUM, "mean": PoolingType.MEAN}
# FBGEMM's fused optimizers for our sparse optimizer names; its CPU kernels have Adagrad, not Adam.
FUSED_OPTIMIZERS = {"adagrad": EmbOptimType.EXACT_ADAGRAD, "adam": EmbOptimType.ADAM}
# FBGEMM's table kernels take rows of a multiple of 4 floats.
FBGEMM_DIM_MULTIPLE = 4
# TorchRec's default reservation of each device's memory, set out: a margin of 15% of it, the batches'
# ids, and the dense layers at 6x their size (parameters, optimizer state, DDP's buffers).
RESERVED_MEMORY_SHARE = 0.15
DENSE_MEMORY_MULTIPLE = 6
# Deprecation notices of the pinned torch and torchrec that no call of ours can act on: DMP wraps the
# dense layers in DDP with `broadcast_buffers`, and its tables' state comes as ShardedTensors.
warnings.filterwarnings("ignore", category=FutureWarning, module=r"torchrec\.distributed\.model_parallel")
warnings.filterwarnings("ignore", message="Please use DTensor instead", category=FutureWarning)
# torch logs once that is_fx_tracing, which TorchRec's modules call, also answers for torch.export.
logging.getLogger("torch.fx._symbolic_trace").setLevel(logging.ERROR)


class ShardedEmbeddings(nn.Module):
    """EmbeddingCollection's tables in a TorchRec EmbeddingBagCollection (built on the meta device:
    DistributedModelParallel allocates each rank's shards only). Returns the same blocks as
    EmbeddingCollection: per embedding dim, ascending, [B, n, dim] of its single-id features, then
    [B, n, dim] of its pooled list features."""

    def __init__(
        self,
        tables: Sequence[TableConfig],
        id_features: Sequence[str],
        list_features: Sequence[str],
        dim: int | None = None,
        init_std: float = 0.05,
    ) -> None:
        super().__init__()
        self.tables = [
            TableConfig(t.name, t.num_embeddings, dim or t.embedding_dim, t.features, t.pooling)
            for t in tables
        ]
        self.init_std = init_std
        table_of = {feature: table for table in self.tables for feature in table.features}
        self.id_features = [f for f in id_features if f in table_of]
        self.list_features = [f for f in list_features if f in table_of]
        self.id_columns = [c for c, f in enumerate(id_features) if f in table_of]
        self.list_slots = [s for s, f in enumerate(list_features) if f in table_of]
        self.rows = {f: table_of[f].num_embeddings for f in (*self.id_features, *self.list_features)}
        self.table_names = {f: table_of[f].name for f in self.rows}
        self.dims = sorted({t.embedding_dim for t in self.tables})
        self.order = [  # (dim, single-id features, list features) per block pair
            (
                d,
                [f for f in self.id_features if table_of[f].embedding_dim == d],
                [f for f in self.list_features if table_of[f].embedding_dim == d],
            )
            for d in self.dims
        ]
        self.collection = EmbeddingBagCollection(
            [
                EmbeddingBagConfig(
                    name=t.name,
                    embedding_dim=t.embedding_dim,
                    num_embeddings=t.num_embeddings,
                    feature_names=list(t.features),
                    pooling=POOLING[t.pooling],
                )
                for t in self.tables
            ],
            device=torch.device("meta"),
        )

    def forward(
        self, ids: torch.Tensor, list_values: list[torch.Tensor], list_offsets: list[torch.Tensor]
    ) -> list[torch.Tensor]:
        batch = ids.shape[0]
        singles = ids[:, self.id_columns]
        self._check_ids(singles)
        for slot, feature in zip(self.list_slots, self.list_features):
            self._check(feature, list_values[slot])
        # KeyedJaggedTensor's layout: key by key, each key's ids of every row in row order.
        values = [singles.t().reshape(-1)] + [list_values[s] for s in self.list_slots]
        lengths = [torch.ones(singles.numel(), dtype=torch.int64, device=ids.device)]
        lengths += [list_offsets[s].diff() for s in self.list_slots]
        keys = [*self.id_features, *self.list_features]
        features = KeyedJaggedTensor(
            keys=keys, values=torch.cat(values), lengths=torch.cat(lengths), stride=batch
        )
        pooled = self.collection(features).to_dict()
        blocks: list[torch.Tensor] = []
        for _, singles_of_dim, lists_of_dim in self.order:
            for group in (singles_of_dim, lists_of_dim):
                if group:
                    blocks.append(torch.stack([pooled[f] for f in group], dim=1))
        return blocks

    def _check_ids(self, singles: torch.Tensor) -> None:
        """Single-id columns checked at once (a min and max per column), as FusedTables does."""
        if singles.numel() == 0:
            return
        low, high = torch.aminmax(singles, dim=0)
        for feature, low_id, high_id in zip(self.id_features, low.tolist(), high.tolist()):
            self._refuse_outside(feature, low_id, high_id)

    def _check(self, feature: str, values: torch.Tensor) -> None:
        if values.numel() > 0:
            low, high = torch.aminmax(values)
            self._refuse_outside(feature, int(low), int(high))

    def _refuse_outside(self, feature: str, low: int, high: int) -> None:
        """An id past its table fails naming the feature, before TorchRec reads it."""
        rows = self.rows[feature]
        if high >= rows or low < 0:
            refuse_id(feature, self.table_names[feature], high if high >= rows else low, rows)

    def unsharded_layout(self) -> list[list[TableConfig]]:
        """The tables of each FusedTables group of the EmbeddingCollection this replaces, in order."""
        return [[t for t in self.tables if t.embedding_dim == d] for d in self.dims]


def sharded_or_replicated(
    tables: Sequence[TableConfig],
    id_features: Sequence[str],
    list_features: Sequence[str],
    dim: int | None = None,
    init_std: float = 0.05,
) -> nn.Module:
    """TorchRec's sharded tables where FBGEMM can hold them (its kernels need dims divisible by 4);
    otherwise (the dim-1 first-order weights of Logistic, Wide&Deep and DeepFM) our tables, replicated
    on every rank and averaged by DDP like the dense layers."""
    if all((dim or table.embedding_dim) % FBGEMM_DIM_MULTIPLE == 0 for table in tables):
        return ShardedEmbeddings(tables, id_features, list_features, dim, init_std)
    return EmbeddingCollection(tables, id_features, list_features, dim, init_std)


def _default_reservation(model: nn.Module) -> HeuristicalStorageReservation:
    """TorchRec's default reservation, built as its planner builds it, less its two notices: the
    constructor's deprecation (the policy stays TorchRec's default in this pin) and the warning that
    dense tensors not materialized are sized wrong, given here their size as the planner counts it."""
    tables = [m for m in model.modules() if isinstance(m, EmbeddingBagCollection)]  # what the planner shards
    in_tables = {id(p) for module in tables for p in module.parameters()}
    dense = sum(p.numel() * p.element_size() for p in model.parameters() if id(p) not in in_tables)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return HeuristicalStorageReservation(
            RESERVED_MEMORY_SHARE,
            parameter_multiplier=DENSE_MEMORY_MULTIPLE,
            dense_tensor_estimate=max(1, DENSE_MEMORY_MULTIPLE * dense),
        )


def _sharded_modules(model: nn.Module) -> Iterator[tuple[str, ShardedEmbeddings]]:
    for path, module in model.named_modules():
        if isinstance(module, ShardedEmbeddings):
            yield path, module


def _weight_key(path: str, table: str) -> str:
    return f"{path}.collection.embedding_bags.{table}.weight"


def _fused_key(path: str, group: int, what: str) -> str:
    """A key of the unsharded layout: EmbeddingCollection's FusedTables `group`."""
    return f"{path}.groups.{group}.{what}"


def _region(offsets: Sequence[int], sizes: Sequence[int]) -> tuple[slice, ...]:
    """The slices of a whole tensor that one shard covers."""
    return tuple(slice(start, start + size) for start, size in zip(offsets, sizes))


def _fill_local_shards(sharded: ShardedTensor, full: torch.Tensor) -> None:
    """Copies this rank's part of `full` into its shards of `sharded` (rows, columns or whole tables)."""
    for shard in sharded.local_shards():
        metadata = shard.metadata
        shard.tensor.copy_(full[_region(metadata.shard_offsets, metadata.shard_sizes)])


def _local_pieces(value: torch.Tensor) -> list[tuple[list[int], torch.Tensor]]:
    """(offsets, tensor on the host) of each of this rank's shards of `value`."""
    if not isinstance(value, ShardedTensor):
        return [([0] * value.dim(), value.detach().cpu())]
    return [(list(s.metadata.shard_offsets), s.tensor.detach().cpu()) for s in value.local_shards()]


def _gathered(sharded: ShardedTensor, rank: int) -> torch.Tensor | None:
    """The whole tensor on rank 0 (None elsewhere); every rank calls it."""
    full = torch.empty(sharded.size(), dtype=sharded.dtype) if rank == 0 else None
    sharded.gather(dst=0, out=full)
    return full


class TorchRecCollective(TorchCollective):
    """torch.distributed workers (torchrun, TorchDistributor) with the tables sharded by TorchRec."""

    name = "torchrec"
    embeddings = staticmethod(sharded_or_replicated)

    def __init__(self, sharding: str = "table_wise") -> None:
        super().__init__()
        if sharding not in SHARDINGS:
            raise SchemaError(f"sharding {sharding!r} is not one of {', '.join(SHARDINGS)}")
        self.sharding = sharding

    def prepare(self, model: nn.Module, settings: OptimizerSettings) -> tuple[nn.Module, list[Optimizer]]:
        if self.device.type == "cpu":
            refuse_torchrec_on_cpu(self.sharding, settings.sparse)
        modules = dict(_sharded_modules(model))
        constraints = {
            table.name: ParameterConstraints(
                sharding_types=self._sharding_types(),
                compute_kernels=[EmbeddingComputeKernel.FUSED.value],
            )
            for module in modules.values()
            for table in module.tables
        }
        fused = {"optimizer": FUSED_OPTIMIZERS[settings.sparse], "learning_rate": settings.sparse_lr}
        if settings.sparse == "adagrad":
            fused["eps"] = ADAGRAD_EPS
        sharders = [EmbeddingBagCollectionSharder(fused_params=fused)]
        # A GPU's own memory, not the 32 GiB TorchRec assumes of one.
        memory = (
            torch.cuda.get_device_properties(self.device).total_memory if self.device.type == "cuda" else None
        )
        topology = TopologyFactory.create_topology(
            TrainerConfig(world_size=self.size, local_world_size=self.local_size, hbm_cap_bytes=memory),
            kernel_config=KernelConfig(compute_device=self.device.type),
        )
        planner = EmbeddingShardingPlanner(
            topology=topology,
            constraints=constraints,
            storage_reservation=_default_reservation(model),
        )
        plan = planner.collective_plan(model, sharders, dist.GroupMember.WORLD)
        self.model = model
        sharded = DistributedModelParallel(model, device=self.device, plan=plan, sharders=sharders)
        # DMP wraps the replicated parameters in DDP (its `_dmp_wrapped_module`, absent when every
        # parameter is sharded); the first-order tables among them have sparse gradients.
        if isinstance(data_parallel := sharded._dmp_wrapped_module, nn.parallel.DistributedDataParallel):
            data_parallel.register_comm_hook(None, average_rows_or_allreduce)
        self.sharded = sharded
        # Parameters outside the sharded tables: replicated, stepped here after DDP averages them.
        sparse, dense = (
            [p for name, p in named if not any(name.startswith(f"{path}.") for path in modules)]
            for named in sparse_and_dense_parameters(model)
        )
        self._initialise(sharded)
        replicated = [settings.sparse_optimizer(sparse)] if sparse else []
        replicated.append(settings.dense_optimizer(dense))
        return sharded, [*replicated, sharded.fused_optimizer]

    def _sharding_types(self) -> list[str]:
        """The chosen type, or with "auto" every type the device has for fused tables (all but
        data-parallel, which would replicate them): the planner picks among them per table."""
        if self.sharding != AUTO_SHARDING:
            return [ShardingType(self.sharding).value]
        offered = EmbeddingBagCollectionSharder().sharding_types(self.device.type)
        return [kind for kind in offered if kind != ShardingType.DATA_PARALLEL.value]

    def _initialise(self, sharded: DistributedModelParallel) -> None:
        """Each rank's shards drawn as EmbeddingCollection draws the whole tables (initial_rows):
        the same start as the other backends from one seed, and no rank builds a table it lacks."""
        state = sharded.state_dict()
        for path, module in _sharded_modules(self.model):
            for table in module.tables:
                weight = state[_weight_key(path, table.name)]
                if weight.local_shards():
                    _fill_local_shards(weight, initial_rows(table, table.embedding_dim, module.init_std))
        sharded.load_state_dict(state)

    def model_state(self, model: nn.Module) -> dict[str, torch.Tensor] | None:
        state = self.sharded.state_dict()
        whole: dict[str, torch.Tensor] = {}
        for path, module in _sharded_modules(self.model):
            for group, tables in enumerate(module.unsharded_layout()):
                parts = [_gathered(state.pop(_weight_key(path, t.name)), self.rank) for t in tables]
                if self.rank == 0:
                    whole[_fused_key(path, group, "table.weight")] = torch.cat(parts)
                    rows = [t.num_embeddings for t in tables]
                    whole[_fused_key(path, group, "table_rows")] = torch.tensor(rows, dtype=torch.int64)
        if self.rank != 0:
            return None
        return {**{name: tensor.detach().cpu() for name, tensor in state.items()}, **whole}

    def optimizer_states(self, optimizers: list[Optimizer]) -> list[dict] | None:
        """The replicated optimizers' states and each table's fused optimizer state, unsharded, on
        rank 0. A rank's fused optimizer lists only its own tables, so each sends its shards to rank 0."""
        *replicated, fused = optimizers
        pieces = [
            (f"{key}/{name}", tuple(value.size()), _local_pieces(value))
            for key, states in fused.state_dict()["state"].items()
            for name, value in states.items()
        ]
        everyone: list | None = [None] * self.size if self.rank == 0 else None
        dist.gather_object(pieces, everyone, dst=0)
        if everyone is None:
            return None
        tables: dict[str, torch.Tensor] = {}
        for name, size, shards in (piece for rank_pieces in everyone for piece in rank_pieces):
            whole = tables.setdefault(name, torch.zeros(size))
            for offsets, tensor in shards:
                whole[_region(offsets, tensor.shape)] = tensor
        return [*(optimizer.state_dict() for optimizer in replicated), {"tables": tables}]

    def restore(self, model: nn.Module, optimizers: list[Optimizer], saved: Saved) -> None:
        state = self.sharded.state_dict()
        dense_keys = set(state)
        for path, module in _sharded_modules(self.model):
            for group, tables in enumerate(module.unsharded_layout()):
                whole = saved.model[_fused_key(path, group, "table.weight")]
                rows = [t.num_embeddings for t in tables]
                saved_rows = saved.model[_fused_key(path, group, "table_rows")].tolist()
                if saved_rows != rows:
                    raise SchemaError(
                        f"the checkpoint's tables hold {saved_rows} rows but the model's schema gives "
                        f"{rows}; resume on the same workflow"
                    )
                for table, part in zip(tables, whole.split(rows)):
                    key = _weight_key(path, table.name)
                    _fill_local_shards(state[key], part)
                    dense_keys.discard(key)
        for key in dense_keys:
            state[key] = saved.model[key]
        self.sharded.load_state_dict(state)
        *replicated, fused = optimizers
        *replicated_states, fused_state = saved.optimizers
        for optimizer, state in zip(replicated, replicated_states, strict=True):
            optimizer.load_state_dict(state)
        current = fused.state_dict()
        for key, states in current["state"].items():
            for name, value in states.items():
                full = fused_state["tables"][f"{key}/{name}"]
                if isinstance(value, ShardedTensor):
                    _fill_local_shards(value, full)
                else:
                    states[name] = full
        fused.load_state_dict(current)

    def close(self) -> None:
        """Drops the sharded model first: it holds the process group, which leaving must free."""
        for held in ("sharded", "model"):
            vars(self).pop(held, None)
        super().close()

    def parameter_bytes(self, model: nn.Module) -> int:
        total = 0
        for _, tensor in self.sharded.state_dict(keep_vars=True).items():
            if isinstance(tensor, ShardedTensor):
                total += sum(s.tensor.numel() * s.tensor.element_size() for s in tensor.local_shards())
            elif isinstance(tensor, nn.Parameter):
                total += tensor.numel() * tensor.element_size()
        return total
