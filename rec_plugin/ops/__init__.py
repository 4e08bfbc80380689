"""Feature ops, composable with `>>`: each has its own module with a fit/transform split."""

from rec_plugin.ops.base import Op
from rec_plugin.ops.categorify import Categorify
from rec_plugin.ops.clip import Clip
from rec_plugin.ops.cross import Cross
from rec_plugin.ops.date_part import DatePart
from rec_plugin.ops.fill_missing import FillMissing
from rec_plugin.ops.hash_bucket import HashBucket
from rec_plugin.ops.list_categorify import ListCategorify
from rec_plugin.ops.log import LogOp
from rec_plugin.ops.normalize import Normalize
from rec_plugin.ops.target_encoding import TargetEncoding

OPS: dict[str, type[Op]] = {
    op.__name__: op
    for op in (
        Categorify,
        Clip,
        Cross,
        DatePart,
        FillMissing,
        HashBucket,
        ListCategorify,
        LogOp,
        Normalize,
        TargetEncoding,
    )
}

__all__ = [
    "OPS",
    "Categorify",
    "Clip",
    "Cross",
    "DatePart",
    "FillMissing",
    "HashBucket",
    "LogOp",
    "Normalize",
    "Op",
    "TargetEncoding",
]
