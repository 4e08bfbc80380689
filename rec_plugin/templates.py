"""Renders the row-level ops of op_templates.json, the one definition shared with the JVM functions."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

from pyspark.sql import Column
from pyspark.sql import functions as F

TEMPLATES_FILE = Path(__file__).with_name("op_templates.json")


@cache
def templates() -> dict[str, str]:
    return {k: v for k, v in json.loads(TEMPLATES_FILE.read_text()).items() if not k.startswith("_")}


def sql_literal(value: object) -> str:
    """A Python value as a Spark SQL literal (None -> NULL; floats keep full precision); the one way
    sparkrec quotes text into SQL. Strings escape `\\` and `'` with a backslash, as Spark's parser reads
    them by default (spark.sql.parser.escapedStringLiterals=false): there `'it''s'` is two adjacent
    literals, concatenated to `its`, not an escaped quote."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        return f"{value}L" if abs(value) > 2**31 - 1 else str(value)
    if isinstance(value, float):
        return f"CAST({value!r} AS DOUBLE)"
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


def render(name: str, columns: dict[str, str], params: dict[str, object]) -> str:
    """The SQL text of template `name` over the given column names and parameter values."""
    return render_over(name, {key: f"`{column}`" for key, column in columns.items()}, params)


def render_over(name: str, inputs: dict[str, str], params: dict[str, object]) -> str:
    """The SQL text of template `name` over SQL expressions for its inputs (parenthesized here, so
    templates nest) and parameter values."""
    values = {key: f"({sql})" for key, sql in inputs.items()}
    values.update({key: sql_literal(value) for key, value in params.items()})
    return templates()[name].format(**values)


def expression(name: str, columns: dict[str, str], params: dict[str, object]) -> Column:
    return F.expr(render(name, columns, params))
