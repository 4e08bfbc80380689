"""What the RAPIDS Accelerator would run on a GPU, asked of its jar on a machine without one.

ExplainPlan.explainPotentialGpuPlan tags a DataFrame's plan as the plugin would on a GPU cluster and
returns lines like `*Exec <ProjectExec> will run on GPU` or `!Exec <X> cannot run on GPU because ...`.
It needs only the rapids-4-spark jar on the driver's classpath (profiles with `sparkrec.jars ...rapids`)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from pyspark.sql import DataFrame

_LINE = re.compile(r"^\s*([*!@#])(Exec|Expression|Partitioning|Input|Output)\s+<(\w+)>\s+(.*)$")


@dataclass(frozen=True)
class GpuPlanReport:
    """Operators (Exec nodes) of a plan that would, and would not, run on the GPU, with reasons."""

    on_gpu: list[str]
    not_on_gpu: list[tuple[str, str]]
    text: str


def rapids_available(frame: DataFrame) -> bool:
    jvm = frame.sparkSession.sparkContext._jvm
    try:
        jvm.java.lang.Class.forName(
            "com.nvidia.spark.rapids.ExplainPlan", False, jvm.Thread.currentThread().getContextClassLoader()
        )
    except Exception:  # py4j raises its own error type for a missing class
        return False
    return True


def gpu_plan(frame: DataFrame) -> GpuPlanReport:
    """The RAPIDS Accelerator's verdict on every operator of the frame's physical plan."""
    jvm = frame.sparkSession.sparkContext._jvm
    text = jvm.com.nvidia.spark.rapids.ExplainPlan.explainPotentialGpuPlan(frame._jdf, "ALL")
    on_gpu, not_on_gpu = [], []
    for line in text.splitlines():
        match = _LINE.match(line)
        if match and match.group(2) == "Exec":
            marker, name, rest = match.group(1), match.group(3), match.group(4)
            if marker == "*":
                on_gpu.append(name)
            else:
                not_on_gpu.append((name, rest))
    return GpuPlanReport(on_gpu, not_on_gpu, text)
