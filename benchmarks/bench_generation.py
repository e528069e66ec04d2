"""DiT training steps/s (uncon_gen): the real training step (`bias.generation.train.training_step`) with random weights.

    .venv/bin/python benchmarks/bench_generation.py [--device cpu|cuda] [--sizes tiny dit-b2] [--steps 3]
                                                    [--batch 4] [--precision no|bf16|fp16]

`tiny`: the test suite's DiT (1 layer, 2 heads x 8, patch 4) on 4 x 16 x 16 latents (32 px images through a
2-block VAE). `dit-b2`: DiT-B/2 as published (12 layers, 12 heads x 64, patch 2, learned sigma) on
4 x 32 x 32 latents (256 px through sd-vae-ft-ema's KL-f8). The latents are random posteriors held in
memory (the VAE encoding is done once before training and is not part of a step); a step is the
forward, the hybrid loss, the backward, AdamW and the EMA update, with the batch drawn as in training.
The first step is a warm-up and is reported apart. Every number is printed with the 1-minute load average.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from measure import sync  # noqa: E402  (benchmarks/measure.py)

from bias.generation.diffusion import Diffusion, build_dit, make_scheduler  # noqa: E402
from bias.generation.options import TrainOptions  # noqa: E402
from bias.generation.train import training_step  # noqa: E402

SIZES = {
    "tiny": ({"num_layers": 1, "num_attention_heads": 2, "attention_head_dim": 8, "patch_size": 4}, (4, 16, 16)),
    "dit-b2": ({"num_layers": 12, "num_attention_heads": 12, "attention_head_dim": 64, "patch_size": 2}, (4, 32, 32)),
}


class RandomPosteriors:
    """`LatentSet`'s interface over random posteriors in memory."""

    def __init__(self, n: int, shape: tuple[int, ...]) -> None:
        g = torch.Generator().manual_seed(0)
        self.mean = torch.randn(n, *shape, generator=g)
        self.std = torch.full((n, *shape), 0.05)

    def __len__(self) -> int:
        return len(self.mean)

    def posterior(self, positions, flipped=None):
        idx = torch.as_tensor(np.asarray(positions))
        mean = self.mean[idx].clone()
        if flipped is not None and flipped.any():
            sel = torch.as_tensor(np.flatnonzero(flipped))
            mean[sel] = mean[sel].flip(-1)
        return mean, self.std[idx]


def measure(size: str, steps: int, batch: int, precision: str, device: str) -> dict:
    from accelerate import Accelerator

    arch, shape = SIZES[size]
    accelerator = Accelerator(cpu=device == "cpu", mixed_precision=precision)
    torch.manual_seed(0)
    model = build_dit(arch, shape[0], shape[1], learn_sigma=True)
    params = sum(p.numel() for p in model.parameters())
    ema = build_dit(arch, shape[0], shape[1], learn_sigma=True).requires_grad_(False)
    ema.load_state_dict(model.state_dict())
    options = TrainOptions(batch_size=batch, precision=precision)
    optimizer = torch.optim.AdamW(model.parameters(), lr=options.lr, weight_decay=0.0)
    model, optimizer = accelerator.prepare(model, optimizer)
    ema.to(accelerator.device)
    latents = RandomPosteriors(max(64, batch), shape)
    diffusion = Diffusion(make_scheduler(), learn_sigma=True)
    times = []
    for step in range(steps + 1):
        start = time.perf_counter()
        loss = training_step(model, ema, optimizer, latents, diffusion, options, accelerator, 0, step, 0.18215)
        loss.item()
        sync(accelerator.device)
        times.append(time.perf_counter() - start)
    timed = times[1:]
    return {"size": size, "params_M": round(params / 1e6, 2), "batch": batch, "steps": steps,
            "warmup_s": round(times[0], 3), "s_per_step": round(float(np.mean(timed)), 3),
            "steps_per_s": round(1 / float(np.mean(timed)), 3), "images_per_s": round(batch / float(np.mean(timed)), 2),
            "load1": round(os.getloadavg()[0], 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sizes", nargs="+", choices=sorted(SIZES), default=["tiny", "dit-b2"])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--precision", default="no")
    args = parser.parse_args()
    print(f"device {args.device}, torch threads {torch.get_num_threads()}, OMP_NUM_THREADS "
          f"{os.environ.get('OMP_NUM_THREADS')}, precision {args.precision}")
    for size in args.sizes:
        steps = args.steps * (20 if size == "tiny" else 1)
        print(measure(size, steps, args.batch, args.precision, args.device), flush=True)


if __name__ == "__main__":
    main()
