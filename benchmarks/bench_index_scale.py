"""Start-up time and peak memory of the file index for a folder of 1M files.

    python benchmarks/bench_index_scale.py [--files 1000000] [--per-dir 1000] [--index-module FILE]

Generates empty ``.jpg`` files (listing cost only: nothing is decoded; every file is a zero-byte
"broken" image, so the first build reads each file once) in a temporary folder, deletes it after, and
measures, each in a fresh process (peak RSS above the process's size after imports, wall time):

* ``naive``: ``os.walk`` + a sorted Python list of ``(Path, size, mtime)`` (the straightforward way);
* ``list``: :func:`bias.index.list_image_files`;
* ``first build``: :func:`bias.index.build_index` with no stored index (lists, checks, writes parquet);
* ``reuse``: the same call again (lists, matches the stored index, checks nothing): the start-up cost
  of every later run.

``--index-module FILE`` loads another version of ``bias/index.py`` (e.g. ``git show HEAD:bias/index.py``)
to compare before/after.
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

from measure import peak_mb, rss_mb, run_step  # benchmarks/measure.py


def load_index_module(path: str | None):
    if not path:
        import bias.index

        return bias.index
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


def child(mode: str, root: str, cache: str, module: str | None) -> dict:
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
        n = len(index.list_image_files(Path(root)))
    else:  # "build": first or reuse, depending on whether the store exists
        ix = index.build_index(root, cache, num_workers=1)
        n = len(ix)
    elapsed = time.perf_counter() - start
    return {"mode": mode, "files": n, "seconds": round(elapsed, 2), "peak_mb": round(peak_mb() - base, 1),
            "load": round(os.getloadavg()[0], 2)}


def run_child(mode: str, root: Path, cache: Path, module: str | None) -> dict:
    args = ["--child", mode, "--root", str(root), "--cache", str(cache)]
    return run_step(__file__, args + (["--index-module", module] if module else []))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=1_000_000)
    ap.add_argument("--per-dir", type=int, default=1000)
    ap.add_argument("--index-module", default=None, help="another bias/index.py to measure")
    ap.add_argument("--tmp", default=None, help="where to generate the files (default: the system temp dir)")
    ap.add_argument("--child", default=None)
    ap.add_argument("--root")
    ap.add_argument("--cache")
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.root, args.cache, args.index_module)))
        return
    tmp = Path(tempfile.mkdtemp(prefix="bench_index_", dir=args.tmp))
    try:
        gen = generate(tmp / "data", args.files, args.per_dir)
        print(f"generated {args.files} empty files in {gen:.1f} s (load {os.getloadavg()[0]:.2f})")
        print(f"index module: {args.index_module or 'bias/index.py (working tree)'}")
        print("| step | files | seconds | peak RSS above start (MiB) | load |\n|---|---|---|---|---|")
        cache = tmp / "cache"
        for label, mode in (("naive os.walk + list of Path", "naive"), ("list_image_files", "list"),
                            ("build_index, first (checks every file)", "build"), ("build_index, reuse", "build")):
            r = run_child(mode, tmp / "data", cache, args.index_module)
            print(f"| {label} | {r['files']} | {r['seconds']} | {r['peak_mb']} | {r['load']} |", flush=True)
        store = next((cache / "index").glob("*.parquet"))
        print(f"stored index: {store.stat().st_size / 2**20:.1f} MiB")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
