"""sparkrec featurize: bronze Delta -> Delta features + the fitted workflow.

Fits the dataset definition's default workflow (conf/datasets/<name>.json; by default the dataset that
ingest recorded in bronze's commits) on the training days of the bronze table read at a pinned Delta
version (the latest by default; recorded, so a rerun at that version reproduces the output exactly),
transforms the train, validation and test days, and writes what training
consumes: a Delta table (day, split, every output column of the workflow typed by its schema, and each
row's source_file + line_number so that any row joins back to bronze and the generator's oracle)
partitioned by day in files of at most `rows_per_file` rows (the training loader shards and shuffles by
file), the saved workflow (workflow.json, schema.json, vocabulary tables) and the features description
(rec_plugin/features_description.py).

    spark-submit spark_jobs/featurize.py --bronze lake/bronze --features lake/features \\
        --workflow lake/workflow --train-days 0,1 --valid-days 2 --test-days 3
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from rec_plugin import storage
from rec_plugin.dataset import DEFAULT_DATASET, DatasetDefinition, load_dataset
from rec_plugin.errors import CommandParser, InputError, run_command
from rec_plugin.features_description import SPLIT, TEST_SPLIT, TRAIN_SPLIT, VALID_SPLIT, FeaturesDescription
from rec_plugin.gpu import gpu_plan, rapids_available
from rec_plugin.schema import DAY, LINE_NUMBER, ROW_KEY_STATISTICS, ROW_KEYS, SOURCE_FILE, rejects_schema
from rec_plugin.workflow import Workflow, spark_type
from spark_jobs.ingest import ingested_dataset
from spark_jobs.layout import day_list
from spark_jobs.session import build_session


def gpu_eligibility(output: DataFrame, fit_queries: Callable[[], list[DataFrame]]) -> float | None:
    """The share of the fit's and the output's plan operators that the RAPIDS Accelerator would run on
    a GPU; None without its jar, and then the fit's plans are not built (~1 s of calls to the JVM)."""
    if not rapids_available(output):
        return None
    reports = [gpu_plan(frame) for frame in [*fit_queries(), output]]
    on = sum(len(r.on_gpu) for r in reports)
    total = on + sum(len(r.not_on_gpu) for r in reports)
    return round(on / total, 4) if total else 1.0


def _bronze_dataset(
    spark: SparkSession, bronze: str, version: int, source: DataFrame, dataset: str | None
) -> DatasetDefinition:
    """`dataset`, else the one bronze was ingested as; refused in one line when bronze lacks its columns
    (another dataset's table, or ingest's rejects table)."""
    if source.columns == rejects_schema().fieldNames():
        raise InputError(f"{bronze} is ingest's rejects table (the rows it refused): give the bronze table")
    definition = load_dataset(dataset or ingested_dataset(spark, bronze, version) or DEFAULT_DATASET)
    missing = [f.name for f in definition.bronze_schema().fields if f.name not in source.columns]
    if missing:
        try:
            recorded = ingested_dataset(spark, bronze, version)
        except InputError:  # a definition file since removed: the missing columns say enough
            recorded = None
        ingested = f" (it was ingested as dataset {recorded!r})" if recorded else ""
        raise InputError(
            f"bronze table {bronze} lacks dataset {definition.name}'s columns {missing[:3]}"
            f"{' ...' if len(missing) > 3 else ''}{ingested}: give the --dataset it was ingested with"
        )
    return definition


def _check_splits(splits: dict[str, list[int]], days_present: set[str], source: str) -> None:
    """Every named day is in the source, and no day is in two splits: refused before any work."""
    named = [d for days in splits.values() for d in days]
    if not splits.get(TRAIN_SPLIT):
        raise InputError("no training days: give --train-days, e.g. 0,1")
    doubled = sorted({d for d in named if named.count(d) > 1})
    if doubled:
        raise InputError(f"days {doubled} are in more than one of --train-days, --valid-days, --test-days")
    absent = sorted(d for d in named if str(d) not in days_present)
    if absent:
        held = ",".join(sorted(days_present, key=int)) or "none"
        raise InputError(f"days {absent} are not in {source} (it holds days {held})")


def _check_features_path(spark: SparkSession, features: str, bronze: str) -> None:
    """The features table is replaced on every run: never let that hit the bronze table or another
    table that is not a features table."""
    if storage.qualified(spark, features) == storage.qualified(spark, bronze):
        raise InputError(f"--features {features} is the bronze table: give the features table its own path")
    if storage.holds_table(spark, features, "features table"):
        if SPLIT not in spark.read.format("delta").load(features).columns:
            raise InputError(
                f"{features} holds a Delta table that is not a features table: choose another path"
            )


def _progress(step: str, started: float) -> None:
    print(f"featurize: {step} ({time.perf_counter() - started:.1f} s)", flush=True)


