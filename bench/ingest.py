"""Ingest throughput: sparkrec (Spark + Delta, every field checked, rejects quarantined) against DuckDB
reading the same TSV files with explicit types into day-partitioned parquet, interleaved, medians.

Criteo-scale by default (4 days x 2M lines, fields of up to 1M values); writes the ingest section of
artifacts/bench/etl.json. Everyone uses this machine's cores.

    .venv/bin/python bench/ingest.py [--rows-per-day 2000000] [--days 4] [--repeats 3] [--data DIR]
        [--jvm-profile]
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import duckdb
from harness import bench_setup, compare_engines, generated_data, record_etl, scratch_folder
from jvm_profile import JvmProfile, add_option

from rec_plugin.dataset import load_dataset
from spark_jobs.ingest import ingest
from spark_jobs.layout import GeneratedData

CRITEO = load_dataset("criteo")
DUCKDB_TYPES = {"int": "INTEGER", "long": "BIGINT", "float": "FLOAT", "string": "VARCHAR"}


def duckdb_ingest(raw: Path, out: Path) -> int:
    """The TSV lines typed by the Criteo definition, each with its day from its path, as parquet
    partitioned by day; returns the rows written."""
    types = {c.name: DUCKDB_TYPES[c.type] for c in CRITEO.columns}
    columns = ", ".join(f"'{name}': '{kind}'" for name, kind in types.items())
    source = f"""read_csv('{raw}/day_*/*.tsv', delim = '\\t', header = false, quote = '', escape = '',
        columns = {{{columns}}}, filename = true, auto_detect = false)"""
    day = "CAST(regexp_extract(filename, 'day_([0-9]+)', 1) AS INTEGER) AS day"
    con = duckdb.connect()
    con.execute("SET enable_progress_bar = false")
    query = f"SELECT {', '.join(types)}, {day} FROM {source}"
    con.sql(f"COPY ({query}) TO '{out}' (FORMAT PARQUET, PARTITION_BY (day))")
    return con.sql(f"SELECT count(*) FROM read_parquet('{out}/**/*.parquet')").fetchall()[0][0]


def main() -> None:
    args, spark, config = bench_setup(__doc__, "bench-ingest", 2_000_000, 1_000_000, more_options=add_option)
    raw = GeneratedData(str(generated_data(spark, args, config))).raw
    rows = args.days * args.rows_per_day
    scratch = scratch_folder("bench-ingest-")
    profile = JvmProfile(spark, "ingest", args.jvm_profile)

    def run_spark(repeat: int) -> float:
        out = scratch / f"spark_{repeat}"
        with profile.recording():
            started = time.perf_counter()
            report = ingest(spark, str(raw), str(out / "bronze"), str(out / "rejects"))
            elapsed = time.perf_counter() - started
        shutil.rmtree(out)
        return report["accepted"] / elapsed

    def run_duckdb(repeat: int) -> float:
        out = scratch / f"duckdb_{repeat}"
        started = time.perf_counter()
        written = duckdb_ingest(raw, out)
        elapsed = time.perf_counter() - started
        shutil.rmtree(out)
        return written / elapsed

    engines = {"sparkrec": run_spark, "duckdb": run_duckdb}
    medians = compare_engines(engines, args.repeats, rows)
    record_etl("ingest", medians, rows, args.max_cardinality)
    profile.write()


if __name__ == "__main__":
    main()
