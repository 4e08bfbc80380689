"""Shared fixtures: one real local Spark session with Delta, generated Criteo data on disk, and a small
generated e-commerce shop with its collaborative-filtering interaction tables."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from rec_plugin.interactions import InteractionsDescription, InteractionsLayout
from rec_plugin.schema import DAY, LINE_NUMBER
from spark_jobs.featurize import featurize
from spark_jobs.generate import GeneratorConfig, generate
from spark_jobs.generate_ecommerce import EcommerceConfig, generate_ecommerce
from spark_jobs.ingest import ingest
from spark_jobs.interactions import build_interactions
from spark_jobs.layout import GeneratedData, PipelineLayout, day_splits
from spark_jobs.session import LOG_DIR_ENV, build_session
from spark_jobs.tracking import TRACKING_URI_ENV
from training.run_directory import RunDirectory

# The JVM logs of the test session and of the commands tests start, out of the checkout.
os.environ.setdefault(LOG_DIR_ENV, str(Path(tempfile.gettempdir()) / "sparkrec-test-logs"))
# Training runs are tracked in MLflow: into a store of the test session's, not the project's.
os.environ.setdefault(
    TRACKING_URI_ENV, f"sqlite:///{tempfile.mkdtemp(prefix='sparkrec-test-mlflow-')}/mlflow.db"
)

TEST_SPARK_CONF = {
    "spark.master": "local[2]",
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.shuffle.partitions": "4",
}


@pytest.fixture(scope="session")
def spark() -> SparkSession:
    # With the RAPIDS Accelerator's jar: everything runs on the CPU, and tests can ask the real jar
    # which operators would run on a GPU.
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
    return bronze, ingest(spark, GeneratedData(str(root)).raw, bronze, str(root / "lake" / "rejects"))


@pytest.fixture(scope="session")
def default_features(
    spark: SparkSession, default_bronze: tuple[str, dict], tmp_path_factory
) -> tuple[Path, dict]:
    """The default bronze table featurized as the demo does (days 0-1 train, 2 valid, 3 test):
    the folder holding features/ and workflow/, and the featurize report."""
    bronze, _ = default_bronze
    out = tmp_path_factory.mktemp("features")
    return out, featurize(spark, bronze, str(out / "features"), str(out / "workflow"), SPLITS)


# The smallest shop whose interaction tables stay meaningful: a catalogue of 1,000 items (20 a
# category, so 100 distinct eval negatives and several days' newcomers), users active enough to be
# evaluated and held out (5+ items), and 3 days (new items on days 1 and 2).
SHOP = EcommerceConfig(days=3, rows_per_day=20_000, users=2_000, items=1_000, files_per_day=1)
# ncf_train's rows per file in shop_interactions: a few files, so that each file's content is testable.
SHOP_NCF_TRAIN_FILE_ROWS = 10_000


@pytest.fixture(scope="session")
def shop_features(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> PipelineLayout:
    """SHOP generated, ingested and featurized by the dataset's default workflow fitted on every day:
    the pipeline folder (.data for --planted, .features, .workflow, .oracle, .raw)."""
    paths = PipelineLayout(tmp_path_factory.mktemp("shop"))
    generate_ecommerce(spark, paths.data, SHOP)
    ingest(spark, paths.raw, paths.bronze, paths.rejects, dataset="ecommerce")
    train = {"train": list(range(SHOP.days))}
    featurize(spark, paths.bronze, paths.features, paths.workflow, train)  # the dataset ingest recorded
    return paths


@pytest.fixture(scope="session")
def shop_interactions(
    spark: SparkSession, shop_features: PipelineLayout, tmp_path_factory: pytest.TempPathFactory
) -> tuple[InteractionsLayout, InteractionsDescription]:
    """shop_features' interaction tables with the planted oracle (seed 0), and their description."""
    layout = InteractionsLayout(str(tmp_path_factory.mktemp("shop_interactions")))
    description = build_interactions(
        spark,
        shop_features.features,
        shop_features.workflow,
        layout.root,
        planted=shop_features.data,
        seed=0,
        ncf_train_file_rows=SHOP_NCF_TRAIN_FILE_ROWS,
    )
    return layout, description


def kill_at_first_checkpoint(start: Callable[[], subprocess.Popen], run_dir: Path) -> None:
    """Starts a training command and SIGKILLs it once its run directory holds a checkpoint (before
    it finishes): what a resume test resumes from."""
    victim = start()
    deadline = time.time() + 300
    while RunDirectory(run_dir).latest_checkpoint() is None:
        assert victim.poll() is None and time.time() < deadline, "no checkpoint before the run ended"
        time.sleep(0.2)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    assert RunDirectory(run_dir).metrics() is None


def cut_features(spark, default_features, out: Path, splits: dict[str, list[int]]) -> tuple[Path, Path]:
    """A small features table (about 4,000 rows a day) of the default one's days in `splits`, and a workflow
    folder whose features.json lists those splits beside the workflow's schema.json: what featurize
    writes, in seconds."""
    root, report = default_features
    days = [d for split_days in splits.values() for d in split_days]
    source = spark.read.format("delta").option("versionAsOf", report["features_version"])
    rows = source.load(str(root / "features")).where(F.col(DAY).isin(days) & (F.col(LINE_NUMBER) < 2000))
    rows.write.format("delta").partitionBy(DAY).save(str(out / "features"))
    described = json.loads((root / "workflow" / "features.json").read_text())
    (out / "workflow").mkdir()
    (out / "workflow" / "features.json").write_text(json.dumps({**described, "splits": splits}))
    shutil.copy(root / "workflow" / "schema.json", out / "workflow" / "schema.json")
    return out / "features", out / "workflow"
