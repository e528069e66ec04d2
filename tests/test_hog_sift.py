"""HOG and SIFT transforms: agreement with scikit-image / OpenCV, known answers, determinism, configs."""

from __future__ import annotations

import hashlib
import itertools
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from omegaconf import OmegaConf
from skimage.draw import line as skimage_line
from skimage.feature import hog as skimage_hog

import transforms.classical.hog as hog_module
from transforms import create_transform
from transforms.classical.hog import bresenham_line, hog_visualisation, to_uint8_min_max
from transforms.classical.sift import detect_sift, draw_rich_keypoints, keypoint_colours

REPO = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO / "configs" / "transform"
#: Allowed |ours - skimage| of the float visualisation, relative to its maximum (achieved: 0, bit-exact).
HOG_RTOL = 1e-9


def natural_image(h: int, w: int, seed: int, gray: bool = False) -> np.ndarray:
    """A "real-looking" RGB uint8 image: smooth colour gradients, filled discs and boxes, sensor noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.stack([128 + 90 * np.sin(3 * xx / w + 2 * c + 5 * (yy / h) ** 2) for c in range(3)], axis=-1)
    for _ in range(10):
        cy, cx, r = rng.integers(0, h), rng.integers(0, w), rng.integers(4, max(5, min(h, w) // 4))
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = rng.integers(0, 256, 3)
        y0, x0 = rng.integers(0, h), rng.integers(0, w)
        img[y0 : y0 + rng.integers(3, 40), x0 : x0 + rng.integers(3, 40)] = rng.integers(0, 256, 3)
    img += rng.normal(0, 6, img.shape)
    img = np.clip(img, 0, 255).astype(np.uint8)
    return np.repeat(img[..., :1], 3, axis=-1) if gray else img


# --- hog ----------------------------------------------------------------------------------------
def test_bresenham_line_equals_skimage_draw_line() -> None:
    for r0, c0, r1, c1 in itertools.product(range(-4, 5), repeat=4):
        ours, ref = bresenham_line(r0, c0, r1, c1), skimage_line(r0, c0, r1, c1)
        assert np.array_equal(ours[0], ref[0]) and np.array_equal(ours[1], ref[1]), (r0, c0, r1, c1)


HOG_CASES = [
    # (h, w), image kind, channels, transform params
    pytest.param((375, 500), "colour", "gray", {}, id="published-500x375"),
    pytest.param((375, 500), "colour", "rgb", {}, id="rgb-500x375"),
    pytest.param((101, 203), "gray_as_rgb", "rgb", {}, id="gray-as-rgb-101x203"),
    pytest.param((101, 203), "gray_as_rgb", "gray", {}, id="gray-as-rgb-gray-mode"),
    pytest.param((170, 133), "colour", "rgb", {"orientations": 7, "pixels_per_cell": [6, 10]}, id="7-bins-6x10-cells"),
    pytest.param((90, 121), "colour", "gray", {"orientations": 12, "pixels_per_cell": 9}, id="12-bins-9px-cells"),
    pytest.param((64, 80), "colour", "rgb", {"transform_sqrt": False}, id="no-sqrt"),
]


@pytest.mark.parametrize(("size", "kind", "channels", "params"), HOG_CASES)
def test_hog_matches_skimage(size: tuple[int, int], kind: str, channels: str, params: dict) -> None:
    image = natural_image(*size, seed=sum(size), gray=kind == "gray_as_rgb")
    t = create_transform("hog", channels=channels, **params)
    x = image if channels == "rgb" else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    _, ref = skimage_hog(
        x,
        orientations=t.orientations,
        pixels_per_cell=tuple(t.pixels_per_cell),
        cells_per_block=(3, 3),
        block_norm="L2-Hys",
        visualize=True,
        transform_sqrt=t.transform_sqrt,
        channel_axis=-1 if channels == "rgb" else None,
    )
    ours = hog_visualisation(x, t.orientations, t.pixels_per_cell, t.transform_sqrt)
    assert ours.shape == ref.shape and ref.max() > 0
    assert np.abs(ours - ref).max() <= HOG_RTOL * ref.max()
    out = t.apply_image(image)
    assert out.dtype == np.uint8 and out.shape == size
    np.testing.assert_array_equal(out, to_uint8_min_max(ref))
    assert out.max() == 255


def test_hog_published_uint8_scaling_is_cv2_normalize() -> None:
    """The published script: gray -> skimage hog -> cv2.normalize(0, 255, NORM_MINMAX, CV_8U)."""
    image = natural_image(120, 160, seed=3)
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    _, ref = skimage_hog(gray, visualize=True, transform_sqrt=True)
    expected = cv2.normalize(ref, None, 0, 255, cv2.NORM_MINMAX, dtype=cv2.CV_8U)
    np.testing.assert_array_equal(create_transform("hog").apply_image(image), expected)
    # and it is a rounded min-max: (v - min) / (max - min) * 255
    manual = np.rint((ref - ref.min()) / (ref.max() - ref.min()) * 255)
    assert np.abs(manual - expected).max() <= 1


@pytest.mark.parametrize("channels", ["gray", "rgb"])
def test_hog_constant_and_tiny_images_give_zeros(channels: str) -> None:
    t = create_transform("hog", channels=channels)
    for shape in [(48, 64, 3), (5, 300, 3), (7, 7, 3)]:
        out = t.apply_image(np.full(shape, 200, np.uint8))
        assert out.dtype == np.uint8 and out.shape == shape[:2] and not out.any()


def test_hog_draws_images_smaller_than_a_block() -> None:
    """skimage refuses < 3x3 cells (block normalisation); the visualisation itself needs one cell."""
    image = natural_image(20, 17, seed=5)
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    _, ref = skimage_hog(gray, cells_per_block=(1, 1), visualize=True, transform_sqrt=True)
    np.testing.assert_array_equal(hog_visualisation(gray), ref)


def test_hog_only_full_cells_are_drawn() -> None:
    out = create_transform("hog").apply_image(natural_image(37, 45, seed=6))
    assert out[:32, :40].any() and not out[32:].any() and not out[:, 40:].any()


def test_hog_split_line_groups_give_the_same_image(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fallback for cells whose line end points round differently (grouped cells) is exact too."""
    image = cv2.cvtColor(natural_image(72, 96, seed=7), cv2.COLOR_RGB2GRAY)
    expected = hog_visualisation(image)
    real = hog_module._line_stamps.__wrapped__

    def split(orientations: int, cell: tuple[int, int], n_cells: tuple[int, int]) -> tuple:
        rows, cols = np.arange(n_cells[0]), np.arange(n_cells[1])
        parts = [(rows[::2], None), (rows[1::2], cols[::2]), (rows[1::2], cols[1::2])]  # each cell once
        return tuple(
            tuple((r, c, pixels) for _, _, pixels in groups for r, c in parts)
            for groups in real(orientations, cell, n_cells)
        )

    monkeypatch.setattr(hog_module, "_line_stamps", split)
    np.testing.assert_array_equal(hog_visualisation(image), expected)


