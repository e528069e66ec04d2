"""Behavioural and weight-space novelty: error-mask IoU, max similarity to training, min L2 to training.

All pairwise quantities are computed as chunked matrix products, never as Python loops over
pairs, and never materialise more than ``chunk x m`` of an ``n x m`` matrix unless asked to
(`error_iou` returns the whole matrix; `max_similarity` and `min_l2` only reduce it).

Self-exclusion is explicit, never by object identity: ``exclude_self=True`` says the two sets
are the same set in the same order (row i is column i); ``self_index`` gives, per query row,
the reference index to skip (-1: none), e.g. for a generated set that contains copies.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

IOU_EPS = 1e-8


def _device(device: str | torch.device | None, *tensors: Tensor) -> torch.device:
    return torch.device(device) if device is not None else tensors[0].device


def _check_masks(a: Tensor, b: Tensor) -> None:
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"error masks must be (n, T) and (m, T) with the same T, got {tuple(a.shape)}, {tuple(b.shape)}")


def _check_dtype(dtype: torch.dtype, n_test: int) -> None:
    exact = {torch.float16: 2048, torch.bfloat16: 256, torch.float32: 2 ** 24, torch.float64: 2 ** 53}
    if dtype not in exact:
        raise ValueError(f"dtype must be a float type, got {dtype}")
    if n_test > exact[dtype]:
        raise ValueError(f"{dtype} counts are exact only up to {exact[dtype]} test samples, masks have {n_test}; "
                         "use torch.float32")


def _self_mask(rows: slice, n_ref: int, exclude_self: bool, self_index: Tensor | None, device) -> Tensor | None:
    """``(rows, n_ref)`` bool, True where a pair must be skipped."""
    if not exclude_self and self_index is None:
        return None
    idx = torch.arange(rows.start, rows.stop, device=device) if exclude_self else self_index[rows].to(device)
    skip = torch.zeros(len(idx), n_ref, dtype=torch.bool, device=device)
    ok = idx >= 0
    skip[ok.nonzero().squeeze(1), idx[ok]] = True
    return skip


def _check_self(n: int, m: int, exclude_self: bool, self_index: Tensor | None) -> Tensor | None:
    if exclude_self and self_index is not None:
        raise ValueError("give exclude_self=True or self_index, not both")
    if exclude_self and n != m:
        raise ValueError(f"exclude_self=True means both sets are the same set, but they have {n} and {m} rows; "
                         "pass self_index= to exclude specific pairs")
    if self_index is not None:
        self_index = torch.as_tensor(self_index, dtype=torch.long).reshape(-1)
        if len(self_index) != n or (self_index >= m).any():
            raise ValueError(f"self_index must have one entry per query row ({n}) with values < {m} (or -1)")
    excluded_all = m - (1 if exclude_self else 0) < 1
    if excluded_all:
        raise ValueError("nothing to compare with: the reference set has only the excluded model")
    return self_index


def _iou_reference(b: Tensor, dev: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """The reference masks as 0/1 `dtype` on `dev`, and their error counts (float32)."""
    bf = b.to(dev, dtype)
    return bf, bf.float().sum(1)


def _iou_chunk(a: Tensor, bf: Tensor, nb: Tensor) -> Tensor:
    """IoU ``(c, m)`` of the masks `a` ``(c, T)`` with the prepared reference (`_iou_reference`)."""
    af = a.to(bf.device, bf.dtype)
    inter = (af @ bf.T).float()
    return inter / (af.float().sum(1, keepdim=True) + nb[None] - inter + IOU_EPS)


def error_iou(a: Tensor, b: Tensor | None = None, chunk: int = 4096, device: str | torch.device | None = None,
              dtype: torch.dtype = torch.float32) -> Tensor:
    """IoU of error sets, all pairs: ``|Ea & Eb| / (|Ea | Eb| + 1e-8)`` -> ``(n, m)`` float32 on CPU.

    Intersections are ``A @ B.T`` of the 0/1 masks (exact counts in float32 up to 2**24 test
    samples), unions ``|A| + |B| - intersection``; ``b=None`` compares `a` with itself.
    """
    b = a if b is None else b
    _check_masks(a, b)
    _check_dtype(dtype, a.shape[1])
    bf, nb = _iou_reference(b, _device(device, a), dtype)
    out = torch.empty(a.shape[0], b.shape[0])
    for start in range(0, a.shape[0], chunk):
        out[start:start + chunk] = _iou_chunk(a[start:start + chunk], bf, nb).cpu()
    return out


def max_similarity(gen_masks: Tensor, train_masks: Tensor, exclude_self: bool = False,
                   self_index: Tensor | None = None, chunk: int = 2048, device: str | torch.device | None = None,
                   dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
    """Per generated model, the largest error-IoU with any training model (lower = more novel).

    Returns ``(values (n,), argmax (n,))``; excluded pairs (see the module docstring) never win.
    """
    _check_masks(gen_masks, train_masks)
    _check_dtype(dtype, gen_masks.shape[1])
    n, m = gen_masks.shape[0], train_masks.shape[0]
    self_index = _check_self(n, m, exclude_self, self_index)
    dev = _device(device, gen_masks)
    bf, nb = _iou_reference(train_masks, dev, dtype)
    values, argmax = torch.empty(n), torch.empty(n, dtype=torch.long)
    for start in range(0, n, chunk):
        rows = slice(start, min(n, start + chunk))
        iou = _iou_chunk(gen_masks[rows], bf, nb)
        skip = _self_mask(rows, m, exclude_self, self_index, dev)
        if skip is not None:
            iou = iou.masked_fill(skip, -1.0)
        v, i = iou.max(1)
        values[rows], argmax[rows] = v.cpu(), i.cpu()
    return values, argmax


def min_l2(gen: Tensor, train: Tensor, exclude_self: bool = False, self_index: Tensor | None = None,
           chunk: int = 1024, refine: int = 8, device: str | torch.device | None = None) -> tuple[Tensor, Tensor]:
    """Per generated vector, the smallest L2 distance to any training vector: ``(values (n,), argmin (n,))``.

    Distances are first ranked with the fast matrix-product form of `torch.cdist` (chunked), which
    loses precision for nearly equal vectors (a copy would show a distance of ~1e-3, not 0); the
    `refine` best candidates of every row are then recomputed exactly as ``||g - t||``, so exact
    copies give exactly 0 and the reported minimum is exact whenever the true nearest neighbour is
    among the candidates (ties within the matmul error, ~1e-6 relative, can reorder).
    """
    if gen.ndim != 2 or train.ndim != 2 or gen.shape[1] != train.shape[1]:
        raise ValueError(f"expected (n, P) and (m, P) with the same P, got {tuple(gen.shape)}, {tuple(train.shape)}")
    n, m = gen.shape[0], train.shape[0]
    self_index = _check_self(n, m, exclude_self, self_index)
    dev = _device(device, gen)
    t = train.to(dev, torch.float32)
    k = max(1, min(int(refine), m - (1 if exclude_self or self_index is not None else 0)))
    values, argmin = torch.empty(n), torch.empty(n, dtype=torch.long)
    for start in range(0, n, chunk):
        rows = slice(start, min(n, start + chunk))
        g = gen[rows].to(dev, torch.float32)
        d = torch.cdist(g, t, compute_mode="use_mm_for_euclid_dist")
        skip = _self_mask(rows, m, exclude_self, self_index, dev)
        if skip is not None:
            d = d.masked_fill(skip, float("inf"))
        cand = d.topk(k, dim=1, largest=False).indices                      # (c, k)
        exact = torch.stack([(g - t[cand[:, j]]).norm(dim=1) for j in range(k)], 1)  # (c, k), memory c x P
        v, j = exact.min(1)
        values[rows], argmin[rows] = v.cpu(), cand.gather(1, j[:, None]).squeeze(1).cpu()
    return values, argmin


def streamed_min_l2(query_columns: Callable[[int], Tensor], n_blocks: int, n: int,
                    ref_columns: Callable[[int], Tensor] | None = None, m: int | None = None,
                    exclude_self: bool = False, self_index: Tensor | None = None, refine: int = 8,
                    max_values: int = 2 ** 20) -> tuple[Tensor, Tensor]:
    """`min_l2` for sets too large to hold: the vectors arrive as coordinate blocks, never whole.

    ``query_columns(b)`` returns block b of every query vector, ``(n, c_b)``; ``ref_columns(b)`` the same
    block of every reference vector (None: the query set itself, read once per block, and
    ``exclude_self`` may then be set). Pass 1 accumulates the squared distances of all pairs over the
    blocks, ``||q||^2 + ||r||^2 - 2 q.r`` (float32 matrix products, float64 sums; an ``n x m`` float64
    matrix: 8 MB for 1,000 x 1,000); pass 2 reads the blocks again and recomputes the `refine` best
    candidates of every row exactly (``sum (q - r)^2`` in float64), so copies give exactly 0 as in
    `min_l2`. Peak memory: the matrix, one block of both sets, and ``max_values`` float64 differences.
    """
    same = ref_columns is None
    m = n if same else int(m)
    self_index = _check_self(n, m, exclude_self, self_index)
    sq = torch.zeros(n, m, dtype=torch.float64)
    for b in range(n_blocks):
        q = query_columns(b).float()
        r = q if same else ref_columns(b).float()
        qn = torch.linalg.vector_norm(q, dim=1, dtype=torch.float64) ** 2
        rn = qn if same else torch.linalg.vector_norm(r, dim=1, dtype=torch.float64) ** 2
        sq += qn[:, None] + rn[None] - 2.0 * (q @ r.T).double()
    skip = _self_mask(slice(0, n), m, exclude_self, self_index, sq.device)
    if skip is not None:
        sq = sq.masked_fill(skip, float("inf"))
    k = max(1, min(int(refine), m - (1 if exclude_self or self_index is not None else 0)))
    cand = sq.topk(k, dim=1, largest=False).indices                      # (n, k)
    del sq
    exact = torch.zeros(n, k, dtype=torch.float64)
    for b in range(n_blocks):
        q = query_columns(b).float()
        r = q if same else ref_columns(b).float()
        rows = max(1, int(max_values) // max(1, q.shape[1]))
        for a in range(0, n, rows):
            qa = q[a:a + rows].double()
            for j in range(k):
                d = qa - r[cand[a:a + rows, j]].double()
                exact[a:a + rows, j] += (d * d).sum(1)
    v, j = exact.min(1)
    return v.sqrt().float(), cand.gather(1, j[:, None]).squeeze(1)


def tensor_blocks(x: Tensor, block: int) -> tuple[Callable[[int], Tensor], int]:
    """``(columns(b), n_blocks)`` of an in-memory ``(n, P)`` tensor cut into `block`-coordinate blocks."""
    n_blocks = max(1, -(-x.shape[1] // int(block)))
    return (lambda b: x[:, b * block:(b + 1) * block]), n_blocks
