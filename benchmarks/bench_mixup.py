"""Mixup + CutMix per training batch: timm's Mixup (classifiers.mixup now) against the hand-written per-sample loop
it replaced (read from git history, commit 4f9a0e2), with the paper recipe's mixup settings.

    python benchmarks/bench_mixup.py [--reps 20] [--old-commit 4f9a0e2]
"""

from __future__ import annotations

import argparse
import subprocess
import time
import types
from pathlib import Path

import numpy as np
import torch

from classifiers.mixup import MixupCutmix

ROOT = Path(__file__).resolve().parent.parent
PAPER = {"mixup_alpha": 0.8, "cutmix_alpha": 1.0, "prob": 1.0, "switch_prob": 0.5, "label_smoothing": 0.1}


def old_module(commit: str) -> types.ModuleType:
    source = subprocess.run(["git", "show", f"{commit}:classifiers/mixup.py"], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout
    module = types.ModuleType("old_mixup")
    exec(compile(source, "old_mixup", "exec"), module.__dict__)  # noqa: S102  (our own earlier code)
    return module


def per_batch_ms(fn, reps: int) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(reps):
        fn()
    return 1000 * (time.perf_counter() - start) / reps


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--old-commit", default="4f9a0e2")
    args = parser.parse_args()
    torch.set_num_threads(1)
    old = old_module(args.old_commit).MixupCutmix(3, **PAPER)
    new = MixupCutmix(3, **PAPER)
    for n, size in ((64, 56), (128, 56), (32, 224)):
        x, y = torch.randn(n, 3, size, size), torch.randint(0, 3, (n,))
        t_old = per_batch_ms(lambda x=x, y=y: old(x, y, np.random.default_rng([0, 7, 1, 0])), args.reps)
        t_new = per_batch_ms(lambda x=x, y=y: new(x.clone(), y, (0, 7, 1, 0)), args.reps)
        print(f"batch {n} x 3 x {size} x {size}: hand-written {t_old:.1f} ms, timm {t_new:.1f} ms "
              f"(timm / hand-written {t_new / t_old:.2f})")


if __name__ == "__main__":
    main()
