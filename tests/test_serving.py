"""Serving the trained model from a real tritonserver on 127.0.0.1: repository layout and configs,
explicit load/unload, two versions at once, bad requests, clean shutdown."""

from __future__ import annotations

import fcntl
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from tritonclient.utils import InferenceServerException

from rec_plugin.errors import InputError
from rec_plugin.schema import CAT_BAD_LENGTH, DAY, INT_NOT_INTEGER, INT_OUT_OF_RANGE, LINE_NUMBER, SOURCE_FILE
from rec_plugin.workflow import Workflow
from serving.client import _inputs, predict, predict_raw, raw_spec
from serving.export import export_run, onnx_program, torchscript
from serving.pipeline import call_model, table_features
from serving.preprocess import export_preprocess
from serving.preprocessor import Preprocessor, RawBatch
from serving.repository import (
    QUEUE_DELAY_US,
    add_version,
    config_pbtxt,
    pin_versions,
    trained_schema,
    versions,
    write_ensemble,
)
from serving.server import Ports, TritonServer, free_port
from spark_jobs.monitor import prediction_quality
from spark_jobs.score import score
from spark_jobs.train import feature_files
from training.data import BatchLoader
from training.loop import TrainSpec, train_worker
from training.models import ModelConfig
from training.run_directory import RunDirectory


@pytest.fixture(scope="module")
def schema(spark, default_features):
    """The default workflow's output schema: the model's inputs, and the served tensors' dims."""
    root, _ = default_features
    return Workflow.load_schema(str(root / "workflow"), spark)


@pytest.fixture(scope="module")
def runs(spark, default_features, schema, tmp_path_factory):
    """Two trained DLRM runs (different seeds) on the default features, and a batch of feature rows."""
    root, report = default_features
    train = feature_files(spark, str(root / "features"), report["features_version"], [0, 1])
    valid = feature_files(spark, str(root / "features"), report["features_version"], [2])
    config = ModelConfig.from_schema("dlrm", schema)
    run_dirs = []
    for seed in (0, 1):
        run_dir = tmp_path_factory.mktemp(f"run{seed}")
        RunDirectory(run_dir).write_model_config(config)
        spec = TrainSpec(
            config.to_dict(), train.to_dict(), str(run_dir), TrainSpec.schema_dict(schema),
            batch_size=4096, seed=seed, progress=False,
        )  # fmt: skip
        train_worker(spec.to_dict())
        run_dirs.append(run_dir)
    batch = next(BatchLoader(valid, schema, 512, shuffle=False).epoch(0))
    return run_dirs, batch.dense.numpy(), batch.ids.values.numpy()


def test_an_export_whose_workflow_cannot_serve_the_run_writes_no_version(spark, runs, tmp_path):
    """The preprocessing is staged before the model's version is written: a wrong --workflow (here a
    folder holding none) is refused and leaves the repository without an orphan model version."""
    run_dirs, _, _ = runs
    repository = tmp_path / "repository"
    with pytest.raises(InputError, match="workflow"):
        export_run(run_dirs[0], repository, "ctr", spark=spark, workflow=str(tmp_path / "no_workflow"))
    assert not repository.exists() or not any(repository.iterdir())


def test_an_export_refused_after_its_model_version_is_written_leaves_the_repository_as_it_was(
    spark, runs, default_features, tmp_path
):
    """Another batching delay passes the model's checks, so its version and config are written, and
    is refused at the preprocessing's: everything that export wrote is undone, and the next export
    takes the version it would have."""
    run_dirs, _, _ = runs
    root, _ = default_features
    repository, workflow = tmp_path / "repository", str(root / "workflow")
    assert export_run(run_dirs[0], repository, "ctr", spark=spark, workflow=workflow) == 1

    def files() -> dict[Path, bytes | None]:
        """Every file with its bytes, and every folder."""
        return {p: p.read_bytes() if p.is_file() else None for p in repository.rglob("*")}

    exported = files()
    with pytest.raises(InputError, match="serves other raw inputs, features or batching"):
        export_run(
            run_dirs[1], repository, "ctr", spark=spark, workflow=workflow, queue_delay_us=2 * QUEUE_DELAY_US
        )
    assert files() == exported
    # What exports killed midway leave: a whole model version whose ensemble was not written yet, and
    # a preprocessing being staged. The next export removes both and writes version 2 whole.
    shutil.copytree(repository / "ctr_model" / "1", repository / "ctr_model" / "2")
    (repository / "ctr_preprocess" / ".writing-2").mkdir()
    assert export_run(run_dirs[1], repository, "ctr", spark=spark, workflow=workflow) == 2
    assert not list(repository.glob("*/.writing-*")) and (repository / "ctr_v2" / "config.pbtxt").is_file()
    assert (repository / "ctr_model" / "2" / "model.pt").read_bytes() != (
        repository / "ctr_model" / "1" / "model.pt"
    ).read_bytes()


