"""Spark ML faces of a Workflow: an Estimator whose fit gives a Model, both saved with Spark ML's
save/load, so a workflow drops into a `pyspark.ml.Pipeline` (and a Databricks notebook's)."""

from __future__ import annotations

import copy
from typing import Any

from pyspark.ml import Estimator, Model
from pyspark.ml.util import (
    DefaultParamsReader,
    DefaultParamsWriter,
    MLReadable,
    MLReader,
    MLWritable,
    MLWriter,
)
from pyspark.sql import DataFrame

from rec_plugin.workflow import Workflow


class _WorkflowStageWriter(MLWriter):
    """Spark ML's stage metadata (class, uid) plus the workflow in its own format beside it."""

    def __init__(self, instance: WorkflowEstimator | WorkflowModel) -> None:
        super().__init__()
        self.instance = instance

    def saveImpl(self, path: str) -> None:
        DefaultParamsWriter.saveMetadata(self.instance, path, self.sc)
        self.instance.workflow.save(f"{path}/workflow")


class _WorkflowStageReader(MLReader):
    def __init__(self, cls: type) -> None:
        super().__init__()
        self.cls = cls

    def load(self, path: str) -> Any:
        metadata = DefaultParamsReader.loadMetadata(path, self.sc)
        instance = self.cls(Workflow.load(f"{path}/workflow", self.sparkSession))
        instance._resetUid(metadata["uid"])
        return instance


class WorkflowModel(Model, MLWritable, MLReadable):
    """A fitted workflow as a Spark ML Transformer; it transforms as serving does (no row is marked as
    fitted, so TargetEncoding gives every row its all-folds encoding)."""

    def __init__(self, workflow: Workflow) -> None:
        super().__init__()
        self.workflow = workflow

    def _transform(self, dataset: DataFrame) -> DataFrame:
        return self.workflow.transform(dataset)

    def write(self) -> MLWriter:
        return _WorkflowStageWriter(self)

    @classmethod
    def read(cls) -> MLReader:
        return _WorkflowStageReader(cls)


class WorkflowEstimator(Estimator, MLWritable, MLReadable):
    """An unfitted workflow as a Spark ML Estimator: fit learns the ops' state and returns a WorkflowModel."""

    def __init__(self, workflow: Workflow) -> None:
        super().__init__()
        self.workflow = workflow

    def _fit(self, dataset: DataFrame) -> WorkflowModel:
        return WorkflowModel(copy.copy(self.workflow).fit(dataset))

    def write(self) -> MLWriter:
        return _WorkflowStageWriter(self)

    @classmethod
    def read(cls) -> MLReader:
        return _WorkflowStageReader(cls)
