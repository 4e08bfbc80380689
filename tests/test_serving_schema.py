"""The schema-generated repository on a real tritonserver (127.0.0.1): a workflow with every op and a
list feature served through its ensemble on raw rows, equal to the model after Spark's transform; and
each version served with the preprocessing of the workflow it was trained with."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
import tritonclient.http as triton_http
from test_preprocess_schema import ANY, _frame, every_op_workflow, input_schema, raw_rows

from rec_plugin.workflow import Workflow
from serving.client import _inputs, predict_raw, raw_spec
from serving.pipeline import call_model, table_features
from serving.preprocess import export_preprocess
from serving.repository import add_version, versions, write_ensemble
from serving.server import TritonServer


class Tiny(torch.nn.Module):
    """A click model with the served contract's forward: every input moves the probability."""

    def __init__(self, seed: int, dense: int, ids: int) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.dense_weights = torch.nn.Parameter(torch.randn(dense, generator=generator))
        self.id_weights = torch.nn.Parameter(torch.rand(ids, generator=generator))

    def forward(
        self,
        dense: torch.Tensor,
        ids: torch.Tensor,
        list_values: list[torch.Tensor],
        list_offsets: list[torch.Tensor],
    ) -> torch.Tensor:
        logit = (dense * self.dense_weights).sum(1) + torch.sin(ids.float() * self.id_weights).sum(1)
        rows = dense.shape[0]
        for values, offsets in zip(list_values, list_offsets):
            row = torch.repeat_interleave(torch.arange(rows), offsets[1:] - offsets[:-1])
            logit = logit + torch.zeros(rows).index_add_(0, row, torch.cos(values.float() * 0.37))
        return torch.sigmoid(logit).unsqueeze(1)


def _expected(spark, workflow_dir: str, raw: pd.DataFrame, model: torch.jit.ScriptModule) -> np.ndarray:
    """The model after Spark's transform of the same raw rows, in their order."""
    schema = Workflow.load_schema(workflow_dir, spark)
    features = Workflow.load(workflow_dir, spark).transform(_frame(spark, raw), keep=("line_number",))
    aligned = raw[["line_number"]].merge(features.toPandas(), on="line_number", validate="one_to_one")
    return call_model(model, table_features(aligned, schema))


def test_each_version_is_served_with_its_workflow_and_equals_the_model_after_spark(spark, tmp_path):
    workflow_dir = str(tmp_path / "workflow")
    workflow = every_op_workflow(input_schema(None)).fit(_frame(spark, raw_rows(0, ANY)))
    workflow.save(workflow_dir)
    workflow.release()
    schema = workflow.schema
    dims = (len(schema.continuous), len(schema.categorical))
    models = [torch.jit.script(Tiny(seed, *dims).eval()) for seed in (0, 1)]
    repository = tmp_path / "repository"
    assert add_version(repository, "ctr_model", models[0], schema=schema) == 1
    assert (
        write_ensemble(repository, "ctr", export_preprocess(spark, workflow_dir, tmp_path / "p1").parent) == 1
    )
    # Rows with tokens no workflow has seen yet, and that the extended one will know.
    raw = raw_rows(5, ANY + ["brand new"] * 6)
    assert raw["s"].eq("brand new").any()
    expected_v1 = _expected(spark, workflow_dir, raw, models[0])
    with TritonServer(repository) as server:
        client = triton_http.InferenceServerClient(server.http_url)
        client.load_model("ctr")
        spec = raw_spec(client, "ctr")
        assert spec.token_width is None and [c.name for c in spec.lists] == ["tags"]
        served_v1 = predict_raw(client, "ctr", raw)
        assert served_v1.shape == (len(raw), 1)
        assert np.abs(served_v1 - expected_v1).max() <= 1e-5
        ids_v1 = _preprocessed(client, spec, raw, "1")
        # Version 2: a model trained after the workflow's vocabularies grew with new data.
        Workflow.load(workflow_dir, spark).extend(
            _frame(spark, raw_rows(6, ["brand new"] * 3 + ANY)), workflow_dir
        )
        assert (
            add_version(repository, "ctr_model", models[1], schema=Workflow.load_schema(workflow_dir, spark))
            == 2
        )
        assert (
            write_ensemble(repository, "ctr", export_preprocess(spark, workflow_dir, tmp_path / "p2").parent)
            == 2
        )
        assert versions(repository, "ctr_preprocess") == [1, 2]
        client.load_model("ctr")  # now version 2's ensemble
        client.load_model("ctr_v1")
        client.load_model("ctr_v2")
        assert client.is_model_ready("ctr_preprocess", "1") and client.is_model_ready("ctr_preprocess", "2")
        # Version 1 computes what it did: its preprocessing (the old vocabularies) and its model.
        np.testing.assert_array_equal(predict_raw(client, "ctr", raw, version=1), served_v1)
        np.testing.assert_array_equal(_preprocessed(client, spec, raw, "1"), ids_v1)
        ids_v2 = _preprocessed(client, spec, raw, "2")
        assert (ids_v2 != ids_v1).any() and (ids_v1[raw["s"].eq("brand new").to_numpy()] == 0).any()
        expected_v2 = _expected(spark, workflow_dir, raw, models[1])
        for served in (predict_raw(client, "ctr", raw, version=2), predict_raw(client, "ctr", raw)):
            assert np.abs(served - expected_v2).max() <= 1e-5
        client.close()


def _preprocessed(
    client: triton_http.InferenceServerClient, spec, raw: pd.DataFrame, version: str
) -> np.ndarray:  # noqa: ANN001
    """The ids that version `version` of ctr_preprocess makes of the raw rows."""
    result = client.infer(
        "ctr_preprocess", _inputs(client, spec.encode(spec.batch(raw))), model_version=version
    )
    return result.as_numpy("CATEGORICAL")
