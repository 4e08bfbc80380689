"""sparkrec monitor: a day's drift and health report (JSON + PNG), with a warning per threshold crossed.

What a continuous-retraining loop checks before it trusts a new day, or a served model on it:

- The training window is the features table's rows of the training days (the features description's
  train days by default) at the version featurize recorded: exactly the model's inputs, so nothing is
  featurized twice and the day is compared with what the model saw. The day's bronze rows go through
  the saved workflow, as scoring and serving transform them.
- Categorical features: `unseen_share` is the share of the day's ids that are 0 (missing, rarer than
  the workflow's freq_threshold, or never seen when it was fitted), beside the same share in the
  training window: what counts is the increase. `new_id_share` is the share of ids at or above the
  baseline cardinality, ids the model has no trained embedding row for: those appear once
  Workflow.extend grows the vocabularies after the model was trained. The baseline is
  `baseline_schema` (the schema.json the model was trained with) when given, else one more than the
  largest id in the training window, which is what a model trained on those features has rows for.
  A hashed column (Cross) has no unseen id, but the share of its bucket 0 still shows drift. A list
  feature (ListCategorify's ids) counts its elements instead of its rows, so its shares are of the
  elements, and its `mean_length` (elements a row) beside the training window's shows a change in
  how long the lists are.
- Continuous features (the workflow's outputs, the model's dense inputs): the population stability
  index over the training window's deciles (equal edges merged, nulls a bin of their own), PSI =
  sum((day - train) * ln(day / train)) over the bins' shares, each floored at PSI_EPSILON.
- The label rate, as a ratio to the training window's; with a predictions table (sparkrec score), the
  day's predictions joined to its bronze labels: calibration (mean probability / click rate) and AUC.
- Triton (`metrics_url`, its Prometheus endpoint): per model and version, requests that succeeded and
  failed, inferences and mean request latency. Triton's counters run from the server's start, so
  these are cumulative, not the day's: compare two reports for a day's traffic.

Two Spark aggregations do the feature work whatever the number of features: the training window's
deciles and largest ids, then the rows of the window and of the day per feature value (a PSI bin, a
kind of id, a label).

Exit status: 0 when no threshold (conf/monitoring.json) is crossed; EXIT_THRESHOLD_CROSSED (3) when
one is, after a `sparkrec monitor: warning: ...` line per crossing on stderr (the reports are written
either way); EXIT_INPUT_ERROR (2) for bad input, as every command (rec_plugin/errors.py).

    sparkrec monitor --bronze lake/bronze --workflow lake/workflow --day 3 \\
        --predictions lake/predictions --triton-metrics http://127.0.0.1:8002/metrics --out monitoring
"""

from __future__ import annotations

import io
import json
import re
import sys
import urllib.request
from collections import defaultdict
from dataclasses import asdict, dataclass, fields
from functools import reduce
from operator import add
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from rec_plugin import storage
from rec_plugin.errors import CommandParser, InputError, run_command
from rec_plugin.features_description import TRAIN_SPLIT, FeaturesDescription
from rec_plugin.json_files import write_json
from rec_plugin.schema import DAY, ROW_KEYS, Schema, Tags
from rec_plugin.workflow import Workflow, spark_type
from spark_jobs.layout import day_list
from spark_jobs.score import PROBABILITY, require_predictions_table
from spark_jobs.session import CONF_DIR, build_session
from training.metrics import auc_from_counts