def _check_workflow_path(spark: SparkSession, workflow_path: str) -> None:
    """A fit starts a workflow folder's versions again: one that a retrain extended (the version a
    served model may use, and the features of its days) is never replaced silently."""
    kept = Workflow.versions(workflow_path, spark)
    if len(kept) > 1:
        raise InputError(
            f"workflow folder {workflow_path} holds versions {kept} (extended by retrain): a fit would "
            "replace them all and the features of the days they added; give another --workflow and "
            "--features, or remove both to start over"
        )


def _fitted_already(
    spark: SparkSession,
    workflow_path: str,
    graph: Workflow,
    bronze: str,
    bronze_version: int,
    train: list[int],
) -> bool:
    """The folder holds `graph` fitted on these training rows already. A fit is deterministic: fitting
    again would write the same vocabularies as new Delta versions, which no model trained on the
    folder's pins would find (export and recommend would refuse them all)."""
    if Workflow.saved_graph(workflow_path, spark) != graph.graph():
        return False
    try:
        described = FeaturesDescription.load(spark, workflow_path)
        Workflow.load_schema(workflow_path, spark)
    except InputError:  # a fit that stopped before its features were written
        return False
    fitted_on = (described.bronze_table, described.bronze_version, sorted(described.days(TRAIN_SPLIT)))
    return fitted_on == (bronze, bronze_version, sorted(train))


def _features_frame(
    workflow: Workflow, rows: DataFrame, split: Column, fitted_rows: Column | None
) -> DataFrame:
    """The features table's rows: day, split, every output column typed by the schema, row keys."""
    transformed = workflow.transform(rows, keep=tuple(ROW_KEYS), fitted_rows=fitted_rows)
    return transformed.select(
        DAY,
        split.alias(SPLIT),
        *[F.col(c.name).cast(spark_type(c.dtype)) for c in workflow.schema],
        SOURCE_FILE,
        LINE_NUMBER,
    )


def _lineage(workflow: Workflow, bronze: str, bronze_version: int, splits: dict[str, list[int]]) -> dict:
    """What a features commit records: its source and the schema it was written with (vocabularies
    pinned to their versions)."""
    return {
        "bronze_table": bronze,
        "bronze_version": bronze_version,
        "splits": splits,
        "schema": json.loads(workflow.schema.to_json()),
    }


def _write_features(
    output: DataFrame, features: str, lineage: dict, rows_per_file: int, replace_days: list[int] | None = None
) -> None:
    """Overwrites the table, or with `replace_days` atomically replaces only those days' rows; a new
    table keeps statistics on its row keys only."""
    writer = output.write.format("delta").mode("overwrite").options(**ROW_KEY_STATISTICS)
    if replace_days is None:
        writer = writer.option("overwriteSchema", "true")
    else:
        writer = writer.option("replaceWhere", f"{DAY} IN ({', '.join(map(str, replace_days))})")
    writer = writer.option("userMetadata", json.dumps(lineage)).option("maxRecordsPerFile", rows_per_file)
    writer.partitionBy(DAY).save(features)


def featurize(
    spark: SparkSession,
    bronze: str,
    features: str,
    workflow_path: str,
    splits: dict[str, list[int]],
    bronze_version: int | None = None,
    freq_threshold: int | None = None,
    rows_per_file: int = 50_000,
    dataset: str | None = None,
) -> dict:
    """Fits on splits['train'], writes features for every split's days; returns the report section.
    `dataset`: a bundled name or .json path (None: the one bronze was ingested as)."""
    started = time.perf_counter()
    bronze_version = storage.delta_version(spark, bronze, "bronze table", bronze_version)
    source = spark.read.format("delta").option("versionAsOf", bronze_version).load(bronze)
    # Another kind of table (rejects) is named for what it lacks before its days are looked at.
    definition = _bronze_dataset(spark, bronze, bronze_version, source, dataset)
    _check_splits(splits, storage.partition_values(source, DAY), f"bronze table {bronze}@v{bronze_version}")
    _check_features_path(spark, features, bronze)
    _check_workflow_path(spark, workflow_path)
    training_rows = source.where(F.col(DAY).isin(splits[TRAIN_SPLIT]))
    graph = definition.default_workflow(freq_threshold=freq_threshold)
    # A new workflow folder goes with a failure (or a Ctrl-C) as a new features table does.
    with storage.new_table_removed_on_failure(spark, workflow_path):
        if _fitted_already(spark, workflow_path, graph, bronze, bronze_version, splits[TRAIN_SPLIT]):
            _progress(f"workflow {workflow_path} is this graph fitted on these rows already: kept", started)
        else:
            fitted = graph.fit(training_rows)
            fitted.save(workflow_path)
            _progress(f"workflow fitted on days {splits['train']} and saved to {workflow_path}", started)
            # Transform from the saved vocabularies (Delta scans, GPU-eligible), not fit's in-memory
            # cache: release what fit cached, and nothing else of a shared session's cache.
            fitted.release()
        workflow = Workflow.load(workflow_path, spark)
        split_of_day = F.create_map(
            *[F.lit(x) for split, days in splits.items() for d in days for x in (d, split)]
        )
        wanted = source.where(F.col(DAY).isin([d for days in splits.values() for d in days]))
        output = _features_frame(
            workflow, wanted, split_of_day[F.col(DAY)], F.col(DAY).isin(splits[TRAIN_SPLIT])
        )
        lineage = _lineage(workflow, bronze, bronze_version, splits)
        with storage.new_table_removed_on_failure(spark, features):
            _write_features(output, features, lineage, rows_per_file)
            elapsed = time.perf_counter() - started
            _progress(f"features written to {features}", started)
            rows_out = spark.read.format("delta").load(features).count()
            features_version = storage.delta_version(spark, features, "features table")
            FeaturesDescription(features, features_version, bronze, bronze_version, splits, rows_out).save(
                spark, workflow_path
            )
    return {
        "rows_out": rows_out,
        "rows_per_s": round(rows_out / elapsed, 1),
        "gpu_eligible_fraction": gpu_eligibility(output, lambda: workflow.fit_queries(training_rows)),
        "bronze_version": bronze_version,
        "features_table": features,
        "features_version": features_version,
    }


