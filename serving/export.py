"""Export of a trained run as TorchScript: the model Triton serves (and batch scoring loads)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

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
