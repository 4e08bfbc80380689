"""Triton python-backend model: raw fields -> model features, by the workflow's exported steps.

serving/repository.py copies this file into each version directory of <name>_preprocess as model.py,
beside preprocess.json and the lookup tables (serving/preprocess.py exports them from the workflow
the version's model was trained with, serving/preprocessor.py runs them). Inputs are the RawSpec's
tensors (RAW_DENSE, RAW_CATEGORICAL, RAW_LIST_<i> and their lengths), outputs the model's (DENSE,
CATEGORICAL, LIST_<i> padded with 0 and LIST_<i>_LENGTHS), each only where the schema has that
group. Requests that dynamic batching groups run as one batch; a request whose values ingest would
reject gets an error response with the preprocessor's message, and the requests batched with it are
served."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils  # provided by the python backend stub

from rec_plugin.errors import InputError
from serving.allocator import keep_freed_memory
from serving.preprocessor import CATEGORICAL, DENSE, Features, Preprocessor, lengths_of, list_output, padded


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        keep_freed_memory()
        self.preprocess = Preprocessor(Path(args["model_repository"]) / args["model_version"])
        self.names = [name for name, _, _ in self.preprocess.spec.tensors()]
        self.widths = [column.max_length for column in self.preprocess.spec.lists]

    def execute(self, requests: list) -> list:
        inputs = [
            {name: pb_utils.get_input_tensor_by_name(r, name).as_numpy() for name in self.names}
            for r in requests
        ]
        try:
            return self._responses(inputs)
        except InputError:
            # One request's bad value must not fail the others: each alone, errors as responses.
            return [self._alone(request) for request in inputs]

    def _alone(self, request: dict) -> object:
        """One request's response, or an error response carrying the InputError's message."""
        try:
            return self._responses([request])[0]
        except InputError as error:
            refused = pb_utils.TritonError(str(error), pb_utils.TritonError.INVALID_ARG)
            return pb_utils.InferenceResponse(output_tensors=[], error=refused)

    def _responses(self, requests: list[dict]) -> list:
        """The requests' inputs preprocessed as one batch, cut back into one response each."""
        merged = {name: np.concatenate([r[name] for r in requests]) for name in self.names}
        features = self.preprocess(*self.preprocess.spec.decode(merged))
        tensors = self._tensors(features)
        bounds = np.cumsum([0, *(len(next(iter(r.values()))) for r in requests)])
        return [
            pb_utils.InferenceResponse([pb_utils.Tensor(name, value[start:stop]) for name, value in tensors])
            for start, stop in zip(bounds[:-1], bounds[1:])
        ]

    def _tensors(self, features: Features) -> list[tuple[str, np.ndarray]]:
        tensors = []
        if features.dense.shape[1]:
            tensors.append((DENSE, features.dense))
        if features.ids.shape[1]:
            tensors.append((CATEGORICAL, features.ids))
        for i, (values, offsets) in enumerate(zip(features.list_values, features.list_offsets)):
            ids, lengths = padded(values, offsets, self.widths[i])
            tensors += [(list_output(i), ids), (lengths_of(list_output(i)), lengths)]
        return tensors
