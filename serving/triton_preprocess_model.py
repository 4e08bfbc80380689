"""Triton python-backend model: raw Criteo fields -> model features, by the workflow's exported
expressions.

serving/repository.py copies this file into the preprocess model's version directory as model.py,
beside preprocess.json and the vocabulary parquet files (serving/preprocess.py exports them,
serving/preprocessor.py runs them). Inputs: RAW_DENSE float64 [B, 13] (NaN = missing),
RAW_CATEGORICAL uint8 [B, 26, 8] (each token's bytes, all zero = missing; serving/tokens.py).
Outputs: DENSE float32 [B, 13], CATEGORICAL int64 [B, 26]. Requests that dynamic batching groups run
as one batch; a request whose counts ingest would reject gets an error response with the
preprocessor's message, and the requests batched with it are served."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils  # provided by the python backend stub

from rec_plugin.errors import InputError
from serving.allocator import keep_freed_memory
from serving.preprocessor import Preprocessor


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        keep_freed_memory()
        self.preprocess = Preprocessor(Path(args["model_repository"]) / args["model_version"])

    def execute(self, requests: list) -> list:
        dense = [pb_utils.get_input_tensor_by_name(r, "RAW_DENSE").as_numpy() for r in requests]
        tokens = [pb_utils.get_input_tensor_by_name(r, "RAW_CATEGORICAL").as_numpy() for r in requests]
        try:
            return self._responses(dense, tokens)
        except InputError:
            # One request's bad value must not fail the others: each alone, errors as responses.
            return [self._alone(d, t) for d, t in zip(dense, tokens)]

    def _alone(self, dense: np.ndarray, tokens: np.ndarray) -> object:
        """One request's response, or an error response carrying the InputError's message."""
        try:
            return self._responses([dense], [tokens])[0]
        except InputError as error:
            refused = pb_utils.TritonError(str(error), pb_utils.TritonError.INVALID_ARG)
            return pb_utils.InferenceResponse(output_tensors=[], error=refused)

    def _responses(self, dense: list[np.ndarray], tokens: list[np.ndarray]) -> list:
        """The requests' inputs preprocessed as one batch, cut back into one response each."""
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
