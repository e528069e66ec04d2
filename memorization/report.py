"""The verdict rule, the figures and ``report.md`` of a memorization study (`memorization.study.run_study`).

The verdict (`decide_verdict`) is computed from group means only, never set by hand. Each group
(training, generated, noise sigma_lo / sigma_hi, average, gaussian, copy) is summarised by

* ``quality``   higher = better: mean test accuracy (fields: minus the mean min Chamfer distance to
                held-out test shapes, divided by the training set's own mean);
* ``closeness`` higher = closer to the training set: mean max error-IoU similarity to any training
                model (fields: minus the mean min Chamfer distance to the training shapes, divided
                by the training set's own mean); ``1 - closeness`` is the behavioural novelty;
* ``min_l2``    the median min L2 distance to the training weights (weight-space novelty).

Rule (tolerances ``tq`` on quality and ``tc`` on closeness; differences within them are ties):

1. **replication** if the generated models are as close to the training set as training models
   with the *lowest* published noise added (L = the noise group with the smallest median min L2):
   ``closeness(gen) >= closeness(L) - tc`` or ``min_l2(gen) <= min_l2(L)``.
2. otherwise **novel and better than the noise baseline** if the generated group Pareto-dominates
   every noise group on (quality, novelty) and no baseline (noise, average, gaussian)
   Pareto-dominates it, where p dominates q when ``quality(p) >= quality(q) - tq`` and
   ``closeness(p) <= closeness(q) + tc`` with ``quality(p) > quality(q) + tq`` or
   ``closeness(p) < closeness(q) - tc``.
3. otherwise **interpolation**: no better than the trivial baselines on the accuracy-vs-novelty
   front (includes generators worse than every baseline).

The published claim ("replicas or, at best, interpolations; none beats the noise / average
baselines at being both novel and accurate") holds for a run whose verdict is 1 or 3.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bias.core.seeding import derive_seed

REPLICATION, INTERPOLATION, NOVEL = "replication", "interpolation", "novel and better than the noise baseline"
RULE = (
    "1. replication: closeness(generated) >= closeness(lowest noise) - tol_closeness, or median min-L2(generated) "
    "<= median min-L2(lowest noise). 2. novel and better than the noise baseline: generated Pareto-dominates every "
    "noise group on (quality, novelty) and no baseline (noise, average, gaussian) dominates it. 3. otherwise "
    "interpolation. Quality = mean accuracy (fields: -mean min Chamfer to test shapes / training's); closeness = "
    "mean max error-IoU similarity to training (fields: -mean min Chamfer to training / training's); differences "
    "within the tolerances are ties."
)

#: The study's numbers, for the report (labelled as published; other data, other scale).
PUBLISHED: dict[str, dict[str, Any]] = {
    "hyperreps": {"columns": ["accuracy %", "mean min L2"], "rows": {"training": [65.2, 50.0], "generated": [57.5, 8.11]},
                  "note": "Hyper-Representations CNN zoo (2,464 params, ~2,900 independent runs); L2 against the "
                          "AE reconstructions; noise 0.02 / 0.04"},
    "gpt": {"columns": ["accuracy %", "mean min L2"], "rows": {"training": [94.4, 3.64], "generated": [94.0, 2.25]},
            "note": "MNIST MLP 784-10-10 (7,960 params), 10,228 runs x 200 checkpoints; noise 0.05 / 0.1 (x4.185)"},
    "hyperdiffusion": {"columns": ["MMD", "mean min L2"], "rows": {"training": [0.026, 109.5],
                                                                  "generated": [0.036, 7.03]},
                       "note": "3-D occupancy fields (36,737 params, ~2,750 shapes); noise 0.02 / 0.04"},
    "pdiff": {"columns": ["accuracy %", "max similarity"],
              "rows": {"training": ["76.5-77.3", "0.96-0.99"], "generated": ["77.0-77.6", "0.84-0.87"],
                       "noise 0.06": ["", "0.90-0.95"], "noise 0.12": ["", "0.81-0.88"],
                       "average": ["77.3-77.65", "0.85-0.885"], "gaussian": ["", "0.82-0.85"]},
              "note": "ResNet-18 last two BatchNorm layers (2,048 params), 300 consecutive steps; read off the "
                      "published scatter"},
}
PUBLISHED_CONCLUSION = ("Generated weights are replicas or, at best, interpolations of their training checkpoints; "
                        "no generator beats the noise / average baselines at being both novel and accurate.")


# -- the verdict ----------------------------------------------------------------------------------
def dominates(p: Mapping[str, float], q: Mapping[str, float], tol_quality: float, tol_closeness: float) -> bool:
    """p Pareto-dominates q on (quality up, closeness down), ties within the tolerances."""
    qp, qq, cp, cq = p["quality_mean"], q["quality_mean"], p["closeness_mean"], q["closeness_mean"]
    if any(not math.isfinite(v) for v in (qp, qq, cp, cq)):
        return False
    not_worse = qp >= qq - tol_quality and cp <= cq + tol_closeness
    better = qp > qq + tol_quality or cp < cq - tol_closeness
    return not_worse and better


def decide_verdict(summary: Mapping[str, Mapping[str, float]], noise: Sequence[str], others: Sequence[str] = (),
                   generated: str = "generated", tol_quality: float = 0.005, tol_closeness: float = 0.005) -> dict:
    """The verdict of the module docstring from group summaries (``quality_mean``, ``closeness_mean``,
    ``min_l2_median`` per group); returns ``{"verdict", "reason", "rule", "checks"}``."""
    if generated not in summary:
        raise KeyError(f"no {generated!r} group in the summary (groups: {sorted(summary)})")
    if not noise:
        raise ValueError("the verdict needs at least one noise baseline group")
    missing = [k for k in [*noise, *others] if k not in summary]
    if missing:
        raise KeyError(f"groups {missing} are not in the summary")
    g = summary[generated]
    low = min(noise, key=lambda k: summary[k]["min_l2_median"])
    lo = summary[low]
    behaves_like_copy = g["closeness_mean"] >= lo["closeness_mean"] - tol_closeness
    sits_like_copy = g["min_l2_median"] <= lo["min_l2_median"]
    checks: dict[str, Any] = {
        "lowest_noise": low,
        "closeness_generated": g["closeness_mean"], "closeness_lowest_noise": lo["closeness_mean"],
        "min_l2_generated": g["min_l2_median"], "min_l2_lowest_noise": lo["min_l2_median"],
        "closeness_as_close_as_lowest_noise": bool(behaves_like_copy), "min_l2_as_close_as_lowest_noise":
        bool(sits_like_copy),
        "dominates_noise": {k: dominates(g, summary[k], tol_quality, tol_closeness) for k in noise},
        "dominated_by": [k for k in [*noise, *others] if dominates(summary[k], g, tol_quality, tol_closeness)],
        "tol_quality": tol_quality, "tol_closeness": tol_closeness,
    }
    if behaves_like_copy or sits_like_copy:
        what = []
        if behaves_like_copy:
            what.append(f"closeness {g['closeness_mean']:.4g} >= {low}'s {lo['closeness_mean']:.4g} - {tol_closeness:g}")
        if sits_like_copy:
            what.append(f"median min-L2 {g['min_l2_median']:.4g} <= {low}'s {lo['min_l2_median']:.4g}")
        verdict, reason = REPLICATION, "as close to training as the lowest-noise copies: " + "; ".join(what)
    elif all(checks["dominates_noise"].values()) and not checks["dominated_by"]:
        verdict = NOVEL
        reason = (f"dominates every noise baseline ({', '.join(noise)}) on quality and novelty, and no baseline "
                  "dominates it")
    else:
        beaten = [k for k, v in checks["dominates_noise"].items() if not v]
        parts = []
        if beaten:
            parts.append(f"does not dominate {', '.join(beaten)}")
        if checks["dominated_by"]:
            parts.append(f"is dominated by {', '.join(checks['dominated_by'])}")
        verdict, reason = INTERPOLATION, "no better than the trivial baselines: " + " and ".join(parts)
    return {"verdict": verdict, "reason": reason, "rule": RULE, "checks": checks}


# -- figures ----------------------------------------------------------------------------------------
COLOURS = {"training": "#1f77b4", "training_original": "#17becf", "generated": "#d62728", "average": "#2ca02c",
           "gaussian": "#9467bd", "copy": "#7f7f7f"}
NOISE_COLOURS = ["#ff7f0e", "#8c564b", "#e377c2", "#bcbd22"]


def _colour(key: str, keys: Sequence[str]) -> str:
    if key in COLOURS:
        return COLOURS[key]
    noise = [k for k in keys if k.startswith("noise_")]
    return NOISE_COLOURS[noise.index(key) % len(NOISE_COLOURS)] if key in noise else "#333333"


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    """Lay out, write (110 dpi) and close a figure."""
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _plt().close(fig)


def plot_min_l2_histograms(values: Mapping[str, np.ndarray], labels: Mapping[str, str], path: Path,
                           bins: int = 15, title: str = "") -> None:
    """Min-L2-to-training histograms, % of models per bin, shared bins (log-spaced when values span > 100x)."""
    plt = _plt()
    finite = {k: np.asarray(v, float)[np.isfinite(v)] for k, v in values.items()}
    allv = np.concatenate([v for v in finite.values() if len(v)])
    lo, hi = max(allv.min(), 1e-12), max(allv.max(), 1e-12)
    log = hi / lo > 100
    edges = np.geomspace(lo, hi * 1.0001, bins + 1) if log else np.linspace(allv.min(), allv.max() + 1e-12, bins + 1)
    fig, ax = plt.subplots(figsize=(7, 4))
    keys = list(values)
    for k, v in finite.items():
        if len(v):
            ax.hist(np.clip(v, edges[0], edges[-1]), bins=edges, weights=np.full(len(v), 100.0 / len(v)),
                    histtype="step", lw=2 if k in ("training", "generated") else 1.2, color=_colour(k, keys),
                    label=labels[k])
    if log:
        ax.set_xscale("log")
    ax.set_xlabel("min L2 distance to training (training: self excluded)")
    ax.set_ylabel("% of models")
    ax.set_title(title or "weight-space novelty")
    ax.legend(fontsize=7)
    _save(fig, path)


def plot_quality_vs_closeness(xs: Mapping[str, np.ndarray], ys: Mapping[str, np.ndarray], labels: Mapping[str, str],
                              path: Path, xlabel: str, ylabel: str, title: str = "", invert_y: bool = False) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 4.8))
    keys = list(xs)
    for k in keys:
        ax.scatter(xs[k], ys[k], s=10 if k != "generated" else 14, alpha=0.6, color=_colour(k, keys), label=labels[k])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if invert_y:
        ax.invert_yaxis()
    ax.set_title(title)
    ax.legend(fontsize=7, markerscale=1.5)
    _save(fig, path)


def plot_fronts(fronts: Mapping[str, Sequence[Sequence[float]]], labels: Mapping[str, str], path: Path,
                title: str = "") -> None:
    """Each group's accuracy-novelty Pareto front (points ``[quality, novelty]``, both higher = better) as a
    step line: a generated front above and right of the noise fronts is what "novel and better" means."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 4.8))
    keys = list(fronts)
    for k in keys:
        pts = np.asarray(fronts[k], float).reshape(-1, 2)
        if len(pts):
            order = np.argsort(pts[:, 1])
            ax.step(pts[order, 1], 100 * pts[order, 0], where="post", marker="o", ms=3, color=_colour(k, keys),
                    lw=2 if k == "generated" else 1.2, label=labels[k])
    ax.set_xlabel("novelty: 1 - max error-IoU to training (right = more novel)")
    ax.set_ylabel("test accuracy %")
    ax.set_title(title or "accuracy-novelty fronts")
    ax.legend(fontsize=7)
    _save(fig, path)


