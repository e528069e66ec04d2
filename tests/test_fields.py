"""Occupancy fields (fitting, marching squares/cubes) and the Chamfer metrics, with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from memorization.fields import (
    FieldFitConfig,
    Shape,
    build_field_zoo,
    field_arch,
    field_surface_points,
    fit_fields,
    occupancy_spec,
    positional_encoding,
    random_shapes,
    render_2d,
    shape_surface_points,
)
from memorization.generators import create_generator
from memorization.metrics.fields import chamfer_distance, min_chamfer, mmd, pairwise_chamfer
from memorization.zoo.store import Zoo

SMALL = dict(hidden=[32, 32], n_frequencies=3, points_per_step=2048, lr=3e-3)


def test_published_field_has_36737_parameters():
    assert occupancy_spec(3, (128, 128, 128), 4).numel() == 36737
    assert occupancy_spec(3).names[:2] == ["layers.0.weight", "layers.0.bias"]
    assert occupancy_spec(3).shapes[0] == (128, 27)


def test_positional_encoding_layout():
    x = torch.tensor([[0.25, -0.5]])
    pe = positional_encoding(x, 2)
    assert pe.shape == (1, 10)
    expected = [0.25, -0.5, math.sin(math.pi / 4), math.sin(-math.pi / 2), math.sin(math.pi / 2), math.sin(-math.pi),
                math.cos(math.pi / 4), math.cos(-math.pi / 2), math.cos(math.pi / 2), math.cos(-math.pi)]
    torch.testing.assert_close(pe[0], torch.tensor(expected), atol=1e-6, rtol=0)


def test_rendered_disk_has_the_right_area_and_place():
    mask = render_2d(Shape("circle", [0.2, -0.3], 0.4), 512)
    pixel = (2 / 511) ** 2
    assert mask.sum() * pixel == pytest.approx(math.pi * 0.4**2, rel=0.01)
    ys, xs = np.nonzero(mask)
    assert (xs.mean() / 511 * 2 - 1, ys.mean() / 511 * 2 - 1) == pytest.approx((0.2, -0.3), abs=0.005)


def test_marching_squares_on_a_fitted_disk_recovers_the_circle():
    """Tolerance: 0.02 on the mean radius (1/3 of a cell of the 64-point grid used for labels ~ 0.03)."""
    center, radius = torch.tensor([0.1, -0.2]), 0.5
    params, stats = fit_fields([Shape("circle", center.tolist(), radius)], FieldFitConfig(**SMALL, steps=300),
                               progress=False)
    assert stats["iou"][0] > 0.95
    pts, ok = field_surface_points(field_arch(2, SMALL["hidden"], SMALL["n_frequencies"]), params, 2048, 128)
    assert ok.all() and pts.shape == (1, 2048, 2)
    r = (pts[0] - center).norm(dim=1)
    assert float(r.mean()) == pytest.approx(radius, abs=0.02)
    assert float(r.std()) < 0.02
    assert (pts[0].mean(0) - center).norm() < 0.02


def test_every_field_starts_from_the_first_fit():
    shapes = random_shapes(3, 2, seed=1)
    params, _ = fit_fields(shapes, FieldFitConfig(**SMALL, steps=0, first_steps=20), progress=False)
    assert torch.equal(params[1], params[0]) and torch.equal(params[2], params[0])
    fitted, _ = fit_fields(shapes, FieldFitConfig(**SMALL, steps=20, first_steps=20), progress=False)
    assert torch.equal(fitted[0], params[0]) and not torch.equal(fitted[1], params[0])


def test_field_zoo_round_trips_and_trains_a_generator(tmp_path):
    zoo = build_field_zoo(6, dim=2, seed=0, cfg=FieldFitConfig(**SMALL, steps=60, first_steps=200), progress=False)
    assert zoo.task == "fields2d" and zoo.n_test == 0 and len(zoo) == 6
    assert min(zoo.meta["accuracy"]) > 0.8
    again = Zoo.load(zoo.save(tmp_path / "fields.safetensors"))
    assert torch.equal(again.params, zoo.params) and again.meta["shape"] == zoo.meta["shape"]
    gen = create_generator("hyperdiffusion", chunk_size=64, d_model=16, depth=1, heads=2, steps=10, num_timesteps=10,
                           batch_size=4, progress=False, device="cpu").fit(zoo)
    samples = gen.sample(2)
    assert samples.shape == (2, zoo.spec.numel()) and torch.isfinite(samples).all()
    field_surface_points(zoo.arch, samples, 256, 64)  # runs on arbitrary (possibly empty) fields


def test_sphere_surface_points_lie_on_the_sphere():
    pts = shape_surface_points([Shape("sphere", [0.1, 0.0, -0.1], 0.5)], 2048, resolution=48)
    r = (pts[0] - torch.tensor([0.1, 0.0, -0.1])).norm(dim=1)
    assert float(r.mean()) == pytest.approx(0.5, abs=0.01)  # a quarter of a grid cell (2/47)
    assert pts.shape == (1, 2048, 3)


def test_marching_cubes_on_a_fitted_sphere_field():
    center = torch.tensor([0.1, 0.0, -0.1])
    cfg = FieldFitConfig(hidden=[32, 32], n_frequencies=2, points_per_step=4096, lr=3e-3, steps=200)
    params, stats = fit_fields([Shape("sphere", center.tolist(), 0.5)], cfg, progress=False)
    assert stats["iou"][0] > 0.95
    pts, ok = field_surface_points(field_arch(3, [32, 32], 2), params, 2048, 48)
    r = (pts[0] - center).norm(dim=1)
    assert ok.all() and float(r.mean()) == pytest.approx(0.5, abs=0.02) and float(r.std()) < 0.02


def test_a_field_without_surface_is_reported_not_faked():
    arch = field_arch(2, [8], 1)
    params = torch.zeros(1, occupancy_spec(2, [8], 1).numel())
    params[0, -1] = -5.0  # output bias: outside everywhere
    pts, ok = field_surface_points(arch, params, 64, 32)
    assert not ok[0] and torch.isnan(pts[0]).all()


def test_chamfer_known_answers():
    a = torch.tensor([[0.0, 0.0], [10.0, 0.0]])
    shifted = a + torch.tensor([0.1, 0.0])
    assert float(chamfer_distance(a, a)) == 0.0
    assert float(chamfer_distance(a, shifted)) == pytest.approx(0.02, rel=1e-5)       # 0.01 + 0.01
    assert float(chamfer_distance(a, shifted, squared=False)) == pytest.approx(0.2, rel=1e-5)
    # unequal sizes: B has an extra far point at distance 3 from A's nearest
    b = torch.tensor([[0.0, 0.0], [10.0, 0.0], [13.0, 0.0]])
    assert float(chamfer_distance(a, b)) == pytest.approx(0.0 + 9.0 / 3, rel=1e-6)
    with pytest.raises(ValueError, match="empty"):
        chamfer_distance(a, torch.zeros(0, 2))


def test_pairwise_min_and_mmd_agree_with_a_loop():
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(5, 40, 3, generator=g), torch.rand(7, 30, 3, generator=g)
    loop = torch.tensor([[float(chamfer_distance(xi, yj)) for yj in y] for xi in x])
    torch.testing.assert_close(pairwise_chamfer(x, y, chunk_pairs=3), loop)
    torch.testing.assert_close(pairwise_chamfer(x, y, chunk_pairs=64), loop)
    values, index = min_chamfer(x, y)
    torch.testing.assert_close(values, loop.min(1).values)
    assert torch.equal(index, loop.argmin(1))
    with pytest.raises(ValueError, match="without a surface"):
        pairwise_chamfer(torch.full((1, 4, 3), float("nan")), y)
    self_vals, self_idx = min_chamfer(x, x, exclude_self=True)
    assert (self_idx != torch.arange(5)).all() and (self_vals > 0).all()
    assert float(mmd(y, x)) == pytest.approx(float(loop.min(0).values.mean()), rel=1e-6)