EXIT_THRESHOLD_CROSSED = 3
THRESHOLDS_FILE = CONF_DIR / "monitoring.json"
PSI_QUANTILES = [q / 10 for q in range(1, 10)]
PSI_EPSILON = 1e-4
# Continuous values that are null fall in a bin of their own.
NULL_BIN = -1
# Score bins of the AUC's group-by (no global sort); ties within a bin count half.
AUC_BINS = 100_000
# The report's sections (beside Tags.CATEGORICAL and Tags.CONTINUOUS, one entry per feature).
LABEL_RATE = "label_rate"
PREDICTIONS = "predictions"
TRITON = "triton"
TRITON_MODELS = "models"
WARNINGS = "warnings"
LABEL = "label"
CALIBRATION = "calibration"
AUC = "auc"
# Triton's Prometheus counters, per model and version -> the report's names for them.
TRITON_COUNTERS = {
    "nv_inference_request_success": "success",
    "nv_inference_request_failure": "failure",
    "nv_inference_count": "inferences",
    "nv_inference_request_duration_us": "duration_us",
}
_SAMPLE = re.compile(r"^(\w+)\{([^}]*)\}\s+(\S+)")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')
# A categorical feature's kinds of ids: 0 (missing, rare or unseen), known to the model, new to it.
ZERO_ID, KNOWN_ID, NEW_ID = 0, 1, 2
# The column that tells the training window's rows from the day's in the joint aggregation.
_WINDOW = "_monitor_window"
_TRAINING, _DAY = 0, 1


@dataclass(frozen=True)
class Thresholds:
    """What a day may not cross; conf/monitoring.json is the one place their values are set. Shares are
    fractions of the day's rows; each (low, high) bound is inclusive."""

    max_unseen_share_increase: float
    max_new_id_share: float
    max_psi: float
    label_rate_ratio: tuple[float, float]
    calibration: tuple[float, float]
    min_auc: float
    max_failure_share: float
    max_mean_latency_ms: float

    @classmethod
    def load(cls, path: str | Path = THRESHOLDS_FILE) -> Thresholds:
        """The thresholds of a JSON file (keys starting with `_` are comments); refused in one line when a
        threshold is missing, unknown or not a number (a bound: [low, high])."""
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise InputError(f"thresholds {path} cannot be read: {error}") from None
        given = {k: v for k, v in data.items() if not k.startswith("_")}
        names = [f.name for f in fields(cls)]
        missing, unknown = sorted(set(names) - set(given)), sorted(set(given) - set(names))
        if missing or unknown:
            wrong = ", ".join(
                f"{why} {which}" for why, which in (("missing", missing), ("unknown", unknown)) if which
            )
            raise InputError(f"thresholds {path}: {wrong} (it sets {names})")
        bounds = {f.name for f in fields(cls) if str(f.type).startswith("tuple")}
        values = {}
        for name, value in given.items():
            numbers = value if name in bounds else [value]
            if not (
                isinstance(numbers, list)
                and len(numbers) == (2 if name in bounds else 1)
                and all(isinstance(n, int | float) and not isinstance(n, bool) for n in numbers)
                and numbers == sorted(numbers)
            ):
                form = "[low, high] with low <= high" if name in bounds else "a number"
                raise InputError(f"thresholds {path}: {name} must be {form}, not {value!r}")
            values[name] = tuple(map(float, numbers)) if name in bounds else float(value)
        return cls(**values)


@dataclass(frozen=True)
class Crossing:
    """A crossed threshold: its name (a Thresholds field), what crossed it (a feature, `label`, the
    predictions, a Triton model/version), the value, and the line that says so."""

    threshold: str
    subject: str
    value: float
    message: str


def report_file(out: str | Path, day: int) -> Path:
    """Where the command writes a day's JSON report; its PNG is beside it (.png)."""
    return Path(out) / f"monitor-day{day}.json"


def _training_window(spark: SparkSession, description: FeaturesDescription, days: list[int]) -> DataFrame:
    """The features table's rows of `days`, at the version featurize recorded."""
    where = f"features table {description.table}@v{description.version}"
    storage.delta_version(spark, description.table, "features table", description.version)
    table = spark.read.format("delta").option("versionAsOf", description.version).load(description.table)
    absent = sorted(d for d in days if str(d) not in storage.partition_values(table, DAY))
    if not days or absent:
        raise InputError(f"training days {absent or days} are not in {where}: fix --training-days")
    return table.where(F.col(DAY).isin(days))


def _bin(column: Column, edges: list[float]) -> Column:
    """The PSI bin of a value: how many edges it is above (0..len(edges)), NULL_BIN for null."""
    above = reduce(add, [(column > edge).cast("int") for edge in edges], F.lit(0))
    return F.when(column.isNull(), F.lit(NULL_BIN)).otherwise(above)


