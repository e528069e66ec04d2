"""How fast the planted-bias generator renders, per preset, on one core and on two.

    .venv/bin/python benchmarks/bench_planted.py [--n 300] [--presets planted planted_color]

For each preset it reports images/s for
  * render:      `render_image` alone, in this process (OpenCV limited to one thread);
  * render+png:  the same plus PNG encoding, still one core (the target is >= 200 images/s);
  * cache 1w/2w: `ensure_planted` into a fresh folder with 1 and 2 worker processes, files
                 written atomically (includes starting the workers);
and, once, a straightforward reference renderer of a comparable scene with PIL's ImageDraw
(gradient background, the same number of polygons, a line of text, PIL PNG encoder), to show
what the OpenCV path buys. Runs in well under a minute.
"""

from __future__ import annotations

import argparse
import io
import math
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from omegaconf import OmegaConf
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bias.data.planted import SHAPES, PlantedConfig, _encode_png, _object_outline, ensure_planted  # noqa: E402

PRESETS = ["planted", "planted_color", "planted_texture", "planted_objects", "planted_layout"]


def images_per_second(fn, n: int) -> float:
    start = time.perf_counter()
    fn(n)
    return n / (time.perf_counter() - start)


def render_loop(config: PlantedConfig, encode: bool):
    names = list(config.datasets)

    def run(n: int) -> None:
        for i in range(n):
            image = config.render(names[i % len(names)], i)
            if encode:
                _encode_png(image)

    return run


def cache_run(generator: dict, workers: int):
    def run(n: int) -> None:
        per_dataset = math.ceil(n / len(generator["datasets"]))
        with tempfile.TemporaryDirectory() as tmp:
            ensure_planted({**generator, "n_per_dataset": per_dataset}, tmp, num_workers=workers, progress=False)

    return run


def pil_reference(size: int = 96):
    """A plain PIL renderer of a scene like the default preset's (no antialiasing, no texture)."""
    shapes = list(SHAPES)

    def run(n: int) -> None:
        rows = np.linspace(0, 1, size, dtype=np.float32)[:, None, None]
        for i in range(n):
            rng = np.random.default_rng([0, i])
            start, end = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
            background = (start + rows * (end - start)) * np.ones((1, size, 1), np.float32)
            image = Image.fromarray(background.astype(np.uint8))
            draw = ImageDraw.Draw(image)
            for _ in range(int(rng.integers(2, 7))):
                outline = _object_outline(shapes[int(rng.integers(len(shapes)))], rng)
                points = outline * size * rng.uniform(0.15, 0.4) + rng.uniform(0, size, 2)
                draw.polygon([tuple(p) for p in points], fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
            draw.text((rng.uniform(0, size / 2), rng.uniform(0, size - 12)), "SALE 50%", fill=(0, 0, 0))
            image.save(io.BytesIO(), format="PNG", compress_level=1)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=300, help="images per measurement")
    parser.add_argument("--presets", nargs="+", default=PRESETS)
    args = parser.parse_args()
    cv2.setNumThreads(1)
    print(f"{'preset':18s}{'render':>10s}{'render+png':>12s}{'cache 1w':>10s}{'cache 2w':>10s}   images/s")
    for preset in args.presets:
        generator = OmegaConf.to_container(OmegaConf.load(ROOT / "configs" / "data" / f"{preset}.yaml").generator)
        config = PlantedConfig.from_mapping(generator)
        render_loop(config, False)(10)  # warm-up: imports, caches
        rates = [
            images_per_second(render_loop(config, False), args.n),
            images_per_second(render_loop(config, True), args.n),
            images_per_second(cache_run(generator, 1), args.n),
            images_per_second(cache_run(generator, 2), 2 * args.n),
        ]
        print(f"{preset:18s}{rates[0]:10.0f}{rates[1]:12.0f}{rates[2]:10.0f}{rates[3]:10.0f}")
    print(f"{'PIL reference':18s}{'':10s}{images_per_second(pil_reference(), args.n):12.0f}   (render+png, one core)")


if __name__ == "__main__":
    main()
