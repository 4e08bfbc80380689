"""The features description: which features table (and Delta version) featurize wrote from which bronze
version, and the day splits. It is the one reader and writer of features.json in the workflow folder;
the columns themselves are described by the workflow's schema (Workflow.load_schema)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from pyspark.sql import SparkSession

from rec_plugin import storage
from rec_plugin.errors import InputError

FEATURES_DESCRIPTION_FILE = "features.json"
# The features table's column naming each row's split (train, valid, test).
SPLIT = "split"
# The day splits: the days a workflow is fitted and a model trained on, the days that pick an epoch,
# and the days a model is measured on.
TRAIN_SPLIT = "train"
VALID_SPLIT = "valid"
TEST_SPLIT = "test"


@dataclass(frozen=True)
class FeaturesDescription:
    table: str
    version: int
    bronze_table: str
    bronze_version: int
    splits: dict[str, list[int]]
    rows: int

    def days(self, split: str) -> list[int]:
        return list(self.splits.get(split, []))

    def save(self, spark: SparkSession, workflow_folder: str) -> None:
        storage.write_text(
            spark, f"{workflow_folder}/{FEATURES_DESCRIPTION_FILE}", json.dumps(asdict(self), indent=2)
        )

    @classmethod
    def load(cls, spark: SparkSession, workflow_folder: str) -> FeaturesDescription:
        """The description featurize wrote last into `workflow_folder`; refused in one line if none."""
        path = f"{workflow_folder}/{FEATURES_DESCRIPTION_FILE}"
        if not storage.exists(spark, path):
            raise InputError(
                f"workflow {workflow_folder} holds no {FEATURES_DESCRIPTION_FILE}: featurize into it first "
                "(sparkrec featurize --workflow) or fix --workflow"
            )
        data = json.loads(storage.read_text(spark, path))
        splits = {split: [int(d) for d in days] for split, days in data["splits"].items()}
        return cls(**{**data, "splits": splits})
