"""Export of a trained run as TorchScript (what Triton serves here, and batch scoring loads) or ONNX.

A click model (the CTR models, and NCF: a user and an item id) is served as its click probability; a
recommender (Mult-VAE) as its top K items and their scores for a bag of items, K fixed at export
(the Triton config's output dims; a client takes any first k <= K of them)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import onnxruntime
import torch
import tritonclient.http as triton_http
from pyspark.sql import SparkSession

from rec_plugin.errors import InputError
from rec_plugin.interactions import RANKING_DEPTH
from serving.preprocess import export_preprocess
from serving.repository import (
    INPUTS,
    OUTPUTS,
    QUEUE_DELAY_US,
    TensorSpec,
    add_version,
    ensemble_model_name,
    postprocess_model_name,
    preprocess_model_name,
    top_k_outputs,
    write_ensemble,
    written_whole,
)
from training.models import ModelConfig, build_model, example_inputs
from training.models.cf import TopKRecommender
from training.models.parts import without_id_checks
from training.run_directory import RunDirectory, RunLocation


def trained_model(run_dir: RunLocation) -> torch.nn.Module:
    """The run's final weights in its model class, in eval mode (the run directory: a path or URI)."""
    run = RunDirectory.at(run_dir)
    model = build_model(run.model_config())
    model.load_state_dict(run.weights())
    return model.eval()


class ClickProbability(torch.nn.Module):
    """What is served: click probabilities [B, 1] from the model's inputs (training/models/ctr.py):
    dense float32 [B, n_continuous], ids int64 [B, n_categorical], and per list feature of the schema
    its values int64 [N_i] and offsets int64 [B + 1] (both lists empty without list features).
    Scriptable (torch.jit.script), so one TorchScript file takes any batch size and list lengths."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(
        self,
        dense: torch.Tensor,
        ids: torch.Tensor,
        list_values: list[torch.Tensor],
        list_offsets: list[torch.Tensor],
    ) -> torch.Tensor:
        return torch.sigmoid(self.model(dense, ids, list_values, list_offsets)).unsqueeze(1)


Example = tuple[torch.Tensor, torch.Tensor, list[torch.Tensor], list[torch.Tensor]]


def _served(run_dir: RunLocation) -> tuple[ClickProbability, ModelConfig, Example]:
    """The run's ClickProbability, its config and an example batch of 64 rows to check it with."""
    run = RunDirectory.at(run_dir)
    model = ClickProbability(trained_model(run)).eval()
    config = run.model_config()
    return model, config, example_inputs(config, 64, torch.Generator().manual_seed(0))


def torchscript(run_dir: RunLocation) -> torch.jit.ScriptModule:
    """The trained model as a scripted ClickProbability, checked against eager on the example batch."""
    model, _, example = _served(run_dir)
    scripted = torch.jit.script(model)
    with torch.no_grad():
        torch.testing.assert_close(scripted(*example), model(*example))
    return scripted


