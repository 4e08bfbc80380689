"""sparkrec demo: the whole pipeline on a small generated click log (Criteo or e-commerce), on local Spark.

Each stage reads the previous stage's output from storage and adds its section to
<out>/report.json; a short summary goes to stdout. Beside DLRM, a first-order model (logistic) is
trained on the same rows and scored on the same test day: the report's baseline.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

from pyspark.sql import SparkSession

from rec_plugin.errors import CommandParser, InputError, run_command
from rec_plugin.features_description import TEST_SPLIT
from rec_plugin.json_files import write_json
from spark_jobs.demo_retrain import retrain_config, retrain_demo, retrain_summary
from spark_jobs.demo_serve import serve_and_score
from spark_jobs.featurize import featurize
from spark_jobs.generate import GeneratorConfig, generate
from spark_jobs.generate_ecommerce import EcommerceConfig, generate_ecommerce
from spark_jobs.ingest import ingest
from spark_jobs.interactions import build_interactions
from spark_jobs.layout import PipelineLayout, day_splits
from spark_jobs.session import LOG_DIR_ENV, build_session
from spark_jobs.train import train
from spark_jobs.train_cf import CF_REPORT_KEYS, train_cf
from training.models.cf import MULTVAE, NCF

# Each bundled dataset's generator (and its config) by the name of its definition in conf/datasets/.
GENERATORS = {"criteo": (GeneratorConfig, generate), "ecommerce": (EcommerceConfig, generate_ecommerce)}


def summary(report: dict) -> str:
    g, i, f, t, v, b = (report[k] for k in ("generate", "ingest", "featurize", "train", "serve", "baseline"))
    return "\n".join(
        [
            f"generate: {g['rows']:,} rows over {g['days']} days at {g['rows_per_s']:,.0f} rows/s; "
            f"oracle AUC {_auc(g['oracle_auc'])} (first-order part alone {_auc(g['first_order_auc'])})",
            f"ingest:   {i['lines_read']:,} lines read = {i['accepted']:,} accepted"
            f" + {i['rejected']:,} rejected; bronze {i['bronze_table']} at version {i['bronze_version']}",
            f"featurize: {f['rows_out']:,} rows at {f['rows_per_s']:,.0f} rows/s from bronze version "
            f"{f['bronze_version']}; GPU-eligible operators {f['gpu_eligible_fraction']}",
            f"train:    {t['model']} on {t['workers']} {t['backend']} workers at {t['samples_per_s']:,.0f} "
            f"samples/s; test AUC {_auc(t['auc'])} (oracle {_auc(t['oracle_auc'])}), "
            f"logloss {t['logloss']:.4f} (oracle {t['oracle_logloss']:.4f}); run in {t['run_dir']}",
            f"baseline: {b['model']} on the same rows, test AUC {_auc(b['auc'])}"
            + ("" if None in (t["auc"], b["auc"]) else f" ({t['model']} {t['auc'] - b['auc']:+.4f})"),
            f"serve:    Triton {v['triton_version']}, model versions {v['versions_loaded']}, raw-row parity "
            f"max |diff| {v['parity_max_abs_diff']:.2e}, batch 2048 p50 {v['p50_ms_b2048']} ms / p99 "
            f"{v['p99_ms_b2048']} ms",
            f"score:    {report['score']['rows']:,} rows -> {report['score']['predictions_table']}",
            *(_ranking_line(model, report[model]) for model in (NCF, MULTVAE) if model in report),
        ]
    )


def _auc(value: float | None) -> str:
    """An AUC as the summary shows it: none where the test day holds one label class."""
    return "none (one label class)" if value is None else f"{value:.4f}"


def _ranking_line(model: str, metrics: dict) -> str:
    """One line per ranking model: its metrics, then the oracle's and popularity's NDCG."""
    shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if v is not None)
    return f"{model + ':':<9} {shown}"


def collaborative_filtering(spark: SparkSession, paths: PipelineLayout) -> dict:
    """The user-item data's two ranking models: the interaction tables built from the features, then
    NCF (two torch DDP workers) and Mult-VAE (in this process), each beside the planted oracle's and
    popularity's ranking of the same candidates."""
    built = build_interactions(spark, paths.features, paths.workflow, paths.interactions, planted=paths.data)
    print(f"demo: interaction tables {built.rows} in {paths.interactions}")
    ranked = {}
    for model, backend, workers in ((NCF, "torch", 2), (MULTVAE, "single", 1)):
        trained = train_cf(
            spark, paths.interactions, paths.workflow, paths.run(model), model, backend, workers
        )
        ranked[model] = {key: trained[key] for key in CF_REPORT_KEYS[model]}
    return ranked


