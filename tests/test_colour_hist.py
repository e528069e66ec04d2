"""color_hist (image form), color_hist_vector (vector form) and the MLP that classifies vectors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from classifiers.mlp import MLPClassifier
from transforms.classical.colour_hist import ColourHistogramImage, ColourHistogramVector, quantile_indices
from transforms.registry import create_transform

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs" / "transform"


def random_image(seed: int, h: int = 23, w: int = 31) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def shuffled_pixels(image: np.ndarray, seed: int) -> np.ndarray:
    """The same pixels at other places (and, for good measure, in another H x W shape)."""
    flat = image.reshape(-1, 3)
    perm = np.random.default_rng(seed).permutation(len(flat))
    return flat[perm].reshape(image.shape)


def sorted_rows(image: np.ndarray) -> np.ndarray:
    flat = image.reshape(-1, 3)
    return flat[np.lexsort(flat.T[::-1])]


# --- image form ---------------------------------------------------------------------------------
def test_sorted_keeps_the_exact_multiset_at_input_size() -> None:
    image = random_image(0)
    out = create_transform("color_hist", size=None).apply_image(image)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert np.array_equal(sorted_rows(out), sorted_rows(image))


@pytest.mark.parametrize("size", [None, 16, 64])
def test_sorted_is_invariant_to_spatial_permutation(size: int | None) -> None:
    image = random_image(1)
    t = create_transform("color_hist", size=size)
    out = t.apply_image(image)
    for seed in range(3):
        assert np.array_equal(t.apply_image(shuffled_pixels(image, seed)), out)
    if size is None:  # another H x W with the same pixels gives the same sequence of colours
        other = t.apply_image(image.reshape(31, 23, 3))
        assert np.array_equal(other.reshape(-1, 3), out.reshape(-1, 3))


def test_sorted_is_ordered_by_luminance_and_sized_by_quantiles() -> None:
    image = random_image(2, 40, 50)
    out = create_transform("color_hist", size=8).apply_image(image)
    assert out.shape == (8, 8, 3)
    luma = out.reshape(-1, 3).astype(np.int64) @ np.array([299, 587, 114])
    assert np.all(np.diff(luma) >= -1000)  # non-decreasing up to OpenCV's integer-luma rounding
    full = create_transform("color_hist", size=None).apply_image(image).reshape(-1, 3)
    assert np.array_equal(out.reshape(-1, 3), full[quantile_indices(len(full), 64)])  # quantiles of the same order


def test_quantile_indices() -> None:
    assert np.array_equal(quantile_indices(10, 10), np.arange(10))
    assert quantile_indices(100, 4).tolist() == [12, 37, 62, 87]
    assert quantile_indices(2, 4).tolist() == [0, 0, 1, 1]


def test_sorted_known_answer_two_colours() -> None:
    image = np.zeros((10, 10, 3), np.uint8)
    image[:, :3] = (255, 255, 255)  # 30% white, 70% black
    out = create_transform("color_hist", size=10).apply_image(image).reshape(-1, 3)
    assert (out[:70] == 0).all() and (out[70:] == 255).all()


def test_rendered_is_deterministic_and_tells_distributions_apart() -> None:
    t = create_transform("color_hist", mode="rendered")
    image = random_image(3)
    out = t.apply_image(image)
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8
    assert np.array_equal(t.apply_image(image), out)
    assert np.array_equal(t.apply_image(shuffled_pixels(image, 0)), out)
    darker = (image // 2).astype(np.uint8)
    assert not np.array_equal(t.apply_image(darker), out)


def test_rendered_known_answer_solid_colour() -> None:
    image = np.zeros((5, 5, 3), np.uint8)
    image[..., 0] = 255
    out = create_transform("color_hist", mode="rendered", size=64, bins=32).apply_image(image)
    # R: all mass in the last bin (last 2 columns, full height); G, B: all mass in the first bin.
    assert (out[:, 62:, 0] == 255).all() and (out[:, :62, 0] == 0).all()
    for c in (1, 2):
        assert (out[:, :2, c] == 255).all() and (out[:, 2:, c] == 0).all()


def test_image_form_attributes_and_bad_params() -> None:
    t = create_transform("color_hist")
    assert isinstance(t, ColourHistogramImage)
    assert (t.kind, t.augment_group, t.family, t.output, t.has_image_stage, t.has_tensor_stage) == (
        "online", "c", "colour", "image", True, False,
    )
    for params in ({"mode": "x"}, {"size": 0}, {"bins": 0}, {"bins": 300}, {"mode": "rendered", "size": 16}):
        with pytest.raises(ValueError):
            create_transform("color_hist", **params)
    with pytest.raises(ValueError, match="HxWx3"):
        t.apply_image(np.zeros((4, 4), np.uint8))


# --- vector form --------------------------------------------------------------------------------
def test_per_channel_sums_to_one_and_known_answer() -> None:
    t = create_transform("color_hist_vector")
    v = t.apply_image(random_image(4))
    assert v.dtype == np.float32 and v.shape == (96,) == (t.vector_size(),)
    np.testing.assert_allclose(v.reshape(3, 32).sum(1), 1.0, rtol=1e-6)
    red = np.zeros((6, 9, 3), np.uint8)
    red[..., 0] = 255
    h = t.apply_image(red).reshape(3, 32)
    expected = np.zeros((3, 32), np.float32)
    expected[0, -1] = expected[1, 0] = expected[2, 0] = 1.0
    assert np.array_equal(h, expected)


def test_per_channel_bin_edges() -> None:
    image = np.array([[[0, 7, 8], [255, 248, 247]]], np.uint8)  # 32 bins of width 8
    h = create_transform("color_hist_vector").apply_image(image).reshape(3, 32)
    assert h[0, 0] == h[0, 31] == 0.5
    assert h[1, 0] == h[1, 31] == 0.5
    assert h[2, 1] == h[2, 30] == 0.5


def test_joint_known_answer() -> None:
    t = create_transform("color_hist_vector", mode="joint")
    assert t.vector_size() == 512
    image = np.zeros((2, 2, 3), np.uint8)
    image[0, 0] = (255, 0, 0)  # cell (7, 0, 0) = 7 * 64
    image[0, 1] = (0, 255, 0)  # cell (0, 7, 0) = 7 * 8
    image[1, :] = (40, 100, 255)  # cell (1, 3, 7) = 64 + 24 + 7
    v = t.apply_image(image)
    assert v.dtype == np.float32 and v.shape == (512,)
    expected = np.zeros(512, np.float32)
    expected[448], expected[56], expected[95] = 0.25, 0.25, 0.5
    assert np.array_equal(v, expected)
    np.testing.assert_allclose(t.apply_image(random_image(5)).sum(), 1.0, rtol=1e-6)


@pytest.mark.parametrize("params", [{}, {"mode": "joint", "bins_per_channel": 4}, {"bins": 7}])
def test_vector_is_permutation_invariant_and_sized(params: dict) -> None:
    t = create_transform("color_hist_vector", **params)
    image = random_image(6)
    v = t.apply_image(image)
    assert v.shape == (t.vector_size(),)
    assert np.array_equal(t.apply_image(shuffled_pixels(image, 1)), v)


def test_vector_form_attributes() -> None:
    t = create_transform("color_hist_vector")
    assert isinstance(t, ColourHistogramVector)
    assert (t.kind, t.augment_group, t.family, t.output) == ("online", "c", "colour", "vector")
    for params in ({"mode": "x"}, {"bins": 0}, {"bins_per_channel": 65}, {"bins": True}):
        with pytest.raises(ValueError):
            create_transform("color_hist_vector", **params)


# --- configs ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["color_hist", "color_hist_vector"])
def test_yaml_spells_out_every_default_and_creates(name: str) -> None:
    cfg = OmegaConf.load(CONFIG_DIR / f"{name}.yaml")
    params = {k: v for k, v in OmegaConf.to_container(cfg, resolve=True).items() if k != "name"}
    t = create_transform(cfg.name, **params)
    assert cfg.name == name == t.name
    assert params == t.get_params() == create_transform(name).get_params()


# --- MLP ----------------------------------------------------------------------------------------
def test_mlp_shapes_and_logistic_regression() -> None:
    model = MLPClassifier(96, 3, hidden=(16, 8), dropout=0.1)
    assert model(torch.rand(5, 96)).shape == (5, 3)
    model.train()
    assert model(torch.rand(1, 96)).shape == (1, 3)  # a last batch of one sample does not raise
    linear = MLPClassifier(96, 4, hidden=[], input_norm="none")
    assert [type(m) for m in linear.modules() if not isinstance(m, (MLPClassifier, torch.nn.Sequential,
                                                                     torch.nn.Identity))] == [torch.nn.Linear]
    assert linear(torch.rand(2, 96)).shape == (2, 4)
    assert sum(isinstance(m, torch.nn.Linear) for m in MLPClassifier(96, 4, hidden=[]).modules()) == 1
    with pytest.raises(ValueError):
        MLPClassifier(96, 4)(torch.rand(2, 95))


@pytest.mark.parametrize("hidden", [(32,), ()])
def test_mlp_fits_red_vs_blue_histograms(hidden: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    t = create_transform("color_hist_vector")
    xs, ys = [], []
    for label, colour in enumerate([(170, 80, 80), (80, 80, 170)]):
        for _ in range(16):
            image = np.clip(np.array(colour) + rng.normal(0, 40, (12, 12, 3)), 0, 255).astype(np.uint8)
            xs.append(t.apply_image(image))
            ys.append(label)
    x, y = torch.from_numpy(np.stack(xs)), torch.tensor(ys)
    model = MLPClassifier(t.vector_size(), 2, hidden=hidden)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: threads only add overhead on a shared machine
    try:
        for step in range(1, 301):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
            if step % 25 == 0:
                model.eval()
                with torch.no_grad():
                    accuracy = (model(x).argmax(1) == y).float().mean().item()
                model.train()
                if accuracy == 1.0 and step >= 100:
                    break
    finally:
        torch.set_num_threads(threads)
    assert accuracy == 1.0
