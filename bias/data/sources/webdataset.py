"""Webdataset tar shards (as img2dataset writes them): indexed once, then read by random access.

A shard holds samples as consecutive members sharing a key: `{key}.jpg|png|webp|...` (the image),
`{key}.txt` (caption) and `{key}.json` (metadata). Shard lists use brace expansion:
`/data/cc/{00000..00999}.tar` (zero padding kept), `{a,b}` alternatives, several groups, nesting.

Indexing reads each shard once, front to back: for every sample it records the image member's name,
the byte offset and size of its data, the SHA-1 of those bytes and whether they decode (the same
decoder and rules as image folders, `bias.data.images`). One parquet file per shard is stored in the
cache (`<cache>/index/shards/`) and reused while the shard's size and modification time are
unchanged, so adding shards indexes only the new ones. The collection's index is columnar
(numpy arrays, one row per sample), never one Python object per member.

The first image member of a sample is its image (img2dataset writes one); `.txt` and `.json` are
kept as caption and URL in the stored index for later use (duplicate search, captions).

Broken data is listed, never skipped silently: a member that does not decode, a member cut off by a
truncated shard, a sample without an image member, and an unreadable region of a shard (a cut or
corrupt tar header, after which nothing can be read) each become one unusable row with its reason.

Reading: a sample is located by `tar:<offset>:<size>:<shard path>`; `read_member` opens shards
lazily, per process (DataLoader workers and ranks each hold their own descriptors, at most
`MAX_OPEN_SHARDS`), and reads with `os.pread`, so random access needs no tar parsing and no shared
file position.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import re
import tarfile
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bias.core.io import write_parquet_atomic
from bias.core.parallel import parallel_map
from bias.core.strings import StringColumn, decode_codes, join_strings, sha1_array
from bias.data import images
from bias.data.images import IMAGE_EXTENSIONS, ImageDecodeError
from bias.data.index import SampleIndex
from bias.data.sources.base import Source, register_source

SHARD_INDEX_VERSION = 1
MAX_OPEN_SHARDS = 64
LOCATOR_PREFIX = "tar:"
_TAIL_CHECK_BYTES = 1 << 20

# ----------------------------------------------------------------------------------------------------
# shard lists


def expand_braces(pattern: str) -> list[str]:
    """Bash-style brace expansion: `{00000..00003}` (zero padding from the wider bound, optional
    `..step`, descending allowed), `{a,b,c}` alternatives, several and nested groups; order kept.

    >>> expand_braces("/d/{000..002}.tar")
    ['/d/000.tar', '/d/001.tar', '/d/002.tar']
    """
    start = _first_group(pattern)
    if start is None:
        return [pattern]
    open_at, close_at = start
    head, body, tail = pattern[:open_at], pattern[open_at + 1:close_at], pattern[close_at + 1:]
    options = _range_options(body)
    if options is None:
        options = [alt for part in _split_top_level(body) for alt in expand_braces(part)]
    return [expanded for option in options for expanded in expand_braces(head + option + tail)]


def _first_group(pattern: str) -> tuple[int, int] | None:
    """(start, end) of the first `{...}` holding a range or a top-level comma; None when there is none."""
    for open_at, ch in enumerate(pattern):
        if ch != "{":
            continue
        depth = 0
        for close_at in range(open_at, len(pattern)):
            depth += {"{": 1, "}": -1}.get(pattern[close_at], 0)
            if depth == 0:
                body = pattern[open_at + 1:close_at]
                if _range_options(body) is not None or len(_split_top_level(body)) > 1:
                    return open_at, close_at
                break
    return None


def _split_top_level(body: str) -> list[str]:
    parts, depth, token = [], 0, ""
    for ch in body:
        depth += {"{": 1, "}": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            parts.append(token)
            token = ""
        else:
            token += ch
    return parts + [token]


_RANGE = re.compile(r"^(-?\d+)\.\.(-?\d+)(?:\.\.(-?\d+))?$")


def _range_options(body: str) -> list[str] | None:
    m = _RANGE.match(body)
    if not m:
        return None
    a, b = int(m.group(1)), int(m.group(2))
    step = abs(int(m.group(3) or 1)) or 1
    padded = any(len(s.lstrip("-")) > 1 and s.lstrip("-").startswith("0") for s in m.group(1, 2))
    width = max(len(m.group(1)), len(m.group(2))) if padded else 0
    values = range(a, b + 1, step) if a <= b else range(a, b - 1, -step)
    return [f"{v:0{width}d}" if width else str(v) for v in values]


def expand_shards(spec: str | Sequence[str]) -> list[str]:
    """A pattern or a list of patterns -> shard paths (braces expanded, `~` expanded, order kept)."""
    patterns = [spec] if isinstance(spec, str) else list(spec)
    return [os.path.expanduser(p) for pattern in patterns for p in expand_braces(str(pattern))]


# ----------------------------------------------------------------------------------------------------
# indexing one shard


def _split_member(name: str) -> tuple[str, str]:
    """`dir/000123.seg.png` -> (`dir/000123`, `seg.png`): the key ends at the first dot of the basename."""
    folder, _, base = name.rpartition("/")
    stem, _, ext = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), ext.lower()


def _is_image_ext(ext: str) -> bool:
    return "." + ext.rsplit(".", 1)[-1] in IMAGE_EXTENSIONS


def _tail_problem(f: io.BufferedReader, end: int, file_size: int) -> str | None:
    """Why the bytes after the last readable member are not a clean tar end (zero blocks), if they are not."""
    if end >= file_size:
        return None
    f.seek(end)
    rest = f.read(min(file_size - end, _TAIL_CHECK_BYTES))
    if not rest.strip(b"\0"):
        return None
    if file_size - end < tarfile.BLOCKSIZE:
        return f"truncated tar (shard ends inside a member header, {file_size - end} bytes at byte {end})"
    return f"corrupt tar header at byte {end}: the remaining {file_size - end} bytes of the shard cannot be read"


def index_shard(path: str) -> pa.Table:
    """One row per sample of the shard at `path` (columns in `_EMPTY_SCHEMA`), in shard order."""
    st = os.stat(path)
    samples: dict[str, dict[str, Any]] = {}
    extra: list[dict[str, Any]] = []
    with open(path, "rb") as f:
        try:
            tar = tarfile.open(fileobj=f, mode="r:")
        except tarfile.TarError as err:
            reason = "empty shard (0 bytes)" if st.st_size == 0 else f"not a tar archive ({err})"
            extra.append({"member": "<shard>", "offset": 0, "size": st.st_size, "reason": reason})
            tar = None
        end = 0
        while tar is not None:
            try:
                info = tar.next()
            except tarfile.TarError:
                break  # the member before was cut short; it is reported below
            if info is None:
                break
            end = info.offset_data + info.size + (-info.size % tarfile.BLOCKSIZE)
            if not info.isfile():
                continue
            key, ext = _split_member(info.name)
            sample = samples.setdefault(key, {"member": "", "other": []})
            truncated = info.offset_data + info.size > st.st_size
            if _is_image_ext(ext) and not sample["member"]:
                sample.update(member=info.name, offset=info.offset_data, size=info.size)
                if truncated:
                    sample.update(reason=f"truncated (shard ends inside this member: {st.st_size - info.offset_data}"
                                         f" of {info.size} bytes present)", sha1="")
                elif images.MAX_FILE_BYTES is not None and info.size > images.MAX_FILE_BYTES:
                    sample.update(reason=f"too large: member of {info.size} bytes > MAX_FILE_BYTES", sha1="")
                else:
                    f.seek(info.offset_data)
                    reason, sample["sha1"] = images.check_bytes_with_sha1(f.read(info.size), info.name)
                    sample["reason"] = reason or ""
                continue
            sample["other"].append(info.name)
            if truncated or info.size > _TAIL_CHECK_BYTES or ext not in ("txt", "json"):
                continue
            f.seek(info.offset_data)
            text = f.read(info.size).decode("utf-8", errors="replace")
            if ext == "txt":
                sample["caption"] = text
            else:
                try:
                    meta = json.loads(text)
                except ValueError:
                    continue
                if isinstance(meta, dict):
                    sample["url"] = str(meta.get("url") or "")
                    if meta.get("error"):
                        sample["error"] = str(meta["error"])
        if tar is not None:
            end = max(end, tar.offset)
            problem = _tail_problem(f, end, st.st_size)
            if problem:
                extra.append({"member": f"<byte {end}>", "offset": end, "size": st.st_size - end, "reason": problem})
    rows = []
    for key, s in samples.items():
        if not s["member"]:
            why = s.get("error") or f"no image member in sample (found {', '.join(s['other'])})"
            rows.append({"member": key, "offset": 0, "size": 0, "reason": why, "sha1": ""})
        else:
            rows.append(s)
    rows += extra
    table = pa.table(
        {
            "member": [r["member"] for r in rows],
            "offset": pa.array([r["offset"] for r in rows], pa.int64()),
            "size": pa.array([r["size"] for r in rows], pa.int64()),
            "ok": pa.array([not r["reason"] for r in rows], pa.bool_()),
            "reason": [r["reason"] for r in rows],
            "sha1": [r.get("sha1", "") for r in rows],
            "caption": [r.get("caption", "") for r in rows],
            "url": [r.get("url", "") for r in rows],
        },
        schema=_EMPTY_SCHEMA,
    )
    meta = {"shard": path, "size": str(st.st_size), "mtime_ns": str(st.st_mtime_ns), "version": str(SHARD_INDEX_VERSION)}
    return table.replace_schema_metadata(meta)


_EMPTY_SCHEMA = pa.schema([("member", pa.string()), ("offset", pa.int64()), ("size", pa.int64()), ("ok", pa.bool_()),
                           ("reason", pa.string()), ("sha1", pa.string()), ("caption", pa.string()),
                           ("url", pa.string())])


def _shard_store(cache_dir: Path, shard: str) -> Path:
    key = hashlib.sha1(shard.encode()).hexdigest()[:16]
    return cache_dir / "index" / "shards" / f"{Path(shard).name}-{key}.parquet"


def _index_shard_to(job: tuple[str, str]) -> str:
    shard, store = job
    write_parquet_atomic(index_shard(shard), Path(store))
    return store


def _stored_is_current(store: Path, shard: str) -> bool:
    if not store.exists():
        return False
    meta = pq.read_schema(store).metadata or {}
    st = os.stat(shard)
    return (meta.get(b"shard", b"").decode() == shard and meta.get(b"version") == str(SHARD_INDEX_VERSION).encode()
            and meta.get(b"size") == str(st.st_size).encode() and meta.get(b"mtime_ns") == str(st.st_mtime_ns).encode())


# ----------------------------------------------------------------------------------------------------
# the collection's index


@dataclasses.dataclass
class ShardIndex(SampleIndex):
    """Columns over all samples of a list of shards, in shard order then member order.

    `labels[shard[i]] + "/" + member[i]` names sample i (the shard path, or e.g. a Hugging Face
    dataset's name for shards materialised from it). Text columns are `StringColumn`s and digests
    an `S40` array, so the index holds no per-sample Python objects.
    """

    root: str
    shards: list[str]
    labels: list[str]
    shard: np.ndarray  # int32, position in `shards`
    member: StringColumn
    offset: np.ndarray  # int64, byte offset of the member's data
    size: np.ndarray  # int64
    ok: np.ndarray  # bool
    reason: StringColumn  # "" when ok
    sha1: np.ndarray  # S40, b"" when unreadable

    def __len__(self) -> int:
        return len(self.member)

    def sample_ids(self, positions: np.ndarray) -> StringColumn:
        """`<label>/<member>` of the samples at `positions` (joined in Arrow, no per-sample objects)."""
        positions = np.asarray(positions, dtype=np.int64)
        return join_strings(decode_codes(self.shard[positions], self.labels), self.member[positions], sep="/")

    def read_paths(self, positions: np.ndarray) -> StringColumn:
        """`member_locator(...)` of the samples at `positions`, built in Arrow."""
        positions = np.asarray(positions, dtype=np.int64)
        return join_strings(LOCATOR_PREFIX[:-1], pa.array(self.offset[positions]), pa.array(self.size[positions]),
                            decode_codes(self.shard[positions], self.shards), sep=":")


def build_shard_index(shards: Sequence[str], cache_dir: str | os.PathLike, num_workers: int | None = None,
                      desc: str = "indexing shards", labels: Sequence[str] | None = None,
                      root: str | None = None) -> ShardIndex:
    """Index every shard not already indexed unchanged (in parallel, one shard per task); return the collection.

    Shards must exist (a missing shard is a configuration mistake, raised as FileNotFoundError).
    """
    shards = [str(Path(s).resolve()) for s in shards]
    missing = [s for s in shards if not os.path.isfile(s)]
    if missing:
        raise FileNotFoundError(f"{len(missing)} of {len(shards)} shards do not exist, e.g. {missing[:3]}: "
                                "fix the shard pattern (brace ranges are inclusive) or drop the missing ones")
    cache_dir = Path(cache_dir)
    stores = [_shard_store(cache_dir, s) for s in shards]
    todo = [(shards[i], str(stores[i])) for i in range(len(shards)) if not _stored_is_current(stores[i], shards[i])]
    for _ in parallel_map(_index_shard_to, todo, num_workers, chunksize=1, desc=desc, unit="shard", min_items=2,
                          in_flight_per_worker=2):
        pass
    columns = ["member", "offset", "size", "ok", "reason", "sha1"]
    tables = [pq.read_table(store, columns=columns) for store in stores]
    counts = np.array([t.num_rows for t in tables], dtype=np.int64)
    table = pa.concat_tables(tables) if tables else _EMPTY_SCHEMA.empty_table().select(columns)
    return ShardIndex(
        root=root or (shards[0] if len(shards) == 1 else f"{len(shards)} shards from {shards[0] if shards else '-'}"),
        shards=shards,
        labels=list(labels) if labels is not None else shards,
        shard=np.repeat(np.arange(len(shards), dtype=np.int32), counts),
        member=StringColumn.from_arrow(table.column("member")),
        offset=table.column("offset").to_numpy().astype(np.int64),
        size=table.column("size").to_numpy().astype(np.int64),
        ok=table.column("ok").to_numpy().astype(bool),
        reason=StringColumn.from_arrow(table.column("reason")),
        sha1=sha1_array(table.column("sha1")),
    )


# ----------------------------------------------------------------------------------------------------
# reading


def member_locator(shard: str, offset: int, size: int) -> str:
    """What `load_member` (and `bias.data.sources.load_image`) reads: one member's bytes in a shard."""
    return f"{LOCATOR_PREFIX}{int(offset)}:{int(size)}:{shard}"


def parse_locator(locator: str) -> tuple[str, int, int]:
    """`tar:<offset>:<size>:<shard>` -> (shard, offset, size)."""
    offset, size, shard = locator[len(LOCATOR_PREFIX):].split(":", 2)
    return shard, int(offset), int(size)


_handles: OrderedDict[str, int] = OrderedDict()
_handles_pid = -1


def _descriptor(shard: str) -> int:
    """A read-only descriptor for `shard`, opened lazily and kept per process (least recently used closed first)."""
    global _handles_pid
    if _handles_pid != os.getpid():  # a forked worker: its inherited copies are closed, it opens its own
        for fd in _handles.values():
            try:
                os.close(fd)
            except OSError:
                pass
        _handles.clear()
        _handles_pid = os.getpid()
    fd = _handles.get(shard)
    if fd is None:
        fd = os.open(shard, os.O_RDONLY)
        _handles[shard] = fd
        while len(_handles) > MAX_OPEN_SHARDS:
            os.close(_handles.popitem(last=False)[1])
    else:
        _handles.move_to_end(shard)
    return fd


def read_member(shard: str, offset: int, size: int) -> bytes:
    """The `size` bytes at `offset` of `shard`; ImageDecodeError when they cannot all be read."""
    label = f"{shard}@{offset}"
    try:
        fd = _descriptor(shard)
        data = os.pread(fd, size, offset) if hasattr(os, "pread") else _seek_read(fd, size, offset)
    except OSError as exc:
        raise ImageDecodeError(f"unreadable ({exc.strerror or type(exc).__name__})", label) from None
    if len(data) != size:
        raise ImageDecodeError(f"truncated (shard has {len(data)} of the {size} bytes indexed; "
                               "it changed after indexing)", label)
    return data


def _seek_read(fd: int, size: int, offset: int) -> bytes:
    os.lseek(fd, offset, os.SEEK_SET)
    return os.read(fd, size)


def load_member(locator: str, resize_shorter: int | None = None) -> np.ndarray:
    """Decode the member at `locator` to an H x W x 3 uint8 array, with the rules of `bias.data.images.load_rgb`."""
    shard, offset, size = parse_locator(locator)
    data = read_member(shard, offset, size)
    return images.load_rgb_bytes(data, f"{shard}@{offset}", resize_shorter)


# ----------------------------------------------------------------------------------------------------
# writing (materialised sources, tests)


class ShardWriter:
    """Writes samples as img2dataset-style shards `00000.tar, 00001.tar, ...` of `per_shard` samples each.

    Each shard is written to a temporary name and renamed when complete.
    """

    def __init__(self, folder: str | os.PathLike, per_shard: int = 10_000) -> None:
        self.folder, self.per_shard = Path(folder), per_shard
        self.folder.mkdir(parents=True, exist_ok=True)
        self.shards: list[str] = []
        self._tar: tarfile.TarFile | None = None
        self._count = 0

    def write(self, key: str, members: dict[str, bytes]) -> None:
        """One sample: `members` maps an extension (`jpg`, `json`, ...) to the member's bytes."""
        if self._tar is None or self._count >= self.per_shard:
            self._roll()
        for ext, data in members.items():
            info = tarfile.TarInfo(f"{key}.{ext}")
            info.size, info.mtime, info.mode = len(data), int(time.time()), 0o644
            self._tar.addfile(info, io.BytesIO(data))
        self._count += 1

    def _roll(self) -> None:
        self._finish()
        path = self.folder / f"{len(self.shards):05d}.tar"
        self.shards.append(str(path))
        self._tar = tarfile.open(f"{path}.tmp", "w", format=tarfile.USTAR_FORMAT)
        self._count = 0

    def _finish(self) -> None:
        if self._tar is not None:
            self._tar.close()
            os.replace(f"{self.shards[-1]}.tmp", self.shards[-1])
            self._tar = None

    def close(self) -> list[str]:
        self._finish()
        return self.shards


def write_shards(samples: Iterable[tuple[str, dict[str, bytes]]], folder: str | os.PathLike,
                 per_shard: int = 10_000) -> list[str]:
    writer = ShardWriter(folder, per_shard)
    for key, members in samples:
        writer.write(key, members)
    return writer.close()


# ----------------------------------------------------------------------------------------------------
# the config entry


@register_source("webdataset")
@dataclasses.dataclass
class WebDatasetSource(Source):
    """`{kind: webdataset, shards: '/data/cc/{00000..00999}.tar'}`: a pattern or a list of patterns."""

    shards: Any = "???"

    def shard_paths(self) -> list[str]:
        if isinstance(self.shards, str):
            return expand_shards(self.shards)
        if isinstance(self.shards, Sequence) and self.shards and all(isinstance(s, str) for s in self.shards):
            return expand_shards(list(self.shards))
        raise self.error(f"shards must be a pattern like '/data/cc/{{00000..00999}}.tar' or a list of them, "
                         f"got {self.shards!r}")

    def check(self) -> None:
        paths = self.shard_paths()
        if not paths:
            raise self.error("the shard pattern expands to no files")
        missing = [p for p in paths if not os.path.isfile(p)]
        if missing:
            raise self.error(f"{len(missing)} of {len(paths)} shards do not exist, e.g. {missing[:3]}: fix "
                             "data.datasets.<name>.shards (brace ranges are inclusive: {00000..00009} is 10 shards)")
        dupes = len(paths) - len({str(Path(p).resolve()) for p in paths})
        if dupes:
            raise self.error(f"the shard list names {dupes} shards more than once")

    def index(self, cache_dir: Path, num_workers: int | None = None) -> ShardIndex:
        self.check()
        return build_shard_index(self.shard_paths(), cache_dir, num_workers, desc=f"indexing {self.name}")
