"""Cross: a hashed cross of two categorical columns, as a new id column (0 = either side missing)."""

from __future__ import annotations

from typing import Any

from pyspark.sql import DataFrame

from rec_plugin.ops.base import Op, categorical, require_at_least
from rec_plugin.schema import ColumnSchema, Tags
from rec_plugin.templates import expression


class Cross(Op):
    def __init__(self, buckets: int) -> None:
        require_at_least(self, 1, buckets=buckets)
        super().__init__(buckets=buckets)

    def output_columns(self, columns: list[str]) -> list[str]:
        if len(columns) != 2:
            raise ValueError(f"Cross takes two columns, got {columns}")
        return ["_x_".join(columns)]

    def output_schema(self, inputs: list[ColumnSchema], state: dict[str, Any]) -> list[ColumnSchema]:
        (name,) = self.output_columns([c.name for c in inputs])
        crossed = ColumnSchema(name, "int32", (Tags.CATEGORICAL,))
        return [categorical(crossed, self.params["buckets"] + 1)]

    def transform(self, frame: DataFrame, columns: list[str], state: dict[str, Any]) -> DataFrame:
        (name,) = self.output_columns(columns)
        crossed = expression("hashed_cross", {"x": columns[0], "y": columns[1]}, self.params)
        return frame.withColumn(name, crossed)
