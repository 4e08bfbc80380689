"""Model quality on Criteo-like data: each CTR model's test AUC and logloss beside logistic regression,
LightGBM, a learnable ceiling and the planted oracle, at two training sizes and on the demo's data.

The data is the project's generator at Criteo-like settings (fields of up to 100,000 values,
Zipf-like frequencies, 24 planted interacting field pairs of rank 4), featurized by the default
workflow (frequency threshold 15); the last two days validate and test. Each model is what
`sparkrec train --model M` trains with its defaults (two Horovod workers). On the same rows:

- lightgbm: gradient-boosted trees on the dense features plus, per categorical field, its
  out-of-fold smoothed click rate and its count in the training rows (LightGBM's own categorical
  splits scored lower on these fields); the number of leaves is chosen on the validation day and the
  rounds stop early on it.
- ceiling: the planted model's own form (a weight per value, factorization-machine terms on exactly
  the planted pairs at the planted rank, linear dense terms) fitted on the training rows with the
  training's default optimizers; its tables' learning rate, L2 penalty and epochs are chosen on
  the validation day.
- torchrec_dlrm: TorchRec's own DLRM (torchrec.models.dlrm) of our DLRM's shape, one epoch.
- oracle: the planted click probabilities themselves.

Writes artifacts/bench/quality.json ({"<training rows>": {"<model>": {"auc", "logloss"}}}, and
"demo": the demo data's) and quality.png. Quality does not depend on a quiet machine.

    .venv/bin/python bench/quality.py [--train-rows 600000 5000000] [--work DIR] [--no-demo]
        [--models dlrm ... lightgbm ceiling torchrec_dlrm]
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import lightgbm
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from harness import demo_splits, scratch_folder
from torch import nn

from rec_plugin.schema import Schema
from rec_plugin.workflow import Workflow
from spark_jobs.featurize import featurize
from spark_jobs.generate import GeneratorConfig, generate
from spark_jobs.ingest import ingest
from spark_jobs.layout import GeneratedData
from spark_jobs.planted_model import CATEGORICAL, PlantedModel
from spark_jobs.session import build_session
from spark_jobs.train import feature_files, train
from training import plots
from training.metrics import auc
from training.models import ModelConfig
from training.models.parts import INIT_STD, EmbeddingCollection
from training.step import OptimizerSettings, bce_loss

REPORT = Path(__file__).resolve().parents[1] / "artifacts" / "bench" / "quality.json"
DEEP_MODELS = ("dlrm", "dcnv2", "wide_deep", "deepfm", "logistic")
BASELINES = ("lightgbm", "ceiling", "torchrec_dlrm")
CRITEO_LIKE = {"max_cardinality": 100_000, "interaction_pairs": 24, "latent_dim": 4}
# The ceiling's search, chosen on the validation day: each (table rate, L2 penalty) fit runs epochs
# until its validation AUC stops rising. At the tables' default rate (0.01) the form overfits in its
# second epoch; a lower rate fits it more closely over more epochs. Best validation AUC, penalty 0:
# 600k rows 0.7343 at 0.01 (one epoch), 0.7388 at 0.003 (two), 0.7351 at 0.001 (four); 5M rows
# 0.7519 at 0.01 (one), 0.7703 at 0.003 (two), 0.7697 at 0.001 (three).
CEILING_RATES = (0.01, 0.003, 0.001)
CEILING_PENALTIES = (0.0, 1e-4)
CEILING_MAX_EPOCHS = 4
LIGHTGBM_LEAVES = (31, 127)
TARGET_SMOOTHING, FOLDS = 20.0, 5


@dataclass(frozen=True)
class Prepared:
    """A generated, ingested and featurized data set: its folders and split days."""

    root: Path
    features_version: int
    splits: dict[str, list[int]]

    @property
    def features(self) -> str:
        return str(self.root / "features")

    @property
    def workflow(self) -> str:
        return str(self.root / "wf")

    @property
    def oracle(self) -> str:
        return GeneratedData(str(self.root / "data")).oracle

    @property
    def planted(self) -> PlantedModel:
        return PlantedModel.from_json(Path(GeneratedData(str(self.root / "data")).planted_model).read_text())


def prepared(spark, root: Path, config: GeneratorConfig) -> Prepared:  # noqa: ANN001 - SparkSession
    """`root`'s data set, generated, ingested and featurized unless an earlier run left it complete."""
    marker = root / "prepared.json"
    if marker.is_file() and json.loads(marker.read_text())["config"] == config.__dict__:
        return Prepared(root, **json.loads(marker.read_text())["prepared"])
    splits = demo_splits(config.days)
    data = GeneratedData(str(root / "data"))
    generate(spark, data.root, config)
    ingest(spark, data.raw, str(root / "bronze"), str(root / "rejects"))
    report = featurize(spark, str(root / "bronze"), str(root / "features"), str(root / "wf"), splits)
    done = {"features_version": report["features_version"], "splits": splits}
    marker.write_text(json.dumps({"config": config.__dict__, "prepared": done}))
    return Prepared(root, **done)


