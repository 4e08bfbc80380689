"""Scoring a trained model over feature files, and the metrics reported per day."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from rec_plugin.schema import Schema
from training.data import BatchLoader, FileSet, check_epoch_rows
from training.metrics import auc


@torch.no_grad()
def predict(
    model: nn.Module, file_set: FileSet, schema: Schema, batch_size: int = 8192
) -> tuple[np.ndarray, np.ndarray]:
    """(labels, click probabilities) of every row of the file set, in file order, read through the
    training loader (the schema's columns)."""
    model.eval()
    loader = BatchLoader(file_set, schema, batch_size, shuffle=False)
    labels, scores = [], []
    for batch in loader.epoch(0):
        labels.append(batch.label.numpy())
        scores.append(torch.sigmoid(model(*batch.inputs())).numpy())
    check_epoch_rows(loader.rows_read, file_set.rows, "evaluation")
    return np.concatenate(labels), np.concatenate(scores)


def logloss(labels: np.ndarray, probabilities: np.ndarray) -> float:
    p = np.clip(probabilities.astype(np.float64), 1e-7, 1 - 1e-7)
    return float(-np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p)))


def metrics(labels: np.ndarray, probabilities: np.ndarray) -> dict:
    return {
        "rows": int(len(labels)),
        "auc": round(auc(labels, probabilities), 5),
        "logloss": round(logloss(labels, probabilities), 5),
    }
