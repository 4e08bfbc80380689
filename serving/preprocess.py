"""Exports the fitted workflow in serving form: each served feature's SQL expression, rendered from
the same op templates (rec_plugin/op_templates.json) the Spark transform renders, and each vocabulary
as a parquet lookup table (value, id). serving/preprocessor.py runs them; nothing is pickled, and no
op is defined a second time.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from pyspark.sql import SparkSession

from rec_plugin.ops import Categorify
from rec_plugin.ops.base import RowOp
from rec_plugin.schema import CATEGORICAL, DENSE
from rec_plugin.templates import render_over
from rec_plugin.workflow import Workflow
from serving.preprocessor import EXPRESSIONS, looked_up
from serving.tokens import token_bytes


def _standard_sql(sql: str) -> str:
    """Spark SQL quotes identifiers with backticks, standard SQL (polars) with double quotes."""
    return sql.replace("`", '"')


def export_preprocess(spark: SparkSession, workflow_path: str, out: Path) -> Path:
    """Writes preprocess.json (each served feature's SQL expression: its ops' templates nested into
    one) and vocab_<column>.parquet into `out`; returns the expressions' path."""
    workflow = Workflow.load(workflow_path, spark)
    out.mkdir(parents=True, exist_ok=True)
    # The raw inputs an expression may read: dense counts; categorical fields only through Categorify.
    expressions = {c: f'"{c}"' for c in DENSE}
    for node, states in zip(workflow.nodes, workflow.states):
        columns = list(node.columns)
        for op, state in zip(node.ops, states):
            if isinstance(op, Categorify):
                unservable = sorted(c for c in columns if c not in CATEGORICAL or c in expressions)
                if unservable:
                    raise NotImplementedError(
                        f"Categorify of {unservable} cannot be served yet (the serving lookup reads "
                        "raw category tokens)"
                    )
                for c in columns:
                    table = state[c].select("value", "id").toPandas()
                    token_bytes(table["value"].to_numpy(object))  # refuses values longer than a token
                    pq.write_table(
                        pa.Table.from_pandas(table, preserve_index=False), out / f"vocab_{c}.parquet"
                    )
                    expressions[c] = render_over("category_id", {"id": f'"{looked_up(c)}"'}, {})
            elif isinstance(op, RowOp):
                unservable = sorted(c for c in columns if c not in expressions)
                if unservable:
                    raise NotImplementedError(
                        f"{type(op).__name__} of raw category tokens {unservable} cannot be served yet "
                        "(serving reads them only through Categorify)"
                    )
                for c in columns:
                    params = op.template_params(c, state)
                    expressions[c] = render_over(op.template, {"x": expressions[c]}, params)
            else:
                raise NotImplementedError(
                    f"{type(op).__name__} cannot be served yet (only row ops and Categorify)"
                )
    unserved = [c for c in CATEGORICAL if c not in expressions]
    if unserved:
        raise NotImplementedError(f"categorical fields {unserved} have no Categorify to serve them by")
    features = {c: _standard_sql(expressions[c]) for c in [*DENSE, *CATEGORICAL]}
    (out / EXPRESSIONS).write_text(json.dumps(features, indent=1) + "\n")
    return out / EXPRESSIONS
