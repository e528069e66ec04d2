"""Precompute cache: a precomputed transform runs once per image, its output is stored, reused.

Layout: `<cache_root>/transforms/<name>-<param hash>-<size tag>/<sha[:2]>/<sha>.png`, keyed by
the *content* hash of the source file (from the index), so the same bytes are computed once
however many paths or datasets hold them, and a changed file gets a new entry. Every output is
written to a temporary file and renamed, so a killed job leaves no half-written image; a rerun
skips what exists. Work is split across processes (each rank a contiguous slice of the unique
hashes, no duplicates, no gaps); the main process merges the per-rank failure lists into
`manifest.json`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pyarrow.compute as pc
from tqdm.auto import tqdm

from bias.images import ImageDecodeError
from bias.sources import load_image
from bias.strings import StringColumn, as_string_column, join_strings, sha1_array, sha1_to_arrow
from transforms.base import Transform


def transform_cache_dir(transform: Transform, cache_root: str | os.PathLike, resize_shorter: int | None) -> Path:
    tag = f"s{resize_shorter}" if resize_shorter else "orig"
    return Path(cache_root) / "transforms" / f"{transform.cache_key()}-{tag}"


def cached_path(folder: Path, sha1: str) -> Path:
    return folder / sha1[:2] / f"{sha1}.png"


def write_image_atomic(path: Path, image: np.ndarray) -> None:
    """PNG (lossless, fast compression) via a temporary file in the same folder and a rename."""
    if image.ndim == 3 and image.shape[2] == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise OSError(f"could not encode {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(buf.tobytes())
    os.replace(tmp, path)


@dataclass
class PrecomputeReport:
    folder: Path
    computed: int
    reused: int
    failed: list[dict[str, str]]

    def read_path(self, sha1: str) -> Path:
        return cached_path(self.folder, sha1)

    def read_paths(self, sha1s: np.ndarray) -> StringColumn:
        """`read_path` of every digest, built in Arrow (`<folder>/<sha[:2]>/<sha>.png`)."""
        sha = sha1_to_arrow(sha1_array(sha1s))
        return join_strings(str(self.folder), pc.utf8_slice_codeunits(sha, 0, 2), join_strings(sha, ".png"), sep="/")


def _rank_slice(n: int, rank: int, world: int) -> slice:
    base, extra = divmod(n, world)
    start = rank * base + min(rank, extra)
    return slice(start, start + base + (1 if rank < extra else 0))


def precompute(
    transform: Transform,
    paths: Sequence[str],
    sha1s: Sequence[str],
    cache_root: str | os.PathLike,
    resize_shorter: int | None = None,
    rank: int = 0,
    world_size: int = 1,
    barrier: Any = None,
    show_progress: bool = True,
) -> PrecomputeReport:
    """Compute `transform.apply_image` for every distinct file; returns where outputs are and what failed.

    `barrier` (e.g. `accelerator.wait_for_everyone`) is called once this rank is done, so the
    failure lists of all ranks can be merged.
    """
    if transform.kind != "precomputed":
        raise ValueError(f"transform {transform.name!r} is computed online, there is nothing to precompute")
    folder = transform_cache_dir(transform, cache_root, resize_shorter)
    folder.mkdir(parents=True, exist_ok=True)
    paths, sha1s = as_string_column(paths), sha1_array(sha1s)
    hashes, first = np.unique(sha1s, return_index=True)  # sorted distinct digests, first path holding each
    mine = _rank_slice(len(hashes), rank, world_size)
    mine_hashes, mine_paths = hashes[mine], paths[first[mine]]
    computed = reused = 0
    failed: list[dict[str, str]] = []
    for k in tqdm(range(len(mine_hashes)), desc=f"precompute {transform.name}", unit="img", disable=not show_progress):
        sha = mine_hashes[k].decode("ascii")
        out = cached_path(folder, sha)
        if out.exists():
            reused += 1
            continue
        path = mine_paths[k]
        try:
            result = transform.apply_image(load_image(path, resize_shorter=resize_shorter))
        except ImageDecodeError as err:
            failed.append({"path": path, "reason": err.reason, "stage": "transform"})
            continue
        write_image_atomic(out, np.ascontiguousarray(result))
        computed += 1
    rank_file = folder / f"failures-rank{rank}-of{world_size}.json"
    rank_file.write_text(json.dumps({"failed": failed, "computed": computed, "reused": reused}))
    if barrier is not None:
        barrier()
    all_failed: list[dict[str, str]] = []
    totals = {"computed": 0, "reused": 0}
    for r in range(world_size):
        part = json.loads((folder / f"failures-rank{r}-of{world_size}.json").read_text())
        all_failed += part["failed"]
        totals["computed"] += part["computed"]
        totals["reused"] += part["reused"]
    if rank == 0:
        manifest = {"transform": transform.name, "version": transform.version, "params": transform.params(),
                    "resize_shorter": resize_shorter, "n_unique": len(hashes), **totals, "failed": all_failed}
        tmp = folder / "manifest.json.tmp"
        tmp.write_text(json.dumps(manifest, indent=2))
        os.replace(tmp, folder / "manifest.json")
    if barrier is not None:
        barrier()
    return PrecomputeReport(folder, totals["computed"], totals["reused"], all_failed)
