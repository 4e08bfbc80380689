"""The `sparkrec` command: one subcommand per pipeline stage, each the same as its spark-submit entry."""

from __future__ import annotations

import sys
from importlib import import_module

STAGES = {
    "generate": "spark_jobs.generate",
    "ingest": "spark_jobs.ingest",
    "featurize": "spark_jobs.featurize",
    "train": "spark_jobs.train",
    "export": "serving.export",
    "score": "spark_jobs.score",
    "serve": "serving.server",
    "demo": "spark_jobs.demo",
}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in STAGES:
        names = ", ".join(STAGES)
        print(f"usage: sparkrec {{{names}}} [options]  (sparkrec STAGE --help for a stage's options)")
        sys.exit(0 if argv and argv[0] in ("-h", "--help") else 2)
    import_module(STAGES[argv[0]]).main(argv[1:])


if __name__ == "__main__":
    main()
