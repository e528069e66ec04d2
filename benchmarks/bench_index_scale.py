"""Start-up time and peak memory of the file index for a folder of 1M files.

    python benchmarks/bench_index_scale.py [--files 1000000] [--per-dir 1000] [--index-module FILE]

Generates empty ``.jpg`` files (listing cost only: nothing is decoded; every file is a zero-byte
"broken" image, so the first build reads each file once) in a temporary folder, deletes it after, and
measures, each in a fresh process (peak RSS above the process's size after imports, wall time):

* ``naive``: ``os.walk`` + a sorted Python list of ``(Path, size, mtime)`` (the straightforward way);
* ``list``: :func:`bias.data.index.list_image_files`;
* ``first build``: :func:`bias.data.index.build_index` with no stored index (lists, checks, writes parquet);
* ``reuse``: the same call again (lists, matches the stored index, checks nothing): the start-up cost
  of every later run;
* ``split``: what a run does next with the index, on two datasets made of the two halves of it (every
  file marked usable, with a distinct synthetic digest; set up before timing): the seeded split
  (`make_split`, every usable file not in val goes to train), the exact-duplicate report, the
  manifest table and the two `ImageDataset`s. Besides the peak, it reports the memory the split still
  holds afterwards ("kept").

``--index-module FILE`` loads another version of ``bias/data/index.py`` (e.g. ``git show HEAD:bias/data/index.py``)
to compare before/after; ``--repo DIR`` imports all of ``bias`` from another checkout (e.g. a
``git worktree`` of an older commit) for the ``split`` step.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from measure import peak_mb, reset_peak, rss_mb, run_step  # benchmarks/measure.py


def load_index_module(path: str | None):
    if not path:
        import bias.data.index

        return bias.data.index
    spec = importlib.util.spec_from_file_location("index_under_test", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def generate(root: Path, n: int, per_dir: int) -> float:
    start = time.perf_counter()
    for d in range((n + per_dir - 1) // per_dir):
        folder = root / f"d{d:05d}"
        folder.mkdir(parents=True)
        base = str(folder)
        for i in range(min(per_dir, n - d * per_dir)):
            os.close(os.open(f"{base}/img_{d:05d}_{i:05d}.jpg", os.O_CREAT | os.O_WRONLY, 0o644))
    return time.perf_counter() - start


def split_step(root: str, cache: str) -> dict:
    """Time make_split + duplicate_report + manifest + datasets on the stored index (either API)."""
    import dataclasses
    import hashlib

    import numpy as np

    from bias.data.index import build_index
    from bias.data.split import duplicate_report, make_split
    from classifiers.data import ImageDataset

    ix = build_index(root, cache, num_workers=1)
    n = len(ix)
    digests = [hashlib.sha1(str(i).encode()).hexdigest() for i in range(n)]
    packed = ix.sha1.dtype != object  # this checkout keeps digests as S40, not str objects
    sha1 = np.array(digests, dtype="S40") if packed else np.array(digests, dtype=object)
    del digests
    ix = dataclasses.replace(ix, ok=np.ones(n, dtype=bool), sha1=sha1)
    half = n // 2
    cut = {"a": slice(0, half), "b": slice(half, n)}
    indexes = {k: dataclasses.replace(ix, paths=ix.paths[c], ok=ix.ok[c], reason=ix.reason[c], sha1=ix.sha1[c],
                                      size=ix.size[c], mtime_ns=ix.mtime_ns[c]) for k, c in cut.items()}
    del ix
    reset_peak()  # the set-up above (digest strings) must not count
    base = rss_mb()
    start = time.perf_counter()
    split = make_split(indexes, None, 10_000, seed=0)
    dupes = duplicate_report(split)
    manifest = split.manifest()
    datasets = [ImageDataset(split.train_read, split.train_labels, None, None, 0, 1, 32,
                             report_paths=split.train_paths),
                ImageDataset(split.val_read, split.val_labels, None, None, 0, 2, 32, report_paths=split.val_paths)]
    elapsed = time.perf_counter() - start
    del manifest
    kept = rss_mb() - base
    assert dupes["train_val"] == 0 and len(datasets[0]) + len(datasets[1]) == n
    import bias

    return {"mode": "split", "bias": str(Path(bias.__file__).parent), "files": n, "seconds": round(elapsed, 2), "peak_mb": round(peak_mb() - base, 1),
            "kept_mb": round(kept, 1), "load": round(os.getloadavg()[0], 2)}


def child(mode: str, root: str, cache: str, module: str | None) -> dict:
    if mode == "split":
        return split_step(root, cache)
    index = load_index_module(module)
    base = rss_mb()
    start = time.perf_counter()
    if mode == "naive":
        found = []
        for dirpath, _dirs, files in os.walk(root):
            for f in files:
                p = Path(dirpath) / f
                st = p.stat()
                found.append((p, st.st_size, st.st_mtime_ns))
        found.sort()
        n = len(found)
    elif mode == "list":
        listing = index.list_image_files(Path(root))
        n = len(listing)
    else:  # "build": first or reuse, depending on whether the store exists
        ix = index.build_index(root, cache, num_workers=1)
        n = len(ix)
    if mode != "naive":
        import pyarrow as pa

        pa.default_memory_pool().release_unused()  # count live memory, not the allocator's cache
    elapsed = time.perf_counter() - start
    kept = rss_mb() - base  # what the result (the index, or the listing) still holds
    return {"mode": mode, "files": n, "seconds": round(elapsed, 2), "peak_mb": round(peak_mb() - base, 1),
            "kept_mb": round(kept, 1), "load": round(os.getloadavg()[0], 2)}


def run_child(mode: str, root: Path, cache: Path, module: str | None, repo: str | None = None) -> dict:
    args = ["--child", mode, "--root", str(root), "--cache", str(cache)]
    args += ["--index-module", module] if module else []
    return run_step(__file__, args + (["--repo", repo] if repo else []))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=1_000_000)
    ap.add_argument("--per-dir", type=int, default=1000)
    ap.add_argument("--index-module", default=None, help="another bias/data/index.py to measure")
    ap.add_argument("--tmp", default=None, help="where to generate the files (default: the system temp dir)")
    ap.add_argument("--repo", default=None, help="import bias from this checkout (the split step)")
    ap.add_argument("--steps", default="naive,list,first,reuse,split", help="comma-separated subset")
    ap.add_argument("--child", default=None)
    ap.add_argument("--root")
    ap.add_argument("--cache")
    args = ap.parse_args()
    if args.child:
        if args.repo:
            sys.path.insert(0, str(Path(args.repo).resolve()))
        print(json.dumps(child(args.child, args.root, args.cache, args.index_module)))
        return
    tmp = Path(tempfile.mkdtemp(prefix="bench_index_", dir=args.tmp))
    try:
        gen = generate(tmp / "data", args.files, args.per_dir)
        print(f"generated {args.files} empty files in {gen:.1f} s (load {os.getloadavg()[0]:.2f})")
        print(f"index module: {args.index_module or 'bias/data/index.py (working tree)'}; bias for the split step: "
              f"{args.repo or 'working tree'}")
        print("| step | files | seconds | peak RSS above start (MiB) | kept (MiB) | load |\n|---|---|---|---|---|---|")
        cache = tmp / "cache"
        steps = args.steps.split(",")
        for label, step, mode in (("naive os.walk + list of Path", "naive", "naive"), ("list_image_files", "list", "list"),
                                  ("build_index, first (checks every file)", "first", "build"),
                                  ("build_index, reuse", "reuse", "build"),
                                  ("split + duplicate report + manifest + datasets", "split", "split")):
            if step not in steps and not (step == "first" and "split" in steps):  # split needs the stored index
                continue
            r = run_child(mode, tmp / "data", cache, args.index_module, args.repo if mode == "split" else None)
            where = f" ({r['bias']})" if "bias" in r else ""
            print(f"| {label}{where} | {r['files']} | {r['seconds']} | {r['peak_mb']} | {r.get('kept_mb', '')} | "
                  f"{r['load']} |", flush=True)
            if mode == "split" and args.repo:  # the same step on this working tree, for comparison
                r = run_child(mode, tmp / "data", cache, args.index_module)
                print(f"| {label} (working tree) | {r['files']} | {r['seconds']} | {r['peak_mb']} | "
                      f"{r.get('kept_mb', '')} | {r['load']} |", flush=True)
        store = next((cache / "index").glob("*.parquet"))
        print(f"stored index: {store.stat().st_size / 2**20:.1f} MiB")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
