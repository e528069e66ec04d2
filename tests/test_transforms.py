"""Built-in transforms: known answers, invariants, reproducibility, registry and configs."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from transforms import create_transform, list_transforms
from transforms.classical.shuffle import shuffle_patches
from transforms.registry import UnknownTransformError

REPO = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO / "configs" / "transform"
BUILTIN = ["canny", "hpf", "lpf", "mean_rgb", "patch_shuffle", "pixel_shuffle", "reference"]


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def cosine(h: int, w: int, ky: int, kx: int) -> torch.Tensor:
    """cos(2 pi (ky y / h + kx x / w)) in float64: all its energy sits at frequencies +-(ky, kx)."""
    y = torch.arange(h, dtype=torch.float64)[:, None]
    x = torch.arange(w, dtype=torch.float64)[None, :]
    return torch.cos(2 * math.pi * (ky * y / h + kx * x / w))


# --- registry and configs ---------------------------------------------------------------------
def test_registry_lists_all_builtins() -> None:
    assert set(BUILTIN) <= set(list_transforms())


def test_unknown_name_lists_valid_names() -> None:
    with pytest.raises(UnknownTransformError) as err:
        create_transform("no_such_transform")
    message = str(err.value)
    assert "no_such_transform" in message
    for name in BUILTIN:
        assert name in message


@pytest.mark.parametrize(
    ("name", "params", "match"),
    [
        ("lpf", {"radius": 0}, "radius"),
        ("hpf", {"radius": -3}, "radius"),
        ("lpf", {"filter": "gaussian"}, "unknown filter"),
        ("lpf", {"filter": "butterworth", "order": 0}, "order"),
        ("hpf", {"reference_size": 0}, "reference_size"),
        ("patch_shuffle", {"mode": "sometimes"}, "unknown mode"),
        ("pixel_shuffle", {"mode": "sometimes"}, "unknown mode"),
        ("patch_shuffle", {"patch_size": 0}, "patch_size"),
        ("canny", {"low": 200, "high": 100}, "must not exceed"),
        ("canny", {"blur_kernel": 4}, "odd"),
        ("canny", {"low": -1}, "non-negative"),
    ],
)
def test_bad_params_raise_clear_errors(name: str, params: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        create_transform(name, **params)


def test_unknown_parameter_names_the_transform() -> None:
    with pytest.raises(TypeError, match="lpf"):
        create_transform("lpf", radious=40)
    with pytest.raises(TypeError, match="pixel_shuffle"):
        create_transform("pixel_shuffle", patch_size=2)  # pixel shuffle has P = 1 by definition


@pytest.mark.parametrize(
    ("name", "kind", "group", "family", "image_stage", "tensor_stage"),
    [
        ("reference", "online", "a", "reference", False, False),
        ("mean_rgb", "online", "a", "colour", True, False),
        ("lpf", "online", "b", "frequency", False, True),
        ("hpf", "online", "b", "frequency", False, True),
        ("pixel_shuffle", "online", "a", "spatial", False, True),
        ("patch_shuffle", "online", "a", "spatial", False, True),
        ("canny", "precomputed", "c", "structural", True, False),
    ],
)
def test_published_groups_and_stages(
    name: str, kind: str, group: str, family: str, image_stage: bool, tensor_stage: bool
) -> None:
    t = create_transform(name)
    assert (t.name, t.kind, t.augment_group, t.family) == (name, kind, group, family)
    assert (t.has_image_stage, t.has_tensor_stage) == (image_stage, tensor_stage)


def test_published_defaults() -> None:
    assert create_transform("lpf").get_params() == {"radius": 40, "reference_size": 224, "filter": "ideal", "order": 2}
    assert create_transform("patch_shuffle").get_params() == {"patch_size": 16, "mode": "random", "reference_size": 224}
    assert create_transform("pixel_shuffle").get_params() == {"mode": "random"}
    assert create_transform("canny").get_params() == {"low": 85, "high": 255, "blur_kernel": 3, "l2_gradient": False}


def test_every_transform_yaml_loads_and_creates() -> None:
    paths = sorted(CONFIG_DIR.glob("*.yaml"))
    names = {p.stem for p in paths}
    assert set(BUILTIN) <= names
    for path in paths:
        cfg = OmegaConf.load(path)
        params = {k: v for k, v in cfg.items() if k != "name"}
        t = create_transform(cfg.name, **params)
        assert t.name == cfg.name
        if cfg.name in BUILTIN:
            # every parameter is spelled out, with the published default
            assert params == create_transform(cfg.name).get_params(), path.name


def test_cache_key_depends_on_params() -> None:
    assert create_transform("canny").cache_key() == create_transform("canny", low=85).cache_key()
    assert create_transform("canny").cache_key() != create_transform("canny", low=50).cache_key()


# --- reference and mean_rgb -------------------------------------------------------------------
def test_reference_is_identity() -> None:
    image = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    t = create_transform("reference")
    assert np.array_equal(t.apply_image(image), image)
    x = torch.rand(3, 4, 4)
    assert torch.equal(t.apply_tensor(x, gen(0)), x)


def test_mean_rgb_half_red_half_blue() -> None:
    image = np.zeros((4, 6, 3), np.uint8)
    image[:, :3, 0] = 255  # left half red
    image[:, 3:, 2] = 255  # right half blue
    out = create_transform("mean_rgb").apply_image(image)
    assert out.shape == image.shape and out.dtype == np.uint8
    # means are (127.5, 0, 127.5), rounded half up
    assert np.array_equal(out, np.broadcast_to(np.array([128, 0, 128], np.uint8), image.shape))


def test_mean_rgb_rounds_half_up_and_uses_the_full_image() -> None:
    image = np.zeros((1, 2, 3), np.uint8)
    image[0, 1] = (1, 2, 4)  # means 0.5, 1.0, 2.0
    out = create_transform("mean_rgb").apply_image(image)
    assert out.tolist() == [[[1, 1, 2], [1, 1, 2]]]
    image = np.full((3, 3, 3), 10, np.uint8)
    image[0, 0] = (100, 19, 10)  # means 20, 11, 10
    assert create_transform("mean_rgb").apply_image(image)[2, 2].tolist() == [20, 11, 10]


# --- frequency filters ------------------------------------------------------------------------
def test_constant_image_lpf_unchanged_hpf_zero() -> None:
    gray = torch.full((32, 32), 0.37, dtype=torch.float64)
    assert torch.allclose(create_transform("lpf").filter_gray(gray), gray, atol=1e-12)
    assert torch.allclose(create_transform("hpf").filter_gray(gray), torch.zeros_like(gray), atol=1e-12)


@pytest.mark.parametrize("name", ["lpf", "hpf"])
def test_constant_image_maps_to_zeros_without_nan(name: str) -> None:
    x = torch.full((3, 48, 48), 0.6)
    out = create_transform(name).apply_tensor(x, gen(0))
    assert out.shape == x.shape
    assert torch.isfinite(out).all()
    assert torch.equal(out, torch.zeros_like(x))


@pytest.mark.parametrize(
    ("ky", "kx", "low_keeps"),
    [
        (0, 4, True),  # d = 4 < 10
        (3, 0, True),
        (0, 10, True),  # d = 10 = r: the ideal lpf keeps d <= r
        (6, 8, True),  # diagonal, d = 10 exactly
        (7, 8, False),  # d = 10.63 > r
        (0, 16, False),
        (0, 32, False),  # Nyquist
        (-20, 5, False),
    ],
)
def test_sinusoid_known_answer(ky: int, kx: int, low_keeps: bool) -> None:
    wave = cosine(64, 64, ky, kx)
    lpf = create_transform("lpf", radius=10, reference_size=None)
    hpf = create_transform("hpf", radius=10, reference_size=None)
    kept, removed = (lpf, hpf) if low_keeps else (hpf, lpf)
    assert torch.allclose(kept.filter_gray(wave), wave, atol=1e-9)
    assert torch.allclose(removed.filter_gray(wave), torch.zeros_like(wave), atol=1e-9)


def test_radius_scales_with_input_size() -> None:
    lpf = create_transform("lpf")  # radius 40 at 224 -> 20 at 112
    assert lpf.effective_radius(112) == 20
    assert torch.allclose(lpf.filter_gray(cosine(112, 112, 0, 20)), cosine(112, 112, 0, 20), atol=1e-9)
    assert torch.allclose(
        lpf.filter_gray(cosine(112, 112, 0, 21)), torch.zeros(112, 112, dtype=torch.float64), atol=1e-9
    )
    # non-square: the distance is measured in reference-grid units per axis
    rect = cosine(112, 224, 20, 0)
    assert torch.allclose(lpf.filter_gray(rect), rect, atol=1e-9)
    rect = cosine(112, 224, 21, 0)
    assert torch.allclose(lpf.filter_gray(rect), torch.zeros_like(rect), atol=1e-9)


def test_butterworth_gain() -> None:
    r = 6
    lpf = create_transform("lpf", radius=r, reference_size=None, filter="butterworth", order=2)
    hpf = create_transform("hpf", radius=r, reference_size=None, filter="butterworth", order=2)
    g_low, g_high = lpf.gain(32, 32), hpf.gain(32, 32)
    c = 16  # DC after fftshift
    assert g_low[c, c] == 1 and g_high[c, c] == 0
    assert g_low[c, c + r] == pytest.approx(0.5) and g_high[c - r, c] == pytest.approx(0.5)
    assert g_low[c, c + 2 * r] == pytest.approx(1 / (1 + 2**4))  # order 2: 1 / (1 + (d/r)^4)
    assert torch.allclose(g_low + g_high, torch.ones_like(g_low))
    row = g_low[c, c:]
    assert (row[1:] < row[:-1]).all()  # strictly decreasing away from DC
    # a sinusoid at d = r comes out at half amplitude
    wave = cosine(32, 32, 0, r)
    assert torch.allclose(lpf.filter_gray(wave), 0.5 * wave, atol=1e-9)


def test_ideal_gain_layout() -> None:
    g = create_transform("hpf", radius=3, reference_size=None).gain(16, 16)
    assert g[8, 8] == 0 and g[8, 11] == 0 and g[8, 12] == 1 and g[0, 0] == 1


def test_filter_uses_bt601_luma_and_outputs_three_equal_channels() -> None:
    # left half pure red, right half pure green scaled to the same luma: grayscale is constant
    x = torch.zeros(3, 32, 32)
    x[0, :, :16] = 1.0
    x[1, :, 16:] = 0.299 / 0.587
    assert torch.equal(create_transform("lpf").apply_tensor(x, gen(0)), torch.zeros_like(x))
    # blue stripes carry luma 0.114 and survive, min-max to exactly [0, 1]
    x = torch.zeros(3, 32, 32)
    x[2, :, ::2] = 1.0
    out = create_transform("hpf", radius=4, reference_size=None).apply_tensor(x, gen(0))
    assert out.min() == 0 and out.max() == 1
    assert torch.equal(out[0], out[1]) and torch.equal(out[0], out[2])


def test_frequency_filter_batched_equals_per_sample() -> None:
    x = torch.rand(4, 3, 40, 40)
    hpf = create_transform("hpf")
    batched = hpf.apply_tensor(x, gen(0))
    for i in range(4):
        assert torch.allclose(batched[i], hpf.apply_tensor(x[i], gen(0)), atol=1e-6)


# --- shuffles ---------------------------------------------------------------------------------
def patches_of(x: torch.Tensor, p: int) -> list[bytes]:
    """The PxP patches of a CxHxW tensor as bytes (channels kept together), by plain slicing."""
    _, h, w = x.shape
    return [x[:, i : i + p, j : j + p].numpy().tobytes() for i in range(0, h, p) for j in range(0, w, p)]


def test_patch_shuffle_with_p1_equals_pixel_shuffle() -> None:
    x = torch.randn(3, 24, 24)
    pixel = create_transform("pixel_shuffle")
    patch = create_transform("patch_shuffle", patch_size=1, reference_size=None)
    for seed in (0, 1, 2):
        assert torch.equal(patch.apply_tensor(x, gen(seed)), pixel.apply_tensor(x, gen(seed)))


@pytest.mark.parametrize("p", [1, 2, 4, 8, 16])
def test_patch_shuffle_moves_patch_perm_i_to_slot_i(p: int) -> None:
    x = torch.randn(2, 3, 32, 48)  # leading batch dim, non-square
    perm = torch.randperm((32 // p) * (48 // p), generator=gen(p))
    out = shuffle_patches(x, perm, p, p)
    gw = 48 // p
    for i, src in enumerate(perm.tolist()):
        (r, c), (sr, sc) = divmod(i, gw), divmod(src, gw)
        assert torch.equal(
            out[..., r * p : (r + 1) * p, c * p : (c + 1) * p], x[..., sr * p : (sr + 1) * p, sc * p : (sc + 1) * p]
        )


def test_patch_shuffle_preserves_the_multiset_of_patches() -> None:
    x = torch.randn(3, 32, 48)
    out = create_transform("patch_shuffle", patch_size=8, reference_size=None).apply_tensor(x, gen(3))
    before, after = patches_of(x, 8), patches_of(out, 8)
    assert sorted(before) == sorted(after)
    assert before != after  # 24 patches: identity has probability 1/24!


def test_pixel_shuffle_same_permutation_for_all_channels() -> None:
    h = w = 16
    base = torch.arange(h * w, dtype=torch.float32).reshape(h, w)
    x = torch.stack([base, base + 1000, base + 2000])
    out = create_transform("pixel_shuffle").apply_tensor(x, gen(5))
    for c in range(3):
        assert torch.equal(out[c].flatten().sort().values, x[c].flatten().sort().values)  # same values
    assert torch.equal(out[1] - 1000, out[0]) and torch.equal(out[2] - 2000, out[0])  # same positions
    assert not torch.equal(out, x)


def test_random_mode_depends_on_the_generator_only() -> None:
    x = torch.randn(3, 32, 32)
    for name, params in (("pixel_shuffle", {}), ("patch_shuffle", {"patch_size": 4, "reference_size": None})):
        t = create_transform(name, **params)
        assert torch.equal(t.apply_tensor(x, gen(7)), t.apply_tensor(x, gen(7)))
        assert not torch.equal(t.apply_tensor(x, gen(7)), t.apply_tensor(x, gen(8)))


def test_patch_size_scales_with_the_input_and_must_divide() -> None:
    t = create_transform("patch_shuffle")  # 16 px at 224
    assert t.patch_shape(224, 224) == (16, 16)
    assert t.patch_shape(112, 112) == (8, 8)
    assert t.num_patches(112, 112) == 14 * 14
    assert t.patch_shape(112, 224) == (8, 16)  # each axis scales on its own
    with pytest.raises(ValueError, match="does not divide"):
        t.apply_tensor(torch.zeros(3, 100, 100), gen(0))
    with pytest.raises(ValueError, match="does not divide"):
        create_transform("patch_shuffle", patch_size=5, reference_size=None).apply_tensor(
            torch.zeros(3, 32, 32), gen(0)
        )


FIXED_PERMUTATION_SCRIPT = """
import json
from transforms import create_transform
t = create_transform("patch_shuffle", patch_size=2, mode="fixed", reference_size=None)
t.setup(seed=11, image_size=16, run_dir=None)
print(json.dumps(t.permutation.tolist()))
"""


def fixed_permutation_in_new_process() -> list[int]:
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    done = subprocess.run(
        [sys.executable, "-c", FIXED_PERMUTATION_SCRIPT], cwd=REPO, env=env, capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout)


def test_fixed_permutation_is_identical_across_processes() -> None:
    first, second = fixed_permutation_in_new_process(), fixed_permutation_in_new_process()
    t = create_transform("patch_shuffle", patch_size=2, mode="fixed", reference_size=None)
    t.setup(seed=11, image_size=16, run_dir=None)
    assert first == second == t.permutation.tolist()
    assert sorted(first) == list(range(64))


def test_fixed_permutation_depends_on_seed_and_is_shared_by_samples() -> None:
    a = create_transform("pixel_shuffle", mode="fixed")
    b = create_transform("pixel_shuffle", mode="fixed")
    a.setup(seed=1, image_size=16, run_dir=None)
    b.setup(seed=2, image_size=16, run_dir=None)
    assert not torch.equal(a.permutation, b.permutation)
    x, y = torch.randn(3, 16, 16), torch.randn(3, 16, 16)
    # the same permutation for every sample, whatever the per-sample generator
    out_x, out_y = a.apply_tensor(x, gen(0)), a.apply_tensor(y, gen(1))
    perm = a.permutation
    assert torch.equal(out_x.flatten(1), x.flatten(1)[:, perm])
    assert torch.equal(out_y.flatten(1), y.flatten(1)[:, perm])


def test_fixed_mode_needs_setup_and_the_right_size() -> None:
    t = create_transform("pixel_shuffle", mode="fixed")
    with pytest.raises(RuntimeError, match="setup"):
        t.apply_tensor(torch.zeros(3, 8, 8), gen(0))
    t.setup(seed=0, image_size=8, run_dir=None)
    with pytest.raises(ValueError, match="16x16"):
        t.apply_tensor(torch.zeros(3, 16, 16), gen(0))


@pytest.mark.parametrize("mode", ["fixed", "random"])
def test_setup_fails_early_when_the_patch_does_not_divide(tmp_path: Path, mode: str) -> None:
    t = create_transform("patch_shuffle", mode=mode)
    with pytest.raises(ValueError, match="5x5 .* does not divide the 64x64"):
        t.setup(seed=3, image_size=64, run_dir=tmp_path)  # P = round(16 * 64 / 224) = 5
    assert list(tmp_path.iterdir()) == []


def test_fixed_permutation_run_dir_roundtrip(tmp_path: Path) -> None:
    t = create_transform("patch_shuffle", mode="fixed")
    t.setup(seed=3, image_size=112, run_dir=tmp_path)
    path = tmp_path / "permutation_patch_shuffle.npy"
    saved = np.load(path)
    assert saved.tolist() == t.permutation.tolist() and len(saved) == 14 * 14
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no temporary file left
    rerun = create_transform("patch_shuffle", mode="fixed")
    rerun.setup(seed=3, image_size=112, run_dir=tmp_path)  # rerun into the same run dir: loads and agrees
    assert torch.equal(rerun.permutation, t.permutation)
    with pytest.raises(RuntimeError, match="different permutation"):
        create_transform("patch_shuffle", mode="fixed").setup(seed=4, image_size=112, run_dir=tmp_path)
    # random mode writes nothing
    other = tmp_path / "random"
    create_transform("pixel_shuffle").setup(seed=3, image_size=16, run_dir=other)
    assert not other.exists()


# --- canny ------------------------------------------------------------------------------------
def smooth_random_image(h: int = 64, w: int = 80) -> np.ndarray:
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (h // 8, w // 8, 3), dtype=np.uint8)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)


def test_canny_binary_single_channel_and_matches_opencv() -> None:
    image = smooth_random_image()
    out = create_transform("canny").apply_image(image)
    assert out.shape == image.shape[:2] and out.dtype == np.uint8
    assert set(np.unique(out).tolist()) == {0, 255}
    assert np.array_equal(out, cv2.Canny(cv2.GaussianBlur(image, (3, 3), 0), 85, 255))


def test_canny_white_square_edges_on_the_border_ring() -> None:
    image = np.zeros((48, 48, 3), np.uint8)
    top, bottom = 16, 31  # square rows/cols 16..31 inclusive
    image[top : bottom + 1, top : bottom + 1] = 255
    edges = create_transform("canny").apply_image(image) > 0
    # the ring: pixels within one pixel of the boundary, on either side of it
    idx = np.arange(48)
    near = (np.abs(idx - (top - 0.5)) <= 1) | (np.abs(idx - (bottom + 0.5)) <= 1)  # rows/cols 15-16, 31-32
    span = (idx >= top - 1) & (idx <= bottom + 1)
    ring = (near[:, None] & span[None, :]) | (span[:, None] & near[None, :])
    assert edges.any()
    assert not (edges & ~ring).any()  # nothing inside the square or far away
    # and the contour is closed along every side, away from the (rounded) corners
    for i in range(top + 2, bottom - 1):
        assert edges[i, top - 1 : top + 1].any() and edges[i, bottom : bottom + 2].any()
        assert edges[top - 1 : top + 1, i].any() and edges[bottom : bottom + 2, i].any()


def test_canny_sees_colour_edges_of_equal_luma() -> None:
    # red | green step with (almost) equal luma: invisible in grayscale, found on the RGB image
    image = np.zeros((32, 32, 3), np.uint8)
    image[:, :16, 0] = 150
    image[:, 16:, 1] = 76  # 0.299 * 150 ~= 0.587 * 76
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    assert not cv2.Canny(cv2.GaussianBlur(gray, (3, 3), 0), 85, 255).any()
    assert create_transform("canny").apply_image(image)[:, 15:17].all(axis=0).any()
