"""Shared fixtures: one real local Spark session with Delta, and generated Criteo data on disk."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from spark_jobs.featurize import featurize
from spark_jobs.generate import GeneratorConfig, generate
from spark_jobs.ingest import ingest
from spark_jobs.layout import day_splits
from spark_jobs.session import LOG_DIR_ENV, build_session

# The JVM logs of the test session and of the commands tests start, out of the checkout.
os.environ.setdefault(LOG_DIR_ENV, str(Path(tempfile.gettempdir()) / "sparkrec-test-logs"))

TEST_SPARK_CONF = {
    "spark.master": "local[2]",
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.shuffle.partitions": "4",
}


@pytest.fixture(scope="session")
def spark() -> SparkSession:
    # The RAPIDS Accelerator in explain-only mode: everything runs on the CPU, and tests can ask the
    # real plugin which operators would run on a GPU.
    session = build_session("rapids-explain", "sparkrec-tests", TEST_SPARK_CONF)
    yield session
    session.stop()


# The demo's default data set cut to its first 100k rows a day: rows are drawn from (seed, day, row
# of the day), so these are exactly those rows of the default data, with the same planted model.
TEST_DATA = GeneratorConfig(rows_per_day=100_000)
# Days 0-1 train, 2 validates, 3 tests, as in the demo.
SPLITS = day_splits(TEST_DATA.days)


@pytest.fixture(scope="session")
def default_data(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """TEST_DATA generated (4 days x 100k rows) and its generate report."""
    out = tmp_path_factory.mktemp("default_data")
    return out, generate(spark, str(out), TEST_DATA)


@pytest.fixture(scope="session")
def default_bronze(spark: SparkSession, default_data: tuple[Path, dict]) -> tuple[str, dict]:
    """The default data set ingested into a Delta bronze table, and the ingest report."""
    root, _ = default_data
    bronze = str(root / "lake" / "bronze")
    return bronze, ingest(spark, str(root / "raw"), bronze, str(root / "lake" / "rejects"))


@pytest.fixture(scope="session")
def default_features(
    spark: SparkSession, default_bronze: tuple[str, dict], tmp_path_factory
) -> tuple[Path, dict]:
    """The default bronze table featurized as the demo does (days 0-1 train, 2 valid, 3 test):
    the folder holding features/ and workflow/, and the featurize report."""
    bronze, _ = default_bronze
    out = tmp_path_factory.mktemp("features")
    return out, featurize(spark, bronze, str(out / "features"), str(out / "workflow"), SPLITS)
