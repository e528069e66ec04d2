"""Datasets to compare: where they come from, and seeded balanced train/val splits of them."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa


class DataConfigError(ValueError):
    """The data configuration cannot work; the message says what to change."""


def parse_dataset_paths(paths: Any) -> dict[str, str]:
    """Accept `{NAME: DIR, ...}` or `[NAME=DIR, ...]`; names must be unique."""
    if paths is None or paths == "???":
        raise DataConfigError("data.paths is not set: pass data.paths='{NAME: DIR, NAME: DIR}' with two or more folders")
    pairs: list[tuple[str, str]] = []
    if isinstance(paths, Mapping):
        pairs = [(str(k), str(v)) for k, v in paths.items()]
    elif isinstance(paths, Sequence) and not isinstance(paths, str):
        for item in paths:
            if isinstance(item, Mapping):
                pairs += [(str(k), str(v)) for k, v in item.items()]
            elif isinstance(item, str) and "=" in item:
                name, _, folder = item.partition("=")
                pairs.append((name.strip(), folder.strip()))
            else:
                raise DataConfigError(f"cannot read dataset entry {item!r}: use NAME=DIR")
    else:
        raise DataConfigError(f"data.paths must map dataset names to folders, got {paths!r}")
    check_dataset_names([n for n, _ in pairs])
    return dict(pairs)


def check_dataset_names(names: Sequence[str]) -> None:
    """Two or more datasets, each with its own name made of letters, digits, '_', '-' and '.'."""
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise DataConfigError(f"duplicate dataset names {dupes}: every dataset needs its own name")
    if len(names) < 2:
        raise DataConfigError(f"dataset classification needs two or more datasets, got {len(names)}: {list(names)}")
    bad = [n for n in names if not re.fullmatch(r"[A-Za-z0-9_.\-]+", n)]
    if bad:
        raise DataConfigError(f"dataset names {bad} may only use letters, digits, '_', '-' and '.'")


_DICT_ARG = re.compile(r"^\+{0,2}data\.paths=\s*\{(.*)\}\s*$", re.S)


def duplicate_keys_in_overrides(argv: Sequence[str]) -> list[str]:
    """Dataset names given twice in a `data.paths={...}` command-line override.

    Hydra's parser keeps only the last of two equal keys, so duplicates must be caught in the
    raw argument before it gets there.
    """
    for arg in argv:
        m = _DICT_ARG.match(arg)
        if not m:
            continue
        keys, depth, token = [], 0, ""
        for ch in m.group(1) + ",":
            if ch in "[{(":
                depth += 1
            elif ch in "]})":
                depth -= 1
            if ch == "," and depth == 0:
                keys.append(token.split(":", 1)[0].strip().strip("'\""))
                token = ""
            else:
                token += ch
        return sorted({k for k in keys if k and keys.count(k) > 1})
    return []


def check_folders(folders: Mapping[str, str]) -> dict[str, Path]:
    resolved = {}
    for name, folder in folders.items():
        path = Path(os.path.expanduser(folder))
        if not path.exists():
            raise DataConfigError(f"dataset {name!r}: folder {path} does not exist")
        if not path.is_dir():
            raise DataConfigError(f"dataset {name!r}: {path} is not a folder")
        resolved[name] = path.resolve()
    return resolved


def index_datasets(sources: Mapping[str, Any], cache_dir: Path, num_workers: int | None = None) -> dict[str, Any]:
    """One checked index per dataset, from its `bias.sources` source."""
    return {name: src.index(cache_dir, num_workers) for name, src in sources.items()}


@dataclass
class Split:
    """A seeded, balanced, disjoint train/val split over named datasets (label = position in `names`).

    `*_paths` name the samples (a file path, or e.g. `shard.tar/member.jpg`: unique, used in every report);
    `*_read` is what `bias.sources.load_image` reads (the same path for files, a member locator for shards).
    """

    names: list[str]
    train_paths: np.ndarray
    train_labels: np.ndarray
    train_sha1: np.ndarray
    val_paths: np.ndarray
    val_labels: np.ndarray
    val_sha1: np.ndarray
    train_read: np.ndarray | None = None
    val_read: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.train_read is None:
            self.train_read = self.train_paths
        if self.val_read is None:
            self.val_read = self.val_paths

    @property
    def num_classes(self) -> int:
        return len(self.names)

    def manifest(self) -> pa.Table:
        n_train, n_val = len(self.train_paths), len(self.val_paths)
        return pa.table(
            {
                "path": np.concatenate([self.train_paths, self.val_paths]).astype(str),
                "dataset": [self.names[i] for i in np.concatenate([self.train_labels, self.val_labels])],
                "label": np.concatenate([self.train_labels, self.val_labels]).astype(np.int64),
                "split": ["train"] * n_train + ["val"] * n_val,
                "sha1": np.concatenate([self.train_sha1, self.val_sha1]).astype(str),
            }
        )

    def without_train(self, positions: np.ndarray) -> Split:
        keep = np.ones(len(self.train_paths), dtype=bool)
        keep[positions] = False
        return Split(self.names, self.train_paths[keep], self.train_labels[keep], self.train_sha1[keep],
                     self.val_paths, self.val_labels, self.val_sha1, self.train_read[keep], self.val_read)


def make_split(indexes: Mapping[str, Any], per_dataset: int | None, val_per_dataset: int, seed: int) -> Split:
    """Draw `val_per_dataset` val and then `per_dataset` train files from each dataset's usable files.

    The draw for dataset i uses the generator seeded with (seed, i) over the files in path
    order, so it does not depend on listing order, on other datasets or on the process count.
    `per_dataset=None` takes every usable file not in val; the training set stays balanced only
    when the datasets have equal sizes, so a number is the default in every preset.
    """
    names = list(indexes)
    if val_per_dataset < 1:
        raise DataConfigError(f"data.val_per_dataset must be at least 1, got {val_per_dataset}")
    for name, index in indexes.items():
        if index.n_ok == 0:
            raise DataConfigError(f"dataset {name!r} ({index.root}) has no usable images ({len(index)} files checked)")
    for name, index in indexes.items():
        need = val_per_dataset + (per_dataset or 1)
        if index.n_ok < need:
            raise DataConfigError(
                f"dataset {name!r} has {index.n_ok} usable images but data.val_per_dataset={val_per_dataset} and "
                f"data.per_dataset={per_dataset} need {need}: lower them or add images"
            )
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("tp", "tl", "th", "tr", "vp", "vl", "vh", "vr")}
    for label, index in enumerate(indexes.values()):
        usable = index.usable()
        order = usable[np.random.default_rng([seed, label]).permutation(len(usable))]
        val = np.sort(order[:val_per_dataset])
        rest = order[val_per_dataset:]
        train = np.sort(rest if per_dataset is None else rest[:per_dataset])
        for key, pos in (("t", train), ("v", val)):
            parts[key + "p"].append(index.sample_ids(pos))
            parts[key + "r"].append(index.read_paths(pos))
            parts[key + "h"].append(index.sha1[pos])
            parts[key + "l"].append(np.full(len(pos), label, dtype=np.int64))
    cat = {k: np.concatenate(v) for k, v in parts.items()}
    return Split(names, cat["tp"], cat["tl"], cat["th"], cat["vp"], cat["vl"], cat["vh"], cat["tr"], cat["vr"])


def duplicate_report(split: Split, examples: int = 20) -> dict[str, Any]:
    """Exact (content-hash) duplicates that cross the train/val boundary or dataset boundaries.

    A file in val whose bytes also occur in train lets a classifier score by memorising, and
    one whose bytes occur in two datasets cannot be classified at all; both are reported.
    """
    train_hashes = {h: p for h, p in zip(split.train_sha1, split.train_paths)}
    cross = [{"val": str(p), "train": str(train_hashes[h])} for h, p in zip(split.val_sha1, split.val_paths) if h in train_hashes]
    all_hash = np.concatenate([split.train_sha1, split.val_sha1])
    all_label = np.concatenate([split.train_labels, split.val_labels])
    labels_by_hash: dict[str, set[int]] = {}
    for h, lab in zip(all_hash, all_label):
        labels_by_hash.setdefault(h, set()).add(int(lab))
    across = sorted(h for h, labs in labels_by_hash.items() if len(labs) > 1)
    train_positions = np.flatnonzero(np.isin(split.train_sha1, split.val_sha1))
    return {
        "train_val": len(cross),
        "train_val_examples": cross[:examples],
        "across_datasets": len(across),
        "across_datasets_hashes": across[:examples],
        "within_train": int(len(split.train_sha1) - len(set(split.train_sha1))),
        "_train_positions_in_val": train_positions,
    }
