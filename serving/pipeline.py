"""What the demo, the notebook and the serving benchmark share: a fresh repository of a trained run with
its workflow's preprocessing, the model's inputs from rows of the features table, and the in-process
model's probabilities on them (what the served ensemble must equal)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from pyspark.sql import SparkSession

from rec_plugin.schema import Schema
from rec_plugin.workflow import Workflow
from serving.export import torchscript
from serving.preprocess import export_preprocess
from serving.preprocessor import Features
from serving.repository import DEFAULT_NAME, add_version, write_ensemble
from training.run_directory import RunLocation

NAME = DEFAULT_NAME


def build_repository(
    spark: SparkSession, run_dir: RunLocation, workflow: str, repository: Path
) -> torch.jit.ScriptModule:
    """A fresh repository: the ensemble NAME over NAME_preprocess and NAME_model version 1, their
    tensors from the workflow's schema."""
    shutil.rmtree(repository, ignore_errors=True)
    model = torchscript(run_dir)
    schema = Workflow.load_schema(workflow, spark)
    add_version(repository, f"{NAME}_model", model, schema=schema)
    with tempfile.TemporaryDirectory() as staging:
        write_ensemble(repository, NAME, export_preprocess(spark, workflow, Path(staging), schema).parent)
    return model


def table_features(frame: pd.DataFrame, schema: Schema) -> Features:
    """The model's inputs from rows of the workflow's output (a features table read into pandas): the
    schema's continuous, categorical and list columns in its order, a missing list empty."""
    values, offsets = [], []
    for column in schema.lists.names:
        lists = [np.asarray([] if v is None else v, np.int64) for v in frame[column]]
        values.append(np.concatenate(lists) if lists else np.zeros(0, np.int64))
        offsets.append(np.concatenate([[0], np.cumsum([len(v) for v in lists])]).astype(np.int64))
    return Features(
        frame[schema.continuous.names].to_numpy(np.float32).reshape(len(frame), -1),
        frame[schema.categorical.names].to_numpy(np.int64).reshape(len(frame), -1),
        values,
        offsets,
    )


def call_model(model: torch.jit.ScriptModule, features: Features) -> np.ndarray:
    """Click probabilities [B, 1] of the TorchScript model on its features (the contract's forward:
    dense, ids, list values, list offsets)."""
    arguments = (
        torch.from_numpy(features.dense),
        torch.from_numpy(features.ids),
        [torch.from_numpy(v) for v in features.list_values],
        [torch.from_numpy(o) for o in features.list_offsets],
    )
    with torch.no_grad():
        return model(*arguments).numpy().reshape(-1, 1)
