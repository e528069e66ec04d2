"""AdamW without decay on 1-D parameters, and a per-update linear warmup + cosine schedule: timm's factories.

* `build_optimizer`: `timm.optim.create_optimizer_v2(..., "adamw")`. For a module, timm's own weight-decay
  groups: no decay on parameters of one dimension or fewer (biases, norms, layer-scale), on ``*.bias`` and on
  the names in the model's ``no_weight_decay()``, if it has one (timm's ViTs: position embeddings, class token).
  For loose tensors (a vectorised zoo stacks each parameter of many models along a leading model axis,
  ``batch_dims=1``) the groups come from `decay_groups`, which timm cannot form without names.
* `build_scheduler`: `timm.scheduler.CosineLRScheduler` stepped per optimizer update (``t_in_epochs=False``):
  linear from 0 over `warmup_steps` updates, then a cosine from `base_lr` down to `min_lr` at `total_steps`,
  `min_lr` after. The caller steps it with ``scheduler.step_update(updates_done)``.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from timm.optim import create_optimizer_v2
from timm.scheduler import CosineLRScheduler


def decay_groups(params: Iterable[torch.Tensor], weight_decay: float, batch_dims: int = 0) -> list[dict]:
    """Weight-decay groups for loose tensors: decay on those with two or more dimensions beyond the first
    ``batch_dims`` (a vectorised zoo's stacked bias is 2-D but must still go undecayed)."""
    decay, no_decay = [], []
    for p in params:
        if p.requires_grad:
            (decay if p.ndim - batch_dims >= 2 else no_decay).append(p)
    return [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": weight_decay}]


def build_optimizer(model: torch.nn.Module | Iterable[torch.Tensor], lr: float, weight_decay: float,
                    betas=(0.9, 0.95), eps: float = 1e-8, *, batch_dims: int = 0) -> torch.optim.Optimizer:
    """AdamW over `model`'s parameters (a module: timm's decay groups; loose tensors: `decay_groups`).

    ``batch_dims``: leading axes of loose tensors that are not parameter dimensions (1 for the stacked
    parameters of a vectorised zoo).
    """
    if isinstance(model, torch.nn.Module):
        if batch_dims:
            raise TypeError("batch_dims is for loose stacked tensors, not a module")
        params: torch.nn.Module | list[dict] = model
    else:
        tensors = list(model)
        if any(not isinstance(p, torch.Tensor) for p in tensors):
            raise TypeError("build_optimizer takes a module or parameter tensors, not parameter groups; "
                            "pass batch_dims= for stacked parameters")
        params = decay_groups(tensors, weight_decay, batch_dims)
    return create_optimizer_v2(params, "adamw", lr=lr, weight_decay=weight_decay, betas=tuple(betas), eps=eps)


def build_scheduler(optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int,
                    min_lr: float) -> CosineLRScheduler:
    """Linear warmup over `warmup_steps` updates from 0, then cosine to `min_lr` at `total_steps` (per update).

    The peak is each parameter group's lr as the optimizer was built. With ``warmup_steps >= total_steps`` the
    cosine spans one update (the peak, then `min_lr`).
    """
    return CosineLRScheduler(optimizer, t_initial=max(1, total_steps - warmup_steps), lr_min=min_lr,
                             warmup_t=warmup_steps, warmup_lr_init=0.0, warmup_prefix=True, t_in_epochs=False,
                             cycle_limit=1)