def _baseline(
    training: DataFrame, schema: Schema, baseline_schema: Schema | None
) -> tuple[dict[str, list[float]], dict[str, int]]:
    """Per continuous feature its PSI edges (the training window's distinct deciles), per categorical
    feature its baseline cardinality: one aggregation over the training window."""
    continuous, categorical = schema.continuous.names, _id_features(schema)
    if baseline_schema is not None:
        absent = [c for c in categorical if c not in baseline_schema or not baseline_schema[c].cardinality]
        if absent:
            raise InputError(
                f"the baseline schema has no categorical columns {absent}: give the one the model trained on"
            )
    largest_ids = [F.max(F.array_max(c) if c in schema.lists else F.col(c)) for c in categorical]
    row = training.agg(*[F.percentile_approx(c, PSI_QUANTILES) for c in continuous], *largest_ids).first()
    edges = {c: sorted({q for q in row[i] or [] if q is not None}) for i, c in enumerate(continuous)}
    largest = dict(zip(categorical, row[len(continuous) :]))
    cardinality = {
        c: baseline_schema[c].cardinality if baseline_schema else (largest[c] or 0) + 1 for c in categorical
    }
    return edges, cardinality


def _counts(
    training: DataFrame,
    day_features: DataFrame,
    schema: Schema,
    edges: dict[str, list[float]],
    cardinality: dict[str, int],
) -> dict[tuple[int, str, int], int]:
    """Rows by (window, feature, value) in one aggregation over the training window's rows and the
    day's: a continuous feature's value is its PSI bin, a categorical one's the kind of its id (ZERO_ID,
    KNOWN_ID, NEW_ID; a list's per element), the label's its value."""
    label, continuous, categorical = schema.label.name, schema.continuous.names, _id_features(schema)
    typed = [F.col(c).cast(spark_type(schema[c].dtype)) for c in [label, *continuous, *categorical]]
    both = training.select(F.lit(_TRAINING).alias(_WINDOW), *typed).unionByName(
        day_features.select(F.lit(_DAY).alias(_WINDOW), *typed)
    )
    values = {label: F.col(label).cast("int")}
    values.update({c: _bin(F.col(c), edges[c]) for c in continuous})

    def kind(c: str, id_: Column) -> Column:
        return (
            F.when(id_ <= (schema[c].hashed_ids or 0), ZERO_ID)  # 0, or a rare/unseen value's bucket
            .when(id_ >= cardinality[c], NEW_ID)
            .otherwise(KNOWN_ID)
        )

    def pair(c: str, value: Column) -> Column:
        return F.struct(F.lit(c).alias("feature"), value.alias("value"))

    def element_pairs(c: str) -> Column:
        # One argument only: F.transform passes an element's index to a lambda of two.
        return F.transform(F.coalesce(F.col(c), F.array()), lambda id_: pair(c, kind(c, id_)))

    values.update({c: kind(c, F.col(c)) for c in schema.categorical.names})
    elements = [element_pairs(c) for c in schema.lists.names]
    pairs = F.concat(F.array(*[pair(c, v) for c, v in values.items()]), *elements)
    exploded = both.select(_WINDOW, F.explode(pairs).alias("pair"))
    counted = exploded.groupBy(_WINDOW, "pair.feature", "pair.value").count().collect()
    return {(row[0], row[1], row[2]): row[3] for row in counted}


def psi(expected: list[float], actual: list[float]) -> float:
    """Population stability index of two histograms over the same bins (counts or shares)."""
    e = np.maximum(np.asarray(expected, np.float64) / max(sum(expected), 1), PSI_EPSILON)
    a = np.maximum(np.asarray(actual, np.float64) / max(sum(actual), 1), PSI_EPSILON)
    return float(np.sum((a - e) * np.log(a / e)))


def _share(part: float, whole: float) -> float:
    return round(part / whole, 6) if whole else 0.0


def _id_features(schema: Schema) -> list[str]:
    """The features whose values are vocabulary ids: categorical ones, then lists of ids."""
    return [*schema.categorical.names, *schema.lists.names]


