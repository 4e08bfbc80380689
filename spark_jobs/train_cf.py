"""sparkrec train --model ncf|multvae: the interaction tables (sparkrec interactions) -> a trained
collaborative-filtering model, ranked beside the planted oracle and a popularity ranking.

NCF is trained on (user, item, clicked or sampled negative) rows and ranked on each evaluated user's
latest positive among 100 sampled negatives (HR@10, NDCG@10). Mult-VAE is trained on the train users'
bags of items and ranks every item for each held-out user's fold-in items (Recall@20, Recall@50,
NDCG@100 on their held-out items). Both train with the CTR models' backends, checkpoints and resume
(spark_jobs/model_fit.py), and write metrics.json and ranking.png into the run directory.
"""

from __future__ import annotations

import numpy as np
import torch
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from rec_plugin import storage
from rec_plugin.errors import InputError
from rec_plugin.interactions import (
    EVAL_NEGATIVES,
    HELDOUT,
    ITEMS,
    NCF_EVAL,
    NCF_TRAIN,
    ORACLE_RANKING,
    ORACLE_SCORE,
    POPULARITY,
    POPULARITY_RANKING,
    RANKING_DEPTH,
    SPLIT,
    TEST_SPLIT,
    TRAIN_SPLIT,
    VAE,
    VALID_SPLIT,
    InteractionsDescription,
    InteractionsLayout,
    item_column,
    ncf_schema,
    user_column,
    vae_schema,
)
from rec_plugin.schema import Schema
from rec_plugin.workflow import Workflow
from spark_jobs.interactions import MIN_HELDOUT_ITEMS
from spark_jobs.model_fit import default_sparse_optimizer, fit, model_config
from spark_jobs.tracking import track_run
from training import plots
from training.data import FileSet
from training.evaluate import candidate_logits, top_items
from training.grow import WARM_START_BACKENDS
from training.loop import RUN_COST_KEYS, VALIDATION_KEYS, TrainSpec
from training.models import build_model
from training.models.cf import CF_MODELS, MULTVAE, NCF, fuse_pretrained
from training.models.config import GMF, MLP, NEUMF
from training.ranking import (
    PADDED,
    VAE_NDCG_CUTOFF,
    VAE_RECALL_CUTOFFS,
    hit_rate_at_k,
    ndcg_at_k,
    ndcg_at_k_sets,
    recall_at_k,
)
from training.run_directory import RunDirectory
from training.step import OptimizerSettings

# run.pretrained's part that holds a Mult-VAE started from popularity (popularity_started_vae).
POPULARITY_START = "popularity"
NCF_CUTOFF = 10
# Epochs when none are asked for: Mult-VAE learns from each train user once an epoch (NCF from each
# click), so it needs more passes; 10 measured on the e-commerce demo data (more gave little there).
DEFAULT_EPOCHS = {NCF: 1, MULTVAE: 10}
# NeuMF's learning rates after --pretrain, as a share of the towers': on the test shop (tests/conftest.py
# SHOP) the fused towers ranked at NDCG@10 0.337; one epoch on from them at the full rates 0.330, five
# 0.258 (Adam's fresh moments unlearn the fusion); at a tenth, 0.338 after one epoch and 0.336 after five.
FUSED_LR_SCALE = 0.1
# What each model's section of a pipeline report holds (the rest stays in the run's metrics.json).
NCF_MODEL_KEYS = ("hr_at_10", "ndcg_at_10")  # the model's own metrics, beside the oracle's and popularity's
CF_REPORT_KEYS = {
    NCF: (*NCF_MODEL_KEYS, "oracle_ndcg_at_10", "popularity_ndcg_at_10"),
    MULTVAE: ("recall_at_20", "recall_at_50", "ndcg_at_100", "oracle_ndcg_at_100", "popularity_ndcg_at_100"),
}


def load_description(spark: SparkSession, layout: InteractionsLayout) -> InteractionsDescription:
    """The folder's description; refused in one line when the folder was not built."""
    if not storage.exists(spark, layout.description):
        raise InputError(
            f"{layout.root} holds no interaction tables: build them first (sparkrec interactions) "
            "or fix --interactions"
        )
    return InteractionsDescription.from_json(storage.read_text(spark, layout.description))


def table_files(
    spark: SparkSession, path: str, where: tuple[str, str] | None = None, version: int | None = None
) -> FileSet:
    """The parquet files of a Delta table's `version` (default: the latest; of one partition value
    when `where` names a partition column and value), and their row count."""
    table = storage.read_delta(spark, path, version)
    files = table.inputFiles()
    if where is not None:
        column, value = where
        files = [f for f in files if f"/{column}={value}/" in f]
        table = table.where(F.col(column) == value)
    return FileSet(tuple(sorted(files)), table.count())


