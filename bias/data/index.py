"""File index of an image folder: every file listed once, checked once, stored, reused.

Building the index walks the folder, fully decodes every image file once (in parallel) and
records whether it is usable, why not, and its content hash. The result is stored as parquet
in the cache, keyed by the folder's absolute path (and what is checked so far every
`FLUSH_SECONDS`, so a killed build keeps it); the next build re-lists the folder and only
re-checks files whose size or modification time changed. A stored index that cannot be read is
moved aside and rebuilt. Sampling then draws from usable files
only, so a broken file can never be "replaced" by another one at training time.
"""

from __future__ import annotations

import hashlib
import os
import time
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from bias.core.errors import DataError
from bias.core.io import read_derived, warn, write_parquet_atomic
from bias.core.parallel import parallel_map
from bias.core.strings import SHA1_DTYPE, StringColumn, decode_codes, release_arrow_memory, sha1_array, sha1_to_arrow
from bias.data.images import check_image_with_sha1, is_image_path

INDEX_VERSION = 1
#: while checking, what is checked so far is stored at least this often (seconds): a killed build keeps it
FLUSH_SECONDS = 30.0


class SampleIndex:
    """What every source's index derives from its `ok` and `reason` columns and `sample_ids`
    (`FileIndex` here, `bias.data.sources.webdataset.ShardIndex`; the protocol is in `bias.data.sources.base`)."""

    ok: np.ndarray  # bool
    reason: StringColumn  # "" when ok

    def sample_ids(self, positions: np.ndarray) -> StringColumn:
        raise NotImplementedError

    @property
    def n_ok(self) -> int:
        return int(self.ok.sum())

    def usable(self) -> np.ndarray:
        """Positions of usable samples, in index order."""
        return np.flatnonzero(self.ok)

    def broken(self) -> list[dict[str, str]]:
        """One row (sample id, reason, stage "index") per unusable sample."""
        bad = np.flatnonzero(~self.ok)
        return [{"path": p, "reason": r, "stage": "index"} for p, r in zip(self.sample_ids(bad), self.reason[bad])]


@dataclass
class FileIndex(SampleIndex):
    """Columns for one dataset folder, sorted by path. `ok[i]` says whether `paths[i]` decodes.

    No per-file Python objects: text columns are `StringColumn`s, digests an `S40` array.
    """

    root: str
    paths: StringColumn  # absolute
    ok: np.ndarray  # bool
    reason: StringColumn  # "" when ok
    sha1: np.ndarray  # S40 hex digest, b"" when unreadable
    size: np.ndarray  # int64 bytes
    mtime_ns: np.ndarray  # int64

    def __len__(self) -> int:
        return len(self.paths)

    #: `read_paths(p)` is `sample_ids(p)`: a split can keep one column for both.
    reads_by_sample_id = True

    def sample_ids(self, positions: np.ndarray) -> StringColumn:
        """What names the samples at `positions` in manifests and reports (here: the file path)."""
        return self.paths[positions]

    def read_paths(self, positions: np.ndarray) -> StringColumn:
        """What `bias.data.sources.load_image` reads for the samples at `positions` (here: the file path)."""
        return self.paths[positions]

    def to_table(self) -> pa.Table:
        return pa.table(
            {
                "path": self.paths.to_arrow(),
                "ok": self.ok,
                "reason": self.reason.to_arrow(),
                "sha1": sha1_to_arrow(self.sha1),
                "size": self.size,
                "mtime_ns": self.mtime_ns,
            },
            metadata={"root": self.root, "version": str(INDEX_VERSION)},
        )

    @classmethod
    def from_table(cls, table: pa.Table, root: str) -> FileIndex:
        return cls(
            root=root,
            paths=StringColumn.from_arrow(table.column("path")),
            ok=table.column("ok").to_numpy().astype(bool),
            reason=StringColumn.from_arrow(table.column("reason")),
            sha1=sha1_array(table.column("sha1")),
            size=table.column("size").to_numpy().astype(np.int64),
            mtime_ns=table.column("mtime_ns").to_numpy().astype(np.int64),
        )


