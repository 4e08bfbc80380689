"""The Criteo featurization written again, independently of rec_plugin, in DuckDB SQL and in polars:
the parity test's oracle and bench/featurize.py's baselines. Same semantics as rec_plugin/criteo.py:
dense = (log(1 + max(coalesce(x, 0), 0)) - mean) / std (population std over the training days);
ids by descending training count (ties by value), rare (< threshold) and unseen -> 0."""

from __future__ import annotations

import polars as pl

from rec_plugin.dataset import load_dataset
from rec_plugin.schema import Tags

CRITEO = load_dataset("criteo")
DENSE, CATEGORICAL = CRITEO.tagged(Tags.CONTINUOUS), CRITEO.tagged(Tags.CATEGORICAL)

KEYS = ["day", "source_file", "line_number"]


def duckdb_features_sql(bronze: str, train_days: list[int], threshold: int) -> str:
    """The DuckDB query over the table, view or parquet scan `bronze`."""
    train = f"(SELECT * FROM {bronze} WHERE day IN ({', '.join(map(str, train_days))}))"
    logged = {c: f"ln(1 + greatest(coalesce({c}, 0), 0))" for c in DENSE}
    stats = ", ".join(f"avg({x}) AS m_{c}, stddev_pop({x}) AS s_{c}" for c, x in logged.items())
    vocabularies = ",\n".join(
        f"""v_{c} AS (SELECT value, row_number() OVER (ORDER BY n DESC, value ASC) AS id
             FROM (SELECT {c} AS value, count(*) AS n FROM {train} WHERE {c} IS NOT NULL
                   GROUP BY {c} HAVING count(*) >= {threshold}))"""
        for c in CATEGORICAL
    )
    dense = ", ".join(f"CAST(({x} - stats.m_{c}) / stats.s_{c} AS FLOAT) AS {c}" for c, x in logged.items())
    ids = ", ".join(f"CAST(coalesce(v_{c}.id, 0) AS INT) AS {c}" for c in CATEGORICAL)
    joins = " ".join(f"LEFT JOIN v_{c} ON b.{c} = v_{c}.value" for c in CATEGORICAL)
    return f"""WITH stats AS (SELECT {stats} FROM {train}), {vocabularies}
        SELECT b.day, b.source_file, b.line_number, CAST(b.label AS FLOAT) AS label, {dense}, {ids}
        FROM {bronze} b CROSS JOIN stats {joins}"""


def polars_features(bronze: pl.LazyFrame, train_days: list[int], threshold: int) -> pl.LazyFrame:
    train = bronze.filter(pl.col("day").is_in(train_days))
    logged = {c: (pl.col(c).fill_null(0).clip(lower_bound=0).cast(pl.Float64) + 1.0).log() for c in DENSE}
    stats = train.select(
        *[x.mean().alias(f"m_{c}") for c, x in logged.items()],
        *[x.std(ddof=0).alias(f"s_{c}") for c, x in logged.items()],
    ).collect()
    out = bronze.with_columns(
        pl.col("label").cast(pl.Float32),
        *[
            ((x - stats[f"m_{c}"][0]) / stats[f"s_{c}"][0]).cast(pl.Float32).alias(c)
            for c, x in logged.items()
        ],
    )
    for c in CATEGORICAL:
        vocab = (
            train.filter(pl.col(c).is_not_null())
            .group_by(c)
            .len()
            .filter(pl.col("len") >= threshold)
            .sort(["len", c], descending=[True, False])
            .with_row_index(f"{c}_id", offset=1)
            .select(c, f"{c}_id")
        )
        out = (
            out.join(vocab, on=c, how="left")
            .with_columns(pl.col(f"{c}_id").fill_null(0).cast(pl.Int32).alias(c))
            .drop(f"{c}_id")
        )
    return out.select(*KEYS, "label", *DENSE, *CATEGORICAL)
