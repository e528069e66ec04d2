"""One accelerate training loop for every recipe: 1 CPU process, 1 GPU, many GPUs or nodes.

* exact evaluation: every val image is counted once (`gather_for_metrics` drops the padding
  that even batches add, and predictions are keyed by sample index);
* a checkpoint after every epoch: accelerate's own state (`Accelerator.save_state`: weights,
  optimizer, the mixed-precision GradScaler when there is one, RNG states) in a folder
  `checkpoints/epoch_NNNN` plus our counters (`trainer_state.json`, written last: a folder without it
  is a save cut short and is never resumed from); rerunning resumes from it (`load_state`) and ends
  with the same metrics as an uninterrupted run (all randomness is seeded per epoch, step and sample);
* files that fail to load are never replaced: they are left out of the loss and metrics and
  reported with their reason;
* a non-finite loss or val output stops training with `TrainingDiverged` (epoch and step): a nan
  network is never evaluated as if it had learned something.
"""

from __future__ import annotations

import math
import re
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import gather_object
from torch.utils.data import DataLoader, Dataset

from bias.core.errors import TrainingDiverged
from bias.core.io import read_derived, read_json_object, write_json
from bias.core.parallel import worker_init
from bias.core.progress import progress_bar
from classifiers.data import EpochSampler, collate, model_input
from classifiers.mixup import MixupCutmix
from classifiers.optim import build_optimizer, build_scheduler

CHECKPOINTS = "checkpoints"
#: our counters in a checkpoint folder, beside accelerate's files; written last, so it marks the folder complete
TRAINER_STATE = "trainer_state.json"

#: Called after every epoch once its checkpoint is written, on every process: `callback(epoch)` (0-based).
EpochCallback = Callable[[int], None]


@dataclass
class Evaluation:
    """Per-sample predictions on the val set, one row per val index, in index order."""

    index: np.ndarray
    label: np.ndarray
    pred: np.ndarray
    probs: np.ndarray
    failed: list[dict[str, str]] = field(default_factory=list)

    @property
    def accuracy(self) -> float:
        return float((self.pred == self.label).mean()) if len(self.label) else float("nan")


@dataclass
class TrainOutcome:
    evaluation: Evaluation
    history: list[dict[str, float]]
    failed_train: list[dict[str, str]]
    resumed_from_epoch: int
    steps: int
    wall_time_s: float
    repaired: list[str] = field(default_factory=list)  # derived files found damaged and rebuilt (a checkpoint)


TRAINER_STATE_KEYS = ("epoch", "step", "history", "scheduler")


def checkpoint_folder(run_dir: Path, epochs_done: int) -> Path:
    """Where the checkpoint written after `epochs_done` epochs lives."""
    return run_dir / CHECKPOINTS / f"epoch_{epochs_done:04d}"


def checkpoint_folders(run_dir: Path) -> list[Path]:
    """The checkpoint folders of `run_dir`, oldest first (complete or not; set-aside `.damaged` ones excluded)."""
    root = run_dir / CHECKPOINTS
    return sorted(p for p in root.glob("epoch_*") if re.fullmatch(r"epoch_\d{4,}", p.name)) if root.is_dir() else []


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint folder (its `trainer_state.json` written), or None."""
    complete = [p for p in checkpoint_folders(run_dir) if (p / TRAINER_STATE).exists()]
    return complete[-1] if complete else None


def read_checkpoint(folder: Path) -> dict[str, Any]:
    """Our counters of a checkpoint folder, once every file `Accelerator.load_state` will read has been read back
    (safetensors; the rest with ``weights_only=True``): a damaged file raises here (ValueError and the readers'
    own errors), before anything is loaded into the model, so the caller can start afresh from its own init."""
    from safetensors.torch import load_file

    state = read_json_object(folder / TRAINER_STATE, TRAINER_STATE_KEYS)
    weights = sorted(folder.glob("*.safetensors"))
    if not weights:
        raise ValueError("no model weights (*.safetensors)")
    for path in weights:
        load_file(path)
    for path in sorted([*folder.glob("*.bin"), *folder.glob("*.pt")]):
        torch.load(path, map_location="cpu", weights_only=True)
    return state


def save_checkpoint(accelerator: Accelerator, run_dir: Path, epoch: int, counters: dict[str, Any]) -> Path:
    """`Accelerator.save_state` after `epoch` (0-based) into a fresh folder, then our counters; older folders go.

    Every process calls it (each saves its own RNG state); the main process writes the rest. A kill at any
    point leaves either the previous complete folder or the new one, never only a half-written one.
    """
    folder = checkpoint_folder(run_dir, epoch + 1)
    if accelerator.is_main_process and folder.exists():  # a save of this epoch cut short by a kill
        shutil.rmtree(folder)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(folder))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        write_json({"epoch": epoch, **counters}, folder / TRAINER_STATE)
        for old in checkpoint_folders(run_dir):
            if old != folder:
                shutil.rmtree(old)
    accelerator.wait_for_everyone()
    return folder


def current_lr(optimizer: torch.optim.Optimizer) -> float:
    """The learning rate the next update uses (every parameter group has the same)."""
    return float(optimizer.param_groups[0]["lr"])


def accumulation_steps(effective_batch: int, batch_size: int, num_processes: int) -> int:
    per_step = batch_size * num_processes
    if effective_batch % per_step:
        raise ValueError(
            f"effective batch {effective_batch} is not a multiple of batch_size {batch_size} x {num_processes} "
            "processes; change recipe.batch_size or recipe.effective_batch"
        )
    return effective_batch // per_step


def memory_format(recipe: Mapping[str, Any]) -> torch.memory_format:
    """`recipe.channels_last`: convolutions in NHWC. The same network and numbers up to float rounding, and on
    CPU (oneDNN) a train step of the cpu recipe's ResNet is about 20% faster (benchmarks/RESULTS.md)."""
    return torch.channels_last if recipe.get("channels_last") else torch.contiguous_format