def _feature_sections(
    counts: dict[tuple[int, str, int], int],
    schema: Schema,
    edges: dict[str, list[float]],
    cardinality: dict[str, int],
) -> dict:
    """The label rate, categorical and continuous sections from the two windows' counts."""
    label = schema.label.name

    def rows(window: int, feature: str, value: int) -> int:
        return counts.get((window, feature, value), 0)

    labels = {
        w: {v: n for (w2, f, v), n in counts.items() if (w2, f) == (w, label)} for w in (_TRAINING, _DAY)
    }
    total = {w: sum(labels[w].values()) for w in labels}
    rate = {w: sum(v * n for v, n in labels[w].items()) / total[w] for w in labels}
    categorical = {}
    for c in _id_features(schema):
        # A list's shares are of its elements (every element has one of the three kinds).
        ids = {w: sum(rows(w, c, k) for k in (ZERO_ID, KNOWN_ID, NEW_ID)) for w in total}
        unseen = {w: _share(rows(w, c, ZERO_ID), ids[w]) for w in total}
        categorical[c] = {
            "unseen_share": unseen[_DAY],
            "training_unseen_share": unseen[_TRAINING],
            "unseen_share_increase": round(unseen[_DAY] - unseen[_TRAINING], 6),
            "new_id_share": _share(rows(_DAY, c, NEW_ID), ids[_DAY]),
            "baseline_cardinality": cardinality[c],
        }
        if c in schema.lists:
            categorical[c]["mean_length"] = _share(ids[_DAY], total[_DAY])
            categorical[c]["training_mean_length"] = _share(ids[_TRAINING], total[_TRAINING])
    continuous = {}
    for c in schema.continuous.names:
        bins = [NULL_BIN, *range(len(edges[c]) + 1)]
        value = psi([rows(_TRAINING, c, b) for b in bins], [rows(_DAY, c, b) for b in bins])
        continuous[c] = {"psi": round(value, 6), "edges": [round(e, 6) for e in edges[c]]}
    return {
        "rows": total[_DAY],
        "training_rows": total[_TRAINING],
        LABEL_RATE: {
            "day": round(rate[_DAY], 6),
            "training": round(rate[_TRAINING], 6),
            "ratio": round(rate[_DAY] / rate[_TRAINING], 6) if rate[_TRAINING] else None,
        },
        Tags.CATEGORICAL: categorical,
        Tags.CONTINUOUS: continuous,
    }


def prediction_quality(
    spark: SparkSession, predictions: str, day_rows: DataFrame, label: str, day: int
) -> dict:
    """Calibration (mean probability / click rate) and AUC of the day's predictions against its bronze
    labels (joined on day, source file, line number), from one group-by over score bins; None where the
    day has no scored rows (or AUC where it has one class only)."""
    require_predictions_table(spark, predictions, must_exist=True)
    scored = spark.read.format("delta").load(predictions).where(F.col(DAY) == day)
    scored = scored.select(*ROW_KEYS, PROBABILITY)
    labelled = scored.join(day_rows.select(*ROW_KEYS, F.col(label).cast("double").alias(label)), ROW_KEYS)
    counts = (
        labelled.groupBy(F.floor(F.col(PROBABILITY) * AUC_BINS).alias("bin"))
        .agg(F.sum(label).alias("positives"), F.count("*").alias("rows"), F.sum(PROBABILITY).alias("p"))
        .orderBy("bin")
        .toPandas()
    )
    rows, positives = int(counts["rows"].sum()), float(counts["positives"].sum())
    mean = float(counts["p"].sum()) / rows if rows else None
    try:
        auc = round(auc_from_counts(counts["positives"], counts["rows"] - counts["positives"]), 6)
    except ValueError:
        auc = None
    return {
        "table": predictions,
        "rows": rows,
        "mean_probability": None if mean is None else round(mean, 6),
        "label_rate": round(positives / rows, 6) if rows else None,
        CALIBRATION: round(mean * rows / positives, 6) if positives else None,
        AUC: auc,
    }


