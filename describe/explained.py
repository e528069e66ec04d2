"""How much of the image classifier's bias the words explain: the "explained share".

The dataset classifier on images reaches some accuracy above chance. If the differences found in words are
what it uses, a simple classifier that sees only those words should get much of the way. Two such
classifiers, each a seeded logistic regression (standardised features) fitted on one part of the scored images
and evaluated on a held-out, stratified part:

* (a) on the similarity scores of the top-k hypotheses per dataset alone (chosen by their one-vs-rest AUROC on
  the fitting part only, so the held-out part plays no role in the choice);
* (b) on the object-presence vectors alone.

Each reports its accuracy, chance (the majority share of the held-out labels, as the bias table counts it) and
its share of the image classifier's points above chance: (acc - chance) / (acc_image - chance_image), with a
sentence such as "the descriptions account for 18.0 of the 25.0 points above chance (72%)". A share can exceed
1 (the words do better than the image classifier) or be negative (worse than chance); it is reported as it is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from bias.core.errors import DataError
from bias.core.seeding import derive_seed


@dataclass
class Share:
    """One feature set's classifier: held-out accuracy, chance, and its share of the image classifier's points."""

    name: str
    features: int
    accuracy: float
    chance: float
    image_accuracy: float
    image_chance: float
    points: float
    image_points: float
    share: float | None
    sentence: str
    n_fit: int
    n_held_out: int
    chosen: list[str] = field(default_factory=list)


def holdout_split(labels: np.ndarray, holdout: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(fit, held-out) positions, stratified by label and seeded (`classifiers.probes.stratified_holdout`)."""
    from classifiers.probes import stratified_holdout

    return stratified_holdout(np.asarray(labels), holdout, seed)


def holdout_accuracy(features: np.ndarray, labels: np.ndarray, fit: np.ndarray, held: np.ndarray, seed: int,
                     c: float = 1.0, max_iter: int = 2000) -> tuple[float, float]:
    """(accuracy, chance) on the held-out rows of a logistic regression fitted on the `fit` rows."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = np.asarray(features, dtype=np.float64), np.asarray(labels)
    if len(np.unique(y[fit])) < 2:
        raise DataError("describe.explained: the fitting part holds fewer than two datasets")
    model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=max_iter, random_state=seed))
    model.fit(x[fit], y[fit])
    accuracy = float((model.predict(x[held]) == y[held]).mean())
    chance = float(np.bincount(y[held]).max() / len(held))
    return accuracy, chance


def top_hypotheses(scores: np.ndarray, labels: np.ndarray, n_classes: int, k: int) -> list[int]:
    """The union, in order, of each dataset's k hypotheses (columns) of largest one-vs-rest AUROC."""
    from describe.differences import one_vs_rest_auroc

    auroc = np.nan_to_num(one_vs_rest_auroc(scores, labels, n_classes), nan=-np.inf)
    chosen: list[int] = []
    for d in range(n_classes):
        for h in np.argsort(-auroc[d], kind="stable")[:k]:
            if int(h) not in chosen:
                chosen.append(int(h))
    return chosen


def describe_share(what: str, points: float, image_points: float, share: float | None) -> str:
    """The sentence of one share: "the descriptions account for X of the Y points above chance (Z%)"."""
    if image_points <= 0:
        return (f"the image classifier is not above chance ({100 * image_points:+.1f} points), so there is no share "
                f"to explain; {what} score {100 * points:+.1f} points against chance")
    if points <= 0:
        return f"{what} do no better than chance ({100 * points:+.1f} points of the {100 * image_points:.1f} " \
               "points above chance)"
    return (f"{what} account for {100 * points:.1f} of the {100 * image_points:.1f} points above chance "
            f"({100 * share:.0f}%)")


def share_of(name: str, what: str, features: np.ndarray, labels: np.ndarray, fit: np.ndarray, held: np.ndarray,
             image_accuracy: float, image_chance: float | None, seed: int, chosen: Sequence[str] = ()) -> Share:
    """`Share` of one feature set on a given split."""
    accuracy, chance = holdout_accuracy(features, labels, fit, held, seed)
    image_chance = chance if image_chance is None else float(image_chance)
    points, image_points = accuracy - chance, float(image_accuracy) - image_chance
    share = points / image_points if image_points > 0 else None
    return Share(name, int(features.shape[1]), accuracy, chance, float(image_accuracy), image_chance, points,
                 image_points, share, describe_share(what, points, image_points, share), len(fit), len(held),
                 list(chosen))


def explained_share(labels: np.ndarray, image_accuracy: float, *, hypothesis_scores: np.ndarray | None = None,
                    object_presence: np.ndarray | None = None, hypothesis_names: Sequence[str] | None = None,
                    object_names: Sequence[str] | None = None, k: int = 5, image_chance: float | None = None,
                    holdout: float = 0.3, seed: int = 0) -> dict[str, Any]:
    """The explained shares of the hypothesis scores (a) and the object-presence vectors (b), on one split.

    `labels` [n]: the dataset of each scored image; `hypothesis_scores` [n, H]: their similarity to each
    hypothesis (`Differences.similarity`); `object_presence` [n, C]: binary presence per class, rows aligned
    with `labels`. `image_accuracy` (and `image_chance`, default this split's chance): the image classifier's.
    Both feature sets use the same seeded held-out split. Returns {"seed", "split", "hypotheses", "objects"}
    with a `Share` (as a dict) per feature set given.
    """
    labels = np.asarray(labels, dtype=np.int64)
    if hypothesis_scores is None and object_presence is None:
        raise ValueError("explained_share: give hypothesis_scores, object_presence or both")
    for name, x in (("hypothesis_scores", hypothesis_scores), ("object_presence", object_presence)):
        if x is not None and len(x) != len(labels):
            raise ValueError(f"explained_share: {name} has {len(x)} rows for {len(labels)} labels")
    split_seed = derive_seed(seed, "describe.explained.split")
    fit, held = holdout_split(labels, holdout, split_seed)
    n_classes = int(labels.max()) + 1
    out: dict[str, Any] = {"seed": int(seed), "split_seed": split_seed, "holdout": float(holdout),
                           "split": {"fit": len(fit), "held_out": len(held)}, "k": int(k)}
    if hypothesis_scores is not None:
        scores = np.asarray(hypothesis_scores, dtype=np.float64)
        chosen = top_hypotheses(scores[fit], labels[fit], n_classes, k)
        names = [hypothesis_names[h] if hypothesis_names is not None else str(h) for h in chosen]
        out["hypotheses"] = asdict(share_of("hypotheses", "the descriptions", scores[:, chosen], labels, fit, held,
                                            image_accuracy, image_chance, seed, names))
    if object_presence is not None:
        presence = np.asarray(object_presence, dtype=np.float64)
        out["objects"] = asdict(share_of("objects", "the object-presence vectors", presence, labels, fit, held,
                                         image_accuracy, image_chance, seed,
                                         list(object_names) if object_names is not None else []))
    return out
