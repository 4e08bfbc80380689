"""Shared fixtures: one real local Spark session with Delta, and generated Criteo data on disk."""

from __future__ import annotations

from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from spark_jobs.generate import GeneratorConfig, generate
from spark_jobs.session import build_session

TEST_SPARK_CONF = {
    "spark.master": "local[2]",
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.shuffle.partitions": "4",
}


@pytest.fixture(scope="session")
def spark() -> SparkSession:
    session = build_session("local", "sparkrec-tests", TEST_SPARK_CONF)
    yield session
    session.stop()


@pytest.fixture(scope="session")
def default_data(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """The demo's default generated data set (4 days x 100k rows) and its generate report."""
    out = tmp_path_factory.mktemp("default_data")
    return out, generate(spark, str(out), GeneratorConfig())
