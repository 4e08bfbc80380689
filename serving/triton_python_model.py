"""Triton python-backend model: an exported TorchScript model (serving/export.py): a click model's
PROBABILITY [B, 1], or a recommender's outputs (ITEM_IDS and SCORES [B, K]), named by the config in
the order the model returns them.

serving/repository.py copies this file into each version directory as model.py, beside model.pt and
model_inputs.json (the version's input tensors, from the schema). The model's forward takes dense
float32 [B, n_continuous], ids int64 [B, n_categorical], and per list feature its values [N_i] and
offsets [B + 1]; a list feature arrives as LIST_<i> padded with 0 and LIST_<i>_LENGTHS, and a group
the schema lacks as an empty tensor. Requests that dynamic batching groups run as one forward pass."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import triton_python_backend_utils as pb_utils  # provided by the python backend stub

from serving.allocator import keep_freed_memory
from serving.preprocessor import CATEGORICAL, DENSE, lengths_of, list_output, unpadded


def model_arguments(
    tensors: dict[str, np.ndarray], lists: int
) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
    """The model's forward arguments from its input tensors by name (absent groups empty)."""
    rows = len(next(iter(tensors.values())))
    dense = tensors.get(DENSE, np.zeros((rows, 0), np.float32))
    ids = tensors.get(CATEGORICAL, np.zeros((rows, 0), np.int64))
    values, offsets = [], []
    for i in range(lists):
        v, o = unpadded(tensors[list_output(i)], tensors[lengths_of(list_output(i))])
        values.append(torch.from_numpy(v))
        offsets.append(torch.from_numpy(o))
    return (
        torch.from_numpy(np.ascontiguousarray(dense)),
        torch.from_numpy(np.ascontiguousarray(ids)),
        values,
        offsets,
    )


def forward(model: torch.jit.ScriptModule, arguments: tuple) -> list[np.ndarray]:
    """The model's outputs, each [B, width] (click probabilities [B, 1]); a model of the older
    two-tensor interface gets dense and ids only."""
    takes = len(list(model.graph.inputs())) - 1 if hasattr(model, "graph") else 4
    with torch.no_grad():
        result = model(*arguments[:takes]) if takes < 4 else model(*arguments)
    rows = len(arguments[0])
    return [out.numpy().reshape(rows, -1) for out in (result if isinstance(result, tuple) else (result,))]


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        keep_freed_memory()
        version_dir = Path(args["model_repository"]) / args["model_version"]
        self.model = torch.jit.load(str(version_dir / "model.pt"))
        self.model.eval()
        self.names = [spec["name"] for spec in json.loads((version_dir / "model_inputs.json").read_text())]
        self.outputs = [spec["name"] for spec in json.loads(args["model_config"])["output"]]
        self.lists = sum(
            1 for name in self.names if name.startswith("LIST_") and not name.endswith("_LENGTHS")
        )

    def execute(self, requests: list) -> list:
        inputs = [
            {name: pb_utils.get_input_tensor_by_name(r, name).as_numpy() for name in self.names}
            for r in requests
        ]
        merged = {name: np.concatenate([r[name] for r in inputs]) for name in self.names}
        results = forward(self.model, model_arguments(merged, self.lists))
        bounds = np.cumsum([0, *(len(next(iter(r.values()))) for r in inputs)])
        return [
            pb_utils.InferenceResponse(
                [pb_utils.Tensor(name, result[start:stop]) for name, result in zip(self.outputs, results)]
            )
            for start, stop in zip(bounds[:-1], bounds[1:])
        ]
