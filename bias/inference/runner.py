"""The batched runner: one code path for every precomputed transform, classical or neural.

For the distinct source contents of a split (SHA-1s from the index), sharded across processes:

1. what is already stored and intact is skipped (`OutputStore.stored`: a missing or corrupt
   image output is recomputed from its source and counted as *repaired*, apart from broken
   sources);
2. a DataLoader over this rank's pending sources decodes each one and runs the model's
   `preprocess` in worker processes (CPU-only transforms do all their work there, so they use
   every core); batches are collated by the model, pinned when a GPU is used;
3. the main thread moves each batch to the device and runs `forward` under `torch.inference_mode`
   and autocast (fp16/bf16 on GPU, fp32 on CPU); on a CUDA out-of-memory error the batch is
   split in halves and retried, and later batches are cut to the size that fitted;
4. `postprocess` turns the outputs into one {output: value} per item, which a writer thread
   stores (PNG encoding and file writes overlap the next batch);
5. every process writes its part files (flushed every `FLUSH_SECONDS` too, so a killed run keeps what
   it computed); the main process merges them, at the start of a run (what a killed run left) and at
   its end, and writes `manifest.json`.

The main process holds the store's lock (`<folder>/.lock`) from its first merge to its last: a second
job on the same store waits for the first, then reuses its outputs instead of computing them again.

`timings=RunTimings()` records where the main thread's time goes, batch by batch (waiting for the
DataLoader, forward, postprocess, hand-over to the writer): a few clock reads per batch, and on
CUDA one synchronisation after each forward (which postprocess would wait for anyway), so that the
forward's time is the device's. Without it nothing is measured. `benchmarks/bench_neural.py` reads it.

The model is loaded once per process, only when something is pending, and freed at the end,
before training starts. Failures are never replaced: each is listed with its reason and stage
(`transform`: the source does not decode; `preprocess`, `forward`, `postprocess`, `store`: the
model or its outputs failed on it).
"""

from __future__ import annotations

import contextlib
import gc
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from bias.core.io import folder_lock, write_json
from bias.core.parallel import default_workers, die_with_parent
from bias.core.progress import progress_bar
from bias.core.strings import StringColumn, as_string_column, sha1_array
from bias.data.images import ImageDecodeError
from bias.data.sources import load_image
from bias.inference.store import OutputSpec, OutputStore


class BatchModel(Protocol):
    """What the runner needs of a transform (see `transforms.base.Transform`)."""

    name: str
    outputs: Mapping[str, OutputSpec]
    batch_size: int

    def load(self, device: torch.device, dtype: torch.dtype) -> None: ...
    def unload(self) -> None: ...
    def runtime_device(self) -> str: ...
    def runtime_dtype(self, device: torch.device) -> torch.dtype: ...
    def preprocess(self, image: np.ndarray) -> Any: ...  # (image, sha1=...) with `preprocess_takes_sha1 = True`
    def collate(self, items: Sequence[Any]) -> Any: ...
    def forward(self, batch: Any) -> Any: ...
    def postprocess(self, outputs: Any, batch: Any) -> list[dict[str, Any]]: ...


#: below this many pending sources the runner works in its own process (starting workers costs ~1 s)
MIN_ITEMS_FOR_WORKERS = 64


def resolve_device(name: str) -> torch.device:
    """'auto' -> the process's GPU if there is one (its local rank under a launcher), else the CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)) % torch.cuda.device_count())
        return torch.device("cpu")
    return torch.device(name)


def is_out_of_memory(err: BaseException) -> bool:
    return isinstance(err, torch.OutOfMemoryError) or "out of memory" in str(err).lower()


@dataclass
class RunReport:
    store: OutputStore
    computed: int
    reused: int
    repaired: int
    failed: list[dict[str, str]] = field(default_factory=list)
    ranks: list[dict[str, int]] = field(default_factory=list)
    #: merged store files found damaged and rebuilt (what they listed was computed again)
    repaired_files: list[str] = field(default_factory=list)

    @property
    def folder(self) -> Path:
        return self.store.folder

    def read_paths(self, sha1s: np.ndarray) -> StringColumn:
        """Where the image output of every digest is stored (`<folder>/<sha[:2]>/<sha>.png`)."""
        return self.store.image_paths(sha1s)


@dataclass
class BatchTiming:
    """One batch of the main loop, in seconds (`time.perf_counter`)."""

    items: int  # items the DataLoader delivered (failed ones included)
    wait: float  # blocked on the DataLoader for this batch: the forward pass waiting for data
    forward: float  # `_Forward` (to the device, the model, out-of-memory retries), synchronised on CUDA
    postprocess: float
    submit: float  # handing the outputs to the writer thread (blocks while its queue is full)

    @property
    def total(self) -> float:
        return self.wait + self.forward + self.postprocess + self.submit


@dataclass
class RunTimings:
    """Where the main thread's time goes in `run_batched(..., timings=RunTimings())`; filled in place.

    `load`: `model.load`; `batches`: one `BatchTiming` per batch, in order (`on_batch`, if set, is
    called with each as it completes); `finish`: draining the writer and unloading at the end.
    """

    load: float = 0.0
    finish: float = 0.0
    batches: list[BatchTiming] = field(default_factory=list)
    on_batch: Callable[[BatchTiming], None] | None = None

    def loop(self, skip: int = 0) -> float:
        """Wall time of the main loop (seconds), leaving out the first `skip` batches."""
        return sum(b.total for b in self.batches[skip:])

    def wait_share(self, skip: int = 0) -> float:
        """Share of the loop's wall time spent waiting for data (0 when there were no batches)."""
        total = self.loop(skip)
        return sum(b.wait for b in self.batches[skip:]) / total if total > 0 else 0.0

    def items(self, skip: int = 0) -> int:
        return sum(b.items for b in self.batches[skip:])


