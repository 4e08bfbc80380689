"""Criteo 1TB scale plan: embedding memory, the cluster, and wall time and bottleneck per stage.

Every input is either MEASURED by this project (value, unit, the command, the machine) or CITED from a
published source (value, unit, where it is from). The arithmetic below turns them into markdown tables;
docs/scale.md explains them. When a bench report exists (artifacts/bench/train.json, train_gpu.json,
etl.json) its figure replaces the quoted one and the printed source says so. Standard library only, so
it runs before `make setup`:

    .venv/bin/python bench/scale_plan.py [--out scale_tables.md] [--cpu-cores 256] [--gpus 8]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

DEV = "2-core CPU dev machine"


@dataclass(frozen=True)
class Figure:
    """One input number and where it comes from: the command and machine, or the citation."""

    value: float
    unit: str
    source: str
    machine: str = ""  # empty for cited figures
    cores: int = 0  # CPU cores the measurement used (0: not a per-core figure)

    def per_core(self) -> float:
        """Rate per core; the plan scales CPU stages linearly with cores (rough from 2 cores)."""
        return self.value / self.cores


MEASURED: dict[str, Figure] = {
    "ingest": Figure(
        26_700,
        "rows/s",
        "bench/featurize.py-style run, 8M rows, max cardinality 1M (quoted in issue #16)",
        DEV,
        cores=2,
    ),
    "featurize": Figure(
        44_600,
        "rows/s",
        "bench/featurize.py-style run, 8M rows, max cardinality 1M (quoted in issue #16)",
        DEV,
        cores=2,
    ),
    "ingest_duckdb": Figure(252_000, "rows/s", "DuckDB, same transforms (quoted in issue #16)", DEV, cores=2),
    "featurize_duckdb": Figure(
        628_000, "rows/s", "DuckDB, same transforms (quoted in issue #16)", DEV, cores=2
    ),
    "loader": Figure(
        883_000,
        "rows/s",
        ".venv/bin/python bench/before_after.py --baseline 7f5fa48 --rounds 3 (4 days x 300k generated rows)",
        DEV,
        cores=2,
    ),
    "train_cpu": Figure(
        85_000,
        "samples/s",
        ".venv/bin/python bench/before_after.py --baseline 7f5fa48 --rounds 3 (single-process DLRM)",
        DEV,
        cores=2,
    ),
    "train_gpu": Figure(
        5_080_000,
        "samples/s",
        "PYTHONPATH=. python bench/train_gpu.py --batch-size 32768 (fp32, dim 16, tables capped at 1M rows, "
        "synthetic batches; quoted in issue #17 and the README)",
        "1x H200",
    ),
    "serve_p50_ms": Figure(
        32.19,
        "ms per 2,048-row request (p50)",
        "python -m spark_jobs.cli demo --out artifacts/demo (Triton ensemble, one request at a time)",
        DEV,
    ),
    "serve_p99_ms": Figure(
        75.59,
        "ms per 2,048-row request (p99)",
        "python -m spark_jobs.cli demo --out artifacts/demo",
        DEV,
    ),
    "serve_bench_grpc": Figure(
        128_000,
        "rows/s",
        ".venv/bin/python bench/serve.py (gRPC, batch 2048, one at a time; README)",
        DEV,
        cores=2,
    ),
}
TRAIN_GPU_DIM = 16  # ModelConfig.from_schema's default embedding_dim, which bench/train_gpu.py uses
SERVE_BATCH = 2048

DLE = "NVIDIA/DeepLearningExamples@729963dd"
MLPERF_REF = "mlcommons/training@3e2f7317 recommendation_v2/torchrec_dlrm/README.MD"
CITED: dict[str, Figure] = {
    "rows": Figure(
        4_373_472_329, "rows (24 days)", "intel-analytics/ipex-llm python/friesian/example/dlrm/README.md"
    ),
    "train_rows": Figure(
        4_195_197_692,
        "rows (days 0-22)",
        "intel-analytics/ipex-llm python/friesian/example/dlrm/README.md; MLPerf v3.0 logs' train_samples",
    ),
    "days": Figure(24, "days", "huggingface.co/datasets/criteo/CriteoClickLogs (Criteo's dataset card)"),
    "int_features": Figure(13, "integer features", "huggingface.co/datasets/criteo/CriteoClickLogs"),
    "cat_features": Figure(26, "categorical features", "huggingface.co/datasets/criteo/CriteoClickLogs"),
    "raw_bytes": Figure(
        1.3e12,
        "bytes uncompressed (~1.3 TB)",
        "NVIDIA-Merlin/Merlin@2770de35 examples/scaling-criteo/02-ETL-with-NVTabular.ipynb",
    ),
    "nvt_1gpu_min": Figure(
        13.8,
        "min, NVTabular ETL of Criteo 1TB on 1x A100",
        "NVIDIA-Merlin/Merlin@2770de35 examples/scaling-criteo/02-ETL-with-NVTabular.ipynb "
        "(nvidia-merlin.github.io/Merlin/v23.02.00/examples/scaling-criteo/02-ETL-with-NVTabular.html)",
    ),
    "nvt_8gpu_min": Figure(
        1.9,
        "min, NVTabular ETL of Criteo 1TB on 8x A100",
        "same notebook as above",
    ),
    "dle_8xa100_fl3_amp": Figure(
        16_500_000,
        "samples/s, DLRM FL=3 dim 128, 8x A100 80GB, AMP, 8k/GPU",
        f"{DLE} PyTorch/Recommendation/DLRM/README.md (Training performance: DGX A100)",
    ),
    "dle_1xa100_fl15_amp": Figure(
        4_020_000,
        "samples/s, DLRM FL=15 dim 128, 1x A100 80GB, AMP, 64k",
        f"{DLE} PyTorch/Recommendation/DLRM/README.md (Training performance: DGX A100)",
    ),
    "torchrec_8xa100_fl3": Figure(
        5_373_952,
        "samples/s, TorchRec DLRM FL=3 dim 128, 8x A100 40GB, 8192/GPU (13m40s/epoch)",
        MLPERF_REF,
    ),
    "mlperf_v30_dgxh100_min": Figure(
        4.18,
        "min to AUC target, DLRM-DCNv2, 1x DGX H100 (8x H100), HugeCTR",
        "mlcommons/training_results_v3.0@63e326c4 NVIDIA/results/dgxh100_ngc23.04_merlin_hugectr/dlrm_dcnv2/"
        "result_0..9.txt (olympic mean of the 10 runs below, computed here)",
    ),
    "host_cores": Figure(96, "vCPUs per 8-GPU host (AWS p4d.24xlarge)", f"{MLPERF_REF} (tested instances)"),
    "host_memory_gb": Figure(
        1152, "GB RAM per 8-GPU host (AWS p4d.24xlarge)", f"{MLPERF_REF} (tested instances)"
    ),
}
# Run times (run_stop - run_start, minutes) of the 10 MLPerf v3.0 runs cited above.
MLPERF_V30_RUNS_MIN = (4.106, 4.115, 4.107, 4.120, 4.105, 4.956, 4.682, 4.104, 4.124, 4.110)

# Rows per embedding table (one per categorical field) of Criteo 1TB: frequency threshold 15 and 3 from
# DLE TensorFlow2/Recommendation/DLRM_and_DCNv2/dataloading/generate_feature_spec.py (its comments: 16 GiB
# and 85 GiB at dim 128); the MLPerf DLRM-DCNv2 tables (capped at 40M rows) from mlcommons/training
# recommendation_v2/torchrec_dlrm/README.MD.
VOCABULARIES: dict[str, tuple[tuple[int, ...], str]] = {
    "FL=15": (
        (7912889, 33823, 17139, 7339, 20046, 4, 7105, 1382, 63, 5554114, 582469, 245828, 11, 2209,
         10667, 104, 4, 968, 15, 8165896, 2675940, 7156453, 302516, 12022, 97, 35),
        f"{DLE} TensorFlow2/Recommendation/DLRM_and_DCNv2/dataloading/generate_feature_spec.py",
    ),
    "FL=3": (
        (45833188, 36747, 1572176, 345139, 11, 2209, 11268, 128, 4, 975, 15, 48937457, 17246, 11316796,
         40094537, 452104, 12607, 105, 36, 7414, 20244, 4, 7115, 1442, 63, 29275261),
        f"{DLE} TensorFlow2/Recommendation/DLRM_and_DCNv2/dataloading/generate_feature_spec.py",
    ),
    "MLPerf DCNv2": (
        (40000000, 39060, 17295, 7424, 20265, 3, 7122, 1543, 63, 40000000, 3067956, 405282, 10, 2209,
         11938, 155, 4, 976, 14, 40000000, 40000000, 40000000, 590152, 12973, 108, 36),
        f"{MLPERF_REF} (--num_embeddings_per_feature)",
    ),
}  # fmt: skip
DIMS = (64, 128)
FP32 = 4
# Optimizer state per weight: SparseAdam (this project, training/step.py) keeps exp_avg and exp_avg_sq
# as dense tensors the size of each table, so 3x the weights; Adagrad (MLPerf's) keeps one accumulator, 2x.
OPTIMIZERS = {"Adagrad": 2, "Adam": 3}
PLAN_OPTIMIZER = "Adam"
GPUS = {"H200": 141e9, "A100 80GB": 80e9}

# Assumptions (choices, not figures); docs/scale.md lists them.
USABLE_GPU_MEMORY = 0.8  # the rest: activations, all-to-all buffers, CUDA context
# Per-GPU rate on 8 sharded GPUs over that on 1 GPU, from NVIDIA's DLRM README (~0.51).
SHARDED_EFFICIENCY = CITED["dle_8xa100_fl3_amp"].value / 8 / CITED["dle_1xa100_fl15_amp"].value
LOADER_CORE_SHARE = 0.5  # of the GPU host's cores; the rest run the training processes
USABLE_HOST_MEMORY = 0.8
CORES_PER_EXECUTOR = 8
MEMORY_PER_CORE_GB = 4
SCORED_ROWS = int(CITED["rows"].value - CITED["train_rows"].value)  # day 23, the held-out day


def load_overrides(reports: Path) -> dict[str, Figure]:
    """Figures from the bench JSON reports that exist: a fresh measurement beats a quoted one."""
    found: dict[str, Figure] = {}
    readers = {"train.json": _from_train, "train_gpu.json": _from_train_gpu, "etl.json": _from_etl}
    for name, reader in readers.items():
        path = reports / name
        if not path.exists():
            continue
        try:
            found.update(reader(json.loads(path.read_text()), str(path)))
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            print(f"scale_plan: {path} not used ({error!r})", file=sys.stderr)
    return found


def _from_train(report: dict, path: str) -> dict[str, Figure]:
    """bench/train.py's report: single-process DLRM samples/s, our loader's rows/s, and the other
    training variants for reference (with each rank's parameter bytes where the report has them)."""
    cores = int(report.get("cores", 2))
    machine = report.get("machine", f"{cores} cores (assumed: the report does not say)")
    found = {}
    for key, entry in report.items():
        if not isinstance(entry, dict) or "samples_per_s" not in entry:
            continue
        if key.startswith("loader_"):
            if key == "loader_ours":
                found["loader"] = Figure(
                    float(entry["samples_per_s"]), "rows/s", f"{path} [{key}]", machine, cores
                )
            continue
        unit = "samples/s"
        if "param_bytes_per_rank" in entry:
            per_rank = ", ".join(f"{b / 1e6:,.2f}" for b in entry["param_bytes_per_rank"])
            unit += f" (MB of parameters per rank: {per_rank})"
        name = "train_cpu" if key == "dlrm_single" else f"train_cpu_{key}"
        found[name] = Figure(float(entry["samples_per_s"]), unit, f"{path} [{key}]", machine, cores)
    return found


def _from_train_gpu(report: dict, path: str) -> dict[str, Figure]:
    """bench/train_gpu.py's report: the fp32 median samples/s (the memory plan is fp32 too)."""
    rate = float(report["samples_per_s"]["fp32"])
    batch = report["batch_size"]
    source = f"{path} (bench/train_gpu.py, fp32, batch {batch}, dim {TRAIN_GPU_DIM}, synthetic)"
    return {"train_gpu": Figure(rate, "samples/s", source, f"1x {report['device']}")}


def _from_etl(report: dict, path: str) -> dict[str, Figure]:
    """The ETL bench report: sparkrec and DuckDB ingest and featurize rows/s."""
    cores = int(report.get("cores", 2))
    note = f"{path} ({report['rows']:,} rows, max cardinality {report['max_cardinality']:,})"
    machine = report.get("machine", f"{cores} cores (assumed: the report does not say)")
    names = {"sparkrec_rows_per_s": "", "duckdb_rows_per_s": "_duckdb"}
    found = {}
    for stage in ("ingest", "featurize"):
        for key, suffix in names.items():
            if key in report.get(stage, {}):
                found[stage + suffix] = Figure(float(report[stage][key]), "rows/s", note, machine, cores)
    return found


def table(headers: list[str], rows: list[list[str]]) -> str:
    """A markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def duration(seconds: float) -> str:
    """Seconds as s, min or h, whichever reads best."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def rate(value: float) -> str:
    """A rate as k or M per second."""
    return f"{value / 1e6:.2f}M/s" if value >= 1e6 else f"{value / 1e3:.1f}k/s"


def gb(value: float) -> str:
    """Bytes as decimal GB."""
    return f"{value / 1e9:,.1f}"


def gpus_table_wise(table_bytes: list[float], capacity: float) -> int | None:
    """GPUs needed when whole tables are placed on GPUs (TorchRec's table-wise sharding), by
    first-fit decreasing; None when the largest table alone does not fit one GPU."""
    if max(table_bytes) > capacity:
        return None
    bins: list[float] = []
    for size in sorted(table_bytes, reverse=True):
        for i, used in enumerate(bins):
            if used + size <= capacity:
                bins[i] += size
                break
        else:
            bins.append(size)
    return len(bins)


def memory_rows() -> tuple[list[list[str]], dict[tuple[str, int], dict[str, float]]]:
    """Per vocabulary and dim: rows, fp32 weights, with optimizer state, and GPUs needed table-wise."""
    rows, plan = [], {}
    for name, (sizes, _) in VOCABULARIES.items():
        for dim in DIMS:
            weights = [n * dim * FP32 for n in sizes]
            total = sum(weights)
            factor = OPTIMIZERS[PLAN_OPTIMIZER]
            needed = {
                gpu: gpus_table_wise([w * factor for w in weights], memory * USABLE_GPU_MEMORY)
                for gpu, memory in GPUS.items()
            }
            plan[(name, dim)] = {"weights": total, "h200": needed["H200"] or math.inf}
            rows.append([
                name, str(dim), f"{sum(sizes) / 1e6:,.1f}M", f"{max(sizes) / 1e6:,.1f}M", gb(total),
                gb(total * OPTIMIZERS["Adagrad"]), gb(total * factor), gb(max(weights) * factor),
                *[str(n) if n else "no (largest table too big)" for n in needed.values()],
            ])  # fmt: skip
    return rows, plan


def etl_rows(
    measured: dict[str, Figure], cpu_cores: int, etl_gpus: int
) -> tuple[list[list[str]], float, float]:
    """Ingest and featurize wall time on CPU Spark (measured per-core rates) and RAPIDS (cited NVTabular)."""
    total = CITED["rows"].value
    host_cores = CITED["host_cores"].value * math.ceil(etl_gpus / 8)
    ingest_cpu = total / (measured["ingest"].per_core() * cpu_cores)
    featurize_cpu = total / (measured["featurize"].per_core() * cpu_cores)
    ingest_rapids = total / (measured["ingest"].per_core() * host_cores)
    minutes = CITED["nvt_1gpu_min"].value if etl_gpus == 1 else CITED["nvt_8gpu_min"].value * 8 / etl_gpus
    featurize_rapids = minutes * 60
    read_per_core = measured["ingest"].per_core() * CITED["raw_bytes"].value / total
    largest = ", ".join(f"{max(sizes) / 1e6:.1f}M ({name})" for name, (sizes, _) in VOCABULARIES.items())
    ingest_note = f"CPU: parse + validate; reads {read_per_core / 1e6:.1f} MB/s a core"
    featurize_note = f"CPU, vocabulary shuffle; largest broadcast vocabulary {largest}"
    rows = [
        ["ingest", duration(ingest_cpu), ingest_note,
         duration(ingest_rapids), f"CPU: no GPU figure for ingest; {host_cores:.0f} host cores"],
        ["featurize", duration(featurize_cpu), featurize_note,
         duration(featurize_rapids), "GPU, at NVTabular's cited rate (assumed, not measured)"],
    ]  # fmt: skip
    return rows, ingest_cpu + featurize_cpu, ingest_rapids + featurize_rapids


def training_rows(
    measured: dict[str, Figure], plan: dict[tuple[str, int], dict[str, float]], gpus: int
) -> tuple[list[list[str]], dict[tuple[str, int], float]]:
    """One epoch (days 0-22) of loading and training on H200s; scoring day 23 on one host's CPUs."""
    samples, host_cores = CITED["train_rows"].value, CITED["host_cores"].value
    per_replica = SERVE_BATCH / (measured["serve_p50_ms"].value / 1000)
    rows, totals = [], {}
    for (name, dim), memory in plan.items():
        needed = memory["h200"]
        if math.isinf(needed):  # the largest table with its optimizer state exceeds one H200
            rows.append([name, str(dim), "no: needs row-wise sharding", *[""] * 6])
            continue
        used = int(max(gpus, needed))
        hosts = math.ceil(used / 8)
        per_gpu = measured["train_gpu"].value * TRAIN_GPU_DIM / dim * (SHARDED_EFFICIENCY if used > 1 else 1)
        train = samples / (per_gpu * used)
        loader_cores = host_cores * LOADER_CORE_SHARE * hosts
        loader = samples / (measured["loader"].per_core() * loader_cores)
        cores_per_gpu = per_gpu / measured["loader"].per_core()
        limit = "GPU memory (more GPUs than asked)" if needed > gpus else "GPU: lookups + optimizer"
        copies = math.floor(CITED["host_memory_gb"].value * 1e9 * USABLE_HOST_MEMORY / memory["weights"])
        replicas = min(int(host_cores) // 2, copies)
        score = SCORED_ROWS / (per_replica * replicas) if replicas else math.inf
        if replicas == host_cores // 2:
            score_limit = f"CPU: {replicas} replicas"
        else:
            score_limit = f"host memory: {replicas} copies of {gb(memory['weights'])} GB"
        totals[(name, dim)] = max(train, loader) + score
        rows.append([
            name, str(dim), f"{used} ({hosts} host{'s' if hosts > 1 else ''})", duration(train),
            f"{limit}; {rate(per_gpu)} per GPU", duration(loader),
            f"CPU: {cores_per_gpu:.1f} cores/GPU needed, {loader_cores / used:.0f} given",
            duration(score), score_limit,
        ])  # fmt: skip
    return rows, totals


def cross_check_rows(measured: dict[str, Figure], gpus: int) -> list[list[str]]:
    """Our dim-128 training estimate next to published DLRM training rates on Criteo 1TB."""
    samples = CITED["train_rows"].value
    ours = measured["train_gpu"].value * TRAIN_GPU_DIM / 128 * (SHARDED_EFFICIENCY if gpus > 1 else 1) * gpus
    published = [
        ("NVIDIA DLRM, PyTorch, AMP, FL=3", 8, "A100 80GB", CITED["dle_8xa100_fl3_amp"].value),
        ("NVIDIA DLRM, PyTorch, AMP, FL=15", 1, "A100 80GB", CITED["dle_1xa100_fl15_amp"].value),
        ("TorchRec DLRM, FL=3", 8, "A100 40GB", CITED["torchrec_8xa100_fl3"].value),
    ]
    rows = [["this plan (estimate), any FL", str(gpus), "H200", rate(ours), rate(ours / gpus),
             duration(samples / ours)]]  # fmt: skip
    for system, count, gpu, value in published:
        rows.append([system, str(count), gpu, rate(value), rate(value / count), duration(samples / value)])
    return rows


def report(measured: dict[str, Figure], cpu_cores: int, gpus: int, etl_gpus: int) -> str:
    """All tables, as markdown."""
    out = ["## Inputs measured here\n"]
    out.append(table(
        ["figure", "value", "unit", "per core", "machine", "command / report"],
        [[k, number(f.value), f.unit, f"{f.per_core():,.0f}" if f.cores else "", f.machine, f.source]
         for k, f in measured.items()],
    ))  # fmt: skip
    per_replica = SERVE_BATCH / (measured["serve_p50_ms"].value / 1000)
    out.append(
        f"\nScoring rate: {SERVE_BATCH} rows / p50 {measured['serve_p50_ms'].value} ms = "
        f"{per_replica:,.0f} rows/s per 2-core Triton replica, one request in flight."
    )
    out.append("\n## Inputs cited\n")
    out.append(table(
        ["figure", "value", "unit", "source"],
        [[k, number(f.value), f.unit, f.source] for k, f in CITED.items()]
        + [[name, f"{sum(sizes):,}", "embedding rows, 26 tables", source]
           for name, (sizes, source) in VOCABULARIES.items()],
    ))  # fmt: skip
    runs = sorted(MLPERF_V30_RUNS_MIN)
    out.append(
        f"\nMLPerf v3.0 runs (min): {', '.join(f'{r:.3f}' for r in MLPERF_V30_RUNS_MIN)}; without the "
        f"fastest and the slowest, the mean is {sum(runs[1:-1]) / len(runs[1:-1]):.2f} min."
    )
    rows, plan = memory_rows()
    out.append(
        f"\n## Embedding memory (fp32, decimal GB; GPUs with {USABLE_GPU_MEMORY:.0%} of memory for tables "
        f"and {PLAN_OPTIMIZER} state)\n"
    )
    out.append(table(
        ["vocabulary", "dim", "rows", "largest table", "weights GB", "+Adagrad GB", "+Adam GB",
         "largest table +Adam GB", "H200s (table-wise)", "A100 80GB (table-wise)"],
        rows,
    ))  # fmt: skip
    etl, etl_cpu, etl_rapids = etl_rows(measured, cpu_cores, etl_gpus)
    out.append(
        f"\n## Ingest and featurize, {CITED['rows'].value:,.0f} rows\n\n"
        f"CPU Spark: {cpu_cores // CORES_PER_EXECUTOR} executors x {CORES_PER_EXECUTOR} cores = {cpu_cores} "
        f"cores, {CORES_PER_EXECUTOR * MEMORY_PER_CORE_GB} GB each. RAPIDS: {etl_gpus} A100 executors "
        f"(one GPU each) on {math.ceil(etl_gpus / 8)} host(s) of {CITED['host_cores'].value:.0f} cores.\n"
    )
    out.append(table(["stage", "CPU Spark", "bottleneck", "RAPIDS", "bottleneck"], etl))
    train, totals = training_rows(measured, plan, gpus)
    out.append(
        f"\n## Loader and training (1 epoch, {CITED['train_rows'].value:,.0f} samples), scoring (day 23, "
        f"{SCORED_ROWS:,} rows)\n\nTraining: H200s, tables sharded table-wise, {PLAN_OPTIMIZER}. Loader: "
        f"{LOADER_CORE_SHARE:.0%} of each host's {CITED['host_cores'].value:.0f} cores. Scoring: one host's "
        f"CPUs and {CITED['host_memory_gb'].value:.0f} GB, one model copy per 2-core Triton replica.\n"
    )
    headers = [
        "vocabulary",
        "dim",
        "GPUs",
        "train",
        "bottleneck",
        "loader",
        "bottleneck",
        "score",
        "bottleneck",
    ]
    out.append(table(headers, train))
    out.append(f"\n## Training cross-check: dim 128, one epoch of {CITED['train_rows'].value:,.0f} samples\n")
    out.append(table(
        ["system", "GPUs", "GPU", "samples/s", "per GPU", "epoch"], cross_check_rows(measured, gpus)
    ))  # fmt: skip
    out.append("\n## End to end: ingest + featurize + max(loader, train) + score\n")
    out.append(table(
        ["vocabulary", "dim", "with CPU Spark ETL", "with RAPIDS ETL"],
        [[name, str(dim), duration(etl_cpu + t), duration(etl_rapids + t)]
         for (name, dim), t in totals.items()],
    ))  # fmt: skip
    return "\n".join(out) + "\n"


def number(value: float) -> str:
    """A figure with thousands separators and no trailing zeros."""
    return f"{value:,.2f}".rstrip("0").rstrip(".")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="also write the tables to this file")
    parser.add_argument("--reports", type=Path, default=Path("artifacts/bench"), help="bench JSON reports")
    parser.add_argument("--cpu-cores", type=int, default=256, help="CPU Spark executor cores in all")
    parser.add_argument("--gpus", type=int, default=8, help="H200s for training")
    parser.add_argument("--etl-gpus", type=int, default=8, help="A100 executors for RAPIDS ETL")
    args = parser.parse_args()
    measured = {**MEASURED, **load_overrides(args.reports)}
    text = report(measured, args.cpu_cores, args.gpus, args.etl_gpus)
    print(text, end="")
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
