"""Triton python-backend model: the exported TorchScript click model (serving/export.py).

serving/repository.py copies this file into each version directory as model.py. Requests that
dynamic batching groups run as one forward pass."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import triton_python_backend_utils as pb_utils  # provided by the python backend stub

from serving.allocator import keep_freed_memory


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        keep_freed_memory()
        version_dir = Path(args["model_repository"]) / args["model_version"]
        self.model = torch.jit.load(str(version_dir / "model.pt"))
        self.model.eval()

    def execute(self, requests: list) -> list:
        dense = [pb_utils.get_input_tensor_by_name(r, "DENSE").as_numpy() for r in requests]
        categorical = [pb_utils.get_input_tensor_by_name(r, "CATEGORICAL").as_numpy() for r in requests]
        with torch.no_grad():
            batch = (torch.from_numpy(np.concatenate(dense)), torch.from_numpy(np.concatenate(categorical)))
            probabilities = self.model(*batch).numpy()
        bounds = np.cumsum([0, *(len(d) for d in dense)])
        return [
            pb_utils.InferenceResponse([pb_utils.Tensor("PROBABILITY", probabilities[start:stop])])
            for start, stop in zip(bounds[:-1], bounds[1:])
        ]