def plot_heatmap(rows: np.ndarray, row_labels: Sequence[str], indices: np.ndarray, path: Path, title: str = "") -> None:
    """A generated model (top row) above its nearest training models, at the same parameter indices."""
    plt = _plt()
    vmax = float(np.abs(rows).max()) or 1.0
    fig, ax = plt.subplots(figsize=(10, 0.5 * len(rows) + 1.4))
    im = ax.imshow(rows, aspect="auto", cmap="RdBu_r", vmin=-vmax, vmax=vmax, interpolation="nearest")
    ax.set_yticks(range(len(rows)), row_labels, fontsize=7)
    ax.set_xlabel(f"{len(indices)} random parameter indices (seeded)")
    ax.set_xticks([])
    ax.set_title(title or "generated model vs its nearest training models")
    fig.colorbar(im, ax=ax, fraction=0.03)
    _save(fig, path)


def decision_maps(zoo, params: torch.Tensor, grid: int, device: Any = None) -> dict[str, Any]:
    """Predicted class over a ``grid x grid`` plane through the test inputs' first two principal components.

    Grid points ``(u, v)`` map back to input space as ``mean + u * pc1 + v * pc2`` (the PCA inverse
    with every other component at 0) and are classified by each full parameter vector in `params`.
    """
    from memorization.zoo.functional import batched_logits

    task = zoo.get_task()
    x = task.test_inputs.reshape(task.n_test, -1).double()
    mean = x.mean(0)
    _, _, vh = torch.linalg.svd(x - mean, full_matrices=False)
    pcs = vh[:2]
    proj = ((x - mean) @ pcs.T).float()
    lo, hi = proj.min(0).values, proj.max(0).values
    pad = 0.05 * (hi - lo)
    us = torch.linspace(float(lo[0] - pad[0]), float(hi[0] + pad[0]), grid)
    vs = torch.linspace(float(lo[1] - pad[1]), float(hi[1] + pad[1]), grid)
    uu, vv = torch.meshgrid(us, vs, indexing="xy")           # row i = v[i], column j = u[j]
    coords = torch.stack([uu.reshape(-1), vv.reshape(-1)], 1).double()
    inputs = (mean + coords @ pcs).float().reshape(-1, *task.input_shape)
    model = zoo.build_model()
    spec = zoo.base_spec if zoo.base is not None else zoo.spec
    full = zoo.full_params(params.float())
    preds = []
    with torch.no_grad():
        for a in range(0, len(inputs), 16384):
            preds.append(batched_logits(model, spec, full, inputs[a:a + 16384]).argmax(-1))
    pred = torch.cat(preds, 1).reshape(len(params), grid, grid).numpy()
    return {"pred": pred, "extent": [float(us[0]), float(us[-1]), float(vs[0]), float(vs[-1])],
            "test_xy": proj.numpy(), "test_y": task.y_test.numpy(), "num_classes": task.num_classes}


