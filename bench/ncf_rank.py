"""NCF's ranking of a whole catalogue, as `sparkrec recommend` runs it in each ranking task: every
(user, item) pair through NeuMF's forward, 262,144 pairs a call (the baseline, what recommend ran
before) and 16,384 pairs a call, against `ncf_top_items` (`NeuMF.score_grid`, 16,384 pairs a call);
interleaved round by round; prints users/s, the medians and the ratios to the baseline, and checks
that all rank the same items.

The default is the e-commerce demo's catalogue (18,959 items) at NCF's default config, on one torch
thread (a ranking task's core under the local profile):

    .venv/bin/python bench/ncf_rank.py [--items 18959] [--dim 16] [--users 1024] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
import torch
from harness import print_medians, report_quiet

from spark_jobs.recommend import USERS_PER_BATCH
from training.evaluate import PAIRS_PER_CALL, ncf_top_items
from training.models import ModelConfig, TableConfig, build_model
from training.models.cf import NCF, NeuMF
from training.models.config import DEFAULT_EMBEDDING_DIM

BEFORE_PAIRS_PER_CALL = 262_144


@torch.no_grad()
def top_items_per_pair(
    model: NeuMF, users: np.ndarray, candidates: np.ndarray, k: int, pairs_per_call: int
) -> np.ndarray:
    """Each chunk's pairs gathered and run through forward, merged into a running top k."""
    chunk = max(1, pairs_per_call // len(users))
    best_scores = torch.full((len(users), k), -torch.inf)
    best_ids = torch.zeros((len(users), k), dtype=torch.int64)
    user_ids = torch.from_numpy(users)
    for start in range(0, len(candidates), chunk):
        items = torch.from_numpy(candidates[start : start + chunk])
        pairs = torch.stack([user_ids.repeat_interleave(len(items)), items.repeat(len(users))], dim=1)
        logits = model(torch.zeros(len(pairs), 0), pairs, [], []).view(len(users), len(items))
        merged_ids = torch.cat([best_ids, items.expand(len(users), -1)], dim=1)
        best_scores, order = torch.cat([best_scores, logits], dim=1).topk(k, dim=1)
        best_ids = merged_ids.gather(1, order)
    return best_ids.numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=18_959, help="the catalogue's items")
    parser.add_argument("--dim", type=int, default=DEFAULT_EMBEDDING_DIM, help="the tables' dim")
    parser.add_argument("--users", type=int, default=1024, help="users ranked per round")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument(
        "--batch-users", type=int, default=USERS_PER_BATCH, help="users per call (recommend's)"
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cardinality = args.items + 1  # id 0: the unknown bucket
    # A user table as large as the catalogue: its size does not change the work.
    tables = tuple(TableConfig(name, cardinality, args.dim, (name,)) for name in ("user", "item"))
    model = build_model(ModelConfig(NCF, tables, categorical_features=("user", "item"))).eval()
    print(f"NeuMF {model.gmf_width}+{model.mlp_width} per side, tower {[m for m in model.tower]}")
    candidates = np.arange(1, cardinality, dtype=np.int64)
    users = np.random.default_rng(0).choice(candidates, args.users, replace=False)
    nothing_seen = [np.zeros(0, np.int64)] * args.batch_users

    batches = [users[s : s + args.batch_users] for s in range(0, len(users), args.batch_users)]
    variants: dict[str, Callable[[np.ndarray], np.ndarray]] = {
        f"forward, {BEFORE_PAIRS_PER_CALL:,} pairs a call": lambda batch: top_items_per_pair(
            model, batch, candidates, args.k, BEFORE_PAIRS_PER_CALL
        ),
        f"forward, {PAIRS_PER_CALL:,} pairs a call": lambda batch: top_items_per_pair(
            model, batch, candidates, args.k, PAIRS_PER_CALL
        ),
        f"score_grid, {PAIRS_PER_CALL:,} pairs a call": lambda batch: ncf_top_items(
            model, batch, nothing_seen[: len(batch)], candidates, args.k, PAIRS_PER_CALL
        )[0],
    }
    report_quiet()
    rates: dict[str, list[float]] = {name: [] for name in variants}
    ranked = {}
    for _ in range(args.repeats):
        for name, rank in variants.items():
            started = time.perf_counter()
            ranked[name] = np.concatenate([rank(batch) for batch in batches])
            rates[name].append(len(users) / (time.perf_counter() - started))
    medians = print_medians(rates, None, unit="users/s", digits=1)
    baseline_name, *others = variants
    for name in others:
        same = np.mean([len(set(a) & set(b)) / args.k for a, b in zip(ranked[baseline_name], ranked[name])])
        ratio = medians[name] / medians[baseline_name]
        print(f"{name}: {ratio:.2f}x the baseline; top-{args.k} items shared {same:.4f}")


if __name__ == "__main__":
    main()
