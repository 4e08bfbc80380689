"""HashBucket: ids in 1..buckets from a hash of the value (0 = missing), with no vocabulary to fit."""

from __future__ import annotations

from rec_plugin.ops.base import RowOp


class HashBucket(RowOp):
    template = "hash_bucket"

    def __init__(self, buckets: int) -> None:
        super().__init__(buckets=buckets)
