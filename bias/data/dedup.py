"""Near-duplicate images by perceptual hash, within and across datasets and across train/val.

Exact duplicates (same bytes) are found by content hash in :func:`bias.data.duplicate_report`. Web
datasets also hold the same picture resized, re-encoded or lightly edited; such copies leak val images
into training, and a copy in two datasets cannot be told apart by any classifier. This module finds
them with a 64-bit DCT perceptual hash and a multi-index search that never compares all pairs.

pHash (:func:`phash_gray32`)
    The decoded RGB image (:func:`bias.data.sources.load_image`, i.e. our :func:`bias.data.images.load_rgb` rules; JPEGs may be decoded at reduced size
    via ``resize_shorter``) -> 8-bit grayscale (PIL ``L``, ITU-R 601) -> 32x32 with PIL's ``BOX``
    (area) filter, aspect ignored -> orthonormal 2-D DCT-II -> the top-left 8x8 block of coefficients
    (lowest frequencies), flattened row-major. Bit ``k`` (value ``1 << k``) is set when coefficient
    ``k`` exceeds the median of the 63 AC coefficients ``1..63``; bit 0 (the DC term, i.e. the mean
    brightness) is always 0. Two images are near duplicates when the Hamming distance of their hashes
    is at most ``max_hamming``.

Search (:func:`near_duplicate_pairs`)
    Multi-index hashing: the 64 bits are cut into ``m`` bands; if two hashes differ in at most ``r``
    bits, some band differs in at most ``r // m`` bits (pigeonhole). For each band the band values are
    sorted once; every hash then looks up its band value XOR every mask of at most ``r // m`` bits with
    ``searchsorted``; candidates are checked on all 64 bits. A pair is reported only from the first band
    in which it is found, so every pair comes out exactly once and counts need no set of pairs. ``m`` is
    chosen by a cost model (lookups + expected candidates for uniformly spread hashes); memory is bounded
    by processing candidates in chunks.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from bias.core.io import write_parquet_atomic
from bias.core.parallel import parallel_map
from bias.core.strings import SHA1_DTYPE, as_string_column, sha1_array, sha1_to_arrow
from bias.data.images import ImageDecodeError
from bias.data.sources import load_image  # a file path or a shard member locator, read as training reads it

PHASH_VERSION = 1
HASH_SIZE = 32
LOW = 8
#: Shorter side the image is decoded at before the 32x32 reduction (lets JPEG decode at reduced size).
DECODE_SHORTER = 128


def _dct_matrix(n: int, rows: int) -> np.ndarray:
    """The first `rows` rows of the orthonormal DCT-II matrix of size n."""
    k = np.arange(rows)[:, None]
    x = np.arange(n)[None, :]
    d = np.sqrt(2.0 / n) * np.cos(np.pi * (2 * x + 1) * k / (2 * n))
    d[0] /= np.sqrt(2.0)
    return d


_DCT = _dct_matrix(HASH_SIZE, LOW)
_BIT_VALUES = (np.uint64(1) << np.arange(64, dtype=np.uint64)).astype(np.uint64)


def gray32(image: np.ndarray) -> np.ndarray:
    """``H x W x 3`` uint8 RGB -> the 32x32 float64 grayscale the hash is computed on."""
    img = Image.fromarray(image).convert("L").resize((HASH_SIZE, HASH_SIZE), Image.Resampling.BOX)
    return np.asarray(img, dtype=np.float64)


def low_dct(gray: np.ndarray) -> np.ndarray:
    """Top-left 8x8 orthonormal DCT-II coefficients of ``(..., 32, 32)`` arrays -> ``(..., 8, 8)``."""
    return _DCT @ gray @ _DCT.T


def phash_gray32(gray: np.ndarray) -> np.ndarray:
    """64-bit pHashes (uint64) of ``(N, 32, 32)`` (or one ``(32, 32)``) grayscale arrays."""
    coef = low_dct(np.asarray(gray, dtype=np.float64)).reshape(*np.shape(gray)[:-2], LOW * LOW)
    median = np.median(coef[..., 1:], axis=-1, keepdims=True)
    bits = coef > median
    bits[..., 0] = False
    return (bits.astype(np.uint64) * _BIT_VALUES).sum(axis=-1, dtype=np.uint64)


def phash_image(image: np.ndarray) -> int:
    """pHash of one ``H x W x 3`` uint8 RGB image."""
    return int(phash_gray32(gray32(image)))


def phash_file(path: str | os.PathLike) -> tuple[int, str]:
    """``(hash, "")``, or ``(0, reason)`` when the file cannot be decoded."""
    try:
        return phash_image(load_image(path, resize_shorter=DECODE_SHORTER)), ""
    except ImageDecodeError as err:
        return 0, err.reason


def popcount64(x: np.ndarray) -> np.ndarray:
    """Number of set bits of each uint64."""
    x = np.asarray(x, dtype=np.uint64)
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(x).astype(np.int64)
    return np.unpackbits(x.view(np.uint8).reshape(*x.shape, 8), axis=-1).sum(axis=-1).astype(np.int64)


def hamming(a: np.ndarray | int, b: np.ndarray | int) -> np.ndarray:
    return popcount64(np.bitwise_xor(np.asarray(a, dtype=np.uint64), np.asarray(b, dtype=np.uint64)))


# ----------------------------------------------------------------------------------------------------
# search


def _band_layout(m: int) -> list[tuple[int, int]]:
    """(start bit, width) of m bands covering the 64 bits, widths differing by at most one."""
    widths = [64 // m + (1 if i < 64 % m else 0) for i in range(m)]
    starts = np.concatenate([[0], np.cumsum(widths)[:-1]]).tolist()
    return list(zip(starts, widths))


def _masks(width: int, radius: int) -> np.ndarray:
    """Every `width`-bit mask with at most `radius` bits set (0 first)."""
    out = [0]
    for k in range(1, radius + 1):
        out += [sum(1 << b for b in combo) for combo in itertools.combinations(range(width), k)]
    return np.array(out, dtype=np.uint64)


def _band(hashes: np.ndarray, start: int, width: int) -> np.ndarray:
    if width == 64:
        return hashes.copy()
    return (hashes >> np.uint64(start)) & np.uint64((1 << width) - 1)


def choose_bands(n: int, max_hamming: int) -> int:
    """Number of bands with the least expected work (lookups + candidate checks, uniform hashes)."""
    best, best_cost = max_hamming + 1, math.inf
    for m in range(1, max_hamming + 2):
        width = 64 // m
        radius = max_hamming // m
        probes = sum(math.comb(width, i) for i in range(radius + 1))
        cost = m * (n * probes * max(math.log2(max(n, 2)), 1.0) + n * n * probes / 2.0 ** width)
        if cost < best_cost:
            best, best_cost = m, cost
    return best


def near_duplicate_pairs(hashes: np.ndarray, max_hamming: int, bands: int | None = None,
                         chunk_pairs: int = 1 << 22) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Every pair ``i < j`` with ``hamming(hashes[i], hashes[j]) <= max_hamming``, exactly once.

    Yields ``(i, j, distance)`` arrays in chunks of at most about `chunk_pairs` candidates.
    """
    if max_hamming < 0 or max_hamming > 63:
        raise ValueError(f"max_hamming must be in 0..63, got {max_hamming}")
    hashes = np.ascontiguousarray(hashes, dtype=np.uint64)
    n = len(hashes)
    if n < 2:
        return
    m = bands or choose_bands(n, max_hamming)
    if not 1 <= m <= 64:
        raise ValueError(f"bands must be in 1..64, got {m}")
    radius = max_hamming // m
    layout = _band_layout(m)
    band_values = [_band(hashes, s, w) for s, w in layout]
    for b, (_start, width) in enumerate(layout):
        vals = band_values[b]
        order = np.argsort(vals, kind="stable")
        sorted_vals = vals[order]
        for mask in _masks(width, radius):
            q = vals ^ mask
            lo = np.searchsorted(sorted_vals, q, "left")
            hi = np.searchsorted(sorted_vals, q, "right")
            counts = hi - lo
            queries = np.flatnonzero(counts)
            if not len(queries):
                continue
            ends = np.cumsum(counts[queries])
            first = 0
            while first < len(queries):
                done = int(ends[first - 1]) if first else 0
                last = int(np.searchsorted(ends, done + chunk_pairs, "right"))
                last = max(last, first + 1)
                qs = queries[first:last]
                c = counts[qs]
                i = np.repeat(qs, c)
                offsets = np.arange(int(c.sum())) - np.repeat(np.cumsum(c) - c, c) + np.repeat(lo[qs], c)
                j = order[offsets]
                keep = i < j
                i, j = i[keep], j[keep]
                d = hamming(hashes[i], hashes[j])
                keep = d <= max_hamming
                for earlier in range(b):  # reported from the first band that finds the pair
                    keep &= hamming(band_values[earlier][i], band_values[earlier][j]) > radius
                if keep.any():
                    yield i[keep], j[keep], d[keep]
                first = last


