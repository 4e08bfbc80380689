"""Triton python-backend model: a recommender's item ids -> the raw items of its vocabulary.

serving/repository.py copies this file into each version directory of <name>_postprocess as model.py,
beside vocabulary.parquet (the lookup table of the list the version's model takes, from the same
version's preprocessing). Input ITEM_IDS INT64 [K], output ITEMS BYTES [K], row by row; an empty
item where the model had fewer than K items to recommend (its id -1, read as id 0's empty token)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils  # provided by the python backend stub

from serving.allocator import keep_freed_memory
from serving.preprocessor import ITEM_IDS, ITEMS, VOCABULARY_FILE, id_tokens


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        keep_freed_memory()
        self.tokens = id_tokens(Path(args["model_repository"]) / args["model_version"] / VOCABULARY_FILE)

    def execute(self, requests: list) -> list:
        ids = [pb_utils.get_input_tensor_by_name(r, ITEM_IDS).as_numpy() for r in requests]
        items = [self.tokens[np.maximum(i, 0)] for i in ids]
        return [pb_utils.InferenceResponse([pb_utils.Tensor(ITEMS, i)]) for i in items]
