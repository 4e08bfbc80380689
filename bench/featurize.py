"""Featurize throughput: sparkrec (Spark + Delta) against DuckDB and polars doing the same transforms.

Generates and ingests a data set once (Criteo-scale by default: 4 days x 2M rows, fields of up to 1M
values), then runs fit + transform + write for each engine, interleaved, several times; prints median
rows/s and the ratios, and writes the featurize section of artifacts/bench/etl.json. Everyone uses this
machine's cores.

    .venv/bin/python bench/featurize.py [--rows-per-day 2000000] [--days 4] [--repeats 3] [--data DIR]
        [--bronze TABLE] [--jvm-profile]
"""

from __future__ import annotations

import time

import duckdb
import polars as pl
from harness import bench_bronze, bench_setup, compare_engines, record_etl, scratch_folder
from jvm_profile import JvmProfile, add_option
from reference import duckdb_features_sql, polars_features

from spark_jobs.featurize import featurize


def main() -> None:
    args, spark, config = bench_setup(
        __doc__, "bench-featurize", 2_000_000, 1_000_000, bronze_option=True, more_options=add_option
    )
    scratch = scratch_folder("bench-featurize-")
    bronze, splits = bench_bronze(spark, args, config, scratch)
    rows = args.days * args.rows_per_day
    parquet_files = f"{bronze}/**/*.parquet"  # one Delta version, no deletes: its files are the table

    profile = JvmProfile(spark, "featurize", args.jvm_profile)

    def run_spark(repeat: int) -> float:
        with profile.recording():
            started = time.perf_counter()
            featurize(spark, bronze, str(scratch / f"spark_{repeat}"), str(scratch / f"wf_{repeat}"), splits)
            return rows / (time.perf_counter() - started)

    def run_duckdb(repeat: int) -> float:
        started = time.perf_counter()
        con = duckdb.connect()
        con.sql(
            f"CREATE VIEW bronze AS SELECT * FROM read_parquet('{parquet_files}', hive_partitioning = true)"
        )
        query = duckdb_features_sql("bronze", splits["train"], 15)
        con.sql(f"COPY ({query}) TO '{scratch}/duckdb_{repeat}.parquet' (FORMAT PARQUET)")
        return rows / (time.perf_counter() - started)

    def run_polars(repeat: int) -> float:
        started = time.perf_counter()
        source = pl.scan_parquet(parquet_files, hive_partitioning=True)
        polars_features(source, splits["train"], 15).sink_parquet(scratch / f"polars_{repeat}.parquet")
        return rows / (time.perf_counter() - started)

    engines = {"sparkrec": run_spark, "duckdb": run_duckdb, "polars": run_polars}
    medians = compare_engines(engines, args.repeats, rows)
    record_etl("featurize", medians, rows, args.max_cardinality)
    profile.write()


if __name__ == "__main__":
    main()
