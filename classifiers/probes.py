"""Linear probes: multinomial logistic regression on standardised features, and its model selection.

A probe is the yardstick of a run. If a logistic regression on a few hundred pixel values tells the
datasets apart and the network does not, the network failed to learn and its number says
nothing about the transform (see `bias.experiment.verdict`).

The solver is scikit-learn's ``LogisticRegression`` (L-BFGS) on the mean cross-entropy plus
``l2 / 2 * ||W||^2`` over the k class weight vectors (the intercepts unpenalised): the problem is convex and
smooth, so a few hundred quasi-Newton steps reach the optimum, where minibatch SGD would need a learning rate and
many epochs. Memory is the feature matrix (float32, as given) and its standardised copy, which callers bound by
sampling (`bias.experiment.baselines` keeps at most ``max_train`` training images).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch


def _features(x: Any) -> np.ndarray:
    """[n, d] float32 numpy features from an array or tensor (float64 input stays float64)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    return x if x.dtype in (np.float32, np.float64) else x.astype(np.float32)


class LogisticRegression:
    """Multinomial logistic regression, scikit-learn style: ``fit(X, y)``, ``predict``, ``score``.

    A thin layer over ``sklearn.linear_model.LogisticRegression`` that keeps the probe's parametrisation:
    minimise mean cross-entropy + ``l2 / 2 * ||W||^2``, i.e. ``C = 1 / (n * l2)`` for k >= 3 classes, and
    ``C = 2 / (n * l2)`` for two classes (scikit-learn fits one weight vector v there; the softmax with two
    penalised vectors has w1 = -w0 = v / 2, whose penalty is ``l2 / 4 * ||v||^2``). ``l2 = 0``: no penalty.

    Features are standardised with the training mean and standard deviation; a feature whose standard deviation
    is at most 1e-6 (constant in training, up to float32 noise) becomes 0 everywhere (scikit-learn's
    ``StandardScaler`` would scale such a feature up by its noise). `decision_function` and `predict_proba` have
    one column per class 0..num_classes-1; a class absent from training gets logit -inf (probability 0). Reaching
    ``max_iter`` is not an error (the probe is a yardstick; a stopped L-BFGS is close to the optimum):
    ``converged_`` records it. Fitted state ends in ``_``.
    """

    def __init__(self, l2: float = 1e-3, max_iter: int = 100, tol: float = 1e-7) -> None:
        if l2 < 0:
            raise ValueError(f"l2 must be >= 0, got {l2}")
        if max_iter < 1:
            raise ValueError(f"max_iter must be >= 1, got {max_iter}")
        self.l2, self.max_iter, self.tol = float(l2), int(max_iter), float(tol)

    def get_params(self) -> dict[str, Any]:
        return {"l2": self.l2, "max_iter": self.max_iter, "tol": self.tol}

    def _standardise(self, x: Any) -> np.ndarray:
        x = _features(x)
        return (x - self.mean_.astype(x.dtype)) / self.scale_.astype(x.dtype)

    def fit(self, x: Any, y: Any, num_classes: int | None = None,
            init: tuple[np.ndarray, np.ndarray] | None = None) -> LogisticRegression:
        """Fit on ``x`` [n, d] and integer labels ``y`` [n]; ``init`` = (coef_, intercept_) of an earlier fit on the
        same classes, a warm start."""
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.linear_model import LogisticRegression as SkLogisticRegression

        x, y = _features(x), np.asarray(y, dtype=np.int64).reshape(-1)
        if x.ndim != 2 or len(x) != len(y) or len(y) == 0:
            raise ValueError(f"need x [n, d] and y [n] with n > 0, got {tuple(x.shape)} and {tuple(y.shape)}")
        self.classes_ = int(num_classes if num_classes is not None else int(y.max()) + 1)
        self.mean_ = x.mean(0, dtype=np.float64)
        std = x.std(0, dtype=np.float64)
        self.scale_ = np.where(std > 1e-6, std, 1.0)
        z = self._standardise(x)
        self.present_ = np.unique(y)
        self.converged_ = True
        if len(self.present_) == 1:  # one class: it is always predicted
            self.model_ = None
            self.coef_, self.intercept_ = np.zeros((1, x.shape[1])), np.zeros(1)
            return self
        per_vector = 2.0 if len(self.present_) == 2 else 1.0
        c = np.inf if self.l2 == 0 else per_vector / (len(y) * self.l2)
        model = SkLogisticRegression(C=c, max_iter=self.max_iter, tol=self.tol, warm_start=init is not None)
        if init is not None and len(init[1]) == (1 if len(self.present_) == 2 else len(self.present_)):
            model.coef_, model.intercept_ = np.array(init[0], dtype=np.float64), np.array(init[1], dtype=np.float64)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            model.fit(z, y)
        self.converged_ = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
        self.model_, self.coef_, self.intercept_ = model, model.coef_, model.intercept_
        return self

    def decision_function(self, x: Any) -> torch.Tensor:
        """[n, num_classes] logits as a float tensor (softmax gives `predict_proba`)."""
        z = self._standardise(x)
        logits = np.full((len(z), self.classes_), -np.inf, dtype=np.float64)
        if self.model_ is None:
            logits[:, self.present_[0]] = 0.0
        elif len(self.present_) == 2:
            f = self.model_.decision_function(z)
            logits[:, self.present_[0]], logits[:, self.present_[1]] = -f / 2, f / 2
        else:
            logits[:, self.present_] = self.model_.decision_function(z)
        return torch.from_numpy(logits).float()

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
    best_init: tuple[np.ndarray, np.ndarray] | None = None
    for name, x in candidates.items():
        x = _features(x)
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
