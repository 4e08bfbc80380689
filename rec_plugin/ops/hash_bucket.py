"""HashBucket: ids in 1..buckets from a hash of the value (0 = missing), with no vocabulary to fit."""

from __future__ import annotations

from typing import Any

from rec_plugin.ops.base import RowOp, categorical, require_at_least
from rec_plugin.schema import ColumnSchema


class HashBucket(RowOp):
    template = "hash_bucket"

    def __init__(self, buckets: int) -> None:
        require_at_least(self, 1, buckets=buckets)
        super().__init__(buckets=buckets)

    def output_schema(self, inputs: list[ColumnSchema], state: dict[str, Any]) -> list[ColumnSchema]:
        return [categorical(c, self.params["buckets"] + 1, token_width=c.token_width) for c in inputs]
