"""Vectorised zoo training vs a Python loop of single models (same seeds, same recipe, same results).

    .venv/bin/python benchmarks/bench_zoo.py [--device cpu|cuda] [--sizes 100 1000] [--loop-models 10]
                                             [--arch mlp|cnn] [--epochs 2]

Task: MNIST-1D (5,000 train signals of length 40). Each model runs `--epochs` epochs of the zoo
recipe (AdamW, warmup + cosine, batch 128). The loop reference (`train_single`: one nn.Module and
one torch.optim.AdamW per model, the ordinary way) is measured on `--loop-models` models and
extrapolated linearly to each zoo size (its cost per model does not depend on the zoo size);
the vectorised path (`train_vectorised`: one vmapped functional model) is measured for real.
Every number is printed with the 1-minute load average beside it.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from measure import sync  # noqa: E402  (benchmarks/measure.py)

from memorization.zoo.tasks import get_task  # noqa: E402
from memorization.zoo.training import ZooRecipe, train_single, train_vectorised  # noqa: E402

ARCHS = {"mlp": {"name": "mlp", "hidden": [32]}, "cnn": {"name": "hyperrep_cnn"}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--loop-models", type=int, default=10)
    parser.add_argument("--arch", choices=sorted(ARCHS), default="mlp")
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    device = torch.device(args.device)
    task = get_task("mnist1d", num_samples=10000)
    recipe = ZooRecipe(epochs=args.epochs, batch_size=128, lr=3e-3)
    arch = ARCHS[args.arch]
    steps = recipe.steps_per_epoch(len(task.y_train)) * recipe.epochs
    print(f"device {device}, torch threads {torch.get_num_threads()}, arch {arch}, {steps} steps per model")
    train_vectorised(task, arch, [0, 1], ZooRecipe(epochs=1, batch_size=128), device, progress=False)  # warm-up
    train_single(task, arch, 0, ZooRecipe(epochs=1, batch_size=128), device)
    sync(device)
    start = time.perf_counter()
    for seed in range(args.loop_models):
        train_single(task, arch, seed, recipe, device)
    sync(device)
    per_model = (time.perf_counter() - start) / args.loop_models
    print(f"loop of single models: {per_model * 1e3:.1f} ms/model (measured on {args.loop_models}), "
          f"load {os.getloadavg()[0]:.2f}")
    rows = []
    for n in args.sizes:
        sync(device)
        start = time.perf_counter()
        train_vectorised(task, arch, list(range(n)), recipe, device, progress=False)
        sync(device)
        vec = time.perf_counter() - start
        loop = per_model * n
        rows.append((n, vec, loop))
        print(f"{n:5d} models: vectorised {vec:7.2f} s, loop {loop:7.2f} s (extrapolated), speed-up {loop / vec:5.1f}x, "
              f"load {os.getloadavg()[0]:.2f}", flush=True)
    print("\n| models | vectorised (s) | loop, extrapolated (s) | speed-up |\n|---|---|---|---|")
    for n, vec, loop in rows:
        print(f"| {n} | {vec:.2f} | {loop:.1f} | {loop / vec:.1f}x |")


if __name__ == "__main__":
    main()
