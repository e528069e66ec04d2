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
from array import array
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
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

    def sample_ids(self, positions: np.ndarray) -> np.ndarray:
        """What names the samples at `positions` in manifests and reports (here: the file path)."""
        return self.paths[positions]

    def read_paths(self, positions: np.ndarray) -> np.ndarray:
        """What `bias.sources.load_image` reads for the samples at `positions` (here: the file path)."""
        return self.paths[positions]

    def to_table(self) -> pa.Table:
        return pa.table(
            {
                "path": pa.array(self.paths, pa.string()),  # no fixed-width (4 bytes/char) numpy copies
                "ok": self.ok,
                "reason": pa.array(self.reason, pa.string()),
                "sha1": pa.array(self.sha1, pa.string()),
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


@dataclass
class Listing:
    """(path, size, mtime_ns) of many files as columns, sorted by path.

    Columns instead of a list of tuples: a tuple and two ints cost ~120 bytes per file on top of the
    path string, i.e. ~120 MB per million files. Iterating yields the tuples.
    """

    paths: np.ndarray  # object (str)
    size: np.ndarray  # int64
    mtime_ns: np.ndarray  # int64

    def __len__(self) -> int:
        return len(self.paths)

    def __iter__(self) -> Iterator[tuple[str, int, int]]:
        return zip(self.paths.tolist(), self.size.tolist(), self.mtime_ns.tolist())


def list_image_files(root: Path) -> Listing:
    """(path, size, mtime_ns) of every file with an image extension under `root`, recursively, sorted.

    Directories named like images are listed too, so the check reports them instead of
    silently ignoring them.
    """
    paths: list[str] = []
    sizes, mtimes = array("q"), array("q")
    stack = [str(root)]
    while stack:
        folder = stack.pop()
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=True):
                    if is_image_path(entry.name):
                        paths.append(entry.path)
                        sizes.append(0)
                        mtimes.append(0)
                    else:
                        stack.append(entry.path)
                elif is_image_path(entry.name):
                    try:
                        st = entry.stat()
                        size, mtime = st.st_size, st.st_mtime_ns
                    except OSError:
                        size, mtime = -1, 0
                    paths.append(entry.path)
                    sizes.append(size)
                    mtimes.append(mtime)
    column = np.empty(len(paths), dtype=object)
    column[:] = paths
    del paths
    order = np.argsort(column, kind="stable")
    return Listing(column[order], np.frombuffer(sizes, dtype=np.int64)[order],
                   np.frombuffer(mtimes, dtype=np.int64)[order])


def _reuse_stored(old: pa.Table, paths: np.ndarray, size: np.ndarray, mtime: np.ndarray, ok: np.ndarray,
                  reason: np.ndarray, sha1: np.ndarray, todo: np.ndarray) -> None:
    """Fill the results of files unchanged (same path, size and mtime) since the stored index `old`.

    Vectorised: a hash join in Arrow instead of a dict of every path; only matched rows are converted.
    """
    found = pc.index_in(pa.array(paths, pa.string()), value_set=old.column("path")).fill_null(-1).to_numpy()
    hit = np.flatnonzero(found >= 0)
    src = found[hit]
    same = (old.column("size").to_numpy()[src] == size[hit]) & (old.column("mtime_ns").to_numpy()[src] == mtime[hit])
    hit, src = hit[same], pa.array(src[same])
    ok[hit] = old.column("ok").take(src).to_numpy(zero_copy_only=False)
    sha1[hit] = old.column("sha1").take(src).to_numpy(zero_copy_only=False)
    codes = old.column("reason").take(src).combine_chunks().dictionary_encode()
    reason[hit] = codes.dictionary.to_numpy(zero_copy_only=False).astype(object)[codes.indices.to_numpy()]
    todo[hit] = False


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
    return index_listing(str(root), list_image_files(root), _index_file(Path(cache_dir), root), num_workers,
                         desc or f"checking {root.name}")


def index_listing(root: str, listing: Listing | Sequence[tuple[str, int, int]], store: Path,
                  num_workers: int | None = None, desc: str = "checking") -> FileIndex:
    """Check every `(path, size, mtime_ns)` of `listing` not already in `store` unchanged; store and return.

    `root` only labels the index (a folder, or the list file the paths came from).
    """
    if isinstance(listing, Listing):
        paths, size, mtime = listing.paths, listing.size, listing.mtime_ns
    else:
        paths = np.empty(len(listing), dtype=object)
        paths[:] = [p for p, _, _ in listing]
        size = np.array([s for _, s, _ in listing], dtype=np.int64)
        mtime = np.array([m for _, _, m in listing], dtype=np.int64)
    ok = np.zeros(len(paths), dtype=bool)
    reason = np.full(len(paths), "", dtype=object)
    sha1 = np.full(len(paths), "", dtype=object)

    todo = np.ones(len(paths), dtype=bool)
    if store.exists():
        _reuse_stored(pq.read_table(store), paths, size, mtime, ok, reason, sha1, todo)

    pending = np.flatnonzero(todo)
    if len(pending):
        workers = num_workers if num_workers is not None else min(8, os.cpu_count() or 1)
        bar = tqdm(total=len(pending), desc=desc, unit="img", leave=False)
        jobs = paths[pending].tolist()
        reasons: dict[str, str] = {}  # one string object per distinct reason, not per file
        if workers > 1 and len(jobs) > 64:
            with ProcessPoolExecutor(workers) as pool:
                results = pool.map(_check_one, jobs, chunksize=64)
                for i, (r, h) in zip(pending, results):
                    reason[i], sha1[i], ok[i] = reasons.setdefault(r, r), h, r == ""
                    bar.update()
        else:
            for i, path in zip(pending, jobs):
                r, h = _check_one(path)
                reason[i], sha1[i], ok[i] = reasons.setdefault(r, r), h, r == ""
                bar.update()
        bar.close()

    index = FileIndex(root, paths, ok, reason, sha1, size, mtime)
    if len(pending) or not store.exists():
        store.parent.mkdir(parents=True, exist_ok=True)
        tmp = store.with_suffix(f".tmp{os.getpid()}")
        pq.write_table(index.to_table(), tmp)
        os.replace(tmp, store)
    return index
