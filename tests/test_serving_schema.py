"""The schema-generated repository on a real tritonserver (127.0.0.1), end to end: a workflow with every
op and a list feature fitted by featurize on a bronze Delta table, a model built from its schema and
trained on the loader's batches, exported as `sparkrec export` does, and the test day's raw rows served
through the ensemble equal to the model on the loader's batch of the same rows; then each version
served with the preprocessing of the workflow it was trained with."""

from __future__ import annotations

import json
from urllib.parse import urlsplit

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
import tritonclient.http as triton_http
from test_preprocess_schema import (
    ANY,
    ROWS,
    _frame,
    every_op_dataset,
    every_op_workflow,
    input_schema,
    raw_rows,
    records,
)

from rec_plugin.dataset import DatasetDefinition, load_dataset
from rec_plugin.ops import OPS
from rec_plugin.schema import DAY, LINE_NUMBER, SOURCE_FILE, Schema
from rec_plugin.workflow import Workflow
from serving.client import _inputs, predict_raw, raw_spec
from serving.export import torchscript
from serving.pipeline import call_model, table_features
from serving.preprocess import export_preprocess
from serving.repository import add_version, versions, write_ensemble
from serving.server import TritonServer
from spark_jobs.featurize import featurize
from spark_jobs.train import feature_files, train
from training.data import Batch, BatchLoader
from training.models import ModelConfig, build_model
from training.run_directory import RunDirectory

TRAIN_DAY, TEST_DAY = 0, 1
# A token the fitted workflow never saw (the test day has it), and that the extended one will know.
UNSEEN = "brand new"
KEYS = [SOURCE_FILE, LINE_NUMBER]
# Small tables and layers: the test is about the data path, not the model's quality.
SIZES = {"embedding_dim": 8, "bottom_mlp": [16], "top_mlp": [32, 16]}
Inputs = tuple[torch.Tensor, torch.Tensor, list[torch.Tensor], list[torch.Tensor]]


def _day(seed: int, day: int, tokens: list[str]) -> pd.DataFrame:
    rows = raw_rows(seed, tokens)
    rows[SOURCE_FILE] = f"day-{day}.tsv"
    return rows


def _write_bronze(spark, definition: DatasetDefinition, days: dict[int, pd.DataFrame], path: str) -> None:  # noqa: ANN001
    """The raw rows as ingest writes them: the definition's bronze columns, partitioned by day."""
    rows = [{DAY: day, **row} for day, frame in days.items() for row in records(frame)]
    bronze = spark.createDataFrame(rows, definition.bronze_schema())
    bronze.write.format("delta").partitionBy(DAY).save(path)


def _ops(workflow: Workflow) -> list[tuple[tuple[str, ...], str]]:
    return [(node.columns, repr(op)) for node in workflow.nodes for op in node.ops]


def _probabilities(model: torch.jit.ScriptModule, inputs: Inputs) -> np.ndarray:
    with torch.no_grad():
        return model(*inputs).numpy()


def _perturbed(batch: Batch) -> dict[str, Inputs]:
    """The loader's inputs with one feature changed each: what a preprocessing that got that feature
    wrong (dropped the list's pooling, lost a column) would hand the model."""
    dense, ids, (values,), (offsets,) = batch.inputs()
    lengths = offsets[1:] - offsets[:-1]
    first_offsets = torch.cat([offsets[:1], lengths.clamp(max=1).cumsum(0)])
    changed = {
        "tags: first id only": (dense, ids, [values[offsets[:-1][lengths > 0]]], [first_offsets]),
        "tags: empty": (dense, ids, [values[:0]], [torch.zeros_like(offsets)]),
    }
    for j, name in enumerate(batch.ids.keys):
        zeroed = ids.clone()
        zeroed[:, j] = 0
        changed[name] = (dense, zeroed, [values], [offsets])
    for j in range(dense.shape[1]):
        moved = dense.clone()
        moved[:, j] += 1.0
        changed[f"dense {j}"] = (moved, ids, [values], [offsets])
    return changed


