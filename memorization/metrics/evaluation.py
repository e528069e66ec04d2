"""Accuracy and error masks of many parameter vectors of one zoo at once (vmap, chunked)."""

from __future__ import annotations

import torch
from torch import Tensor


def evaluate_params(zoo, params: Tensor | None = None, chunk: int = 256,
                    device: str | torch.device | None = None) -> tuple[Tensor, Tensor]:
    """``(accuracy (n,), error_masks (n, n_test) bool)`` of `params` (default: the zoo's own) on the zoo's test set.

    `params` are in the zoo's flatten order (for subset zoos: the subset; the frozen rest is
    taken from the zoo's base model). Models are run `chunk` at a time as one vmapped model.
    """
    return zoo.evaluate(zoo.params if params is None else params, chunk=chunk, device=device)