@dataclass
class _Failure:
    sha1: str
    path: str
    reason: str
    stage: str


class _Pending(Dataset):
    """Decode + `preprocess` of the pending sources (runs in DataLoader workers)."""

    def __init__(self, model: BatchModel, paths: StringColumn, sha1s: np.ndarray, resize_shorter: int | None) -> None:
        self.model, self.paths, self.sha1s, self.resize_shorter = model, paths, sha1s, resize_shorter
        self.keyed = bool(getattr(model, "preprocess_takes_sha1", False))

    def __len__(self) -> int:
        return len(self.sha1s)

    def __getitem__(self, i: int) -> tuple[str, str, Any]:
        sha, path = self.sha1s[i].decode("ascii"), self.paths[i]
        try:
            image = load_image(path, resize_shorter=self.resize_shorter)
        except ImageDecodeError as err:
            return sha, path, _Failure(sha, path, err.reason, "transform")
        try:
            if self.keyed:
                return sha, path, self.model.preprocess(image, sha1=sha)
            return sha, path, self.model.preprocess(image)
        except Exception as err:  # noqa: BLE001  (one bad input must not end the run: it is listed)
            return sha, path, _Failure(sha, path, f"{type(err).__name__}: {err}", "preprocess")


class _Collate:
    """Keeps failed items out of the model's batch (picklable, for worker processes)."""

    def __init__(self, model: BatchModel) -> None:
        self.model = model

    def __call__(self, items: Sequence[tuple[str, str, Any]]) -> tuple[list[tuple[str, str]], Any, list[_Failure]]:
        good = [(s, p, x) for s, p, x in items if not isinstance(x, _Failure)]
        failed = [x for _, _, x in items if isinstance(x, _Failure)]
        keys = [(s, p) for s, p, _ in good]
        return keys, (self.model.collate([x for _, _, x in good]) if good else None), failed


def _worker_init(_: int) -> None:
    die_with_parent()
    try:
        import cv2

        cv2.setNumThreads(1)  # one process per core: no nested thread pools
    except ImportError:  # pragma: no cover
        pass


def split_batch(batch: Any, parts: int) -> list[Any]:
    """Cut a batch (tensor, list, tuple or mapping of those, split along the first axis) into `parts` pieces."""
    if isinstance(batch, torch.Tensor):
        return list(torch.tensor_split(batch, parts))
    if isinstance(batch, Mapping):
        cut = {k: split_batch(v, parts) for k, v in batch.items()}
        return [{k: v[i] for k, v in cut.items()} for i in range(parts)]
    if isinstance(batch, tuple):
        cut = [split_batch(v, parts) for v in batch]
        return [tuple(c[i] for c in cut) for i in range(parts)]
    if isinstance(batch, list):
        bounds = np.linspace(0, len(batch), parts + 1).astype(int)
        return [batch[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
    raise TypeError(f"cannot split a batch of type {type(batch).__name__}; return tensors, lists or dicts of them")


def batch_len(batch: Any) -> int:
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0])
    if isinstance(batch, Mapping):
        return batch_len(next(iter(batch.values())))
    if isinstance(batch, tuple):
        return batch_len(batch[0])
    return len(batch)


def to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, tuple):
        return tuple(to_device(v, device) for v in batch)
    return batch


