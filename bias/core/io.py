"""Atomic writes, checked reads and folder locks: a reader never sees half a file, a killed job never
leaves one, two jobs never write one folder at once.

Every writer goes through `atomic_path`: write to a temporary name in the same folder, then
`os.replace` it onto the target (atomic on POSIX within one file system). A derived file (an index,
a store's entries, results, a checkpoint) is read with `read_derived`: one that cannot be read (a
disk fault, an edit, a copy cut short) is moved aside to `<name>.damaged` and reported, so that the
caller rebuilds it from its sources instead of ending in a traceback or trusting it. `folder_lock`
holds an exclusive lock (`filelock`) on a folder while a job writes it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from bias.core.errors import BiasError

T = TypeVar("T")
logger = logging.getLogger(__name__)


class FolderBusyError(BiasError):
    """Another job holds the folder's lock."""


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yields a temporary path beside `path`; on success it replaces `path`, on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    write_bytes_atomic(path, text.encode())


def write_json(obj: Any, path: str | os.PathLike) -> None:
    """JSON (numpy scalars and arrays, paths allowed), indented, atomically."""
    write_text_atomic(path, json.dumps(obj, indent=2, default=_json_default) + "\n")


def write_parquet_atomic(table: Any, path: str | os.PathLike) -> None:
    """An Arrow table as parquet, atomically."""
    import pyarrow.parquet as pq

    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def save_torch_atomic(obj: Any, path: str | os.PathLike) -> None:
    """`torch.save`, atomically (checkpoints)."""
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"cannot serialise {type(o).__name__}")


def read_derived(path: str | os.PathLike, reader: Callable[[Path], T], what: str = "",
                 set_aside: bool = True) -> tuple[T | None, str | None]:
    """`(reader(path), None)`; `(None, None)` when `path` does not exist; `(None, note)` when it cannot be read
    or `reader` rejects it (raises): the file is then moved aside to `<name>.damaged` (kept for inspection,
    replaced by the next damaged copy; not with `set_aside=False`, for the processes of a job other than the one
    that rebuilds it) and `note` says so in one line, for the caller to print and record while it rebuilds the
    file. `what` names the file in the note (default: its path)."""
    path = Path(path)
    if not path.exists():
        return None, None
    try:
        return reader(path), None
    except Exception as err:  # noqa: BLE001  (pyarrow, json, torch and pickle each raise their own on damage)
        aside = path.with_name(f"{path.name}.damaged")
        if set_aside:
            with contextlib.suppress(FileNotFoundError):  # another process of the same job moved it first
                os.replace(path, aside)
        detail = f"{type(err).__name__}: {err}".splitlines()[0][:200]
        return None, f"{what or path} was damaged ({detail}); moved to {aside} and rebuilt"


def read_json_object(path: Path, required: tuple[str, ...] = ()) -> dict[str, Any]:
    """A JSON object holding every key of `required` (else ValueError): `read_derived`'s reader for JSON files."""
    data = json.loads(path.read_text())
    if not isinstance(data, dict):
        raise ValueError(f"expected a JSON object, got {type(data).__name__}")
    missing = [k for k in required if k not in data]
    if missing:
        raise ValueError(f"missing {missing}")
    return data


def warn(note: str) -> None:
    """A one-line note at WARNING (a repaired file, a wait for a lock): on stderr under the commands."""
    logger.warning("note: %s", note)


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, wait: bool, busy: str) -> Iterator[None]:
    """Hold an exclusive lock on `folder` (the file `<folder>/.lock`, created with the folder) for the block.

    Another holder (another job, on this machine or one sharing the file system): with `wait`, print `busy` and
    wait for it; without, raise `FolderBusyError(busy)`. The operating system frees the lock of a killed job.
    """
    from filelock import FileLock, Timeout

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lock = FileLock(folder / ".lock", thread_local=False)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        if not wait:
            raise FolderBusyError(busy) from None
        warn(busy)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()
