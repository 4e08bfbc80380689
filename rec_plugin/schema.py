"""The Criteo click-log schema: the one definition of raw columns that every stage reads.

Spark is imported inside the functions that build Spark objects, so that serving code (Triton's
python-backend models, clients) reads the column names without pyspark installed."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import Column
    from pyspark.sql.types import StructType

LABEL = "label"
DENSE = [f"I{i}" for i in range(1, 14)]
CATEGORICAL = [f"C{i}" for i in range(1, 27)]
RAW_COLUMNS = [LABEL, *DENSE, *CATEGORICAL]
FIELD_SEPARATOR = "\t"
CATEGORY_HEX_LENGTH = 8
DAY = "day"
SOURCE_FILE = "source_file"
LINE_NUMBER = "line_number"
# Why a dense field is refused: the rejects table's reason codes that serving gives too (a value
# that would otherwise be truncated or wrapped into an int32 the model never saw in training).
INT_NOT_INTEGER = "INT_NOT_INTEGER"
INT_OUT_OF_RANGE = "INT_OUT_OF_RANGE"


def bronze_schema() -> StructType:
    """Raw Criteo fields typed (empty field = null), plus the day partition and line lineage."""
    from pyspark.sql.types import IntegerType, LongType, StringType, StructField, StructType

    return StructType(
        [StructField(DAY, IntegerType(), False), StructField(LABEL, IntegerType(), False)]
        + [StructField(c, IntegerType(), True) for c in DENSE]
        + [StructField(c, StringType(), True) for c in CATEGORICAL]
        + [StructField(SOURCE_FILE, StringType(), False), StructField(LINE_NUMBER, LongType(), False)]
    )


def rejects_schema() -> StructType:
    """One row per malformed raw line: what it was, where it came from, and why it was refused."""
    from pyspark.sql.types import IntegerType, LongType, StringType, StructField, StructType

    return StructType(
        [
            StructField(DAY, IntegerType(), False),
            StructField(SOURCE_FILE, StringType(), False),
            StructField(LINE_NUMBER, LongType(), False),
            StructField("raw_line", StringType(), True),
            StructField("reason", StringType(), False),
            StructField("reason_field", StringType(), True),
        ]
    )


def partition_line_number() -> Column:
    """1-based index of a row in its Spark partition (monotonically_increasing_id keeps it in the low
    33 bits): the line number wherever one partition is exactly one file, read or written in order."""
    from pyspark.sql import functions as F

    return F.monotonically_increasing_id().bitwiseAND(F.lit((1 << 33) - 1)) + 1