@dataclass(frozen=True)
class Rows:
    """One split's rows in memory: labels [n], dense [n, d] float32, ids [n, c] int64."""

    label: np.ndarray
    dense: np.ndarray
    ids: np.ndarray


def rows_of(spark, data: Prepared, schema: Schema, split: str) -> Rows:  # noqa: ANN001
    files = feature_files(spark, data.features, data.features_version, data.splits[split]).files
    names = [schema.label.name, *schema.continuous.names, *schema.categorical.names]
    table = pa.concat_tables(pq.read_table(f.removeprefix("file:"), columns=names) for f in files)
    return Rows(
        table.column(schema.label.name).to_numpy().astype(np.float32),
        np.column_stack([table.column(c).to_numpy() for c in schema.continuous.names]).astype(np.float32),
        np.column_stack([table.column(c).to_numpy() for c in schema.categorical.names]).astype(np.int64),
    )


def scores(labels: np.ndarray, probabilities: np.ndarray) -> dict[str, float]:
    p = np.clip(probabilities, 1e-7, 1 - 1e-7)
    logloss = -np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p))
    return {"auc": round(auc(labels, p), 5), "logloss": round(float(logloss), 5)}


PREDICT_ROWS = 65_536


class PlantedForm(nn.Module):
    """The planted model's functional form: bias and linear dense terms, a weight per value, and
    rank-k factorization-machine terms on the planted pairs only. The workflow fills a missing count
    with 0, so a dense feature at its floor (log1p(0), normalized) is "missing or zero", which the
    planted model scores differently (0 against -beta * mu): a weight per field on being at the
    floor lets the form express that, as the deep models' MLPs can."""

    def __init__(
        self, config: ModelConfig, pairs: list[tuple[int, int]], rank: int, floors: np.ndarray
    ) -> None:
        super().__init__()
        self.register_buffer("floors", torch.from_numpy(floors))
        self.at_floor = nn.Linear(len(floors), 1, bias=False)
        fields = config.categorical_features
        self.weights = EmbeddingCollection(config.tables, fields, (), dim=1, init_std=0.0)
        self.vectors = EmbeddingCollection(config.tables, fields, (), dim=rank)
        self.dense = nn.Linear(len(config.dense_features), 1)
        column = {name: fields.index(name) for name in fields}
        self.register_buffer("left", torch.tensor([column[CATEGORICAL[a]] for a, _ in pairs]))
        self.register_buffer("right", torch.tensor([column[CATEGORICAL[b]] for _, b in pairs]))

    def forward(self, dense: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits [B] and the squared norm of the rows looked up (the L2 penalty's term)."""
        (weights,) = self.weights(ids, [], [])
        (vectors,) = self.vectors(ids, [], [])
        pairs = (vectors[:, self.left] * vectors[:, self.right]).sum(dim=(1, 2))
        floor = self.at_floor((dense <= self.floors).float())
        logits = (self.dense(dense) + floor).squeeze(1) + weights.sum(dim=(1, 2)) + pairs
        return logits, weights.pow(2).sum() + vectors.pow(2).sum()

    def predict(self, rows: Rows) -> np.ndarray:
        with torch.no_grad():
            chunks = [
                self(
                    torch.from_numpy(rows.dense[s : s + PREDICT_ROWS]),
                    torch.from_numpy(rows.ids[s : s + PREDICT_ROWS]),
                )[0]
                for s in range(0, len(rows.label), PREDICT_ROWS)
            ]
        return torch.sigmoid(torch.cat(chunks)).numpy()


@dataclass(frozen=True)
class CeilingSearch:
    """The table rates and L2 penalties the ceiling is fitted at; epochs run to CEILING_MAX_EPOCHS
    unless validation AUC falls."""

    rates: tuple[float, ...] = CEILING_RATES
    penalties: tuple[float, ...] = CEILING_PENALTIES


def ceiling(
    schema: Schema, planted: PlantedModel, train_rows: Rows, valid: Rows, test: Rows, search: CeilingSearch
) -> dict:
    """The planted form's test scores at the rate, penalty and epoch of best validation AUC."""
    config = ModelConfig.from_schema("logistic", schema)
    dense, ids = torch.from_numpy(train_rows.dense), torch.from_numpy(train_rows.ids)
    label = torch.from_numpy(train_rows.label)
    floors = train_rows.dense.min(axis=0)  # log1p(0) normalized: the smallest value after Clip(0)
    best: tuple[float, dict, str] = (-1.0, {}, "")
    for rate, penalty in [(r, p) for r in search.rates for p in search.penalties]:
        torch.manual_seed(0)
        model = PlantedForm(config, planted.pairs, planted.latent_dim, floors)
        optimizers = [optimizer for optimizer, _ in OptimizerSettings(sparse_lr=rate).build(model)]
        generator = torch.Generator().manual_seed(0)
        fit_best = -1.0
        for epoch in range(CEILING_MAX_EPOCHS):
            for batch in torch.randperm(len(label), generator=generator).split(1024):
                logits, norm = model(dense[batch], ids[batch])
                loss = bce_loss(logits, label[batch], torch.ones(len(batch))) + penalty * norm / len(batch)
                for optimizer in optimizers:
                    optimizer.zero_grad()
                loss.backward()
                for optimizer in optimizers:
                    optimizer.step()
            valid_auc = auc(valid.label, model.predict(valid))
            setting = f"rate {rate:g}, penalty {penalty:g}, {epoch + 1} epochs"
            print(f"ceiling: {setting}: validation AUC {valid_auc:.4f}", flush=True)
            if valid_auc > best[0]:
                best = (valid_auc, scores(test.label, model.predict(test)), setting)
            if valid_auc <= fit_best:
                break
            fit_best = valid_auc
    print(f"ceiling: chosen {best[2]} (rates {search.rates}, penalties {search.penalties})")
    return best[1]


def torchrec_dlrm(config: ModelConfig, train_rows: Rows, test: Rows) -> dict:
    """TorchRec's own DLRM of our DLRM's shape (tables, widths, layers), one epoch at our default
    global batch (two workers of 1,024 rows), our tables' initialization and our default optimizers:
    unsharded, its bags are plain EmbeddingBags, switched to sparse gradients so that SparseAdam
    updates only the rows a batch used, as ours."""
    from torchrec import EmbeddingBagCollection, EmbeddingBagConfig, KeyedJaggedTensor
    from torchrec.models.dlrm import DLRM

    torch.manual_seed(0)
    (dim,) = config.embedding_dims
    tables = [
        EmbeddingBagConfig(name=t.name, embedding_dim=dim, num_embeddings=t.num_embeddings,
                           feature_names=list(t.features), init_fn=partial(nn.init.normal_, std=INIT_STD))
        for t in config.tables
    ]  # fmt: skip
    model = DLRM(
        EmbeddingBagCollection(tables=tables),
        len(config.dense_features),
        [*config.bottom_mlp, dim],
        [*config.top_mlp, 1],
    )
    for module in model.modules():
        if isinstance(module, nn.EmbeddingBag):
            module.sparse = True
    settings = OptimizerSettings()
    table_parameters = list(model.sparse_arch.parameters())
    others = [p for p in model.parameters() if all(p is not t for t in table_parameters)]
    optimizers = [settings.sparse_optimizer(table_parameters), settings.dense_optimizer(others)]
    keys = list(config.categorical_features)

    def logits(dense: np.ndarray, ids: np.ndarray) -> torch.Tensor:
        values = torch.from_numpy(np.ascontiguousarray(ids.T)).flatten()
        lengths = torch.ones(len(values), dtype=torch.int32)
        sparse = KeyedJaggedTensor.from_lengths_sync(keys=keys, values=values, lengths=lengths)
        return model(torch.from_numpy(dense), sparse).squeeze(1)

    order = np.random.default_rng(0).permutation(len(train_rows.label))
    for start in range(0, len(order), 2048):
        batch = order[start : start + 2048]
        loss = bce_loss(
            logits(train_rows.dense[batch], train_rows.ids[batch]),
            torch.from_numpy(train_rows.label[batch]),
            torch.ones(len(batch)),
        )
        for optimizer in optimizers:
            optimizer.zero_grad()
        loss.backward()
        for optimizer in optimizers:
            optimizer.step()
    with torch.no_grad():
        predicted = torch.cat(
            [torch.sigmoid(logits(test.dense[s : s + PREDICT_ROWS], test.ids[s : s + PREDICT_ROWS]))
             for s in range(0, len(test.label), PREDICT_ROWS)]
        )  # fmt: skip
    return scores(test.label, predicted.numpy())


def encoded(train_rows: Rows, other: Rows | None) -> np.ndarray:
    """Dense features, then per field its smoothed click rate and its count in the training rows:
    out-of-fold for the training rows themselves (`other` None), from all of them otherwise. Filled
    in place as float32 (5M rows x 65 columns: 1.3 GB)."""
    prior = float(train_rows.label.mean())
    fold = np.random.default_rng(0).integers(0, FOLDS, len(train_rows.label))
    target = train_rows if other is None else other
    dense_width, fields = target.dense.shape[1], train_rows.ids.shape[1]
    out = np.empty((len(target.label), dense_width + 2 * fields), np.float32)
    out[:, :dense_width] = target.dense
    for j in range(fields):
        size = int(max(train_rows.ids[:, j].max(), target.ids[:, j].max())) + 1

        def rate(fit: np.ndarray, j: int = j, size: int = size) -> np.ndarray:
            clicks = np.bincount(train_rows.ids[fit, j], weights=train_rows.label[fit], minlength=size)
            seen = np.bincount(train_rows.ids[fit, j], minlength=size)
            return (clicks + TARGET_SMOOTHING * prior) / (seen + TARGET_SMOOTHING)

        rates, counts = out[:, dense_width + 2 * j], out[:, dense_width + 2 * j + 1]
        if other is None:
            for k in range(FOLDS):
                rates[fold == k] = rate(fold != k)[train_rows.ids[fold == k, j]]
        else:
            rates[:] = rate(slice(None))[target.ids[:, j]]
        counts[:] = np.bincount(train_rows.ids[:, j], minlength=size)[target.ids[:, j]]
    return out


def gradient_boosting(train_rows: Rows, valid: Rows, test: Rows) -> dict:
    """LightGBM's test scores with the leaves of best validation AUC (rounds stopped early on it)."""
    x_train, x_valid = encoded(train_rows, None), encoded(train_rows, valid)
    x_test = encoded(train_rows, test)
    training = lightgbm.Dataset(x_train, train_rows.label, free_raw_data=False)
    validation = lightgbm.Dataset(x_valid, valid.label, reference=training)
    best: tuple[float, dict] = (-1.0, {})
    for leaves in LIGHTGBM_LEAVES:
        params = {"objective": "binary", "metric": "auc", "verbose": -1, "num_leaves": leaves,
                  "learning_rate": 0.1, "min_data_in_leaf": 100}  # fmt: skip
        booster = lightgbm.train(
            params,
            training,
            3000,
            valid_sets=[validation],
            callbacks=[lightgbm.early_stopping(30, verbose=False)],
        )
        valid_auc = booster.best_score["valid_0"]["auc"]
        print(f"lightgbm: {leaves} leaves, {booster.best_iteration} rounds: validation AUC {valid_auc:.4f}")
        if valid_auc > best[0]:
            predicted = booster.predict(x_test, num_iteration=booster.best_iteration)
            best = (valid_auc, scores(test.label, predicted))
    return best[1]


def record(section: str, model: str, figures: dict[str, float]) -> None:
    """Writes one model's figures into `section` of quality.json (and redraws the PNG) as soon as
    they are measured, keeping every other figure there: a long run shows its progress, and a
    stopped run keeps what it measured (rerun the rest with --models)."""
    report = json.loads(REPORT.read_text()) if REPORT.is_file() else {}
    report.setdefault(section, {})[model] = figures
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(json.dumps(report, indent=2) + "\n")
    REPORT.with_suffix(".png").write_bytes(quality_png(report))
    print(
        f"{section} rows, {model}: test AUC {figures['auc']:.4f}, logloss {figures['logloss']:.4f}",
        flush=True,
    )


def measure(  # noqa: ANN001 - spark: a SparkSession
    spark,
    data: Prepared,
    work: Path,
    models: list[str],
    *,
    section: str | None = None,
    search: CeilingSearch | None = None,
) -> None:
    """Records the test scores of `models` in `section` (default: the training rows): the CTR
    models as `sparkrec train` trains them (with the oracle on the same rows), and the baselines
    (the ceiling fitted over `search`)."""
    schema = Workflow.load_schema(data.workflow, spark)
    section = section or str(
        feature_files(spark, data.features, data.features_version, data.splits["train"]).rows
    )
    for model in [m for m in models if m in DEEP_MODELS]:
        run_dir = str(work / model)
        report = train(spark, data.features, data.workflow, run_dir, model=model, oracle=data.oracle)
        record(section, model, {"auc": report["auc"], "logloss": report["logloss"]})
        record(section, "oracle", {"auc": report["oracle_auc"], "logloss": report["oracle_logloss"]})
    if not set(models) & set(BASELINES):
        return
    train_rows, valid, test = (rows_of(spark, data, schema, split) for split in ("train", "valid", "test"))
    baselines = {
        "lightgbm": lambda: gradient_boosting(train_rows, valid, test),
        "ceiling": lambda: ceiling(schema, data.planted, train_rows, valid, test, search or CeilingSearch()),
        # What `sparkrec train --model dlrm` builds, in TorchRec's DLRM.
        "torchrec_dlrm": lambda: torchrec_dlrm(ModelConfig.from_schema("dlrm", schema), train_rows, test),
    }
    for name in [m for m in models if m in baselines]:
        record(section, name, baselines[name]())


def quality_png(report: dict) -> bytes:
    aucs = {size: {model: s["auc"] for model, s in models.items()} for size, models in report.items()}
    return plots.grouped_bars(aucs, "test AUC", "Test AUC by training rows (demo: the demo's data)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-rows", type=int, nargs="+", default=[600_000, 5_000_000])
    parser.add_argument("--work", help="a folder kept between runs (data sets are reused)")
    parser.add_argument("--no-demo", action="store_true", help="skip the demo data's report")
    parser.add_argument(
        "--models",
        nargs="+",
        choices=[*DEEP_MODELS, *BASELINES],
        default=[*DEEP_MODELS, *BASELINES],
        help="measure only these, in this order (the others' earlier figures are kept); the demo's "
        "report has the CTR models only",
    )
    parser.add_argument(
        "--ceiling-penalties",
        type=float,
        nargs="+",
        default=list(CEILING_PENALTIES),
        help="the ceiling's L2 penalties tried (each fit runs its epochs)",
    )
    parser.add_argument(
        "--ceiling-rates",
        type=float,
        nargs="+",
        default=list(CEILING_RATES),
        help="the ceiling's table learning rates tried",
    )
    args = parser.parse_args()
    work = Path(args.work) if args.work else scratch_folder("bench-quality-")
    spark = build_session("local", "bench-quality", {"spark.ui.showConsoleProgress": "false"})
    for rows in args.train_rows:
        train_days = max(2, round(rows / 1_000_000))
        per_day = rows // train_days // 2 * 2  # the generator writes two equal files a day
        config = GeneratorConfig(days=train_days + 2, rows_per_day=per_day, **CRITEO_LIKE)
        data = prepared(spark, work / f"criteo-{rows}", config)
        search = CeilingSearch(tuple(args.ceiling_rates), tuple(args.ceiling_penalties))
        measure(spark, data, work / f"runs-{rows}", args.models, search=search)
    if not args.no_demo:
        data = prepared(spark, work / "demo", GeneratorConfig())
        measure(spark, data, work / "runs-demo", [m for m in args.models if m in DEEP_MODELS], section="demo")
    print(f"wrote {REPORT} and its PNG")


if __name__ == "__main__":
    main()
