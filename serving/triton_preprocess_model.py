"""Triton python-backend model: raw Criteo fields -> model features, by the workflow's exported query.

serving/repository.py copies this file into the preprocess model's version directory as model.py,
beside preprocess.sql and the vocabulary parquet files (serving/preprocess.py). Inputs: RAW_DENSE
float64 [B, 13] (NaN = missing), RAW_CATEGORICAL bytes [B, 26] (empty = missing). Outputs: DENSE
float32 [B, 13], CATEGORICAL int64 [B, 26]."""

from __future__ import annotations

from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import triton_python_backend_utils as pb_utils  # provided by the python backend stub

from rec_plugin.schema import CATEGORICAL, DENSE
from serving.preprocess import DUCKDB_MACROS, QUERY, ROW_ID


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        version_dir = Path(args["model_repository"]) / args["model_version"]
        self.connection = duckdb.connect()
        for macro in DUCKDB_MACROS:
            self.connection.execute(macro)
        for vocabulary in version_dir.glob("vocab_*.parquet"):
            self.connection.execute(
                f"CREATE TABLE {vocabulary.stem} AS SELECT * FROM read_parquet('{vocabulary}')"
            )
        self.query = (version_dir / QUERY).read_text()

    def execute(self, requests: list) -> list:
        dense = [pb_utils.get_input_tensor_by_name(r, "RAW_DENSE").as_numpy() for r in requests]
        categorical = [pb_utils.get_input_tensor_by_name(r, "RAW_CATEGORICAL").as_numpy() for r in requests]
        values, tokens = np.concatenate(dense), np.concatenate(categorical)
        columns = {ROW_ID: pa.array(np.arange(len(values)))}
        for i, name in enumerate(DENSE):
            missing = np.isnan(values[:, i])
            columns[name] = pa.array(np.where(missing, 0, values[:, i]).astype(np.int32), mask=missing)
        for j, name in enumerate(CATEGORICAL):
            texts = [t.decode() if isinstance(t, bytes) else str(t) for t in tokens[:, j]]
            columns[name] = pa.array([t or None for t in texts], type=pa.string())
        self.connection.register("raw", pa.table(columns))
        result = self.connection.execute(self.query).to_arrow_table()
        self.connection.unregister("raw")
        features = np.stack([result[c].to_numpy() for c in DENSE], axis=1).astype(np.float32)
        ids = np.stack([result[c].to_numpy() for c in CATEGORICAL], axis=1).astype(np.int64)
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
