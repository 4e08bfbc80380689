"""The retraining story of `sparkrec demo --retrain`: a DLRM trained on days 0-1 serves from Triton; day 2
arrives and `retrain` grows, warm-starts, checks and rolls the candidate out while a client sends day-3
requests without pause; on day 3 the stale model, the warm-started candidate and a model trained from
scratch on days 0-2 are scored against the oracle, and the drift monitor reads day 3.

Its data raises the generator's drift (RETRAIN_NEW_VALUE_RATE new values a day, 0.005 by default) so
that a model that is not retrained measurably loses what it never saw; `make demo`'s data is unchanged.
"""

from __future__ import annotations

import shutil
import threading
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd
import tritonclient.http as triton_http
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from rec_plugin import storage
from rec_plugin.features_description import TRAIN_SPLIT
from rec_plugin.json_files import write_json
from rec_plugin.schema import DAY, LINE_NUMBER, SOURCE_FILE, Tags
from rec_plugin.workflow import Workflow
from serving.repository import DEFAULT_NAME
from serving.rollout import Router
from serving.server import TritonServer
from spark_jobs.featurize import featurize
from spark_jobs.generate import GeneratorConfig, generate
from spark_jobs.ingest import ingest
from spark_jobs.layout import PipelineLayout
from spark_jobs.model_fit import fit
from spark_jobs.monitor import WARNINGS, Thresholds, monitor, report_file, report_png
from spark_jobs.retrain import (
    RetrainSettings,
    deploy,
    oracle_on_rows,
    retrain,
    score_rows,
    training_files,
)
from spark_jobs.train import train
from training import plots

RETRAIN_NEW_VALUE_RATE = 0.2
NAME = DEFAULT_NAME
TRAIN_DAYS, NEW_DAY, NEXT_DAY = [0, 1], 2, 3
# The client's requests: rows of day 3, a few at a time, each keyed by its row (the A/B split's unit).
REQUEST_ROWS = 2048
ROWS_PER_REQUEST = 16
# How long the candidate takes its share of the traffic before the decision.
AB_SECONDS = 10.0
# A steady stream of requests (about 50 a second at most), not a busy loop that would take the cores
# both trainings run on.
REQUEST_INTERVAL_S = 0.02


class ContinuousClient(threading.Thread):
    """Sends raw rows through a Router until stopped, counting failed requests and answers per version."""

    def __init__(self, url: str, repository: Path, rows: pd.DataFrame) -> None:
        super().__init__(daemon=True)
        self.url, self.repository, self.rows = url, repository, rows
        self.failures = 0
        self.requests = 0
        self.served: dict[int, int] = {}
        self.error: BaseException | None = None
        self._stopping = threading.Event()

    def run(self) -> None:
        client = triton_http.InferenceServerClient(self.url)
        router = Router(client, self.repository, NAME)
        try:
            while not self._stopping.is_set():
                start = self.requests * ROWS_PER_REQUEST % max(1, len(self.rows) - ROWS_PER_REQUEST + 1)
                batch = self.rows.iloc[start : start + ROWS_PER_REQUEST]
                try:
                    router.predict(batch, key=str(self.requests))
                except Exception as error:  # noqa: BLE001 - every failed request counts, whatever its kind
                    self.failures += 1
                    print(f"demo --retrain: request {self.requests} failed: {error}", flush=True)
                self.requests += 1
                time.sleep(REQUEST_INTERVAL_S)
        except BaseException as error:  # handed to the thread that stops the client
            self.error = error
        finally:
            self.served = dict(router.served)
            client.close()

    def stop(self) -> None:
        """Stops sending; raises what ended the sending thread early, if anything did."""
        self._stopping.set()
        self.join()
        if self.error is not None:
            raise RuntimeError(f"the demo's client stopped after {self.requests} requests") from self.error


def _day_rows(spark: SparkSession, paths: PipelineLayout, day: int):  # noqa: ANN202 - a DataFrame
    return spark.read.format("delta").load(paths.bronze).where(F.col(DAY) == day)


def flagged_fields(drift: dict) -> list[str]:
    """The features a drift report warns about (not the label, predictions or serving)."""
    features = {*drift[Tags.CATEGORICAL], *drift[Tags.CONTINUOUS]}
    return sorted({w["subject"] for w in drift[WARNINGS] if w["subject"] in features})


def retrain_config(rows_per_day: int | None = None) -> GeneratorConfig:
    """The story's data: the default generator's, with RETRAIN_NEW_VALUE_RATE new values a day."""
    config = GeneratorConfig(new_value_rate=RETRAIN_NEW_VALUE_RATE)
    return config if rows_per_day is None else replace(config, rows_per_day=rows_per_day)


