"""Where a pipeline run keeps each stage's output under one folder, and how its days split: one
definition for the demo and the notebook (each stage reads the previous one's output from here)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from rec_plugin.features_description import TEST_SPLIT, TRAIN_SPLIT, VALID_SPLIT


@dataclass(frozen=True)
class GeneratedData:
    """A generator's output folder (sparkrec generate, generate-ecommerce): the raw files that ingest
    reads, the oracle table (Delta, each line's true click probability) and the planted model."""

    root: str

    @property
    def raw(self) -> str:
        return f"{self.root}/raw"

    @property
    def oracle(self) -> str:
        return f"{self.root}/oracle"

    @property
    def planted_model(self) -> str:
        """The planted model as JSON: what `interactions --planted` scores the oracle columns with."""
        return f"{self.root}/planted_model.json"


@dataclass(frozen=True)
class PipelineLayout:
    """<out>/data (raw TSV and the oracle), <out>/lake (Delta tables, the workflow), <out>/runs."""

    out: Path

    @property
    def data(self) -> str:
        return str(self.out / "data")

    @property
    def raw(self) -> str:
        return GeneratedData(self.data).raw

    @property
    def oracle(self) -> str:
        return GeneratedData(self.data).oracle

    @property
    def bronze(self) -> str:
        return str(self.out / "lake" / "bronze")

    @property
    def rejects(self) -> str:
        return str(self.out / "lake" / "rejects")

    @property
    def features(self) -> str:
        return str(self.out / "lake" / "features")

    @property
    def workflow(self) -> str:
        return str(self.out / "lake" / "workflow")

    @property
    def interactions(self) -> str:
        return str(self.out / "lake" / "interactions")

    @property
    def predictions(self) -> str:
        return str(self.out / "lake" / "predictions")

    @property
    def serving(self) -> str:
        """The Triton model repository and the server's log."""
        return str(self.out / "serving")

    def run(self, model: str) -> str:
        return str(self.out / "runs" / model)

    @property
    def report(self) -> Path:
        """The demo's report: every stage's figures."""
        return self.out / "report.json"

    @property
    def production(self) -> str:
        """The record of the run that serves now (spark_jobs/retrain.py's Production)."""
        return str(self.out / "runs" / "production.json")

    def retrain(self, day: int) -> Path:
        """What the retrain of `day` keeps: its record of finished steps, held-out scores, decision."""
        return self.out / "retrain" / f"day{day}"


def day_splits(days: int) -> dict[str, list[int]]:
    """All days but the last two train, the second-to-last validates, the last one tests."""
    return {TRAIN_SPLIT: list(range(days - 2)), VALID_SPLIT: [days - 2], TEST_SPLIT: [days - 1]}


def day_list(text: str) -> list[int]:
    """A command line's comma-separated days ("0,1,2") as numbers; argparse reports a bad one."""
    try:
        days = [int(d) for d in text.split(",") if d.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected day numbers such as 0,1,2, got {text!r}") from None
    if any(d < 0 for d in days):
        raise argparse.ArgumentTypeError(f"days are numbers from 0, got {text!r}")
    return days
