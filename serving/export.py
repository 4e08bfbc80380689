"""Export of a trained run as TorchScript: the model Triton serves (and batch scoring loads)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import tritonclient.http as triton_http

from serving.repository import FLAVOURS, add_version, versions
from training.loop import WEIGHTS
from training.models import ModelConfig, build_model

MODEL_CONFIG = "model_config.json"


def trained_model(run_dir: Path) -> torch.nn.Module:
    """The run's final weights in its model class, in eval mode."""
    config = ModelConfig.from_dict(json.loads((run_dir / MODEL_CONFIG).read_text()))
    model = build_model(config)
    model.load_state_dict(torch.load(run_dir / WEIGHTS, weights_only=True))
    return model.eval()


class ClickProbability(torch.nn.Module):
    """What is served: click probabilities [B, 1] from dense float32 [B, 13] and categorical int64
    [B, 26], the tensors of serving/repository.py for both backends."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, dense: torch.Tensor, categorical: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.model(dense, categorical)).unsqueeze(1)


def torchscript(run_dir: Path) -> torch.jit.ScriptModule:
    """The trained model as a traced ClickProbability, checked against eager on the example batch."""
    model = ClickProbability(trained_model(run_dir)).eval()
    config = ModelConfig.from_dict(json.loads((run_dir / MODEL_CONFIG).read_text()))
    generator = torch.Generator().manual_seed(0)
    dense = torch.randn(64, config.num_dense, generator=generator)
    categorical = torch.stack(
        [torch.randint(0, size, (64,), generator=generator) for size in config.cardinalities], dim=1
    )
    with torch.no_grad():
        traced = torch.jit.trace(model, (dense, categorical))
        torch.testing.assert_close(traced(dense, categorical), model(dense, categorical))
    return traced


def main(argv: list[str] | None = None) -> int:
    """sparkrec export: a trained run -> the next version of a model in a Triton repository; with
    --push, loaded on a running server (its version policy keeps the previous version serving)."""
    parser = argparse.ArgumentParser(prog="sparkrec export", description=main.__doc__.splitlines()[0])
    parser.add_argument("--run-dir", required=True, type=Path, help="a `sparkrec train` run directory")
    parser.add_argument("--repository", required=True, type=Path, help="the Triton model repository")
    parser.add_argument("--name", default="ctr", help="model name in the repository")
    parser.add_argument("--flavour", choices=FLAVOURS, default="python")
    parser.add_argument("--push", metavar="URL", help="a running server's HTTP address, e.g. 127.0.0.1:8000")
    args = parser.parse_args(argv)
    version = add_version(args.repository, args.name, torchscript(args.run_dir), args.flavour)
    print(f"export: {args.name} version {version} written to {args.repository / args.name}")
    if args.push:
        client = triton_http.InferenceServerClient(args.push)
        client.load_model(args.name)
        ready = [
            v for v in map(str, versions(args.repository, args.name)) if client.is_model_ready(args.name, v)
        ]
        client.close()
        print(f"export: loaded on {args.push}; versions ready: {', '.join(ready)}")
    return version


if __name__ == "__main__":
    main()
