"""AdamW without decay on 1-D parameters, and a per-step warmup + cosine schedule."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Decay only parameters with two or more dimensions (not biases, norms or layer-scale)."""
    return decay_groups(model.parameters(), weight_decay)


def decay_groups(params: Iterable[torch.Tensor], weight_decay: float, batch_dims: int = 0) -> list[dict]:
    """`param_groups` for loose tensors; ``batch_dims`` leading axes are not counted as parameter dims.

    A vectorised zoo stacks the same parameter of many models along a leading model axis
    (``batch_dims=1``): a bias is then 2-D but must still go undecayed.
    """
    decay, no_decay = [], []
    for p in params:
        if p.requires_grad:
            (decay if p.ndim - batch_dims >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: torch.nn.Module | Iterable[torch.Tensor], lr: float, weight_decay: float,
                    betas=(0.9, 0.95), eps: float = 1e-8, *, batch_dims: int = 0) -> torch.optim.AdamW:
    """AdamW over `model`'s parameters (a module or loose tensors), `weight_decay` on the `decay_groups` ones.

    ``batch_dims``: leading axes of the tensors that are not parameter dimensions (1 for the stacked
    parameters of a vectorised zoo), as in `decay_groups`.
    """
    params = list(model.parameters() if isinstance(model, torch.nn.Module) else model)
    if any(not isinstance(p, torch.Tensor) for p in params):
        raise TypeError("build_optimizer takes a module or parameter tensors, not parameter groups; "
                        "pass batch_dims= for stacked parameters")
    groups = decay_groups(params, weight_decay, batch_dims)
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), eps=eps)


def warmup_cosine_factor(step: int, total_steps: int, warmup_steps: int, base_lr: float, min_lr: float) -> float:
    """Learning-rate multiplier: linear from 0 over `warmup_steps`, then cosine down to `min_lr`."""
    if warmup_steps > 0 and step < warmup_steps:
        return step / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    progress = min(1.0, progress)
    lr = min_lr + 0.5 * (base_lr - min_lr) * (1 + math.cos(math.pi * progress))
    return lr / base_lr


def build_scheduler(optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int, base_lr: float,
                    min_lr: float) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: warmup_cosine_factor(s, total_steps, warmup_steps, base_lr, min_lr)
    )