def featurize_days(
    spark: SparkSession,
    bronze: str,
    workflow_path: str,
    days: list[int],
    split: str,
    bronze_version: int | None = None,
    rows_per_file: int = 50_000,
    exclude: DataFrame | None = None,
) -> dict:
    """Adds (or replaces) `days` in the features table of the workflow's features description, as
    rows of `split`, transformed by the workflow's latest version without refitting it (a retrain
    extends the vocabularies first: sparkrec retrain), leaving out the rows of `exclude` (bronze rows
    held out, matched by their keys); the other days stay as written, their ids valid in the new
    version (ids are stable). Rerunning replaces the same days: no duplicate rows."""
    started = time.perf_counter()
    described = FeaturesDescription.load(spark, workflow_path)
    bronze_version = storage.delta_version(spark, bronze, "bronze table", bronze_version)
    source = spark.read.format("delta").option("versionAsOf", bronze_version).load(bronze)
    _check_splits({TRAIN_SPLIT: [*days]}, storage.partition_values(source, DAY), f"bronze table {bronze}")
    workflow = Workflow.load(workflow_path, spark)
    rows = source.where(F.col(DAY).isin(days))
    if exclude is not None:
        rows = rows.join(exclude.select(*ROW_KEYS), ROW_KEYS, "left_anti")
    output = _features_frame(workflow, rows, F.lit(split), None)
    splits = {name: [d for d in held if d not in days] for name, held in described.splits.items()}
    splits[split] = sorted({*splits.get(split, []), *days})
    lineage = _lineage(workflow, bronze, bronze_version, splits)
    _write_features(output, described.table, lineage, rows_per_file, replace_days=days)
    features_version = storage.delta_version(spark, described.table, "features table")
    counted = (
        spark.read.format("delta")
        .load(described.table)
        .agg(F.count("*").alias("table_rows"), F.count_if(F.col(DAY).isin(days)).alias("written"))
    )
    table_rows, written = counted.first()  # one pass
    FeaturesDescription(described.table, features_version, bronze, bronze_version, splits, table_rows).save(
        spark, workflow_path
    )
    _progress(f"days {days} written to {described.table} as {written:,} {split} rows", started)
    return {
        "days": days,
        "split": split,
        "features_version": features_version,
        "rows_written": written,
        "table_rows": table_rows,
    }


def main(argv: list[str] | None = None) -> dict:
    parser = CommandParser(prog="sparkrec featurize", description=__doc__.splitlines()[0])
    parser.add_argument("--bronze", required=True, help="Delta bronze table path")
    parser.add_argument("--bronze-version", type=int, help="Delta version to read (default: latest)")
    parser.add_argument("--features", required=True, help="Delta features table path")
    parser.add_argument("--workflow", required=True, help="where to save the fitted workflow")
    parser.add_argument("--train-days", type=day_list, required=True, help="e.g. 0,1")
    parser.add_argument("--valid-days", type=day_list, default=[], help="e.g. 2 (default: none)")
    parser.add_argument("--test-days", type=day_list, default=[], help="e.g. 3 (default: none)")
    parser.add_argument(
        "--dataset",
        help="dataset definition: a bundled name or a .json path (default: the one bronze was ingested as)",
    )
    parser.add_argument(
        "--freq-threshold", type=int, help="rarer values share id 0 (default: the dataset's workflow's)"
    )
    parser.add_argument("--rows-per-file", type=int, default=50_000, help="largest features file")
    parser.add_argument("--profile", default="local", help="Spark profile from conf/spark/")
    args = parser.parse_args(argv)
    spark = build_session(args.profile, "sparkrec-featurize")
    splits = {TRAIN_SPLIT: args.train_days, VALID_SPLIT: args.valid_days, TEST_SPLIT: args.test_days}
    report = featurize(
        spark,
        args.bronze,
        args.features,
        args.workflow,
        splits,
        args.bronze_version,
        args.freq_threshold,
        args.rows_per_file,
        args.dataset,
    )
    print(json.dumps({"featurize": report}, indent=2))
    return report


if __name__ == "__main__":
    run_command(main, "sparkrec featurize")