@dataclass
class Listing:
    """(path, size, mtime_ns) of many files as columns, sorted by path.

    Columns instead of a list of tuples: a tuple, two ints and a str cost ~180 bytes per file,
    i.e. ~180 MB per million files. Iterating yields the tuples.
    """

    paths: StringColumn
    size: np.ndarray  # int64
    mtime_ns: np.ndarray  # int64

    def __len__(self) -> int:
        return len(self.paths)

    def __iter__(self) -> Iterator[tuple[str, int, int]]:
        return zip(self.paths, self.size.tolist(), self.mtime_ns.tolist())

    @classmethod
    def from_paths(cls, paths: StringColumn) -> Listing:
        """`stat` every path (size -1 where it fails, e.g. a missing listed file), in the given order."""
        size = np.empty(len(paths), dtype=np.int64)
        mtime = np.zeros(len(paths), dtype=np.int64)
        for i, path in enumerate(paths):
            try:
                st = os.stat(path)
                size[i], mtime[i] = st.st_size, st.st_mtime_ns
            except OSError:
                size[i] = -1
        return cls(paths, size, mtime)

    def sorted(self) -> Listing:
        order = self.paths.argsort()
        return Listing(self.paths[order], self.size[order], self.mtime_ns[order])


def _scan(root: Path, sizes: array, mtimes: array) -> Iterator[str]:
    """Every path with an image extension under `root`; appends its size and mtime as it goes.

    A folder reached again through a symbolic link (a link to a parent makes a loop) is listed once, where it is
    met first; a folder that cannot be listed is a `DataError` naming it."""
    stack = [str(root)]
    seen = {_identity(root)}
    while stack:
        folder = stack.pop()
        try:
            entries = os.scandir(folder)
        except OSError as err:
            raise DataError(f"cannot list the data folder {folder}: {err.strerror or err}") from None
        with entries:
            for entry in entries:
                if _is_dir(entry):
                    if is_image_path(entry.name):
                        sizes.append(0)
                        mtimes.append(0)
                        yield entry.path
                    elif _identity(entry.path) not in seen:
                        seen.add(_identity(entry.path))
                        stack.append(entry.path)
                elif is_image_path(entry.name):
                    try:
                        st = entry.stat()
                        size, mtime = st.st_size, st.st_mtime_ns
                    except OSError:
                        size, mtime = -1, 0
                    sizes.append(size)
                    mtimes.append(mtime)
                    yield entry.path


def _identity(path: str | os.PathLike) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


def _is_dir(entry: os.DirEntry) -> bool:
    """Whether the entry is a folder (through links); a broken or looping link is not (it is no image either)."""
    try:
        return entry.is_dir(follow_symlinks=True)
    except OSError:
        return False


def list_image_files(root: Path) -> Listing:
    """(path, size, mtime_ns) of every file with an image extension under `root`, recursively, sorted.

    Paths are packed into a `StringColumn` as the folder is scanned (no list of them is made).
    Directories named like images are listed too, so the check reports them instead of
    silently ignoring them.
    """
    sizes, mtimes = array("q"), array("q")
    paths = StringColumn(_scan(root, sizes, mtimes))
    return Listing(paths, np.frombuffer(sizes, dtype=np.int64), np.frombuffer(mtimes, dtype=np.int64)).sorted()


def _reuse_stored(old: pa.Table, listing: Listing, ok: np.ndarray, reason_code: np.ndarray, reasons: dict[str, int],
                  sha1: np.ndarray, todo: np.ndarray) -> None:
    """Fill the results of files unchanged (same path, size and mtime) since the stored index `old`.

    Vectorised: when the paths are the same as stored, row by row; otherwise a hash join in Arrow instead
    of a dict of every path. Only matched rows are converted.
    """
    stored_paths = StringColumn.from_arrow(old.column("path"))
    if stored_paths == listing.paths:  # the usual case, no file added or removed: row i is row i
        del stored_paths
        same = (old.column("size").to_numpy() == listing.size) & (old.column("mtime_ns").to_numpy() == listing.mtime_ns)
        ok[same] = old.column("ok").to_numpy(zero_copy_only=False)[same]
        sha1[same] = sha1_array(old.column("sha1"))[same]
        _reuse_reasons(old.column("reason"), np.flatnonzero(same), same, reason_code, reasons)
        todo[same] = False
        return
    # otherwise match by path
    found = pc.index_in(listing.paths.to_arrow(), value_set=stored_paths.to_arrow()).fill_null(-1).to_numpy()
    del stored_paths
    hit = np.flatnonzero(found >= 0)
    src = found[hit]
    same = ((old.column("size").to_numpy()[src] == listing.size[hit])
            & (old.column("mtime_ns").to_numpy()[src] == listing.mtime_ns[hit]))
    hit, src = hit[same], pa.array(src[same])
    ok[hit] = old.column("ok").take(src).to_numpy(zero_copy_only=False)
    sha1[hit] = sha1_array(old.column("sha1").take(src))
    _reuse_reasons(old.column("reason").take(src), hit, None, reason_code, reasons)
    todo[hit] = False


