"""Broader levels of the ImageNet-1k classes: a "tabby" is also a "cat", a "mammal" and an "animal".

The table (describe/data/imagenet_hierarchy.json) is each class's WordNet 3.0 ancestors, nearest first, as
readable first lemmas, with levels too abstract to name what an image shows left out (and the same for the LVIS
and ADE20K class names, through the first WordNet noun sense of each name); it is built from
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


VOCABULARIES = ("imagenet", "lvis", "ade20k")


@lru_cache(maxsize=len(VOCABULARIES))
def _table(vocabulary: str = "imagenet") -> dict[str, list[str]]:
    if vocabulary not in VOCABULARIES:
        raise ValueError(f"vocabulary: expected one of {VOCABULARIES}, got {vocabulary!r}")
    data = json.loads(TABLE.read_text())
    return dict(data["broader"] if vocabulary == "imagenet" else data["by_name"][vocabulary])


def broader_names(name: str, vocabulary: str = "imagenet") -> list[str]:
    """The broader levels of a class name, nearest first; [] if unknown. ImageNet classes by their synset; LVIS
    and ADE20K names by the first WordNet noun sense of their name (a heuristic, recorded in the table)."""
    return list(_table(vocabulary).get(name, []))


def broader_presence(present: np.ndarray, classes: Sequence[str], min_classes: int = 2,
                     vocabulary: str = "imagenet") -> tuple[np.ndarray, list[str]]:
    """(presence [n, L] of the broader levels, their names): image i has level l when any class it contains has
    l among its ancestors. Only levels that gather at least `min_classes` of the given classes are kept (a
    level above one class alone says the same as the class) and not named like a class itself."""
    present = np.asarray(present, dtype=bool)
    members: dict[str, list[int]] = {}
    for c, name in enumerate(classes):
        for level in broader_names(name, vocabulary):
            members.setdefault(level, []).append(c)
    fine = set(classes)
    levels = sorted(lv for lv, cs in members.items() if len(cs) >= min_classes and lv not in fine)
    out = np.zeros((present.shape[0], len(levels)), dtype=bool)
    for j, level in enumerate(levels):
        out[:, j] = present[:, members[level]].any(axis=1)
    return out, levels
