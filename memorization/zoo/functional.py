"""Many models of one architecture as one vectorised function: ``vmap(functional_call)`` over a model axis.

A zoo network is a pure function of its parameters (no buffers), so stacking every parameter
along a leading model axis and vmapping `torch.func.functional_call` runs n models in one call:
linear layers become batched matmuls, convolutions grouped convolutions. The same code runs on
CPU and GPU.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.func import functional_call, vmap


def stacked_forward(model: torch.nn.Module, params: dict[str, Tensor], x: Tensor, shared_inputs: bool) -> Tensor:
    """Logits ``(n, B, classes)`` of n models whose parameters are stacked in `params` (``name -> (n, *shape)``).

    ``shared_inputs=True``: every model sees the same ``x`` ``(B, ...)``; else ``x`` is ``(n, B, ...)``,
    one batch per model.
    """

    def one(p: dict[str, Tensor], xb: Tensor) -> Tensor:
        return functional_call(model, p, (xb,))

    return vmap(one, in_dims=(0, None if shared_inputs else 0))(params, x)


def batched_logits(model: torch.nn.Module, spec, flat: Tensor, x: Tensor, shared_inputs: bool = True) -> Tensor:
    """`stacked_forward` for flat parameter vectors ``(n, P)`` in `spec`'s order."""
    return stacked_forward(model, spec.unflatten(flat), x, shared_inputs)
