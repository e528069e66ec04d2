"""File index of an image folder: every file listed once, checked once, stored, reused.

Building the index walks the folder, fully decodes every image file once (in parallel) and
records whether it is usable, why not, and its content hash. The result is stored as parquet
in the cache, keyed by the folder's absolute path; the next build re-lists the folder and only
re-checks files whose size or modification time changed. Sampling then draws from usable files
only, so a broken file can never be "replaced" by another one at training time.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from bias.images import check_image_with_sha1, is_image_path

INDEX_VERSION = 1


@dataclass
class FileIndex:
    """Columns for one dataset folder, sorted by path. `ok[i]` says whether `paths[i]` decodes."""

    root: str
    paths: np.ndarray  # str, absolute
    ok: np.ndarray  # bool
    reason: np.ndarray  # str, "" when ok
    sha1: np.ndarray  # str, "" when unreadable
    size: np.ndarray  # int64 bytes
    mtime_ns: np.ndarray  # int64

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def n_ok(self) -> int:
        return int(self.ok.sum())

    def usable(self) -> np.ndarray:
        """Positions of usable files, in path order."""
        return np.flatnonzero(self.ok)

    def broken(self) -> list[dict[str, str]]:
        return [{"path": str(p), "reason": str(r), "stage": "index"} for p, r in zip(self.paths[~self.ok], self.reason[~self.ok])]

    def to_table(self) -> pa.Table:
        return pa.table(
            {
                "path": self.paths.astype(str),
                "ok": self.ok,
                "reason": self.reason.astype(str),
                "sha1": self.sha1.astype(str),
                "size": self.size,
                "mtime_ns": self.mtime_ns,
            },
            metadata={"root": self.root, "version": str(INDEX_VERSION)},
        )

    @classmethod
    def from_table(cls, table: pa.Table, root: str) -> FileIndex:
        col = {name: table.column(name).to_numpy(zero_copy_only=False) for name in table.column_names}
        return cls(
            root=root,
            paths=col["path"].astype(object),
            ok=col["ok"].astype(bool),
            reason=col["reason"].astype(object),
            sha1=col["sha1"].astype(object),
            size=col["size"].astype(np.int64),
            mtime_ns=col["mtime_ns"].astype(np.int64),
        )


def list_image_files(root: Path) -> list[tuple[str, int, int]]:
    """(path, size, mtime_ns) of every file with an image extension under `root`, recursively, sorted.

    Directories named like images are listed too, so the check reports them instead of
    silently ignoring them.
    """
    found: list[tuple[str, int, int]] = []
    stack = [str(root)]
    while stack:
        folder = stack.pop()
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=True):
                    if is_image_path(entry.name):
                        found.append((entry.path, 0, 0))
                    else:
                        stack.append(entry.path)
                elif is_image_path(entry.name):
                    try:
                        st = entry.stat()
                        found.append((entry.path, st.st_size, st.st_mtime_ns))
                    except OSError:
                        found.append((entry.path, -1, 0))
    found.sort()
    return found


def _check_one(path: str) -> tuple[str, str]:
    reason, digest = check_image_with_sha1(path)
    return reason or "", digest


def _index_file(cache_dir: Path, root: Path) -> Path:
    key = hashlib.sha1(str(root).encode()).hexdigest()[:16]
    return cache_dir / "index" / f"{root.name}-{key}.parquet"


def build_index(root: str | os.PathLike, cache_dir: str | os.PathLike, num_workers: int | None = None,
                desc: str | None = None) -> FileIndex:
    """List `root`, check every new or changed file, store and return the index."""
    root = Path(root).resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder {root} does not exist or is not a folder")
    listing = list_image_files(root)
    paths = np.array([p for p, _, _ in listing], dtype=object)
    size = np.array([s for _, s, _ in listing], dtype=np.int64)
    mtime = np.array([m for _, _, m in listing], dtype=np.int64)
    ok = np.zeros(len(paths), dtype=bool)
    reason = np.full(len(paths), "", dtype=object)
    sha1 = np.full(len(paths), "", dtype=object)

    store = _index_file(Path(cache_dir), root)
    todo = np.ones(len(paths), dtype=bool)
    if store.exists():
        old = FileIndex.from_table(pq.read_table(store), str(root))
        pos = {p: i for i, p in enumerate(old.paths)}
        for i, p in enumerate(paths):
            j = pos.get(p)
            if j is not None and old.size[j] == size[i] and old.mtime_ns[j] == mtime[i]:
                ok[i], reason[i], sha1[i], todo[i] = old.ok[j], old.reason[j], old.sha1[j], False

    pending = np.flatnonzero(todo)
    if len(pending):
        workers = num_workers if num_workers is not None else min(8, os.cpu_count() or 1)
        bar = tqdm(total=len(pending), desc=desc or f"checking {root.name}", unit="img", leave=False)
        jobs = [paths[i] for i in pending]
        if workers > 1 and len(jobs) > 64:
            with ProcessPoolExecutor(workers) as pool:
                results = pool.map(_check_one, jobs, chunksize=64)
                for i, (r, h) in zip(pending, results):
                    reason[i], sha1[i], ok[i] = r, h, r == ""
                    bar.update()
        else:
            for i, path in zip(pending, jobs):
                r, h = _check_one(path)
                reason[i], sha1[i], ok[i] = r, h, r == ""
                bar.update()
        bar.close()

    index = FileIndex(str(root), paths, ok, reason, sha1, size, mtime)
    if len(pending) or not store.exists():
        store.parent.mkdir(parents=True, exist_ok=True)
        tmp = store.with_suffix(f".tmp{os.getpid()}")
        pq.write_table(index.to_table(), tmp)
        os.replace(tmp, store)
    return index