def test_hog_reused_buffers_across_sizes_and_threads() -> None:
    """Scratch buffers are reused between calls (per thread): results must not depend on call history."""
    from concurrent.futures import ThreadPoolExecutor

    images = [natural_image(h, w, seed=h) for h, w in [(120, 160), (64, 48), (150, 90), (120, 160)]]
    t = create_transform("hog", channels="rgb")
    fresh = [t.apply_image(im).tobytes() for im in images]
    assert fresh[0] == fresh[3]
    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(lambda im: t.apply_image(im).tobytes(), images * 4)) == fresh * 4


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"orientations": 0}, "orientations"),
        ({"pixels_per_cell": 1}, "pixels_per_cell"),
        ({"pixels_per_cell": [8, 8, 8]}, "pixels_per_cell"),
        ({"transform_sqrt": "yes"}, "transform_sqrt"),
        ({"channels": "lab"}, "channels"),
    ],
)
def test_hog_bad_params(params: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        create_transform("hog", **params)


# --- sift ---------------------------------------------------------------------------------------
def white_opencv_drawing(shape: tuple[int, int], keypoints: list) -> np.ndarray:
    return cv2.drawKeypoints(
        np.zeros((*shape, 3), np.uint8), keypoints, None, color=(255, 255, 255),
        flags=cv2.DRAW_MATCHES_FLAGS_DRAW_RICH_KEYPOINTS,
    )


@pytest.mark.parametrize("size", [(375, 500), (224, 224), (131, 97)])
def test_sift_geometry_equals_opencv_rich_keypoints(size: tuple[int, int]) -> None:
    gray = cv2.cvtColor(natural_image(*size, seed=size[0]), cv2.COLOR_RGB2GRAY)
    keypoints = detect_sift(gray)
    assert len(keypoints) > 5
    white = np.full((len(keypoints), 3), 255, np.uint8)
    ours = draw_rich_keypoints(np.zeros((*size, 3), np.uint8), keypoints, white)
    np.testing.assert_array_equal(ours, white_opencv_drawing(size, keypoints))


def test_sift_detects_like_published_detect_and_compute() -> None:
    gray = cv2.cvtColor(natural_image(160, 200, seed=11), cv2.COLOR_RGB2GRAY)
    published, _ = cv2.SIFT_create().detectAndCompute(gray, None)

    def key(k: cv2.KeyPoint) -> tuple:
        return (k.pt, k.size, k.angle, k.response, k.octave)

    assert sorted(map(key, detect_sift(gray))) == sorted(map(key, published))


def test_sift_output_is_coloured_opencv_geometry_on_black() -> None:
    image = natural_image(200, 240, seed=12)
    out = create_transform("sift").apply_image(image)
    assert out.dtype == np.uint8 and out.shape == image.shape
    keypoints = detect_sift(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY))
    drawn = out.any(axis=-1)
    assert drawn.any()
    # every coloured pixel lies on the white OpenCV drawing; the rest of the canvas is black
    assert not (drawn & ~white_opencv_drawing(image.shape[:2], keypoints).any(axis=-1)).any()
    # and far from every keypoint's circle the canvas is black
    yy, xx = np.mgrid[0 : image.shape[0], 0 : image.shape[1]]
    far = np.ones(drawn.shape, bool)
    for k in keypoints:
        far &= np.hypot(xx - k.pt[0], yy - k.pt[1]) > k.size / 2 + 3  # anti-aliasing spreads ~2 px
    assert far.any() and not drawn[far].any()