def test_a_name_is_exported_again_only_as_the_kind_its_config_serves(spark, runs, default_features, tmp_path):
    """A config serves every version of its model: an export without --workflow once replaced the
    ensemble's config (raw-row clients failed), one with it the plain model's, and another flavour
    the earlier versions' backend. Each is refused before it writes."""
    run_dirs, _, _ = runs
    workflow = str(default_features[0] / "workflow")
    ensemble, plain = tmp_path / "ensemble", tmp_path / "plain"
    assert export_run(run_dirs[0], ensemble, "ctr", spark=spark, workflow=workflow) == 1
    assert export_run(run_dirs[0], plain, "ctr") == 1

    def files() -> dict[Path, bytes | None]:
        return {p: p.read_bytes() if p.is_file() else None for r in (ensemble, plain) for p in r.rglob("*")}

    exported = files()
    refusals = [
        (ensemble, {}, "serves an ensemble with its preprocessing (an export with --workflow), not a python"),
        (plain, {"spark": spark, "workflow": workflow}, "serves a python-backend model, not an ensemble"),
        (plain, {"flavour": "pytorch_libtorch"}, "serves a python-backend model, not a libtorch model"),
    ]
    for repository, options, refusal in refusals:
        with pytest.raises(InputError, match=f"^ctr in {repository} {re.escape(refusal)}") as refused:
            export_run(run_dirs[1], repository, "ctr", **options)
        assert "\n" not in str(refused.value)
    assert files() == exported


