"""LogOp: log(1 + x), the usual squashing of heavy-tailed counts and prices; a negative value is taken
as 0 (log1p is no number at -1 and below: Spark's NULL, polars' -inf or NaN at serving), so training
and serving agree on any input."""

from __future__ import annotations

from rec_plugin.ops.base import RowOp


class LogOp(RowOp):
    template = "log"
    reads_numbers = True

    def __init__(self) -> None:
        super().__init__()
