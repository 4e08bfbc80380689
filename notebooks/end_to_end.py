# Databricks notebook source
# MAGIC %md
# MAGIC # sparkrec end to end
# MAGIC Generate a Criteo-format click log, ingest it into Delta, featurize, train DLRM, export it with
# MAGIC its preprocessing to a Triton model repository, and score the test day into Delta, all through
# MAGIC sparkrec's Python API on the notebook's Spark session. Run as a plain script (`python
# MAGIC notebooks/end_to_end.py`) it builds a local session instead; `SPARKREC_NOTEBOOK_ROWS_PER_DAY`
# MAGIC and `SPARKREC_NOTEBOOK_OUT` size and place the run.

# COMMAND ----------

import json
import os
from pathlib import Path

from pyspark.sql import SparkSession

from serving.pipeline import build_repository
from spark_jobs.featurize import featurize
from spark_jobs.generate import GeneratorConfig, generate
from spark_jobs.ingest import ingest
from spark_jobs.layout import PipelineLayout, day_splits
from spark_jobs.score import score
from spark_jobs.session import build_session
from spark_jobs.train import train

spark = SparkSession.getActiveSession() or build_session("local", "sparkrec-notebook")
out = Path(os.environ.get("SPARKREC_NOTEBOOK_OUT", "/tmp/sparkrec-notebook")).resolve()
rows_per_day = int(os.environ.get("SPARKREC_NOTEBOOK_ROWS_PER_DAY", "100000"))
paths = PipelineLayout(out)

# COMMAND ----------

config = GeneratorConfig(days=4, rows_per_day=rows_per_day)
report = {"generate": generate(spark, paths.data, config)}
report["ingest"] = ingest(spark, paths.raw, paths.bronze, paths.rejects)

# COMMAND ----------

splits = day_splits(config.days)
report["featurize"] = featurize(spark, paths.bronze, paths.features, paths.workflow, splits)

# COMMAND ----------

report["train"] = train(
    spark,
    paths.features,
    paths.workflow,
    paths.run("dlrm"),
    backend="single",
    workers=1,
    oracle=paths.oracle,
    progress=False,
)

# COMMAND ----------

build_repository(spark, report["train"]["run_dir"], paths.workflow, out / "repository")
report["score"] = score(
    spark,
    paths.bronze,
    splits["test"],
    paths.predictions,
    repository=str(out / "repository"),
    workflow=paths.workflow,
)
paths.report.write_text(json.dumps(report, indent=2) + "\n")
print(json.dumps({k: report[k] for k in ("train", "score")}, indent=2))
