"""sparkrec generate: Criteo-format raw click logs with a planted ground truth.

Writes <out>/raw/day_<d>/part-<i>.tsv[.gz] (the columns of conf/datasets/criteo.json: the label, 13
integer and 26 hex-token fields; tab-separated; empty = missing),
<out>/oracle (a Delta table: the true click probability of every line, keyed by file and line number)
and <out>/planted_model.json. Runs on the executors: no driver-side loop over rows.

    spark-submit spark_jobs/generate.py --out data/criteo --days 4 --rows-per-day 100000
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from typing import Protocol, TypeVar

import numpy as np
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from rec_plugin import storage
from rec_plugin.errors import CommandParser, InputError, run_command
from rec_plugin.schema import LINE_NUMBER, ROW_KEYS, SOURCE_FILE, partition_line_number
from spark_jobs.layout import GeneratedData
from spark_jobs.planted_model import (
    CATEGORICAL,
    CRITEO,
    DENSE,
    LABEL,
    TOKEN_CONF,
    PlantedModel,
    category_token,
    label_draw,
)
from spark_jobs.session import WIDE_PROJECTIONS, build_session, session_conf
from training.metrics import auc_from_counts

# A generator's config dataclass (every field has a default).
ConfigT = TypeVar("ConfigT")
_CALIBRATION_ROWS = 20_000
# The oracle table's drawn click, whatever the dataset calls its label: what train's oracle join and
# oracle_metrics read.
ORACLE_LABEL = "label"


@dataclass(frozen=True)
class GeneratorConfig:
    """What to generate; the defaults are the demo's small embedded data set.

    They are sized so that its planted interactions can be learnt: at 300k rows a day (two train
    days), cardinalities up to 100 and four rank-2 interaction pairs, one epoch of DLRM comes within
    0.01 AUC of the oracle, while a first-order model stays far below it (README, "train")."""

    days: int = 4
    rows_per_day: int = 300_000
    files_per_day: int = 2
    seed: int = 42
    max_cardinality: int = 100
    positive_rate: float = 0.25
    new_value_rate: float = 0.005
    logit_scale: float = 1.5
    latent_dim: int = 2
    interaction_pairs: int = 4
    compression: str = "none"

    def __post_init__(self) -> None:
        check_file_layout(self)


def check_file_layout(config: FileLayout) -> None:
    """The output layout every generator's config shares: compression, and equal files per day."""
    if config.compression not in ("none", "gzip"):
        raise ValueError(f"compression must be 'none' or 'gzip', not {config.compression!r}")
    if config.days < 1 or config.rows_per_day < 1 or config.files_per_day < 1:
        raise ValueError("days, rows_per_day and files_per_day must be positive")
    if config.rows_per_day % config.files_per_day:
        raise ValueError("rows_per_day must be a multiple of files_per_day (equal files per day)")


def planted_model(spark: SparkSession, config: GeneratorConfig) -> PlantedModel:
    """The config's planted model, its bias calibrated on day 0 to the requested positive rate."""
    model = PlantedModel.from_seed(
        config.seed,
        config.max_cardinality,
        config.logit_scale,
        config.new_value_rate,
        config.latent_dim,
        config.interaction_pairs,
    )
    sample = _frame(spark, model, config.rows_per_day, min(config.rows_per_day, _CALIBRATION_ROWS), 2)
    logits = np.array([r[0] for r in sample.select("logit").collect()])
    low, high = -20.0, 20.0
    for _ in range(60):
        bias = (low + high) / 2
        rate = float(np.mean(1.0 / (1.0 + np.exp(-(logits + bias)))))
        low, high = (bias, high) if rate < config.positive_rate else (low, bias)
    return PlantedModel(**{**model.__dict__, "bias": round((low + high) / 2, 6)})


def _frame(
    spark: SparkSession, model: PlantedModel, rows_per_day: int, rows: int, partitions: int
) -> DataFrame:
    """Draws for global rows 0..rows-1 (day = row // rows_per_day): category ids, dense values,
    the label's uniform draw and the planted logits."""
    day = F.floor(F.col("id") / rows_per_day).cast("int").alias("day")
    row_hash = F.xxhash64(F.lit(model.seed), F.col("day"), F.col("id") % rows_per_day).alias("row_hash")
    # Each stage materializes what the next reads many times (see PlantedModel.field_hashes).
    keyed = spark.range(0, rows, 1, partitions).select("id", day).select("id", "day", row_hash)
    field_hashes = PlantedModel.field_hashes("row_hash")
    hashed_fields = keyed.selectExpr("day", *[f"{h} AS f_{name}" for name, h in field_hashes.items()])
    field_hash = {name: f"f_{name}" for name in [*CATEGORICAL, *DENSE, LABEL]}
    draws = hashed_fields.selectExpr(
        "day",
        *[f"{sql} AS id_{name}" for name, sql in model.category_ids("day", field_hash).items()],
        *[f"{sql} AS {name}" for name, sql in model.dense_values(field_hash).items()],
        f"{label_draw(field_hash[LABEL])} AS label_draw",
    )
    hashes = model.effect_hashes({name: f"id_{name}" for name in CATEGORICAL})
    hashed = draws.selectExpr("*", *[f"{sql} AS h_{name}" for name, sql in hashes.items()])
    effects = {name: f"h_{name}" for name in CATEGORICAL}
    logit, first_order_logit = model.logits(effects, {name: name for name in DENSE})
    return hashed.selectExpr("*", f"{logit} AS logit", f"{first_order_logit} AS first_order_logit")


