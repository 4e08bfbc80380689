"""The `sparkrec` command: one subcommand per pipeline stage, each the same as its spark-submit entry."""

from __future__ import annotations

import sys
from importlib import import_module

from rec_plugin.errors import DEBUG_FLAG, run_command

STAGES = {
    "generate": "spark_jobs.generate",
    "generate-ecommerce": "spark_jobs.generate_ecommerce",
    "ingest": "spark_jobs.ingest",
    "featurize": "spark_jobs.featurize",
    "interactions": "spark_jobs.interactions",
    "train": "spark_jobs.train",
    "tune": "spark_jobs.tune",
    "export": "spark_jobs.export",
    "score": "spark_jobs.score",
    "monitor": "spark_jobs.monitor",
    "retrain": "spark_jobs.retrain",
    "recommend": "spark_jobs.recommend",
    "serve": "serving.server",
    "demo": "spark_jobs.demo",
}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in STAGES:
        names = ", ".join(STAGES)
        print(
            f"usage: sparkrec {{{names}}} [options] [{DEBUG_FLAG}]  (sparkrec STAGE --help for a stage's "
            f"options; {DEBUG_FLAG} shows the trace of an expected failure instead of its one line)"
        )
        sys.exit(0 if argv and argv[0] in ("-h", "--help") else 2)
    run_command(import_module(STAGES[argv[0]]).main, f"sparkrec {argv[0]}", argv[1:])


if __name__ == "__main__":
    main()