def _require_evaluation_users(spark: SparkSession, layout: InteractionsLayout, model: str) -> None:
    """Refuses, before any training, interaction tables the model's report could rank no user of."""
    if model == NCF and table_files(spark, layout.ncf_eval, version=layout.version(NCF_EVAL)).rows == 0:
        raise InputError(
            f"{layout.ncf_eval} holds no evaluation users: each needs {EVAL_NEGATIVES} items of the "
            "catalogue they never clicked, so rebuild the tables (sparkrec interactions) from a catalogue "
            f"of more than {EVAL_NEGATIVES + 1} items"
        )
    if (
        model == MULTVAE
        and table_files(spark, layout.vae, (SPLIT, TEST_SPLIT), layout.version(VAE)).rows == 0
    ):
        raise InputError(
            f"{layout.vae} holds no test users: rebuild the tables (sparkrec interactions) with "
            f"--heldout-share and --max-heldout-users above 0, from users of {MIN_HELDOUT_ITEMS}+ items"
        )


def train_cf(
    spark: SparkSession,
    interactions: str,
    workflow: str,
    run_dir: str,
    model: str = NCF,
    backend: str = "single",
    workers: int = 1,
    pretrain: bool = False,
    **options: object,
) -> dict:
    """Trains NCF or Mult-VAE on the interaction tables, ranks their evaluation users and writes the
    run directory; returns the report's section (the model's metrics, the oracle's and popularity's
    NDCG on the same candidates). `pretrain` (NCF): NeuMF starts from its GMF and MLP towers trained
    alone and fused (`pretrain_neumf`); Mult-VAE starts from popularity (`popularity_started_vae`)
    unless warm-started or resumed. `options` as spark_jobs.train.train's."""
    layout = InteractionsLayout(storage.qualified(spark, interactions))
    description = load_description(spark, layout)
    layout = layout.pinned(description)
    features = Workflow.load_schema(workflow, spark)
    if model == NCF:
        schema = ncf_schema(features)
        train_files = table_files(spark, layout.ncf_train, version=layout.version(NCF_TRAIN))
    elif model == MULTVAE:
        schema = vae_schema(features, description.max_items_per_user)
        train_files = table_files(spark, layout.vae, (SPLIT, TRAIN_SPLIT), layout.version(VAE))
        valid = table_files(spark, layout.vae, (SPLIT, VALID_SPLIT), layout.version(VAE))
        if valid.rows:  # none with --heldout-share 0: the last epoch's weights are the run's
            options["valid"] = valid.to_dict()
    else:
        raise InputError(
            f"unknown collaborative-filtering model {model!r}; choose one of {sorted(CF_MODELS)}"
        )
    if train_files.rows == 0:
        raise InputError(f"the {model} training table in {layout.root} holds no rows: rebuild it")
    _require_evaluation_users(spark, layout, model)
    if pretrain and model != NCF:
        raise InputError(f"--pretrain fuses NeuMF's GMF and MLP towers: it is for --model {NCF}, not {model}")
    if pretrain and options.get("warm_start"):
        raise InputError(
            "--pretrain starts NeuMF from its towers and --warm-start from a production run: give one"
        )
    if (pretrain or model == MULTVAE) and backend not in WARM_START_BACKENDS:
        started, loading = "--pretrain" if pretrain else f"--model {model}", ", ".join(WARM_START_BACKENDS)
        raise InputError(
            f"{started} starts from weights it writes first, which --backend {loading} load and "
            f"{backend} (tables sharded) does not: train on one of those"
        )
    options.setdefault("epochs", DEFAULT_EPOCHS[model])
    run = RunDirectory(storage.qualified(spark, run_dir))
    resuming = bool(options.get("resume")) and run.latest_checkpoint() is not None
    if resuming:
        _require_same_tables(run, model, train_files, options.get("valid"))
    if model == MULTVAE and not options.get("warm_start") and not resuming:
        options["initial_weights"] = popularity_started_vae(spark, layout, schema, run, options)
    towers = {}
    if pretrain:
        towers = pretrain_neumf(spark, schema, train_files, run, layout, features, backend, workers, options)
        options.update(initial_weights=run.pretrained(NEUMF).uri, **fused_learning_rates(options, backend))
    trained, summary = fit(spark, schema, train_files, run_dir, model, backend, workers, **options)
    if model == NCF:
        report = ncf_report(spark, trained, layout, features)
    else:
        report = vae_report(spark, trained, layout)
    details = {
        "model": model,
        "backend": backend,
        "workers": workers,
        "samples_per_s": summary["samples_per_s"],
        "steps": summary["steps"],
        **{key: summary[key] for key in (*RUN_COST_KEYS, *VALIDATION_KEYS)},
        "run_dir": run.uri,
        **report,
        **({"pretrained": towers} if pretrain else {}),
    }
    run.write_loss_plot(plots.loss_curve(summary["losses"], f"{model}: training loss", summary))
    run.write_ranking_plot(plots.ranking_metrics(report, f"{model}: model, oracle and popularity"))
    run.write_metrics(details)
    track_run(run.uri, summary["losses"])
    return details