def _sigmoid(column: str) -> Column:
    return 1.0 / (1.0 + F.exp(-F.col(column)))


def _label(frame: DataFrame) -> Column:
    return (F.col("label_draw") < _sigmoid("logit")).cast("int")


def _raw_lines(frame: DataFrame) -> DataFrame:
    """The Criteo TSV line of every row."""
    fields = [_label(frame).cast("string")]
    fields += [F.coalesce(F.col(name).cast("string"), F.lit("")) for name in DENSE]
    fields += [
        F.coalesce(F.expr(category_token(j, f"id_{name}")), F.lit("")) for j, name in enumerate(CATEGORICAL)
    ]
    return frame.select(F.concat_ws(CRITEO.separator, *fields).alias("value"))


class FileLayout(Protocol):
    """What names a generator's output files: any generator's config (GeneratorConfig, EcommerceConfig)."""

    days: int
    rows_per_day: int
    files_per_day: int
    compression: str


def oracle_rows(frame: DataFrame, config: FileLayout) -> DataFrame:
    """Each line's true click probability, keyed by its file (relative to raw/) and line number, from a
    generator's frame of `day`, `label_draw`, `logit` and `first_order_logit` (one partition a file)."""
    # A literal array indexed by partition: no per-row string building.
    source_file = F.element_at(F.array(*map(F.lit, raw_file_names(config))), F.spark_partition_id() + 1)
    line_number = partition_line_number()
    return frame.select(
        "day",
        source_file.alias(SOURCE_FILE),
        line_number.alias(LINE_NUMBER),
        _label(frame).alias(ORACLE_LABEL),
        _sigmoid("logit").alias("p_click"),
        _sigmoid("first_order_logit").alias("p_first_order"),
    )


def progress(step: str, started: float) -> None:
    print(f"generate: {step} ({time.perf_counter() - started:.1f} s)", flush=True)


def raw_file_names(config: FileLayout) -> list[str]:
    """Output file of each Spark partition, relative to raw/: partition p is day p // files_per_day."""
    suffix = ".tsv" + (".gz" if config.compression == "gzip" else "")
    return [f"day_{d}/part-{p:05d}{suffix}" for d in range(config.days) for p in range(config.files_per_day)]


def generate(
    spark: SparkSession, out: str, config: GeneratorConfig, sql_conf: dict[str, str] | None = None
) -> dict:
    """Writes the raw files, the oracle table and the planted model; returns the report section.

    One Spark partition is one output file: partition p holds day p // files_per_day, so a line's
    number in its file is its index in the partition, for the raw files and the oracle alike."""
    with session_conf(spark, {**TOKEN_CONF, **(WIDE_PROJECTIONS if sql_conf is None else sql_conf)}):
        return _generate(spark, out, config)


def _generate(spark: SparkSession, out: str, config: GeneratorConfig) -> dict:
    started = time.perf_counter()
    model = planted_model(spark, config)
    rows = config.days * config.rows_per_day
    progress(f"bias calibrated to a {config.positive_rate:.0%} positive rate", started)
    frame = _frame(spark, model, config.rows_per_day, rows, config.days * config.files_per_day)
    return write_outputs(
        spark, out, config, _raw_lines(frame), oracle_rows(frame, config), model.to_json(), started
    )


def write_outputs(
    spark: SparkSession,
    out: str,
    config: FileLayout,
    raw_lines: DataFrame,
    oracle: DataFrame,
    model_json: str,
    started: float,
) -> dict:
    """Writes a generator's raw lines (a `value` column, one partition a file, in line order) to
    <out>/raw, its oracle table to <out>/oracle and its planted model to <out>/planted_model.json,
    replacing any earlier output; returns the report section."""
    rows = config.days * config.rows_per_day
    data = GeneratedData(out)
    staging = f"{data.raw}/_staging"
    for previous in (data.raw, data.oracle):  # a full regeneration: no old versions to keep
        storage.delete(spark, previous)
    raw_lines.write.option("compression", config.compression).text(staging)
    targets = raw_file_names(config)
    for name in storage.list_files(spark, staging):
        storage.rename(spark, f"{staging}/{name}", f"{data.raw}/{targets[int(name.split('-')[1])]}")
    storage.delete(spark, staging)
    progress(f"{rows:,} raw lines written to {data.raw}", started)
    oracle.write.format("delta").save(data.oracle)
    elapsed = time.perf_counter() - started
    progress(f"oracle written to {data.oracle}", started)
    storage.write_text(spark, data.planted_model, model_json)
    return {
        "rows": rows,
        "days": config.days,
        "rows_per_s": round(rows / elapsed, 1),
        **oracle_metrics(spark.read.format("delta").load(data.oracle)),
    }