# ----------------------------------------------------------------------------------------------------
# hashing many files, cached by content hash


def _store_path(cache_dir: Path) -> Path:
    return cache_dir / "phash" / f"phash-v{PHASH_VERSION}.parquet"


def compute_phashes(paths: Sequence[str], sha1s: Sequence[str], cache_dir: str | os.PathLike | None,
                    num_workers: int | None = None, desc: str = "perceptual hashes") -> tuple[np.ndarray, dict[int, str]]:
    """``(hashes uint64, failed)`` for `paths`; `failed` maps the position of each image that could not
    be hashed to its reason (its hash is 0).

    Hashes are cached by content SHA-1 in ``CACHE/phash/``, so files are decoded once across runs. The
    cache is looked up by sorting and binary search over digest arrays, with no per-image dict.
    """
    paths = as_string_column(paths)
    sha1s = sha1_array(sha1s)
    hashes = np.zeros(len(paths), dtype=np.uint64)
    todo = np.ones(len(paths), dtype=bool)
    known_sha, known_hash = np.zeros(0, dtype=SHA1_DTYPE), np.zeros(0, dtype=np.uint64)
    store = _store_path(Path(cache_dir)) if cache_dir is not None else None
    if store is not None and store.exists():
        t = pq.read_table(store)
        known_sha, known_hash = sha1_array(t.column("sha1")), t.column("phash").to_numpy().astype(np.uint64)
        if len(known_sha):
            order = np.argsort(known_sha)
            known_sha, known_hash = known_sha[order], known_hash[order]
            at = np.minimum(np.searchsorted(known_sha, sha1s), len(known_sha) - 1)
            hit = (known_sha[at] == sha1s) & (sha1s != b"")
            hashes[hit] = known_hash[at[hit]]
            todo[hit] = False
    pending = np.flatnonzero(todo)
    failed: dict[int, str] = {}
    for k, (h, r) in zip(pending, parallel_map(phash_file, paths[pending], num_workers, desc=desc)):
        hashes[k] = h
        if r:
            failed[int(k)] = r
    hashed = np.zeros(len(paths), dtype=bool)
    hashed[pending] = True
    hashed[list(failed)] = False
    new = np.flatnonzero(hashed & (sha1s != b""))
    if store is not None and len(new):
        all_sha = np.concatenate([known_sha, sha1s[new]])
        all_hash = np.concatenate([known_hash, hashes[new]])
        all_sha, first = np.unique(all_sha, return_index=True)
        write_parquet_atomic(pa.table({"sha1": sha1_to_arrow(all_sha).cast(pa.string()),
                                       "phash": pa.array(all_hash[first])}), store)
    return hashes, failed