def triton_metrics(url: str) -> dict[str, dict[str, dict]]:
    """Per model and version (as Triton labels them): successful and failed requests, inferences (rows)
    and mean latency of a successful request, from Triton's Prometheus text at `url` (counters since the
    server started; a counter split by further labels, such as failures by reason, is summed)."""
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            text = response.read().decode()
    except (OSError, ValueError) as error:
        raise InputError(
            f"no Triton metrics at {url} ({error}): start the server or fix --triton-metrics"
        ) from None
    counters: dict[tuple[str, str], dict[str, float]] = defaultdict(
        lambda: dict.fromkeys(TRITON_COUNTERS.values(), 0.0)
    )
    for line in text.splitlines():
        sample = _SAMPLE.match(line)
        if sample and sample[1] in TRITON_COUNTERS:
            labels = dict(_LABEL.findall(sample[2]))
            if "model" in labels and "version" in labels:
                counters[labels["model"], labels["version"]][TRITON_COUNTERS[sample[1]]] += float(sample[3])
    models: dict[str, dict[str, dict]] = {}
    for (model, version), counts in sorted(counters.items(), key=lambda k: (k[0][0], int(k[0][1] or 0))):
        success = int(counts["success"])
        models.setdefault(model, {})[version] = {
            "success": success,
            "failure": int(counts["failure"]),
            "inferences": int(counts["inferences"]),
            "mean_latency_ms": round(counts["duration_us"] / success / 1000, 3) if success else None,
        }
    return models


def _outside(value: float, bounds: tuple[float, float]) -> bool:
    return not bounds[0] <= value <= bounds[1]


def crossings(report: dict, thresholds: Thresholds) -> list[Crossing]:
    """The thresholds the report's day crosses, each with its one-line message."""
    t, day, found = thresholds, report[DAY], []
    for c, s in report[Tags.CATEGORICAL].items():
        ids = "list elements" if "mean_length" in s else "ids"  # a list is reported by its elements
        if s["unseen_share_increase"] > t.max_unseen_share_increase:
            message = (
                f"{c}: {s['unseen_share']:.1%} of day {day}'s {ids} are 0 (unseen, rare or missing) against "
                f"{s['training_unseen_share']:.1%} in the training window, up more than "
                f"max_unseen_share_increase {t.max_unseen_share_increase:.1%}"
            )
            found.append(Crossing("max_unseen_share_increase", c, s["unseen_share_increase"], message))
        if s["new_id_share"] > t.max_new_id_share:
            message = (
                f"{c}: {s['new_id_share']:.1%} of day {day}'s {ids} are new (at or above the model's "
                f"{s['baseline_cardinality']} embedding rows), more than max_new_id_share "
                f"{t.max_new_id_share:.1%}"
            )
            found.append(Crossing("max_new_id_share", c, s["new_id_share"], message))
    for c, s in report[Tags.CONTINUOUS].items():
        if s["psi"] > t.max_psi:
            message = (
                f"{c}: PSI {s['psi']:.3f} of day {day} against the training window, above max_psi {t.max_psi}"
            )
            found.append(Crossing("max_psi", c, s["psi"], message))
    rate = report[LABEL_RATE]
    if rate["ratio"] is not None and _outside(rate["ratio"], t.label_rate_ratio):
        message = (
            f"label rate {rate['day']:.4f} on day {day} is {rate['ratio']:.2f}x the training window's "
            f"{rate['training']:.4f}, outside label_rate_ratio {list(t.label_rate_ratio)}"
        )
        found.append(Crossing("label_rate_ratio", report[LABEL], rate["ratio"], message))
    scored = report[PREDICTIONS] or {}
    if scored.get(CALIBRATION) is not None and _outside(scored[CALIBRATION], t.calibration):
        message = (
            f"predictions of day {day}: mean probability {scored['mean_probability']:.4f} is "
            f"{scored[CALIBRATION]:.2f}x the click rate {scored['label_rate']:.4f}, outside calibration "
            f"{list(t.calibration)}"
        )
        found.append(Crossing("calibration", PREDICTIONS, scored[CALIBRATION], message))
    if scored.get(AUC) is not None and scored[AUC] < t.min_auc:
        message = f"predictions of day {day}: AUC {scored[AUC]:.4f} is below min_auc {t.min_auc}"
        found.append(Crossing("min_auc", PREDICTIONS, scored[AUC], message))
    for model, versions in (report[TRITON] or {}).get(TRITON_MODELS, {}).items():
        for version, s in versions.items():
            served, requests = f"{model}/{version}", s["success"] + s["failure"]
            failed = s["failure"] / requests if requests else 0.0
            if failed > t.max_failure_share:
                message = (
                    f"Triton {model} version {version}: {failed:.1%} of {requests} requests failed, "
                    f"more than max_failure_share {t.max_failure_share:.1%}"
                )
                found.append(Crossing("max_failure_share", served, round(failed, 6), message))
            latency = s["mean_latency_ms"]
            if latency is not None and latency > t.max_mean_latency_ms:
                message = (
                    f"Triton {model} version {version}: mean request latency {latency:.1f} ms, above "
                    f"max_mean_latency_ms {t.max_mean_latency_ms}"
                )
                found.append(Crossing("max_mean_latency_ms", served, latency, message))
    return found


