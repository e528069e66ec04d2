"""Broader levels of the ImageNet-1k classes: a "tabby" is also a "cat", a "mammal" and an "animal".

The table (describe/data/imagenet_hierarchy.json) is each class's WordNet 3.0 ancestors, nearest first, as
readable first lemmas, with levels too abstract to name what an image shows left out; it is built from
Debian's `wordnet-base` by benchmarks/build_imagenet_hierarchy.py and committed, so nothing is looked up at run
time. `broader_presence` turns a presence matrix of fine classes into one of their broader levels: an image
contains "animal" when any of its classes is an animal. A dataset of many different animals then shares the
level "animal" even when no single breed dominates.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np

TABLE = Path(__file__).parent / "data" / "imagenet_hierarchy.json"


@lru_cache(maxsize=1)
def _table() -> dict[str, list[str]]:
    return dict(json.loads(TABLE.read_text())["broader"])


def broader_names(name: str) -> list[str]:
    """The broader levels of an ImageNet class name (its unique short name), nearest first; [] if unknown."""
    return list(_table().get(name, []))


def broader_presence(present: np.ndarray, classes: Sequence[str], min_classes: int = 2
                     ) -> tuple[np.ndarray, list[str]]:
    """(presence [n, L] of the broader levels, their names): image i has level l when any class it contains has
    l among its ancestors. Only levels that gather at least `min_classes` of the given classes are kept (a
    level above one class alone says the same as the class) and not named like a class itself."""
    present = np.asarray(present, dtype=bool)
    members: dict[str, list[int]] = {}
    for c, name in enumerate(classes):
        for level in broader_names(name):
            members.setdefault(level, []).append(c)
    fine = set(classes)
    levels = sorted(lv for lv, cs in members.items() if len(cs) >= min_classes and lv not in fine)
    out = np.zeros((present.shape[0], len(levels)), dtype=bool)
    for j, level in enumerate(levels):
        out[:, j] = present[:, members[level]].any(axis=1)
    return out, levels
