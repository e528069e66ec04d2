"""Did the classifier learn? The learnability verdict of a run.

A dataset-classification accuracy measures the information a transform keeps only if the network
could have fitted that information. Three verdicts:

* ``under-fit``: the final training accuracy is within ``underfit_margin`` (5 points) of chance:
  the network did not fit even its training data, so its val accuracy says nothing about the
  transform (the signal may be there, or not). Not when, given the number of val images, the val
  accuracy is significantly above chance: then the network fitted a weak signal that generalises
  (a two-way task whose best linear probe is 3 points above chance leaves little more to fit than
  the network did), and the number is a measurement. The verdict records ``weak_signal: true``.
* ``beaten by baseline``: a linear probe on the same inputs (`bias.experiment.baselines`) beats the network's
  val accuracy by more than ``baseline_margin`` (5 points): the recipe is too weak for these data,
  and the probe's number is the better lower bound on what the transform keeps.
* ``learned``: neither.

Under-fit is checked first: it is the stronger statement. Given the number of val images, two checks
keep noise from deciding (one-sided tests at ``alpha``, 5%):

* a network and every probe that are all at chance on val (none significantly above it, binomial
  test) is also ``under-fit``: no signal that the recipe or a linear probe can find in these data, so the
  row's number is chance, whatever its train accuracy;
* a probe beats the network only if its lead is both more than ``baseline_margin`` and significant
  (two-proportion z-test): on a small val set a 5-point lead can be noise.

The verdict records the numbers it was decided on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from bias.experiment.config import VerdictConfig, options_from_config

LEARNED, UNDER_FIT, BEATEN = "learned", "under-fit", "beaten by baseline"
ALPHA = 0.05  # one-sided significance level of the verdict's tests
VERDICTS = (LEARNED, UNDER_FIT, BEATEN)


@dataclass(frozen=True)
class VerdictOptions:
    underfit_margin: float = 0.05
    baseline_margin: float = 0.05

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | None) -> VerdictOptions:
        """From the `verdict` config, checked against `bias.experiment.config.VerdictConfig`."""
        return options_from_config(cls, VerdictConfig, cfg, "verdict")


def train_chance(labels: np.ndarray, num_classes: int) -> float:
    """Accuracy of always predicting the most frequent training class."""
    labels = np.asarray(labels)
    return float(np.bincount(labels, minlength=num_classes).max() / len(labels)) if len(labels) else 1.0 / num_classes


def above_chance(accuracy: float, n: int, chance: float, alpha: float = ALPHA) -> bool:
    """Is `accuracy` on `n` images significantly above `chance` (one-sided exact binomial test)?"""
    from scipy.stats import binomtest

    p = binomtest(round(accuracy * n), n, min(max(chance, 1e-12), 1 - 1e-12), alternative="greater").pvalue
    return bool(p < alpha)


def significantly_better(a: float, b: float, n: int, alpha: float = ALPHA) -> bool:
    """Is accuracy `a` significantly above `b`, both on the same `n` images (one-sided two-proportion z-test)?

    The test treats the two as independent samples; on the same images they are positively correlated, so
    this is conservative (it calls fewer leads significant than a paired test would).
    """
    from scipy.stats import norm

    pooled = (a + b) / 2
    se = float(np.sqrt(max(2 * pooled * (1 - pooled) / n, 1e-12)))
    return float(norm.sf((a - b) / se)) < alpha


def learnability_verdict(history: Sequence[Mapping[str, float]], chance: float, val_accuracy: float,
                         baselines: Sequence[Mapping[str, Any]] = (),
                         options: VerdictOptions = VerdictOptions(), n_val: int | None = None) -> dict[str, Any]:
    """The verdict of one run from its training history, its train-set chance and its baselines.

    With `n_val` (the number of val images) the verdict also tests significance (module docstring); without
    it only the margins decide.
    """
    final_train = float(history[-1]["train_acc"]) if history else float("nan")
    scored = [b for b in baselines if b.get("accuracy") == b.get("accuracy")]
    best = max(scored, key=lambda b: b["accuracy"]) if scored else None
    out: dict[str, Any] = {"final_train_accuracy": final_train, "train_chance": chance, "n_val": n_val,
                           "val_accuracy": val_accuracy, "underfit_margin": options.underfit_margin,
                           "baseline_margin": options.baseline_margin,
                           "best_baseline": None if best is None else {"name": best["name"],
                                                                       "accuracy": best["accuracy"]}}
    near_chance = not final_train == final_train or final_train < chance + options.underfit_margin
    # a train accuracy near chance with a val accuracy significantly above it: a weak signal, fitted and generalised
    weak_signal = near_chance and final_train == final_train and bool(n_val) and above_chance(
        val_accuracy, n_val, chance)
    out["weak_signal"] = weak_signal
    if near_chance and not weak_signal:
        out.update(verdict=UNDER_FIT, reason=(
            f"final train accuracy {100 * final_train:.1f}% is within {100 * options.underfit_margin:.0f} points "
            f"of chance ({100 * chance:.1f}%): the network did not fit, the number says nothing about the transform"))
    elif n_val and not above_chance(val_accuracy, n_val, chance) and not any(
            above_chance(b["accuracy"], n_val, chance) for b in scored):
        out.update(verdict=UNDER_FIT, reason=(
            f"the network ({100 * val_accuracy:.1f}%) and every probe"
            + (f" (best {best['name']} {100 * best['accuracy']:.1f}%)" if best else "")
            + f" are at chance ({100 * chance:.1f}%) on {n_val} val images: no signal that this recipe or a "
            "linear probe finds"))
    elif best is not None and best["accuracy"] - val_accuracy > options.baseline_margin and (
            not n_val or significantly_better(best["accuracy"], val_accuracy, n_val)):
        out.update(verdict=BEATEN, reason=(
            f"the {best['name']} probe reaches {100 * best['accuracy']:.1f}%, {100 * (best['accuracy'] - val_accuracy):.1f} "
            f"points above the network ({100 * val_accuracy:.1f}%): the recipe is too weak for these data"))
    else:
        out.update(verdict=LEARNED, reason=(
            f"train accuracy {100 * final_train:.1f}% vs chance {100 * chance:.1f}%"
            + (f" (a weak signal: within {100 * options.underfit_margin:.0f} points of chance, but val "
               f"{100 * val_accuracy:.1f}% is significantly above it on {n_val} val images)" if weak_signal else "")
            + (f"; best probe {best['name']} {100 * best['accuracy']:.1f}%" if best else "")))
    return out


def stored_options(stored: Mapping[str, Any]) -> VerdictOptions:
    """The margins a stored verdict (`results.json`'s `verdict`) was decided with; the defaults where it has none."""
    return VerdictOptions(float(stored.get("underfit_margin", VerdictOptions.underfit_margin)),
                          float(stored.get("baseline_margin", VerdictOptions.baseline_margin)))


def current_verdict(results: Mapping[str, Any]) -> str:
    """The verdict of a finished run's `results.json` as this code decides it, from the numbers the run stored
    (train history, train-set chance, val accuracy and size, probes) and the margins it ran with: a table that
    reuses runs made before a change of the rule reports them as it reports new ones. A result without those
    numbers keeps the verdict it stored (or `learned`, as before verdicts existed)."""
    stored = results.get("verdict") or {}
    if not stored or "history" not in results or "train_chance" not in stored or "accuracy" not in results:
        return str(stored.get("verdict", LEARNED))
    options = stored_options(stored)
    n_val = stored.get("n_val") or results.get("n_val")  # a verdict decided without it stores None
    return learnability_verdict(results["history"], float(stored["train_chance"]), float(results["accuracy"]),
                                results.get("baselines") or [], options,
                                n_val=int(n_val) if n_val else None)["verdict"]


def verdict_marker(verdicts: Sequence[str]) -> str:
    """A short marker for a table cell over seeds: '' if every seed learned."""
    bad = [v for v in verdicts if v != LEARNED]
    if not bad:
        return ""
    kinds = sorted(set(bad), key=VERDICTS.index)
    share = "" if len(bad) == len(verdicts) else f" {len(bad)}/{len(verdicts)} seeds"
    return "/".join(kinds) + share
