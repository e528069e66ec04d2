"""Random, function-preserving permutations of MLP hidden units, a different one per row of a batch.

Permuting the hidden units of layer l reorders the rows of ``W_l`` and ``b_l`` and the columns
of ``W_{l+1}``; with an elementwise activation the network computes exactly the same function.
G.pt trains with such permutations as augmentation (the same permutation applied to the start
and the target of a pair); HyperDiffusion's ablation adds permuted copies. The MLP structure is
read with `memorization.metrics.alignment.mlp_layers`, and permuted by
`memorization.metrics.alignment.permute_mlp` (one permutation for a whole batch:
`memorization.metrics.alignment.permute_hidden`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from memorization.metrics.alignment import mlp_layers, permute_mlp
from memorization.zoo.store import ParamSpec

__all__ = ["mlp_layers", "permute_mlp", "random_permutations", "random_permute_mlp"]


def random_permutations(batch: int, width: int, generator: torch.Generator | None = None,
                        device: torch.device | str = "cpu") -> Tensor:
    """``(batch, width)`` independent uniformly random permutations (argsort of uniform noise)."""
    return torch.rand(batch, width, generator=generator, device=device).argsort(dim=1)


def random_permute_mlp(flat: Tensor, spec: ParamSpec, generator: torch.Generator | None = None) -> tuple[Tensor, list[Tensor]]:
    """`permute_mlp` with fresh random permutations per row; returns the params and the permutations used."""
    shapes = dict(zip(spec.names, spec.shapes))
    widths = [shapes[w][0] for w, _ in mlp_layers(spec)[:-1]]
    perms = [random_permutations(flat.shape[0], h, generator, flat.device) for h in widths]
    return permute_mlp(flat, spec, perms), perms
