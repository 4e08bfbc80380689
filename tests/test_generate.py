"""The generator: determinism, Criteo-like marginals, drift, and the planted truth's difficulty."""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import TEST_DATA

from rec_plugin.dataset import load_dataset
from rec_plugin.schema import Tags
from spark_jobs.generate import GeneratorConfig, generate
from training.metrics import auc

CRITEO = load_dataset("criteo")
DENSE, CATEGORICAL = CRITEO.tagged(Tags.CONTINUOUS), CRITEO.tagged(Tags.CATEGORICAL)
RAW_COLUMNS = CRITEO.names

SMALL = GeneratorConfig(days=2, rows_per_day=4_000, files_per_day=2, max_cardinality=500)
# SHA-256 of SMALL's files (name, then bytes, in name order), as the generator of 3e97e5b wrote them: a
# data set named by its config is the same whatever version of the generator regenerates it.
SMALL_DIGEST = "85ec48cc96cb36edb12e51616495593444b2f86a0977ef9fbcb0a74dfe24cf7d"


def read_day(root: Path, day: int) -> pd.DataFrame:
    frames = []
    for path in sorted((root / "raw" / f"day_{day}").glob("part-*")):
        frames.append(pd.read_csv(path, sep="\t", header=None, names=RAW_COLUMNS, dtype=str))
    return pd.concat(frames, ignore_index=True)


def raw_bytes(root: Path) -> dict[str, bytes]:
    files = sorted((root / "raw").rglob("part-*"))
    return {
        str(p.relative_to(root)): gzip.decompress(p.read_bytes()) if p.suffix == ".gz" else p.read_bytes()
        for p in files
    }


def test_same_seed_same_bytes_other_seed_other_bytes(spark, tmp_path):
    generate(spark, str(tmp_path / "a"), SMALL)
    generate(spark, str(tmp_path / "b"), SMALL)
    generate(spark, str(tmp_path / "c"), GeneratorConfig(**{**SMALL.__dict__, "seed": 7}))
    first, second, third = (raw_bytes(tmp_path / name) for name in "abc")
    assert list(first) == [
        "raw/day_0/part-00000.tsv",
        "raw/day_0/part-00001.tsv",
        "raw/day_1/part-00000.tsv",
        "raw/day_1/part-00001.tsv",
    ]
    assert first == second
    assert first != third
    digest = hashlib.sha256()
    for name, content in first.items():
        digest.update(name.encode())
        digest.update(content)
    assert digest.hexdigest() == SMALL_DIGEST


def test_gzip_output_holds_the_same_lines(spark, tmp_path):
    generate(spark, str(tmp_path / "plain"), SMALL)
    generate(spark, str(tmp_path / "gz"), GeneratorConfig(**{**SMALL.__dict__, "compression": "gzip"}))
    plain, gz = raw_bytes(tmp_path / "plain"), raw_bytes(tmp_path / "gz")
    assert [k + ".gz" for k in plain] == list(gz)
    assert list(plain.values()) == list(gz.values())


def test_criteo_format_and_marginals(default_data):
    root, report = default_data
    day = read_day(root, 0)
    assert len(day) == TEST_DATA.rows_per_day
    assert 0.23 < report["positive_rate"] < 0.27
    assert set(day["label"]) == {"0", "1"}
    tokens = day[CATEGORICAL].stack()
    assert tokens.str.fullmatch("[0-9a-f]{8}").all()
    dense = day[DENSE].apply(pd.to_numeric)
    missing = dense.isna().mean()
    assert missing.min() == 0.0 and 0.35 < missing.max() <= 0.46
    assert (dense.min() < 0).sum() >= 1, "some integer columns carry negative values"
    tail_ratio = (dense.quantile(0.999) / dense.quantile(0.5).clip(lower=1)).max()
    assert tail_ratio > 50, "integer features are heavy-tailed"
    distinct = day[CATEGORICAL].nunique()
    assert distinct.min() <= 6 and TEST_DATA.max_cardinality / 2 < distinct.max() <= TEST_DATA.max_cardinality
    top_share = day["C" + str(int(distinct.idxmax()[1:]))].value_counts(normalize=True)
    assert top_share.iloc[0] > 20 * top_share.iloc[50], "category frequencies follow a power law"


def test_later_days_bring_new_category_values(default_data):
    root, _ = default_data
    first, last = read_day(root, 0), read_day(root, 3)
    widest = first[CATEGORICAL].nunique().idxmax()
    seen = set(first[widest].dropna())
    unseen_share = (~last[widest].dropna().isin(seen)).mean()
    # Every value born after day 0 is unseen on day 0: about new_value_rate of the last day's values.
    assert TEST_DATA.new_value_rate / 2 < unseen_share < 2 * TEST_DATA.new_value_rate


def test_oracle_auc_is_criteo_like_and_first_order_model_falls_short(default_data):
    root, report = default_data
    assert 0.78 <= report["oracle_auc"] <= 0.82
    train = pd.concat([read_day(root, d) for d in (0, 1, 2)], ignore_index=True)
    test = read_day(root, 3)
    oracle = pd.read_parquet(root / "oracle")  # Delta's data files; one version, no deletes
    oracle = oracle[oracle["day"] == 3]
    logistic_auc = first_order_logistic_auc(train, test)
    oracle_auc = auc(oracle["label"].to_numpy(), oracle["p_click"].to_numpy())
    assert oracle_auc - logistic_auc > 0.03, (oracle_auc, logistic_auc)


def first_order_logistic_auc(train: pd.DataFrame, test: pd.DataFrame) -> float:
    """A fitted logistic regression on one-hot categories and log dense values: first-order only."""

    def encode(frame: pd.DataFrame, vocabularies: list[pd.Index]) -> tuple[torch.Tensor, torch.Tensor]:
        cats = np.stack([v.get_indexer(frame[c]) + 1 for c, v in zip(CATEGORICAL, vocabularies)], axis=1)
        values = frame[DENSE].apply(pd.to_numeric)
        dense = np.concatenate([np.log1p(values.clip(lower=0).fillna(0)), values.isna()], axis=1)
        return torch.tensor(cats, dtype=torch.long), torch.tensor(dense, dtype=torch.float32)

    vocabularies = [pd.Index(train[c].dropna().unique()) for c in CATEGORICAL]
    cats, dense = encode(train, vocabularies)
    labels = torch.tensor(train["label"].astype(float).to_numpy(), dtype=torch.float32)
    offsets = torch.tensor(np.cumsum([0] + [len(v) + 1 for v in vocabularies[:-1]]))
    torch.manual_seed(0)
    weights = torch.nn.EmbeddingBag(sum(len(v) + 1 for v in vocabularies), 1, mode="sum")
    torch.nn.init.zeros_(weights.weight)
    linear = torch.nn.Linear(dense.shape[1], 1)
    optimizer = torch.optim.Adam([*weights.parameters(), *linear.parameters()], lr=0.02)
    for _epoch in range(3):
        for batch in torch.randperm(len(labels)).split(2048):
            logits = weights(cats[batch] + offsets).squeeze(1) + linear(dense[batch]).squeeze(1)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    test_cats, test_dense = encode(test, vocabularies)
    with torch.no_grad():
        scores = weights(test_cats + offsets).squeeze(1) + linear(test_dense).squeeze(1)
    return auc(test["label"].astype(int).to_numpy(), scores.numpy())


@pytest.mark.parametrize("bad", [dict(rows_per_day=1001, files_per_day=2), dict(compression="zip")])
def test_bad_config_is_a_clear_error(bad):
    with pytest.raises(ValueError):
        GeneratorConfig(**bad)
