"""Export of a trained run as TorchScript (what Triton serves here, and batch scoring loads) or ONNX."""

from __future__ import annotations

import tempfile
from pathlib import Path

import onnxruntime
import torch
import tritonclient.http as triton_http
from tritonclient.utils import InferenceServerException

from rec_plugin.errors import CommandParser, InputError, run_command
from serving.preprocess import export_preprocess
from serving.repository import (
    FLAVOURS,
    INPUTS,
    OUTPUTS,
    add_version,
    ensemble_model_name,
    versions,
    write_ensemble,
)
from spark_jobs.session import build_session
from training.models import build_model
from training.run_directory import RunDirectory, RunLocation


def trained_model(run_dir: RunLocation) -> torch.nn.Module:
    """The run's final weights in its model class, in eval mode (the run directory: a path or URI)."""
    run = RunDirectory.at(run_dir)
    model = build_model(run.model_config())
    model.load_state_dict(run.weights())
    return model.eval()


class ClickProbability(torch.nn.Module):
    """What is served: click probabilities [B, 1] from dense float32 [B, 13] and categorical int64
    [B, 26], the tensors of serving/repository.py for both backends."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, dense: torch.Tensor, categorical: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.model(dense, categorical)).unsqueeze(1)


def _served(run_dir: RunLocation) -> tuple[ClickProbability, tuple[torch.Tensor, torch.Tensor]]:
    """The run's ClickProbability and an example batch of 64 rows to trace and check it with."""
    run = RunDirectory.at(run_dir)
    model = ClickProbability(trained_model(run)).eval()
    config = run.model_config()
    generator = torch.Generator().manual_seed(0)
    dense = torch.randn(64, config.num_dense, generator=generator)
    categorical = torch.stack(
        [torch.randint(0, size, (64,), generator=generator) for size in config.cardinalities], dim=1
    )
    return model, (dense, categorical)


def torchscript(run_dir: RunLocation) -> torch.jit.ScriptModule:
    """The trained model as a traced ClickProbability, checked against eager on the example batch."""
    model, example = _served(run_dir)
    with torch.no_grad():
        traced = torch.jit.trace(model, example)
        torch.testing.assert_close(traced(*example), model(*example))
    return traced


def onnx_program(run_dir: RunLocation) -> torch.onnx.ONNXProgram:
    """The trained model as ONNX (torch.export, a dynamic batch axis, the served tensor names),
    checked with onnxruntime against eager at batch 1 and 64."""
    model, example = _served(run_dir)
    batch = torch.export.Dim("batch")
    program = torch.onnx.export(
        model,
        example,
        input_names=[spec.name for spec in INPUTS],
        output_names=[spec.name for spec in OUTPUTS],
        dynamic_shapes=({0: batch}, {0: batch}),
        dynamo=True,
        verbose=False,
    )
    session = onnxruntime.InferenceSession(
        program.model_proto.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    for rows in (1, len(example[0])):
        inputs = {spec.name: tensor[:rows].numpy() for spec, tensor in zip(INPUTS, example)}
        with torch.no_grad():
            expected = model(*(tensor[:rows] for tensor in example))
        torch.testing.assert_close(torch.from_numpy(session.run(None, inputs)[0]), expected)
    return program


def _require_live(url: str) -> None:
    """A server answers at `url`: checked before a version is written that it could not load."""
    client = triton_http.InferenceServerClient(url)
    try:
        client.is_server_live()
    except Exception:  # refused connections surface as several client exception types
        raise InputError(
            f"no Triton server answers at {url}: start one (sparkrec serve) or fix --push"
        ) from None
    finally:
        client.close()


def main(argv: list[str] | None = None) -> int:
    """sparkrec export: a trained run -> the next version of a model in a Triton model repository.

    With --workflow, also the preprocess model and the ensemble that serve raw Criteo fields; with
    --push, loaded on a running server (its version policy keeps the previous version serving)."""
    parser = CommandParser(prog="sparkrec export", description=main.__doc__.splitlines()[0])
    parser.add_argument("--run-dir", required=True, help="a `sparkrec train` run directory (a path or URI)")
    parser.add_argument("--repository", required=True, type=Path, help="the Triton model repository")
    parser.add_argument("--name", default="ctr", help="model name in the repository")
    parser.add_argument(
        "--workflow", help="the fitted workflow: adds <name>_preprocess and the ensemble <name>"
    )
    parser.add_argument("--flavour", choices=FLAVOURS, default="python")
    parser.add_argument("--push", metavar="URL", help="a running server's HTTP address, e.g. 127.0.0.1:8000")
    parser.add_argument(
        "--profile", default="local", help="Spark profile (reads the workflow's vocabularies)"
    )
    args = parser.parse_args(argv)
    if args.push:
        _require_live(args.push)
    model_name = ensemble_model_name(args.name) if args.workflow else args.name
    served = onnx_program(args.run_dir) if args.flavour == "onnxruntime" else torchscript(args.run_dir)
    version = add_version(args.repository, model_name, served, args.flavour)
    print(f"export: {model_name} version {version} written to {args.repository / model_name}")
    if args.workflow:
        spark = build_session(args.profile, "sparkrec-export")
        with tempfile.TemporaryDirectory() as staging:
            write_ensemble(
                args.repository, args.name, export_preprocess(spark, args.workflow, Path(staging)).parent
            )
        print(f"export: ensemble {args.name} = {args.name}_preprocess -> {model_name}")
    if args.push:
        client = triton_http.InferenceServerClient(args.push)
        try:
            client.load_model(args.name)
        except InferenceServerException as error:
            raise InputError(f"{args.name} did not load on {args.push}: {error.message()}") from None
        loaded = versions(args.repository, model_name)
        ready = [str(v) for v in loaded if client.is_model_ready(model_name, str(v))]
        client.close()
        print(f"export: loaded on {args.push}; {model_name} versions ready: {', '.join(ready)}")
    return version


if __name__ == "__main__":
    run_command(main, "sparkrec export")
