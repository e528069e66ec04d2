"""All-pairs error-mask IoU at scale: 10,000 x 10,000 models over 10,000 test samples.

    .venv/bin/python benchmarks/bench_metrics.py [--device cpu|cuda] [--n 10000] [--tests 10000]
                                                 [--loop-pairs 2000]

Masks are random with a 30% error rate. Measured:
  * `error_iou` (whole n x n float32 matrix, chunked matmul) and `max_similarity` (self excluded,
    reduced per chunk: never holds the whole matrix): time and memory (peak RSS growth on CPU,
    peak allocated on GPU);
  * the straightforward reference, a Python loop over pairs with numpy
    ``(a & b).sum() / ((a | b).sum() + 1e-8)``, timed on `--loop-pairs` pairs and extrapolated to
    n x n pairs; its values are checked against `error_iou` on those pairs.
Load average printed beside every number.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from measure import sync  # noqa: E402  (benchmarks/measure.py)

from memorization.metrics import error_iou, max_similarity  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--n", type=int, default=10000)
    parser.add_argument("--tests", type=int, default=10000)
    parser.add_argument("--loop-pairs", type=int, default=2000)
    args = parser.parse_args()
    device = torch.device(args.device)
    g = torch.Generator().manual_seed(0)
    masks = torch.rand(args.n, args.tests, generator=g) < 0.3
    proc = psutil.Process()
    print(f"device {device}, torch threads {torch.get_num_threads()}, {args.n} x {args.n} models, {args.tests} tests")
    error_iou(masks[:64], masks[:64], device=device)  # warm-up
    results = {}
    for name, fn in [("error_iou (full matrix)", lambda: error_iou(masks, device=device)),
                     ("max_similarity (self excluded)", lambda: max_similarity(masks, masks, exclude_self=True,
                                                                               device=device))]:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        rss0 = proc.memory_info().rss
        sync(device)
        start = time.perf_counter()
        out = fn()
        sync(device)
        elapsed = time.perf_counter() - start
        mem = (torch.cuda.max_memory_allocated() if device.type == "cuda" else proc.memory_info().rss - rss0) / 2**20
        results[name] = out
        print(f"{name}: {elapsed:.2f} s, {'peak GPU allocated' if device.type == 'cuda' else 'RSS growth'} "
              f"{mem:.0f} MiB, load {os.getloadavg()[0]:.2f}", flush=True)
    full = results["error_iou (full matrix)"]
    v, i = results["max_similarity (self excluded)"]
    masked = full.clone().fill_diagonal_(-1.0)
    assert torch.equal(masked.max(1).values, v), "max_similarity disagrees with the full matrix"

    a = masks.numpy()
    rng = np.random.default_rng(1)
    pairs = rng.integers(0, args.n, size=(args.loop_pairs, 2))
    start = time.perf_counter()
    ref = [(a[p] & a[q]).sum() / ((a[p] | a[q]).sum() + 1e-8) for p, q in pairs]
    per_pair = (time.perf_counter() - start) / args.loop_pairs
    np.testing.assert_allclose(full[pairs[:, 0], pairs[:, 1]].numpy(), np.asarray(ref), atol=1e-6)
    loop_total = per_pair * args.n * args.n
    print(f"numpy loop over pairs: {per_pair * 1e6:.1f} us/pair (measured on {args.loop_pairs} pairs) -> "
          f"{loop_total:.0f} s ({loop_total / 3600:.1f} h) extrapolated for {args.n}x{args.n}, "
          f"load {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
