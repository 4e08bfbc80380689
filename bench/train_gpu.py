"""DLRM training-step throughput on one device: fp32 against TF32 and bf16 autocast (AMP), as the
training loop's --precision sets them (training/step.py).

The model, optimizers and loss are the training loop's (training/models, training/step.py); the
batches are synthetic, of Criteo's shape (13 dense features, 26 categorical fields with the Criteo
Kaggle cardinalities capped at 1M rows each), made on the device before timing, so data loading is
not measured here (bench/train.py measures the loader). Variants run interleaved, several rounds;
prints the median samples/s of each and its ratio to fp32, and writes train_gpu.json and a bar chart.
Needs only torch and matplotlib, so it runs from a plain checkout on a GPU host:

    PYTHONPATH=. python bench/train_gpu.py [--device cuda] [--batch-size 4096] [--steps 100] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import torch  # noqa: E402

from rec_plugin.dataset import load_dataset  # noqa: E402
from rec_plugin.schema import ColumnSchema, Schema, Tags  # noqa: E402
from training.models import ModelConfig, build_model, example_inputs  # noqa: E402
from training.step import PRECISIONS, bce_loss, optimizers, precision  # noqa: E402

# Criteo Kaggle (display advertising challenge) distinct values per categorical field.
KAGGLE_CARDINALITIES = (
    1460, 583, 10131227, 2202608, 305, 24, 12517, 633, 3, 93145, 5683, 8351593, 3194,
    27, 14992, 5461306, 10, 5652, 2173, 4, 7046547, 18, 15, 286181, 105, 142572,
)  # fmt: skip
CAP = 1_000_000
BATCHES_ON_DEVICE = 32  # cycled through; distinct ids per batch, as in training
SPARSE_LR, DENSE_LR = 0.01, 3e-3  # TrainSpec's defaults


def variants(device: str) -> tuple[str, ...]:
    """The training loop's precisions (training/step.py) that differ on `device` (no TF32 on CPU)."""
    return tuple(name for name in PRECISIONS if device.startswith("cuda") or name != "tf32")


def criteo_schema() -> Schema:
    """Criteo's layout (conf/datasets/criteo.json) as a workflow schema: its label, continuous and
    categorical columns, the latter sized by the Kaggle cardinalities."""
    criteo = load_dataset("criteo")
    categorical = criteo.tagged(Tags.CATEGORICAL)
    return Schema(
        (
            ColumnSchema(criteo.label, "float32", (Tags.LABEL,)),
            *[ColumnSchema(name, "float32", (Tags.CONTINUOUS,)) for name in criteo.tagged(Tags.CONTINUOUS)],
            *[
                ColumnSchema(name, "int32", (Tags.CATEGORICAL,), cardinality=min(size, CAP))
                for name, size in zip(categorical, KAGGLE_CARDINALITIES, strict=True)
            ],
        )
    )


Batch = tuple[torch.Tensor, torch.Tensor, list[torch.Tensor], list[torch.Tensor], torch.Tensor, torch.Tensor]


def synthetic_batches(config: ModelConfig, batch_size: int, device: str) -> list[Batch]:
    """The model's inputs (dense, ids, list values, list offsets), a label and a weight, on the device."""
    generator = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(BATCHES_ON_DEVICE):
        dense, ids, values, offsets = example_inputs(config, batch_size, generator)
        label = (torch.rand(batch_size, generator=generator) < 0.25).float()
        batches.append(
            (
                dense.to(device),
                ids.to(device),
                [v.to(device) for v in values],
                [o.to(device) for o in offsets],
                label.to(device),
                torch.ones(batch_size, device=device),
            )
        )
    return batches


def samples_per_s(
    model: torch.nn.Module,
    steppers: list[torch.optim.Optimizer],
    batches: list[Batch],
    steps: int,
    variant: str,
) -> float:
    """Times `steps` training steps (forward at precision `variant`, loss, backward, both optimizers)."""
    device = batches[0][0].device

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    sync()
    started = time.perf_counter()
    for step in range(steps):
        dense, ids, values, offsets, label, weight = batches[step % len(batches)]
        with precision(variant, device):
            logits = model(dense, ids, values, offsets)
        loss = bce_loss(logits.float(), label, weight)
        for stepper in steppers:
            stepper.zero_grad()
        loss.backward()
        for stepper in steppers:
            stepper.step()
    sync()
    return steps * len(batches[0][0]) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("artifacts/bench"))
    args = parser.parse_args()
    config = ModelConfig.from_schema("dlrm", criteo_schema())
    name = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else "cpu"
    rows = sum(table.num_embeddings for table in config.tables)
    print(f"device: {name}; torch {torch.__version__}; batch {args.batch_size}; {rows:,} embedding rows")
    batches = synthetic_batches(config, args.batch_size, args.device)
    runs = {}
    for variant in variants(args.device):
        torch.manual_seed(0)
        model = build_model(config).to(args.device)
        steppers = [optimizer for optimizer, _ in optimizers(model, SPARSE_LR, DENSE_LR)]
        samples_per_s(model, steppers, batches, 10, variant)  # warm-up: kernels, allocator
        runs[variant] = (model, steppers)
    rates: dict[str, list[float]] = {variant: [] for variant in runs}
    for _ in range(args.repeats):
        for variant, (model, steppers) in runs.items():
            rates[variant].append(samples_per_s(model, steppers, batches, args.steps, variant))
    medians = {variant: statistics.median(values) for variant, values in rates.items()}
    for variant, median in medians.items():
        runs_text = [round(v) for v in rates[variant]]
        ratio = median / medians["fp32"]
        print(f"{variant:9s} median {median:>12,.0f} samples/s  {ratio:5.2f}x fp32  runs {runs_text}")
    args.out.mkdir(parents=True, exist_ok=True)
    report = {
        "device": name,
        "torch": torch.__version__,
        "batch_size": args.batch_size,
        "samples_per_s": medians,
        "runs": rates,
    }
    (args.out / "train_gpu.json").write_text(json.dumps(report, indent=1) + "\n")
    figure, axes = plt.subplots(figsize=(6, 3.5))
    axes.bar(list(medians), list(medians.values()))
    axes.set_ylabel("samples/s")
    axes.set_title(f"DLRM training steps, batch {args.batch_size}, {name}")
    figure.tight_layout()
    figure.savefig(args.out / "train_gpu.png", dpi=100)
    print(f"report: {args.out / 'train_gpu.json'}, chart: {args.out / 'train_gpu.png'}")


if __name__ == "__main__":
    main()
