"""Linear probes: multinomial logistic regression on standardised features, and its model selection.

A probe is the yardstick of a run. If a logistic regression on a few hundred pixel values tells the
datasets apart and the network does not, the network failed to learn and its number says
nothing about the transform (see `bias.experiment.verdict`).

The solver is full-batch L-BFGS (strong-Wolfe line search) on the mean cross-entropy plus
``l2 / 2 * ||W||^2``: the problem is convex and smooth, so a few hundred quasi-Newton steps reach
the optimum, where minibatch SGD would need a learning rate and many epochs. The cost is a
pair of ``[n, d] x [d, k]`` products per step; memory is the feature matrix itself, which callers
bound by sampling (`bias.experiment.baselines` keeps at most ``max_train`` training images).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F


def _tensor(x: Any) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x, dtype=np.float32) if not isinstance(x, torch.Tensor) else x).float()


class LogisticRegression:
    """Multinomial logistic regression, scikit-learn style: ``fit(X, y)``, ``predict``, ``score``.

    Features are standardised with the training mean and standard deviation (a feature constant in
    training becomes 0 everywhere). Fitted state ends in ``_``.
    """

    def __init__(self, l2: float = 1e-3, max_iter: int = 100, tol: float = 1e-7) -> None:
        if l2 < 0:
            raise ValueError(f"l2 must be >= 0, got {l2}")
        if max_iter < 1:
            raise ValueError(f"max_iter must be >= 1, got {max_iter}")
        self.l2, self.max_iter, self.tol = float(l2), int(max_iter), float(tol)

    def get_params(self) -> dict[str, Any]:
        return {"l2": self.l2, "max_iter": self.max_iter, "tol": self.tol}

    def _standardise(self, x: Any) -> torch.Tensor:
        return (_tensor(x) - self.mean_) / self.scale_

    def fit(self, x: Any, y: Any, num_classes: int | None = None,
            init: tuple[torch.Tensor, torch.Tensor] | None = None) -> LogisticRegression:
        """Fit on ``x`` [n, d] and integer labels ``y`` [n]; ``init`` = (weight, bias) warm start."""
        x, y = _tensor(x), torch.as_tensor(np.asarray(y), dtype=torch.long)
        if x.ndim != 2 or len(x) != len(y) or len(y) == 0:
            raise ValueError(f"need x [n, d] and y [n] with n > 0, got {tuple(x.shape)} and {tuple(y.shape)}")
        k = int(num_classes if num_classes is not None else int(y.max()) + 1)
        self.mean_ = x.mean(0)
        std = x.std(0, unbiased=False)
        self.scale_ = torch.where(std > 1e-6, std, torch.ones_like(std))
        z = (x - self.mean_) / self.scale_
        w = torch.zeros(k, x.shape[1]) if init is None else init[0].clone()
        b = torch.zeros(k) if init is None else init[1].clone()
        w.requires_grad_(True)
        b.requires_grad_(True)
        opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=self.max_iter, tolerance_grad=self.tol,
                                tolerance_change=1e-10, history_size=20, line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            opt.zero_grad()
            loss = F.cross_entropy(z @ w.T + b, y) + 0.5 * self.l2 * (w * w).sum()
            loss.backward()
            return loss

        opt.step(closure)
        self.coef_, self.intercept_ = w.detach(), b.detach()
        self.classes_ = k
        return self

    def decision_function(self, x: Any) -> torch.Tensor:
        return self._standardise(x) @ self.coef_.T + self.intercept_

    def predict_proba(self, x: Any) -> np.ndarray:
        return self.decision_function(x).softmax(-1).numpy()

    def predict(self, x: Any) -> np.ndarray:
        return self.decision_function(x).argmax(-1).numpy()

    def score(self, x: Any, y: Any) -> float:
        return float((self.predict(x) == np.asarray(y)).mean())


@dataclass
class ProbeFit:
    """A probe chosen on a held-out part of train and refitted on all of it."""

    features: str                       # the chosen candidate feature set
    l2: float
    model: LogisticRegression
    holdout_accuracy: float
    candidates: list[dict[str, Any]] = field(default_factory=list)   # every (features, l2) tried


def stratified_holdout(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (fit, holdout): ``fraction`` of every class held out, seeded; each class keeps >= 1 to fit."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"holdout fraction must be in (0, 1), got {fraction}")
    rng = np.random.default_rng([seed, 31])
    fit, hold = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_hold = min(len(idx) - 1, int(round(fraction * len(idx))))
        hold.append(idx[:n_hold])
        fit.append(idx[n_hold:])
    return np.sort(np.concatenate(fit)), np.sort(np.concatenate(hold))


def select_probe(candidates: Mapping[str, np.ndarray], y: np.ndarray, num_classes: int,
                 l2_grid: Sequence[float], holdout: float = 0.2, seed: int = 0, max_iter: int = 100) -> ProbeFit:
    """Choose the feature set and L2 strength on a held-out part of the training rows, then refit on all.

    ``candidates``: name -> [n, d] features of the same training rows (e.g. pixels at 16 and 32 px).
    The val set is never looked at. Ties go to the earlier candidate and the stronger penalty
    (the simpler model). The L2 path runs from strong to weak with warm starts.
    """
    if not candidates:
        raise ValueError("select_probe needs at least one candidate feature set")
    y = np.asarray(y)
    fit_idx, hold_idx = stratified_holdout(y, holdout, seed)
    grid = sorted({float(v) for v in l2_grid}, reverse=True)
    tried: list[dict[str, Any]] = []
    best: tuple[float, str, float] | None = None
    best_init: tuple[torch.Tensor, torch.Tensor] | None = None
    for name, x in candidates.items():
        x = _tensor(x)
        init = None
        for l2 in grid:
            probe = LogisticRegression(l2, max_iter).fit(x[fit_idx], y[fit_idx], num_classes, init=init)
            init = (probe.coef_, probe.intercept_)
            acc = probe.score(x[hold_idx], y[hold_idx])
            tried.append({"features": name, "l2": l2, "holdout_accuracy": acc})
            if best is None or acc > best[0]:
                best, best_init = (acc, name, l2), init
    acc, name, l2 = best
    # the refit on all rows starts from the chosen fit: the same (strictly convex) optimum in fewer steps
    final = LogisticRegression(l2, max_iter).fit(candidates[name], y, num_classes, init=best_init)
    return ProbeFit(name, l2, final, acc, tried)
