"""Run a picklable function over many items in worker processes, in order, with a progress bar.

One helper for the file checks of an index, the shard indexes and the perceptual hashes. Items are
read and sent in chunks, with a bounded number of chunks in flight, so a million paths never exist
at once as Python strings (`Executor.map` would submit, and so materialise, every item up front).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from bias.core.progress import progress_bar

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_parent() -> None:
    """Have the kernel kill this (worker) process when the process that started it dies, even by `kill -9`.

    DataLoader and pool workers otherwise outlive a killed job, holding memory (Linux only; elsewhere a no-op).
    Called first thing in a worker; a worker whose parent is already gone exits at once."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() == 1:  # the parent died before the request was made
        os._exit(1)


def worker_init(_worker_id: int = 0) -> None:
    """`worker_init_fn` of every DataLoader: the worker dies with its parent (`die_with_parent`)."""
    die_with_parent()


def default_workers(num_workers: int | None) -> int:
    """`num_workers`, or up to 8 processes on the CPUs there are."""
    return int(num_workers) if num_workers is not None else min(8, os.cpu_count() or 1)


def _run_chunk(fn: Callable[[Any], Any], items: list[Any]) -> list[Any]:
    return [fn(item) for item in items]


def parallel_map(fn: Callable[[Any], Any], items: Sequence[Any], num_workers: int | None = None, chunksize: int = 64,
                 desc: str | None = None, unit: str = "img", min_items: int = 64,
                 in_flight_per_worker: int = 4) -> Iterator[Any]:
    """Yield `fn(items[i])` for i = 0, 1, ... (in order).

    `items` needs only `len` and integer indexing (a list, or a `bias.core.strings.StringColumn`). With one
    worker, or fewer than `min_items` items, it runs in this process; otherwise in a process pool,
    `chunksize` items per task and at most `in_flight_per_worker` tasks per worker queued at a time.
    """
    n = len(items)
    workers = default_workers(num_workers)
    with progress_bar(total=n, desc=desc, unit=unit, leave=False, disable=desc is None) as bar:
        if workers <= 1 or n < max(min_items, 2):
            for i in range(n):
                result = fn(items[i])
                bar.update()
                yield result
            return
        starts = iter(range(0, n, chunksize))
        with ProcessPoolExecutor(min(workers, -(-n // chunksize)), initializer=die_with_parent) as pool:
            queue: deque = deque()

            def submit() -> None:
                start = next(starts, None)
                if start is not None:
                    queue.append(pool.submit(_run_chunk, fn, [items[i] for i in range(start, min(n, start + chunksize))]))

            for _ in range(workers * in_flight_per_worker):
                submit()
            while queue:
                results = queue.popleft().result()
                submit()
                yield from results
                bar.update(len(results))


def fork_safe_opencv() -> None:
    """Run OpenCV single-threaded in this process.

    OpenCV's thread pool does not survive `fork`: once a process has used it (a `cvtColor` on a
    large image is enough), DataLoader or pool workers forked from it hang in their first
    parallel OpenCV call. The project parallelises with processes, so one thread per process
    loses nothing. `bias.data.images` calls this on import, before any OpenCV use.
    """
    import cv2

    cv2.setNumThreads(1)
