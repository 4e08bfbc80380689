"""Ranking metrics of click models."""

from __future__ import annotations

import numpy as np


def auc_from_counts(positives: np.ndarray, negatives: np.ndarray) -> float:
    """AUC from positive and negative counts per score bin, bins in ascending score order.

    A positive beats every negative in a lower bin and ties (half) with those in its own bin, so this
    is exact for distinct scores and lets Spark compute AUC from a group-by instead of a global sort."""
    positives, negatives = np.asarray(positives, dtype=np.float64), np.asarray(negatives, dtype=np.float64)
    pairs = positives.sum() * negatives.sum()
    if pairs == 0:
        raise ValueError("AUC needs both positive and negative labels")
    negatives_below = np.cumsum(negatives) - negatives
    return float((positives * (negatives_below + negatives / 2)).sum() / pairs)


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney), ties counted as half."""
    labels = np.asarray(labels, dtype=np.float64)
    unique, group = np.unique(np.asarray(scores), return_inverse=True)
    positives = np.bincount(group, weights=labels, minlength=unique.size)
    negatives = np.bincount(group, weights=1.0 - labels, minlength=unique.size)
    return auc_from_counts(positives, negatives)
