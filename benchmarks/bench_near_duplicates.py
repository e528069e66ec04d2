"""Near-duplicate search over millions of perceptual hashes: multi-index search vs all pairs.

    python benchmarks/bench_near_duplicates.py [--n 3000000] [--max-hamming 4]

Random 64-bit hashes (the 3.03M images of the published YCD split) plus 1,000 planted near copies;
:func:`bias.data.dedup.near_duplicate_pairs` against the straightforward all-pairs Hamming check
(vectorised numpy, measured on a subset and extrapolated quadratically). Hashing the images
themselves is a decode per image and is not measured here.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
from measure import peak_mb, rss_mb  # benchmarks/measure.py

from bias.data.dedup import choose_bands, hamming, near_duplicate_pairs


def all_pairs(hashes: np.ndarray, r: int) -> int:
    found = 0
    for i in range(len(hashes) - 1):
        found += int((hamming(hashes[i], hashes[i + 1:]) <= r).sum())
    return found


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=3_030_000)
    ap.add_argument("--max-hamming", type=int, default=4)
    ap.add_argument("--naive-n", type=int, default=20_000)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    hashes = rng.integers(0, 2**63, args.n, dtype=np.int64).astype(np.uint64) << np.uint64(1)
    src = rng.integers(0, args.n, 1000)
    for k, s in enumerate(src):  # copies at distance 0..max_hamming
        flips = rng.choice(63, size=k % (args.max_hamming + 1), replace=False) + 1
        hashes[(s + 1 + k) % args.n] = hashes[s] ^ np.uint64(sum(1 << int(b) for b in flips))
    base = rss_mb()
    start = time.perf_counter()
    pairs = sum(len(i) for i, _, _ in near_duplicate_pairs(hashes, args.max_hamming))
    ours = time.perf_counter() - start
    print("| step | hashes | seconds | pairs found | peak RSS above start (MiB) | load |\n|---|---|---|---|---|---|")
    print(f"| multi-index search ({choose_bands(args.n, args.max_hamming)} bands), r={args.max_hamming} | {args.n:,} | "
          f"{ours:.1f} | {pairs} | {peak_mb() - base:.0f} | {os.getloadavg()[0]:.2f} |", flush=True)
    sub = hashes[: args.naive_n]
    start = time.perf_counter()
    naive_pairs = all_pairs(sub, args.max_hamming)
    naive = time.perf_counter() - start
    assert naive_pairs == sum(len(i) for i, _, _ in near_duplicate_pairs(sub, args.max_hamming))
    print(f"| all pairs (numpy per row), {args.naive_n:,} hashes | {args.naive_n:,} | {naive:.1f} | {naive_pairs} | - | "
          f"{os.getloadavg()[0]:.2f} |")
    print(f"| all pairs extrapolated to {args.n:,} | {args.n:,} | {naive * (args.n / args.naive_n) ** 2:,.0f} | - | - | - |")


if __name__ == "__main__":
    main()