# ----------------------------------------------------------------------------------------------------
# report over a split


@dataclass
class NearDuplicateOptions:
    """``data.near_duplicates`` in the config."""

    enabled: bool = False
    max_hamming: int = 4
    exclude_train_val: bool = False  # drop training images near-identical to a val image
    exclude_across_datasets: bool = False  # drop training images near-identical to an image of another dataset
    examples: int = 20
    bands: int | None = None

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | None) -> NearDuplicateOptions:
        cfg = dict(cfg or {})
        unknown = sorted(set(cfg) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"unknown data.near_duplicates option(s) {unknown}; known: "
                             f"{sorted(cls.__dataclass_fields__)}")
        opts = cls(**cfg)
        if not 0 <= int(opts.max_hamming) <= 63:
            raise ValueError(f"data.near_duplicates.max_hamming must be in 0..63, got {opts.max_hamming}")
        return opts


def near_duplicate_report(names: Sequence[str], paths: np.ndarray, labels: np.ndarray, is_train: np.ndarray,
                          hashes: np.ndarray, valid: np.ndarray, max_hamming: int, examples: int = 20,
                          bands: int | None = None) -> dict[str, Any]:
    """Counts and examples of near-duplicate pairs among the images with a `valid` hash.

    ``pairs``: unordered pairs within each dataset, across datasets, and between train and val (any
    datasets). ``images``: val images with a near copy in train, train images with a near copy in val,
    and per dataset the images with a near copy in another dataset. The private keys
    ``_train_val_positions`` / ``_across_positions`` index the *train* images to drop for each option.
    """
    n = len(paths)
    labels = np.asarray(labels)
    is_train = np.asarray(is_train, dtype=bool)
    idx = np.flatnonzero(valid)
    within = np.zeros(len(names), dtype=np.int64)
    across = train_val = 0
    has_train_match = np.zeros(n, dtype=bool)  # a val image with a near copy in train
    has_val_match = np.zeros(n, dtype=bool)  # a train image with a near copy in val
    has_other = np.zeros(n, dtype=bool)  # an image with a near copy in another dataset
    ex: dict[str, list[dict[str, Any]]] = {"train_val": [], "across_datasets": [], "within_dataset": []}
    for a, b, d in near_duplicate_pairs(hashes[idx], max_hamming, bands):
        i, j = idx[a], idx[b]
        same = labels[i] == labels[j]
        within += np.bincount(labels[i][same], minlength=len(names))
        across += int((~same).sum())
        tv = is_train[i] != is_train[j]
        train_val += int(tv.sum())
        tr = np.where(is_train[i], i, j)[tv]
        va = np.where(is_train[i], j, i)[tv]
        has_val_match[tr] = True
        has_train_match[va] = True
        has_other[i[~same]] = True
        has_other[j[~same]] = True
        for k in np.flatnonzero(tv)[: max(0, examples - len(ex["train_val"]))]:
            t_, v_ = (i[k], j[k]) if is_train[i[k]] else (j[k], i[k])
            ex["train_val"].append({"train": str(paths[t_]), "val": str(paths[v_]), "hamming": int(d[k])})
        for k in np.flatnonzero(~same)[: max(0, examples - len(ex["across_datasets"]))]:
            ex["across_datasets"].append({"a": str(paths[i[k]]), "a_dataset": names[labels[i[k]]],
                                          "b": str(paths[j[k]]), "b_dataset": names[labels[j[k]]],
                                          "hamming": int(d[k])})
        for k in np.flatnonzero(same)[: max(0, examples - len(ex["within_dataset"]))]:
            ex["within_dataset"].append({"a": str(paths[i[k]]), "b": str(paths[j[k]]),
                                         "dataset": names[labels[i[k]]], "hamming": int(d[k])})
    train_pos = np.cumsum(is_train) - 1  # position of each train image within the train arrays
    return {
        "max_hamming": int(max_hamming),
        "hashed": int(len(idx)),
        "pairs": {"within_dataset": {name: int(c) for name, c in zip(names, within)},
                  "across_datasets": int(across), "train_val": int(train_val)},
        "images": {"val_with_train_match": int(has_train_match.sum()),
                   "train_with_val_match": int(has_val_match.sum()),
                   "with_other_dataset_match": {name: int((has_other & (labels == k)).sum())
                                                for k, name in enumerate(names)}},
        "examples": ex,
        "_train_val_positions": train_pos[np.flatnonzero(has_val_match & is_train)],
        "_across_positions": train_pos[np.flatnonzero(has_other & is_train)],
    }


