"""Safe rollouts on a real tritonserver (127.0.0.1): an NCF click model's versions exported with a
Spark-fitted workflow, a client sending raw rows continuously through a Router while a candidate is
pushed beside production, split by users, promoted, and then a next candidate rolled back; no request
fails, and each retired version is unloaded."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
import torch
import tritonclient.http as triton_http
from test_serving_cf import ECOMMERCE, _frame, _raw_rows

from rec_plugin.errors import InputError
from rec_plugin.interactions import ncf_schema
from rec_plugin.ops import Categorify
from rec_plugin.schema import Schema
from rec_plugin.workflow import Node, Workflow
from serving.export import torchscript
from serving.preprocess import export_preprocess
from serving.repository import (
    add_version,
    ensemble_model_name,
    preprocess_model_name,
    torchscript_file,
    versions,
    write_ensemble,
)
from serving.rollout import Router, Routing, promote, push_candidate, rollback, routing_file, serve_production
from serving.server import TritonServer
from spark_jobs.export import main as export_main
from training.models import ModelConfig, build_model
from training.run_directory import RunDirectory

NAME = "ctr"
USERS = 40
DRAIN_S = 0.5


def _run(location: Path, schema: Schema, seed: int) -> RunDirectory:
    """A run directory as `sparkrec train` leaves one, at a small NCF's seeded initial weights."""
    run = RunDirectory(location)
    config = ModelConfig.from_schema("ncf", schema, embedding_dim=8, ncf_mlp=[16, 8])
    torch.manual_seed(seed)
    run.write_model_config(config)
    run.save_weights(build_model(config).state_dict())
    run.write_schema(schema)
    return run


@pytest.fixture(scope="module")
def exported(spark, tmp_path_factory) -> tuple[Path, Callable[[], int]]:
    """A repository with versions 1 and 2 exported (`sparkrec export --workflow` without --push), and
    a function that exports the next version."""
    root = tmp_path_factory.mktemp("rollout")
    graph = [Node(("user_id", "item_id"), (Categorify(freq_threshold=3),)), "click"]
    workflow = Workflow(graph, ECOMMERCE.input_schema()).fit(_frame(spark, _raw_rows()))
    workflow.save(str(root / "workflow"))
    workflow.release()
    schema = ncf_schema(Workflow.load_schema(str(root / "workflow"), spark))
    preprocess = export_preprocess(spark, str(root / "workflow"), root / "preprocess", schema).parent
    repository = root / "repository"

    def export_next() -> int:
        seed = len(versions(repository, ensemble_model_name(NAME)))
        run = _run(root / f"run{seed}", schema, seed)
        version = add_version(repository, ensemble_model_name(NAME), torchscript(run), schema=schema)
        return write_ensemble(repository, NAME, preprocess, version)

    assert [export_next(), export_next()] == [1, 2]
    return repository, export_next


def test_a_routing_splits_users_stickily_is_checked_and_is_saved_whole(tmp_path):
    users = [f"u{i}" for i in range(1000)]

    def on_candidate(routing: Routing) -> set[str]:
        return {u for u in users if routing.version_for(u) == routing.candidate}

    half = Routing(1, 2, 0.5)
    assert 400 < len(on_candidate(half)) < 600
    assert on_candidate(half) < on_candidate(Routing(1, 2, 0.8))  # a growing share only adds users
    assert on_candidate(half) != on_candidate(Routing(1, 3, 0.5))  # each candidate splits anew
    assert on_candidate(Routing(1, 2, 1.0)) == set(users) and not on_candidate(Routing(1, 2, 0.0))
    assert {Routing(1).version_for(u) for u in users} == {1}
    for bad, says in [
        ((1, 2, 1.5), "between 0 and 1"),
        ((1, 1, 0.5), "production already"),
        ((1, None, 0.5), "needs a candidate"),
    ]:
        with pytest.raises(InputError, match=says):
            Routing(*bad)
    with pytest.raises(InputError, match="serve_production first"):
        Routing.load(tmp_path, NAME)
    half.save(tmp_path, NAME)
    Routing(2).save(tmp_path, NAME)
    assert Routing.load(tmp_path, NAME) == Routing(2)
    assert [p.name for p in tmp_path.iterdir()] == [routing_file(tmp_path, NAME).name]  # no temp left