def monitor(
    spark: SparkSession,
    bronze: str,
    workflow: str,
    day: int,
    training_days: list[int] | None = None,
    predictions: str | None = None,
    metrics_url: str | None = None,
    thresholds: Thresholds | None = None,
    baseline_schema: Schema | None = None,
) -> dict:
    """The day's report (module docstring), its crossings of `thresholds` (default: conf's) under
    WARNINGS. `training_days` default to the features description's train days but `day`; without
    `predictions` or `metrics_url` those sections are None."""
    thresholds = thresholds or Thresholds.load()
    bronze_version = storage.delta_version(spark, bronze, "bronze table")
    rows = spark.read.format("delta").option("versionAsOf", bronze_version).load(bronze)
    if str(day) not in storage.partition_values(rows, DAY):
        raise InputError(f"day {day} is not in bronze table {bronze}@v{bronze_version}: fix --day")
    description = FeaturesDescription.load(spark, workflow)
    # The day is no baseline of its own drift (a retrain featurizes its day as a training day).
    training_days = training_days or [d for d in description.days(TRAIN_SPLIT) if d != day]
    if not training_days:
        raise InputError(f"day {day} is the only training day of {description.table}: give --training-days")
    training = _training_window(spark, description, training_days)
    schema = Workflow.load_schema(workflow, spark)
    day_rows = rows.where(F.col(DAY) == day)
    day_features = Workflow.load(workflow, spark).transform(day_rows)
    edges, cardinality = _baseline(training, schema, baseline_schema)
    counts = _counts(training, day_features, schema, edges, cardinality)
    label = schema.label.name
    report = {
        DAY: day,
        "bronze": {"table": bronze, "version": bronze_version},
        "training_window": {
            "table": description.table,
            "version": description.version,
            "days": training_days,
        },
        LABEL: label,
        **_feature_sections(counts, schema, edges, cardinality),
        PREDICTIONS: prediction_quality(spark, predictions, day_rows, label, day) if predictions else None,
        TRITON: {"url": metrics_url, TRITON_MODELS: triton_metrics(metrics_url)} if metrics_url else None,
        "thresholds": asdict(thresholds),
    }
    report[WARNINGS] = [asdict(c) for c in crossings(report, thresholds)]
    return report


