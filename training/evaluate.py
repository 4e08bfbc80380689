"""Scoring a trained model: CTR models over feature files (and the metrics reported per day), NCF's
candidate pairs, Mult-VAE's top items."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from rec_plugin.interactions import HELDOUT, ITEMS
from rec_plugin.schema import Schema
from training.data import BatchLoader, FileSet, check_epoch_rows, jagged_arrays, read_id_lists
from training.metrics import auc
from training.models.cf import NeuMF, TopKRecommender
from training.ranking import VAE_NDCG_CUTOFF, ndcg_at_k_sets


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
    """Rows, AUC and log loss. The AUC is None where the rows hold one label class (a day without a
    click): it ranks clicks against non-clicks, so it is undefined there, while the log loss is not."""
    both_classes = 0 < float(np.sum(labels)) < len(labels)
    return {
        "rows": int(len(labels)),
        "auc": round(auc(labels, probabilities), 5) if both_classes else None,
        "logloss": round(logloss(labels, probabilities), 5),
    }


@torch.no_grad()
def candidate_logits(
    model: nn.Module, users: np.ndarray, items: np.ndarray, batch_size: int = 65_536
) -> np.ndarray:
    """NCF's logits of (user id, item id) pairs, in their order."""
    model.eval()
    logits = []
    for start in range(0, len(users), batch_size):
        ids = torch.from_numpy(
            np.stack([users[start : start + batch_size], items[start : start + batch_size]], 1)
        )
        logits.append(model(torch.zeros(len(ids), 0), ids.long(), [], []).numpy())
    return np.concatenate(logits) if logits else np.zeros(0, dtype=np.float32)


@torch.no_grad()
def top_items(
    model: nn.Module, bags: list[np.ndarray], k: int, batch_size: int = 1024
) -> tuple[np.ndarray, np.ndarray]:
    """Mult-VAE's k best items (ids [U, k], scores [U, k]) for each user's bag of items, the bag's
    items left out; the catalogue's other items only (k of them at most) where it holds fewer."""
    k = min(k, model.n_items - 1)
    recommender = TopKRecommender(model, k).eval()
    device = next(model.parameters()).device  # a GPU where a training loop validates on one
    ids, scores = [np.zeros((0, k), dtype=np.int64)], [np.zeros((0, k), dtype=np.float32)]
    for start in range(0, len(bags), batch_size):
        values, offsets = (
            torch.from_numpy(a).to(device) for a in jagged_arrays(bags[start : start + batch_size])
        )
        top_ids, top_scores = recommender(values, offsets)
        ids.append(top_ids.cpu().numpy())
        scores.append(top_scores.cpu().numpy())
    return np.concatenate(ids), np.concatenate(scores)


def heldout_ndcg_sum(model: nn.Module, files: tuple[str, ...]) -> tuple[float, int]:
    """Mult-VAE's NDCG@100 summed over the held-out users of some files of the vae table (each user's
    fold-in bag ranks every item, the bag left out, against their held-out items), and the users'
    count: sums, so ranks scoring their own files add up."""
    users = read_id_lists(files, (ITEMS, HELDOUT))
    if not users[ITEMS]:
        return 0.0, 0
    ranked, _ = top_items(model, users[ITEMS], VAE_NDCG_CUTOFF)
    return ndcg_at_k_sets(ranked, users[HELDOUT], VAE_NDCG_CUTOFF) * len(ranked), len(ranked)


# NCF's candidate pairs scored a call (ncf_top_items).
PAIRS_PER_CALL = 16_384


@torch.no_grad()
def ncf_top_items(
    model: NeuMF,
    users: np.ndarray,
    seen: list[np.ndarray],
    candidates: np.ndarray,
    k: int,
    pairs_per_call: int = PAIRS_PER_CALL,
) -> tuple[np.ndarray, np.ndarray]:
    """NCF's k best candidates (ids [U, k], logits [U, k]) for each user, the items a user has `seen`
    left out: candidates are scored a chunk at a time (`NeuMF.score_grid`) and merged into a running
    top k, so memory is bounded by `pairs_per_call` whatever the number of candidates (a million
    items included). 16,384 pairs keep a chunk's hidden layer (64 floats a pair by default) within a
    few MB: through forward, 262,144 pairs a call ranked 2.4x slower than 16,384 (bench/ncf_rank.py)."""
    model.eval()
    k = min(k, len(candidates))
    chunk = max(1, min(len(candidates), pairs_per_call // max(1, len(users))))
    best_scores = torch.full((len(users), k), -torch.inf)
    best_ids = torch.zeros((len(users), k), dtype=torch.int64)
    user_ids = torch.from_numpy(users.astype(np.int64))
    seen_pairs = _seen_pairs(seen)
    for start in range(0, len(candidates), chunk):
        items = torch.from_numpy(candidates[start : start + chunk].astype(np.int64))
        seen_here = _seen_mask(seen_pairs, items, len(users))
        logits = model.score_grid(user_ids, items).masked_fill(seen_here, -torch.inf)
        merged_scores = torch.cat([best_scores, logits], dim=1)
        merged_ids = torch.cat([best_ids, items.expand(len(users), -1)], dim=1)
        best_scores, order = merged_scores.topk(k, dim=1)
        best_ids = merged_ids.gather(1, order)
    return best_ids.numpy(), best_scores.numpy()


def _seen_pairs(seen: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """(row, item) of every seen item, for masking."""
    rows = np.repeat(np.arange(len(seen)), [len(s) for s in seen])
    items = np.concatenate(seen) if seen else np.zeros(0, np.int64)
    return torch.from_numpy(rows.astype(np.int64)), torch.from_numpy(items.astype(np.int64))


def _seen_mask(
    seen_pairs: tuple[torch.Tensor, torch.Tensor], items: torch.Tensor, users: int
) -> torch.Tensor:
    """[users, len(items)] true where the user has seen that candidate."""
    rows, seen_items = seen_pairs
    mask = torch.zeros(users, len(items), dtype=torch.bool)
    sorted_items, order = items.sort()
    position = torch.searchsorted(sorted_items, seen_items).clamp(max=max(len(items) - 1, 0))
    hit = sorted_items[position] == seen_items if len(items) else torch.zeros(0, dtype=torch.bool)
    mask[rows[hit], order[position[hit]]] = True
    return mask