class _Forward:
    """`model.forward` with out-of-memory backoff: a batch that does not fit is halved until it does."""

    def __init__(self, model: BatchModel, device: torch.device, dtype: torch.dtype) -> None:
        self.model, self.device, self.dtype = model, device, dtype
        self.limit: int | None = None  # largest batch known to fit after an out-of-memory error
        self.retries = 0

    def __call__(self, batch: Any) -> list[tuple[Any, Any]]:
        """[(outputs, batch piece)] covering the batch in order."""
        n = batch_len(batch)
        if self.limit is not None and n > self.limit:
            pieces = split_batch(batch, -(-n // self.limit))
            return [r for p in pieces for r in self(p)]
        try:
            return [(self._run(batch), batch)]
        except Exception as err:
            if not is_out_of_memory(err) or n <= 1:
                raise
        self.retries += 1
        self.limit = max(1, n // 2)
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        return [r for p in split_batch(batch, 2) for r in self(p)]

    def _run(self, batch: Any) -> Any:
        on_device = to_device(batch, self.device)
        autocast = self.device.type == "cuda" and self.dtype in (torch.float16, torch.bfloat16)
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=self.dtype, enabled=autocast):
            return self.model.forward(on_device)


#: the writer thread flushes what it holds as part files at least every `FLUSH_SECONDS` seconds and every
#: `FLUSH_ITEMS` stored items: a killed run keeps what it computed up to then, and the next run reuses it
#: (slow model transforms run for days; fast CPU ones store thousands of items a minute). What a kill costs
#: is measured in benchmarks/RESULTS.md
FLUSH_SECONDS = 10.0
FLUSH_ITEMS = 512


class _Writer(threading.Thread):
    """Stores postprocessed items off the main thread; errors are recorded per item; flushes every
    `FLUSH_SECONDS` and every `FLUSH_ITEMS` items (as they are when the writer is made)."""

    def __init__(self, store: OutputStore) -> None:
        super().__init__(daemon=True, name="output-writer")
        self.writer = store.writer()
        self.flush_seconds = FLUSH_SECONDS
        self.flush_items = FLUSH_ITEMS
        self.queue: queue.Queue = queue.Queue(maxsize=8)
        self.stored: set[str] = set()
        self.failures: list[dict[str, str]] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        flushed, unflushed = time.monotonic(), 0
        while True:
            job = self.queue.get()
            if job is None:
                return
            for (sha, path), outputs in job:
                try:
                    self.writer.put(sha, outputs)
                    self.stored.add(sha)
                except (OSError, ValueError) as err:
                    self.writer.fail(sha, f"{type(err).__name__}: {err}", "store")
                    self.failures.append({"path": path, "reason": f"{type(err).__name__}: {err}", "stage": "store"})
                except BaseException as err:  # noqa: BLE001  (re-raised by the main thread)
                    self.error = err
                    return
            unflushed += len(job)
            if time.monotonic() - flushed >= self.flush_seconds or unflushed >= self.flush_items:
                try:
                    self.writer.flush()
                except BaseException as err:  # noqa: BLE001  (re-raised by the main thread)
                    self.error = err
                    return
                flushed, unflushed = time.monotonic(), 0

    def submit(self, items: list[tuple[tuple[str, str], dict[str, Any]]]) -> None:
        if self.error is not None:
            raise self.error
        self.queue.put(items)

    def finish(self) -> None:
        self.queue.put(None)
        self.join()
        if self.error is not None:
            raise self.error
        self.writer.close()


def _rank_slice(n: int, rank: int, world: int) -> slice:
    base, extra = divmod(n, world)
    start = rank * base + min(rank, extra)
    return slice(start, start + base + (1 if rank < extra else 0))


def run_batched(
    model: BatchModel,
    paths: Sequence[str],
    sha1s: Sequence[str] | np.ndarray,
    store: OutputStore,
    *,
    resize_shorter: int | None = None,
    rank: int = 0,
    world_size: int = 1,
    barrier: Callable[[], None] | None = None,
    gather: Callable[[Any], list[Any]] | None = None,
    num_workers: int | None = None,
    verify: bool = True,
    show_progress: bool = True,
    manifest: Mapping[str, Any] | None = None,
    timings: RunTimings | None = None,
) -> RunReport:
    """Compute and store `model`'s outputs for every distinct source; see the module docstring.

    `paths[i]` is read for digest `sha1s[i]` (duplicates are computed once). `barrier` and `gather`
    (e.g. accelerate's `wait_for_everyone` and `gather_object`) connect the processes; `gather(x)`
    returns every rank's `x`. `num_workers`: DataLoader workers (default: one per core, up to 8).
    `manifest` adds fields to `manifest.json` (the transform's parameters, say). `timings`: a
    `RunTimings` to fill with this rank's main-loop timings (nothing is recorded without one).
    """
    gather = gather or (lambda obj: [obj])
    paths, sha1s = as_string_column(paths), sha1_array(sha1s)
    hashes, first = np.unique(sha1s, return_index=True)  # sorted distinct digests, first path holding each
    mine = _rank_slice(len(hashes), rank, world_size)
    mine_hashes, mine_paths = hashes[mine], paths[first[mine]]
    with contextlib.ExitStack() as held:
        if rank == 0:  # one job at a time fills a store: a second one waits, then reuses what this one stored
            held.enter_context(folder_lock(store.folder, wait=True, busy=f"another job is filling {store.folder}; "
                                           "waiting for it, to reuse what it stores"))
            store.merge()  # what a killed run flushed (part files) is reused below, not recomputed
        return _run_locked(model, mine_hashes, mine_paths, hashes, store, resize_shorter, rank, barrier, gather,
                           num_workers, verify, show_progress, manifest, timings)


def _run_locked(model: BatchModel, mine_hashes: np.ndarray, mine_paths: StringColumn, hashes: np.ndarray,
                store: OutputStore, resize_shorter: int | None, rank: int, barrier: Callable[[], None] | None,
                gather: Callable[[Any], list[Any]], num_workers: int | None, verify: bool, show_progress: bool,
                manifest: Mapping[str, Any] | None, timings: RunTimings | None) -> RunReport:
    """`run_batched` while rank 0 holds the store's lock."""
    if barrier is not None:
        barrier()
    ok, damaged = store.stored(mine_hashes, verify=verify)
    pending = np.flatnonzero(~ok)
    counts = {"rank": rank, "reused": int(ok.sum()), "computed": 0, "repaired": 0, "failed": 0, "oom_retries": 0}
    failures: list[dict[str, str]] = []
    start = time.time()
    if len(pending):
        failures, counts = _compute(model, mine_paths[pending], mine_hashes[pending], damaged[pending], store,
                                    resize_shorter, num_workers, show_progress, counts, timings)
    counts["seconds"] = round(time.time() - start, 2)
    if barrier is not None:
        barrier()
    ranks = gather(counts)
    all_failed = [f for part in gather(failures) for f in part]
    totals = {k: sum(int(r[k]) for r in ranks) for k in ("computed", "reused", "repaired", "failed")}
    repaired_files = [f for part in gather(store.repaired_files) for f in part]
    if rank == 0:
        store.merge()
        write_json({"transform": model.name, "outputs": {k: v.kind for k, v in store.outputs.items()},
                    **dict(manifest or {}), "resize_shorter": resize_shorter, "n_unique": int(len(hashes)),
                    **totals, "ranks": ranks, "failed": all_failed, "repaired_files": repaired_files},
                   store.folder / "manifest.json")
    if barrier is not None:
        barrier()
    return RunReport(store, totals["computed"], totals["reused"], totals["repaired"], all_failed, ranks,
                     sorted(set(repaired_files)))


def _compute(model: BatchModel, paths: StringColumn, hashes: np.ndarray, damaged: np.ndarray, store: OutputStore,
             resize_shorter: int | None, num_workers: int | None, show_progress: bool,
             counts: dict[str, Any], timings: RunTimings | None = None) -> tuple[list[dict[str, str]], dict[str, Any]]:
    """Compute and store the outputs of `paths`: start the loader, load the model, run every batch (`_BatchStep`),
    then always finish the writer and free the model. Returns (failures, counts)."""
    device = resolve_device(model.runtime_device())
    dtype = model.runtime_dtype(device)
    loader = _loader(model, paths, hashes, resize_shorter, num_workers, device)
    batches = iter(loader)  # start the workers before the model is loaded: they never hold its weights
    mark = time.perf_counter()
    model.load(device, dtype)
    if timings is not None:
        timings.load = time.perf_counter() - mark
    step = _BatchStep(model, _Forward(model, device, dtype), _Writer(store),
                      device if timings is not None and device.type == "cuda" else None)
    step.writer.start()
    try:
        _run_batches(batches, step, len(hashes), model.name, show_progress, timings)
    finally:
        mark = time.perf_counter()
        step.writer.finish()
        model.unload()
        del batches, loader
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
        if timings is not None:
            timings.finish = time.perf_counter() - mark
    failures = step.failures + step.writer.failures
    repaired_shas = {h.decode("ascii") for h in hashes[damaged]}
    counts.update(computed=len(step.writer.stored), repaired=len(repaired_shas & step.writer.stored),
                  failed=len(failures), oom_retries=step.forward.retries)
    return failures, counts


def _loader(model: BatchModel, paths: StringColumn, hashes: np.ndarray, resize_shorter: int | None,
            num_workers: int | None, device: torch.device) -> DataLoader:
    """The batches still to compute, decoded by worker processes (none for a few items: start-up costs more)."""
    workers = default_workers(num_workers) if len(hashes) >= MIN_ITEMS_FOR_WORKERS else 0
    return DataLoader(_Pending(model, paths, hashes, resize_shorter), batch_size=max(1, int(model.batch_size)),
                      shuffle=False, num_workers=workers, collate_fn=_Collate(model),
                      pin_memory=device.type == "cuda", worker_init_fn=_worker_init if workers else None,
                      persistent_workers=False, prefetch_factor=4 if workers else None)


def _run_batches(batches: Iterator[Any], step: _BatchStep, total: int, desc: str, show_progress: bool,
                 timings: RunTimings | None) -> None:
    """The main loop: every batch through `step`, a progress bar, and each batch's timing when asked."""
    bar = progress_bar(total=total, desc=desc, unit="img", disable=not show_progress)
    mark = time.perf_counter()
    for keys, batch, bad in batches:
        got = time.perf_counter()
        ran, post, submit = step(keys, batch, bad, got)
        bar.update(len(keys) + len(bad))
        if timings is not None:
            timing = BatchTiming(len(keys) + len(bad), got - mark, ran - got, post, submit)
            timings.batches.append(timing)
            if timings.on_batch is not None:
                timings.on_batch(timing)
        mark = time.perf_counter()
    bar.close()


class _BatchStep:
    """One batch through the model: forward, postprocess each piece, hand the items to the writer.

    A failure is recorded per item (from the loader: stage `transform` or `preprocess`; here `forward` or
    `postprocess`) and the run goes on; running out of memory is raised (`_Forward` retried smaller pieces
    already). `sync_device`: a CUDA device to synchronise after the forward pass, so that its timing is the
    computation's."""

    def __init__(self, model: BatchModel, forward: _Forward, writer: _Writer, sync_device: torch.device | None):
        self.model, self.forward, self.writer, self.sync_device = model, forward, writer, sync_device
        self.failures: list[dict[str, str]] = []

    def fail(self, sha: str, path: str, reason: str, stage: str) -> None:
        self.writer.writer.fail(sha, reason, stage)
        self.failures.append({"path": path, "reason": reason, "stage": stage})

    def __call__(self, keys: list[tuple[str, str]], batch: Any, bad: list[_Failure], got: float
                 ) -> tuple[float, float, float]:
        """(when the forward pass ended, seconds in postprocess, seconds handing items to the writer)."""
        for f in bad:
            self.fail(f.sha1, f.path, f.reason, f.stage)
        if not keys:
            return got, 0.0, 0.0
        pieces = self._forward(keys, batch)
        ran = time.perf_counter()
        post, submit = self._postprocess_and_submit(keys, pieces)
        return ran, post, submit

    def _forward(self, keys: list[tuple[str, str]], batch: Any) -> list[tuple[Any, Any]]:
        try:
            pieces = self.forward(batch)
            if self.sync_device is not None:
                torch.cuda.synchronize(self.sync_device)
            return pieces
        except Exception as err:
            if is_out_of_memory(err):
                raise
            for sha, path in keys:
                self.fail(sha, path, f"{type(err).__name__}: {err}", "forward")
            return []

    def _postprocess_and_submit(self, keys: list[tuple[str, str]], pieces: list[tuple[Any, Any]]
                                ) -> tuple[float, float]:
        clock = time.perf_counter
        post = submit = 0.0
        done = 0
        for out, piece in pieces:
            n = batch_len(piece)
            these = keys[done:done + n]
            done += n
            start_post = clock()
            try:
                items = self.model.postprocess(out, piece)
                if len(items) != n:
                    raise ValueError(f"postprocess returned {len(items)} items for a batch of {n}")
            except Exception as err:  # noqa: BLE001  (listed per item, the run goes on)
                for sha, path in these:
                    self.fail(sha, path, f"{type(err).__name__}: {err}", "postprocess")
                post += clock() - start_post
                continue
            start_submit = clock()
            post += start_submit - start_post
            self.writer.submit(list(zip(these, items)))
            submit += clock() - start_submit
        return post, submit
