"""The Criteo preprocessing, in the ops graph: the workflow the featurize job fits by default."""

from __future__ import annotations

from rec_plugin.ops import Categorify, Clip, FillMissing, LogOp, Normalize
from rec_plugin.schema import CATEGORICAL, DENSE, LABEL
from rec_plugin.workflow import Workflow


def criteo_workflow(freq_threshold: int = 15, max_size: int | None = None) -> Workflow:
    cont = DENSE >> FillMissing(0) >> Clip(min=0) >> LogOp() >> Normalize()
    cat = CATEGORICAL >> Categorify(freq_threshold=freq_threshold, max_size=max_size)
    return Workflow(cont + cat + [LABEL])
