"""A daily retrain's ingest from a Delta source: the whole table again (what `retrain` ran before) against
the new day alone (`ingest --days`, Delta skipping the other days' data files), into the same bronze,
interleaved round by round; prints seconds, the medians and the ratio.

The source is an events table as a lake keeps one: a TIMESTAMP `event_time`, BIGINT user ids, string
item ids, DECIMAL prices, a BOOLEAN click, appended one commit a day (default 10 days x 300k rows).

    .venv/bin/python bench/delta_day_ingest.py [--days 10] [--rows-per-day 300000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import time

from harness import print_medians, report_quiet, scratch_folder
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from spark_jobs.ingest import ingest
from spark_jobs.session import build_session

ORIGIN = "2024-01-01"
COLUMNS = [
    {"name": "click", "type": "int", "rule": "binary", "tags": ["label"]},
    {"name": "user_id", "type": "string", "tags": ["categorical", "user_id"]},
    {"name": "item_id", "type": "string", "tags": ["categorical", "item_id"]},
    {"name": "price", "type": "float", "tags": ["continuous"]},
]


def write_events(spark: SparkSession, table: str, days: int, rows_per_day: int) -> None:
    """One append a day: its rows' times spread over the day (UTC)."""
    origin_seconds = int(spark.sql(f"SELECT unix_timestamp(TIMESTAMP '{ORIGIN} 00:00:00 UTC')").first()[0])
    for day in range(days):
        rows = spark.range(rows_per_day).select(
            F.timestamp_seconds(
                F.lit(origin_seconds + day * 86_400) + F.floor(F.col("id") * 86_400 / rows_per_day)
            ).alias("event_time"),
            F.abs(F.xxhash64("id", F.lit(day)) % 1_000_000).alias("user_id"),
            F.format_string("sku-%d", F.abs(F.xxhash64(F.lit(day), "id") % 200_000)).alias("item_id"),
            (F.rand(day) * 100).cast("decimal(10,2)").alias("price"),
            (F.rand(day + 1) < 0.1).alias("click"),
        )
        rows.write.format("delta").mode("append").save(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=10)
    parser.add_argument("--rows-per-day", type=int, default=300_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    spark = build_session("local", "bench-delta-day-ingest")
    folder = scratch_folder("sparkrec-delta-day-")
    table, bronze, rejects = (str(folder / name) for name in ("events", "bronze", "rejects"))
    write_events(spark, table, args.days, args.rows_per_day)
    definition = folder / "events.json"
    fields = {"format": "delta", "table": table, "day_column": "event_time", "day_origin": ORIGIN}
    definition.write_text(json.dumps({"name": "events", "columns": COLUMNS, **fields}))
    ingest(spark, None, bronze, rejects, dataset=str(definition))  # the history, once
    last = args.days - 1
    variants = {"the whole table": None, f"day {last} alone": [last]}
    report_quiet()
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.repeats):
        for name, days in variants.items():
            started = time.perf_counter()
            report = ingest(spark, None, bronze, rejects, days, dataset=str(definition))
            seconds[name].append(time.perf_counter() - started)
            print(f"{name}: {report['lines_read']:,} rows read in {seconds[name][-1]:.1f} s", flush=True)
    medians = print_medians(seconds, None, unit="s", digits=1)
    whole, one_day = medians.values()
    print(f"ratio (whole table / one day): {whole / one_day:.2f}x, over {args.days} days of history")


if __name__ == "__main__":
    main()
