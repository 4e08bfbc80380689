"""Normalize: (x - mean) / std with statistics from fit, as float32."""

from __future__ import annotations

import math
import statistics
from typing import Any

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from rec_plugin.ops.base import RowOp

# The rows whose median value a column's squares are taken about.
SHIFT_ROWS = 1000


class Normalize(RowOp):
    template = "normalize"
    reads_numbers = True

    def __init__(self) -> None:
        super().__init__()

    def fit(self, frame: DataFrame, columns: list[str], persisted: list[DataFrame]) -> dict[str, Any]:
        """The statistics about a typical value of each column, the median of its first rows: for an
        epoch time (1.7e9 +- 100), E[x^2] - E[x]^2 in doubles cancels to nothing (or below 0), about a
        value near x's it does not."""
        first = frame.select(columns).limit(SHIFT_ROWS).collect()
        shifts = {c: statistics.median([r[c] for r in first if r[c] is not None] or [0.0]) for c in columns}
        return self.state_from(self.fit_query(frame, columns, shifts), columns)

    def fit_query(
        self, frame: DataFrame, columns: list[str], shifts: dict[str, float] | None = None
    ) -> DataFrame:
        """Means of x and of (x - shift)^2 (fit's shifts; 0 where a plan is only looked at, which runs
        no job). Plain averages run on the GPU, stddev aggregates do not (RAPIDS 26.08)."""
        shifts = shifts or dict.fromkeys(columns, 0.0)
        means = [F.avg(c).alias(f"{c}__mean") for c in columns]
        about = {c: F.col(c) - F.lit(float(k)) for c, k in shifts.items()}
        squares = [F.avg(d * d).alias(f"{c}__square") for c, d in about.items()]
        return frame.agg(*means, *squares, *[F.lit(float(k)).alias(f"{c}__shift") for c, k in shifts.items()])

    def state_from(self, query: DataFrame, columns: list[str]) -> dict[str, Any]:
        row = query.first()
        state = {}
        for c in columns:
            mean, square = float(row[f"{c}__mean"] or 0.0), float(row[f"{c}__square"] or 0.0)
            offset = mean - float(row[f"{c}__shift"])
            state[c] = {"mean": mean, "std": math.sqrt(max(square - offset * offset, 0.0)) or 1.0}
        return state

    def template_params(self, column: str, state: dict[str, Any]) -> dict[str, Any]:
        return state[column]
