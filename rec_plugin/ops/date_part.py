"""DatePart: the hour of the day or the day of the week of an event time, as a new id column.

Bronze keeps a click log's event time as a number (epoch seconds or milliseconds, UTC; a timestamp
column's milliseconds, rec_plugin/dataset.py): a timestamp as such is not a feature a model can
embed, but its hour and weekday are (a daily and a weekly curve, not monotone, so ids rather than
numbers). Their domains are fixed (24 hours, 7 days), so
there is no vocabulary to fit: id 0 is a missing time, then hour 0-23 -> ids 1-24 and Monday-Sunday
-> ids 1-7. Serving computes the same ids from the op's template (serving/preprocess.py)."""

from __future__ import annotations

from typing import Any

from pyspark.sql import DataFrame
from pyspark.sql.types import IntegerType, LongType

from rec_plugin.errors import InputError
from rec_plugin.ops.base import RowOp, categorical
from rec_plugin.schema import ColumnSchema, Tags

# part -> (its template in op_templates.json, the number of values it takes).
PARTS = {"hour": ("hour_of_day", 24), "weekday": ("day_of_week", 7)}
# unit -> the time's ticks per second.
UNITS = {"s": 1, "ms": 1000}
# Column types that hold an epoch time: bronze's int and long.
EPOCH_DTYPES = ("int32", "int64")


class DatePart(RowOp):
    reads_numbers = True

    def __init__(self, part: str, unit: str = "s") -> None:
        if part not in PARTS:
            raise ValueError(f"DatePart part={part!r} is not one of {sorted(PARTS)}")
        if unit not in UNITS:
            raise ValueError(f"DatePart unit={unit!r} is not one of {sorted(UNITS)} (epoch time's ticks)")
        super().__init__(part=part, unit=unit)

    @property  # type: ignore[override]
    def template(self) -> str:
        return PARTS[self.params["part"]][0]

    def template_params(self, column: str, state: dict[str, Any]) -> dict[str, Any]:
        return {"per_second": UNITS[self.params["unit"]]}

    def output_columns(self, columns: list[str]) -> list[str]:
        """A new column beside the time (`<column>_hour`), so one time gives several parts."""
        return [f"{c}_{self.params['part']}" for c in columns]

    def output_schema(self, inputs: list[ColumnSchema], state: dict[str, Any]) -> list[ColumnSchema]:
        times = [c.name for c in inputs if c.has(Tags.EPOCH_MS)]
        if times and self.params["unit"] != "ms":
            raise InputError(
                f"DatePart({self.params['part']}) of {times}: epoch milliseconds (tagged {Tags.EPOCH_MS}) "
                f"read as unit={self.params['unit']!r} give wrong hours and days: give unit='ms'"
            )
        names = self.output_columns([c.name for c in inputs])
        values = PARTS[self.params["part"]][1]
        return [categorical(c, values + 1, name=name) for c, name in zip(inputs, names, strict=True)]

    def transform(self, frame: DataFrame, columns: list[str], state: dict[str, Any]) -> DataFrame:
        not_epochs = [c for c in columns if not isinstance(frame.schema[c].dataType, IntegerType | LongType)]
        if not_epochs:
            raise InputError(
                f"DatePart reads epoch times (int or long {self.params['unit']} since 1970-01-01 UTC); "
                f"columns {not_epochs} are {[frame.schema[c].dataType.simpleString() for c in not_epochs]}"
            )
        return super().transform(frame, columns, state)
