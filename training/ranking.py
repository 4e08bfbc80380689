"""Ranking metrics of the collaborative-filtering models, over numpy arrays.

Leave-one-out (NCF, He et al. 2017): each of U users has one positive among C candidates, scored
[U, C]. The positive's rank is the number of other candidates scoring at least as high (0 is best):
ties count against the positive, so a model scoring every candidate alike ranks each positive last.

    HR@k   = share of users whose positive's rank < k
    NDCG@k = mean over users of 1 / log2(rank + 2) where rank < k, else 0

Held-out sets (Mult-VAE, Liang et al. 2018): each user has a ranking of item ids (best first, no
repeats; a ranking shorter than k counts its missing places as misses) and a non-empty held-out set H.

    Recall@k = mean over users of |top k ∩ H| / min(k, |H|)
    NDCG@k   = mean over users of DCG@k / IDCG@k, with DCG@k = sum over places j < k (from 0) of
               [item j in H] / log2(j + 2) and IDCG@k the DCG of a ranking that puts H first
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# Mult-VAE's metrics on held-out users (Liang et al. 2018): Recall at these cutoffs and NDCG@100.
# The id a ranking is padded with past the catalogue's last item (TopKRecommender's).
PADDED = -1
VAE_RECALL_CUTOFFS = (20, 50)
VAE_NDCG_CUTOFF = 100


def positive_ranks(scores: np.ndarray, positives: np.ndarray) -> np.ndarray:
    """Each user's positive's pessimistic rank [U] (0 is best): the candidates other than it that
    score at least as high. `positives` is the positive's column [U], or labels [U, C] with exactly
    one positive per row."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2 or np.isnan(scores).any():
        raise ValueError(f"scores must be a [users, candidates] matrix without NaN, not shape {scores.shape}")
    columns = _positive_columns(np.asarray(positives), scores.shape)
    positive = scores[np.arange(len(scores)), columns]
    return (scores >= positive[:, None]).sum(axis=1) - 1


def hit_rate_at_k(scores: np.ndarray, positives: np.ndarray, k: int) -> float:
    """HR@k: the share of users whose positive ranks in the top k (ties against it)."""
    return float(np.mean(positive_ranks(scores, positives) < _checked(k)))


def ndcg_at_k(scores: np.ndarray, positives: np.ndarray, k: int) -> float:
    """Leave-one-out NDCG@k: the mean of 1 / log2(rank + 2) over users whose positive ranks in the
    top k (ties against it), 0 for the others."""
    ranks = positive_ranks(scores, positives)
    return float(np.mean(np.where(ranks < _checked(k), 1.0 / np.log2(ranks + 2.0), 0.0)))


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """The columns of each row's k best scores [U, min(k, C)], best first; equal scores in column
    order (a stable sort), so a ranking is reproducible."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2 or np.isnan(scores).any():
        raise ValueError(f"scores must be a [users, items] matrix without NaN, not shape {scores.shape}")
    return np.argsort(-scores, axis=1, kind="stable")[:, : _checked(k)]


def recall_at_k(
    ranked_ids: np.ndarray | Sequence[np.ndarray], heldout: Sequence[np.ndarray], k: int
) -> float:
    """Liang et al.'s normalised Recall@k: the mean over users of the held-out items in the top k over
    min(k, held-out count), so a user with fewer than k held-out items can reach 1."""
    hits, sizes = _hits(ranked_ids, heldout, _checked(k))
    return float(np.mean([row.sum() / min(k, size) for row, size in zip(hits, sizes)]))


def ndcg_at_k_sets(
    ranked_ids: np.ndarray | Sequence[np.ndarray], heldout: Sequence[np.ndarray], k: int
) -> float:
    """NDCG@k of rankings against held-out sets, binary relevance: DCG@k / ideal DCG@k, averaged."""
    hits, sizes = _hits(ranked_ids, heldout, _checked(k))
    discounts = 1.0 / np.log2(np.arange(k) + 2.0)
    return float(
        np.mean(
            [discounts[: len(row)] @ row / discounts[: min(k, size)].sum() for row, size in zip(hits, sizes)]
        )
    )


def _checked(k: int) -> int:
    if k < 1:
        raise ValueError(f"k must be at least 1, not {k}")
    return k


def _positive_columns(positives: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The positive's column per row, from columns [U] or one-positive labels [U, C]."""
    users, candidates = shape
    if positives.shape == shape:
        counts = (positives != 0).sum(axis=1)
        if (counts != 1).any():
            row = int(np.flatnonzero(counts != 1)[0])
            raise ValueError(f"labels must hold one positive per row; row {row} holds {counts[row]}")
        return np.argmax(positives != 0, axis=1)
    if positives.shape != (users,) or not np.issubdtype(positives.dtype, np.integer):
        raise ValueError(
            f"positives must be int columns [{users}] or labels {list(shape)}, "
            f"not {positives.dtype} {positives.shape}"
        )
    if ((positives < 0) | (positives >= candidates)).any():
        raise ValueError(f"a positive column is outside 0..{candidates - 1}")
    return positives


def _hits(
    ranked_ids: np.ndarray | Sequence[np.ndarray], heldout: Sequence[np.ndarray], k: int
) -> tuple[list[np.ndarray], list[int]]:
    """Per user: whether each of the top k places is a held-out item (float 0/1), and |held-out|. A
    place padded with id -1 (a catalogue with fewer other items than k) is no place: a miss."""
    if len(ranked_ids) != len(heldout):
        raise ValueError(f"{len(ranked_ids)} rankings but {len(heldout)} held-out sets")
    hits, sizes = [], []
    for user, (ranking, items) in enumerate(zip(ranked_ids, heldout)):
        top, items = np.asarray(ranking)[:k], np.unique(np.asarray(items))
        top = top[top != PADDED]
        if len(items) == 0:
            raise ValueError(f"user {user} has no held-out items: leave such users out of the evaluation")
        if len(np.unique(top)) != len(top):
            raise ValueError(f"user {user}'s ranking repeats an item in its top {k}")
        hits.append(np.isin(top, items).astype(np.float64))
        sizes.append(len(items))
    return hits, sizes