def _untrained_run(location, schema: Schema, seed: int) -> RunDirectory:  # noqa: ANN001
    """A run directory as `sparkrec train` leaves one (config, weights, schema) for a model of
    `schema` at its initial weights."""
    run = RunDirectory(location)
    config = ModelConfig.from_schema("dlrm", schema, **SIZES)
    torch.manual_seed(seed)
    run.write_model_config(config)
    run.save_weights(build_model(config).state_dict())
    run.write_schema(schema)
    return run


def _expected(spark, workflow_dir: str, raw: pd.DataFrame, model: torch.jit.ScriptModule) -> np.ndarray:  # noqa: ANN001
    """The model after Spark's transform of the same raw rows, in their order."""
    schema = Workflow.load_schema(workflow_dir, spark)
    features = Workflow.load(workflow_dir, spark).transform(_frame(spark, raw), keep=("line_number",))
    aligned = raw[["line_number"]].merge(features.toPandas(), on="line_number", validate="one_to_one")
    return call_model(model, table_features(aligned, schema))


def _preprocessed(
    client: triton_http.InferenceServerClient, spec, raw: pd.DataFrame, version: str
) -> np.ndarray:  # noqa: ANN001
    """The ids that version `version` of ctr_preprocess makes of the raw rows."""
    result = client.infer(
        "ctr_preprocess", _inputs(client, spec.encode(spec.batch(raw))), model_version=version
    )
    return result.as_numpy("CATEGORICAL")


