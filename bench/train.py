"""Training throughput: our DLRM against a plain PyTorch DLRM; Horovod, torch DDP and TorchRec-sharded
workers; TorchRec's embedding kernels against ours on one worker; our loader against plain readers;
NCF (samples/s) and Mult-VAE (users/s) on the e-commerce generator's interaction tables of the same
number of days and rows per day.

Generates, ingests and featurizes one data set, then runs every variant interleaved, several times;
prints median samples/s (rows/s for loaders) and the ratios, and writes artifacts/bench/train.json
(medians, and the parameter bytes each rank holds for the 2-worker data-parallel and sharded runs) and
train.png (the medians as bars).
The data-parallel and sharded variants both update the tables with Adagrad (FBGEMM's CPU kernels
have no Adam), so they differ only in where the tables live.

    .venv/bin/python bench/train.py [--rows-per-day 100000] [--days 4] [--repeats 3] [--max-cardinality 100]
"""

from __future__ import annotations

import json
import os
import time

import horovod.spark
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from harness import (
    BENCH_REPORTS,
    bench_setup,
    featurized_data,
    plot_rates,
    print_medians,
    report_quiet,
    shop_interactions,
)
from petastorm import make_batch_reader
from petastorm.pytorch import DataLoader
from torch import nn

from rec_plugin.interactions import SPLIT, TRAIN_SPLIT, ncf_schema, vae_schema
from rec_plugin.schema import Schema
from spark_jobs.generate_ecommerce import EcommerceConfig
from spark_jobs.train_cf import load_description, table_files
from training.data import BatchLoader
from training.launch import launch
from training.loop import TrainSpec, train_worker
from training.models import ModelConfig

BATCH = 1024


class PlainDLRM(nn.Module):
    """The textbook single-process DLRM of the same shape: one dense nn.Embedding per field."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        (dim,) = config.embedding_dims
        sizes = [config.table_of(f).num_embeddings for f in config.categorical_features]
        self.tables = nn.ModuleList(nn.Embedding(n, dim) for n in sizes)
        width = len(config.dense_features)
        self.bottom = nn.Sequential(nn.Linear(width, 64), nn.ReLU(), nn.Linear(64, dim), nn.ReLU())
        fields = len(sizes) + 1
        self.top = nn.Sequential(
            nn.Linear(dim + fields * (fields - 1) // 2, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(),
            nn.Linear(64, 1),
        )  # fmt: skip
        self.rows, self.cols = torch.triu_indices(fields, fields, offset=1)

    def forward(self, dense: torch.Tensor, categorical: torch.Tensor) -> torch.Tensor:
        x = self.bottom(dense)
        vectors = torch.stack([x] + [t(categorical[:, i]) for i, t in enumerate(self.tables)], dim=1)
        dots = torch.bmm(vectors, vectors.transpose(1, 2))[:, self.rows, self.cols]
        return self.top(torch.cat([x, dots], dim=1)).squeeze(1)


def columns(schema: Schema) -> tuple[str, list[str], list[str]]:
    """The label, continuous and categorical columns (the Criteo data has no list columns)."""
    return schema.label.name, schema.continuous.names, schema.categorical.names


def plain_training(config: ModelConfig, schema: Schema, files: list[str]) -> float:
    """samples/s of PlainDLRM with Adam over tensors already in memory (reading is not timed)."""
    label, dense_columns, categorical_columns = columns(schema)
    table = pa.concat_tables(
        pq.read_table(f, columns=[label, *dense_columns, *categorical_columns]) for f in files
    ).to_pandas()
    dense = torch.tensor(table[dense_columns].to_numpy(np.float32))
    categorical = torch.tensor(table[categorical_columns].to_numpy(np.int64))
    labels = torch.tensor(table[label].to_numpy(np.float32))
    torch.manual_seed(0)
    model = PlainDLRM(config)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    started = time.perf_counter()
    for batch in torch.randperm(len(labels)).split(BATCH):
        loss = nn.functional.binary_cross_entropy_with_logits(
            model(dense[batch], categorical[batch]), labels[batch]
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return len(labels) / (time.perf_counter() - started)


def pyarrow_reader(schema: Schema, files: list[str]) -> float:
    """rows/s of the plainest reader: each file whole with pyarrow, cut into tensors."""
    label, dense_columns, categorical_columns = columns(schema)
    started, rows = time.perf_counter(), 0
    for path in files:
        frame = pq.read_table(path, columns=[label, *dense_columns, *categorical_columns])
        dense = np.stack([frame[c].to_numpy() for c in dense_columns], axis=1)
        categorical = np.stack([frame[c].to_numpy() for c in categorical_columns], axis=1).astype(np.int64)
        for start in range(0, frame.num_rows, BATCH):
            (
                torch.from_numpy(dense[start : start + BATCH]),
                torch.from_numpy(categorical[start : start + BATCH]),
            )
        rows += frame.num_rows
    return rows / (time.perf_counter() - started)


def petastorm_torch_loader(schema: Schema, files: list[str], limit: int = 100_000) -> float:
    """rows/s of Petastorm's default torch DataLoader (collates row by row), over its first `limit` rows."""
    label, dense_columns, categorical_columns = columns(schema)
    started, rows = time.perf_counter(), 0
    fields = [label, *dense_columns, *categorical_columns]
    with DataLoader(make_batch_reader(files, schema_fields=fields), batch_size=BATCH) as loader:
        for batch in loader:
            rows += len(batch[label])
            if rows >= limit:
                break
    return rows / (time.perf_counter() - started)


