"""Baselines of every classify run: linear probes on what the network sees.

A probe is fitted on the same split and on the same transformed inputs as the network: the
transform's output on the deterministic eval view (eval resize + centre crop, the transform's
online stages; no random augmentation, no normalisation, which standardisation makes irrelevant).

* ``pixels``: logistic regression on standardised raw pixels, average-pooled to 16 or 32 px
  (the resolution and the L2 strength are chosen on a held-out fifth of the training sample,
  never on val);
* ``colour_hist``: logistic regression on the per-channel colour histogram (``hist_bins`` bins
  per channel over [0, 1], as fractions of the pixels);
* ``vector``: for transforms that output feature vectors, logistic regression on the vector itself.

At scale the probes are fitted on a seeded sample of at most ``max_train`` training images (50k by
default: 50k x 3,072 float32 features = 600 MB for the 32-px pixels); every val image is scored.
The main process extracts and fits; the other processes receive the results.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from bias.core.parallel import worker_init
from bias.core.progress import progress_bar
from bias.experiment.config import BaselinesConfig, options_from_config
from bias.experiment.results import bootstrap_ci
from classifiers.probes import select_probe


@dataclass(frozen=True)
class BaselineOptions:
    enabled: bool = True
    max_train: int = 50_000
    holdout: float = 0.2
    resolutions: tuple[int, ...] = (16, 32)
    hist_bins: int = 32
    l2_grid: tuple[float, ...] = (10.0, 1.0, 0.1, 0.01, 0.001)
    batch_size: int = 256

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | None) -> BaselineOptions:
        """From the `baselines` config, checked against `bias.experiment.config.BaselinesConfig`."""
        return options_from_config(cls, BaselinesConfig, cfg, "baselines")


def pooled_pixels(x: torch.Tensor, size: int) -> torch.Tensor:
    """[N, C, H, W] -> [N, C * size * size]: area-averaged to size x size (exact means for divisible sizes)."""
    return F.adaptive_avg_pool2d(x.float(), size).flatten(1)


def channel_histograms(x: torch.Tensor, bins: int) -> torch.Tensor:
    """[N, C, H, W] in [0, 1] -> [N, C * bins]: each channel's histogram as fractions of its pixels."""
    n, c = x.shape[:2]
    idx = (x.float().clamp(0, 1) * bins).long().clamp(max=bins - 1).flatten(2)  # [N, C, HW]
    idx = idx + (torch.arange(c) * bins)[None, :, None]
    counts = torch.zeros(n, c * bins).scatter_add_(1, idx.flatten(1), torch.ones(n, idx.shape[1] * idx.shape[2]))
    return counts / idx.shape[2]


#: name -> (description, candidate feature sets from an image batch)
IMAGE_BASELINES: dict[str, tuple[str, Callable[[torch.Tensor, BaselineOptions], dict[str, torch.Tensor]]]] = {
    "pixels": ("logistic regression on standardised raw pixels",
               lambda x, o: {f"{r}px": pooled_pixels(x, r) for r in o.resolutions}),
    "colour_hist": ("logistic regression on the per-channel colour histogram",
                    lambda x, o: {f"{o.hist_bins}bins": channel_histograms(x, o.hist_bins)}),
}
VECTOR_BASELINES = {"vector": ("logistic regression on the transform's feature vector", lambda x, o: {"raw": x.float()})}


def train_sample(n_train: int, max_train: int, seed: int) -> np.ndarray:
    """Sorted positions of at most `max_train` training images, seeded."""
    if n_train <= max_train:
        return np.arange(n_train)
    return np.sort(np.random.default_rng([seed, 41]).choice(n_train, max_train, replace=False))


def extract(dataset, specs: Mapping[str, Any], opts: BaselineOptions, workers: int, desc: str
            ) -> tuple[dict[str, dict[str, np.ndarray]], np.ndarray, np.ndarray]:
    """Features of every loadable item: {baseline: {candidate: [n, d]}}, labels, dataset positions."""
    from classifiers.data import collate, model_input

    loader = DataLoader(dataset, batch_size=opts.batch_size, shuffle=False, num_workers=workers, collate_fn=collate,
                        worker_init_fn=worker_init if workers else None)
    parts: dict[str, dict[str, list[torch.Tensor]]] = {name: {} for name in specs}
    labels, index = [], []
    for batch in progress_bar(loader, desc=desc, leave=False):
        ok = batch["ok"]
        x = model_input(batch)[ok]
        labels.append(batch["label"][ok])
        index.append(batch["index"][ok])
        for name, (_, features) in specs.items():
            for cand, value in features(x, opts).items():
                parts[name].setdefault(cand, []).append(value)
    feats = {name: {cand: torch.cat(v).numpy() for cand, v in cands.items()} for name, cands in parts.items()}
    return feats, torch.cat(labels).numpy(), torch.cat(index).numpy()


def run_baselines(train_set, val_set, num_classes: int, vector: bool, opts: BaselineOptions, seed: int,
                  workers: int = 0) -> dict[str, Any]:
    """Fit every baseline on (a sample of) `train_set`'s eval view and score it on `val_set`'s.

    `train_set` and `val_set` are `classifiers.data.ImageDataset`s built with the eval view. Returns
    ``{"baselines": [{name, description, accuracy, ci95, features, l2, holdout_accuracy, n_train,
    n_val, candidates}], "time_s": ..., "max_train": ..., "sample_seed": ...}``.
    """
    from torch.utils.data import Subset

    start = time.time()
    specs = VECTOR_BASELINES if vector else IMAGE_BASELINES
    sample = train_sample(len(train_set), opts.max_train, seed)
    train_feats, y_train, _ = extract(Subset(train_set, sample.tolist()), specs, opts, workers, "baselines: train")
    val_feats, y_val, _ = extract(val_set, specs, opts, workers, "baselines: val")
    out = []
    for name, (description, _) in specs.items():
        probe = select_probe(train_feats[name], y_train, num_classes, opts.l2_grid, opts.holdout, seed)
        pred = probe.model.predict(val_feats[name][probe.features])
        correct = pred == y_val
        out.append({
            "name": name, "description": description,
            "accuracy": float(correct.mean()) if len(correct) else float("nan"),
            "ci95": list(bootstrap_ci(correct, seed=seed)),
            "features": probe.features, "l2": probe.l2, "holdout_accuracy": probe.holdout_accuracy,
            "n_train": int(len(y_train)), "n_val": int(len(y_val)), "candidates": probe.candidates,
        })
    return {"baselines": out, "time_s": round(time.time() - start, 2), "max_train": opts.max_train,
            "sample_seed": seed}


def best_baseline(baselines: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    scored = [b for b in baselines if b.get("accuracy") == b.get("accuracy")]  # drop NaN
    return max(scored, key=lambda b: b["accuracy"]) if scored else None


def format_baselines(baselines: Sequence[Mapping[str, Any]]) -> str:
    return ", ".join(f"{b['name']} ({b['features']}) {100 * b['accuracy']:.1f}%" for b in baselines)
