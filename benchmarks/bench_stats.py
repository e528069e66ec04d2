"""The describe statistics against the library call that does the same job: our code vs scipy / scikit-learn.

    OMP_NUM_THREADS=1 python benchmarks/bench_stats.py                  # n = 1,500 and 15,000 scored images
    OMP_NUM_THREADS=1 python benchmarks/bench_stats.py --sizes 1500 --repeat 3

Sizes are those of the differences stage (`bench_describe_scale.py`): 3 datasets one-vs-rest, H = 30 hypotheses,
n scored images, 1,000 label permutations. Each row times the best of `--repeat` runs of

* AUROC [D, H]: `describe.differences.one_vs_rest_auroc` (average ranks, rank sums as one matrix product) vs
  `sklearn.metrics.roc_auc_score` per (dataset, hypothesis) vs `scipy.stats.mannwhitneyu` (axis=0, per dataset);
* permutation p-values [D, H]: `describe.differences.permutation_test` (ranks once; every permutation's D x H
  AUROCs one matrix product, one shared permutation for all datasets) vs `scipy.stats.permutation_test` per
  dataset on the same ranks with a vectorised statistic |AUROC - 0.5| (the same p-value definition, (1 + #null
  >= observed) / (1 + n_perm));
* the probe's logistic regression (`--probe`): `classifiers.probes.LogisticRegression` (scikit-learn's lbfgs
  since issue 23) vs the torch L-BFGS it replaced (`torch_lbfgs_probe`, kept here as the reference), at the
  probes' sizes (pixels at 16 and 32 px: 768 and 3,072 features; colour histograms: 96), and the share of
  training predictions on which the two agree;
* the bootstrap refits of `describe.objects.ovr_ranking` (`--objects`): `describe.objects.fit_logistic` (all
  replicates at once) vs one scikit-learn fit per replicate with the same sample weights.

Prints one JSON line per comparison: seconds per call of each and the ratio.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def best_of(fn: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def scores_and_labels(n: int, h: int, d: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, d, n)
    scores = rng.normal(size=(n, h)) + 0.3 * (labels[:, None] == np.arange(h)[None] % d)
    return np.round(scores, 2), labels  # rounded: ties, as cosine similarities of repeated captions have


def sklearn_auroc(scores: np.ndarray, labels: np.ndarray, d: int) -> np.ndarray:
    from sklearn.metrics import roc_auc_score

    return np.array([[roc_auc_score(labels == k, scores[:, j]) for j in range(scores.shape[1])] for k in range(d)])


def mannwhitney_auroc(scores: np.ndarray, labels: np.ndarray, d: int) -> np.ndarray:
    from scipy.stats import mannwhitneyu

    out = []
    for k in range(d):
        pos, neg = scores[labels == k], scores[labels != k]
        out.append(mannwhitneyu(pos, neg, axis=0, method="asymptotic").statistic / (len(pos) * len(neg)))
    return np.array(out)


def scipy_permutation(scores: np.ndarray, labels: np.ndarray, d: int, n_perm: int, seed: int) -> np.ndarray:
    from scipy.stats import permutation_test, rankdata

    ranks = rankdata(scores, axis=0, method="average").T  # [H, n]
    rng = np.random.default_rng(seed)
    out = []
    for k in range(d):
        pos, neg = ranks[:, labels == k], ranks[:, labels != k]
        n1, n0 = pos.shape[1], neg.shape[1]

        def extremeness(x: np.ndarray, y: np.ndarray, axis: int, n1: int = n1, n0: int = n0) -> np.ndarray:
            return np.abs((x.sum(axis=axis) - n1 * (n1 + 1) / 2) / (n1 * n0) - 0.5)

        res = permutation_test((pos, neg), extremeness, permutation_type="independent", vectorized=True,
                               n_resamples=n_perm, alternative="greater", axis=-1, rng=rng)
        out.append(res.pvalue)
    return np.array(out)


def compare(name: str, n: int, ours: Callable[[], Any], theirs: dict[str, Callable[[], Any]], repeat: int
            ) -> dict[str, Any]:
    row: dict[str, Any] = {"what": name, "n": n, "ours_s": round(best_of(ours, repeat), 4)}
    for label, fn in theirs.items():
        t = best_of(fn, repeat)
        row[f"{label}_s"] = round(t, 4)
        row[f"{label}_over_ours"] = round(t / max(row["ours_s"], 1e-9), 1)
    print(json.dumps(row), flush=True)
    return row


def bench_differences(n: int, h: int, d: int, n_perm: int, repeat: int) -> None:
    from describe.differences import one_vs_rest_auroc, permutation_test

    scores, labels = scores_and_labels(n, h, d)
    compare("auroc", n, lambda: one_vs_rest_auroc(scores, labels, d),
            {"sklearn_roc_auc_score": lambda: sklearn_auroc(scores, labels, d),
             "scipy_mannwhitneyu": lambda: mannwhitney_auroc(scores, labels, d)}, repeat)
    compare("permutation_test", n, lambda: permutation_test(scores, labels, d, n_perm, seed=0),
            {"scipy_permutation_test": lambda: scipy_permutation(scores, labels, d, n_perm, seed=0)}, repeat)


def torch_lbfgs_probe(x: np.ndarray, y: np.ndarray, k: int, l2: float, max_iter: int = 100) -> np.ndarray:
    """The probe's solver before scikit-learn (until issue 23): full-batch torch L-BFGS, strong Wolfe, on mean
    cross-entropy + l2 / 2 ||W||^2 of standardised float32 features. Returns the training predictions."""
    import torch
    import torch.nn.functional as F

    xt, yt = torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y, dtype=torch.long)
    std = xt.std(0, unbiased=False)
    z = (xt - xt.mean(0)) / torch.where(std > 1e-6, std, torch.ones_like(std))
    w = torch.zeros(k, x.shape[1], requires_grad=True)
    b = torch.zeros(k, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, tolerance_grad=1e-7, tolerance_change=1e-10,
                            history_size=20, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(z @ w.T + b, yt) + 0.5 * l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return (z @ w.detach().T + b.detach()).argmax(-1).numpy()


def bench_probe(n: int, dims: int, k: int, repeat: int) -> None:
    from classifiers.probes import LogisticRegression

    rng = np.random.default_rng(0)
    y = rng.integers(0, k, n)
    latent = rng.normal(size=(n, 12)) + np.eye(12)[y] * 0.5  # correlated features, as pixels are
    x = (latent @ rng.normal(size=(12, dims)) + 2 * rng.normal(size=(n, dims))).astype(np.float32)
    l2 = 1e-3
    row = compare(f"probe_logistic_{dims}d_{k}classes", n, lambda: LogisticRegression(l2, 100).fit(x, y, k),
                  {"torch_lbfgs_before": lambda: torch_lbfgs_probe(x, y, k, l2)}, repeat)
    agree = float((LogisticRegression(l2, 100).fit(x, y, k).predict(x) == torch_lbfgs_probe(x, y, k, l2)).mean())
    print(json.dumps({"what": row["what"], "n": n, "training_predictions_equal": agree}), flush=True)


def bench_objects(n: int, classes: int, n_boot: int, repeat: int) -> None:
    from sklearn.linear_model import LogisticRegression as SkLogistic

    from describe.objects import fit_logistic

    rng = np.random.default_rng(0)
    x = (rng.random((n, classes)) < 0.2).astype(np.float64)
    y = (rng.random(n) < 1 / 3 + 0.3 * x[:, 0]).astype(np.float64)
    full = fit_logistic(x, y, np.ones((1, n)))[0]
    weights = rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(np.float64)

    def sk() -> None:
        for w in weights:
            SkLogistic(C=1.0, max_iter=1000, tol=1e-8).fit(x, y, sample_weight=w)

    compare(f"objects_bootstrap_{classes}classes_{n_boot}refits", n, lambda: fit_logistic(x, y, weights, start=full),
            {"sklearn_per_replicate": sk}, repeat)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1500, 15_000])
    parser.add_argument("--hypotheses", type=int, default=30)
    parser.add_argument("--datasets", type=int, default=3)
    parser.add_argument("--n-perm", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--probe", action="store_true", help="also the probe's logistic regression")
    parser.add_argument("--objects", action="store_true", help="also the objects' bootstrap refits")
    args = parser.parse_args()
    for n in args.sizes:
        bench_differences(n, args.hypotheses, args.datasets, args.n_perm, args.repeat)
    if args.probe:
        for n, dims in ((2000, 96), (2000, 768), (5000, 3072)):
            bench_probe(n, dims, args.datasets, args.repeat)
    if args.objects:
        bench_objects(1500, 30, 200, args.repeat)


if __name__ == "__main__":
    main()
