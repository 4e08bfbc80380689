"""Normalize: (x - mean) / std with statistics from fit, as float32."""

from __future__ import annotations

import math
from typing import Any

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from rec_plugin.ops.base import RowOp


class Normalize(RowOp):
    template = "normalize"

    def __init__(self) -> None:
        super().__init__()

    def fit_query(self, frame: DataFrame, columns: list[str]) -> DataFrame:
        """Means of x and x^2: plain averages run on the GPU, stddev aggregates do not (RAPIDS 26.08)."""
        means = [F.avg(c).alias(f"{c}__mean") for c in columns]
        return frame.agg(*means, *[F.avg(F.col(c) * F.col(c)).alias(f"{c}__square") for c in columns])

    def state_from(self, query: DataFrame, columns: list[str]) -> dict[str, Any]:
        row = query.first()
        state = {}
        for c in columns:
            mean, square = float(row[f"{c}__mean"] or 0.0), float(row[f"{c}__square"] or 0.0)
            state[c] = {"mean": mean, "std": math.sqrt(max(square - mean * mean, 0.0)) or 1.0}
        return state

    def template_params(self, column: str, state: dict[str, Any]) -> dict[str, Any]:
        return state[column]