def retrain_demo(spark: SparkSession, out: Path, config: GeneratorConfig) -> dict:
    """Runs the story on `config`'s data (retrain_config's) into `out`: returns the report (generate,
    the production run's train section and the "retrain" section) and writes retrain.json (every
    figure behind it) and retrain.png."""
    paths = PipelineLayout(out)
    # A rerun starts the story again: no runs, production, retrain records, served versions, features
    # or (extended) workflow of the last.
    owned_paths = (
        paths.run(""),
        paths.serving,
        paths.retrain(NEW_DAY).parent,
        paths.features,
        paths.workflow,
    )
    for owned in map(Path, owned_paths):
        shutil.rmtree(owned, ignore_errors=True)
    report = {"generate": generate(spark, paths.data, config)}
    ingest(spark, paths.raw, paths.bronze, paths.rejects, days=TRAIN_DAYS)
    featurize(spark, paths.bronze, paths.features, paths.workflow, {TRAIN_SPLIT: TRAIN_DAYS})
    stale = paths.run("dlrm")
    report["train"] = train(spark, paths.features, paths.workflow, stale, backend="single", workers=1)
    ingest(spark, paths.raw, paths.bronze, paths.rejects, days=[NEXT_DAY])
    requests = _day_rows(spark, paths, NEXT_DAY).orderBy(SOURCE_FILE, LINE_NUMBER).limit(REQUEST_ROWS)
    repository = Path(paths.serving) / "repository"
    with TritonServer(repository, log=Path(paths.serving) / "tritonserver.log") as server:
        deploy(spark, paths, stale, repository, NAME, server.http_url)
        sender = ContinuousClient(server.http_url, repository, requests.toPandas())
        sender.start()
        try:
            settings = RetrainSettings(NEW_DAY, ab_seconds=AB_SECONDS, name=NAME)
            started = time.perf_counter()
            steps = retrain(spark, paths, repository, settings, server.http_url)
            retrain_s = round(time.perf_counter() - started, 1)
            # From scratch on days 0-2 (day 2's held-out rows left out, as for the candidate), under the
            # same serving traffic as the warm start, so that their training times compare.
            scratch = storage.qualified(spark, paths.run("dlrm-scratch"))
            files = training_files(spark, paths, [*TRAIN_DAYS, NEW_DAY])
            schema = Workflow.load_schema(paths.workflow, spark)
            _, scratch_summary = fit(spark, schema, files, scratch, "dlrm", "single", 1)
        finally:
            sender.stop()
    warm = steps["train"]["run_dir"]
    day_rows = _day_rows(spark, paths, NEXT_DAY)
    staging = paths.retrain(NEXT_DAY)
    scored = {
        role: score_rows(spark, run_dir, paths.workflow, day_rows, str(staging / f"scored-{role}"))
        for role, run_dir in (("stale", stale), ("warm", warm), ("scratch", scratch))
    }
    oracle = oracle_on_rows(spark, paths, day_rows).get("oracle_auc")
    drift = monitor(spark, paths.bronze, paths.workflow, NEXT_DAY)
    drift_file = report_file(out / "monitoring", NEXT_DAY)
    drift_file.parent.mkdir(parents=True, exist_ok=True)
    write_json(drift_file, drift)
    drift_file.with_suffix(".png").write_bytes(report_png(drift, Thresholds.load()))
    seconds = {"warm": steps["train"]["seconds"], "scratch": scratch_summary["seconds"]}
    report["retrain"] = {
        "stale_auc": scored["stale"]["auc"],
        "warm_auc": scored["warm"]["auc"],
        "scratch_auc": scored["scratch"]["auc"],
        "warm_train_s": seconds["warm"],
        "scratch_train_s": seconds["scratch"],
        "promoted": steps["decide"]["promoted"],
        "failed_requests": sender.failures,
        "drift_flagged_fields": flagged_fields(drift),
    }
    details = {
        "day3": {**scored, "oracle_auc": oracle},
        "retrain_s": retrain_s,
        "requests": sender.requests,
        "served_by_version": sender.served,
        "retrain_steps": {**steps, "train": {k: v for k, v in steps["train"].items() if k != "losses"}},
        "drift_report": str(drift_file),
    }
    write_json(out / "retrain.json", details, default=str)
    aucs = {role: s["auc"] for role, s in scored.items()}
    (out / "retrain.png").write_bytes(
        plots.models_against_oracle(
            aucs, seconds, oracle, f"day {NEXT_DAY}: stale, warm-started, from scratch"
        )
    )
    return report


def retrain_summary(report: dict) -> str:
    r = report["retrain"]
    return "\n".join(
        [
            f"retrain: day {NEXT_DAY} AUC stale {r['stale_auc']:.4f}, warm-started {r['warm_auc']:.4f} "
            f"({r['warm_train_s']:.1f} s), from scratch {r['scratch_auc']:.4f} "
            f"({r['scratch_train_s']:.1f} s)",
            f"retrain: candidate {'promoted' if r['promoted'] else 'rolled back'}; failed requests "
            f"{r['failed_requests']}; drift flagged on {r['drift_flagged_fields'] or 'no field'}",
        ]
    )
