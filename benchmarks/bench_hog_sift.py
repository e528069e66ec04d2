"""Throughput of the hog and sift transforms on one CPU thread, against scikit-image's hog.

HOG: our vectorised visualisation vs ``skimage.feature.hog(..., visualize=True, transform_sqrt=True)``
(default 3x3 blocks, as the published script calls it) on a 500x375 "natural-looking" image, both in
the published grayscale mode and with ``channel_axis=-1`` (our ``channels: rgb``). The uint8 outputs
are compared, so the table also shows that they agree. SIFT: the whole transform (OpenCV SIFT +
drawing) at 500x375 and 224x224, and the drawing alone.

    .venv/bin/python benchmarks/bench_hog_sift.py [--skimage-runs 5] [--runs 15]

Prints a markdown table; about 10-20 s. Each rate is 1 / median time per image (robust on a busy
machine); the first call of every function is a warm-up and not timed.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from skimage.feature import hog as skimage_hog  # noqa: E402

from transforms import create_transform  # noqa: E402
from transforms.classical.hog import to_uint8_min_max  # noqa: E402
from transforms.classical.sift import detect_sift, draw_rich_keypoints, keypoint_colours  # noqa: E402


def natural_image(h: int, w: int, seed: int) -> np.ndarray:
    """Smooth colour gradients, filled discs and boxes, sensor noise: edges at all orientations."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.stack([128 + 90 * np.sin(3 * xx / w + 2 * c + 5 * (yy / h) ** 2) for c in range(3)], axis=-1)
    for _ in range(25):
        cy, cx, r = rng.integers(0, h), rng.integers(0, w), rng.integers(4, min(h, w) // 5)
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = rng.integers(0, 256, 3)
        y0, x0 = rng.integers(0, h), rng.integers(0, w)
        img[y0 : y0 + rng.integers(3, 60), x0 : x0 + rng.integers(3, 60)] = rng.integers(0, 256, 3)
    img += rng.normal(0, 6, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def images_per_second(fn: Callable[[], object], runs: int) -> float:
    fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1.0 / statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--skimage-runs", type=int, default=5, help="timed scikit-image calls per mode (>= 3)")
    parser.add_argument("--runs", type=int, default=15, help="timed calls of our transforms")
    args = parser.parse_args()
    cv2.setNumThreads(1)
    torch.set_num_threads(1)

    image = natural_image(375, 500, seed=0)
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    rows = []
    print("| transform | input | ours img/s | scikit-image img/s | speed-up | uint8 identical |")
    print("|---|---|---|---|---|---|")
    for channels, x, axis in (("gray", gray, None), ("rgb", image, -1)):
        t = create_transform("hog", channels=channels)

        def reference(x: np.ndarray = x, axis: int | None = axis) -> np.ndarray:
            return to_uint8_min_max(skimage_hog(x, visualize=True, transform_sqrt=True, channel_axis=axis)[1])

        ours = images_per_second(lambda t=t: t.apply_image(image), args.runs)
        ref = images_per_second(reference, max(3, args.skimage_runs))
        same = np.array_equal(t.apply_image(image), reference())
        rows.append(ours / ref)
        print(f"| hog ({channels}) | 500x375 | {ours:.1f} | {ref:.2f} | {ours / ref:.0f}x | {same} |")

    sift = create_transform("sift")
    for h, w in ((375, 500), (224, 224)):
        img = natural_image(h, w, seed=1)
        keypoints = detect_sift(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY))
        colours = keypoint_colours(len(keypoints), 0)
        full = images_per_second(lambda img=img: sift.apply_image(img), args.runs)
        draw = images_per_second(
            lambda h=h, w=w, k=keypoints, c=colours: draw_rich_keypoints(np.zeros((h, w, 3), np.uint8), k, c), args.runs
        )
        label = f"sift ({len(keypoints)} keypoints; drawing alone {draw:.0f} img/s)"
        print(f"| {label} | {w}x{h} | {full:.1f} | - | - | - |")
    print(f"\nhog speed-up over scikit-image: {rows[0]:.0f}x (published gray mode), {rows[1]:.0f}x (rgb)")


if __name__ == "__main__":
    main()