def test_a_version_killed_while_written_is_no_version_and_the_next_export_writes_it_whole(runs, tmp_path):
    """A version is written under a name that is no number and renamed once whole: an export killed
    midway leaves no version for a server to load (nor for versions() to count), and the next export
    writes that version over what the killed one left."""
    run_dirs, _, _ = runs
    repository = tmp_path / "repository"
    assert export_run(run_dirs[0], repository, "ctr") == 1
    killed = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITE, str(repository / "ctr")], stdout=subprocess.PIPE, text=True
    )
    assert killed.stdout.readline().strip() == "writing"
    killed.kill()
    killed.wait()
    assert versions(repository, "ctr") == [1] and (repository / "ctr" / ".writing-2" / "model.pt").is_file()
    assert export_run(run_dirs[1], repository, "ctr") == 2
    assert sorted(p.name for p in (repository / "ctr").iterdir()) == ["1", "2", "config.pbtxt"]
    assert (repository / "ctr" / "2" / "model.pt").read_bytes() != b"half a model"
    # While another export of the name writes (holds its lock), an export is refused, not interleaved.
    with open(repository / ".ctr.export.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(InputError, match="another export of ctr is writing to"):
            export_run(run_dirs[0], repository, "ctr")
    assert versions(repository, "ctr") == [1, 2]


# A process killed in the middle of writing version 2 of the model in the folder argv[1].
KILLED_WRITE = """
import sys, time
from pathlib import Path
from serving.repository import _version_folder
with _version_folder(Path(sys.argv[1]), 2) as folder:
    (folder / "model.pt").write_bytes(b"half a model")
    print("writing", flush=True)
    time.sleep(600)
"""


def test_configs_for_the_python_backend_and_the_gpu_containers_backends(schema):
    python = config_pbtxt("ctr", "python", schema)
    libtorch = config_pbtxt("ctr", "pytorch_libtorch", schema)
    onnx = config_pbtxt("ctr", "onnxruntime", schema)
    assert 'backend: "python"' in python and 'name: "DENSE" data_type: TYPE_FP32 dims: [ 13 ]' in python
    assert (
        'platform: "pytorch_libtorch"' in libtorch
        and 'name: "INPUT__1" data_type: TYPE_INT64 dims: [ 26 ]' in libtorch
    )
    assert 'name: "OUTPUT__0" data_type: TYPE_FP32 dims: [ 1 ]' in libtorch
    assert 'platform: "onnxruntime_onnx"' in onnx
    assert 'name: "CATEGORICAL" data_type: TYPE_INT64 dims: [ 26 ]' in onnx
    assert 'name: "PROBABILITY" data_type: TYPE_FP32 dims: [ 1 ]' in onnx
    assert "KIND_CPU" in python and "KIND_CPU" not in libtorch + onnx  # GPU hosts: Triton's default GPUs
    for text in (python, libtorch, onnx):
        assert "version_policy: { latest: { num_versions: 2 } }" in text and "dynamic_batching" in text
    with pytest.raises(ValueError, match="unknown flavour"):
        config_pbtxt("ctr", "tensorflow", schema)


def test_the_python_backend_models_need_no_spark():
    """What model.py files import runs where pyspark and delta are not installed (Triton's container)."""
    blocked = "import sys; sys.modules.update(pyspark=None, delta=None); "
    for module in ("serving.preprocessor", "serving.allocator", "serving.tokens"):
        imported = subprocess.run(
            [sys.executable, "-c", blocked + f"import {module}"], capture_output=True, text=True
        )
        assert imported.returncode == 0, imported.stderr
    spark_side = subprocess.run(
        [sys.executable, "-c", blocked + "import serving.preprocess"], capture_output=True, text=True
    )
    assert "pyspark" in spark_side.stderr  # the check itself can fail: the export side needs Spark


def test_onnx_export_matches_torchscript_on_feature_rows(runs, schema, tmp_path):
    run_dirs, dense, categorical = runs
    repository = tmp_path / "repository"
    assert add_version(repository, "ctr", onnx_program(run_dirs[0]), "onnxruntime", schema=schema) == 1
    saved = repository / "ctr" / "1" / "model.onnx"
    # Beside the model: its input tensors, and the schema it was trained on (which workflow version).
    assert sorted(p.name for p in saved.parent.iterdir()) == [
        "model.onnx",
        "model_inputs.json",
        "trained_schema.json",
    ]
    assert trained_schema(saved) == schema
    session = onnxruntime.InferenceSession(str(saved), providers=["CPUExecutionProvider"])
    onnx_scores = session.run(None, {"DENSE": dense, "CATEGORICAL": categorical})[0]
    with torch.no_grad():
        scripted = torchscript(run_dirs[0])(
            torch.from_numpy(dense), torch.from_numpy(categorical), [], []
        ).numpy()
    assert onnx_scores.shape == (len(dense), 1)
    assert np.abs(onnx_scores - scripted).max() <= 1e-5


def test_two_versions_serve_at_once_and_match_the_in_process_models(runs, schema, tmp_path):
    run_dirs, dense, categorical = runs
    repository = tmp_path / "repository"
    models = [torchscript(run_dir) for run_dir in run_dirs]
    with TritonServer(repository) as server:
        client = triton_http.InferenceServerClient(server.http_url)
        assert add_version(repository, "ctr", models[0], schema=schema) == 1
        client.load_model("ctr")
        assert client.is_model_ready("ctr", "1")
        assert add_version(repository, "ctr", models[1]) == 2 and versions(repository, "ctr") == [
            1,
            2,
        ]  # same tensors
        client.load_model("ctr")  # the version policy keeps the newest two loaded
        assert client.is_model_ready("ctr", "1") and client.is_model_ready("ctr", "2")
        for version, model in zip(("1", "2"), models):
            expected = model(torch.from_numpy(dense), torch.from_numpy(categorical), [], []).detach().numpy()
            assert np.abs(predict(client, "ctr", dense, categorical, version) - expected).max() <= 1e-5
        assert (
            np.abs(
                predict(client, "ctr", dense, categorical, "1")
                - predict(client, "ctr", dense, categorical, "2")
            ).max()
            > 1e-3
        )
        # Retire version 1: pinned to 2 alone, the reload unloads 1 and keeps 2 serving.
        pin_versions(repository, "ctr", [2])
        client.load_model("ctr")
        assert not client.is_model_ready("ctr", "1") and client.is_model_ready("ctr", "2")
        client.unload_model("ctr")
        assert not client.is_model_ready("ctr", "2")
        client.close()


@pytest.mark.parametrize(
    ("bad", "says"),
    [
        ("wrong dtype", "inference input 'DENSE' data-type is 'FP64', but model 'ctr' expects 'FP32'"),
        ("wrong shape", "unexpected shape for input 'DENSE' for model 'ctr'. Expected [-1,13], got [512,12]"),
        (
            "missing input",
            "for model 'ctr'. Got input(s) ['DENSE'], but missing required input(s) ['CATEGORICAL']",
        ),
        ("unknown model", "Request for unknown model: 'nope' is not found"),
        ("unknown version", "Request for unknown model: 'ctr' version 7 is not found"),
    ],
)
def test_bad_requests_are_clear_errors_and_the_server_stays_up(runs, schema, tmp_path, bad, says):
    run_dirs, dense, categorical = runs
    repository = tmp_path / "repository"
    add_version(repository, "ctr", torchscript(run_dirs[0]), schema=schema)
    with TritonServer(repository) as server:
        client = triton_http.InferenceServerClient(server.http_url)
        client.load_model("ctr")
        model, version = (
            ("nope" if bad == "unknown model" else "ctr"),
            ("7" if bad == "unknown version" else ""),
        )
        values = (
            dense.astype(np.float64)
            if bad == "wrong dtype"
            else dense[:, :12]
            if bad == "wrong shape"
            else dense
        )
        inputs = [triton_http.InferInput("DENSE", values.shape, "FP64" if bad == "wrong dtype" else "FP32")]
        inputs[0].set_data_from_numpy(values)
        if bad != "missing input":
            inputs.append(triton_http.InferInput("CATEGORICAL", categorical.shape, "INT64"))
            inputs[1].set_data_from_numpy(categorical)
        with pytest.raises(InferenceServerException) as error:
            client.infer(model, inputs, model_version=version)
        assert says in error.value.message(), error.value.message()
        assert client.is_server_live() and client.is_model_ready("ctr")
        assert predict(client, "ctr", dense, categorical).shape == (len(dense), 1)
        client.close()


def test_stop_ends_the_server_and_its_backend_stubs(runs, schema, tmp_path):
    run_dirs, _, _ = runs
    repository = tmp_path / "repository"
    add_version(repository, "ctr", torchscript(run_dirs[0]), schema=schema)
    server = TritonServer(repository).start()
    client = triton_http.InferenceServerClient(server.http_url)
    client.load_model("ctr")
    client.close()
    group = server.process.pid
    members = [p for p in Path("/proc").iterdir() if p.name.isdigit() and _in_group(p, group)]
    assert len(members) >= 2  # the server and the model's python backend stub
    assert server.stop() == 0
    with pytest.raises(ProcessLookupError):
        os.killpg(group, 0)  # signal 0: does any process of the group remain?


def _in_group(proc: Path, group: int) -> bool:
    try:
        return os.getpgid(int(proc.name)) == group
    except (ProcessLookupError, PermissionError):
        return False


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and text in (proc / "cmdline").read_bytes().decode(errors="replace"):
                found.append(int(proc.name))
        except OSError:
            continue
    return found


def test_sparkrec_serve_and_export_push_then_sigterm(runs, tmp_path):
    run_dirs, dense, categorical = runs
    repository = tmp_path / "repository"
    ports, log = Ports.free(), tmp_path / "logs" / "serve.log"
    serve = subprocess.Popen(
        [sys.executable, "-m", "spark_jobs.cli", "serve", "--repository", str(repository),
         "--http-port", str(ports.http), "--grpc-port", str(ports.grpc),
         "--metrics-port", str(ports.metrics), "--log-file", str(log)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    made = serve.stdout.readline()  # a new repository is said to be made, so a typo is seen
    assert made.startswith(f"serve: repository {repository} does not exist: it is made empty"), made
    ready = serve.stdout.readline()
    assert "tritonserver ready" in ready and ready.rstrip().endswith(f"; log {log}"), ready
    assert "Started HTTPService at 127.0.0.1" in log.read_text()  # tritonserver's own log lines
    assert not (tmp_path / "tritonserver.log").exists()  # not the default place beside the repository
    url = f"127.0.0.1:{ports.http}"
    # What an export killed while writing version 3 leaves: a folder Triton does not take for a version.
    (repository / "ctr" / ".writing-3").mkdir(parents=True)
    (repository / "ctr" / ".writing-3" / "model.pt").write_bytes(b"half a model")
    for run_dir, version in zip(run_dirs, (1, 2)):
        export = [sys.executable, "-m", "spark_jobs.cli", "export", "--run-dir", str(run_dir)]
        pushed = subprocess.run(
            [*export, "--repository", str(repository), "--push", url],
            capture_output=True,
            text=True,
            check=True,
        )
        assert f"version {version} written" in pushed.stdout
    assert "ctr versions ready: 1, 2" in pushed.stdout
    client = triton_http.InferenceServerClient(url)
    assert predict(client, "ctr", dense, categorical, "2").shape == (len(dense), 1)
    client.close()
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{ports.metrics}/metrics").read().decode()
    assert 'nv_inference_request_success{model="ctr",version="2"}' in metrics
    serve.send_signal(signal.SIGTERM)
    assert serve.wait(timeout=60) == 0
    assert "tritonserver stopped (exit code 0)" in serve.stdout.read()
    assert _processes_mentioning(str(repository)) == []


@pytest.fixture(scope="module")
def preprocess_folder(spark, default_features, tmp_path_factory) -> Path:
    """The default features' fitted workflow exported in serving form (serving/preprocess.py)."""
    root, _ = default_features
    out = tmp_path_factory.mktemp("preprocess")
    return export_preprocess(spark, str(root / "workflow"), out).parent


GROUPING_DELAY_US = 50_000


@pytest.fixture(scope="module")
def ensemble(runs, schema, preprocess_folder, tmp_path_factory):
    """One tritonserver serving the ensemble ctr (preprocess_folder, then the first run's model), and
    that model in-process; the tests that need the ensemble share it."""
    run_dirs, _, _ = runs
    repository = tmp_path_factory.mktemp("ensemble") / "repository"
    model = torchscript(run_dirs[0])
    add_version(repository, "ctr_model", model, schema=schema)
    # A 50 ms batching window (200 us by default): on 2 busy cores a Python client's eight async
    # requests arrive about a millisecond apart, so only a wider window groups them reliably.
    assert write_ensemble(repository, "ctr", preprocess_folder, queue_delay_us=GROUPING_DELAY_US) == 1
    with TritonServer(repository) as server:
        client = triton_http.InferenceServerClient(server.http_url)
        client.load_model("ctr")  # loads its composing models too
        client.close()
        yield server, model


@pytest.fixture(scope="module")
def raw_rows(spark, default_bronze, preprocess_folder) -> RawBatch:
    """64 bronze rows of the test day as served (the exported workflow's raw inputs): dense counts
    (float64, NaN = missing) and tokens (Criteo's fixed-width bytes)."""
    bronze, _ = default_bronze
    rows = spark.read.format("delta").load(bronze).where(f"{DAY} = 3").orderBy(SOURCE_FILE, LINE_NUMBER)
    spec = Preprocessor(preprocess_folder).spec
    assert spec.token_width == 8 and len(spec.continuous) == 13 and len(spec.categorical) == 26
    return spec.batch(rows.limit(64).toPandas())


# Dense values that ingest rejects, with its reason: cast to int32 they became other counts (1.5 -> 1,
# 3e9 -> -2147483648) that the model never saw.
REFUSED = [
    (1.5, INT_NOT_INTEGER),
    (-0.5, INT_NOT_INTEGER),
    (3e9, INT_OUT_OF_RANGE),
    (-(2.0**31) - 1, INT_OUT_OF_RANGE),
    (float("inf"), INT_OUT_OF_RANGE),
]


def _token_cut_short(tokens: np.ndarray) -> tuple[np.ndarray, int]:
    """Criteo's fixed-width tokens with C4's first present one cut to 7 characters (ingest's
    CAT_BAD_LENGTH), and its row."""
    row = int(np.argmax(tokens[:, 3].any(axis=-1)))
    cut = tokens.copy()
    cut[row, 3, 7] = 0
    return cut, row


def test_the_preprocessor_refuses_values_and_tokens_that_ingest_rejects(preprocess_folder, raw_rows, schema):
    """In-process serving refuses them as ingest does: one line naming the row, field, value and reason."""
    raw_dense, tokens, _ = raw_rows
    preprocess = Preprocessor(preprocess_folder)
    cut, row = _token_cut_short(tokens)
    with pytest.raises(InputError) as refused:
        preprocess(raw_dense, cut)
    message = f"RAW_CATEGORICAL row {row}: C4 = {bytes(cut[row, 3, :7]).decode()!r} is not 8 characters long"
    assert str(refused.value).startswith(f"{message} ({CAT_BAD_LENGTH}, as ingest rejects it)"), refused.value
    upper = tokens.copy()
    upper[row, 3] = np.frombuffer(b"ABCDEF01", np.uint8)
    with pytest.raises(InputError, match=f"^RAW_CATEGORICAL row {row}: C4 = 'ABCDEF01' is outside the hex"):
        preprocess(raw_dense, upper)
    for value, reason in REFUSED:
        bad = raw_dense.copy()
        bad[5, 2] = value
        with pytest.raises(InputError) as refused:
            preprocess(bad, tokens)
        message = str(refused.value)
        assert message.startswith(f"RAW_DENSE row 5: I3 = {value!r} is "), message
        assert f"({reason}," in message and "\n" not in message, message
    edge = raw_dense.copy()
    edge[:3, 2] = [np.nan, -(2.0**31), 2.0**31 - 1]  # missing, and the int32 bounds: all served
    features = preprocess(edge, tokens)
    assert np.isfinite(features.dense).all() and features.ids.shape == (len(edge), len(schema.categorical))


def test_the_ensemble_refuses_values_and_tokens_that_ingest_rejects_and_serves_on(ensemble, raw_rows):
    """Through Triton the refusal is that request's error, with the preprocessor's line; the server and
    the next request go on."""
    server, _ = ensemble
    raw_dense = raw_rows.dense
    client = triton_http.InferenceServerClient(server.http_url)
    served = predict_raw(client, "ctr", raw_rows)
    for value, reason in REFUSED:
        bad = raw_dense.copy()
        bad[5, 2] = value
        with pytest.raises(InferenceServerException) as refused:
            predict_raw(client, "ctr", raw_rows._replace(dense=bad))
        message = refused.value.message()
        assert refused.value.status() == "400", refused.value  # the request's fault, not the server's
        assert f"RAW_DENSE row 5: I3 = {value!r} is " in message and f"({reason}," in message, message
        assert "\n" not in message, message  # the preprocessor's one line, not a Python trace
        assert client.is_server_live() and client.is_model_ready("ctr")
        np.testing.assert_array_equal(predict_raw(client, "ctr", raw_rows), served)
    cut, row = _token_cut_short(raw_rows.tokens)
    with pytest.raises(InferenceServerException) as refused:
        predict_raw(client, "ctr", raw_rows._replace(tokens=cut))
    assert refused.value.status() == "400", refused.value
    assert f"RAW_CATEGORICAL row {row}: C4 = " in refused.value.message(), refused.value
    assert f"({CAT_BAD_LENGTH}, as ingest rejects it)" in refused.value.message(), refused.value
    np.testing.assert_array_equal(predict_raw(client, "ctr", raw_rows), served)
    client.close()


def _sent_at_once(url: str, batches: list[RawBatch]) -> list:
    """Raw batches sent to the ensemble ctr over gRPC without waiting (so dynamic batching can group
    them); each one's probabilities or its InferenceServerException, in order."""
    client = triton_grpc.InferenceServerClient(url)
    spec = raw_spec(client, "ctr")
    requests = [_inputs(client, spec.encode(batch)) for batch in batches]
    finished = queue.Queue()
    for i, inputs in enumerate(requests):
        client.async_infer("ctr", inputs, lambda result, error, i=i: finished.put((i, result, error)))
    results = {}
    for _ in requests:
        i, result, error = finished.get(timeout=60)
        results[i] = error or result.as_numpy("PROBABILITY")
    client.close()
    return [results[i] for i in range(len(batches))]


def test_a_refused_request_fails_alone_in_a_dynamic_batch(ensemble, raw_rows):
    """Dynamic batching runs concurrent requests as one batch of the preprocess model: a value refused
    in one of them fails that request only."""
    server, _ = ensemble
    bad = raw_rows.dense.copy()
    bad[5, 2] = 1.5
    batches = [raw_rows._replace(dense=bad) if i == 3 else raw_rows for i in range(8)]
    client = triton_http.InferenceServerClient(server.http_url)
    served = predict_raw(client, "ctr", raw_rows)
    batching = client.get_model_config("ctr_preprocess")["dynamic_batching"]
    assert int(batching["max_queue_delay_microseconds"]) == GROUPING_DELAY_US  # written by write_ensemble
    for _ in range(5):  # the batching window makes one batch the rule; retries absorb a stalled client
        executions = _executions(client, "ctr_preprocess")
        results = _sent_at_once(server.grpc_url, batches)
        assert isinstance(results[3], InferenceServerException), results[3]
        assert f"({INT_NOT_INTEGER}," in results[3].message(), results[3]
        for result in results[:3] + results[4:]:
            assert isinstance(result, np.ndarray), result  # a neighbour's request, served
            assert np.abs(result - served).max() <= 1e-6
        if _executions(client, "ctr_preprocess") - executions == 1:
            break  # all eight ran as one batch, the refused request among them
    else:
        pytest.fail("eight requests sent at once never ran as one batch: the test proved nothing")
    client.close()


def _executions(client: triton_http.InferenceServerClient, model: str) -> int:
    return int(client.get_inference_statistics(model)["model_stats"][0]["execution_count"])


def test_the_ensemble_on_raw_fields_equals_the_model_after_the_spark_workflow(
    spark, ensemble, runs, schema, default_bronze, default_features, tmp_path
):
    server, model = ensemble
    bronze, _ = default_bronze
    root, _ = default_features
    keys = [SOURCE_FILE, LINE_NUMBER]
    rows = spark.read.format("delta").load(bronze).where(f"{DAY} = 3").orderBy(*keys).limit(2048)
    raw = rows.toPandas()
    features = Workflow.load(str(root / "workflow"), spark).transform(rows, keep=tuple(keys)).toPandas()
    aligned = raw[keys].merge(features, on=keys, validate="one_to_one")  # raw's row order
    expected = call_model(model, table_features(aligned, schema))
    client = triton_http.InferenceServerClient(server.http_url)
    assert client.is_model_ready("ctr_preprocess") and client.is_model_ready("ctr_model")
    client.load_model("ctr_v1")  # version 1's own ensemble: the same preprocessing and model
    assert client.is_model_ready("ctr_v1")
    spec = raw_spec(client, "ctr")  # the raw inputs, from the ensemble's config: by the input schema
    dense_names = [c.name for c in spec.continuous]
    token_names = [c.name for c in spec.categorical]
    assert dense_names == [f"I{i}" for i in range(1, 14)] and token_names == [f"C{i}" for i in range(1, 27)]
    assert (
        raw[dense_names].isna().to_numpy().any() and raw[token_names].isna().to_numpy().any()
    )  # missing fields served
    served = predict_raw(client, "ctr", raw)
    assert served.shape == (len(raw), 1) == expected.shape
    assert np.abs(served - expected).max() <= 1e-5
    np.testing.assert_array_equal(predict_raw(client, "ctr", raw, version=1), served)
    # Tokens travel as 8 bytes each: the client helper refuses a longer one (with ingest's reason), the
    # server a wider tensor.
    with pytest.raises(
        InputError, match=r"^RAW_CATEGORICAL row 0: C1 = '123456789' is not 8 characters long"
    ):
        predict_raw(client, "ctr", raw.iloc[:2].assign(**{c: "123456789" for c in token_names}))
    wide = [
        triton_http.InferInput("RAW_DENSE", [2, len(dense_names)], "FP64"),
        triton_http.InferInput("RAW_CATEGORICAL", [2, len(token_names), 9], "UINT8"),
    ]
    wide[0].set_data_from_numpy(raw[dense_names].iloc[:2].astype("float64").to_numpy())
    wide[1].set_data_from_numpy(np.zeros((2, len(token_names), 9), np.uint8))
    with pytest.raises(InferenceServerException, match="RAW_CATEGORICAL"):
        client.infer("ctr", wide)
    assert client.is_model_ready("ctr")
    client.close()
    # Batch scoring of the test day through Triton (gRPC) and in-process; reruns add no duplicates.
    predictions = {mode: str(tmp_path / f"predictions_{mode}") for mode in ("triton", "in_process")}
    by_triton = score(spark, bronze, [3], predictions["triton"], via_triton_url=server.grpc_url, name="ctr")
    for _ in range(2):
        # The exported model of the ensemble ctr (its ctr_model), read from the repository.
        in_process = score(
            spark, bronze, [3], predictions["in_process"], str(server.repository), str(root / "workflow")
        )
    day_rows = spark.read.format("delta").load(bronze).where(f"{DAY} = 3").count()
    assert by_triton["rows"] == in_process["rows"] == day_rows
    tables = [spark.read.format("delta").load(path).toPandas() for path in predictions.values()]
    assert all(len(t) == day_rows and not t.duplicated(keys).any() for t in tables)
    both = tables[0].merge(tables[1], on=[DAY, *keys], validate="one_to_one")
    assert len(both) == day_rows
    assert np.abs(both["probability_x"] - both["probability_y"]).max() <= 1e-5
    # Rows of another dataset (here: bronze without C1) are refused in one line, either way.
    other = str(tmp_path / "other_bronze")
    rows = spark.read.format("delta").load(bronze).where(f"{DAY} = 3").drop("C1").limit(10)
    rows.write.format("delta").partitionBy(DAY).save(other)
    ways = {"raw inputs": {"via_triton_url": server.grpc_url}, "workflow's input columns": {}}
    for lacked, options in ways.items():
        options = options or {"repository": str(server.repository), "workflow": str(root / "workflow")}
        with pytest.raises(InputError, match=rf"^the rows lack the {lacked} \['C1'\]"):
            score(spark, other, [3], str(tmp_path / "other_predictions"), **options)
    # The ensemble's model alone takes features, not raw rows: one line, not a KeyError in each task.
    with pytest.raises(InputError, match="model ctr_model on the server takes features, not raw rows"):
        by_model = str(tmp_path / "by_model")
        score(spark, bronze, [3], by_model, via_triton_url=server.grpc_url, name="ctr_model")
    # A first score killed before its commit leaves its data files and no _delta_log: the rerun writes
    # the table.
    killed = tmp_path / "killed_predictions"
    (killed / f"{DAY}=3").mkdir(parents=True)
    (killed / f"{DAY}=3" / "part-00000-3e8145a6-5581-4436-8d4b-ce7c00bc7b53-c000.snappy.parquet").write_bytes(
        b"PAR1"
    )
    in_process_options = {"repository": str(server.repository), "workflow": str(root / "workflow")}
    assert score(spark, bronze, [3], str(killed), **in_process_options)["rows"] == day_rows
    # monitor reads predictions only from a predictions table.
    day = spark.read.format("delta").load(bronze).where(f"{DAY} = 3")
    for path in (str(root / "features"), other):
        with pytest.raises(InputError, match="holds a Delta table that is not a predictions table"):
            prediction_quality(spark, path, day, "label", 3)
    with pytest.raises(InputError, match="predictions table .* does not exist"):
        prediction_quality(spark, str(tmp_path / "none"), day, "label", 3)


def test_a_server_that_cannot_take_its_port_is_one_line_and_leaves_no_process(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        ports = Ports(taken.getsockname()[1], free_port(), free_port())
        server = TritonServer(tmp_path / "repository", ports, tmp_path / "tritonserver.log")
        refused = r"^tritonserver exited with \d+ before it was live \(a port in use"
        with pytest.raises(InputError, match=refused):
            server.start()
    with pytest.raises(ProcessLookupError):  # nothing of its process group is left
        os.killpg(server.process.pid, 0)