def test_every_op_through_featurize_loader_model_and_triton_equals_the_model_on_the_loaders_batch(
    spark, tmp_path
):
    # The every-op workflow as a dataset definition, which featurize fits; it holds every op there is.
    definition_path = tmp_path / "every_op.json"
    definition_path.write_text(json.dumps(every_op_dataset(None)))
    definition = load_dataset(str(definition_path))
    assert definition.input_schema() == input_schema(None)
    assert _ops(definition.default_workflow()) == _ops(every_op_workflow(input_schema(None)))
    assert {type(op).__name__ for node in definition.default_workflow().nodes for op in node.ops} == set(OPS)
    # Bronze: a train day, and a test day with a token never trained on, beside missing values, empty,
    # null and long lists.
    raw_test = _day(1, TEST_DAY, ANY + [UNSEEN] * 6)
    assert raw_test["s"].eq(UNSEEN).any() and raw_test["f"].isna().any() and raw_test["n"].isna().any()
    assert raw_test["tags"].isna().any() and (raw_test["tags"].str.len() == 0).any()
    assert (raw_test["tags"].str.len() > 3).any()  # longer than ListCategorify's max_length
    bronze, features, workflow = (str(tmp_path / name) for name in ("bronze", "features", "workflow"))
    _write_bronze(spark, definition, {TRAIN_DAY: _day(0, TRAIN_DAY, ANY), TEST_DAY: raw_test}, bronze)
    splits = {"train": [TRAIN_DAY], "valid": [], "test": [TEST_DAY]}
    report = featurize(
        spark, bronze, features, workflow, splits, rows_per_file=256, dataset=str(definition_path)
    )
    assert report["rows_out"] == 2 * ROWS
    # `sparkrec train`: a DLRM built from the schema (one table per categorical and list feature, the
    # list pooled), trained in-process on the loader's batches of the train day.
    run = RunDirectory(tmp_path / "run")
    train(
        spark, features, workflow, run.uri, "dlrm", "single", 1,
        batch_size=64, epochs=2, checkpoint_every=10_000, progress=False, **SIZES,
    )  # fmt: skip
    assert run.metrics()["steps"] == 2 * -(-ROWS // 64)
    schema = Workflow.load_schema(workflow, spark)
    assert run.schema() == schema and run.model_config().list_features == ("tags",)
    assert len(schema.categorical) == 9 and len(schema.continuous) == 4  # 3 of them DatePart's
    # The loader's batch of the whole test day, unshuffled: its rows in the order of the table's files,
    # which give each row's lineage.
    test_files = feature_files(spark, features, report["features_version"], [TEST_DAY])
    assert test_files.rows == ROWS and len(test_files.files) >= 2
    (batch,) = BatchLoader(test_files, schema, ROWS, shuffle=False).epoch(0)
    columns = [*KEYS, *schema.continuous.names, *schema.categorical.names, *schema.lists.names]
    table = pa.concat_tables(pq.read_table(urlsplit(f).path, columns=columns) for f in test_files.files)
    files = table.to_pandas()
    in_files = table_features(files, schema)
    np.testing.assert_array_equal(batch.dense.numpy(), in_files.dense)
    np.testing.assert_array_equal(batch.ids.values.numpy(), in_files.ids)
    np.testing.assert_array_equal(batch.lists["tags"].values.numpy(), in_files.list_values[0])
    np.testing.assert_array_equal(batch.lists["tags"].offsets.numpy(), in_files.list_offsets[0])
    raw = files[KEYS].merge(raw_test, on=KEYS, how="left", validate="one_to_one")
    np.testing.assert_array_equal(batch.label.numpy(), raw["label"].to_numpy(np.float32))
    lengths = batch.lists["tags"].lengths()
    assert (lengths == 0).any() and (lengths >= 2).any() and (lengths <= 3).all()
    # The exported model on the loader's batch is what the served ensemble must give. Each input
    # moves it far past the tolerance, so a preprocessing that got any feature wrong fails the test.
    model = torchscript(run)
    expected = _probabilities(model, batch.inputs())
    assert expected.shape == (ROWS, 1) and expected.std() > 1e-3
    for name, inputs in _perturbed(batch).items():
        assert np.abs(_probabilities(model, inputs) - expected).max() > 1e-4, name
    # `sparkrec export --workflow`: the model, its preprocessing and the ensembles.
    repository = tmp_path / "repository"
    assert add_version(repository, "ctr_model", model, schema=run.schema()) == 1
    preprocess = export_preprocess(spark, workflow, tmp_path / "p1", run.schema()).parent
    assert write_ensemble(repository, "ctr", preprocess, 1) == 1
    with TritonServer(repository, log=tmp_path / "tritonserver.log") as server:
        client = triton_http.InferenceServerClient(server.http_url)
        client.load_model("ctr")
        spec = raw_spec(client, "ctr")
        assert spec.token_width is None and [c.name for c in spec.lists] == ["tags"]
        served_v1 = predict_raw(client, "ctr", raw)
        assert served_v1.shape == (ROWS, 1)
        assert np.abs(served_v1 - expected).max() <= 1e-5
        ids_v1 = _preprocessed(client, spec, raw, "1")
        np.testing.assert_array_equal(ids_v1, batch.ids.values.numpy())

        # Version 2: a model of the workflow whose vocabularies grew with new data.
        Workflow.load(workflow, spark).extend(_frame(spark, raw_rows(6, [UNSEEN] * 3 + ANY)), workflow)
        run_v2 = _untrained_run(tmp_path / "run_v2", Workflow.load_schema(workflow, spark), seed=1)
        model_v2 = torchscript(run_v2)
        assert add_version(repository, "ctr_model", model_v2, schema=run_v2.schema()) == 2
        preprocess_v2 = export_preprocess(spark, workflow, tmp_path / "p2", run_v2.schema()).parent
        assert write_ensemble(repository, "ctr", preprocess_v2, 2) == 2
        assert versions(repository, "ctr_preprocess") == [1, 2]
        client.load_model("ctr")  # now version 2's ensemble
        client.load_model("ctr_v1")
        client.load_model("ctr_v2")
        assert client.is_model_ready("ctr_preprocess", "1") and client.is_model_ready("ctr_preprocess", "2")
        # Version 1 computes what it did: its preprocessing (the old vocabularies) and its model.
        np.testing.assert_array_equal(predict_raw(client, "ctr", raw, version=1), served_v1)
        np.testing.assert_array_equal(_preprocessed(client, spec, raw, "1"), ids_v1)
        ids_v2 = _preprocessed(client, spec, raw, "2")
        assert (ids_v2 != ids_v1).any() and (ids_v1[raw["s"].eq(UNSEEN).to_numpy()] == 0).any()
        expected_v2 = _expected(spark, workflow, raw, model_v2)
        assert np.abs(expected_v2 - expected).max() > 1e-4
        for served in (predict_raw(client, "ctr", raw, version=2), predict_raw(client, "ctr", raw)):
            assert np.abs(served - expected_v2).max() <= 1e-5
        client.close()