def our_loader(file_set, schema: Schema) -> float:
    started = time.perf_counter()
    loader = BatchLoader(file_set, schema, BATCH)
    for _ in loader.epoch(0):
        pass
    return loader.rows_read / (time.perf_counter() - started)


REPORT = BENCH_REPORTS / "train.json"


def main() -> None:
    args, spark, config = bench_setup(__doc__, "bench-train", default_rows_per_day=100_000)
    data = featurized_data(spark, config, "bench-train-")
    scratch, train, model, schema = data.scratch, data.train, data.dlrm, data.schema
    placement: dict[str, list[int]] = {}
    shop = shop_interactions(
        spark, EcommerceConfig(days=args.days, rows_per_day=args.rows_per_day), "bench-train-shop-"
    )
    bags = load_description(spark, shop.layout).max_items_per_user
    cf_data = {
        "ncf": (ncf_schema(shop.schema), table_files(spark, shop.layout.ncf_train)),
        "multvae": (vae_schema(shop.schema, bags), table_files(spark, shop.layout.vae, (SPLIT, TRAIN_SPLIT))),
    }

    def collaborative(model_name: str, backend: str, workers: int) -> float:
        """samples/s of NCF ((user, item) rows) or Mult-VAE (users: one row per user's bag)."""
        cf_schema, files = cf_data[model_name]
        config = ModelConfig.from_schema(model_name, cf_schema)
        spec = TrainSpec(
            config.to_dict(), files.to_dict(), str(scratch / "cf-run"), TrainSpec.schema_dict(cf_schema),
            backend, progress=False,
        )  # fmt: skip
        return launch(spark, spec, workers)["samples_per_s"]

    def ours(backend: str, workers: int, sparse_optimizer: str = "adam", key: str = "") -> float:
        run, described = str(scratch / "run"), TrainSpec.schema_dict(schema)
        spec = TrainSpec(
            model.to_dict(), train.to_dict(), run, described, backend, progress=False,
            sparse_optimizer=sparse_optimizer,
        )  # fmt: skip
        if backend == "horovod":
            results = horovod.spark.run(
                train_worker, args=(spec.to_dict(),), num_proc=workers, nics={"lo"}, verbose=0
            )
            summary = results[0]
        else:
            summary = launch(spark, spec, workers)
        if key:
            placement[key] = summary["param_bytes_per_rank"]
        return summary["samples_per_s"]

    variants = {
        "dlrm_single": lambda: ours("single", 1),
        "plain_torch": lambda: plain_training(model, schema, train.files),
        "horovod_1w": lambda: ours("horovod", 1),
        "horovod_2w": lambda: ours("horovod", 2),
        "data_parallel_2w": lambda: ours("torch", 2, "adagrad", "data_parallel_2w"),
        "torchrec_sharded_2w": lambda: ours("torchrec", 2, "adagrad", "torchrec_sharded_2w"),
        "dlrm_single_adagrad": lambda: ours("single", 1, "adagrad"),
        "torchrec_1w": lambda: ours("torchrec", 1, "adagrad"),
        "ncf_single": lambda: collaborative("ncf", "single", 1),
        "ncf_torch_2w": lambda: collaborative("ncf", "torch", 2),
        "multvae_single": lambda: collaborative("multvae", "single", 1),
        "loader_ours": lambda: our_loader(train, schema),
        "loader_pyarrow": lambda: pyarrow_reader(schema, list(train.files)),
        "loader_petastorm_torch": lambda: petastorm_torch_loader(schema, list(train.files)),
    }
    descriptions = {
        "dlrm_single": "training: sparkrec DLRM, one process (Petastorm loader, SparseAdam + Adam)",
        "plain_torch": "training: plain PyTorch DLRM (in-memory tensors, dense Adam)",
        "horovod_1w": "training: sparkrec DLRM, Horovod on Spark, 1 worker",
        "horovod_2w": "training: sparkrec DLRM, Horovod on Spark, 2 workers",
        "data_parallel_2w": "training: torch DDP, 2 workers, every table on every rank (Adagrad)",
        "torchrec_sharded_2w": "training: TorchRec, 2 workers, tables sharded table-wise (Adagrad)",
        "dlrm_single_adagrad": "training: our tables (FusedTables, sparse Adagrad), one process",
        "torchrec_1w": "training: TorchRec's EmbeddingBagCollection (FBGEMM fused Adagrad), 1 worker",
        "ncf_single": "training: NeuMF on (user, item) rows, one process",
        "ncf_torch_2w": "training: NeuMF on (user, item) rows, torch DDP, 2 workers",
        "multvae_single": "training: Mult-VAE, users/s (one user's bag a row), one process",
        "loader_ours": "loader: sparkrec BatchLoader (Petastorm dummy pool, batched)",
        "loader_pyarrow": "loader: plain pyarrow read_table per file",
        "loader_petastorm_torch": "loader: Petastorm default torch DataLoader (row by row)",
    }
    report_quiet()
    rates: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.repeats):
        for name, run in variants.items():
            rates[name].append(run())
    report_quiet()
    medians = print_medians({descriptions[n]: r for n, r in rates.items()}, train.rows, "samples|rows/s")
    median = {name: medians[descriptions[name]] for name in variants}
    ratios = {
        "our DLRM / plain PyTorch DLRM": ("dlrm_single", "plain_torch"),
        "Horovod 2 workers / 1 worker": ("horovod_2w", "horovod_1w"),
        "sharded / data-parallel, 2 workers": ("torchrec_sharded_2w", "data_parallel_2w"),
        "TorchRec's tables / ours, 1 worker": ("torchrec_1w", "dlrm_single_adagrad"),
        "NCF / DLRM, one process": ("ncf_single", "dlrm_single"),
        "NCF torch DDP 2 workers / 1 process": ("ncf_torch_2w", "ncf_single"),
        "our loader / plain pyarrow": ("loader_ours", "loader_pyarrow"),
        "our loader / Petastorm's torch DataLoader": ("loader_ours", "loader_petastorm_torch"),
    }
    for label, (candidate, baseline) in ratios.items():
        print(f"{label}: {median[candidate] / median[baseline]:.2f}x")
    for key, per_rank in placement.items():
        print(f"{key}: parameter bytes per rank {per_rank}")
    report = {
        "rows": train.rows,
        "cores": os.cpu_count(),
        "max_cardinality": config.max_cardinality,
        "embedding_rows": sum(table.num_embeddings for table in model.tables),
        "repeats": args.repeats,
        **{name: {"samples_per_s": round(value, 1)} for name, value in median.items()},
    }
    for key, per_rank in placement.items():
        report[key]["param_bytes_per_rank"] = per_rank
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(json.dumps(report, indent=1) + "\n")
    title = f"training and loading, {train.rows:,} rows, {os.cpu_count()} cores (medians of {args.repeats})"
    plot_rates(
        median, "samples/s (users/s for multvae, rows/s for loaders)", title, REPORT.with_suffix(".png")
    )
    print(f"report: {REPORT} and its .png")


if __name__ == "__main__":
    main()
