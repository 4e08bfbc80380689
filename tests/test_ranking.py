"""Ranking metrics (training/ranking.py) on hand-computed cases: ties, k past the list, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest

from training.ranking import (
    hit_rate_at_k,
    ndcg_at_k,
    ndcg_at_k_sets,
    positive_ranks,
    recall_at_k,
    top_k,
)

# Three users, four candidates; the positive is column 0, 0 and 3.
SCORES = np.array(
    [
        [0.9, 0.1, 0.2, 0.3],  # positive best: rank 0
        [0.5, 0.7, 0.6, 0.1],  # two above it: rank 2
        [0.4, 0.4, 0.4, 0.4],  # all tied: rank 3 (ties count against it)
    ]
)
POSITIVES = np.array([0, 0, 3])


def test_leave_one_out_ranks_are_pessimistic():
    assert positive_ranks(SCORES, POSITIVES).tolist() == [0, 2, 3]
    labels = np.zeros_like(SCORES, dtype=np.int32)
    labels[np.arange(3), POSITIVES] = 1
    assert positive_ranks(SCORES, labels).tolist() == [0, 2, 3]


def test_hit_rate_and_ndcg_by_hand():
    assert hit_rate_at_k(SCORES, POSITIVES, 1) == pytest.approx(1 / 3)
    assert hit_rate_at_k(SCORES, POSITIVES, 3) == pytest.approx(2 / 3)
    assert hit_rate_at_k(SCORES, POSITIVES, 10) == 1.0  # k past the candidates: every positive hits
    assert ndcg_at_k(SCORES, POSITIVES, 1) == pytest.approx(1 / 3)
    assert ndcg_at_k(SCORES, POSITIVES, 3) == pytest.approx((1.0 + 1 / math.log2(4)) / 3)
    assert ndcg_at_k(SCORES, POSITIVES, 4) == pytest.approx((1.0 + 0.5 + 1 / math.log2(5)) / 3)


def test_a_constant_model_scores_nothing():
    constant = np.zeros((5, 101))
    positives = np.arange(5)
    assert hit_rate_at_k(constant, positives, 10) == 0.0
    assert ndcg_at_k(constant, positives, 10) == 0.0


def test_leave_one_out_refuses_bad_input():
    with pytest.raises(ValueError, match="one positive per row; row 1 holds 2"):
        hit_rate_at_k(SCORES, np.array([[1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 0, 1]]), 1)
    with pytest.raises(ValueError, match="outside 0..3"):
        hit_rate_at_k(SCORES, np.array([0, 4, 1]), 1)
    with pytest.raises(ValueError, match="without NaN"):
        ndcg_at_k(np.array([[np.nan, 1.0]]), np.array([0]), 1)
    with pytest.raises(ValueError, match="k must be at least 1"):
        ndcg_at_k(SCORES, POSITIVES, 0)


def test_top_k_breaks_ties_by_column():
    scores = np.array([[0.1, 0.5, 0.5, -np.inf], [3.0, 2.0, 1.0, 0.0]])
    assert top_k(scores, 2).tolist() == [[1, 2], [0, 1]]
    assert top_k(scores, 9).tolist() == [[1, 2, 0, 3], [0, 1, 2, 3]]


def test_recall_by_hand():
    ranked = np.array([[5, 1, 7, 2], [3, 4, 9, 8]])
    heldout = [np.array([1, 2, 6]), np.array([8])]
    # k=2: user 0 hits 1 of min(2, 3)=2; user 1 hits 0 of 1.
    assert recall_at_k(ranked, heldout, 2) == pytest.approx((1 / 2 + 0) / 2)
    # k=4: user 0 hits 2 of 3; user 1 hits 1 of 1.
    assert recall_at_k(ranked, heldout, 4) == pytest.approx((2 / 3 + 1) / 2)
    # k past the ranking: missing places miss, the denominator stays min(k, |H|).
    assert recall_at_k([np.array([1, 2])], [np.array([1, 2, 3, 4, 5, 6])], 10) == pytest.approx(2 / 6)


def test_ndcg_of_sets_by_hand():
    ranked = np.array([[5, 1, 7, 2], [8, 4, 9, 3]])
    heldout = [np.array([1, 2, 6]), np.array([8])]
    dcg = 1 / math.log2(3) + 1 / math.log2(5)  # places 1 and 3
    ideal = 1 + 1 / math.log2(3) + 1 / math.log2(4)  # three held-out items first
    assert ndcg_at_k_sets(ranked, heldout, 4) == pytest.approx((dcg / ideal + 1.0) / 2)
    # k=2: user 0 has a hit at place 1 against an ideal of two hits.
    assert ndcg_at_k_sets(ranked, heldout, 2) == pytest.approx(
        ((1 / math.log2(3)) / (1 + 1 / math.log2(3)) + 1.0) / 2
    )
    assert ndcg_at_k_sets([np.array([9, 8])], [np.array([8])], 10) == pytest.approx(1 / math.log2(3))
    # A catalogue of fewer other items than k pads the ranking with -1: misses, not a repeated item.
    padded = [np.array([9, 8, -1, -1])]
    assert ndcg_at_k_sets(padded, [np.array([8])], 4) == pytest.approx(1 / math.log2(3))
    assert recall_at_k(padded, [np.array([8, 5])], 4) == pytest.approx(0.5)


def test_held_out_metrics_refuse_bad_input():
    with pytest.raises(ValueError, match="user 1 has no held-out items"):
        recall_at_k([np.array([1]), np.array([2])], [np.array([1]), np.array([], dtype=np.int64)], 5)
    with pytest.raises(ValueError, match="repeats an item"):
        ndcg_at_k_sets([np.array([1, 1, 2])], [np.array([1])], 3)
    with pytest.raises(ValueError, match="2 rankings but 1 held-out sets"):
        recall_at_k(np.array([[1], [2]]), [np.array([1])], 1)