def oracle_metrics(oracle: DataFrame) -> dict:
    """AUC and logloss of the planted model on its own rows, and the AUC of its first-order part (the
    AUCs None where the rows hold one label class, as the models' are)."""
    label = F.col(ORACLE_LABEL).cast("double")
    p = F.greatest(F.least(F.col("p_click"), F.lit(1 - 1e-7)), F.lit(1e-7))
    totals = oracle.select(
        F.avg(-(label * F.log(p) + (1 - label) * F.log(1 - p))).alias("logloss"), F.avg(label).alias("rate")
    ).first()
    ranked = 0 < totals["rate"] < 1
    return {
        "oracle_auc": round(spark_auc(oracle, "p_click"), 5) if ranked else None,
        "oracle_logloss": round(float(totals["logloss"]), 5),
        "first_order_auc": round(spark_auc(oracle, "p_first_order"), 5) if ranked else None,
        "positive_rate": round(float(totals["rate"]), 5),
    }


def oracle_figures(spark: SparkSession, oracle: str, rows: DataFrame, stage: str) -> dict:
    """oracle_metrics on exactly `rows` (joined by their row keys to the generator's oracle table at
    `oracle`); {}, said in a line, where that is no such table or lacks some of the rows (a day of the
    user's own files, another generated run)."""
    wanted = [*ROW_KEYS, ORACLE_LABEL, "p_click", "p_first_order"]
    try:
        truth = storage.read_delta(spark, oracle, storage.delta_version(spark, oracle, "oracle"))
    except InputError:
        truth = None
    if truth is None or not set(wanted) <= set(truth.columns):
        print(f"{stage}: {oracle} is not the generator's oracle table: no oracle figures", flush=True)
        return {}
    joined = rows.select(*ROW_KEYS).join(truth.select(*wanted), ROW_KEYS, "left")
    asked, covered = joined.agg(F.count("*"), F.count(ORACLE_LABEL)).first()
    if covered < asked or asked == 0:
        print(f"{stage}: {oracle} holds {covered:,} of the {asked:,} rows: no oracle figures", flush=True)
        return {}
    return oracle_metrics(joined)


def spark_auc(frame: DataFrame, probability: str, bins: int = 100_000) -> float:
    """AUC of a probability column against `label` (the oracle's drawn click), from a group-by over
    `bins` score bins (no sort); pairs tied within a bin count half, which moves the AUC by less than
    1e-4."""
    counts = (
        frame.groupBy(F.floor(F.col(probability) * bins).alias("bin"))
        .agg(F.sum(ORACLE_LABEL).alias("positives"), F.count("*").alias("rows"))
        .orderBy("bin")
        .toPandas()
    )
    return auc_from_counts(counts["positives"], counts["rows"] - counts["positives"])


def parse_generator_args(
    argv: list[str] | None, prog: str, doc: str, config_type: type[ConfigT]
) -> tuple[argparse.Namespace, ConfigT]:
    """--out, --profile and one option per field of a generator's config (its default shown); a
    config that refuses its values is one InputError line."""
    parser = CommandParser(prog=prog, description=doc.splitlines()[0])
    parser.add_argument("--out", required=True, help="output directory (local path or URI)")
    parser.add_argument("--profile", default="local", help="Spark profile from conf/spark/")
    defaults = config_type()
    for name, value in defaults.__dict__.items():
        parser.add_argument(
            f"--{name.replace('_', '-')}", type=type(value), default=value, help=f"(default: {value})"
        )
    args = parser.parse_args(argv)
    try:
        return args, config_type(**{name: getattr(args, name) for name in defaults.__dict__})
    except ValueError as error:
        raise InputError(str(error)) from None


def main(argv: list[str] | None = None) -> dict:
    args, config = parse_generator_args(argv, "sparkrec generate", __doc__, GeneratorConfig)
    spark = build_session(args.profile, "sparkrec-generate")
    report = generate(spark, args.out, config)
    print(json.dumps({"generate": report}, indent=2))
    return report


if __name__ == "__main__":
    run_command(main, "sparkrec generate")
