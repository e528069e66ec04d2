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

import contextlib
import logging
import math
import re
import shutil
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
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

logger = logging.getLogger(__name__)  # lines on the main process only (`_log`); plain, no [RANK n] prefix

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


def set_aside(folder: Path) -> Path:
    """Move a damaged checkpoint folder to `<name>.damaged` (replacing an earlier damaged copy, as `read_derived`
    does for files; a rename cannot replace a folder that holds files)."""
    aside = folder.with_name(f"{folder.name}.damaged")
    shutil.rmtree(aside, ignore_errors=True)
    folder.rename(aside)
    return aside


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


@contextlib.contextmanager
def _quiet(*names: str) -> Iterator[None]:
    """accelerate's loggers `names` at WARNING inside the block: `save_state`/`load_state` log a line per file at
    INFO, six lines an epoch among ours."""
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _unique_failures(failed: list[dict[str, str]]) -> list[dict[str, str]]:
    seen: dict[str, dict[str, str]] = {}
    for f in failed:
        seen.setdefault(f["path"], f)
    return [seen[p] for p in sorted(seen)]


class _Training:
    """One run of `train_classifier`, in the steps of transformers' Trainer: set up (`__init__`), `resume`,
    `train_epoch` (the inner loop, one `training_step` per batch), `evaluate_if_due`, `end_epoch` (record,
    log, save)."""

    def __init__(self, model: torch.nn.Module, train_set: Dataset, val_set: Dataset, recipe: Mapping[str, Any],
                 accelerator: Accelerator, run_dir: Path, seed: int, num_classes: int) -> None:
        self.accelerator, self.recipe, self.run_dir, self.seed = accelerator, recipe, run_dir, seed
        batch_size = int(recipe["batch_size"])
        accum = accumulation_steps(int(recipe["effective_batch"]), batch_size, accelerator.num_processes)
        accelerator.gradient_accumulation_steps = accum
        workers = int(recipe.get("num_workers", 0))
        train_loader = make_loader(train_set, batch_size, seed, True, workers)
        val_loader = make_loader(val_set, int(recipe.get("eval_batch_size") or batch_size), seed, False, workers)
        self.epochs = int(recipe["epochs"])
        self.layout = memory_format(recipe)
        model = model.to(memory_format=self.layout)
        optimizer = build_optimizer(model, float(recipe["lr"]), float(recipe["weight_decay"]),
                                    recipe.get("betas", (0.9, 0.95)), float(recipe.get("eps", 1e-8)))
        self.model, self.optimizer, self.train_loader, self.val_loader = accelerator.prepare(
            model, optimizer, train_loader, val_loader)
        steps_per_epoch = math.ceil(len(self.train_loader) / accum)
        self.scheduler = build_scheduler(self.optimizer, steps_per_epoch * self.epochs,
                                         int(float(recipe["warmup_epochs"]) * steps_per_epoch),
                                         float(recipe["min_lr"]))
        # no recipe.mixup block: no mixing (as no label_smoothing is none); it used to mean the paper's values, and
        # a text recipe without the block had its token ids blended
        self.mix = MixupCutmix(num_classes, label_smoothing=float(recipe.get("label_smoothing", 0.0)),
                               **dict(recipe.get("mixup") or {"prob": 0.0}))
        self.clip_grad = float(recipe.get("clip_grad") or 0.0)
        self.eval_every = int(recipe.get("eval_every") or 0)
        self.step = 0  # optimizer updates done
        self.history: list[dict[str, float]] = []
        self.failed_train: list[dict[str, str]] = []
        self.evaluation: Evaluation | None = None

    def resume(self) -> tuple[int, str | None]:
        """Load the newest complete checkpoint: (the first epoch still to train, a note if it was damaged)."""
        folder = latest_checkpoint(self.run_dir)
        if folder is None:
            return 0, None
        state, damaged = read_derived(folder, read_checkpoint, set_aside=False)
        if damaged:
            if self.accelerator.is_main_process:
                set_aside(folder)
            self._log(f"note: {damaged}: training starts again from the first epoch")
        if state is None:
            return 0, damaged
        with _quiet("accelerate.checkpointing", "accelerate.accelerator"):
            self.accelerator.load_state(str(folder))
        self.scheduler.load_state_dict(state["scheduler"])
        self.step, self.history = int(state["step"]), list(state["history"])
        self._log(f"resuming from {folder} after epoch {int(state['epoch']) + 1}")
        return int(state["epoch"]) + 1, None

    def train_epoch(self, epoch: int) -> dict[str, float]:
        """The inner loop over one epoch's batches; the epoch's record (train loss and accuracy, lr)."""
        self.model.train()
        self.train_loader.set_epoch(epoch)
        sums = torch.zeros(3, device=self.accelerator.device)  # loss*n, correct, n
        bar = progress_bar(self.train_loader, desc=f"epoch {epoch + 1}/{self.epochs}", leave=False,
                           disable=not self.accelerator.is_local_main_process)
        for batch in bar:
            value = self.training_step(batch, epoch, sums)
            bar.set_postfix(loss=f"{value:.3f}")
        sums = self.accelerator.reduce(sums, reduction="sum")
        return {"epoch": epoch + 1, "step": self.step, "train_loss": (sums[0] / sums[2].clamp(min=1)).item(),
                "train_acc": (sums[1] / sums[2].clamp(min=1)).item(), "lr": current_lr(self.optimizer)}

    def training_step(self, batch: Mapping[str, Any], epoch: int, sums: torch.Tensor) -> float:
        """Forward, backward and (at the end of an accumulation) an optimizer update on one batch; its loss.
        `sums` gathers loss x n, correct and n over the batch's loadable samples."""
        accelerator, model = self.accelerator, self.model
        with accelerator.accumulate(model):
            ok = batch["ok"]
            self.failed_train += batch["failed"]
            x, y = as_layout(model_input(batch)[ok], self.layout), batch["label"][ok]
            x_mixed, targets = self.mix(x, y, (self.seed, 7, self.step, accelerator.process_index))
            if len(x_mixed) == 0:  # keep ranks in step even when every file of a batch failed
                loss = model(model_input(batch)[:1]).sum() * 0.0
            else:
                logits = model(x_mixed)
                loss = self.mix.loss(logits.float(), targets)
                sums += torch.stack([loss.detach() * len(y), (logits.argmax(-1) == y).sum().float(),
                                     torch.tensor(float(len(y)), device=sums.device)])
            value = loss.item()
            if not math.isfinite(value):
                raise TrainingDiverged("loss", value, epoch + 1, self.step)
            accelerator.backward(loss)
            if accelerator.sync_gradients and self.clip_grad:
                accelerator.clip_grad_norm_(model.parameters(), self.clip_grad)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=False)  # zero in place: freeing and reallocating every gradient
            # each step cost ~10 ms of a ~250 ms cpu-recipe step; the values are the same (0 + g)
            if accelerator.sync_gradients:
                self.step += 1
                self.scheduler.step_update(self.step)
                if accelerator.is_main_process and self.step % 10 == 0:
                    accelerator.log({"train/loss": value, "train/lr": current_lr(self.optimizer)}, step=self.step)
        return value

    def evaluate_if_due(self, epoch: int, record: dict[str, float]) -> None:
        """Evaluate after the last epoch and every `eval_every` epochs; the val accuracy goes in `record`."""
        if epoch == self.epochs - 1 or (self.eval_every and (epoch + 1) % self.eval_every == 0):
            self.evaluation = evaluate(self.model, self.val_loader, self.accelerator,
                                       desc=f"eval {epoch + 1}/{self.epochs}", layout=self.layout)
            check_finite_outputs(self.evaluation, epoch + 1, self.step)
            record["val_acc"] = self.evaluation.accuracy

    def _log(self, message: str) -> None:
        if self.accelerator.is_main_process:
            logger.info(message)

    def end_epoch(self, epoch: int, record: dict[str, float]) -> None:
        """Record and log the epoch, then checkpoint it."""
        self.history.append(record)
        self.accelerator.log({k: v for k, v in record.items() if k not in ("epoch", "step")}, step=self.step)
        self._log(f"epoch {epoch + 1}/{self.epochs}: loss {record['train_loss']:.4f}, "
                    f"train acc {100 * record['train_acc']:.1f}%"
                    + (f", val acc {100 * record['val_acc']:.1f}%" if "val_acc" in record else ""))
        with _quiet("accelerate.checkpointing", "accelerate.accelerator"):
            save_checkpoint(self.accelerator, self.run_dir, epoch,
                            {"step": self.step, "history": self.history, "scheduler": self.scheduler.state_dict()})

    def final_evaluation(self) -> Evaluation:
        """The last epoch's evaluation; made now if the run resumed after its last epoch (results not written)."""
        if self.evaluation is None:
            self.evaluation = evaluate(self.model, self.val_loader, self.accelerator, layout=self.layout)
            check_finite_outputs(self.evaluation, self.epochs, self.step)
        return self.evaluation

    def failed_train_files(self) -> list[dict[str, str]]:
        """Training files that failed to load, from every process, once each."""
        failed = self.failed_train
        if self.accelerator.num_processes > 1:
            failed = [f for part in gather_object([failed]) for f in part]
        return _unique_failures(failed)


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
    training = _Training(model, train_set, val_set, recipe, accelerator, run_dir, seed, num_classes)
    first_epoch, damaged = training.resume()
    for epoch in range(first_epoch, training.epochs):
        record = training.train_epoch(epoch)
        training.evaluate_if_due(epoch, record)
        training.end_epoch(epoch, record)
        for callback in callbacks:
            callback(epoch)
    evaluation = training.final_evaluation()
    return TrainOutcome(evaluation, training.history, training.failed_train_files(), first_epoch, training.step,
                        time.time() - start, [damaged] if damaged else [])
