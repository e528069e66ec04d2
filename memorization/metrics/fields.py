"""Chamfer distance between point sets, and the neural-field novelty / quality / MMD built on it.

Convention (``squared=True``, the default): for point sets A (N points) and B (M points),

    CD(A, B) = mean_a min_b ||a - b||^2 + mean_b min_a ||a - b||^2

the sum of the two directional means of *squared* nearest-neighbour distances, the usual
convention of 3-D generation papers (the study reports it on 2,048 surface points per shape;
the reference does not restate the convention, so treat absolute values as convention-bound).
``squared=False`` uses plain Euclidean distances. Distances are exact (``torch.cdist`` without
the matrix-multiplication shortcut), computed in float32 on any device, chunked over pairs.

* novelty of a generated shape = min CD to the training shapes (`min_chamfer`, self excluded on
  request for training-vs-training);
* quality = min CD to held-out test shapes;
* MMD (minimum matching distance, Achlioptas et al. 2018) = mean over reference shapes of the
  min CD to any generated shape (`mmd`).
"""

from __future__ import annotations

import torch
from torch import Tensor


def _sq_dists(a: Tensor, b: Tensor) -> Tensor:
    return torch.cdist(a, b, compute_mode="donot_use_mm_for_euclid_dist") ** 2


def chamfer_distance(a: Tensor, b: Tensor, squared: bool = True) -> Tensor:
    """CD of matched sets: ``a (..., N, D)``, ``b (..., M, D)`` -> ``(...)``."""
    if a.shape[-1] != b.shape[-1]:
        raise ValueError(f"point dimensions differ: {a.shape[-1]} vs {b.shape[-1]}")
    if a.shape[-2] == 0 or b.shape[-2] == 0:
        raise ValueError("chamfer_distance: a point set is empty; drop shapes without a surface first")
    d = _sq_dists(a.float(), b.float())
    if not squared:
        d = d.sqrt()
    return d.min(-1).values.mean(-1) + d.min(-2).values.mean(-1)


def pairwise_chamfer(x: Tensor, y: Tensor, squared: bool = True, chunk_pairs: int = 16,
                     device: str | torch.device | None = None) -> Tensor:
    """All pairs: ``x (n, N, D)``, ``y (m, M, D)`` -> ``(n, m)`` on the CPU.

    ``chunk_pairs`` bounds memory: each chunk holds ``chunk_pairs * N * M`` float32 distances.
    """
    for name, sets in (("x", x), ("y", y)):
        if torch.isnan(sets).any():
            bad = torch.isnan(sets).flatten(1).any(1).nonzero().flatten().tolist()
            raise ValueError(f"pairwise_chamfer: {name} sets {bad[:10]} contain NaN (shapes without a surface); "
                             "keep only the rows where field_surface_points returned ok")
    device = torch.device(device) if device is not None else x.device
    n, m = len(x), len(y)
    out = torch.empty(n, m)
    x, y = x.to(device), y.to(device)
    rows_per = max(1, chunk_pairs // max(m, 1))
    if m > chunk_pairs:  # chunk over columns within a row
        for i in range(n):
            for j in range(0, m, chunk_pairs):
                yy = y[j:j + chunk_pairs]
                out[i, j:j + len(yy)] = chamfer_distance(x[i].expand(len(yy), -1, -1), yy, squared).cpu()
        return out
    for i in range(0, n, rows_per):
        xx = x[i:i + rows_per]
        a = xx[:, None].expand(-1, m, -1, -1).reshape(-1, *x.shape[1:])
        b = y[None].expand(len(xx), -1, -1, -1).reshape(-1, *y.shape[1:])
        out[i:i + len(xx)] = chamfer_distance(a, b, squared).reshape(len(xx), m).cpu()
    return out


def min_chamfer(generated: Tensor, reference: Tensor, exclude_self: bool = False, squared: bool = True,
                self_index: Tensor | None = None, **kwargs) -> tuple[Tensor, Tensor]:
    """For each generated set: ``(min CD to the reference sets, index of the nearest)``.

    ``exclude_self=True`` requires ``generated`` and ``reference`` to be the same sets in the same
    order (training vs training) and ignores the diagonal. ``self_index`` instead gives, per
    generated set, the reference index to skip (-1: none), as in `memorization.metrics.similarity`;
    a row whose only reference is skipped gets ``inf``.
    """
    if exclude_self and self_index is not None:
        raise ValueError("give exclude_self=True or self_index, not both")
    d = pairwise_chamfer(generated, reference, squared, **kwargs)
    if exclude_self:
        if len(generated) != len(reference):
            raise ValueError("exclude_self needs the same sets on both sides")
        if len(reference) < 2:
            raise ValueError("exclude_self needs at least two reference sets")
        d.fill_diagonal_(float("inf"))
    if self_index is not None:
        skip = torch.as_tensor(self_index, dtype=torch.long).reshape(-1)
        if len(skip) != len(generated) or (skip >= len(reference)).any():
            raise ValueError(f"self_index must have one entry per generated set ({len(generated)}) with values "
                             f"< {len(reference)} (or -1)")
        rows = (skip >= 0).nonzero().flatten()
        d[rows, skip[rows]] = float("inf")
    values, index = d.min(dim=1)
    return values, index


def mmd(reference: Tensor, generated: Tensor, squared: bool = True, **kwargs) -> Tensor:
    """Minimum matching distance: mean over reference sets of the min CD to any generated set."""
    return pairwise_chamfer(reference, generated, squared, **kwargs).min(dim=1).values.mean()
