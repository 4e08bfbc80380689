"""Clip: bounds values to [min, max] (either side optional); nulls stay null."""

from __future__ import annotations

from rec_plugin.ops.base import RowOp


class Clip(RowOp):
    template = "clip"
    reads_numbers = True

    def __init__(self, min: float | None = None, max: float | None = None) -> None:  # noqa: A002
        if min is not None and max is not None and min > max:
            raise ValueError(f"Clip param min={min!r} is above max={max!r}")
        super().__init__(min=min, max=max)