def as_layout(x: torch.Tensor, layout: torch.memory_format) -> torch.Tensor:
    """An image batch in `layout`; anything that is not a 4-d batch (feature vectors) as it is."""
    return x.contiguous(memory_format=layout) if x.dim() == 4 and layout is torch.channels_last else x


def make_loader(dataset: Dataset, batch_size: int, seed: int, shuffle: bool, num_workers: int) -> DataLoader:
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=EpochSampler(len(dataset), seed, shuffle),
        num_workers=num_workers,
        collate_fn=collate,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=num_workers > 0,
        drop_last=False,
        worker_init_fn=worker_init if num_workers > 0 else None,
    )


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader: DataLoader, accelerator: Accelerator, desc: str = "eval",
             layout: torch.memory_format = torch.contiguous_format) -> Evaluation:
    """Predictions for every val sample exactly once, on every process (images in `layout`, as in training)."""
    model.eval()
    rows: dict[str, list[torch.Tensor]] = {"index": [], "label": [], "pred": [], "probs": [], "ok": []}
    failed: list[dict[str, str]] = []
    for batch in progress_bar(loader, desc=desc, leave=False, disable=not accelerator.is_local_main_process):
        probs = model(as_layout(model_input(batch), layout)).float().softmax(-1)
        gathered = accelerator.gather_for_metrics(
            {"index": batch["index"], "label": batch["label"], "pred": probs.argmax(-1), "probs": probs,
             "ok": batch["ok"]}
        )
        for k in rows:
            rows[k].append(gathered[k].cpu())
        failed += batch["failed"]
    model.train()
    cat = {k: torch.cat(v).numpy() for k, v in rows.items()}
    failed = [f for part in gather_object([failed]) for f in part] if accelerator.num_processes > 1 else failed
    _, first = np.unique(cat["index"], return_index=True)  # defensive: one row per val sample
    keep = first[cat["ok"][first]]
    keep = keep[np.argsort(cat["index"][keep])]
    return Evaluation(cat["index"][keep], cat["label"][keep], cat["pred"][keep], cat["probs"][keep],
                      _unique_failures(failed))


def check_finite_outputs(evaluation: Evaluation, epoch: int, step: int) -> None:
    """`TrainingDiverged` if any val probability is nan or infinite (argmax of nan picks class 0)."""
    bad = ~np.isfinite(evaluation.probs)
    if bad.any():
        raise TrainingDiverged("val outputs", float(evaluation.probs[bad][0]), epoch, step)


def _unique_failures(failed: list[dict[str, str]]) -> list[dict[str, str]]:
    seen: dict[str, dict[str, str]] = {}
    for f in failed:
        seen.setdefault(f["path"], f)
    return [seen[p] for p in sorted(seen)]