def test_sift_constant_image_is_black() -> None:
    out = create_transform("sift").apply_image(np.full((64, 64, 3), 90, np.uint8))
    assert out.shape == (64, 64, 3) and not out.any()


def test_sift_single_blob_known_answer() -> None:
    """A Gaussian blob yields keypoints only at its centre, with a size growing with the blob."""
    yy, xx = np.mgrid[0:160, 0:200]
    sizes = []
    for sigma in (4, 8):
        blob = (255 * np.exp(-((yy - 60) ** 2 + (xx - 90) ** 2) / (2 * sigma**2))).astype(np.uint8)
        keypoints = detect_sift(blob)
        assert keypoints
        assert all(np.hypot(k.pt[0] - 90, k.pt[1] - 60) < 1.5 for k in keypoints)
        sizes.append(np.median([k.size for k in keypoints]))
        out = create_transform("sift").apply_image(np.repeat(blob[..., None], 3, axis=-1))
        drawn = out.any(axis=-1)
        radius = max(k.size for k in keypoints) / 2 + 3
        assert drawn.any() and not drawn[np.hypot(xx - 90, yy - 60) > radius].any()
    assert sizes[1] > 1.5 * sizes[0]


def test_sift_colours_are_seeded() -> None:
    np.testing.assert_array_equal(keypoint_colours(50, 0), np.random.default_rng(0).integers(0, 256, (50, 3)))
    assert keypoint_colours(50, 0)[:10].tolist() == keypoint_colours(10, 0).tolist()  # prefix-stable
    image = natural_image(150, 180, seed=13)
    a = create_transform("sift", seed=0).apply_image(image)
    assert a.tobytes() == create_transform("sift", seed=0).apply_image(image).tobytes()
    assert a.tobytes() != create_transform("sift", seed=1).apply_image(image).tobytes()


SUBPROCESS_SNIPPET = """
import hashlib, sys, cv2, numpy as np
sys.path.insert(0, {tests!r})
from test_hog_sift import natural_image
from transforms import create_transform
cv2.setNumThreads({threads})
out = create_transform("sift").apply_image(natural_image(200, 260, seed=14))
print(hashlib.sha1(out.tobytes()).hexdigest())
"""


def test_sift_is_identical_across_processes_and_thread_counts() -> None:
    here = hashlib.sha1(create_transform("sift").apply_image(natural_image(200, 260, seed=14)).tobytes()).hexdigest()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for threads in (1, 4):
        code = SUBPROCESS_SNIPPET.format(tests=str(REPO / "tests"), threads=threads)
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO,
                              timeout=120, check=True)
        assert proc.stdout.strip() == here, proc.stderr


def test_sift_thickness_and_antialias_change_the_drawing() -> None:
    image = natural_image(150, 180, seed=15)
    base = create_transform("sift").apply_image(image)
    thick = create_transform("sift", thickness=2).apply_image(image)
    hard = create_transform("sift", antialias=False).apply_image(image)
    assert thick.any(-1).sum() > base.any(-1).sum()
    assert not np.array_equal(hard, base)
    assert create_transform("sift", n_features=5).apply_image(image).any(-1).sum() < base.any(-1).sum()


@pytest.mark.parametrize(
    ("params", "match"),
    [({"seed": -1}, "seed"), ({"thickness": 0}, "thickness"), ({"n_features": 1.5}, "n_features"),
     ({"antialias": 1}, "antialias")],
)
def test_sift_bad_params(params: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        create_transform("sift", **params)


# --- registry and configs -----------------------------------------------------------------------
@pytest.mark.parametrize("name", ["hog", "sift"])
def test_yaml_spells_out_every_default_and_creates(name: str) -> None:
    cfg = OmegaConf.load(CONFIG_DIR / f"{name}.yaml")
    params = {k: v for k, v in cfg.items() if k != "name"}
    t = create_transform(cfg.name, **params)
    assert cfg.name == name == t.name
    spelled_out = {k: v for k, v in OmegaConf.to_container(cfg, resolve=True).items() if k != "name"}
    assert spelled_out == t.get_params() == create_transform(name).get_params()
    assert (t.kind, t.augment_group, t.family, t.has_image_stage, t.has_tensor_stage) == (
        "precomputed", "b", "structural", True, False,
    )


def test_published_defaults() -> None:
    assert create_transform("hog").get_params() == {
        "orientations": 9, "pixels_per_cell": [8, 8], "transform_sqrt": True, "channels": "gray",
    }
    assert create_transform("sift").get_params() == {"seed": 0, "thickness": 1, "n_features": 0, "antialias": True}
    assert create_transform("hog").cache_key() != create_transform("hog", channels="rgb").cache_key()
