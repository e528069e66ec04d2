"""Memory of a dataset's sample paths: numpy object array vs `bias.core.strings.StringColumn`.

    .venv/bin/python benchmarks/bench_strings.py [--n 3000000]

For N img2dataset-like paths, prints the parent's memory for each layout and, the point of the
exercise, how much memory a forked DataLoader-like worker copies (its private dirty pages, from
/proc/self/smaps_rollup) after reading every path once: reading a Python object writes its
reference count, so the worker copies every page that holds one. Linux only.
"""

from __future__ import annotations

import argparse
import gc
import os

import numpy as np
from measure import rss_mb  # benchmarks/measure.py (this folder is on sys.path)

from bias.core.strings import StringColumn


def private_dirty_mib() -> float:
    with open("/proc/self/smaps_rollup") as f:
        for line in f:
            if line.startswith("Private_Dirty:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no Private_Dirty in /proc/self/smaps_rollup")


def worker_copies(paths) -> float:
    """Fork, read every path once (as a loader worker does over an epoch), report the copied MiB."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        before = private_dirty_mib()
        total = 0
        for i in range(len(paths)):
            total += len(paths[i])
        os.write(w, f"{private_dirty_mib() - before:.1f}".encode())
        os._exit(0)
    os.close(w)
    copied = float(os.read(r, 64).decode())
    os.waitpid(pid, 0)
    return copied


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=3_000_000)
    n = parser.parse_args().n
    print(f"{n:,} paths like /data/cc/shard01234/000123456.jpg; load {os.getloadavg()[0]:.1f}\n")
    print("| layout | parent memory (MiB) | copied by a forked worker reading every path (MiB) |")
    print("|---|---|---|")
    for name in ("numpy object array", "StringColumn"):
        gc.collect()
        base = rss_mb()
        strings = (f"/data/cc/shard{i // 10_000:05d}/{i:09d}.jpg" for i in range(n))
        if name == "StringColumn":
            paths = StringColumn(strings)
        else:
            paths = np.empty(n, dtype=object)
            paths[:] = list(strings)
        gc.collect()
        held = rss_mb() - base
        print(f"| {name} | {held:,.0f} | {worker_copies(paths):,.0f} |", flush=True)
        del paths


if __name__ == "__main__":
    main()
