"""Benchmark helpers: a quiet-machine check (on 2 shared cores any busy process skews timings) and the
median report."""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import statistics
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pyspark.sql import SparkSession

from rec_plugin.interactions import InteractionsLayout
from rec_plugin.schema import Schema
from rec_plugin.workflow import Workflow
from spark_jobs.featurize import featurize
from spark_jobs.generate import GeneratorConfig, generate
from spark_jobs.generate_ecommerce import EcommerceConfig, generate_ecommerce
from spark_jobs.ingest import ingest
from spark_jobs.interactions import build_interactions
from spark_jobs.layout import GeneratedData
from spark_jobs.session import build_session
from spark_jobs.train import feature_files
from training.data import FileSet
from training.models import ModelConfig


def scratch_folder(prefix: str) -> Path:
    """A new folder under the system's temporary directory, removed as this process exits: one run at
    8M rows leaves gigabytes behind, and the disk is shared with every checkout and CI run here."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


def report_quiet() -> None:
    """Prints the load average and any process but this one and its descendants (Spark's JVM) using CPU;
    warns if there is one. The load average includes this benchmark's own earlier work."""
    load = os.getloadavg()[0]
    listing = subprocess.run(
        ["ps", "-eo", "pid,ppid,pcpu,comm", "--no-headers"], capture_output=True, text=True
    )
    processes = [line.split(None, 3) for line in listing.stdout.splitlines()]
    mine = {os.getpid()}
    while grown := {int(p[0]) for p in processes if int(p[1]) in mine} - mine:
        mine |= grown
    others = [" ".join(p) for p in processes if float(p[2]) > 5.0 and int(p[0]) not in mine]
    print(f"quiet check: 1-min load average {load:.2f}; other busy processes: {others or 'none'}")
    if others:
        print("WARNING: the machine is busy; timings below are distorted")


def print_medians(
    rates: dict[str, list[float]], rows: int | None, unit: str = "rows/s", digits: int = 0
) -> dict[str, float]:
    """Prints each variant's median and its runs, to `digits` decimals (and the rows each run took,
    when given); returns the medians."""
    medians = {name: statistics.median(values) for name, values in rates.items()}
    width = max(len(name) for name in rates)
    for name, values in rates.items():
        runs = [round(v, digits) if digits else round(v) for v in values]
        size = f"  ({rows:,} rows)" if rows is not None else ""
        print(f"{name:{width}s}  median {medians[name]:>10,.{digits}f} {unit}  runs {runs}{size}")
    return medians


def probe_result(command: list[str], marker: str, what: str, **run: object) -> str:
    """What a fresh probe process printed after `marker` on its last line starting with it (its
    figures, in its own JVM and imports); exits naming `what` with the probe's stderr if it failed."""
    done = subprocess.run(command, capture_output=True, text=True, **run)
    found = [line[len(marker) :].strip() for line in done.stdout.splitlines() if line.startswith(marker)]
    if done.returncode or not found:
        raise SystemExit(f"{what} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    return found[-1]


# The ETL benchmarks' shared report (bench/ingest.py and bench/featurize.py each write their section).
BENCH_REPORTS = Path(__file__).resolve().parents[1] / "artifacts" / "bench"
ETL_REPORT = BENCH_REPORTS / "etl.json"
# etl.json's key for an engine's rate, and the engine every ratio in its plot is taken against.
RATE_SUFFIX, REFERENCE_ENGINE = "_rows_per_s", "duckdb"


def compare_engines(engines: dict[str, Callable[[int], float]], repeats: int, rows: int) -> dict[str, float]:
    """Runs each engine (repeat index -> rows/s) in turn, `repeats` rounds, after the quiet check;
    prints and returns the medians and each engine's ratio to sparkrec's."""
    report_quiet()
    rates: dict[str, list[float]] = {name: [] for name in engines}
    for repeat in range(repeats):
        for name, run in engines.items():
            rates[name].append(run(repeat))
    medians = print_medians(rates, rows)
    for name in engines:
        if name != "sparkrec":
            print(f"ratio sparkrec / {name}: {medians['sparkrec'] / medians[name]:.2f}x")
    return medians


def record_etl(section: str, rates: dict[str, float], rows: int, max_cardinality: int) -> None:
    """Writes `section` ({"<engine>_rows_per_s": rate}) of artifacts/bench/etl.json, keeping the other
    section when it was measured on as many rows at the same cardinality."""
    report = json.loads(ETL_REPORT.read_text()) if ETL_REPORT.is_file() else {}
    if (report.get("rows"), report.get("max_cardinality")) != (rows, max_cardinality):
        report = {}
    report.update({"rows": rows, "max_cardinality": max_cardinality})
    report[section] = {f"{engine}{RATE_SUFFIX}": round(rate, 1) for engine, rate in rates.items()}
    ETL_REPORT.parent.mkdir(parents=True, exist_ok=True)
    ETL_REPORT.write_text(json.dumps(report, indent=2) + "\n")
    plot_etl(report, ETL_REPORT.with_suffix(".png"))
    print(f"wrote {ETL_REPORT} ({section}) and its .png")


def plot_etl(report: dict, path: Path) -> None:
    """etl.json as bars: each stage's rows/s per engine, labelled with its ratio to DuckDB's."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    stages = [key for key, value in report.items() if isinstance(value, dict)]  # in the order written
    figure = Figure(figsize=(9, 1.6 + 1.2 * len(stages)))
    axes = figure.subplots(len(stages), 1, squeeze=False)[:, 0]
    for ax, stage in zip(axes, stages):
        rates = {k.removesuffix(RATE_SUFFIX): v for k, v in report[stage].items()}
        engines = list(rates)[::-1]
        ax.barh(engines, [rates[e] / 1000 for e in engines])
        for y, engine in enumerate(engines):
            ratio = rates[engine] / rates[REFERENCE_ENGINE]
            ax.annotate(f" {ratio:.2f}x {REFERENCE_ENGINE}", (rates[engine] / 1000, y), va="center")
        ax.set_title(stage)
        ax.set_xlabel("thousand rows/s")
        ax.set_xlim(0, 1.3 * max(rates.values()) / 1000)
    figure.suptitle(f"ETL at {report['rows']:,} rows, fields of up to {report['max_cardinality']:,} values")
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def plot_rates(rates: dict[str, float], unit: str, title: str, path: Path) -> None:
    """A benchmark's medians as labelled horizontal bars (one per variant, in the order given) on a log
    scale (loaders and training differ by orders of magnitude), saved beside its JSON report."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    names = list(rates)[::-1]
    figure = Figure(figsize=(10, 1.2 + 0.35 * len(names)))
    ax = figure.subplots()
    ax.barh(names, [rates[n] for n in names])
    for y, name in enumerate(names):
        ax.annotate(f" {rates[name]:,.0f}", (rates[name], y), va="center", fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel(unit)
    ax.set_xlim(min(rates.values()) / 2, 4 * max(rates.values()))
    ax.set_title(title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def demo_splits(days: int) -> dict[str, list[int]]:
    """Days 0..n-1 split as the demo splits them: the last two validate and test, the rest train."""
    every = list(range(days))
    return {"train": every[:-2], "valid": every[-2:-1], "test": every[-1:]}


def bench_setup(
    doc: str,
    app_name: str,
    default_rows_per_day: int = 500_000,
    default_max_cardinality: int | None = None,
    bronze_option: bool = False,
    more_options: Callable[[argparse.ArgumentParser], object] | None = None,
) -> tuple[argparse.Namespace, SparkSession, GeneratorConfig]:
    """The benchmarks' shared options (data size, repeats; `more_options` adds a benchmark's own), a
    quiet Spark session and the data config."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    if more_options is not None:
        more_options(parser)
    parser.add_argument("--rows-per-day", type=int, default=default_rows_per_day)
    parser.add_argument("--days", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--data", help="a folder `sparkrec generate` wrote with these options, reused instead of generating"
    )
    if bronze_option:
        parser.add_argument("--bronze", help="a bronze table ingested from such a folder, reused")
    parser.add_argument(
        "--max-cardinality",
        type=int,
        default=default_max_cardinality or GeneratorConfig.max_cardinality,
        help="the generator's largest field vocabulary (Criteo-scale tables: 1000000)",
    )
    args = parser.parse_args()
    spark = build_session("local", app_name, {"spark.ui.showConsoleProgress": "false"})
    config = GeneratorConfig(
        days=args.days, rows_per_day=args.rows_per_day, max_cardinality=args.max_cardinality
    )
    return args, spark, config


def generated_data(spark: SparkSession, args: argparse.Namespace, config: GeneratorConfig) -> Path:
    """The raw data set the benchmark reads: `--data` as given (generated with the same options), else
    generated into a new scratch folder."""
    if args.data:
        return Path(args.data)
    data = scratch_folder("bench-data-")
    generate(spark, str(data), config)
    return data


def bench_bronze(
    spark: SparkSession, args: argparse.Namespace, config: GeneratorConfig, scratch: Path
) -> tuple[str, dict[str, list[int]]]:
    """The bronze table a featurize benchmark reads (`--bronze`, else its data ingested into
    `scratch`), and its days split as the demo splits them (the last two validate and test)."""
    bronze = args.bronze or str(scratch / "bronze")
    if args.bronze is None:
        raw = GeneratedData(str(generated_data(spark, args, config))).raw
        ingest(spark, raw, bronze, str(scratch / "rejects"))
    return bronze, demo_splits(args.days)


@dataclass(frozen=True)
class Featurized:
    """A generated, ingested and featurized data set in a scratch folder (bronze/, features/, wf/), its
    workflow's schema and a DLRM built from it."""

    scratch: Path
    train: FileSet
    schema: Schema
    dlrm: ModelConfig
    test_day: int


def featurized_data(spark: SparkSession, config: GeneratorConfig, prefix: str) -> Featurized:
    """Days 0..n-3 train, n-2 valid, n-1 test, as the demo splits them."""
    scratch = scratch_folder(prefix)
    data = GeneratedData(str(scratch / "data"))
    generate(spark, data.root, config)
    ingest(spark, data.raw, str(scratch / "bronze"), str(scratch / "rejects"))
    splits = demo_splits(config.days)
    report = featurize(spark, str(scratch / "bronze"), str(scratch / "features"), str(scratch / "wf"), splits)
    train = feature_files(spark, str(scratch / "features"), report["features_version"], splits["train"])
    schema = Workflow.load_schema(str(scratch / "wf"), spark)
    return Featurized(scratch, train, schema, ModelConfig.from_schema("dlrm", schema), splits["test"][0])


@dataclass(frozen=True)
class Interactions:
    """A generated, ingested and featurized e-commerce data set's interaction tables and its workflow's
    schema (what NCF and Mult-VAE train on)."""

    layout: InteractionsLayout
    schema: Schema


def shop_interactions(spark: SparkSession, config: EcommerceConfig, prefix: str) -> Interactions:
    """The e-commerce generator's days, split as the demo splits them, up to the interaction tables."""
    scratch = scratch_folder(prefix)
    data = GeneratedData(str(scratch / "data"))
    generate_ecommerce(spark, data.root, config)
    bronze, rejects = str(scratch / "bronze"), str(scratch / "rejects")
    ingest(spark, data.raw, bronze, rejects, dataset="ecommerce")
    splits = demo_splits(config.days)
    workflow = str(scratch / "wf")
    featurize(spark, bronze, str(scratch / "features"), workflow, splits, dataset="ecommerce")
    layout = InteractionsLayout(str(scratch / "interactions"))
    build_interactions(spark, str(scratch / "features"), workflow, layout.root)
    return Interactions(layout, Workflow.load_schema(workflow, spark))