def main(argv: list[str] | None = None) -> dict:
    parser = CommandParser(prog="sparkrec demo", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="artifacts/demo", help="folder for data, tables and the report")
    parser.add_argument(
        "--profile",
        default="rapids-explain",
        help="Spark profile (default: local Spark + RAPIDS explain-only)",
    )
    parser.add_argument(
        "--dataset",
        choices=sorted(GENERATORS),
        default="criteo",
        help="which bundled click log to generate and run (default: criteo)",
    )
    parser.add_argument("--rows-per-day", type=int, help="default: the dataset generator's")
    parser.add_argument("--days", type=int, help="default: the dataset generator's")
    parser.add_argument(
        "--retrain",
        action="store_true",
        help="the retraining story instead (criteo): serve days 0-1's model, retrain day 2 while a client "
        "sends requests, compare stale, warm-started and from-scratch models on day 3",
    )
    args = parser.parse_args(argv)
    if args.retrain and (args.dataset != "criteo" or args.days is not None):
        parser.error("--retrain runs on the criteo generator's 4 days: drop --dataset and --days")
    config_type, generator = GENERATORS[args.dataset]
    sizes = {"days": args.days, "rows_per_day": args.rows_per_day}
    try:  # before Spark starts, and before a rerun of the retrain story removes the last one's outputs
        config = (
            retrain_config(args.rows_per_day)
            if args.retrain
            else config_type(**{k: v for k, v in sizes.items() if v is not None})
        )
    except ValueError as error:
        raise InputError(str(error)) from None
    out = Path(args.out).resolve()
    os.environ.setdefault(LOG_DIR_ENV, str(out / "logs"))  # Spark's and the workers' logs
    # The RAPIDS jar on the classpath (plugin off) lets featurize report which operators a GPU would run.
    spark = build_session(args.profile, "sparkrec-demo", {"sparkrec.jars": "delta,rapids"})
    print(
        f"demo: Spark UI at {spark.sparkContext.uiWebUrl}" if spark.sparkContext.uiWebUrl else "demo: started"
    )
    if args.retrain:
        return _write_report(out, retrain_demo(spark, out, config), retrain_summary)
    paths = PipelineLayout(out)
    # A rerun makes another pipeline: the last one's retrain records and production describe no more.
    shutil.rmtree(paths.retrain(0).parent, ignore_errors=True)
    Path(paths.production).unlink(missing_ok=True)
    report = {"generate": generator(spark, paths.data, config)}
    report["ingest"] = ingest(spark, paths.raw, paths.bronze, paths.rejects, dataset=args.dataset)
    splits = day_splits(config.days)
    report["featurize"] = featurize(
        spark, paths.bronze, paths.features, paths.workflow, splits, dataset=args.dataset
    )
    # Two Horovod workers launched from Spark, meeting over loopback.
    report["train"] = train(
        spark,
        paths.features,
        paths.workflow,
        paths.run("dlrm"),
        model="dlrm",
        backend="horovod",
        workers=2,
        oracle=paths.oracle,
    )
    # The first-order model on the same rows and test day, in one process: what DLRM must beat.
    baseline = train(
        spark,
        paths.features,
        paths.workflow,
        paths.run("logistic"),
        model="logistic",
        backend="single",
        workers=1,
    )
    report["baseline"] = {"model": baseline["model"], "auc": baseline["auc"]}
    # Serve the model with its preprocessing from a real Triton server, check parity on raw rows,
    # score the test day into Delta through it, and stop it.
    report["serve"], report["score"] = serve_and_score(
        spark,
        report["train"]["run_dir"],
        paths.workflow,
        paths.bronze,
        splits[TEST_SPLIT],
        Path(paths.serving),
    )
    if args.dataset == "ecommerce":
        report.update(collaborative_filtering(spark, paths))
    return _write_report(out, report, summary)


def _write_report(out: Path, report: dict, summarize: Callable[[dict], str]) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    path = PipelineLayout(out).report
    write_json(path, report)
    print(summarize(report))
    print(f"demo: report written to {path}")
    return report


if __name__ == "__main__":
    run_command(main, "sparkrec demo")
