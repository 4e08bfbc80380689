"""LogOp: log(1 + x), the usual squashing of heavy-tailed counts (clip negatives first)."""

from __future__ import annotations

from rec_plugin.ops.base import RowOp


class LogOp(RowOp):
    template = "log"

    def __init__(self) -> None:
        super().__init__()