def _reuse_reasons(stored: pa.ChunkedArray, hit: np.ndarray, mask: np.ndarray | None, reason_code: np.ndarray,
                   reasons: dict[str, int]) -> None:
    """Codes of the stored reasons (rows `mask` of `stored`, or all of it) for the listing rows `hit`."""
    codes = stored.combine_chunks().dictionary_encode()
    values = codes.dictionary.to_pylist()  # the distinct reasons: a handful of strings
    idx = codes.indices.to_numpy()
    reason_code[hit] = np.array([_code(reasons, v) for v in values], dtype=np.int32)[idx if mask is None else idx[mask]]


def _code(reasons: dict[str, int], reason: str) -> int:
    """The code of `reason` among the distinct reasons seen so far (a new one gets the next code)."""
    return reasons.setdefault(reason, len(reasons))


def _check_one(path: str) -> tuple[str, str]:
    reason, digest = check_image_with_sha1(path)
    return reason or "", digest


def _index(root: str, listing: Listing, ok: np.ndarray, reason_code: np.ndarray, reasons: dict[str, int],
           sha1: np.ndarray, rows: np.ndarray | None = None) -> FileIndex:
    """The index of `listing` (only `rows`, when given: what is checked so far)."""
    sel = slice(None) if rows is None else rows
    reason = StringColumn.from_arrow(decode_codes(reason_code[sel], list(reasons)))
    paths = listing.paths if rows is None else listing.paths[rows]
    return FileIndex(root, paths, ok[sel], reason, sha1[sel], listing.size[sel], listing.mtime_ns[sel])


def _read_index(path: Path) -> pa.Table:
    """A stored index, checked: it reads whole and has every column `_reuse_stored` reads."""
    table = pq.read_table(path)
    missing = {"path", "ok", "reason", "sha1", "size", "mtime_ns"} - set(table.column_names)
    if missing:
        raise ValueError(f"missing columns {sorted(missing)}")
    return table


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


def index_listing(root: str, listing: Listing, store: Path, num_workers: int | None = None,
                  desc: str = "checking") -> FileIndex:
    """Check every `(path, size, mtime_ns)` of `listing` not already in `store` unchanged; store and return.

    `root` only labels the index (a folder, or the list file the paths came from). Reasons are kept
    as codes into the few distinct texts while checking, and packed into a column at the end.
    """
    n = len(listing)
    ok = np.zeros(n, dtype=bool)
    reasons = {"": 0}
    reason_code = np.zeros(n, dtype=np.int32)
    sha1 = np.zeros(n, dtype=SHA1_DTYPE)

    todo = np.ones(n, dtype=bool)
    stored, damaged = read_derived(store, _read_index, f"the index of {root}")
    if damaged:
        warn(damaged + " (every file is checked again)")
    if stored is not None:
        _reuse_stored(stored, listing, ok, reason_code, reasons, sha1, todo)

    pending = np.flatnonzero(todo)
    if len(pending):
        results = parallel_map(_check_one, listing.paths[pending], num_workers, desc=desc)
        flushed = time.monotonic()
        for i, (r, h) in zip(pending, results):
            reason_code[i], sha1[i], ok[i] = _code(reasons, r), h, r == ""
            todo[i] = False
            if time.monotonic() - flushed >= FLUSH_SECONDS:  # a killed build keeps what it checked
                done = np.flatnonzero(~todo)
                write_parquet_atomic(_index(root, listing, ok, reason_code, reasons, sha1, done).to_table(), store)
                flushed = time.monotonic()

    index = _index(root, listing, ok, reason_code, reasons, sha1)
    release_arrow_memory()  # the stored table and the join were transient
    if len(pending) or stored is None:
        write_parquet_atomic(index.to_table(), store)
    return index
