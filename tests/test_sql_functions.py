"""rec_plugin's JVM half: the SQL functions of target/sparkrec-sql.jar (built by `make test` with sbt)
against the Python ops on the same bronze rows, their GPU eligibility, and the README's spark-sql
example."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rec_plugin.dataset import load_dataset
from rec_plugin.ops import OPS
from rec_plugin.schema import DAY, LINE_NUMBER, SOURCE_FILE, Schema, Tags
from rec_plugin.templates import sql_literal, templates
from rec_plugin.workflow import SCHEMA_FILE, WORKFLOW_FILE, Workflow
from spark_jobs.session import jar_paths

CRITEO = load_dataset("criteo")
DENSE, CATEGORICAL = CRITEO.tagged(Tags.CONTINUOUS), CRITEO.tagged(Tags.CATEGORICAL)

REPO = Path(__file__).resolve().parents[1]
SQL_JAR = REPO / "target" / "sparkrec-sql.jar"
EXTENSIONS = "io.delta.sql.DeltaSparkSessionExtension,sparkrec.SparkrecExtensions"
DAY_CHECKED = 3


@pytest.fixture(scope="module", autouse=True)
def sql_jar():
    assert SQL_JAR.is_file(), f"{SQL_JAR} is missing: `make test` builds it (scripts/sbt package)"


def sql_call(template: str, inputs: dict[str, str], params: dict) -> str:
    """`sparkrec_<template>(...)`: the arguments are the template's placeholders in order of first
    appearance, as the JVM side registers them."""
    values = {**inputs, **{key: sql_literal(value) for key, value in params.items()}}
    names = dict.fromkeys(re.findall(r"\{(\w+)\}", templates()[template]))
    return f"sparkrec_{template}({', '.join(values[name] for name in names)})"


def workflow_query(workflow_dir: Path, bronze: str) -> str:
    """The saved workflow as one SQL query over bronze: row ops as sparkrec_* calls, Categorify as a
    left join with its column's partition of the vocabulary table."""
    document = json.loads((workflow_dir / WORKFLOW_FILE).read_text())
    schema = Schema.from_json((workflow_dir / SCHEMA_FILE).read_text())
    selects, joins = [f"b.{SOURCE_FILE}", f"b.{LINE_NUMBER}"], []
    for node in document["nodes"]:
        for column in node["columns"]:
            sql = f"b.{column}"
            for saved in node["ops"]:
                op = OPS[saved["op"]](**saved["params"])
                if saved["op"] == "Categorify":
                    vocabulary = f"v_{column}"
                    pin = schema[column].vocabulary
                    on = f"{vocabulary}.column = '{pin.column}' AND {vocabulary}.value = {sql}"
                    joins.append(f"LEFT JOIN delta.`{workflow_dir / pin.table}` {vocabulary} ON {on}")
                    sql = sql_call("category_id", {"id": f"{vocabulary}.id"}, {})
                else:
                    sql = sql_call(op.template, {"x": sql}, op.template_params(column, saved["state"]))
            selects.append(f"{sql} AS {column}")
    return (
        f"SELECT {', '.join(selects)} FROM delta.`{bronze}` b {' '.join(joins)} "
        f"WHERE b.{DAY} = {DAY_CHECKED}"
    )


SESSION_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from rec_plugin.gpu import gpu_plan
    from spark_jobs.session import build_session
    query, jar, extensions, out = sys.argv[1:]
    spark = build_session("rapids-explain", "sql-functions", {
        "spark.master": "local[2]", "spark.ui.enabled": "false", "spark.jars": jar,
        "spark.sql.extensions": extensions,
    })
    frame = spark.sql(query)
    report = gpu_plan(frame)
    frame.write.parquet(out)
    print(json.dumps({"on_gpu": len(report.on_gpu), "not_on_gpu": report.not_on_gpu}))
    """
)


def test_sql_functions_over_bronze_equal_the_python_ops_and_run_on_the_gpu(
    spark, default_bronze, default_features, tmp_path
):
    bronze, _ = default_bronze
    root, _ = default_features
    query = workflow_query(root / "workflow", bronze)
    assert "sparkrec_normalize(sparkrec_log(sparkrec_clip(sparkrec_fill_missing(b.I1" in query
    result = subprocess.run(
        [sys.executable, "-c", SESSION_SCRIPT, query, str(SQL_JAR), EXTENSIONS, str(tmp_path / "sql")],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    gpu = json.loads(result.stdout.strip().splitlines()[-1])
    assert gpu["on_gpu"] > 0 and gpu["not_on_gpu"] == [], gpu
    by_sql = pd.read_parquet(tmp_path / "sql")
    rows = spark.read.format("delta").load(bronze).where(f"{DAY} = {DAY_CHECKED}")
    keys = (SOURCE_FILE, LINE_NUMBER)
    by_python = Workflow.load(str(root / "workflow"), spark).transform(rows, keep=keys).toPandas()
    assert len(by_sql) == len(by_python) == rows.count() > 0
    joined = by_sql.merge(by_python, on=list(keys), suffixes=("_sql", "_py"), validate="one_to_one")
    assert len(joined) == len(by_sql)
    for column in DENSE:
        np.testing.assert_allclose(joined[f"{column}_sql"], joined[f"{column}_py"], rtol=0, atol=1e-6)
    for column in CATEGORICAL:
        assert (joined[f"{column}_sql"] == joined[f"{column}_py"]).all(), column
    assert joined[[f"{c}_sql" for c in CATEGORICAL]].to_numpy().max() > 1  # real ids, not only OOV


def readme_sql_example() -> str:
    """The query of the README's spark-sql example (the block after the marker comment)."""
    readme = (REPO / "README.md").read_text()
    block = readme.split("<!-- spark-sql example -->", 1)[1].split("```sql", 1)[1].split("```", 1)[0]
    return block.strip()


def test_the_readme_spark_sql_example_prints_featurized_rows(default_bronze, default_features, tmp_path):
    bronze, _ = default_bronze
    root, _ = default_features
    query = (
        readme_sql_example().replace("lake/bronze", bronze).replace("lake/workflow", str(root / "workflow"))
    )
    delta_jars = ",".join(str(p) for p in jar_paths(["delta"]))
    command = [
        "spark-sql", "-S", "--master", "local[1]", "--jars", f"{delta_jars},{SQL_JAR}",
        "--conf", f"spark.sql.extensions={EXTENSIONS}",
        "--conf", "spark.sql.catalog.spark_catalog=org.apache.spark.sql.delta.catalog.DeltaCatalog",
        "--conf", "spark.ui.enabled=false", "-e", query,
    ]  # fmt: skip
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"  # spark-sql finds pyspark
    result = subprocess.run(
        command, cwd=tmp_path, capture_output=True, text=True, timeout=600, env={**os.environ, "PATH": path}
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line.split("\t") for line in result.stdout.strip().splitlines()]
    assert len(rows) == 5 and all(len(row) == 4 for row in rows), result.stdout
    normalized = [float(row[1]) for row in rows]
    ids = [int(row[3]) for row in rows]
    assert all(-5 < value < 10 for value in normalized) and len(set(normalized)) > 1
    assert min(ids) >= 0 and max(ids) > 0
