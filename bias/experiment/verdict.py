"""Did the classifier learn? The learnability verdict of a run.

A dataset-classification accuracy measures the information a transform keeps only if the network
could have fitted that information. Three verdicts:

* ``under-fit``: the final training accuracy is within ``underfit_margin`` (5 points) of chance:
  the network did not fit even its training data, so its val accuracy says nothing about the
  transform (the signal may be there, or not).
* ``beaten by baseline``: a linear probe on the same inputs (`bias.experiment.baselines`) beats the network's
  val accuracy by more than ``baseline_margin`` (5 points): the recipe is too weak for these data,
  and the probe's number is the better lower bound on what the transform keeps.
* ``learned``: neither.

Under-fit is checked first: it is the stronger statement. The verdict records the numbers it was
decided on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from bias.experiment.config import VerdictConfig, options_from_config

LEARNED, UNDER_FIT, BEATEN = "learned", "under-fit", "beaten by baseline"
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


def learnability_verdict(history: Sequence[Mapping[str, float]], chance: float, val_accuracy: float,
                         baselines: Sequence[Mapping[str, Any]] = (),
                         options: VerdictOptions = VerdictOptions()) -> dict[str, Any]:
    """The verdict of one run from its training history, its train-set chance and its baselines."""
    final_train = float(history[-1]["train_acc"]) if history else float("nan")
    scored = [b for b in baselines if b.get("accuracy") == b.get("accuracy")]
    best = max(scored, key=lambda b: b["accuracy"]) if scored else None
    out: dict[str, Any] = {"final_train_accuracy": final_train, "train_chance": chance,
                           "val_accuracy": val_accuracy, "underfit_margin": options.underfit_margin,
                           "baseline_margin": options.baseline_margin,
                           "best_baseline": None if best is None else {"name": best["name"],
                                                                       "accuracy": best["accuracy"]}}
    if not final_train == final_train or final_train < chance + options.underfit_margin:
        out.update(verdict=UNDER_FIT, reason=(
            f"final train accuracy {100 * final_train:.1f}% is within {100 * options.underfit_margin:.0f} points "
            f"of chance ({100 * chance:.1f}%): the network did not fit, the number says nothing about the transform"))
    elif best is not None and best["accuracy"] - val_accuracy > options.baseline_margin:
        out.update(verdict=BEATEN, reason=(
            f"the {best['name']} probe reaches {100 * best['accuracy']:.1f}%, {100 * (best['accuracy'] - val_accuracy):.1f} "
            f"points above the network ({100 * val_accuracy:.1f}%): the recipe is too weak for these data"))
    else:
        out.update(verdict=LEARNED, reason=(
            f"train accuracy {100 * final_train:.1f}% vs chance {100 * chance:.1f}%"
            + (f"; best probe {best['name']} {100 * best['accuracy']:.1f}%" if best else "")))
    return out


def verdict_marker(verdicts: Sequence[str]) -> str:
    """A short marker for a table cell over seeds: '' if every seed learned."""
    bad = [v for v in verdicts if v != LEARNED]
    if not bad:
        return ""
    kinds = sorted(set(bad), key=VERDICTS.index)
    share = "" if len(bad) == len(verdicts) else f" {len(bad)}/{len(verdicts)} seeds"
    return "/".join(kinds) + share
