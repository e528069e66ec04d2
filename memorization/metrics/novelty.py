"""Set-level novelty statistics built on the nearest-neighbour distances: replica rate, a two-sample test,
and the accuracy-novelty front.

* replica rate: the share of generated models closer to some training model than the closest
  training-training pair (``min`` of the training set's own nearest-neighbour distances, self
  excluded). Independent training runs give about 0; copies give 1.
* two-sample test: are the generated-to-train nearest distances smaller than the train-to-train
  ones? One-sided Mann-Whitney U (``alternative="less"``) and the two-sided Kolmogorov-Smirnov
  statistic, both from scipy.
* front: a point is (quality, novelty), both higher = better (accuracy and ``1 - max error-IoU``).
  `pareto_front` gives the non-dominated points of a set; `beyond_front` says which points no
  reference point weakly dominates (at least as good on both axes, within the tolerances): a
  generated model "beyond the noise baseline's front" is one that no noisy copy matches on both.
"""

from __future__ import annotations

import numpy as np
from scipy import stats


def _finite(values) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    return v[np.isfinite(v)]


def replica_rate(generated_nn, train_nn) -> dict[str, float]:
    """``{"threshold": min train-train NN distance, "rate": share of generated NN distances below it, "n"}``."""
    g, t = _finite(generated_nn), _finite(train_nn)
    if not len(t) or not len(g):
        return {"threshold": float("nan"), "rate": float("nan"), "n": int(len(g))}
    threshold = float(t.min())
    return {"threshold": threshold, "rate": float(np.mean(g < threshold)), "n": int(len(g))}


def two_sample_test(generated_nn, train_nn) -> dict[str, float]:
    """Generated-to-train vs train-to-train nearest distances: medians, Mann-Whitney U (generated smaller,
    one-sided) and Kolmogorov-Smirnov (two-sided)."""
    g, t = _finite(generated_nn), _finite(train_nn)
    if len(g) < 1 or len(t) < 1:
        return {"n_generated": int(len(g)), "n_train": int(len(t))}
    u = stats.mannwhitneyu(g, t, alternative="less")
    ks = stats.ks_2samp(g, t)
    return {"n_generated": int(len(g)), "n_train": int(len(t)), "median_generated": float(np.median(g)),
            "median_train": float(np.median(t)), "mannwhitney_u": float(u.statistic),
            "mannwhitney_p_generated_closer": float(u.pvalue), "ks_statistic": float(ks.statistic),
            "ks_p": float(ks.pvalue)}


def pareto_front(quality, novelty) -> np.ndarray:
    """Indices of the non-dominated points (maximising both), sorted by quality descending."""
    q, n = np.asarray(quality, float), np.asarray(novelty, float)
    ok = np.flatnonzero(np.isfinite(q) & np.isfinite(n))
    order = ok[np.lexsort((-n[ok], -q[ok]))]
    front, best = [], -np.inf
    for i in order:
        if n[i] > best:
            front.append(int(i))
            best = n[i]
    return np.asarray(front, dtype=np.int64)


def beyond_front(quality, novelty, ref_quality, ref_novelty, tol_quality: float = 0.0,
                 tol_novelty: float = 0.0) -> np.ndarray:
    """Bool per point: no reference point is at least as good on both axes (ties within the tolerances count
    as as-good). Only the reference set's front matters, so the check is ``points x front``."""
    q, n = np.asarray(quality, float), np.asarray(novelty, float)
    rq, rn = np.asarray(ref_quality, float), np.asarray(ref_novelty, float)
    f = pareto_front(rq, rn)
    if not len(f):
        return np.isfinite(q) & np.isfinite(n)
    covered = (rq[f][None] >= q[:, None] - tol_quality) & (rn[f][None] >= n[:, None] - tol_novelty)
    return ~covered.any(1) & np.isfinite(q) & np.isfinite(n)
