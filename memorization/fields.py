"""Occupancy fields (HyperDiffusion's training data, in 2-D and 3-D) as a model zoo.

A field is a small MLP ``f(x) -> logit`` with positional encoding ``[x, sin(2^k pi x), cos(2^k pi x)]``
for k < ``n_frequencies``; ``f > 0`` inside the shape. Published: 3-D, 3 hidden layers of 128,
4 frequencies, ReLU: 27 inputs and exactly 36,737 parameters (``occupancy_spec(3)`` reproduces it).
Parameters are named ``layers.{i}.weight`` / ``layers.{i}.bias`` like the zoo MLPs, so permutation
tools (`memorization.generators.permutation`) apply.

Shapes: 2-D circles, regular polygons and stars of random size and position, rasterised with
OpenCV (sub-pixel polygon fill); 3-D spheres, boxes and tori as analytic occupancy functions.

Fitting (`fit_fields`), as published: the first shape is fitted from a seeded random init; every
other shape starts from that fit. All shapes of a chunk are optimised at once: their parameters
are one ``(S, P)`` leaf tensor, the forward pass is ``vmap(functional_call)`` over the shape axis,
and since each shape's loss depends only on its own row, one Adam over the stack is S
independent Adams. Each step draws fresh uniform points in ``[-1, 1]^d`` (seeded), labelled by
the true occupancy; the loss is binary cross-entropy on the logits.

Shapes back from fields: marching squares (`skimage.measure.find_contours`) and marching cubes
(`skimage.measure.marching_cubes`) of the logits on a grid at level 0, then ``n_points``
surface points sampled uniformly by arc length / triangle area (2,048 as published).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bias.core.progress import progress_bar
from memorization.zoo.functional import stacked_forward
from memorization.zoo.store import ParamSpec, Zoo

SHAPES_2D = ("circle", "polygon", "star")
SHAPES_3D = ("sphere", "box", "torus")


# -- the field network --------------------------------------------------------------------------
def positional_encoding(x: Tensor, n_frequencies: int) -> Tensor:
    """``(..., d)`` -> ``(..., d * (1 + 2 * n_frequencies))``: the input, then sin and cos at 2^k * pi."""
    if n_frequencies == 0:
        return x
    freqs = (2.0 ** torch.arange(n_frequencies, device=x.device, dtype=x.dtype)) * math.pi
    angles = (x[..., None, :] * freqs[:, None]).flatten(-2)
    return torch.cat([x, torch.sin(angles), torch.cos(angles)], dim=-1)


class OccupancyMLP(nn.Module):
    """Positional encoding -> (Linear -> ReLU) x len(hidden) -> Linear(1); returns logits ``(..., )``."""

    def __init__(self, dim: int = 3, hidden: Sequence[int] = (128, 128, 128), n_frequencies: int = 4) -> None:
        super().__init__()
        if dim not in (2, 3):
            raise ValueError(f"occupancy fields are 2-D or 3-D, got dim={dim}")
        self.dim, self.n_frequencies = dim, int(n_frequencies)
        width = dim * (1 + 2 * self.n_frequencies)
        layers = []
        for h in hidden:
            layers.append(nn.Linear(width, int(h)))
            width = int(h)
        layers.append(nn.Linear(width, 1))
        self.layers = nn.ModuleList(layers)

    def forward(self, x: Tensor) -> Tensor:
        h = positional_encoding(x, self.n_frequencies)
        for layer in self.layers[:-1]:
            h = F.relu(layer(h))
        return self.layers[-1](h)[..., 0]


def field_arch(dim: int = 3, hidden: Sequence[int] = (128, 128, 128), n_frequencies: int = 4) -> dict[str, Any]:
    return {"name": "occupancy_mlp", "dim": int(dim), "hidden": [int(h) for h in hidden], "n_frequencies": int(n_frequencies)}


def build_field(arch: dict[str, Any]) -> OccupancyMLP:
    if arch.get("name") != "occupancy_mlp":
        raise ValueError(f"not an occupancy-field arch: {arch}")
    return OccupancyMLP(arch["dim"], arch["hidden"], arch["n_frequencies"])


def occupancy_spec(dim: int = 3, hidden: Sequence[int] = (128, 128, 128), n_frequencies: int = 4) -> ParamSpec:
    return ParamSpec.from_module(OccupancyMLP(dim, hidden, n_frequencies))


def field_logits(arch: dict[str, Any], params: Tensor, points: Tensor, chunk: int = 64) -> Tensor:
    """Logits ``(n, N)`` of n fields (flat ``(n, P)``) at shared points ``(N, d)``; chunked over fields."""
    model = build_field(arch).to(params.device)
    spec = ParamSpec.from_module(model)
    with torch.no_grad():
        return torch.cat([stacked_forward(model, spec.unflatten(p), points, True) for p in params.split(chunk)])


# -- shapes --------------------------------------------------------------------------------------
@dataclass
class Shape:
    """One random shape: ``kind`` plus its parameters (centre, size, ...) in ``[-1, 1]^d`` coordinates."""

    kind: str
    center: list[float]
    size: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def dim(self) -> int:
        return len(self.center)


def random_shapes(n: int, dim: int = 2, seed: int = 0, kinds: Sequence[str] | None = None,
                  size_range: tuple[float, float] = (0.25, 0.6)) -> list[Shape]:
    """``n`` seeded random shapes that stay inside ``[-0.9, 0.9]^d``."""
    kinds = list(kinds or (SHAPES_2D if dim == 2 else SHAPES_3D))
    allowed = SHAPES_2D if dim == 2 else SHAPES_3D
    bad = [k for k in kinds if k not in allowed]
    if bad:
        raise ValueError(f"unknown {dim}-D shape kinds {bad}; choose from {allowed}")
    rng = np.random.default_rng(seed)
    shapes = []
    for _ in range(n):
        kind = kinds[rng.integers(len(kinds))]
        size = float(rng.uniform(*size_range))
        reach = size * (1.0 if kind != "torus" else 1.4)
        center = rng.uniform(-0.9 + reach, 0.9 - reach, dim) if reach < 0.9 else np.zeros(dim)
        extra: dict[str, Any] = {"angle": float(rng.uniform(0, 2 * math.pi))}
        if kind == "polygon":
            extra["sides"] = int(rng.integers(3, 9))
        elif kind == "star":
            extra.update(tips=int(rng.integers(4, 8)), inner_ratio=float(rng.uniform(0.4, 0.6)))
        elif kind == "box":
            extra["aspect"] = [float(a) for a in rng.uniform(0.5, 1.0, 3)]
        elif kind == "torus":
            extra["tube_ratio"] = float(rng.uniform(0.25, 0.45))
        shapes.append(Shape(kind, [float(c) for c in center], size, extra))
    return shapes


def _outline_2d(shape: Shape) -> np.ndarray:
    """Polygon vertices ``(K, 2)`` in ``[-1, 1]`` coordinates (x, y); a circle is a 256-gon."""
    angle = shape.extra.get("angle", 0.0)
    if shape.kind == "circle":
        t = np.linspace(0, 2 * np.pi, 256, endpoint=False)
        radii = np.full_like(t, shape.size)
    elif shape.kind == "polygon":
        t = angle + np.linspace(0, 2 * np.pi, shape.extra["sides"], endpoint=False)
        radii = np.full_like(t, shape.size)
    elif shape.kind == "star":
        tips = shape.extra["tips"]
        t = angle + np.linspace(0, 2 * np.pi, 2 * tips, endpoint=False)
        radii = np.where(np.arange(2 * tips) % 2 == 0, shape.size, shape.size * shape.extra["inner_ratio"])
    else:
        raise ValueError(f"not a 2-D shape kind: {shape.kind!r}")
    return np.stack([shape.center[0] + radii * np.cos(t), shape.center[1] + radii * np.sin(t)], axis=1)


def render_2d(shape: Shape, resolution: int = 256) -> np.ndarray:
    """Boolean mask ``(R, R)``; row i is y = linspace(-1, 1, R)[i], column j is x = linspace(-1, 1, R)[j]."""
    shift = 4
    pixels = (_outline_2d(shape) + 1.0) / 2.0 * (resolution - 1)
    mask = np.zeros((resolution, resolution), np.uint8)
    cv2.fillPoly(mask, [np.round(pixels * (1 << shift)).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=shift)
    return mask.astype(bool)


def occupancy_3d(shape: Shape, points: Tensor) -> Tensor:
    """Analytic inside/outside ``(N,)`` bool of a sphere, box or torus at points ``(N, 3)``."""
    p = points - torch.tensor(shape.center, dtype=points.dtype, device=points.device)
    if shape.kind == "sphere":
        return p.norm(dim=-1) <= shape.size
    if shape.kind == "box":
        half = shape.size * torch.tensor(shape.extra["aspect"], dtype=points.dtype, device=points.device)
        return (p.abs() <= half).all(dim=-1)
    if shape.kind == "torus":
        tube = shape.size * shape.extra["tube_ratio"]
        ring = torch.sqrt(p[:, 0] ** 2 + p[:, 1] ** 2) - shape.size
        return ring ** 2 + p[:, 2] ** 2 <= tube ** 2
    raise ValueError(f"not a 3-D shape kind: {shape.kind!r}")


class OccupancyLabels:
    """Ground-truth occupancy of many shapes at shared points: ``labels(points (N, d)) -> (S, N)`` float."""

    def __init__(self, shapes: Sequence[Shape], resolution: int = 256) -> None:
        dims = {s.dim for s in shapes}
        if len(dims) != 1:
            raise ValueError(f"all shapes must have the same dimension, got {sorted(dims)}")
        self.shapes, self.dim, self.resolution = list(shapes), dims.pop(), resolution
        self.masks = torch.from_numpy(np.stack([render_2d(s, resolution) for s in shapes])) if self.dim == 2 else None

    def __call__(self, points: Tensor, rows: slice | None = None) -> Tensor:
        rows = rows or slice(None)
        if self.dim == 2:
            ij = ((points.cpu() + 1.0) / 2.0 * (self.resolution - 1)).round().long().clamp(0, self.resolution - 1)
            out = self.masks[rows][:, ij[:, 1], ij[:, 0]]
        else:
            out = torch.stack([occupancy_3d(s, points.cpu()) for s in self.shapes[rows]])
        return out.float().to(points.device)


# -- fitting -------------------------------------------------------------------------------------
@dataclass
class FieldFitConfig:
    """How fields are fitted. ``hidden``/``n_frequencies`` published: (128, 128, 128) / 4 (3-D)."""

    hidden: list[int] = field(default_factory=lambda: [128, 128, 128])
    n_frequencies: int = 4
    steps: int = 2000
    first_steps: int | None = None      # steps for the first shape (default: steps)
    lr: float = 1e-3
    points_per_step: int = 4096
    batch_shapes: int = 64
    label_resolution: int = 256         # 2-D rasterisation used for labels
    eval_points: int = 16384
    seed: int = 0


def _fit_chunk(model: nn.Module, spec: ParamSpec, init: Tensor, labels: OccupancyLabels, rows: slice, steps: int,
               cfg: FieldFitConfig, gen: torch.Generator, desc: str, progress: bool) -> tuple[Tensor, Tensor]:
    params = init.clone().requires_grad_(True)
    opt = torch.optim.Adam([params], lr=cfg.lr)
    dev, dim = init.device, labels.dim

    def losses() -> Tensor:
        pts = (torch.rand(cfg.points_per_step, dim, generator=gen) * 2 - 1).to(dev)
        logits = stacked_forward(model, spec.unflatten(params), pts, True)
        return F.binary_cross_entropy_with_logits(logits, labels(pts, rows), reduction="none").mean(1)

    for _ in progress_bar(range(steps), desc=desc, leave=False, disable=not progress):
        opt.zero_grad(set_to_none=True)
        losses().sum().backward()  # each row's loss depends on its own params only: S independent fits
        opt.step()
    with torch.no_grad():
        return params.detach(), losses()


def fit_fields(shapes: Sequence[Shape], cfg: FieldFitConfig | None = None, device: str = "cpu",
               progress: bool = True) -> tuple[Tensor, dict[str, list]]:
    """Fit one occupancy field per shape; returns ``(params (S, P), stats)`` with per-shape loss and accuracy."""
    cfg = cfg or FieldFitConfig()
    labels = OccupancyLabels(shapes, cfg.label_resolution)
    dev = torch.device(device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = OccupancyMLP(labels.dim, cfg.hidden, cfg.n_frequencies)
    spec = ParamSpec.from_module(model)
    model.to(dev)
    init = spec.flatten(dict(model.state_dict()))[None].to(dev)
    gen = torch.Generator().manual_seed(cfg.seed)
    first, first_loss = _fit_chunk(model, spec, init, labels, slice(0, 1), cfg.steps if cfg.first_steps is None else cfg.first_steps, cfg, gen,
                                   "fitting the first field", progress)
    params, losses = [first], [first_loss]
    n = len(shapes)
    for a in progress_bar(range(1, n, cfg.batch_shapes), desc="fitting fields", leave=False, disable=not progress or n <= 1):
        b = min(a + cfg.batch_shapes, n)
        chunk_params, chunk_loss = _fit_chunk(model, spec, first.expand(b - a, -1), labels, slice(a, b), cfg.steps,
                                              cfg, gen, f"fields {a}-{b - 1}", progress)
        params.append(chunk_params)
        losses.append(chunk_loss)
    params_t = torch.cat(params)
    eval_gen = torch.Generator().manual_seed(cfg.seed + 1)
    pts = (torch.rand(cfg.eval_points, labels.dim, generator=eval_gen) * 2 - 1).to(dev)
    pred = field_logits(field_arch(labels.dim, cfg.hidden, cfg.n_frequencies), params_t, pts) > 0
    truth = labels(pts) > 0.5
    inter, union = (pred & truth).sum(1).float(), (pred | truth).sum(1).float()
    stats = {"loss": torch.cat(losses).tolist(), "accuracy": (pred == truth).float().mean(1).tolist(),
             "iou": (inter / union.clamp_min(1)).tolist()}
    return params_t.cpu(), stats


def field_zoo_config(n_shapes: int, dim: int = 2, seed: int = 0, kinds: Sequence[str] | None = None,
                     cfg: FieldFitConfig | None = None) -> dict[str, Any]:
    """The canonical config of a field zoo (what `build_field_zoo` records and `config_hash` covers)."""
    cfg = cfg or FieldFitConfig(seed=seed)
    return {"n_shapes": n_shapes, "dim": dim, "seed": seed, "kinds": list(kinds or []), "fit": asdict(cfg)}


def build_field_zoo(n_shapes: int, dim: int = 2, seed: int = 0, kinds: Sequence[str] | None = None,
                    cfg: FieldFitConfig | None = None, device: str = "cpu", progress: bool = True,
                    out: str | os.PathLike | None = None, overwrite: bool = False) -> Zoo:
    """A Zoo of fitted occupancy fields (task ``"fields2d"`` / ``"fields3d"``).

    ``meta``: model_id, run (= shape index), seed, step (fitting steps), accuracy (occupancy
    accuracy on ``eval_points`` uniform points), loss (final BCE), iou, regime ``"fields"``, kind and
    the shape's parameters (``shape``, JSON). ``error_masks`` is ``(n, 0)``: fields have no shared
    classification test set; use the Chamfer metrics of `memorization.metrics.fields`.

    ``out``: as in `memorization.zoo.build_zoo`, a file built from the same config is loaded
    instead of refitted, the new zoo is written there, and a file of another config is never
    overwritten unless ``overwrite=True``.
    """
    from memorization.zoo.build import reuse_zoo

    cfg = cfg or FieldFitConfig(seed=seed)
    config = field_zoo_config(n_shapes, dim, seed, kinds, cfg)
    reused = reuse_zoo(out, config, overwrite)
    if reused is not None:
        return reused
    shapes = random_shapes(n_shapes, dim, seed, kinds)
    params, stats = fit_fields(shapes, cfg, device, progress)
    arch = field_arch(dim, cfg.hidden, cfg.n_frequencies)
    meta = {"model_id": list(range(n_shapes)), "run": list(range(n_shapes)), "seed": [seed] * n_shapes,
            "step": [cfg.steps] * n_shapes, "accuracy": stats["accuracy"], "loss": stats["loss"], "iou": stats["iou"],
            "regime": ["fields"] * n_shapes, "kind": [s.kind for s in shapes], "shape": [asdict(s) for s in shapes]}
    zoo = Zoo(task=f"fields{dim}d", arch=arch, spec=occupancy_spec(dim, cfg.hidden, cfg.n_frequencies), params=params,
              meta=meta, error_masks=torch.zeros(n_shapes, 0, dtype=torch.bool), config=config)
    if out is not None:
        zoo.save(out)
    return zoo


# -- surfaces ------------------------------------------------------------------------------------
def grid_points(dim: int, resolution: int) -> Tensor:
    """``(R^d, d)`` points of a ``linspace(-1, 1, R)`` grid, (x, y[, z]) order, 'ij' indexing over (x, y, z)."""
    axis = torch.linspace(-1, 1, resolution)
    mesh = torch.meshgrid(*([axis] * dim), indexing="ij")
    return torch.stack(mesh, dim=-1).reshape(-1, dim)


def surface_points(grid: np.ndarray, n_points: int = 2048, seed: int = 0, level: float = 0.0) -> np.ndarray | None:
    """Points ``(n_points, d)`` uniformly on the level set of a grid of values (indexed [x, y(, z)] over
    ``linspace(-1, 1, R)``): marching squares / cubes, then sampling by length / area. None if empty."""
    rng = np.random.default_rng(seed)
    R = grid.shape[0]
    scale = 2.0 / (R - 1)
    if grid.min() > level or grid.max() < level:
        return None
    if grid.ndim == 2:
        segments = []
        for contour in _find_contours(grid, level):
            if len(contour) >= 2:
                segments.append(np.stack([contour[:-1], contour[1:]], axis=1))
        if not segments:
            return None
        seg = np.concatenate(segments)                       # (K, 2 ends, 2)
        lengths = np.linalg.norm(seg[:, 1] - seg[:, 0], axis=1)
        if lengths.sum() == 0:
            return None
        pick = rng.choice(len(seg), n_points, p=lengths / lengths.sum())
        u = rng.random((n_points, 1))
        pts = seg[pick, 0] + u * (seg[pick, 1] - seg[pick, 0])
    elif grid.ndim == 3:
        from skimage.measure import marching_cubes

        verts, faces, _, _ = marching_cubes(grid, level)
        tri = verts[faces]                                   # (F, 3, 3)
        areas = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
        if areas.sum() == 0:
            return None
        pick = rng.choice(len(tri), n_points, p=areas / areas.sum())
        r1, r2 = rng.random((2, n_points, 1))
        s = np.sqrt(r1)
        t = tri[pick]
        pts = (1 - s) * t[:, 0] + s * (1 - r2) * t[:, 1] + s * r2 * t[:, 2]
    else:
        raise ValueError(f"grid must be 2-D or 3-D, got shape {grid.shape}")
    return (pts * scale - 1.0).astype(np.float32)


def _find_contours(grid: np.ndarray, level: float) -> list[np.ndarray]:
    from skimage.measure import find_contours

    return find_contours(grid, level)


def field_surface_points(arch: dict[str, Any], params: Tensor, n_points: int = 2048, resolution: int | None = None,
                         seed: int = 0, chunk: int = 16) -> tuple[Tensor, Tensor]:
    """Surface points ``(n, n_points, d)`` of n fields and a bool ``ok`` ``(n,)``; rows with no surface are NaN."""
    dim = arch["dim"]
    resolution = resolution or (256 if dim == 2 else 64)
    pts = grid_points(dim, resolution).to(params.device)
    out = torch.full((len(params), n_points, dim), float("nan"))
    ok = torch.zeros(len(params), dtype=torch.bool)
    for a in range(0, len(params), chunk):
        logits = field_logits(arch, params[a:a + chunk], pts).cpu().numpy()
        for i, values in enumerate(logits):
            p = surface_points(values.reshape([resolution] * dim), n_points, seed + a + i)
            if p is not None:
                out[a + i], ok[a + i] = torch.from_numpy(p), True
    return out, ok


def shape_surface_points(shapes: Sequence[Shape], n_points: int = 2048, resolution: int | None = None,
                         seed: int = 0) -> Tensor:
    """Ground-truth surface points ``(n, n_points, d)`` of shapes (from the occupancy on a grid)."""
    dim = shapes[0].dim
    resolution = resolution or (256 if dim == 2 else 64)
    pts = grid_points(dim, resolution)
    occ = OccupancyLabels(shapes, max(resolution, 256))(pts)
    out = []
    for i, values in enumerate(occ.numpy()):
        p = surface_points(values.reshape([resolution] * dim) - 0.5, n_points, seed + i)
        if p is None:
            raise ValueError(f"shape {i} ({shapes[i].kind}) has no surface at resolution {resolution}")
        out.append(torch.from_numpy(p))
    return torch.stack(out)