class Sender(threading.Thread):
    """A client sending one user's rows after another, back to back, through its own Router: the
    version each request was served by, and every request that failed."""

    def __init__(self, url: str, repository: Path) -> None:
        super().__init__(daemon=True)
        self.client = triton_http.InferenceServerClient(url)
        self.router = Router(self.client, repository, NAME)
        self.served: list[int] = []
        self.failed: list[str] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        i = 0
        while not self.stopping.is_set():
            user = f"u{i % USERS}"
            rows = pd.DataFrame({"user_id": [user] * 4, "item_id": ["i0", "i1", "i2", "i9"]})
            try:
                routed = self.router.predict(rows, key=user)
                assert routed.probabilities.shape == (4, 1)
                self.served.append(routed.version)
            except Exception as error:  # noqa: BLE001 - every failure is counted, none expected
                self.failed.append(repr(error))
            i += 1
        self.client.close()

    def since(self, mark: int) -> set[int]:
        return set(self.served[mark:])

    def wait_for(self, wanted: set[int], mark: int, timeout: float = 30.0) -> None:
        """Waits until requests after `mark` were served by every version in `wanted`."""
        deadline = time.monotonic() + timeout
        while not wanted <= self.since(mark):
            assert time.monotonic() < deadline, f"served {self.since(mark)}, not {wanted}; {self.failed}"
            assert self.is_alive(), self.failed
            time.sleep(0.05)


def _requests(client: triton_http.InferenceServerClient, model: str) -> int:
    stats = client.get_inference_statistics(model)["model_stats"]
    return sum(int(s["inference_count"]) for s in stats)


def _ready(client: triton_http.InferenceServerClient, model: str, version: int) -> bool:
    return client.is_model_ready(model, str(version))


