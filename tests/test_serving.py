"""Serving the trained model from a real tritonserver on 127.0.0.1: repository layout and configs,
explicit load/unload, two versions at once, bad requests, clean shutdown."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch
import tritonclient.http as triton_http
from tritonclient.utils import InferenceServerException

from rec_plugin.schema import CATEGORICAL, DAY, DENSE, LINE_NUMBER, SOURCE_FILE
from rec_plugin.workflow import Workflow
from serving.client import ab_split, predict, predict_raw, serve_only
from serving.export import MODEL_CONFIG, onnx_program, torchscript
from serving.preprocess import export_preprocess
from serving.repository import add_version, config_pbtxt, versions, write_ensemble
from serving.server import Ports, TritonServer
from spark_jobs.score import score
from spark_jobs.train import feature_files
from training.data import BatchLoader
from training.loop import TrainSpec, train_worker
from training.models import ModelConfig


@pytest.fixture(scope="module")
def runs(spark, default_features, tmp_path_factory):
    """Two trained DLRM runs (different seeds) on the default features, and a batch of feature rows."""
    root, report = default_features
    train = feature_files(spark, str(root / "features"), report["features_version"], [0, 1])
    valid = feature_files(spark, str(root / "features"), report["features_version"], [2])
    described = json.loads((root / "workflow" / "features.json").read_text())
    config = ModelConfig("dlrm", tuple(described["cardinalities"][c] for c in CATEGORICAL))
    run_dirs = []
    for seed in (0, 1):
        run_dir = tmp_path_factory.mktemp(f"run{seed}")
        (run_dir / MODEL_CONFIG).write_text(json.dumps(config.to_dict()))
        spec = TrainSpec(
            config.to_dict(), train.to_dict(), str(run_dir), batch_size=4096, seed=seed, progress=False
        )
        train_worker(spec.to_dict())
        run_dirs.append(run_dir)
    batch = next(BatchLoader(valid, 512, shuffle=False).epoch(0))
    return run_dirs, batch.dense.numpy(), batch.categorical.numpy()


def test_configs_for_the_python_backend_and_the_gpu_containers_backends():
    python = config_pbtxt("ctr", "python")
    libtorch = config_pbtxt("ctr", "pytorch_libtorch")
    onnx = config_pbtxt("ctr", "onnxruntime")
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
        config_pbtxt("ctr", "tensorflow")


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


def test_onnx_export_matches_torchscript_on_feature_rows(runs, tmp_path):
    run_dirs, dense, categorical = runs
    repository = tmp_path / "repository"
    assert add_version(repository, "ctr", onnx_program(run_dirs[0]), "onnxruntime") == 1
    saved = repository / "ctr" / "1" / "model.onnx"
    assert sorted(p.name for p in saved.parent.iterdir()) == ["model.onnx"]
    session = onnxruntime.InferenceSession(str(saved), providers=["CPUExecutionProvider"])
    onnx_scores = session.run(None, {"DENSE": dense, "CATEGORICAL": categorical})[0]
    with torch.no_grad():
        scripted = torchscript(run_dirs[0])(torch.from_numpy(dense), torch.from_numpy(categorical)).numpy()
    assert onnx_scores.shape == (len(dense), 1)
    assert np.abs(onnx_scores - scripted).max() <= 1e-5


def test_two_versions_serve_at_once_and_match_the_in_process_models(runs, tmp_path):
    run_dirs, dense, categorical = runs
    repository = tmp_path / "repository"
    models = [torchscript(run_dir) for run_dir in run_dirs]
    with TritonServer(repository) as server:
        client = triton_http.InferenceServerClient(server.http_url)
        assert add_version(repository, "ctr", models[0]) == 1
        client.load_model("ctr")
        assert client.is_model_ready("ctr", "1")
        assert add_version(repository, "ctr", models[1]) == 2 and versions(repository, "ctr") == [1, 2]
        client.load_model("ctr")  # the version policy keeps the newest two loaded
        assert client.is_model_ready("ctr", "1") and client.is_model_ready("ctr", "2")
        for version, model in zip(("1", "2"), models):
            expected = model(torch.from_numpy(dense), torch.from_numpy(categorical)).detach().numpy()
            assert np.abs(predict(client, "ctr", dense, categorical, version) - expected).max() <= 1e-5
        assert (
            np.abs(
                predict(client, "ctr", dense, categorical, "1")
                - predict(client, "ctr", dense, categorical, "2")
            ).max()
            > 1e-3
        )
        batches = [(dense[i : i + 16], categorical[i : i + 16]) for i in range(0, len(dense), 16)]
        predictions, served = ab_split(client, "ctr", {1: 0.25, 2: 0.75}, batches)
        assert sum(served.values()) == len(batches) == 32 and 3 <= served[1] <= 14 < served[2]
        assert all(p.shape == (16, 1) for p in predictions)
        serve_only(client, repository, "ctr", keep=[2])  # retire version 1; 2 keeps serving
        assert not client.is_model_ready("ctr", "1") and client.is_model_ready("ctr", "2")
        client.unload_model("ctr")
        assert not client.is_model_ready("ctr", "2")
        client.close()


@pytest.mark.parametrize(
    "bad",
    ["wrong dtype", "wrong shape", "missing input", "unknown model", "unknown version"],
)
def test_bad_requests_are_clear_errors_and_the_server_stays_up(runs, tmp_path, bad):
    run_dirs, dense, categorical = runs
    repository = tmp_path / "repository"
    add_version(repository, "ctr", torchscript(run_dirs[0]))
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
        assert str(error.value)
        assert client.is_server_live() and client.is_model_ready("ctr")
        assert predict(client, "ctr", dense, categorical).shape == (len(dense), 1)
        client.close()


def test_stop_ends_the_server_and_its_backend_stubs(runs, tmp_path):
    run_dirs, _, _ = runs
    repository = tmp_path / "repository"
    add_version(repository, "ctr", torchscript(run_dirs[0]))
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
    ports = Ports.free()
    serve = subprocess.Popen(
        [sys.executable, "-m", "spark_jobs.cli", "serve", "--repository", str(repository),
         "--http-port", str(ports.http), "--grpc-port", str(ports.grpc),
         "--metrics-port", str(ports.metrics)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert "tritonserver ready" in serve.stdout.readline()
    url = f"127.0.0.1:{ports.http}"
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


def test_the_ensemble_on_raw_fields_equals_the_model_after_the_spark_workflow(
    spark, runs, default_bronze, default_features, tmp_path
):
    run_dirs, _, _ = runs
    bronze, _ = default_bronze
    root, _ = default_features
    keys = [SOURCE_FILE, LINE_NUMBER]
    rows = spark.read.format("delta").load(bronze).where(f"{DAY} = 3").orderBy(*keys).limit(2048)
    raw = rows.toPandas()
    features = Workflow.load(str(root / "workflow"), spark).transform(rows, keep=tuple(keys)).toPandas()
    aligned = raw[keys].merge(features, on=keys, validate="one_to_one")  # raw's row order
    model = torchscript(run_dirs[0])
    dense, ids = aligned[DENSE].to_numpy(np.float32), aligned[CATEGORICAL].to_numpy(np.int64)
    expected = model(torch.from_numpy(dense), torch.from_numpy(ids)).detach().numpy()
    repository = tmp_path / "repository"
    add_version(repository, "ctr_model", model)
    write_ensemble(
        repository, "ctr", export_preprocess(spark, str(root / "workflow"), tmp_path / "preprocess").parent
    )
    with TritonServer(repository) as server:
        client = triton_http.InferenceServerClient(server.http_url)
        client.load_model("ctr")  # loads its composing models too
        assert client.is_model_ready("ctr_preprocess") and client.is_model_ready("ctr_model")
        raw_dense = raw[DENSE].astype("float64").to_numpy()
        assert np.isnan(raw_dense).any() and raw[CATEGORICAL].isna().to_numpy().any()  # missing fields served
        served = predict_raw(client, "ctr", raw_dense, raw[CATEGORICAL].to_numpy(object))
        assert served.shape == (len(raw), 1) == expected.shape
        assert np.abs(served - expected).max() <= 1e-5
        # Tokens travel as 8 bytes each: the client helper refuses a longer one, the server a wider tensor.
        with pytest.raises(ValueError, match="at most 8 ASCII characters; got '123456789'"):
            predict_raw(client, "ctr", raw_dense[:2], np.full((2, len(CATEGORICAL)), "123456789", object))
        wide = [
            triton_http.InferInput("RAW_DENSE", [2, len(DENSE)], "FP64"),
            triton_http.InferInput("RAW_CATEGORICAL", [2, len(CATEGORICAL), 9], "UINT8"),
        ]
        wide[0].set_data_from_numpy(raw_dense[:2])
        wide[1].set_data_from_numpy(np.zeros((2, len(CATEGORICAL), 9), np.uint8))
        with pytest.raises(InferenceServerException, match="RAW_CATEGORICAL"):
            client.infer("ctr", wide)
        assert client.is_model_ready("ctr")
        client.close()
        # Batch scoring of the test day through Triton (gRPC) and in-process; reruns add no duplicates.
        predictions = {mode: str(tmp_path / f"predictions_{mode}") for mode in ("triton", "in_process")}
        by_triton = score(
            spark, bronze, [3], predictions["triton"], via_triton_url=server.grpc_url, name="ctr"
        )
    for _ in range(2):
        in_process = score(
            spark, bronze, [3], predictions["in_process"], str(run_dirs[0]), str(root / "workflow")
        )
    day_rows = spark.read.format("delta").load(bronze).where(f"{DAY} = 3").count()
    assert by_triton["rows"] == in_process["rows"] == day_rows
    tables = [spark.read.format("delta").load(path).toPandas() for path in predictions.values()]
    assert all(len(t) == day_rows and not t.duplicated(keys).any() for t in tables)
    both = tables[0].merge(tables[1], on=[DAY, *keys], validate="one_to_one")
    assert len(both) == day_rows
    assert np.abs(both["probability_x"] - both["probability_y"]).max() <= 1e-5
