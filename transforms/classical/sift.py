"""SIFT keypoints: keep only where (and at which scale and orientation) local features are found.

Published pipeline (the study's ``sift`` script): the image resized to shorter side 500 (done by
our data layer), converted to grayscale, ``cv2.SIFT_create()`` with default parameters, and the
keypoints drawn with ``cv2.drawKeypoints(black, keypoints, None,
flags=DRAW_MATCHES_FLAGS_DRAW_RICH_KEYPOINTS)`` on a black canvas of the image size.

What OpenCV's rich drawing does (``features2d/src/draw.cpp``), reproduced here geometrically:
coordinates are in 1/16 pixel (``shift = 4``); the centre is ``round(16 * pt)``, the circle
radius ``round(16 * size / 2)`` (``KeyPoint.size`` is a diameter), and the orientation line runs
from the centre to ``centre + round(radius * (cos, sin)(angle))`` (angle in degrees, y axis
down, float32 arithmetic as in the C++ code); both are drawn 1 px thick and anti-aliased
(``LINE_AA``), keypoints in list order, later ones over earlier ones.

Differences, on purpose:

* Colours. With the default colour OpenCV picks a random colour per keypoint from its global,
  per-thread RNG, so the output depends on what was drawn before in the same thread (a data-
  loader worker's history) and is not reproducible. Here keypoint ``i`` gets colour
  ``np.random.default_rng(seed).integers(0, 256, (n, 3))[i]`` (uniform per channel, like
  OpenCV's ``rng(256)``), after sorting the keypoints by (y, x, size, angle, response, octave);
  the sort makes the order, and so the colours and the overdraw, independent of the thread
  scheduling inside OpenCV's detector. Same image + seed -> identical bytes, in any process.
* ``thickness`` and ``antialias`` are exposed (OpenCV fixes 1 and LINE_AA, our defaults); with
  ``antialias: false`` lines are 8-connected and hard-edged.

With every colour set to white the drawing equals ``cv2.drawKeypoints(..., color=(255, 255, 255),
flags=DRAW_RICH_KEYPOINTS)`` given the same keypoint order (tested). Output: HxWx3 uint8 RGB.
"""

from __future__ import annotations

import cv2
import numpy as np

from transforms.base import Transform
from transforms.registry import register_transform

#: OpenCV draws keypoints with 4 fractional bits (1/16 pixel), see draw.cpp.
SHIFT_BITS = 4
MULTIPLIER = 1 << SHIFT_BITS


def detect_sift(gray: np.ndarray, n_features: int = 0) -> list[cv2.KeyPoint]:
    """Default-parameter OpenCV SIFT keypoints of a grayscale uint8 image, in a canonical order.

    OpenCV collects keypoints from worker threads; the returned order is sorted by
    (y, x, size, angle, response, octave) so that it never depends on the thread count.
    """
    keypoints = cv2.SIFT_create(nfeatures=n_features).detect(gray, None)
    if not keypoints:
        return []
    keys = np.array([(k.octave, k.response, k.angle, k.size, k.pt[0], k.pt[1]) for k in keypoints], dtype=np.float64)
    return [keypoints[i] for i in np.lexsort(keys.T)]  # last key (y) is the primary one


def keypoint_colours(n: int, seed: int) -> np.ndarray:
    """(n, 3) uint8 colours: ``default_rng(seed).integers(0, 256, (n, 3))`` -- keypoint i always gets row i."""
    return np.random.default_rng(seed).integers(0, 256, size=(n, 3)).astype(np.uint8)


def draw_rich_keypoints(
    canvas: np.ndarray,
    keypoints: list[cv2.KeyPoint],
    colours: np.ndarray,
    thickness: int = 1,
    antialias: bool = True,
) -> np.ndarray:
    """Draw OpenCV-style rich keypoints (size circle + orientation line) onto `canvas` in place.

    Geometry follows OpenCV's ``_drawKeypoint`` exactly (see the module docstring); `colours` is
    (n, 3) in the canvas's channel order.
    """
    line_type = cv2.LINE_AA if antialias else cv2.LINE_8
    for kp, colour in zip(keypoints, colours):
        colour = tuple(int(c) for c in colour)
        # float32 products as in C++ (p.pt.x * 16, p.size / 2 * 16); rint = cvRound (ties to even).
        x, y = np.float32(kp.pt[0]) * np.float32(MULTIPLIER), np.float32(kp.pt[1]) * np.float32(MULTIPLIER)
        centre = (int(np.rint(x)), int(np.rint(y)))
        radius = int(np.rint(np.float32(kp.size) / np.float32(2) * np.float32(MULTIPLIER)))
        cv2.circle(canvas, centre, radius, colour, thickness, line_type, SHIFT_BITS)
        if kp.angle != -1:
            angle = np.float32(kp.angle) * np.float32(np.pi) / np.float32(180)  # p.angle*(float)CV_PI/180.f
            dx = int(np.rint(np.cos(angle) * np.float32(radius)))
            dy = int(np.rint(np.sin(angle) * np.float32(radius)))
            cv2.line(canvas, centre, (centre[0] + dx, centre[1] + dy), colour, thickness, line_type, SHIFT_BITS)
    return canvas


@register_transform("sift")
class Sift(Transform):
    """OpenCV SIFT keypoints drawn as rich keypoints in seeded colours on a black HxWx3 canvas.

    Precomputed and cached, classified with augmentation group "b" (crop + flip). See the module
    docstring for the geometry (OpenCV's) and the colours (ours: seeded, reproducible).
    """
    keeps = "keypoints"
    published = "OpenCV SIFT defaults on grayscale, rich keypoints (size circle + orientation) on black, seeded colours"

    kind = "precomputed"
    augment_group = "b"
    family = "structural"
    has_image_stage = True
    has_tensor_stage = False

    def __init__(self, seed: int = 0, thickness: int = 1, n_features: int = 0, antialias: bool = True) -> None:
        for label, value, low in (("seed", seed, 0), ("thickness", thickness, 1), ("n_features", n_features, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"sift: {label} must be an integer >= {low}, got {value!r}")
        if not isinstance(antialias, bool):
            raise ValueError(f"sift: antialias must be true or false, got {antialias!r}")
        self.seed = seed
        self.thickness = thickness
        self.n_features = n_features
        self.antialias = antialias

    def apply_image(self, image: np.ndarray) -> np.ndarray:
        """HxWx3 (or HxW) uint8 RGB in, HxWx3 uint8 RGB drawing out."""
        if image.dtype != np.uint8 or image.ndim not in (2, 3):
            raise ValueError(f"sift expects an HxWx3 or HxW uint8 image, got {image.dtype} {image.shape}")
        gray = image if image.ndim == 2 else cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)
        keypoints = detect_sift(gray, self.n_features)
        canvas = np.zeros((*gray.shape, 3), dtype=np.uint8)
        return draw_rich_keypoints(
            canvas, keypoints, keypoint_colours(len(keypoints), self.seed), self.thickness, self.antialias
        )
