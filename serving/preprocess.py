"""The fitted workflow in serving form: one SQL query for DuckDB rendered from the same op templates
(rec_plugin/op_templates.json) the Spark transform renders, and each vocabulary as a parquet lookup
table (value, id). Triton's preprocess model (serving/triton_preprocess_model.py) runs the query on
each batch of raw Criteo fields; nothing is pickled, and no op is defined a second time.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyspark.sql import SparkSession

from rec_plugin.ops import Categorify
from rec_plugin.ops.base import RowOp
from rec_plugin.schema import CATEGORICAL, DENSE
from rec_plugin.templates import render
from rec_plugin.workflow import Workflow

QUERY = "preprocess.sql"
ROW_ID = "row_id"
# DuckDB has no log1p; ln(1 + x) is the same function for the counts the templates take it of.
DUCKDB_MACROS = ["CREATE MACRO log1p(x) AS ln(1 + x)"]


def _duckdb(sql: str) -> str:
    """Spark SQL quotes identifiers with backticks, DuckDB with double quotes."""
    return sql.replace("`", '"')


def export_preprocess(spark: SparkSession, workflow_path: str, out: Path) -> Path:
    """Writes preprocess.sql and vocab_<column>.parquet into `out`; returns the query's path."""
    workflow = Workflow.load(workflow_path, spark)
    out.mkdir(parents=True, exist_ok=True)
    steps, previous = [], "raw"
    for node, states in zip(workflow.nodes, workflow.states):
        columns = list(node.columns)
        for op, state in zip(node.ops, states):
            name = f"s{len(steps)}"
            if isinstance(op, Categorify):
                joins = []
                for c in columns:
                    table = state[c].select("value", "id").toPandas()
                    pq.write_table(
                        pa.Table.from_pandas(table, preserve_index=False), out / f"vocab_{c}.parquet"
                    )
                    joins.append(f'LEFT JOIN vocab_{c} AS "v_{c}" ON "v_{c}".value = p."{c}"')
                ids = ", ".join(f'"v_{c}".id AS "{c}__id"' for c in columns)
                steps.append(f"{name}_joined AS (SELECT p.*, {ids} FROM {previous} AS p {' '.join(joins)})")
                mapped = [
                    f'{_duckdb(render("category_id", {"id": f"{c}__id"}, {}))} AS "{c}"' for c in columns
                ]
                dropped = ", ".join(f'"{c}__id"' for c in columns)
                replaced = ", ".join(mapped)
                steps.append(
                    f"{name} AS (SELECT * EXCLUDE ({dropped}) REPLACE ({replaced}) FROM {name}_joined)"
                )
            elif isinstance(op, RowOp):
                mapped = [
                    f'{_duckdb(render(op.template, {"x": c}, op.template_params(c, state)))} AS "{c}"'
                    for c in columns
                ]
                steps.append(f"{name} AS (SELECT * REPLACE ({', '.join(mapped)}) FROM {previous})")
            else:
                raise NotImplementedError(
                    f"{type(op).__name__} cannot be served yet (only row ops and Categorify)"
                )
            previous = name
    outputs = ", ".join(f'"{c}"' for c in [*DENSE, *CATEGORICAL])
    query = f"WITH {', '.join(steps)} SELECT {outputs} FROM {previous} ORDER BY {ROW_ID}"
    (out / QUERY).write_text(query + "\n")
    return out / QUERY


class Preprocessor:
    """Runs an exported preprocess folder on raw fields: what Triton's preprocess model calls, and
    what in-process serving benchmarks call."""

    def __init__(self, folder: Path) -> None:
        self.connection = duckdb.connect()
        for macro in DUCKDB_MACROS:
            self.connection.execute(macro)
        for vocabulary in sorted(folder.glob("vocab_*.parquet")):
            self.connection.execute(
                f"CREATE TABLE {vocabulary.stem} AS SELECT * FROM read_parquet('{vocabulary}')"
            )
        self.query = (folder / QUERY).read_text()

    def __call__(self, raw_dense: np.ndarray, raw_tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """float64 [B, 13] counts (NaN = missing) and [B, 26] tokens (bytes or str, empty = missing)
        -> float32 [B, 13] features and int64 [B, 26] ids, in row order."""
        columns = {ROW_ID: pa.array(np.arange(len(raw_dense)))}
        for i, name in enumerate(DENSE):
            missing = np.isnan(raw_dense[:, i])
            columns[name] = pa.array(np.where(missing, 0, raw_dense[:, i]).astype(np.int32), mask=missing)
        missing = pa.scalar(None, pa.string())
        for j, name in enumerate(CATEGORICAL):
            # Triton hands over bytes, callers in process may pass str: Arrow converts either at once.
            tokens = pa.array(raw_tokens[:, j]).cast(pa.string())
            columns[name] = pc.if_else(pc.equal(tokens, ""), missing, tokens)
        self.connection.register("raw", pa.table(columns))
        try:
            result = self.connection.sql(self.query).to_arrow_table()
        finally:
            self.connection.unregister("raw")
        dense = np.stack([result[c].to_numpy() for c in DENSE], axis=1).astype(np.float32)
        ids = np.stack([result[c].to_numpy() for c in CATEGORICAL], axis=1).astype(np.int64)
        return dense, ids