def test_push_split_promote_and_rollback_while_a_client_sends_without_a_failed_request(exported, tmp_path):
    repository, export_next = exported
    with TritonServer(repository, log=tmp_path / "tritonserver.log") as server:
        client = triton_http.InferenceServerClient(server.http_url)
        assert serve_production(client, repository, NAME, 1) == Routing(1)
        assert not _ready(client, f"{NAME}_v2", 1) and not _ready(client, ensemble_model_name(NAME), 2)
        sender = Sender(server.http_url, repository)
        sender.start()
        sender.wait_for({1}, 0)

        # Version 2 beside production, half the users on it (a user stays on its side).
        with pytest.raises(InputError, match="production already"):
            push_candidate(client, repository, NAME, 1, 0.5)
        split = push_candidate(client, repository, NAME, 2, 0.5)
        assert split == Routing(1, 2, 0.5) and Routing.load(repository, NAME) == split
        on_candidate = {f"u{u}" for u in range(USERS) if split.version_for(f"u{u}") == 2}
        assert 0 < len(on_candidate) < USERS
        mark = len(sender.served)
        sender.wait_for({1, 2}, mark)
        assert _requests(client, f"{NAME}_v1") > 0 and _requests(client, f"{NAME}_v2") > 0

        # Promote: version 2 takes all traffic, version 1 is unloaded after the drain.
        assert promote(client, repository, NAME, drain_s=DRAIN_S) == Routing(2)
        mark = len(sender.served)
        for model in (ensemble_model_name(NAME), preprocess_model_name(NAME)):
            assert not _ready(client, model, 1) and _ready(client, model, 2)
        assert not client.is_model_ready(f"{NAME}_v1") and client.is_model_ready(f"{NAME}_v2")
        time.sleep(1.0)
        assert sender.since(mark) == {2}

        # The next version, exported while 2 serves, pushed with half the users, rolled back.
        assert export_next() == 3
        assert push_candidate(client, repository, NAME, 3, 0.5) == Routing(2, 3, 0.5)
        with pytest.raises(InputError, match="candidate 3 already"):
            push_candidate(client, repository, NAME, 1, 0.5)
        mark = len(sender.served)
        sender.wait_for({2, 3}, mark)
        assert rollback(client, repository, NAME, drain_s=DRAIN_S) == Routing(2)
        mark = len(sender.served)
        for model in (ensemble_model_name(NAME), preprocess_model_name(NAME)):
            assert not _ready(client, model, 3) and _ready(client, model, 2)
        assert not client.is_model_ready(f"{NAME}_v3") and client.is_model_ready(f"{NAME}_v2")
        with pytest.raises(InputError, match="no candidate"):
            promote(client, repository, NAME)
        time.sleep(1.0)
        assert sender.since(mark) == {2}

        # A candidate whose model cannot load (a damaged file): refused in one line, nothing routed to
        # it, production serves on and the configs on disk pin production alone again.
        broken = export_next()
        torchscript_file(repository, NAME, broken).write_bytes(b"not a TorchScript archive")
        mark = len(sender.served)
        with pytest.raises(InputError, match=rf"^{NAME}_v{broken} did not load: ") as refused:
            push_candidate(client, repository, NAME, broken, 0.5)
        assert "\n" not in str(refused.value), str(refused.value)
        assert Routing.load(repository, NAME) == Routing(2)
        pinned = (repository / ensemble_model_name(NAME) / "config.pbtxt").read_text()
        assert "version_policy: { specific: { versions: [ 2 ] } }" in pinned
        assert _ready(client, ensemble_model_name(NAME), 2) and client.is_model_ready(f"{NAME}_v2")
        time.sleep(1.0)
        assert sender.since(mark) == {2} and sender.failed == []

        # Version 3 deployed as production over the routed 2 (retrain --deploy): loaded beside it, all
        # traffic moved, 2 unloaded after the drain.
        assert serve_production(client, repository, NAME, 3, drain_s=DRAIN_S) == Routing(3)
        mark = len(sender.served)
        assert not client.is_model_ready(f"{NAME}_v2") and client.is_model_ready(f"{NAME}_v3")
        time.sleep(1.0)
        assert sender.since(mark) == {3}
        rollout_retries = sender.router.retries  # only a request slower than the drain would retry

        # A routing that names a version the server lost (as after a restart): each request is retried
        # on production, and counted.
        Routing(3, 2, 1.0).save(repository, NAME)
        mark = len(sender.served)
        deadline = time.monotonic() + 30
        while sender.router.retries < rollout_retries + 3:
            assert time.monotonic() < deadline and sender.failed == [], sender.failed
            time.sleep(0.05)
        Routing(3).save(repository, NAME)
        assert sender.since(mark) == {3}

        sender.stopping.set()
        sender.join(timeout=30)
        assert sender.failed == [] and set(sender.served) == {1, 2, 3}
        print(f"served by version {dict(sender.router.served)}; retried during the rollout {rollout_retries}")
        client.close()


def test_export_push_of_a_name_served_through_a_rollout_is_refused_before_any_work(tmp_path):
    """`export --push` loads a name under the `latest 2` policy its configs get, which would unload the
    versions a rollout pinned while routers still send to them."""
    Routing(1, candidate=2, candidate_share=0.1).save(tmp_path, NAME)
    args = ["--run-dir", str(tmp_path / "run"), "--repository", str(tmp_path), "--name", NAME]
    with pytest.raises(InputError, match=rf"^{NAME} is served through a rollout \("):
        export_main([*args, "--push", "127.0.0.1:1"])
    assert [p.name for p in tmp_path.iterdir()] == [routing_file(tmp_path, NAME).name]
