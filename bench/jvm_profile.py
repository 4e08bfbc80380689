"""Where an ETL benchmark's Spark time goes: Java Flight Recorder samples of the JVM's threads during
sparkrec's runs only (DuckDB and polars run in the same process, outside any recording), each sample
put in the first category its stack names, walking from the running frame down to the task.

The ETL benchmarks take `--jvm-profile` and write artifacts/bench/<stage>_profile.json and .png: the
share of samples per category and the hottest running frames, what bounds a stage that misses its
ratio to DuckDB."""

from __future__ import annotations

import argparse
import collections
import json
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from harness import ETL_REPORT
from pyspark.sql import SparkSession

# (category, frame-name fragments): a sample counts in the first category that any frame of its stack
# matches, from the running frame down, so a key comparison under a join's probe counts as the probe.
CATEGORIES = (
    ("hash join probe", ("UnsafeHashedRelation.getValue", "LongHashedRelation", "LongToUnsafeRowMap")),
    ("hash aggregation", ("UnsafeFixedWidthAggregationMap", "hashAgg_", "TungstenAggregationIterator")),
    (
        "parquet encoding (write)",
        ("ParquetOutputWriter", "ParquetWriteSupport", "ColumnWriterBase", "DictionaryValuesWriter"),
    ),
    ("string values from parquet vectors", ("WritableColumnVector.getUTF8String",)),
    (
        "parquet decoding (read)",
        (
            "VectorizedParquetRecordReader",
            "VectorizedColumnReader",
            "VectorizedRleValuesReader",
            "ParquetFileReader",
        ),
    ),
    ("text lines (read)", ("LineReader", "LineRecordReader", "HadoopFileLinesReader")),
    (
        "field parsing and checks",
        ("java/util/regex", "java/lang/String.split", "UTF8String.toInt", "UTF8String.getNumChars"),
    ),
    ("shuffle", ("org/apache/spark/shuffle", "ShuffleBlockFetcherIterator")),
    ("sort", ("UnsafeExternalSorter", "UnsafeInMemorySorter", "RadixSort")),
    ("generated code (projections, filters, casts)", ("GeneratedClass",)),
    ("Delta log and commit", ("org/apache/spark/sql/delta",)),
    ("compiling generated code (Janino)", ("org/codehaus/janino", "org/codehaus/commons")),
    ("query planning (Catalyst)", ("sql/catalyst/analysis", "sql/catalyst/optimizer", "sql/catalyst/rules")),
)
OTHER = "other"
SAMPLE_EVENT = "jdk.ExecutionSample"


def add_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--jvm-profile",
        action="store_true",
        help="record sparkrec's runs with Java Flight Recorder; write artifacts/bench/<stage>_profile.*",
    )


def category(frames: list[str]) -> str:
    """The category of a sample whose stack is `frames`, running frame first."""
    for frame in frames:
        for name, fragments in CATEGORIES:
            if any(fragment in frame for fragment in fragments):
                return name
    return OTHER


class JvmProfile:
    """Samples accumulated over the recordings of several runs of one stage."""

    def __init__(self, spark: SparkSession, stage: str, enabled: bool) -> None:
        self.jvm = spark.sparkContext._jvm
        self.stage = stage
        self.enabled = enabled
        self.categories: collections.Counter[str] = collections.Counter()
        self.frames: collections.Counter[str] = collections.Counter()
        self.jfr = Path(self.jvm.java.lang.System.getProperty("java.home"), "bin", "jfr")

    @contextmanager
    def recording(self) -> Iterator[None]:
        """Records the block (the JVM's 'profile' settings: a sample per thread every 10-20 ms); the
        recording is read after the block, outside a run timed inside it."""
        if not self.enabled:
            yield
            return
        jfr = self.jvm.jdk.jfr
        recording = jfr.Recording(jfr.Configuration.getConfiguration("profile"))
        recording.start()
        try:
            yield
        finally:
            recording.stop()
            with tempfile.TemporaryDirectory() as scratch:
                dump = Path(scratch, "run.jfr")
                recording.dump(self.jvm.java.io.File(str(dump)).toPath())
                recording.close()
                self._count(dump)

    def _count(self, dump: Path) -> None:
        printed = subprocess.run(
            [
                str(self.jfr),
                "print",
                "--json",
                "--stack-depth",
                "64",
                "--events",
                SAMPLE_EVENT,
                str(dump),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        for event in json.loads(printed.stdout)["recording"]["events"]:
            trace = event["values"].get("stackTrace") or {"frames": []}
            frames = [f"{f['method']['type']['name']}.{f['method']['name']}" for f in trace["frames"]]
            if frames:
                self.categories[category(frames)] += 1
                self.frames[frames[0]] += 1

    def write(self) -> dict | None:
        """Prints the shares and writes <stage>_profile.json and .png; returns the report."""
        if not self.enabled:
            return None
        total = sum(self.categories.values())
        per = max(total, 1)
        report = {
            "stage": self.stage,
            "samples": total,
            "categories": {name: round(n / per, 4) for name, n in self.categories.most_common()},
            "top_frames": {name: round(n / per, 4) for name, n in self.frames.most_common(15)},
        }
        print(f"{self.stage}: where the JVM's samples went ({total} samples)")
        for name, share in report["categories"].items():
            print(f"  {share:6.1%}  {name}")
        path = ETL_REPORT.parent / f"{self.stage}_profile.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2) + "\n")
        self._plot(report, path.with_suffix(".png"))
        print(f"wrote {path} and its .png")
        return report

    @staticmethod
    def _plot(report: dict, path: Path) -> None:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot

        names = list(report["categories"])[::-1]
        figure, axes = pyplot.subplots(figsize=(9, 0.4 * len(names) + 1.2))
        axes.barh(names, [100 * report["categories"][n] for n in names])
        axes.set_xlabel("share of JVM samples (%)")
        axes.set_title(f"{report['stage']}: where sparkrec's JVM time goes ({report['samples']} samples)")
        figure.tight_layout()
        figure.savefig(path, dpi=100)
