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

from bias.core.errors import DataError
from bias.core.strings import (
    StringColumn,
    as_string_column,
    decode_codes,
    release_arrow_memory,
    sha1_array,
    sha1_to_arrow,
)


class DataConfigError(DataError):
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
    """One checked index per dataset, from its `bias.data.sources` source."""
    return {name: src.index(cache_dir, num_workers) for name, src in sources.items()}


@dataclass
class Split:
    """A seeded, balanced, disjoint train/val split over named datasets (label = position in `names`).

    `*_paths` name the samples (a file path, or e.g. `shard.tar/member.jpg`: unique, used in every report);
    `*_read` is what `bias.data.sources.load_image` reads (the same path for files, a member locator for shards).
    Text columns are `bias.core.strings.StringColumn`s and digests `S40` arrays: no per-image Python objects.
    """

    names: list[str]
    train_paths: StringColumn
    train_labels: np.ndarray
    train_sha1: np.ndarray
    val_paths: StringColumn
    val_labels: np.ndarray
    val_sha1: np.ndarray
    train_read: StringColumn | None = None
    val_read: StringColumn | None = None

    def __post_init__(self) -> None:
        self.train_paths, self.val_paths = as_string_column(self.train_paths), as_string_column(self.val_paths)
        self.train_read = self.train_paths if self.train_read is None else as_string_column(self.train_read)
        self.val_read = self.val_paths if self.val_read is None else as_string_column(self.val_read)
        self.train_sha1, self.val_sha1 = sha1_array(self.train_sha1), sha1_array(self.val_sha1)
        self.train_labels = np.asarray(self.train_labels, dtype=np.int64)
        self.val_labels = np.asarray(self.val_labels, dtype=np.int64)

    @property
    def num_classes(self) -> int:
        return len(self.names)

    def all_paths(self) -> StringColumn:
        """Train then val sample ids."""
        return StringColumn.concat([self.train_paths, self.val_paths])

    def all_read(self) -> StringColumn:
        """Train then val read paths."""
        if self.train_read is self.train_paths and self.val_read is self.val_paths:
            return self.all_paths()
        return StringColumn.concat([self.train_read, self.val_read])

    def all_sha1(self) -> np.ndarray:
        return np.concatenate([self.train_sha1, self.val_sha1])

    def all_labels(self) -> np.ndarray:
        return np.concatenate([self.train_labels, self.val_labels])

    def manifest(self) -> pa.Table:
        n_train, n_val = len(self.train_paths), len(self.val_paths)
        return pa.table(
            {
                "path": self.all_paths().to_arrow().cast(pa.string()),
                "dataset": decode_codes(self.all_labels(), self.names).cast(pa.string()),
                "label": self.all_labels(),
                "split": decode_codes(np.repeat([0, 1], [n_train, n_val]), ["train", "val"]).cast(pa.string()),
                "sha1": sha1_to_arrow(self.all_sha1()).cast(pa.string()),
            }
        )

    def without_train(self, positions: np.ndarray) -> Split:
        keep = np.ones(len(self.train_paths), dtype=bool)
        keep[positions] = False
        paths = self.train_paths[keep]
        read = paths if self.train_read is self.train_paths else self.train_read[keep]
        return Split(self.names, paths, self.train_labels[keep], self.train_sha1[keep],
                     self.val_paths, self.val_labels, self.val_sha1, read, self.val_read)


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
    parts: dict[str, list[Any]] = {k: [] for k in ("tp", "tl", "th", "tr", "vp", "vl", "vh", "vr")}
    for label, index in enumerate(indexes.values()):
        usable = index.usable()
        order = usable[np.random.default_rng([seed, label]).permutation(len(usable))]
        val = np.sort(order[:val_per_dataset])
        rest = order[val_per_dataset:]
        train = np.sort(rest if per_dataset is None else rest[:per_dataset])
        for key, pos in (("t", train), ("v", val)):
            ids = index.sample_ids(pos)
            parts[key + "p"].append(ids)
            parts[key + "r"].append(ids if getattr(index, "reads_by_sample_id", False) else index.read_paths(pos))
            parts[key + "h"].append(index.sha1[pos])
            parts[key + "l"].append(np.full(len(pos), label, dtype=np.int64))
    cat = {k: (StringColumn.concat(v) if k[1] == "p" else np.concatenate(v)) for k, v in parts.items() if k[1] != "r"}
    for key in "tv":  # one column for ids and read paths where every dataset reads by sample id (files)
        same = all(r is p for r, p in zip(parts[key + "r"], parts[key + "p"]))
        cat[key + "r"] = cat[key + "p"] if same else StringColumn.concat(parts[key + "r"])
    del parts
    release_arrow_memory()  # the per-dataset gathers were Arrow buffers; the split holds its own copies
    return Split(names, cat["tp"], cat["tl"], cat["th"], cat["vp"], cat["vl"], cat["vh"], cat["tr"], cat["vr"])


def duplicate_report(split: Split, examples: int = 20) -> dict[str, Any]:
    """Exact (content-hash) duplicates that cross the train/val boundary or dataset boundaries.

    A file in val whose bytes also occur in train lets a classifier score by memorising, and
    one whose bytes occur in two datasets cannot be classified at all; both are reported.
    Vectorised over the digest arrays (one sort and binary searches, no per-image dict or set).
    """
    train_h, val_h = split.train_sha1, split.val_sha1
    by_hash = np.argsort(train_h, kind="stable")  # one sort of the train digests answers three questions
    sorted_train = train_h[by_hash]
    at = np.minimum(np.searchsorted(sorted_train, val_h), max(len(sorted_train) - 1, 0))
    val_in_train = np.flatnonzero(sorted_train[at] == val_h) if len(sorted_train) else np.zeros(0, np.int64)
    first_copy = by_hash[at[val_in_train[:examples]]]  # the first train file with those bytes
    cross = [{"val": split.val_paths[int(v)], "train": split.train_paths[int(t)]}
             for v, t in zip(val_in_train[:examples], first_copy)]
    distinct_train = int(len(sorted_train) > 0) + int(np.count_nonzero(sorted_train[1:] != sorted_train[:-1]))
    sorted_val = np.sort(val_h)
    at = np.minimum(np.searchsorted(sorted_val, train_h), max(len(sorted_val) - 1, 0))
    train_in_val = np.flatnonzero(sorted_val[at] == train_h) if len(sorted_val) else np.zeros(0, np.int64)
    all_h, all_label = split.all_sha1(), split.all_labels()
    order = np.lexsort((all_label, all_h))
    h, lab = all_h[order], all_label[order]
    new_pair = np.ones(len(h), dtype=bool)  # first row of each distinct (hash, label)
    new_pair[1:] = (h[1:] != h[:-1]) | (lab[1:] != lab[:-1])
    pair_h = h[new_pair]
    shared = np.zeros(len(pair_h), dtype=bool)  # a hash with two or more labels: later rows of a run of equal hashes
    shared[1:] = pair_h[1:] == pair_h[:-1]
    across = pair_h[shared]
    across = across[np.r_[True, across[1:] != across[:-1]]] if len(across) else across  # sorted, each once
    return {
        "train_val": int(len(val_in_train)),
        "train_val_examples": cross,
        "across_datasets": int(len(across)),
        "across_datasets_hashes": [x.decode("ascii") for x in across[:examples]],
        "within_train": int(len(train_h) - distinct_train),
        "_train_positions_in_val": train_in_val,
    }
