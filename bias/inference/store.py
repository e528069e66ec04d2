"""The content-addressed store of a precomputed transform's outputs: images, text, tables, vectors.

One folder per transform identity (`<cache>/transforms/<name>-<key>-<size tag>/`, the key hashing
name, version, parameters, model identity and dtype). Everything in it is keyed by the SHA-1 of
the *source* bytes, so the same content is computed once however many paths or datasets hold it.

    <sha[:2]>/<sha>.png            the image output (PNG, lossless)
    entries.parquet                one row per computed source: sha1, status ("ok" | "failed"),
                                   reason, stage, image checksum (BLAKE2b-64 of the PNG bytes)
    text/<name>.parquet            sha1, text                  (e.g. captions; one row per image)
    tables/<name>.parquet          sha1, <declared columns>    (e.g. boxes: any number of rows per image)
    vectors/<name>/<part>.npy      float32 [n, dim] shards, and vectors/<name>.parquet: sha1, shard, row
    parts/                         what each process of each run wrote, until the main process merges it
    manifest.json                  the transform, its parameters, model identity, counts and failures

Writers (one per process) buffer rows and write them as part files named by a unique id; the
main process merges all parts into the consolidated files under a lock, keeping for every source
the rows of its most recent computation. Every file is written through a temporary file and a
rename, so a killed job leaves no half-written file, and a rerun skips what is stored.

A stored image is trusted only if its bytes still match the recorded checksum
(`verify`): a truncated, overwritten or deleted output is recomputed from its source and counted as
repaired, apart from sources that are themselves broken. A merged file that cannot be read (entries,
text, tables, vector indexes) is moved aside to `<name>.damaged`, reported in `repaired_files`, and
what it listed is computed again.

One job at a time fills a store (`bias.inference.runner` holds `<folder>/.lock`): a second job on the
same store waits, then reuses what the first stored instead of computing it again.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from bias.core.io import atomic_path, read_derived, warn, write_bytes_atomic, write_parquet_atomic
from bias.core.strings import StringColumn, join_strings, sha1_array, sha1_to_arrow

OUTPUT_KINDS = ("image", "text", "table", "vector")


@dataclass(frozen=True)
class OutputSpec:
    """One declared output of a transform: `kind` is image, text, table or vector.

    table: `columns` maps column names to Arrow types (the rows of one image, any number);
    vector: `dim` is the length of each image's vector.
    """

    kind: str
    columns: Mapping[str, pa.DataType] = field(default_factory=dict)
    dim: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in OUTPUT_KINDS:
            raise ValueError(f"output kind must be one of {OUTPUT_KINDS}, got {self.kind!r}")
        if self.kind == "table" and not self.columns:
            raise ValueError("a table output declares its columns")
        if self.kind == "vector" and not (self.dim and self.dim > 0):
            raise ValueError("a vector output declares its dim")


IMAGE = OutputSpec("image")
TEXT = OutputSpec("text")

ENTRY_SCHEMA = pa.schema([("sha1", pa.string()), ("status", pa.string()), ("reason", pa.string()),
                          ("stage", pa.string()), ("checksum", pa.string()), ("part", pa.string())])


def checksum(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=8).hexdigest()


def encode_png(image: np.ndarray) -> bytes:
    """HxW or HxWx3 RGB uint8 -> PNG bytes (lossless, fast compression)."""
    image = np.ascontiguousarray(image)
    if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3)):
        raise ValueError(f"an image output must be HxW or HxWx3 uint8, got {image.dtype} {image.shape}")
    if image.ndim == 3 and image.shape[2] == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise OSError("PNG encoding failed")
    return buf.tobytes()


class OutputStore:
    """Read and write one transform's outputs (see the module docstring)."""

    def __init__(self, folder: str | os.PathLike, outputs: Mapping[str, OutputSpec]) -> None:
        self.folder = Path(folder)
        self.outputs = dict(outputs)
        #: one line per merged file found damaged, moved aside (`<name>.damaged`) and rebuilt: what it listed
        #: counts as not stored, so it is computed again from the sources
        self.repaired_files: list[str] = []

    # --- paths ----------------------------------------------------------------------------------------
    def image_path(self, sha1: str) -> Path:
        return self.folder / sha1[:2] / f"{sha1}.png"

    def image_paths(self, sha1s: np.ndarray) -> StringColumn:
        """`image_path` of every digest, built in Arrow (`<folder>/<sha[:2]>/<sha>.png`)."""
        sha = sha1_to_arrow(sha1_array(sha1s))
        return join_strings(str(self.folder), pc.utf8_slice_codeunits(sha, 0, 2), join_strings(sha, ".png"), sep="/")

    @property
    def parts_dir(self) -> Path:
        return self.folder / "parts"

    # --- what is stored ---------------------------------------------------------------------------------
    def entries(self) -> pa.Table:
        """The merged entry rows (empty table when nothing was merged yet)."""
        table = self._read_merged(self.folder / "entries.parquet", ENTRY_SCHEMA.names)
        return ENTRY_SCHEMA.empty_table() if table is None else table

    def _read_merged(self, path: Path, columns: Sequence[str]) -> pa.Table | None:
        """A merged parquet file, checked (`bias.core.io.read_derived`): None when absent or damaged."""
        def reader(p: Path) -> pa.Table:
            table = pq.read_table(p)
            missing = set(columns) - set(table.column_names)
            if missing:
                raise ValueError(f"missing columns {sorted(missing)}")
            return table

        table, damaged = read_derived(path, reader)
        if damaged:
            warn(damaged + " (what it listed is computed again)")
            self.repaired_files.append(damaged)
        return table

    def stored(self, sha1s: np.ndarray, verify: bool = True, threads: int = 8) -> tuple[np.ndarray, np.ndarray]:
        """(ok, damaged) masks over `sha1s`. ok: stored with every declared output and, with `verify`, an image
        whose bytes match the recorded checksum; damaged: recorded as stored, but the image is now missing
        or corrupt (to recompute). `verify=False` only checks that the image file can be read."""
        sha1s = sha1_array(sha1s)
        ok = np.zeros(len(sha1s), dtype=bool)
        damaged = np.zeros(len(sha1s), dtype=bool)
        entries = self.entries()
        if not len(entries) or not len(sha1s):
            return ok, damaged
        good = entries.filter(pc.equal(entries["status"], "ok"))
        known = sha1_array(good["sha1"])
        order = np.argsort(known)
        known = known[order]
        sums = good["checksum"].to_numpy(zero_copy_only=False)[order]
        pos = np.searchsorted(known, sha1s)
        hit = (pos < len(known)) & (known[np.minimum(pos, len(known) - 1)] == sha1s)
        hit &= self._side_outputs_present(sha1s)
        idx = np.flatnonzero(hit)
        if "image" not in self.outputs:
            ok[idx] = True
            return ok, damaged

        def intact(i: int) -> bool:
            path = self.image_path(sha1s[i].decode())
            try:
                data = path.read_bytes()
            except OSError:
                return False
            return not verify or checksum(data) == sums[pos[i]]

        with ThreadPoolExecutor(max(1, threads)) as pool:
            flags = np.fromiter(pool.map(intact, idx, chunksize=256), dtype=bool, count=len(idx))
        ok[idx[flags]] = True
        damaged[idx[~flags]] = True
        return ok, damaged

    def _side_outputs_present(self, sha1s: np.ndarray) -> np.ndarray:
        """Whether every declared text and vector output has a row for each digest (tables may have none)."""
        present = np.ones(len(sha1s), dtype=bool)
        for name, spec in self.outputs.items():
            if spec.kind not in ("text", "vector"):
                continue
            table = self._read_merged(self._merged_path(name, spec), ["sha1"])
            if table is None:
                return np.zeros(len(sha1s), dtype=bool)
            have = np.unique(sha1_array(table["sha1"]))
            present &= np.isin(sha1s, have)
        return present

    def _merged_path(self, name: str, spec: OutputSpec) -> Path:
        sub = {"text": "text", "table": "tables", "vector": "vectors"}[spec.kind]
        return self.folder / sub / f"{name}.parquet"

    # --- readers (describe) ----------------------------------------------------------------------------
    def read_text(self, name: str) -> pa.Table:
        """sha1, text: one row per image of a text output."""
        return self._read(name, "text")

    def read_table(self, name: str) -> pa.Table:
        """sha1 and the declared columns: the rows of a table output."""
        return self._read(name, "table")

    def read_vectors(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(sha1s as S40, float32 [n, dim]) of a vector output, in sha1 order."""
        index = self._read(name, "vector").sort_by("sha1")
        sha = sha1_array(index["sha1"])
        out = np.empty((len(index), self.outputs[name].dim), dtype=np.float32)
        shards = index["shard"].to_numpy(zero_copy_only=False)
        rows = index["row"].to_numpy()
        for shard in np.unique(shards):
            sel = np.flatnonzero(shards == shard)
            out[sel] = np.load(self.folder / "vectors" / name / f"{shard}.npy", mmap_mode="r")[rows[sel]]
        return sha, out

    def _read(self, name: str, kind: str) -> pa.Table:
        spec = self.outputs.get(name)
        if spec is None or spec.kind != kind:
            declared = {k: s.kind for k, s in self.outputs.items()}
            raise KeyError(f"{self.folder.name} has no {kind} output {name!r}; it declares {declared}")
        path = self._merged_path(name, spec)
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist yet: run the transform first (scripts/transform.py)")
        return pq.read_table(path).drop_columns(["part"])

    # --- writing ----------------------------------------------------------------------------------------
    def writer(self) -> StoreWriter:
        return StoreWriter(self)

    def merge(self) -> None:
        """Fold every part file into the consolidated files (main process; under a lock)."""
        parts = self.parts_dir
        if not parts.exists():
            return
        with self._lock():
            self._merge_entries(sorted(parts.glob("entries-*.parquet")))
            for name, spec in self.outputs.items():
                if spec.kind != "image":
                    self._merge_rows(self._merged_path(name, spec), sorted(parts.glob(f"{spec.kind}-{name}-*.parquet")))

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / ".merge.lock", "w") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def _merge_entries(self, files: Sequence[Path]) -> None:
        if not files:
            return
        table = pa.concat_tables([self.entries(), *(pq.read_table(f) for f in files)]).cast(ENTRY_SCHEMA)
        write_parquet_atomic(_latest_per_sha(table), self.folder / "entries.parquet")
        for f in files:
            f.unlink()

    def _merge_rows(self, merged: Path, files: Sequence[Path]) -> None:
        if not files:
            return
        tables = [pq.read_table(f) for f in files]
        previous = self._read_merged(merged, ["sha1"])
        if previous is not None:
            tables.insert(0, previous)
        write_parquet_atomic(_latest_per_sha(pa.concat_tables(tables, promote_options="permissive")), merged)
        for f in files:
            f.unlink()


def _latest_per_sha(table: pa.Table) -> pa.Table:
    """Keep, for every sha1, only the rows of its most recent part (part ids sort by time)."""
    if not len(table):
        return table
    latest = table.group_by("sha1").aggregate([("part", "max")])
    joined = table.join(latest, "sha1")
    keep = pc.equal(joined["part"], joined["part_max"])
    return joined.filter(keep).drop_columns(["part_max"]).sort_by([("sha1", "ascending")])


class StoreWriter:
    """Writes one process's outputs: image files at once, rows buffered and flushed as part files.

    Thread-safe (the runner's writer thread calls `put`; `close` flushes).
    """

    def __init__(self, store: OutputStore) -> None:
        self.store = store
        self._id = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"  # sorts by time, unique per process
        self._flushes = 0
        self._rows: dict[str, list[Any]] = {}
        self._entries: list[tuple[str, str, str, str, str]] = []
        self._vectors: dict[str, list[np.ndarray]] = {}
        self._lock = threading.Lock()
        store.parts_dir.mkdir(parents=True, exist_ok=True)

    def put(self, sha1: str, outputs: Mapping[str, Any]) -> None:
        """Store every declared output of one source (`outputs` may hold nothing else)."""
        declared = self.store.outputs
        unknown = set(outputs) - set(declared)
        missing = set(declared) - set(outputs)
        if unknown or missing:
            raise ValueError(f"outputs {sorted(outputs)} do not match the declared {sorted(declared)}")
        digest = ""
        rows: dict[str, Any] = {}
        for name, spec in declared.items():
            value = outputs[name]
            if spec.kind == "image":
                data = encode_png(value)
                write_bytes_atomic(self.store.image_path(sha1), data)
                digest = checksum(data)
            elif spec.kind == "text":
                rows[name] = {"sha1": [sha1], "text": ["" if value is None else str(value)]}
            elif spec.kind == "table":
                rows[name] = _table_rows(sha1, name, spec, value)
            else:
                vec = np.asarray(value, dtype=np.float32).reshape(-1)
                if len(vec) != spec.dim:
                    raise ValueError(f"vector output {name!r} has length {len(vec)}, declared {spec.dim}")
                rows[name] = vec
        with self._lock:
            for name, value in rows.items():
                if declared[name].kind == "vector":
                    self._vectors.setdefault(name, []).append(value)
                    self._rows.setdefault(name, []).append(sha1)
                else:
                    self._rows.setdefault(name, []).append(value)
            self._entries.append((sha1, "ok", "", "", digest))

    def fail(self, sha1: str, reason: str, stage: str) -> None:
        with self._lock:
            self._entries.append((sha1, "failed", reason, stage, ""))

    @property
    def part(self) -> str:
        """The id of the next part files: this writer's id and its flush count (later flushes sort later)."""
        return f"{self._id}-{self._flushes:06d}"

    def close(self) -> None:
        """Write the buffered rows as part files (the main process merges them)."""
        self.flush()

    def flush(self) -> None:
        """Write the rows buffered since the last flush as part files now; a killed run keeps them."""
        parts = self.store.parts_dir
        with self._lock:
            if not (self._entries or any(self._rows.values())):
                return
            for name, spec in self.store.outputs.items():
                if spec.kind in ("text", "table") and self._rows.get(name):
                    cols: dict[str, list[Any]] = {}
                    for chunk in self._rows[name]:
                        for k, v in chunk.items():
                            cols.setdefault(k, []).extend(v)
                    schema = _row_schema(spec)
                    table = pa.table({k: pa.array(cols.get(k, []), type=schema.field(k).type) for k in schema.names})
                    self._write_part(table, parts / f"{spec.kind}-{name}-{self.part}.parquet")
                elif spec.kind == "vector" and self._rows.get(name):
                    vecs = np.stack(self._vectors[name])
                    shard_dir = self.store.folder / "vectors" / name
                    shard_dir.mkdir(parents=True, exist_ok=True)
                    with atomic_path(shard_dir / f"{self.part}.npy") as tmp:
                        with open(tmp, "wb") as f:
                            np.save(f, vecs)
                    index = pa.table({"sha1": pa.array(self._rows[name], pa.string()),
                                      "shard": pa.array([self.part] * len(vecs), pa.string()),
                                      "row": pa.array(np.arange(len(vecs)), pa.int64())})
                    self._write_part(index, parts / f"vector-{name}-{self.part}.parquet")
            if self._entries:
                sha, status, reason, stage, digest = (list(c) for c in zip(*self._entries))
                self._write_part(pa.table({"sha1": sha, "status": status, "reason": reason, "stage": stage,
                                           "checksum": digest}), parts / f"entries-{self.part}.parquet")
            self._rows, self._vectors, self._entries = {}, {}, []
            self._flushes += 1

    def _write_part(self, table: pa.Table, path: Path) -> None:
        write_parquet_atomic(table.append_column("part", pa.array([self.part] * len(table), pa.string())), path)


def _row_schema(spec: OutputSpec) -> pa.Schema:
    if spec.kind == "text":
        return pa.schema([("sha1", pa.string()), ("text", pa.string())])
    return pa.schema([("sha1", pa.string()), *spec.columns.items()])


def _table_rows(sha1: str, name: str, spec: OutputSpec, value: Any) -> dict[str, list[Any]]:
    """A table output's rows for one image: a mapping of equal-length columns (or a list of row mappings)."""
    if isinstance(value, Mapping):
        cols = {k: list(np.asarray(v).tolist()) if isinstance(v, np.ndarray) else list(v) for k, v in value.items()}
    else:
        cols = {k: [row[k] for row in value] for k in spec.columns}
    if set(cols) != set(spec.columns):
        raise ValueError(f"table output {name!r} has columns {sorted(cols)}, declared {sorted(spec.columns)}")
    lengths = {len(v) for v in cols.values()}
    if len(lengths) > 1:
        raise ValueError(f"table output {name!r}: columns of different lengths {sorted(lengths)}")
    n = lengths.pop() if lengths else 0
    return {"sha1": [sha1] * n, **cols}
