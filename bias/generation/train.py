"""The DiT's training loop with accelerate: 1 CPU process, 1 GPU or many, checkpointed and resumable.

Every step draws its global batch from seeded per-epoch permutations of the latents (`batch_indices`) and
its randomness (flips, the posterior sample, timesteps, noise) from a CPU generator seeded by (seed, step,
process), so a run that is killed and rerun from its last checkpoint continues with the same batches and
noise, and ends with the same loss curve and weights as one that never stopped (with the same number of processes: each draws its own
noise). Each process takes an even share of the global batch; accelerate averages the gradients (DDP).

AdamW at a constant learning rate, no warm-up or clipping, an EMA of the weights updated after every step
(started as a copy of the initial weights), as DiT trains. The checkpoint (main process, atomically, every
`checkpoint_every` steps and at the last) holds the weights, the EMA, the optimizer state, the step and the
loss of every step.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from bias.core.io import save_torch_atomic
from bias.core.progress import progress_bar
from bias.core.seeding import item_seed
from bias.generation.diffusion import Diffusion, predict
from bias.generation.latents import LatentSet
from bias.generation.options import TrainOptions

logger = logging.getLogger(__name__)
CHECKPOINT = "checkpoint.pt"
SEED_SALT_STEP = 31

#: called on every process after each checkpoint is written, with the step it holds
StepCallback = Callable[[int], None]


@dataclass
class TrainOutcome:
    losses: list[float]         # the global mean loss of every step, from step 1
    resumed_from_step: int
    steps: int
    wall_time_s: float          # of this call (the part after a resume only)
    steps_per_s: float          # of the steps this call ran, their own time (checkpoints and grids left out)


def batch_indices(n: int, batch: int, step: int, seed: int) -> np.ndarray:
    """The global batch of `step`: the next `batch` positions of the epoch permutations (seed, epoch) of range(n)."""
    start, out = step * batch, []
    while batch > 0:
        epoch, offset = divmod(start, n)
        take = min(batch, n - offset)
        out.append(np.random.default_rng([seed, epoch]).permutation(n)[offset:offset + take])
        start, batch = start + take, batch - take
    return np.concatenate(out)


@torch.no_grad()
def update_ema(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    for e, p in zip(ema.parameters(), model.parameters()):
        e.mul_(decay).add_(p.detach().to(e.dtype), alpha=1 - decay)


def training_step(model: torch.nn.Module, ema: torch.nn.Module, optimizer: torch.optim.Optimizer, latents: LatentSet,
                  diffusion: Diffusion, options: TrainOptions, accelerator, seed: int, step: int,
                  scaling_factor: float) -> torch.Tensor:
    """One optimizer step on this process's share of the global batch of `step`, then the EMA; its loss (on device)."""
    world, rank = accelerator.num_processes, accelerator.process_index
    local = options.batch_size // world
    idx = batch_indices(len(latents), options.batch_size, step, seed)[rank * local:(rank + 1) * local]
    gen = torch.Generator().manual_seed(item_seed(seed, SEED_SALT_STEP, step, rank))
    flipped = (torch.rand(local, generator=gen) < 0.5).numpy() if options.flip else None
    mean, std = latents.posterior(idx, flipped)
    x0 = (mean + std * torch.randn(mean.shape, generator=gen)) * scaling_factor
    t = torch.randint(0, diffusion.num_timesteps, (local,), generator=gen)
    noise = torch.randn(x0.shape, generator=gen)
    device = accelerator.device
    x0, t, noise = x0.to(device), t.to(device), noise.to(device)
    x_t = diffusion.q_sample(x0, t, noise)
    with accelerator.autocast():
        out = predict(model, x_t, t)
    loss = diffusion.loss(out.float(), x0, x_t, t, noise).mean()
    accelerator.backward(loss)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    update_ema(ema, accelerator.unwrap_model(model), options.ema_decay)
    return loss.detach()


def train_dit(model: torch.nn.Module, latents: LatentSet, diffusion: Diffusion, options: TrainOptions, accelerator,
              folder: Path, seed: int, scaling_factor: float, callbacks: Sequence[StepCallback] = (),
              on_grid: Callable[[int, torch.nn.Module], None] | None = None,
              log_prefix: str = "") -> tuple[TrainOutcome, torch.nn.Module]:
    """Train `model` on `latents` for `options.steps` steps (resuming from `folder/checkpoints`); (outcome, EMA).

    `on_grid(step, ema)` runs on the main process every `options.grid_every` steps before the last (the caller
    draws the last grid); `callbacks` run on every process after each checkpoint.
    """
    if options.batch_size % accelerator.num_processes:
        raise ValueError(f"train.batch_size {options.batch_size} is not a multiple of the "
                         f"{accelerator.num_processes} processes")
    ckpt = folder / "checkpoints" / CHECKPOINT
    ema = copy.deepcopy(model).requires_grad_(False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=options.lr, weight_decay=options.weight_decay)
    step, losses = 0, []
    if ckpt.exists():
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        step, losses = int(state["step"]), list(state["losses"])
        if accelerator.is_local_main_process:
            logger.info("%sresuming from %s at step %d", log_prefix, ckpt, step)
    resumed_from = step
    model, optimizer = accelerator.prepare(model, optimizer)
    ema.to(accelerator.device)
    pending: list[torch.Tensor] = []
    start = time.time()

    def flush() -> None:
        if pending:
            window = accelerator.reduce(torch.stack(pending), reduction="mean").cpu().tolist()
            losses.extend(float(v) for v in window)
            pending.clear()

    def checkpoint() -> None:
        flush()
        if accelerator.is_main_process:
            save_torch_atomic({"model": accelerator.unwrap_model(model).state_dict(), "ema": ema.state_dict(),
                               "optimizer": optimizer.state_dict(), "step": step, "losses": losses}, ckpt)
        accelerator.wait_for_everyone()
        for callback in callbacks:
            callback(step)

    model.train()
    bar = progress_bar(total=options.steps, initial=step, desc=f"{log_prefix}train", unit="step",
                       disable=not accelerator.is_local_main_process)
    paused = 0.0  # seconds in checkpoints and grids, left out of steps/s
    while step < options.steps:
        pending.append(training_step(model, ema, optimizer, latents, diffusion, options, accelerator, seed, step,
                                     scaling_factor))
        step += 1
        bar.update(1)
        if step % options.log_every == 0 or step == options.steps:
            flush()
            window = losses[-options.log_every:]
            if accelerator.is_main_process:
                accelerator.log({f"{log_prefix}loss": float(np.mean(window))}, step=step)
            bar.set_postfix(loss=f"{np.mean(window):.4f}")
        mark = time.time()
        if step % options.checkpoint_every == 0 or step == options.steps:
            checkpoint()
        if on_grid is not None and options.grid_every and step % options.grid_every == 0 and step < options.steps:
            if accelerator.is_main_process:
                on_grid(step, ema)
            accelerator.wait_for_everyone()
        paused += time.time() - mark
    bar.close()
    flush()
    ran, wall = step - resumed_from, time.time() - start
    return TrainOutcome(losses, resumed_from, step, wall, ran / (wall - paused) if ran and wall > paused else 0.0), ema
