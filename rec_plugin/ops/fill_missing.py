"""FillMissing: replaces nulls with a constant."""

from __future__ import annotations

from rec_plugin.ops.base import RowOp


class FillMissing(RowOp):
    template = "fill_missing"
    keeps_strings = True

    def __init__(self, value: float = 0) -> None:
        super().__init__(value=value)
