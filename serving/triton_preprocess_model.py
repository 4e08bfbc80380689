"""Triton python-backend model: raw Criteo fields -> model features, by the workflow's exported
expressions.

serving/repository.py copies this file into the preprocess model's version directory as model.py,
beside preprocess.json and the vocabulary parquet files (serving/preprocess.py exports them,
serving/preprocessor.py runs them). Inputs: RAW_DENSE float64 [B, 13] (NaN = missing),
RAW_CATEGORICAL uint8 [B, 26, 8] (each token's bytes, all zero = missing; serving/tokens.py).
Outputs: DENSE float32 [B, 13], CATEGORICAL int64 [B, 26]. Requests that dynamic batching groups run
as one batch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils  # provided by the python backend stub

from serving.allocator import keep_freed_memory
from serving.preprocessor import Preprocessor


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        keep_freed_memory()
        self.preprocess = Preprocessor(Path(args["model_repository"]) / args["model_version"])

    def execute(self, requests: list) -> list:
        dense = [pb_utils.get_input_tensor_by_name(r, "RAW_DENSE").as_numpy() for r in requests]
        tokens = [pb_utils.get_input_tensor_by_name(r, "RAW_CATEGORICAL").as_numpy() for r in requests]
        features, ids = self.preprocess(np.concatenate(dense), np.concatenate(tokens))
        bounds = np.cumsum([0, *(len(d) for d in dense)])
        return [
            pb_utils.InferenceResponse(
                [
                    pb_utils.Tensor("DENSE", features[start:stop]),
                    pb_utils.Tensor("CATEGORICAL", ids[start:stop]),
                ]
            )
            for start, stop in zip(bounds[:-1], bounds[1:])
        ]
