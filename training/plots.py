"""PNG plots written beside a run's metrics: the loss curve and AUC per day against the oracle.

Each returns the PNG's bytes, which the run directory writes to whatever filesystem it lives on.
Figures are made without pyplot's global state, so trainings in parallel threads (sparkrec tune)
plot at once safely."""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

import numpy as np
from matplotlib.figure import Figure


def _figure(size: tuple[float, float], columns: int = 1) -> tuple[Figure, Any]:
    """A figure and its axes (one, or an array of `columns`), of no pyplot window."""
    figure = Figure(figsize=size)
    return figure, figure.subplots(1, columns)


def _png(figure: Figure) -> bytes:
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def loss_curve(losses: list[float], title: str, summary: Mapping[str, Any] | None = None) -> bytes:
    """The batches' loss by step; beside it, when a run's `summary` (training/loop.py) holds validated
    epochs, its validation metric by epoch with the kept epoch marked."""
    validated = [(e, v) for e, v in enumerate((summary or {}).get("valid_per_epoch", []), 1) if v is not None]
    figure, axes = _figure((12, 4), 2) if validated else _figure((7, 4))
    steps_axes = axes[0] if validated else axes
    steps = np.arange(1, len(losses) + 1)
    steps_axes.plot(steps, losses, alpha=0.3, label="batch loss")
    window = max(1, len(losses) // 50)
    if len(losses) >= window:
        smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
        steps_axes.plot(steps[window - 1 :], smooth, label=f"mean of {window} batches")
    steps_axes.set(xlabel="step", ylabel="loss", title=title)
    steps_axes.legend()
    if validated and summary is not None:
        metric, best = summary["valid_metric"], summary["best_epoch"]
        epochs, values = zip(*validated, strict=True)
        axes[1].plot(epochs, values, marker="o", label="validation")
        if best in epochs:
            kept = f"kept: epoch {best}"
            axes[1].plot([best], [dict(validated)[best]], marker="*", markersize=14, linestyle="", label=kept)
        axes[1].set(xlabel="epoch", ylabel=metric, title=f"validation {metric} per epoch", xticks=epochs)
        axes[1].legend()
    return _png(figure)


def auc_per_day(days: list[dict], title: str) -> bytes:
    """Bars per validation/test day; a run without such days gets an empty chart saying so."""
    figure, axes = _figure((7, 4))
    labels = [f"day {d['day']}\n({d['split']}{', one class' if d['auc'] is None else ''})" for d in days]
    x = np.arange(len(days))
    model = [np.nan if d["auc"] is None else d["auc"] for d in days]  # None: a day of one label class
    axes.bar(x - 0.2, model, 0.4, label="model")
    oracle = [d.get("oracle_auc") for d in days]
    if days and all(value is not None for value in oracle):
        axes.bar(x + 0.2, oracle, 0.4, label="oracle (planted truth)")
    axes.set_xticks(x, labels)
    low = min((d["auc"] for d in days if d["auc"] is not None), default=0.5)
    axes.set(ylabel="AUC", ylim=(max(0.5, low - 0.05), 1.0), title=title)
    if days:
        axes.legend()
    else:
        axes.text(0.5, 0.5, "no validation or test days", ha="center", va="center", transform=axes.transAxes)
    return _png(figure)


def ranking_metrics(report: dict[str, float | None], title: str) -> bytes:
    """Bars per ranking metric (keys like ndcg_at_10): the model's, and the oracle's and popularity's
    where the report has them (keys prefixed oracle_ and popularity_)."""
    rankers = ("", "oracle_", "popularity_")
    names = [k for k in report if k.split("_at_")[0] in ("hr", "ndcg", "recall") and "_at_" in k]
    figure, axes = _figure((7, 4))
    x = np.arange(len(names))
    width = 0.8 / len(rankers)
    for index, prefix in enumerate(rankers):
        values = [report.get(prefix + name) for name in names]
        if any(v is not None for v in values):
            heights = [np.nan if v is None else v for v in values]
            axes.bar(x + (index - 1) * width, heights, width, label=prefix.rstrip("_") or "model")
    axes.set_xticks(x, [n.replace("_at_", "@") for n in names])
    axes.set(ylabel="metric", ylim=(0, 1), title=title)
    axes.legend()
    return _png(figure)


def models_against_oracle(
    aucs: dict[str, float], seconds: dict[str, float], oracle: float | None, title: str
) -> bytes:
    """AUC bars of models scored on the same rows (with the oracle's line), and their training seconds."""
    figure, (left, right) = _figure((9, 4), 2)
    names = list(aucs)
    left.bar(names, [aucs[n] for n in names])
    if oracle is not None:
        left.axhline(oracle, color="black", linestyle="--", label=f"oracle {oracle:.4f}")
        left.legend()
    low = min([*aucs.values(), *([oracle] if oracle is not None else [])])
    left.set(ylabel="AUC", ylim=(max(0.5, low - 0.02), 1.0), title=title)
    timed = [n for n in names if n in seconds]
    right.bar(timed, [seconds[n] for n in timed], color="tab:orange")
    right.set(ylabel="training seconds", title="training time")
    return _png(figure)


def trial_scores(scores: list[tuple[int, float | None]], title: str) -> bytes:
    """Each trial's validation AUC (a cross where it failed) and the best so far, by trial number."""
    figure, axes = _figure((7, 4))
    done = [(n, s) for n, s in scores if s is not None]
    failed = [n for n, s in scores if s is None]
    if done:
        numbers, values = zip(*done)
        axes.plot(numbers, values, "o", label="trial")
        axes.step(numbers, np.maximum.accumulate(values), where="post", label="best so far")
        axes.legend()
    low, high = min((s for _, s in done), default=0.5), max((s for _, s in done), default=1.0)
    for n in failed:
        axes.axvline(n, color="tab:red", linestyle=":", alpha=0.5)
    limits = (max(0.0, low - 0.01), min(1.0, high + 0.01))
    axes.set(xlabel="trial", ylabel="validation AUC", ylim=limits, title=title)
    return _png(figure)


def grouped_bars(
    values: dict[str, dict[str, float]], ylabel: str, title: str, ylim: tuple[float, float] | None = None
) -> bytes:
    """One group of bars per outer key (e.g. a data size), a bar per inner key (e.g. a model), each
    inner key in one colour across groups; the y axis from `ylim`, else fitted to AUCs (up to 1)."""
    figure, axes = _figure((max(7.0, 2.5 * len(values)), 4.5))
    series = list(dict.fromkeys(name for group in values.values() for name in group))
    width = 0.8 / max(1, len(series))
    for index, name in enumerate(series):
        x = [g + index * width for g, group in enumerate(values.values()) if name in group]
        axes.bar(x, [group[name] for group in values.values() if name in group], width, label=name)
    axes.set_xticks([g + 0.4 - width / 2 for g in range(len(values))], list(values))
    everything = [v for group in values.values() for v in group.values()]
    if ylim is None:
        ylim = (max(0.5, min(everything, default=0.5) - 0.02), 1.0)
    axes.set(ylabel=ylabel, title=title, ylim=ylim)
    axes.legend(fontsize="small", ncol=3)
    return _png(figure)
