"""The TorchRec-sharded backend against data-parallel training on real worker processes (torchrun and
Spark's TorchDistributor, gloo on CPU), and the device-agnostic parts of the loop (prefetch thread,
precision) on CPU."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
import weakref
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import torch.distributed as dist

from rec_plugin.schema import ColumnSchema, Schema, SchemaError, Tags
from serving.export import torchscript, trained_model
from serving.server import free_port
from training.data import BatchLoader, FileSet
from training.distributed import TorchCollective
from training.evaluate import metrics, predict
from training.launch import launch
from training.loop import Prefetcher, TrainSpec, train_worker, weights_digest
from training.models import MODELS, ModelConfig, build_model
from training.run_directory import RunDirectory
from training.step import OptimizerSettings

REPO = Path(__file__).resolve().parents[1]
FIELDS = {"user_id": 400, "item_id": 300, "category": 20, "device": 4, "hour": 24, "campaign": 1500}
HISTORY = 5  # at most this many recent items per row


def planted_schema() -> Schema:
    """Six single-id features and a list of recent items sharing the item table."""
    categorical = (Tags.CATEGORICAL,)
    return Schema(
        (
            ColumnSchema("click", "float32", (Tags.LABEL,)),
            ColumnSchema("price", "float32", (Tags.CONTINUOUS,)),
            *(ColumnSchema(name, "int32", categorical, cardinality=rows) for name, rows in FIELDS.items()),
            ColumnSchema(
                "recent_items",
                "list<int32>",
                (*categorical, Tags.LIST),
                cardinality=FIELDS["item_id"],
                max_length=HISTORY,
                embedding_table="item_id",
            ),
        )
    )


def write_planted(directory: Path, rows: int, seed: int, files: int = 4) -> FileSet:
    """Clicks from a planted model: per-id biases, a user-group x item-group affinity, a bonus when
    the item is among the recent ones, and the price; Zipf-distributed ids."""
    planted = np.random.default_rng(2024)
    bias = {name: planted.normal(0, 0.6, size) for name, size in FIELDS.items()}
    affinity = planted.normal(0, 1.5, (8, 8))
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True)
    uris = []
    for part in range(files):
        n = rows // files
        ids = {name: (rng.zipf(1.2, n) - 1) % size for name, size in FIELDS.items()}
        lengths = rng.integers(0, HISTORY + 1, n)
        recent = [rng.integers(0, FIELDS["item_id"], k).astype(np.int32) for k in lengths]
        price = rng.normal(0, 1, n).astype(np.float32)
        seen = np.array([item in items for item, items in zip(ids["item_id"], recent)])
        logit = sum(bias[name][ids[name]] for name in FIELDS) - 1.0 + 0.4 * price + 1.2 * seen
        logit += affinity[ids["user_id"] % 8, ids["item_id"] % 8]
        click = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.float32)
        columns = {name: values.astype(np.int32) for name, values in ids.items()}
        table = pa.table(
            {
                "click": click,
                "price": price,
                **columns,
                "recent_items": pa.array(recent, pa.list_(pa.int32())),
            }
        )
        path = directory / f"part-{part}.parquet"
        pq.write_table(table, path, row_group_size=4_000)
        uris.append(path.resolve().as_uri())
    return FileSet(tuple(uris), rows)


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("planted")
    return {
        "root": root,
        "train": write_planted(root / "train", 80_000, seed=0),
        "test": write_planted(root / "test", 40_000, seed=1, files=2),
        "schema": planted_schema(),
        "config": ModelConfig.from_schema("dlrm", planted_schema(), embedding_dim=8),
    }


def spec_for(planted: dict, run_dir: Path, backend: str, **options: object) -> TrainSpec:
    run = RunDirectory(run_dir)
    spec = TrainSpec(
        planted["config"].to_dict(),
        planted["train"].to_dict(),
        run.uri,
        TrainSpec.schema_dict(planted["schema"]),
        backend,
        **{"batch_size": 512, "sparse_optimizer": "adagrad", "sparse_lr": 0.05, "progress": False, **options},
    )
    run.write_model_config(planted["config"])
    run.write_spec(spec.to_dict())
    return spec


# A warning of Python's warnings module, of Python's logging or of torch's logging (`[rank0]:W1208 ...`).
WORKER_WARNING = re.compile(r"Warning: |WARNING:|\]:W\d{4} ")
# How a worker's native crash starts in its stderr: a C++ exception nobody caught, faulthandler's dump.
CRASH_MARKERS = ("terminate called", "Fatal Python error")


def crash_excerpt(stderr: str, size: int = 5000) -> str:
    """What a failed launch's stderr says about why: from the first worker's native-crash report
    when there is one (the launcher's own traceback after it would push it out of sight), else the
    end."""
    starts = [index for marker in CRASH_MARKERS if (index := stderr.find(marker)) >= 0]
    return stderr[min(starts) :][:size] if starts else stderr[-size:]


def torchrun(run_dir: Path, workers: int) -> dict:
    """Trains the spec in `run_dir` on `workers` torchrun processes; rank 0's summary."""
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        str(workers),
    ]
    done = subprocess.run(
        [*command, "-m", "training.worker", str(run_dir)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, crash_excerpt(done.stderr)
    assert not WORKER_WARNING.search(done.stderr), done.stderr  # a run's console shows its own lines
    return json.loads(done.stdout.strip().splitlines()[-1])


def held_out_auc(planted: dict, run_dir: Path) -> float:
    return metrics(*predict(trained_model(run_dir), planted["test"], planted["schema"]))["auc"]


@pytest.fixture(scope="module")
def two_runs(planted, spark, tmp_path_factory) -> dict:
    """The same seed trained data-parallel (torch DDP under torchrun) and sharded (TorchRec under
    Spark's TorchDistributor), 2 workers each."""
    root = tmp_path_factory.mktemp("runs")
    spec_for(planted, root / "ddp", "torch")
    sharded_spec = spec_for(planted, root / "sharded", "torchrec")
    return {
        "ddp": (root / "ddp", torchrun(root / "ddp", 2)),
        "sharded": (root / "sharded", launch(spark, sharded_spec, 2)),
    }


def test_sharded_and_data_parallel_training_reach_the_same_auc(planted, two_runs):
    (ddp_dir, ddp), (sharded_dir, sharded) = two_runs["ddp"], two_runs["sharded"]
    assert ddp["steps"] == sharded["steps"] > 50 and ddp["samples"] == sharded["samples"] == 80_000
    ddp_auc, sharded_auc = held_out_auc(planted, ddp_dir), held_out_auc(planted, sharded_dir)
    assert ddp_auc > 0.70, ddp_auc  # the planted signal is learnt (random scores give 0.5)
    assert abs(ddp_auc - sharded_auc) <= 0.002, (ddp_auc, sharded_auc)


def test_each_sharded_rank_holds_only_its_tables(planted, two_runs):
    config = planted["config"]
    table_bytes = sum(t.num_embeddings * t.embedding_dim * 4 for t in config.tables)
    whole = sum(p.numel() * 4 for p in build_model(config).parameters())
    dense = whole - table_bytes
    ddp, sharded = two_runs["ddp"][1], two_runs["sharded"][1]
    assert ddp["param_bytes_per_rank"] == [whole, whole]
    per_rank = sharded["param_bytes_per_rank"]
    # Every table is on exactly one rank (table-wise), and no rank holds them all.
    assert sum(b - dense for b in per_rank) == table_bytes
    assert all(dense < b < whole for b in per_rank), (per_rank, whole)


def test_a_sharded_run_resumes_on_one_worker(planted, two_runs):
    sharded_dir, sharded = two_runs["sharded"]
    run = RunDirectory(sharded_dir)
    saved = run.load_checkpoint(run.latest_checkpoint())
    # Resumed with nothing left to train: the unsharded weights and table optimizer state come back whole.
    run.write_spec({**run.spec(), "resume": True})
    unchanged = torchrun(sharded_dir, 1)
    again = run.load_checkpoint(run.latest_checkpoint())
    assert unchanged["steps"] == sharded["steps"]
    assert unchanged["weights_digest"] == weights_digest(saved["model"]) == weights_digest(run.weights())
    assert unchanged["param_bytes_per_rank"] == [sum(p.numel() * 4 for p in trained_model(run).parameters())]
    for name, tensor in saved["optimizers"][1]["tables"].items():
        assert torch.equal(again["optimizers"][1]["tables"][name], tensor), name
    # A second epoch on one worker continues from there.
    run.write_spec({**run.spec(), "resume": True, "epochs": 2})
    continued = torchrun(sharded_dir, 1)
    assert continued["steps"] == sharded["steps"] + -(-80_000 // 512)
    assert held_out_auc(planted, sharded_dir) > 0.70


def test_a_sharded_run_exports_as_any_run(planted, two_runs):
    sharded_dir, _ = two_runs["sharded"]
    scripted, eager = torchscript(sharded_dir), trained_model(sharded_dir)
    batch = next(BatchLoader(planted["test"], planted["schema"], 256, shuffle=False).epoch(0))
    with torch.no_grad():
        torch.testing.assert_close(
            scripted(*batch.inputs()).squeeze(1), torch.sigmoid(eager(*batch.inputs()))
        )


@pytest.fixture
def one_rank(tmp_path, request):
    """A one-process torch.distributed group with TorchRec's collective (table-wise unless the test
    is parametrized with a sharding), left afterwards."""
    from training.sharded import TorchRecCollective

    dist.init_process_group("gloo", store=dist.FileStore(str(tmp_path / "store"), 1), rank=0, world_size=1)
    try:
        group = TorchRecCollective(getattr(request, "param", "table_wise"))
    except SchemaError:
        dist.destroy_process_group()
        raise
    yield group
    group.close()


def test_the_sharded_backend_refuses_adam_on_cpu_in_one_line(planted, one_rank):
    model = build_model(planted["config"], one_rank.embeddings)
    with pytest.raises(SchemaError, match="no 'adam' on CPU: use --sparse-optimizer adagrad") as refused:
        one_rank.prepare(model, OptimizerSettings("adam"))
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_sharded_starts_and_scores_as_unsharded(planted, one_rank, name):
    """The same seed gives the same tables and layers; the gathered state loads (strictly) into the
    model built with our tables, which then scores a batch as the sharded one does."""
    config = ModelConfig.from_schema(name, planted["schema"], embedding_dim=8)
    torch.manual_seed(5)
    sharded_model = build_model(config, one_rank.embeddings)
    forward, _ = one_rank.prepare(sharded_model, OptimizerSettings("adagrad"))
    state = one_rank.model_state(sharded_model)
    torch.manual_seed(5)
    plain = build_model(config)
    assert weights_digest(state) == weights_digest(plain.state_dict())
    plain.load_state_dict(state)
    batch = next(BatchLoader(planted["test"], planted["schema"], 256, shuffle=False).epoch(0))
    with torch.no_grad():
        torch.testing.assert_close(forward(*batch.inputs()), plain(*batch.inputs()))


@pytest.mark.parametrize("backend", ["torch", "torchrec"])
def test_a_worker_frees_its_process_group_before_it_returns(planted, tmp_path, monkeypatch, backend):
    """gloo's worker threads live as long as the process group. One still running when the
    interpreter exits, holding a finished collective's tensors, aborts the process as it takes the
    GIL to free them (SIGABRT), so a worker leaves the group with nothing else holding it, which
    joins them."""
    rendezvous = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": free_port(), "RANK": 0, "WORLD_SIZE": 1}
    for name, value in rendezvous.items():
        monkeypatch.setenv(name, str(value))
    freed = []
    close = TorchCollective.close

    def close_and_check(group: TorchCollective) -> None:
        process_group = weakref.ref(dist.group.WORLD)
        close(group)
        freed.append(process_group() is None)

    monkeypatch.setattr(TorchCollective, "close", close_and_check)
    summary = train_worker(spec_for(planted, tmp_path / "run", backend).to_dict())
    assert summary["samples"] == 80_000 and freed == [True]


def test_a_worker_trains_with_the_torch_threads_its_spec_gives(planted, tmp_path):
    """sparkrec tune's local trials share the host's cores: a worker takes the threads its spec gives,
    not the host's cores (here one more than those, which is no default)."""
    before, threads = torch.get_num_threads(), (os.cpu_count() or 1) + 1
    try:
        train_worker(spec_for(planted, tmp_path / "run", "single", torch_threads=threads).to_dict())
        assert torch.get_num_threads() == threads
    finally:
        torch.set_num_threads(before)


def test_bf16_training_with_the_prefetch_thread_on_cpu(planted, tmp_path):
    spec = spec_for(
        planted, tmp_path, "single", precision="bf16", sparse_optimizer="adam", sparse_lr=0.01, prefetch=2
    )
    summary = train_worker(spec.to_dict())
    assert summary["device"] == "cpu" and summary["samples"] == 80_000
    assert 0.0 <= summary["data_wait_share"] < 1.0
    assert np.mean(summary["losses"][-20:]) < np.mean(summary["losses"][:20]) - 0.02
    assert held_out_auc(planted, tmp_path) > 0.70


@pytest.mark.parametrize("prefetch", [0, 2])
def test_a_loader_error_stops_training_with_or_without_the_prefetch_thread(planted, tmp_path, prefetch):
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"not parquet")
    files = FileSet((*planted["train"].files, broken.as_uri()), planted["train"].rows)
    spec = spec_for(planted, tmp_path / "run", "single", prefetch=prefetch)
    with pytest.raises(Exception, match="broken.parquet|Parquet|parquet"):
        train_worker({**spec.to_dict(), "train": files.to_dict()})


def test_the_prefetch_thread_answers_none_after_the_end_and_ends_when_the_step_raises(planted):
    """A rank whose shard ran out asks again while the others still step (on padding): the answer is
    None again, not a wait for a batch that never comes (a hang of every rank on a GPU, where the
    thread prefetches by default). A step that raises leaves no reading thread behind."""
    loader = BatchLoader(planted["test"], planted["schema"], 4096, shuffle=False)
    threads = set(threading.enumerate())
    with Prefetcher(loader.epoch(0), torch.device("cpu"), 2) as batches:
        while batches.next() is not None:
            pass
        again: list = []
        asking = threading.Thread(target=lambda: again.append(batches.next()), daemon=True)
        asking.start()
        asking.join(timeout=30)
        assert again == [None], "next() after the end waited for a batch"

    def ended(deadline_s: float = 30) -> bool:
        """Whether the reading threads are gone within `deadline_s` (a read in progress may finish)."""
        deadline = time.perf_counter() + deadline_s
        while not set(threading.enumerate()) <= threads and time.perf_counter() < deadline:
            time.sleep(0.05)
        return set(threading.enumerate()) <= threads

    with pytest.raises(RuntimeError, match="the step failed"):
        with Prefetcher(loader.epoch(0), torch.device("cpu"), 1) as batches:
            assert batches.next() is not None
            raise RuntimeError("the step failed")  # the thread is blocked on its full queue here
    assert ended()

    def hung_after_one(released: threading.Event):
        """The real loader's first batch, then a read that hangs until the test releases it."""
        yield next(loader.epoch(0))
        released.wait(timeout=120)
        yield from loader.epoch(0)

    released = threading.Event()
    with pytest.raises(RuntimeError, match="the step failed"):
        with Prefetcher(hung_after_one(released), torch.device("cpu"), 1) as batches:
            assert batches.next() is not None
            started = time.perf_counter()
            raise RuntimeError("the step failed")  # the thread is in the hung read here
    assert time.perf_counter() - started < 10 * Prefetcher.EXIT_WAIT_S, "the hung read hid the error"
    released.set()  # the read returns: the thread ends instead of blocking on a put nobody takes
    assert ended()


@pytest.mark.parametrize("one_rank", ["column_wise", "auto"], indirect=True)
def test_the_other_shardings_plan_and_score_on_cpu(planted, one_rank):
    torch.manual_seed(5)
    sharded_model = build_model(planted["config"], one_rank.embeddings)
    forward, _ = one_rank.prepare(sharded_model, OptimizerSettings("adagrad"))
    plain = build_model(planted["config"])
    plain.load_state_dict(one_rank.model_state(sharded_model))
    batch = next(BatchLoader(planted["test"], planted["schema"], 256, shuffle=False).epoch(0))
    with torch.no_grad():
        torch.testing.assert_close(forward(*batch.inputs()), plain(*batch.inputs()))


@pytest.mark.parametrize("one_rank", ["row_wise"], indirect=True)
def test_row_wise_sharding_on_cpu_is_refused_by_a_worker_in_one_line(planted, one_rank):
    model = build_model(planted["config"], one_rank.embeddings)
    with pytest.raises(SchemaError, match="row_wise sharding needs GPUs") as refused:
        one_rank.prepare(model, OptimizerSettings("adagrad"))
    assert "\n" not in str(refused.value)
