"""Permutation alignment of MLP hidden units, and the permutation-aligned min L2 distance.

Permuting the hidden units of an MLP layer (rows of its weight and bias, and the matching
columns of the next layer's weight) leaves the function unchanged but moves the parameter
vector, so plain L2 overstates how different two MLPs are. `align_mlp` permutes the hidden
units of a model to best match a reference: hidden unit j of layer l is described by its
incoming row ``W_l[j, :]`` (columns already in the aligned order of layer l-1), its bias
``b_l[j]`` and its outgoing column ``W_{l+1}[:, j]`` (rows in the current aligned order of layer
l+1), and units are matched by the Hungarian algorithm (`scipy.optimize.linear_sum_assignment`)
maximising the summed inner products, which minimises the summed squared distances of the
matched descriptors. Layers are solved one after another, first to last; for deeper MLPs the
sweep repeats (each layer re-solved given its neighbours) until no permutation changes
(`max_sweeps`), since a layer's outgoing columns depend on the next layer's permutation.
A one-hidden-layer MLP is solved exactly in one sweep; a hidden-unit permutation of the
reference is undone exactly (distance 0) at any depth.

The MLP structure is read from the `ParamSpec`: the 2-D ``*.weight`` parameters in order, each
followed by its ``*.bias``, with matching shapes (``memorization.zoo.archs.ZooMLP`` and any plain
Linear stack qualify).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from memorization.metrics.similarity import _check_self, min_l2


def mlp_layers(spec) -> list[tuple[str, str | None]]:
    """``[(weight name, bias name or None), ...]`` of a plain MLP spec, input to output; raises otherwise."""
    names, shapes = spec.names, dict(zip(spec.names, spec.shapes))
    layers = []
    for name in names:
        if not name.endswith("weight"):
            continue
        if len(shapes[name]) != 2:
            raise ValueError(f"{name} has shape {shapes[name]}: permutation alignment is for MLPs (2-D weights only)")
        bias = name[: -len("weight")] + "bias"
        layers.append((name, bias if bias in shapes else None))
    used = {n for pair in layers for n in pair if n}
    if used != set(names):
        raise ValueError(f"not a plain MLP spec: parameters {sorted(set(names) - used)} are not Linear weights/biases")
    for (w0, _), (w1, _) in zip(layers, layers[1:]):
        if shapes[w1][1] != shapes[w0][0]:
            raise ValueError(f"{w1} takes {shapes[w1][1]} inputs but {w0} gives {shapes[w0][0]}")
    if len(layers) < 2:
        raise ValueError("an MLP without hidden layers has nothing to permute")
    return layers


def permute_mlp(flat: Tensor, spec, perms: list[Tensor]) -> Tensor:
    """Row b of ``flat (B, P)`` gets hidden units reordered by ``perms[l][b]`` (new unit i = old unit perm[i])."""
    layers = mlp_layers(spec)
    if len(perms) != len(layers) - 1:
        raise ValueError(f"need {len(layers) - 1} permutations (one per hidden layer), got {len(perms)}")
    params = {k: v.clone() for k, v in spec.unflatten(flat).items()}
    for (w, b), (w_next, _), perm in zip(layers[:-1], layers[1:], perms):
        params[w] = params[w].gather(1, perm[:, :, None].expand(-1, -1, params[w].shape[-1]))
        if b:
            params[b] = params[b].gather(1, perm)
        params[w_next] = params[w_next].gather(2, perm[:, None, :].expand(-1, params[w_next].shape[1], -1))
    return spec.flatten(params)


def permute_hidden(flat: Tensor, spec, perms: list[np.ndarray | Tensor]) -> Tensor:
    """Apply one permutation per hidden layer to every row of ``flat (..., P)``: new unit i of layer li is
    old unit ``perms[li][i]`` (`permute_mlp` with the same permutations for all rows)."""
    rows = flat.reshape(-1, flat.shape[-1])
    shared = [torch.as_tensor(np.asarray(perm), dtype=torch.long, device=flat.device).expand(len(rows), -1)
              for perm in perms]
    return permute_mlp(rows, spec, shared).reshape(flat.shape)


def _descriptor(W: list[np.ndarray], B: list[np.ndarray | None], li: int, in_perm, out_perm) -> np.ndarray:
    """Rows = hidden units of layer li: [incoming row (inputs in in_perm order), bias, outgoing column]."""
    inc = W[li] if in_perm is None else W[li][:, in_perm]
    out = W[li + 1] if out_perm is None else W[li + 1][out_perm, :]
    parts = [inc] + ([B[li][:, None]] if B[li] is not None else []) + [out.T]
    return np.concatenate(parts, 1)


def align_mlp(flat: Tensor, reference: Tensor, spec, max_sweeps: int = 10) -> tuple[Tensor, list[np.ndarray]]:
    """Permute the hidden units of `flat` (P,) to match `reference` (P,); returns (aligned (P,), perms)."""
    layers = mlp_layers(spec)
    x = spec.unflatten(flat.detach().cpu().double())
    r = spec.unflatten(reference.detach().cpu().double())
    W = [x[w].numpy() for w, _ in layers]
    B = [x[b].numpy() if b else None for _, b in layers]
    Wr = [r[w].numpy() for w, _ in layers]
    Br = [r[b].numpy() if b else None for _, b in layers]
    hidden = len(layers) - 1
    refs = [_descriptor(Wr, Br, li, None, None) for li in range(hidden)]  # the reference never moves
    perms: list[np.ndarray] = [np.arange(W[li].shape[0]) for li in range(hidden)]
    for _ in range(max(1, max_sweeps) if hidden > 1 else 1):
        changed = False
        for li in range(hidden):
            in_perm = perms[li - 1] if li > 0 else None
            out_perm = perms[li + 1] if li + 1 < hidden else None
            mine = _descriptor(W, B, li, in_perm, out_perm)
            _, col = linear_sum_assignment(refs[li] @ mine.T, maximize=True)
            if not np.array_equal(col, perms[li]):
                perms[li], changed = col, True
        if not changed:
            break
    return permute_hidden(flat.detach().cpu().float(), spec, perms), perms


def aligned_min_l2(gen: Tensor, train: Tensor, spec, exclude_self: bool = False, self_index: Tensor | None = None,
                   candidates: int | None = None, max_sweeps: int = 10) -> tuple[Tensor, Tensor]:
    """Per generated MLP, the smallest L2 distance to any training MLP after aligning it to that model.

    ``candidates=None``: every (generated, training) pair is aligned (exact; n x m Hungarian
    problems). ``candidates=k``: all models are first aligned to one anchor (training model 0),
    the k nearest training models in that common frame are taken as candidates, and only those
    pairs are aligned exactly: the result is then an upper bound of the all-pairs value (equal
    when the true nearest is among the candidates). Returns ``(values (n,), argmin (n,))``.
    """
    n, m = gen.shape[0], train.shape[0]
    self_index = _check_self(n, m, exclude_self, self_index)
    skip = torch.arange(n) if exclude_self else (self_index if self_index is not None else torch.full((n,), -1))
    if candidates is None or candidates >= m:
        cand = [list(range(m)) for _ in range(n)]
    else:
        anchor = train[0]
        canon_train = torch.stack([align_mlp(t, anchor, spec, max_sweeps)[0] for t in train])
        canon_gen = torch.stack([align_mlp(g, anchor, spec, max_sweeps)[0] for g in gen])
        d = torch.cdist(canon_gen.float(), canon_train.float())
        d[torch.arange(n)[skip >= 0], skip[skip >= 0]] = float("inf")
        cand = d.topk(min(int(candidates), m), dim=1, largest=False).indices.tolist()
    values, argmin = torch.empty(n), torch.empty(n, dtype=torch.long)
    for i in range(n):
        best, best_j = float("inf"), -1
        for j in cand[i]:
            if j == int(skip[i]):
                continue
            aligned, _ = align_mlp(gen[i], train[j], spec, max_sweeps)
            dist = float((aligned.double() - train[j].detach().cpu().double()).norm())
            if dist < best:
                best, best_j = dist, j
        values[i], argmin[i] = best, best_j
    return values, argmin


__all__ = ["mlp_layers", "permute_mlp", "permute_hidden", "align_mlp", "aligned_min_l2", "min_l2"]
