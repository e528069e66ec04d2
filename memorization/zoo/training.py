"""Training zoos: many seeded models at once (vectorised), and the per-model reference loop.

Both regimes use the shared classifier conventions: AdamW without decay on 1-D parameters
(`classifiers.optim.build_optimizer` with ``batch_dims=1``: the parameters are stacked along a model
axis) and the per-step linear-warmup + cosine schedule (`classifiers.optim.build_scheduler`),
cross-entropy with optional label smoothing.

Model ``k`` is determined by its seed alone:
* initial parameters: torch's default init under ``torch.manual_seed(seed)`` (`archs.init_params`);
* data order: epoch ``e`` visits the training set in ``numpy.random.default_rng([seed, e, stream])``
  permutation order, in batches of ``batch_size`` (the last, smaller batch is kept; all models
  share the batch sizes because they share the training set);
so `train_vectorised` on seeds ``[s0, ..., sk, ...]`` gives model k the same weights (to float
rounding) as `train_single` on ``sk`` alone (tested on CPU: ~1e-7). On a GPU, MLPs agree as
closely; CNNs drift to ~1e-2 over a few epochs because cuDNN runs convolutions in TF32 by default
and the grouped (vmapped) and plain convolutions round differently; set
``torch.backends.cudnn.allow_tf32 = False`` where bitwise-close agreement matters.

Regimes (`memorization.zoo.build.build_zoo`):
* ``runs``  (A) independent runs, one seed each, final checkpoint (or ``checkpoints_per_run``
  evenly spaced ones, as G.pt keeps many per run);
* ``steps`` (B, P-diff style) one base model trained to the end of the recipe, then only a
  parameter subset (e.g. the last linear layer) trained further for ``n_steps`` optimizer steps
  at a constant learning rate, one checkpoint after every step.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from bias.core.progress import progress_bar
from classifiers.optim import build_optimizer, build_scheduler
from memorization.zoo.archs import init_params
from memorization.zoo.functional import stacked_forward
from memorization.zoo.store import ParamSpec
from memorization.zoo.tasks import Task

STREAM_TRAIN, STREAM_FINETUNE = 0, 1


@dataclass
class ZooRecipe:
    """Optimisation of one zoo model (the `recipe` block of ``configs/memorize/task/*.yaml``)."""

    epochs: int = 20
    batch_size: int = 64
    lr: float = 3e-3
    min_lr: float = 1e-5
    warmup_epochs: float = 1.0
    weight_decay: float = 5e-4
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    label_smoothing: float = 0.0

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | None) -> ZooRecipe:
        data = dict(data or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise KeyError(f"unknown recipe keys {unknown}; known: {sorted(known)}")
        if "betas" in data:
            data["betas"] = tuple(float(b) for b in data["betas"])
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["betas"] = list(d["betas"])
        return d

    def steps_per_epoch(self, n_train: int) -> int:
        return math.ceil(n_train / self.batch_size)


def epoch_orders(seeds: Sequence[int], epoch: int, n: int, stream: int = STREAM_TRAIN) -> Tensor:
    """``(len(seeds), n)`` int64: each model's visiting order of the training set in `epoch`."""
    return torch.from_numpy(np.stack([np.random.default_rng([int(s), int(epoch), stream]).permutation(n)
                                      for s in seeds]))


def _loss(logits: Tensor, y: Tensor, label_smoothing: float) -> Tensor:
    """Per-model mean cross-entropy (as `F.cross_entropy`): logits ``(n, B, C)``, y ``(n, B)`` -> ``(n,)``.

    Written out because torch's CPU log_softmax is slow on a last dimension of 10 (measured 2.4x).
    """
    z = logits.float()
    z = z - z.amax(-1, keepdim=True).detach()
    logp = z - z.exp().sum(-1, keepdim=True).log()
    nll = -logp.gather(-1, y.unsqueeze(-1)).squeeze(-1)
    if label_smoothing:
        nll = (1 - label_smoothing) * nll - label_smoothing * logp.mean(-1)
    return nll.mean(1)


def checkpoint_steps(total: int, per_run: int) -> list[int]:
    """`per_run` optimizer steps evenly spaced up to `total` (the last is always `total`)."""
    if per_run < 1 or per_run > total:
        raise ValueError(f"checkpoints_per_run must be in [1, {total}] (total steps), got {per_run}")
    return sorted({int(round(total * (i + 1) / per_run)) for i in range(per_run)})


@dataclass
class VectorisedResult:
    spec: ParamSpec
    steps: list[int]          # optimizer step of each checkpoint
    params: Tensor            # (n_checkpoints, n_models, P) on CPU
    train_loss: Tensor        # (n_checkpoints, n_models): mean batch loss since the previous checkpoint


def train_vectorised(task: Task, arch: Mapping[str, Any], seeds: Sequence[int], recipe: ZooRecipe,
                     device: str | torch.device = "cpu", checkpoints_per_run: int = 1,
                     progress: bool = True, desc: str = "zoo") -> VectorisedResult:
    """Train one model per seed, all at once, as one vmapped functional model."""
    device = torch.device(device)
    model = task.build_model(arch)
    spec = ParamSpec.from_module(model)
    flat = torch.stack([init_params(arch, task.input_shape, task.num_classes, s) for s in seeds]).to(device)
    params = {k: v.clone().requires_grad_(True) for k, v in spec.unflatten(flat).items()}
    n_models, n_train = len(seeds), int(task.y_train.shape[0])
    spe = recipe.steps_per_epoch(n_train)
    total = spe * recipe.epochs
    keep = set(checkpoint_steps(total, checkpoints_per_run))
    optimizer = build_optimizer(params.values(), recipe.lr, recipe.weight_decay, recipe.betas, recipe.eps,
                                batch_dims=1)
    scheduler = build_scheduler(optimizer, total, int(recipe.warmup_epochs * spe), recipe.min_lr)
    x_all, y_all = task.x_train.to(device), task.y_train.to(device)
    saved, losses = [], []
    loss_sum, loss_n = torch.zeros(n_models, device=device), 0
    step = 0
    bar = progress_bar(total=total, desc=f"{desc}: {n_models} models", disable=not progress, leave=False)
    for epoch in range(recipe.epochs):
        order = epoch_orders(seeds, epoch, n_train).to(device)
        for b in range(spe):
            idx = order[:, b * recipe.batch_size:(b + 1) * recipe.batch_size]
            logits = stacked_forward(model, params, x_all[idx], shared_inputs=False)
            loss = _loss(logits, y_all[idx], recipe.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.sum().backward()  # model k's loss depends on its own slice only: exact per-model gradients
            optimizer.step()
            step += 1
            scheduler.step_update(step)
            loss_sum += loss.detach()
            loss_n += 1
            if step in keep:
                saved.append(spec.flatten({k: v.detach() for k, v in params.items()}).cpu())
                losses.append((loss_sum / loss_n).cpu())
                loss_sum.zero_()
                loss_n = 0
            bar.update(1)
    bar.close()
    return VectorisedResult(spec, sorted(keep), torch.stack(saved), torch.stack(losses))


def train_single(task: Task, arch: Mapping[str, Any], seed: int, recipe: ZooRecipe,
                 device: str | torch.device = "cpu") -> Tensor:
    """Reference: one ordinary `nn.Module` trained with `torch.optim` in a plain loop; flat final parameters."""
    device = torch.device(device)
    model = task.build_model(arch)
    spec = ParamSpec.from_module(model)
    model.load_state_dict(spec.unflatten(init_params(arch, task.input_shape, task.num_classes, seed)))
    model.to(device).train()
    n_train = int(task.y_train.shape[0])
    spe = recipe.steps_per_epoch(n_train)
    total = spe * recipe.epochs
    optimizer = build_optimizer(model, recipe.lr, recipe.weight_decay, recipe.betas, recipe.eps)
    scheduler = build_scheduler(optimizer, total, int(recipe.warmup_epochs * spe), recipe.min_lr)
    x_all, y_all = task.x_train.to(device), task.y_train.to(device)
    step = 0
    for epoch in range(recipe.epochs):
        order = epoch_orders([seed], epoch, n_train)[0].to(device)
        for b in range(spe):
            idx = order[b * recipe.batch_size:(b + 1) * recipe.batch_size]
            loss = F.cross_entropy(model(x_all[idx]), y_all[idx], label_smoothing=recipe.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            scheduler.step_update(step)
    return spec.flatten(dict(model.state_dict())).detach().cpu()


@dataclass
class StepsResult:
    base: Tensor              # (P,) full parameters of the converged base model
    base_spec: ParamSpec
    spec: ParamSpec           # the trained subset
    params: Tensor            # (n_steps, P_subset), one row after each optimizer step
    train_loss: Tensor        # (n_steps,) the batch loss of each step


def finetune_steps(task: Task, arch: Mapping[str, Any], seed: int, recipe: ZooRecipe, subset: Sequence[str],
                   n_steps: int = 300, lr: float | None = None, device: str | torch.device = "cpu",
                   progress: bool = True) -> StepsResult:
    """P-diff regime: train a base model with `recipe`, then train only `subset` for `n_steps` steps.

    The fine-tuning uses AdamW at the constant rate `lr` (default ``recipe.lr / 10``), the recipe's weight decay and betas, and its own seeded data order
    (stream `STREAM_FINETUNE`, continuing across epochs); a checkpoint is kept after every step.
    """
    device = torch.device(device)
    base_run = train_vectorised(task, arch, [seed], recipe, device, 1, progress, desc="base model")
    base_spec = base_run.spec
    base = base_run.params[-1, 0]
    sub_names = [n for n in base_spec.names if n in set(subset)]
    if len(sub_names) != len(set(subset)):
        raise KeyError(f"subset {sorted(set(subset) - set(sub_names))} not in the model; it has {base_spec.names}")
    spec = ParamSpec(sub_names, [base_spec.shapes[base_spec.names.index(n)] for n in sub_names])
    model = task.build_model(arch)
    full = {k: v.to(device)[None] for k, v in base_spec.unflatten(base).items()}
    trainable = {k: full[k].clone().requires_grad_(True) for k in sub_names}
    rate = recipe.lr / 10 if lr is None else float(lr)
    optimizer = build_optimizer(trainable.values(), rate, recipe.weight_decay, recipe.betas, recipe.eps,
                                batch_dims=1)
    x_all, y_all = task.x_train.to(device), task.y_train.to(device)
    n_train = int(task.y_train.shape[0])
    spe = recipe.steps_per_epoch(n_train)
    rows, losses = [], []
    for step in progress_bar(range(n_steps), desc="P-diff steps", disable=not progress, leave=False):
        epoch, b = divmod(step, spe)
        if b == 0:
            order = epoch_orders([seed], epoch, n_train, STREAM_FINETUNE).to(device)
        idx = order[:, b * recipe.batch_size:(b + 1) * recipe.batch_size]
        params = {**full, **trainable}
        loss = _loss(stacked_forward(model, params, x_all[idx], shared_inputs=False), y_all[idx],
                     recipe.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.sum().backward()
        optimizer.step()
        rows.append(spec.flatten({k: v.detach()[0] for k, v in trainable.items()}).cpu())
        losses.append(float(loss.detach()[0]))
    return StepsResult(base, base_spec, spec, torch.stack(rows), torch.tensor(losses))