def train_classifier(
    model: torch.nn.Module,
    train_set: Dataset,
    val_set: Dataset,
    recipe: Mapping[str, Any],
    accelerator: Accelerator,
    run_dir: Path,
    seed: int,
    num_classes: int,
    callbacks: Sequence[EpochCallback] = (),
) -> TrainOutcome:
    """Train `model` with `recipe`, checkpointing every epoch, and evaluate it on `val_set`."""
    start = time.time()
    batch_size = int(recipe["batch_size"])
    accum = accumulation_steps(int(recipe["effective_batch"]), batch_size, accelerator.num_processes)
    accelerator.gradient_accumulation_steps = accum
    workers = int(recipe.get("num_workers", 0))
    train_loader = make_loader(train_set, batch_size, seed, True, workers)
    val_loader = make_loader(val_set, int(recipe.get("eval_batch_size") or batch_size), seed, False, workers)

    epochs = int(recipe["epochs"])
    lr = float(recipe["lr"])
    layout = memory_format(recipe)
    model = model.to(memory_format=layout)
    optimizer = build_optimizer(model, lr, float(recipe["weight_decay"]), recipe.get("betas", (0.9, 0.95)),
                                float(recipe.get("eps", 1e-8)))
    model, optimizer, train_loader, val_loader = accelerator.prepare(model, optimizer, train_loader, val_loader)
    steps_per_epoch = math.ceil(len(train_loader) / accum)
    total = steps_per_epoch * epochs
    scheduler = build_scheduler(optimizer, total, int(float(recipe["warmup_epochs"]) * steps_per_epoch),
                                float(recipe["min_lr"]))
    mix = MixupCutmix(num_classes, label_smoothing=float(recipe.get("label_smoothing", 0.0)),
                      **dict(recipe.get("mixup") or {}))

    history: list[dict[str, float]] = []
    first_epoch, step = 0, 0
    folder = latest_checkpoint(run_dir)
    state, damaged = (read_derived(folder, read_checkpoint, set_aside=accelerator.is_main_process) if folder
                      else (None, None))
    if damaged:
        accelerator.print(f"note: {damaged}: training starts again from the first epoch")
    if state is not None:
        accelerator.load_state(str(folder))
        scheduler.load_state_dict(state["scheduler"])
        first_epoch, step, history = int(state["epoch"]) + 1, int(state["step"]), list(state["history"])
        accelerator.print(f"resuming from {folder} after epoch {first_epoch}")
    failed_train: list[dict[str, str]] = []
    eval_every = int(recipe.get("eval_every") or 0)
    evaluation: Evaluation | None = None

    model.train()
    for epoch in range(first_epoch, epochs):
        train_loader.set_epoch(epoch)
        sums = torch.zeros(3, device=accelerator.device)  # loss*n, correct, n
        bar = progress_bar(train_loader, desc=f"epoch {epoch + 1}/{epochs}", leave=False,
                   disable=not accelerator.is_local_main_process)
        for batch in bar:
            with accelerator.accumulate(model):
                ok = batch["ok"]
                failed_train += batch["failed"]
                x, y = as_layout(model_input(batch)[ok], layout), batch["label"][ok]
                x_mixed, targets = mix(x, y, (seed, 7, step, accelerator.process_index))
                if len(x_mixed) == 0:  # keep ranks in step even when every file of a batch failed
                    loss = model(model_input(batch)[:1]).sum() * 0.0
                else:
                    logits = model(x_mixed)
                    loss = mix.loss(logits.float(), targets)
                    sums += torch.stack([loss.detach() * len(y), (logits.argmax(-1) == y).sum().float(),
                                         torch.tensor(float(len(y)), device=sums.device)])
                value = loss.item()
                if not math.isfinite(value):
                    raise TrainingDiverged("loss", value, epoch + 1, step)
                accelerator.backward(loss)
                if accelerator.sync_gradients and recipe.get("clip_grad"):
                    accelerator.clip_grad_norm_(model.parameters(), float(recipe["clip_grad"]))
                optimizer.step()
                optimizer.zero_grad(set_to_none=False)  # zero in place: freeing and reallocating every gradient
                # each step cost ~10 ms of a ~250 ms cpu-recipe step; the values are the same (0 + g)
                if accelerator.sync_gradients:
                    step += 1
                    scheduler.step_update(step)
                    if accelerator.is_main_process and step % 10 == 0:
                        accelerator.log({"train/loss": loss.item(), "train/lr": current_lr(optimizer)}, step=step)
            bar.set_postfix(loss=f"{value:.3f}")
        sums = accelerator.reduce(sums, reduction="sum")
        record = {"epoch": epoch + 1, "step": step, "train_loss": (sums[0] / sums[2].clamp(min=1)).item(),
                  "train_acc": (sums[1] / sums[2].clamp(min=1)).item(), "lr": current_lr(optimizer)}
        last = epoch == epochs - 1
        if last or (eval_every and (epoch + 1) % eval_every == 0):
            evaluation = evaluate(model, val_loader, accelerator, desc=f"eval {epoch + 1}/{epochs}", layout=layout)
            check_finite_outputs(evaluation, epoch + 1, step)
            record["val_acc"] = evaluation.accuracy
        history.append(record)
        accelerator.log({k: v for k, v in record.items() if k not in ("epoch", "step")}, step=step)
        accelerator.print(
            f"epoch {epoch + 1}/{epochs}: loss {record['train_loss']:.4f}, train acc {100 * record['train_acc']:.1f}%"
            + (f", val acc {100 * record['val_acc']:.1f}%" if "val_acc" in record else "")
        )
        save_checkpoint(accelerator, run_dir, epoch,
                        {"step": step, "history": history, "scheduler": scheduler.state_dict()})
        for callback in callbacks:
            callback(epoch)
    if evaluation is None:  # resumed after the last epoch finished but before results were written
        evaluation = evaluate(model, val_loader, accelerator, layout=layout)
        check_finite_outputs(evaluation, epochs, step)
    if accelerator.num_processes > 1:
        failed_train = [f for part in gather_object([failed_train]) for f in part]
    return TrainOutcome(evaluation, history, _unique_failures(failed_train), first_epoch, step, time.time() - start,
                        [damaged] if damaged else [])
