"""sparkrec retrain: a new day in, the production model grown, warm-started, checked and rolled out.

The vocabularies grow with the new day, the production model's tables grow with them and it trains on
from where it was; the candidate is checked against production, exported beside it, then promoted or
rolled back.

Steps, each recorded in <out>/retrain/day<D>/record.json as it finishes (a rerun after a failure skips
what is recorded and redoes the rest; every step also replaces rather than appends, so none duplicates
rows, versions or runs):
1. ingest day D from <out>/data/raw (replaces that day's rows);
2. extend the workflow's vocabularies with day D: workflow version k + 1 (version k stays loadable);
3. featurize day D with version k + 1 into the features table, except its held-out rows (a stable hash
   of each row's key picks `holdout_share` of them), which stay in bronze for step 5;
4. grow the production model's tables to version k + 1 and warm-start it on the window's days;
5. score candidate and production on the held-out rows, each through its own workflow version (AUC,
   logloss, calibration = mean prediction / click rate; the oracle's where the data is generated);
6. export the candidate as the next version of the served model with its own preprocessing and, with
   a server, serve it beside production with `candidate_share` of the traffic;
7. promote it when its AUC is at least production's + `promote_margin`, otherwise keep production and
   unload the candidate; the decision and its figures are recorded (and tracked in MLflow).

    sparkrec retrain --out artifacts/demo --day 2 --repository artifacts/demo/serving/repository
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tritonclient.http as triton_http
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from rec_plugin import storage
from rec_plugin.dataset import DEFAULT_DATASET, DELTA, load_dataset
from rec_plugin.errors import CommandParser, InputError, run_command
from rec_plugin.features_description import TEST_SPLIT, TRAIN_SPLIT, VALID_SPLIT, FeaturesDescription
from rec_plugin.json_files import write_json
from rec_plugin.schema import DAY, ROW_KEYS
from rec_plugin.workflow import Workflow, spark_type
from serving.export import export_run, require_live, trained_model
from serving.repository import DEFAULT_NAME, ensemble_model_name, exported_version, torchscript_file
from serving.rollout import Routing, push_candidate, rollback, routing_file, serve_production
from serving.rollout import promote as promote_version
from spark_jobs.featurize import featurize_days
from spark_jobs.generate import oracle_figures
from spark_jobs.ingest import files_not_ingested, ingest, ingested_dataset
from spark_jobs.layout import PipelineLayout, day_list
from spark_jobs.model_fit import fit
from spark_jobs.session import build_session
from spark_jobs.tracking import CANDIDATE, PRODUCTION, Tracker, workflow_inputs
from spark_jobs.train import count, feature_files
from training.data import FileSet
from training.distributed import BACKENDS
from training.evaluate import metrics, predict
from training.models import ModelConfig
from training.run_directory import RunDirectory

# The training settings a candidate takes from production (its optimizer states are of these).
INHERITED_SPEC = ("sparse_optimizer", "batch_size", "dense_lr", "sparse_lr", "precision")
# The record's step that names the raw files a retrain ingests where rows name their day.
NEW_FILES = "new_files"
# Marks NEW_FILES when its files held none of the day's rows: the rerun adds the files found since.
HELD_NO_DAY_ROWS = "held_no_day_rows"
HOLDOUT_SHARE = "holdout_share"  # recorded with the extend step: what the rerun must hold out again


@dataclass(frozen=True)
class Production:
    """What serves now: the run directory, its version in the model repository and the workflow
    version it was trained on. <out>/runs/production.json, written by `deploy` and `retrain` only."""

    run_dir: str
    version: int
    workflow_version: int

    @classmethod
    def load(cls, layout: PipelineLayout) -> Production:
        path = Path(layout.production)
        if not path.is_file():
            raise InputError(
                f"no production model recorded in {path}: deploy a trained run first (sparkrec retrain "
                f"--out {layout.out} --deploy RUN_DIR)"
            )
        return cls(**json.loads(path.read_text()))

    def save(self, layout: PipelineLayout) -> None:
        write_json(Path(layout.production), asdict(self))


@dataclass(frozen=True)
class RetrainSettings:
    """What a retrain of day `day` trains and decides with."""

    day: int
    window: tuple[int, ...] = ()  # the days the candidate trains on; () = the new day alone
    holdout_share: float = 0.1
    candidate_share: float = 0.5
    promote_margin: float = 0.0  # the candidate's AUC must reach production's + this
    backend: str = "single"
    workers: int = 1
    epochs: int = 1
    seed: int = 0
    dataset: str | None = None  # a bundled name or a .json path; None: the one bronze was ingested as
    name: str = DEFAULT_NAME
    ab_seconds: float = 0.0  # how long the split serves before the decision

    def training_days(self) -> list[int]:
        return sorted({*self.window, self.day})


@dataclass
class RetrainRecord:
    """The steps a retrain of one day has finished and what each gave: reruns skip them."""

    path: Path
    steps: dict[str, dict] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> RetrainRecord:
        return cls(path, json.loads(path.read_text()) if path.is_file() else {})

    def done(self, step: str) -> dict | None:
        return self.steps.get(step)

    def finish(self, step: str, result: dict) -> dict:
        self.steps[step] = result
        write_json(self.path, self.steps)
        print(f"retrain: {step} done: {json.dumps(shown(result))}", flush=True)
        return result


# In layout.retrain(day): the steps finished, each with its result.
RECORD_FILE = "record.json"


def shown(value: Any) -> Any:
    """`value` as printed: a list of more than 10 items (a run's losses) as its length, which the
    record keeps whole."""
    if isinstance(value, dict):
        return {k: shown(v) for k, v in value.items()}
    if isinstance(value, list):
        return f"({len(value)} values in {RECORD_FILE})" if len(value) > 10 else value
    return value


def held_out(rows: DataFrame, share: float) -> DataFrame:
    """The rows a retrain holds out of training, by a stable hash of the row's key (the same rows on
    every rerun, whatever the partitioning)."""
    bucket = F.abs(F.xxhash64(*ROW_KEYS)) % 10_000
    return rows.where(bucket < int(round(share * 10_000)))


def ingest_day(
    spark: SparkSession, layout: PipelineLayout, day: int, dataset: str, record: RetrainRecord
) -> dict:
    """Ingests what day `day` brings, as the dataset's source says which rows a day holds: the files
    under its day_<d> folders; where rows name their day, the raw files not ingested yet (chosen once
    and recorded, so that a rerun after a kill ingests the same files again); the Delta table it reads
    (the day's rows and those without a day, replacing those of earlier versions)."""
    definition = load_dataset(dataset)
    tables = (layout.raw, layout.bronze, layout.rejects)
    if definition.format == DELTA:  # refused before any write while the table lacks the day
        return ingest(spark, None, layout.bronze, layout.rejects, [day], dataset=dataset)
    if definition.day_column is None:
        return ingest(spark, *tables, [day], dataset=dataset)
    chosen = record.done(NEW_FILES)
    if chosen is None or chosen.get(HELD_NO_DAY_ROWS):
        new = files_not_ingested(spark, layout.raw, dataset, [layout.bronze, layout.rejects])
        if chosen is None and not new and not _day_rows(spark, layout, day).isEmpty():
            return {"lines_read": 0, "accepted": 0, "rejected": 0}  # an earlier retrain's files held it
        # Files chosen before that held none of the day's rows are read again (corrected in place),
        # those still there: one removed or renamed since is the mistake undone.
        earlier = []
        if chosen is not None:
            present = set(storage.list_files_recursive(spark, layout.raw))
            earlier = [f for f in chosen["files"] if f in present]
        files = earlier + [f for f in new if f not in earlier]
        if not files:  # not recorded: a rerun once the files are there finds them
            raise InputError(
                f"every raw file under {layout.raw} is ingested already: add day {day}'s files there"
            )
        chosen = record.finish(NEW_FILES, {"files": files})
    return ingest(spark, *tables, dataset=dataset, files=chosen["files"])


def _day_rows(spark: SparkSession, layout: PipelineLayout, day: int) -> DataFrame:
    return spark.read.format("delta").load(layout.bronze).where(F.col(DAY) == day)


def ingested_day_rows(
    spark: SparkSession, layout: PipelineLayout, day: int, record: RetrainRecord
) -> DataFrame:
    """Bronze's rows of day `day` once its ingest ran; none is refused before the ingest is recorded,
    and the files chosen for it are marked so that the rerun reads them again (corrected in place)
    with the files added since."""
    rows = _day_rows(spark, layout, day)
    if rows.isEmpty():
        chosen = record.done(NEW_FILES)
        if chosen is not None:
            record.finish(NEW_FILES, {**chosen, HELD_NO_DAY_ROWS: True})
        raise InputError(f"bronze table {layout.bronze} holds no rows of day {day} after its ingest")
    return rows


def extend_workflow(spark: SparkSession, layout: PipelineLayout, day: int, rows: DataFrame) -> int:
    """The workflow version that knows day `day`'s values (from `rows`: the day's rows the candidate
    trains on): extended once per day (a rerun finds it)."""
    source = {"day": day}
    found = Workflow.version_extended_by(layout.workflow, source, spark)
    if found is not None:
        return found
    Workflow.load(layout.workflow, spark).extend(rows, layout.workflow, source)
    return Workflow.versions(layout.workflow, spark)[-1]


def training_files(spark: SparkSession, layout: PipelineLayout, days: list[int]) -> FileSet:
    described = FeaturesDescription.load(spark, layout.workflow)
    return feature_files(spark, described.table, described.version, days)


def score_rows(spark: SparkSession, run_dir: str, workflow: str, rows: DataFrame, staging: str) -> dict:
    """The run's metrics on raw `rows`, featurized by the workflow version the run was trained on
    (written as parquet under `staging`, read by the training loader), with its calibration."""
    run = RunDirectory(storage.qualified(spark, run_dir))
    schema = run.schema()
    features = Workflow.load(workflow, spark, pinned_to=schema).transform(rows)
    typed = [F.col(c.name).cast(spark_type(c.dtype)) for c in schema]
    features.select(*typed).write.mode("overwrite").parquet(staging)
    written = spark.read.parquet(staging)
    files = FileSet(tuple(sorted(written.inputFiles())), written.count())
    labels, probabilities = predict(trained_model(run.uri), files, schema)
    return {**metrics(labels, probabilities), "calibration": _calibration(labels, probabilities)}


def _calibration(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """Mean predicted probability over the observed click rate (1.0 is calibrated)."""
    return round(float(probabilities.mean()) / max(float(labels.mean()), 1e-12), 4)


def oracle_on_rows(spark: SparkSession, layout: PipelineLayout, rows: DataFrame) -> dict:
    """The generator's planted model on the same rows, where the data is generated: the oracle folder
    holds its Delta table (a user's own folder of that name is left alone, said in a line)."""
    if not storage.exists(spark, layout.oracle):
        return {}
    found = oracle_figures(spark, layout.oracle, rows, "retrain")
    return {k: found[k] for k in ("oracle_auc", "oracle_logloss")} if found else {}


def retrain(
    spark: SparkSession,
    layout: PipelineLayout,
    repository: Path,
    settings: RetrainSettings,
    server_url: str | None = None,
) -> dict:
    """Runs (or finishes) the retrain of `settings.day`; returns its record's figures and decision."""
    day = settings.day
    folder = layout.retrain(day)
    record = RetrainRecord.load(folder / RECORD_FILE)
    described = FeaturesDescription.load(spark, layout.workflow)
    trained_days = described.days(TRAIN_SPLIT)
    judging = [split for split in (VALID_SPLIT, TEST_SPLIT) if day in described.days(split)]
    if not record.steps and judging:  # a rolling retrain trains on the day it was judged on yesterday
        print(
            f"retrain: warning: day {day} is a {judging[0]} day of {layout.features} (featurize's): its "
            f"features become training rows, and a later sparkrec train has one {judging[0]} day fewer",
            file=sys.stderr,
            flush=True,
        )
    if not record.steps and day in trained_days:
        # Its counts would be merged into the vocabularies twice, and production trained on the rows
        # that would judge it.
        raise InputError(
            f"day {day} is a training day of {layout.features} already (featurize's or an earlier "
            "retrain's): retrain takes a day the models have not trained on"
        )
    absent = sorted(set(settings.window) - {day} - set(trained_days))
    if absent:  # the loader would train on the days it finds, and the record would name the others
        raise InputError(
            f"--window day(s) {', '.join(map(str, absent))} are not training days of {layout.features} "
            f"(it holds {', '.join(map(str, sorted(trained_days)))}): featurize or retrain them first"
        )
    began = record.done("extend")
    if began and began.get(HOLDOUT_SHARE, settings.holdout_share) != settings.holdout_share:
        raise InputError(
            f"the retrain of day {day} began with --holdout-share {began[HOLDOUT_SHARE]}: its vocabularies "
            f"and features leave those rows out, so rerun with it or remove {folder}"
        )
    deployed = asdict(Production.load(layout))  # nothing deployed is refused before any work
    dataset = settings.dataset or ingested_dataset(spark, layout.bronze) or DEFAULT_DATASET
    ingested = None if record.done("ingest") else ingest_day(spark, layout, day, dataset, record)
    rows = ingested_day_rows(spark, layout, day, record)
    # Production as it was when this retrain had its day's rows, whatever a failed earlier attempt
    # promoted (a day without rows yet records no start, only the files chosen where rows name their
    # day).
    production = Production(**(record.done("start") or record.finish("start", deployed)))
    if ingested is not None:
        record.finish("ingest", {k: ingested[k] for k in ("lines_read", "accepted", "rejected")})
    holdout = held_out(rows, settings.holdout_share)
    if not record.done("extend"):
        # The held-out rows stay out of the vocabularies too: a value seen only there would get an
        # untrained row in the candidate.
        trained_rows = rows.join(holdout.select(*ROW_KEYS), ROW_KEYS, "left_anti")
        extended = extend_workflow(spark, layout, day, trained_rows)
        record.finish("extend", {"workflow_version": extended, HOLDOUT_SHARE: settings.holdout_share})
    if not record.done("featurize"):
        _require_scorable(holdout, settings, load_dataset(dataset).label)
        written = featurize_days(spark, layout.bronze, layout.workflow, [day], TRAIN_SPLIT, exclude=holdout)
        record.finish("featurize", {**written, "held_out_rows": holdout.count()})
    candidate = storage.qualified(spark, layout.run(f"candidate-day{day}"))
    if not record.done("train"):
        files = training_files(spark, layout, settings.training_days())
        _, summary = fit(
            spark, Workflow.load_schema(layout.workflow, spark), files, candidate, _model_name(production),
            settings.backend, settings.workers, epochs=settings.epochs, seed=settings.seed,
            warm_start=production.run_dir, resume=True, **production_settings(production.run_dir),
            anew=f"rerun retrain with the earlier attempt's --backend and --epochs, or remove {candidate}",
        )  # fmt: skip
        trained = {"run_dir": candidate, "days": settings.training_days(), "rows": files.rows}
        record.finish("train", {**trained, "seconds": summary["seconds"], "losses": summary["losses"]})
    if not record.done("evaluate"):
        scores = {
            role: score_rows(spark, run_dir, layout.workflow, holdout, str(folder / f"holdout-{role}"))
            for role, run_dir in ((PRODUCTION, production.run_dir), (CANDIDATE, candidate))
        }
        evaluated = {**scores, **oracle_on_rows(spark, layout, holdout)}
        RunDirectory.at(candidate).write_metrics({"day": day, **evaluated})  # what tracking reads
        record.finish("evaluate", evaluated)
    if not record.done("export"):
        record.finish(
            "export", {"version": _export_once(spark, layout.workflow, repository, settings.name, candidate)}
        )
    version = record.steps["export"]["version"]
    if not record.done("track"):
        record.finish("track", _track(spark, layout, settings.name, record, repository, version))
    evaluated = record.steps["evaluate"]
    promote = evaluated[CANDIDATE]["auc"] >= evaluated[PRODUCTION]["auc"] + settings.promote_margin
    if server_url is not None and not record.done("push"):
        _push(server_url, repository, settings, production.version, version)
        record.finish("push", {"candidate": version, "share": settings.candidate_share})
    if not record.done("decide"):
        if server_url is not None:
            _decide(server_url, repository, settings.name, version, promote)
        registered = record.steps["track"].get("registered_version")  # None: not tracked
        if promote:
            schema = RunDirectory.at(candidate).schema()
            Production(candidate, version, Workflow.version_of(layout.workflow, schema, spark)).save(layout)
        if registered is not None:
            tracker = Tracker.configured()
            if promote:
                tracker.promote(settings.name, registered)
            else:
                tracker.drop_candidate(settings.name, registered)
        kept = version if promote else production.version
        record.finish("decide", {"promoted": promote, "production_version": kept})
    return record.steps


def _export_once(spark: SparkSession, workflow: str, repository: Path, name: str, run_dir: str) -> int:
    """The candidate's version in the repository: exported once (a version folder names the run it
    holds, so a rerun after a failed step, or after a kill before the step was recorded, finds it
    instead of writing another version)."""
    found = exported_version(repository, name, run_dir)
    return found or export_run(run_dir, repository, name, spark=spark, workflow=workflow)


def _track(
    spark: SparkSession,
    layout: PipelineLayout,
    name: str,
    record: RetrainRecord,
    repository: Path,
    version: int,
) -> dict:
    """The candidate's run and model version in MLflow (the `candidate` alias); {} without MLflow."""
    run_dir, losses = record.steps["train"]["run_dir"], record.steps["train"]["losses"]
    return _register(spark, layout, name, run_dir, losses, repository, version, CANDIDATE)


def _register(
    spark: SparkSession,
    layout: PipelineLayout,
    name: str,
    run_dir: str,
    losses: list[float],
    repository: Path,
    version: int,
    alias: str,
) -> dict:
    """A run tracked in MLflow (found, not duplicated, when training tracked it already: keyed by the
    run and its report, so a rerun's new candidate in the same folder is a new run) and its exported
    model registered under `alias`; {} without MLflow."""
    tracker = Tracker.configured()
    if not tracker.enabled:
        return {}
    run_id = tracker.track_training(run_dir, losses, workflow_inputs(spark, layout.workflow))
    if run_id is None:
        return {}
    model_file = torchscript_file(repository, ensemble_model_name(name), version)
    registered = tracker.register_model(run_id, name, model_file, alias)
    return {"mlflow_run_id": run_id, "registered_version": registered}


def _push(
    server_url: str, repository: Path, settings: RetrainSettings, production: int, candidate: int
) -> None:
    """Serves the candidate beside production with its share of the request keys for `ab_seconds` (a
    rerun finds it pushed); production is served alone first if it was deployed without a server."""
    client = triton_http.InferenceServerClient(server_url)
    try:
        if routing_file(repository, settings.name).is_file():
            routing = Routing.load(repository, settings.name)
        else:
            routing = serve_production(client, repository, settings.name, production)
        if routing.candidate not in (None, candidate):
            raise InputError(
                f"{settings.name} is trying candidate {routing.candidate} already (another retrain's): "
                "promote or roll it back first (serving/rollout.py)"
            )
        if routing.production != production:  # a retrain decided without --server moved the record
            raise InputError(
                f"the server routes {settings.name} version {routing.production} as production, the "
                f"pipeline's production is version {production}: serve that first (sparkrec retrain "
                "--deploy <its run> --server URL)"
            )
        push_candidate(client, repository, settings.name, candidate, settings.candidate_share)
        time.sleep(settings.ab_seconds)
    finally:
        client.close()


def _decide(server_url: str, repository: Path, name: str, candidate: int, promote: bool) -> None:
    """Promotes or rolls back the pushed candidate (nothing to do when an earlier attempt did)."""
    client = triton_http.InferenceServerClient(server_url)
    try:
        if Routing.load(repository, name).candidate == candidate:
            (promote_version if promote else rollback)(client, repository, name)
    finally:
        client.close()


def production_settings(run_dir: str) -> dict:
    """What the candidate inherits from production so that it can grow from it: the model's sizes and
    hyperparameters and the training settings its optimizer states belong to."""
    run = RunDirectory.at(run_dir)
    config, spec = run.model_config(), run.spec()
    dims = {table.embedding_dim for table in config.tables}
    inherited = {name: getattr(config, name) for name in ModelConfig.HYPERPARAMETERS}
    inherited.update({name: spec[name] for name in INHERITED_SPEC if spec.get(name) is not None})
    return {**inherited, **({"embedding_dim": dims.pop()} if len(dims) == 1 else {})}


def _require_scorable(holdout: DataFrame, settings: RetrainSettings, label: str) -> None:
    """The held-out rows can rank the two models: both of `label`'s values among them."""
    labels = {row[0] for row in holdout.select(F.col(label).cast("int")).distinct().collect()}
    if labels != {0, 1}:
        raise InputError(
            f"day {settings.day}'s held-out rows ({settings.holdout_share:.0%} of the day) hold labels "
            f"{sorted(labels)}: both clicks and non-clicks are needed to compare the models; raise "
            "--holdout-share or retrain a larger day"
        )


def _model_name(production: Production) -> str:
    return RunDirectory.at(production.run_dir).model_config().name


def deploy(
    spark: SparkSession,
    layout: PipelineLayout,
    run_dir: str,
    repository: Path,
    name: str,
    server_url: str | None,
) -> Production:
    """Makes a trained run production: exported once with its workflow version's preprocessing,
    registered in MLflow under the `production` alias, served alone when a server is given (all traffic
    routed to it), and recorded for the next retrain."""
    run_dir = storage.qualified(spark, run_dir)
    version = _export_once(spark, layout.workflow, repository, name, run_dir)
    schema = RunDirectory.at(run_dir).schema()
    production = Production(run_dir, version, Workflow.version_of(layout.workflow, schema, spark))
    if server_url is not None:
        client = triton_http.InferenceServerClient(server_url)
        try:
            serve_production(client, repository, name, version)
        finally:
            client.close()
    production.save(layout)
    _register_deployed(spark, layout, name, run_dir, repository, version)
    return production


def _register_deployed(
    spark: SparkSession, layout: PipelineLayout, name: str, run_dir: str, repository: Path, version: int
) -> None:
    """MLflow's `production` alias on the deployed run's model, once it is production: the run `train`
    tracked is found (a run it did not track goes in without its loss series, its inputs the workflow's
    tables as they are now). Tracking is a copy of the record, so its failure is a warning."""
    try:
        _register(spark, layout, name, run_dir, [], repository, version, PRODUCTION)
    except Exception as error:  # noqa: BLE001 - production.json is the record; MLflow its copy
        print(f"deploy: warning: the production model was not registered in MLflow: {error}", file=sys.stderr)


def main(argv: list[str] | None = None) -> dict:
    parser = CommandParser(prog="sparkrec retrain", description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path, help="the pipeline's folder (as `sparkrec demo`)")
    parser.add_argument("--day", type=int, help="the new day, under <out>/data/raw")
    parser.add_argument(
        "--deploy", metavar="RUN_DIR", help="instead of a retrain: make this trained run production"
    )
    parser.add_argument("--window", type=day_list, default=[], help="more days to train on (default: none)")
    parser.add_argument(
        "--repository", type=Path, help="Triton model repository (default: <out>/serving/repository)"
    )
    parser.add_argument(
        "--server", metavar="URL", help="a running Triton's HTTP address: roll the candidate out"
    )
    parser.add_argument("--name", default=RetrainSettings.name, help="the served model's name")
    parser.add_argument("--candidate-share", type=float, default=RetrainSettings.candidate_share)
    parser.add_argument(
        "--ab-seconds", type=float, default=RetrainSettings.ab_seconds, help="split before deciding"
    )
    parser.add_argument(
        "--promote-margin", type=float, default=RetrainSettings.promote_margin,
        help="promote when the candidate's held-out AUC >= production's + this",
    )  # fmt: skip
    parser.add_argument("--holdout-share", type=float, default=RetrainSettings.holdout_share)
    parser.add_argument("--backend", choices=BACKENDS, default=RetrainSettings.backend)
    parser.add_argument("--workers", type=count, default=RetrainSettings.workers)
    parser.add_argument("--epochs", type=count, default=RetrainSettings.epochs)
    parser.add_argument(
        "--dataset",
        help="the raw days' dataset: a bundled name or a definition's .json path (default: the one "
        "bronze was ingested as)",
    )
    parser.add_argument("--profile", default="local", help="Spark profile from conf/spark/")
    args = parser.parse_args(argv)
    if (args.day is None) == (args.deploy is None):
        parser.error("give --day (retrain a new day) or --deploy RUN_DIR (record the first production)")
    if not 0 < args.holdout_share < 1 or not 0 <= args.candidate_share <= 1:
        parser.error("--holdout-share is between 0 and 1 (excluded), --candidate-share between 0 and 1")
    if not args.ab_seconds >= 0:
        parser.error(
            f"--ab-seconds is how long the split runs before the decision: 0 or more, not {args.ab_seconds}"
        )
    if args.server:
        require_live(args.server)
    layout = PipelineLayout(args.out.resolve())
    repository = (args.repository or Path(layout.serving) / "repository").resolve()
    spark = build_session(args.profile, "sparkrec-retrain")
    if args.deploy:
        report = asdict(deploy(spark, layout, args.deploy, repository, args.name, args.server))
    else:
        settings = RetrainSettings(
            args.day, tuple(args.window), args.holdout_share, args.candidate_share, args.promote_margin,
            args.backend, args.workers, args.epochs, dataset=args.dataset, name=args.name,
            ab_seconds=args.ab_seconds,
        )  # fmt: skip
        report = retrain(spark, layout, repository, settings, args.server)
    print(json.dumps({"retrain": shown(report)}, indent=2, default=str))
    return report


if __name__ == "__main__":
    run_command(main, "sparkrec retrain")
