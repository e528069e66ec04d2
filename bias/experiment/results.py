"""Metrics, figures and summaries of a classification run."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bias.experiment.verdict import current_verdict


def bootstrap_ci(correct: np.ndarray, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of a 0/1 vector (resampling val images).

    `scipy.stats.bootstrap` with ``method="percentile"`` (the published tables use the percentile interval, not
    scipy's default BCa), drawn from ``numpy.random.default_rng([seed, 95])`` in batches of at most 2**24 values;
    a single image gives the interval (x, x).
    """
    from scipy.stats import bootstrap

    correct = np.asarray(correct, dtype=np.float64)
    n = len(correct)
    if n == 0:
        return float("nan"), float("nan")
    if n == 1:
        return float(correct[0]), float(correct[0])
    result = bootstrap((correct,), np.mean, n_resamples=n_boot, batch=max(1, min(n_boot, 2**24 // n)),
                       method="percentile", confidence_level=level, rng=np.random.default_rng([seed, 95]))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def confusion_matrix(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts, rows = true dataset, columns = predicted dataset."""
    return np.bincount(labels * num_classes + preds, minlength=num_classes**2).reshape(num_classes, num_classes)


def summarize(labels: np.ndarray, preds: np.ndarray, names: Sequence[str], seed: int, n_boot: int = 1000) -> dict[str, Any]:
    k = len(names)
    labels, preds = np.asarray(labels, dtype=np.int64), np.asarray(preds, dtype=np.int64)
    correct = labels == preds
    cm = confusion_matrix(labels, preds, k)
    shares = np.bincount(labels, minlength=k) / max(len(labels), 1)
    per = {name: float(cm[i, i] / cm[i].sum()) if cm[i].sum() else float("nan") for i, name in enumerate(names)}
    return {
        "accuracy": float(correct.mean()) if len(correct) else float("nan"),
        "ci95": list(bootstrap_ci(correct, n_boot, seed)),
        "chance": float(shares.max()) if len(labels) else 1.0 / k,
        "per_dataset": per,
        "confusion": cm.tolist(),
        "datasets": list(names),
    }


def format_accuracy(results: dict[str, Any]) -> str:
    low, high = results["ci95"]
    return (f"accuracy {100 * results['accuracy']:.1f}% (95% CI {100 * low:.1f}-{100 * high:.1f}) "
            f"vs chance {100 * results['chance']:.1f}%")


def aggregate_seeds(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Mean and sample std of accuracy (and per dataset) over runs with different seeds (a repeated seed is an
    error: one run counted twice would shrink the spread)."""
    seeds = [r["seed"] for r in runs]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds {seeds} repeat: each run must be counted once")
    acc = np.array([r["accuracy"] for r in runs])
    names = runs[0]["datasets"]
    per = {n: np.array([r["per_dataset"][n] for r in runs]) for n in names}
    std = float(acc.std(ddof=1)) if len(acc) > 1 else 0.0
    baselines: dict[str, list[float]] = {}
    for r in runs:
        for b in r.get("baselines") or []:
            baselines.setdefault(b["name"], []).append(float(b["accuracy"]))
    return {
        "seeds": [r["seed"] for r in runs],
        "verdicts": [current_verdict(r) for r in runs],
        "baselines_mean": {k: float(np.mean(v)) for k, v in baselines.items()},
        "accuracy_mean": float(acc.mean()),
        "accuracy_std": std,
        "accuracies": acc.tolist(),
        "chance": runs[0]["chance"],
        "per_dataset_mean": {n: float(v.mean()) for n, v in per.items()},
        "per_dataset_std": {n: float(v.std(ddof=1)) if len(v) > 1 else 0.0 for n, v in per.items()},
        "datasets": names,
    }


def plot_confusion(cm: np.ndarray, names: Sequence[str], path: Path, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.asarray(cm, dtype=float)
    rows = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    k = len(names)
    fig, ax = plt.subplots(figsize=(1.2 * k + 2.2, 1.1 * k + 1.6))
    im = ax.imshow(rows, vmin=0, vmax=1, cmap="Blues")
    for i in range(k):
        for j in range(k):
            ax.text(j, i, f"{100 * rows[i, j]:.1f}\n({int(cm[i, j])})", ha="center", va="center", fontsize=8,
                    color="white" if rows[i, j] > 0.6 else "black")
    ax.set_xticks(range(k), names, rotation=30, ha="right")
    ax.set_yticks(range(k), names)
    ax.set_xlabel("predicted dataset")
    ax.set_ylabel("true dataset")
    ax.set_title(title or "confusion (% of row)")
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_history(history: Sequence[dict[str, float]], chance: float, path: Path, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.4))
    a.plot(epochs, [h["train_loss"] for h in history], marker="o")
    a.set_xlabel("epoch")
    a.set_ylabel("train loss")
    b.plot(epochs, [100 * h["train_acc"] for h in history], marker="o", label="train (augmented)")
    val = [(h["epoch"], 100 * h["val_acc"]) for h in history if "val_acc" in h and not math.isnan(h["val_acc"])]
    if val:
        b.plot(*zip(*val), marker="s", label="val")
    b.axhline(100 * chance, color="grey", ls="--", label="chance")
    b.set_xlabel("epoch")
    b.set_ylabel("accuracy %")
    b.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