def _require_same_tables(run: RunDirectory, model: str, train_files: FileSet, valid: dict | None) -> None:
    """A resume trains on the tables its checkpoint did: rebuilt ones redraw the negatives and the
    held-out users, some of whom the checkpoint's epochs trained on. A checkpoint of the other model
    reads another table: fit refuses it as of another model (check_resumable)."""
    saved = TrainSpec(**run.spec())
    rebuilt = FileSet.from_dict(saved.train).files != train_files.files or saved.valid != valid
    if saved.model["name"] == model and rebuilt:
        raise InputError(
            f"cannot resume {run.uri}: its interaction tables were rebuilt since its checkpoint (other "
            "files), so its held-out users may have been trained on: train anew without --resume"
        )


def pretrain_neumf(
    spark: SparkSession,
    schema: Schema,
    train_files: FileSet,
    run: RunDirectory,
    layout: InteractionsLayout,
    features: Schema,
    backend: str,
    workers: int,
    options: dict,
) -> dict:
    """NeuMF's pretraining (He et al. 2017, 3.4.1): GMF and MLP each trained alone, at half NeuMF's
    embedding dim, into `run.pretrained("gmf"|"mlp")`, then fused into `run.pretrained("neumf")`'s
    weights, which NeuMF starts from. Returns each tower's ranking metrics (HR@10, NDCG@10)."""
    neumf = model_config(NCF, schema, options)
    if neumf.ncf_mode != NEUMF:
        raise InputError(
            f"--pretrain fuses two towers into NeuMF: train ncf_mode {NEUMF}, not {neumf.ncf_mode}"
        )
    half = {"embedding_dim": neumf.embedding_dims[0] // 2}
    states, metrics = {}, {}
    for tower in (GMF, MLP):
        tower_run = run.pretrained(tower)
        alone = {**options, **half, "ncf_mode": tower}
        if options.get("resume") and tower_run.latest_checkpoint() is not None:
            _require_same_tables(tower_run, NCF, train_files, None)
        report = tower_run.metrics() if options.get("resume") else None
        if report is not None and tower_run.model_config() != model_config(NCF, schema, alone):
            raise InputError(
                f"cannot resume {run.uri}: its pretrained {tower} tower has another config than these "
                "options give (--embedding-dim, --config or a grown vocabulary): train anew without --resume"
            )
        if report is not None:  # a resumed run's tower that finished: its weights and ranking as they are
            trained = build_model(tower_run.model_config())
            trained.load_state_dict(tower_run.weights())
        else:
            trained, _ = fit(spark, schema, train_files, tower_run.uri, NCF, backend, workers, **alone)
            report = ncf_report(spark, trained, layout, features)
            tower_run.write_metrics({"model": NCF, "ncf_mode": tower, **report})
        states[tower] = trained.state_dict()
        metrics[tower] = {key: report[key] for key in NCF_MODEL_KEYS}
    fused = run.pretrained(NEUMF)
    fused.write_model_config(neumf)
    fused.save_weights(fuse_pretrained(states[GMF], states[MLP], neumf))
    return metrics


def popularity_started_vae(
    spark: SparkSession, layout: InteractionsLayout, schema: Schema, run: RunDirectory, options: dict
) -> str:
    """A fresh Mult-VAE of the run's config whose decoder ranks by the train users' item counts
    (MultVAE.start_from_popularity), saved as `run.pretrained(POPULARITY_START)`: its URI. On the
    e-commerce demo data (beta ~0 then) NDCG@100 was 0.108 from it and 0.106 from a plain start."""
    config = model_config(MULTVAE, schema, options)
    item = "item"
    counts = (
        storage.read_delta(spark, layout.vae, layout.version(VAE))
        .where(F.col(SPLIT) == TRAIN_SPLIT)
        .select(F.explode(ITEMS).alias(item))
        .groupBy(item)
        .count()
        .toPandas()
    )
    tally = torch.zeros(config.table_of(config.list_features[0]).num_embeddings, dtype=torch.float64)
    tally[torch.as_tensor(counts[item].to_numpy(np.int64))] = torch.as_tensor(
        counts["count"].to_numpy(np.float64)
    )
    torch.manual_seed(int(options.get("seed", TrainSpec.seed)))
    vae = build_model(config)
    vae.start_from_popularity(tally)
    start = run.pretrained(POPULARITY_START)
    start.write_model_config(config)
    start.save_weights(vae.state_dict())
    return start.uri


def fused_learning_rates(options: dict, backend: str) -> dict:
    """NeuMF's optimizer options once it starts from its fused towers: the towers' rates times
    FUSED_LR_SCALE (He et al. fine-tune it with plain SGD, since Adam's moments restart at zero)."""
    settings = OptimizerSettings(
        options.get("sparse_optimizer") or default_sparse_optimizer(backend),
        options.get("sparse_lr"),
        options.get("dense_lr", TrainSpec.dense_lr),
    ).scaled(FUSED_LR_SCALE)
    return {
        "sparse_optimizer": settings.sparse,
        "sparse_lr": settings.sparse_lr,
        "dense_lr": settings.dense_lr,
    }


def ncf_report(
    spark: SparkSession, model: torch.nn.Module, layout: InteractionsLayout, features: Schema
) -> dict:
    """HR@10 and NDCG@10 of the model, the planted oracle and popularity on each evaluated user's
    latest positive among its sampled negatives (one row per candidate in ncf_eval)."""
    user, item = user_column(features).name, item_column(features).name
    label = features.label.name
    frame = (
        storage.read_delta(spark, layout.ncf_eval, layout.version(NCF_EVAL))
        .select(user, item, label, ORACLE_SCORE, POPULARITY)
        .orderBy(user, F.col(label).desc(), item)
        .toPandas()
    )
    users = frame[user].nunique()
    if users == 0:
        raise InputError(f"{layout.ncf_eval} holds no evaluation users: rebuild the interaction tables")
    labels = frame[label].to_numpy().reshape(users, -1)
    logits = candidate_logits(model, frame[user].to_numpy(), frame[item].to_numpy()).reshape(users, -1)
    report = {
        "hr_at_10": hit_rate_at_k(logits, labels, NCF_CUTOFF),
        "ndcg_at_10": ndcg_at_k(logits, labels, NCF_CUTOFF),
        "oracle_ndcg_at_10": None,
        "popularity_ndcg_at_10": ndcg_at_k(
            frame[POPULARITY].to_numpy(np.float64).reshape(users, -1), labels, NCF_CUTOFF
        ),
    }
    if frame[ORACLE_SCORE].notna().all():
        oracle = frame[ORACLE_SCORE].to_numpy(np.float64).reshape(users, -1)
        report["oracle_ndcg_at_10"] = ndcg_at_k(oracle, labels, NCF_CUTOFF)
    return {"eval_users": int(users), **{k: _rounded(v) for k, v in report.items()}}


def vae_report(spark: SparkSession, model: torch.nn.Module, layout: InteractionsLayout) -> dict:
    """Recall@20, Recall@50 and NDCG@100 on the test users' held-out items, from the model's ranking
    of every item given their fold-in items, the planted oracle's and popularity's (fold-in items
    left out of every ranking)."""
    frame = (
        storage.read_delta(spark, layout.vae, layout.version(VAE))
        .where(F.col(SPLIT) == TEST_SPLIT)
        .select(ITEMS, HELDOUT, ORACLE_RANKING, POPULARITY_RANKING)
        .toPandas()
    )
    if frame.empty:
        raise InputError(f"{layout.vae} holds no test users: rebuild the interaction tables")
    heldout = [np.asarray(items, dtype=np.int64) for items in frame[HELDOUT]]
    bags = [np.asarray(items, dtype=np.int64) for items in frame[ITEMS]]
    rankings = {"": top_items(model, bags, RANKING_DEPTH)[0]}
    rankings["popularity_"] = _ranking_matrix(frame[POPULARITY_RANKING])
    if frame[ORACLE_RANKING].notna().all():
        rankings["oracle_"] = _ranking_matrix(frame[ORACLE_RANKING])
    report: dict = {"eval_users": len(frame)}
    for prefix, ranked in rankings.items():
        if prefix == "":
            for k in VAE_RECALL_CUTOFFS:
                report[f"recall_at_{k}"] = _rounded(recall_at_k(ranked, heldout, k))
        report[f"{prefix}ndcg_at_{VAE_NDCG_CUTOFF}"] = _rounded(
            ndcg_at_k_sets(ranked, heldout, VAE_NDCG_CUTOFF)
        )
    report.setdefault(f"oracle_ndcg_at_{VAE_NDCG_CUTOFF}", None)
    return report


def _ranking_matrix(rankings: object) -> np.ndarray:
    """Users' rankings as rows, each padded with PADDED (a miss) to the longest: popularity's is
    shorter for a user whose fold-in items take places of a small catalogue's top items."""
    rows = [np.asarray(r, dtype=np.int64) for r in rankings]
    matrix = np.full((len(rows), max(map(len, rows), default=0)), PADDED, dtype=np.int64)
    for row, ranking in zip(matrix, rows):
        row[: len(ranking)] = ranking
    return matrix


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(float(value), 5)