def split_near_duplicates(split, options: NearDuplicateOptions, cache_dir: str | os.PathLike | None,
                          num_workers: int | None = None) -> tuple[dict[str, Any], np.ndarray]:
    """Hash every image of a :class:`bias.data.Split`, report near duplicates, and return the report
    and the training positions to drop under `options` (empty unless an exclusion is enabled)."""
    paths = split.all_paths()
    is_train = np.arange(len(paths)) < len(split.train_paths)
    # what is decoded is the read path (a file or a shard member); reports name the sample id
    hashes, failed = compute_phashes(split.all_read(), split.all_sha1(), cache_dir, num_workers)
    valid = np.ones(len(paths), dtype=bool)
    valid[list(failed)] = False
    report = near_duplicate_report(split.names, paths, split.all_labels(), is_train, hashes, valid,
                                   int(options.max_hamming), int(options.examples), options.bands)
    report["unhashable"] = [{"path": paths[k], "reason": r} for k, r in sorted(failed.items())]
    tv, ac = report.pop("_train_val_positions"), report.pop("_across_positions")
    drop = []
    if options.exclude_train_val:
        drop.append(tv)
    if options.exclude_across_datasets:
        drop.append(ac)
    positions = np.unique(np.concatenate(drop)) if drop else np.zeros(0, dtype=np.int64)
    if drop:
        report["excluded_from_train"] = int(len(positions))
    return report, positions