def report_png(report: dict, thresholds: Thresholds) -> bytes:
    """The report at a glance: per categorical feature the share of ids 0 (training window and day)
    and of new ids, per continuous feature its PSI against max_psi; crossing features in red."""
    flagged = {w["subject"] for w in report[WARNINGS]}
    figure = Figure(figsize=(12, 7))
    top, bottom = figure.subplots(2, 1)
    categorical = report[Tags.CATEGORICAL]
    x = np.arange(len(categorical))
    for offset, key, name in (
        (-0.27, "training_unseen_share", "id 0, training window"),
        (0.0, "unseen_share", f"id 0, day {report[DAY]}"),
        (0.27, "new_id_share", f"new ids, day {report[DAY]}"),
    ):
        top.bar(x + offset, [s[key] for s in categorical.values()], 0.27, label=name)
    top.set_xticks(x, list(categorical), rotation=90)
    top.set(ylabel="share of rows", title="categorical features")
    top.legend()
    continuous = report[Tags.CONTINUOUS]
    psis = [s["psi"] for s in continuous.values()]
    colors = ["tab:red" if c in flagged else "tab:blue" for c in continuous]
    bottom.bar(np.arange(len(psis)), psis, color=colors)
    bottom.axhline(thresholds.max_psi, color="tab:red", linestyle="--", label=f"max_psi {thresholds.max_psi}")
    bottom.set_xticks(np.arange(len(psis)), list(continuous), rotation=90)
    bottom.set(ylabel="PSI", title="continuous features against the training window")
    bottom.legend()
    for axes, names in ((top, categorical), (bottom, continuous)):
        for tick, name in zip(axes.get_xticklabels(), names):
            tick.set_color("tab:red" if name in flagged else "black")
    scored = report[PREDICTIONS] or {}
    ratio, calibration, auc = (
        "-" if v is None else f"{v:.3f}"
        for v in (report[LABEL_RATE]["ratio"], scored.get(CALIBRATION), scored.get(AUC))
    )
    figure.suptitle(
        f"day {report[DAY]}: label rate {ratio}x the training window's, calibration {calibration}, "
        f"AUC {auc}; {len(report[WARNINGS])} thresholds crossed"
    )
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def main(argv: list[str] | None = None) -> dict:
    parser = CommandParser(prog="sparkrec monitor", description=__doc__.splitlines()[0])
    parser.add_argument("--bronze", required=True, help="Delta bronze table path")
    parser.add_argument("--workflow", required=True, help="the fitted workflow (holds features.json)")
    parser.add_argument("--day", required=True, type=int, help="the day to report on")
    parser.add_argument(
        "--training-days", type=day_list, help="e.g. 0,1 (default: the features description's train days)"
    )
    parser.add_argument("--predictions", help="Delta predictions table (sparkrec score): calibration and AUC")
    parser.add_argument(
        "--triton-metrics", metavar="URL", help="Triton's metrics endpoint, e.g. http://host:8002/metrics"
    )
    parser.add_argument(
        "--baseline-schema",
        help="the schema.json the model was trained with: its cardinalities bound new ids "
        "(default: the largest ids of the training window)",
    )
    parser.add_argument("--out", default=".", help="folder of monitor-day<N>.json and .png (default: .)")
    parser.add_argument(
        "--thresholds", default=str(THRESHOLDS_FILE), help="thresholds file (default: %(default)s)"
    )
    parser.add_argument("--profile", default="local", help="Spark profile from conf/spark/")
    args = parser.parse_args(argv)
    thresholds = Thresholds.load(args.thresholds)
    spark = build_session(args.profile, "sparkrec-monitor")
    baseline = None
    if args.baseline_schema:
        if not storage.exists(spark, args.baseline_schema):
            raise InputError(f"baseline schema {args.baseline_schema} does not exist: fix --baseline-schema")
        try:
            baseline = Schema.from_json(storage.read_text(spark, args.baseline_schema))
        except (KeyError, TypeError, ValueError) as error:  # JSON, but not a schema's (or no JSON)
            raise InputError(
                f"baseline schema {args.baseline_schema} is not a schema.json ({type(error).__name__}: "
                f"{error}): give the schema.json of the model's run or workflow"
            ) from None
    report = monitor(
        spark, args.bronze, args.workflow, args.day, args.training_days, args.predictions,
        args.triton_metrics, thresholds, baseline,
    )  # fmt: skip
    path = report_file(args.out, args.day)
    write_json(path, report)
    path.with_suffix(".png").write_bytes(report_png(report, thresholds))
    warnings = report[WARNINGS]
    print(f"monitor: day {args.day}: {path} and its .png; {len(warnings)} thresholds crossed", flush=True)
    for warning in warnings:
        print(f"{parser.prog}: warning: {warning['message']}", file=sys.stderr, flush=True)
    if warnings:
        sys.exit(EXIT_THRESHOLD_CROSSED)
    return report


if __name__ == "__main__":
    run_command(main, "sparkrec monitor")