def plot_decision_boundaries(maps: Mapping[str, Any], titles: Sequence[str], path: Path, seed: int,
                             max_points: int = 600) -> None:
    plt = _plt()
    from matplotlib.colors import ListedColormap

    k = maps["num_classes"]
    cmap = ListedColormap(plt.get_cmap("tab10" if k <= 10 else "tab20")(np.arange(k)))
    rng = np.random.default_rng(seed)
    show = rng.permutation(len(maps["test_y"]))[:max_points]
    fig, axes = plt.subplots(1, len(titles), figsize=(4.6 * len(titles), 4.4))
    for ax, pred, title in zip(np.atleast_1d(axes), maps["pred"], titles):
        ax.imshow(pred, origin="lower", extent=maps["extent"], cmap=cmap, vmin=-0.5, vmax=k - 0.5, alpha=0.55,
                  aspect="auto", interpolation="nearest")
        xy = maps["test_xy"][show]
        ax.scatter(xy[:, 0], xy[:, 1], c=maps["test_y"][show], cmap=cmap, vmin=-0.5, vmax=k - 0.5, s=5,
                   edgecolors="k", linewidths=0.2)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("PC 1 of the test inputs")
        ax.set_ylabel("PC 2")
    _save(fig, path)


def plot_tsne(params: Mapping[str, np.ndarray], labels: Mapping[str, str], path: Path, seed: int,
              perplexity: float = 30.0) -> None:
    plt = _plt()
    from sklearn.manifold import TSNE

    keys = list(params)
    x = np.concatenate([params[k] for k in keys]).astype(np.float64)
    owner = np.concatenate([[k] * len(params[k]) for k in keys])
    perplexity = float(min(perplexity, max(1.0, (len(x) - 1) / 3)))
    emb = TSNE(2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(x)
    fig, ax = plt.subplots(figsize=(6, 5))
    for k in keys:
        sel = owner == k
        ax.scatter(emb[sel, 0], emb[sel, 1], s=9, alpha=0.7, color=_colour(k, keys), label=labels[k])
    ax.set_title(f"t-SNE of the flat weights (perplexity {perplexity:g}, seed {seed})")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(fontsize=7, markerscale=1.5)
    _save(fig, path)


def plot_shape_pairs(generated: Sequence[np.ndarray | None], nearest: Sequence[np.ndarray], titles: Sequence[str],
                     path: Path) -> None:
    """Top row: generated shapes' surface points (x, y); bottom row: their nearest training shapes."""
    plt = _plt()
    n = len(generated)
    fig, axes = plt.subplots(2, n, figsize=(1.9 * n, 4.0), squeeze=False)
    for j in range(n):
        for i, (pts, name) in enumerate(((generated[j], "generated"), (nearest[j], "nearest training"))):
            ax = axes[i, j]
            if pts is not None:
                ax.scatter(pts[:, 0], pts[:, 1], s=0.3, color="#d62728" if i == 0 else "#1f77b4")
            else:
                ax.text(0, 0, "no surface", ha="center", va="center", fontsize=8)
            ax.set_xlim(-1, 1)
            ax.set_ylim(-1, 1)
            ax.set_aspect("equal")
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(name, fontsize=8)
        axes[0, j].set_title(titles[j], fontsize=7)
    _save(fig, path)


def _subsample(n: int, k: int, rng: np.random.Generator) -> np.ndarray:
    return np.sort(rng.permutation(n)[:k])


def write_figures(run_dir: Path, groups: Sequence[Any], zoo, evaluator, cfg, seed: int) -> tuple[dict, dict]:
    """Every figure of the study into `run_dir`; returns ``({figure: file}, {random choice: seed or picks})``."""

    p = cfg.plots
    by_key = {g.key: g for g in groups}
    labels = {g.key: g.label for g in groups}
    figures: dict[str, str] = {}
    record: dict[str, Any] = {}
    fields = evaluator.kind == "fields"
    title = f"{zoo.task} / {by_key['generated'].label}"

    hist_keys = [g.key for g in groups if g.role != "original"]
    plot_min_l2_histograms({k: by_key[k].metrics["min_l2"] for k in hist_keys}, labels, run_dir / "min_l2_hist.png",
                           int(p.hist_bins), title)
    figures["min_l2_hist"] = "min_l2_hist.png"

    record["scatter_seed"] = s = derive_seed(seed, "scatter")
    rng = np.random.default_rng(s)
    picks = {k: _subsample(len(by_key[k].params), int(p.points_per_group), rng) for k in hist_keys}
    if fields:
        xs = {k: by_key[k].metrics["chamfer_novelty"][picks[k]] for k in hist_keys}
        ys = {k: by_key[k].metrics["chamfer_quality"][picks[k]] for k in hist_keys}
        plot_quality_vs_closeness(xs, ys, labels, run_dir / "quality_vs_novelty.png",
                                  "min Chamfer to training (novelty, right = more novel)",
                                  "min Chamfer to test shapes (quality, up = better)", title, invert_y=True)
        figures["quality_vs_novelty"] = "quality_vs_novelty.png"
    else:
        xs = {k: by_key[k].metrics["max_similarity"][picks[k]] for k in hist_keys}
        ys = {k: 100 * by_key[k].metrics["accuracy"][picks[k]] for k in hist_keys}
        plot_quality_vs_closeness(xs, ys, labels, run_dir / "accuracy_vs_similarity.png",
                                  "max similarity to training (error IoU; left = more novel)", "test accuracy %", title)
        figures["accuracy_vs_similarity"] = "accuracy_vs_similarity.png"

    gen = by_key["generated"]
    training = by_key["training"]
    record["heatmap_seed"] = s = derive_seed(seed, "heatmap")
    rng = np.random.default_rng(s)
    usable = np.flatnonzero(~gen.metrics["empty"]) if fields and (~gen.metrics["empty"]).any() else np.arange(len(gen.params))
    which = int(rng.choice(usable))
    P = gen.params.shape[1]
    idx = np.sort(rng.permutation(P)[: min(int(p.heatmap_indices), P)])
    d = torch.cdist(gen.params[which:which + 1].double(), training.params.double())[0]
    near = torch.argsort(d)[: min(int(p.heatmap_neighbours), len(training.params))].numpy()
    rows = np.stack([gen.params[which].numpy()[idx]] + [training.params[j].numpy()[idx] for j in near])
    row_labels = [f"generated #{which}"] + [f"training #{j} (L2 {float(d[j]):.3g})" for j in near]
    plot_heatmap(rows, row_labels, idx, run_dir / "heatmap.png", title)
    figures["heatmap"] = "heatmap.png"
    record["heatmap"] = {"generated": which, "nearest_training": near.tolist(), "indices": idx.tolist()}

    if fields:
        record["shapes_seed"] = s = derive_seed(seed, "shapes")
        rng = np.random.default_rng(s)
        chosen = rng.permutation(len(gen.params))[: int(p.shapes)]
        gen_pts, gen_ok = evaluator.surfaces(gen.params[chosen], "figure")
        nearest = gen.metrics["nearest_behaviour"][chosen]
        near_pts = [evaluator.ref_points[j].numpy() if j >= 0 else None for j in nearest]
        shown = [gen_pts[i].numpy() if gen_ok[i] else None for i in range(len(chosen))]
        titles = [f"#{c}: CD {gen.metrics['chamfer_novelty'][c]:.2g}" for c in chosen]
        plot_shape_pairs(shown, near_pts, titles, run_dir / "shapes.png")
        figures["shapes"] = "shapes.png"
        record["shapes"] = {"generated": chosen.tolist(), "nearest_training": nearest.tolist()}
    else:
        near_train = int(gen.metrics["nearest"][which])
        maps = decision_maps(zoo, torch.stack([gen.params[which], training.params[near_train]]), int(p.boundary_grid))
        acc = [gen.metrics["accuracy"][which], training.metrics["accuracy"][near_train]]
        plot_decision_boundaries(maps, [f"generated #{which} ({100 * acc[0]:.1f}%)",
                                        f"nearest training #{near_train} ({100 * acc[1]:.1f}%)"],
                                 run_dir / "decision_boundaries.png", derive_seed(seed, "boundary_points"))
        figures["decision_boundaries"] = "decision_boundaries.png"
        record["decision_boundaries"] = {"generated": which, "nearest_training": near_train,
                                         "grid": int(p.boundary_grid)}

    if p.tsne:
        record["tsne_seed"] = s = derive_seed(seed, "tsne")
        rng = np.random.default_rng(s)
        keys = [k for k in ("training", "generated", "average", "gaussian") if k in by_key]
        sub = {k: by_key[k].params.numpy()[_subsample(len(by_key[k].params), int(p.tsne_per_group), rng)]
               for k in keys}
        plot_tsne(sub, labels, run_dir / "tsne.png", s, float(p.tsne_perplexity))
        figures["tsne"] = "tsne.png"
    return figures, record


# -- report.md -------------------------------------------------------------------------------------
def _pm(mean: float, std: float, scale: float = 1.0, digits: int = 3) -> str:
    if not math.isfinite(mean):
        return "-"
    return f"{scale * mean:.{digits}g} ± {scale * std:.2g}"


def results_table(metrics: Mapping[str, Any]) -> list[str]:
    """Markdown rows of the per-group table (what report.md and benchmarks/results/memorization.md show)."""
    groups = metrics["groups"]
    if metrics["kind"] == "fields":
        lines = ["| group | n | no surface | Chamfer novelty (min CD to training) | Chamfer quality (min CD to test) "
                 "| MMD | min L2 to training: mean (median) |", "|---|---|---|---|---|---|---|"]
        for s in groups.values():
            lines.append(f"| {s['label']} | {s['n']} | {s.get('n_empty', 0)} | "
                         f"{_pm(s.get('chamfer_novelty_mean', math.nan), s.get('chamfer_novelty_std', 0))} | "
                         f"{_pm(s.get('chamfer_quality_mean', math.nan), s.get('chamfer_quality_std', 0))} | "
                         f"{s.get('mmd', math.nan):.3g} | {s['min_l2_mean']:.4g} ({s['min_l2_median']:.4g}) |")
        return lines
    lines = ["| group | n | accuracy % (mean ± std) | max similarity (mean ± std) | min L2 to training: mean (median) |",
             "|---|---|---|---|---|"]
    for s in groups.values():
        lines.append(f"| {s['label']} | {s['n']} | {_pm(s['accuracy_mean'], s['accuracy_std'], 100)} | "
                     f"{_pm(s['max_similarity_mean'], s['max_similarity_std'])} | "
                     f"{s['min_l2_mean']:.4g} ({s['min_l2_median']:.4g}) |")
    return lines


def write_report(path: Path, metrics: Mapping[str, Any], evaluator) -> None:
    v = metrics["verdict"]
    zoo = metrics["zoo"]
    noise = metrics["noise"]
    lines = [f"# Memorization study: {metrics['task']} / {metrics['generator']}", "",
             f"**Verdict: {v['verdict']}** -- {v['reason']}.", "",
             f"Zoo: `{zoo['path']}` ({zoo['n_models']} models of {zoo['num_params']} parameters, regime "
             f"`{zoo['regime']}`, {'reused' if zoo['reused'] else 'built'}). Novelty is measured against the "
             f"{metrics['reference']}; training vs training excludes self.", "",
             f"Noise baselines: sigma {', '.join(f'{s:g}' for s in noise['sigmas'])} x scale {noise['scale']:.4g} "
             f"({noise['space']} space; {noise['note']})."]
    if noise.get("published_factor"):
        lines.append(f"G.pt normalisation: ours divides by std {noise['scale']:.4g} (factor {noise['implied_factor']:.4g}); "
                     f"the study's factor was {noise['published_factor']}.")
    lines += ["", "## Our numbers", "", *results_table(metrics), ""]
    pub = PUBLISHED.get(metrics["generator"])
    if pub:
        lines += ["## Published numbers (the study's zoos, not ours)", "", f"{pub['note']}.", "",
                  "| group | " + " | ".join(pub["columns"]) + " |", "|---|" + "---|" * len(pub["columns"])]
        lines += [f"| {k} | " + " | ".join(str(x) for x in row) + " |" for k, row in pub["rows"].items()]
        lines += ["", f"Published conclusion: {PUBLISHED_CONCLUSION}", ""]
    c = v["checks"]
    lines += ["## Verdict rule", "", v["rule"], "",
              f"Checks: lowest noise `{c['lowest_noise']}`; closeness generated {c['closeness_generated']:.4g} vs "
              f"{c['closeness_lowest_noise']:.4g}; median min-L2 generated {c['min_l2_generated']:.4g} vs "
              f"{c['min_l2_lowest_noise']:.4g}; dominates noise: {c['dominates_noise']}; dominated by: "
              f"{c['dominated_by'] or 'none'}.", "",
              f"Quality = {evaluator.quality_label}; closeness = {evaluator.closeness_label}.", "",
              "## Figures", ""]
    lines += [f"![{name}]({file})" for name, file in metrics["figures"].items()]
    seeds = metrics["seeds"]
    lines += ["", "## Seeds", "", f"fit {seeds['fit']}, sample {seeds['sample']}, zoo {seeds['zoo']}, baselines "
              f"{seeds.get('baselines')}, figures {seeds['plots']} (all recorded in metrics.json with what each "
              "sampler picked).", "", "Timings (s): " + ", ".join(f"{k} {t:.1f}" for k, t in metrics["timings_s"].items()),
              ""]
    path.write_text("\n".join(lines))