class _WithoutLists(torch.nn.Module):
    """ClickProbability of a model without list features, as the two tensors ONNX takes. Its ids are
    not range-checked (torch.export cannot trace the check's branch on data)."""

    def __init__(self, served: ClickProbability) -> None:
        super().__init__()
        self.served = without_id_checks(served)

    def forward(self, dense: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        return self.served(dense, ids, [], [])


def onnx_program(run_dir: RunLocation) -> torch.onnx.ONNXProgram:
    """The trained model as ONNX (torch.export, a dynamic batch axis, the served tensor names),
    checked with onnxruntime against eager at batch 1 and 64. Only for models without list
    features: their jagged inputs (a variable number of variable-length tensors) have no ONNX form
    here, so those are refused in one line (export them as TorchScript)."""
    served, config, (dense, ids, _, _) = _served(run_dir)
    if config.list_features:
        raise InputError(
            f"the onnxruntime flavour takes no list features, and this model has "
            f"{', '.join(config.list_features)}: export it with --flavour python or pytorch_libtorch"
        )
    model, example = _WithoutLists(served).eval(), (dense, ids)
    names = [spec.name for spec in INPUTS][: len(example)]
    batch = torch.export.Dim("batch")
    program = torch.onnx.export(
        model,
        example,
        input_names=names,
        output_names=[spec.name for spec in OUTPUTS],
        dynamic_shapes=({0: batch}, {0: batch}),
        dynamo=True,
        verbose=False,
    )
    session = onnxruntime.InferenceSession(
        program.model_proto.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    for rows in (1, len(dense)):
        inputs = {name: tensor[:rows].numpy() for name, tensor in zip(names, example)}
        with torch.no_grad():
            expected = model(*(tensor[:rows] for tensor in example))
        torch.testing.assert_close(torch.from_numpy(session.run(None, inputs)[0]), expected)
    return program


# Models served as recommenders (top K items for a bag of items), and the K exported by default: the
# deepest ranking their evaluation reads.
RECOMMENDERS = ("multvae",)
TOP_K = RANKING_DEPTH


class TopItems(torch.nn.Module):
    """What a recommender serves: its TopKRecommender's item ids int64 [B, k] and scores float32 [B, k]
    from the model inputs' four arguments (it reads the one list feature: the bag of items), so the
    python backend calls it as it calls every model."""

    def __init__(self, recommender: TopKRecommender) -> None:
        super().__init__()
        self.recommender = recommender

    def forward(
        self,
        dense: torch.Tensor,
        ids: torch.Tensor,
        list_values: list[torch.Tensor],
        list_offsets: list[torch.Tensor],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.recommender(list_values[0], list_offsets[0])


def top_items(run_dir: RunLocation, k: int = TOP_K) -> torch.jit.ScriptModule:
    """The trained recommender's top `k` items as a scripted TopItems, checked against eager on the
    example batch."""
    run = RunDirectory.at(run_dir)
    try:
        model = TopItems(TopKRecommender(trained_model(run), k)).eval()
    except ValueError as error:  # k beyond the vocabulary
        raise InputError(f"--top-k {k}: {error}") from None
    example = example_inputs(run.model_config(), 64, torch.Generator().manual_seed(0))
    scripted = torch.jit.script(model)
    with torch.no_grad():
        torch.testing.assert_close(scripted(*example), model(*example))
    return scripted


def served_model(
    run_dir: RunLocation, flavour: str = "python", k: int = TOP_K
) -> tuple[torch.jit.ScriptModule | torch.onnx.ONNXProgram, tuple[TensorSpec, ...]]:
    """What export writes for the run, by its model config's name, and its output tensors: a
    recommender's top `k` items, or a click model's probability."""
    if RunDirectory.at(run_dir).model_config().name not in RECOMMENDERS:
        return (onnx_program(run_dir) if flavour == "onnxruntime" else torchscript(run_dir)), OUTPUTS
    if flavour == "onnxruntime":
        raise InputError(
            "the onnxruntime flavour takes no list features, and a recommender reads its bag of items: "
            "export it with --flavour python"
        )
    return top_items(run_dir, k), top_k_outputs(k)


def export_run(
    run_dir: RunLocation,
    repository: Path,
    name: str,
    flavour: str = "python",
    top_k: int = TOP_K,
    queue_delay_us: int = QUEUE_DELAY_US,
    spark: SparkSession | None = None,
    workflow: str | None = None,
) -> int:
    """Writes the run as the next version of `name` (with `workflow`: of `name`_model, with the
    preprocessing of the workflow version the run was trained on and the ensembles over both);
    returns the version."""
    model_name = ensemble_model_name(name) if workflow else name
    served, outputs = served_model(run_dir, flavour, top_k)
    # The schema the model was trained with: its inputs, and the outputs its preprocessing must give.
    schema = RunDirectory.at(run_dir).schema()
    if workflow and spark is None:
        raise ValueError("exporting the preprocessing reads the workflow's vocabularies: pass spark")
    with tempfile.TemporaryDirectory() as staging:
        # The preprocessing is staged first: a workflow that cannot serve the run is refused before
        # any version is written.
        preprocess = export_preprocess(spark, workflow, Path(staging), schema).parent if workflow else None
        with written_whole(repository, name):
            uri = RunDirectory.at(run_dir).uri
            version = add_version(
                repository, model_name, served, flavour, schema, queue_delay_us, outputs, run=uri
            )
            if preprocess is not None:
                write_ensemble(repository, name, preprocess, version, queue_delay_us)
    print(f"export: {model_name} version {version} written to {repository / model_name}")
    if preprocess is not None:
        steps = [preprocess_model_name(name), model_name]
        steps += [postprocess_model_name(name)] if outputs != OUTPUTS else []
        print(f"export: ensemble {name} = {' -> '.join(steps)}")
    return version


def require_live(url: str) -> None:
    """A server answers at `url`: checked before a version is written that it could not load."""
    client = triton_http.InferenceServerClient(url)
    try:
        client.is_server_live()
    except Exception:  # refused connections surface as several client exception types
        raise InputError(
            f"no Triton server answers at {url}: start one (sparkrec serve) or fix its address"
        ) from None
    finally:
        client.close()
