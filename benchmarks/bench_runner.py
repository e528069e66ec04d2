"""The batched runner (`bias.inference.runner`) against the straightforward way of doing the same work.

    .venv/bin/python benchmarks/bench_runner.py [--images 192] [--workers 2] [--batches 1 16 64]

1. A small conv net with random weights (4 conv layers, 3-32-32-32-3, 3x3, at 224 px; output an
   image) over 500x375 JPEGs. Straightforward loop: for each image, decode, resize, forward one
   image, encode the PNG, write it. Runner: DataLoader workers decode and preprocess, batches of
   1, 16 and 64 go through the model under inference mode, a writer thread encodes and stores.
2. The classical precomputed transforms (canny, hog, sift) over 500x375 JPEGs: the previous
   precompute (one process: decode -> apply_image -> PNG encode -> write, one image at a time)
   against the runner with its worker processes.

Every case writes into a fresh cache folder, so nothing is reused. Run it alone: two torch
processes with full thread pools on 2 cores slow each other down about tenfold.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bias.core.io import write_bytes_atomic  # noqa: E402
from bias.data.images import file_sha1  # noqa: E402
from bias.data.sources import load_image  # noqa: E402
from bias.inference.runner import run_batched  # noqa: E402
from bias.inference.store import encode_png  # noqa: E402
from transforms.base import ModelTransform, output_store  # noqa: E402
from transforms.registry import create_transform  # noqa: E402

SIZE = 224


def small_conv_net() -> torch.nn.Module:
    torch.manual_seed(0)
    layers, width = [], 3
    for out in (32, 32, 32):
        layers += [torch.nn.Conv2d(width, out, 3, padding=1), torch.nn.ReLU()]
        width = out
    return torch.nn.Sequential(*layers, torch.nn.Conv2d(width, 3, 3, padding=1), torch.nn.Sigmoid())


def to_tensor(image: np.ndarray) -> torch.Tensor:
    resized = Image.fromarray(image).resize((SIZE, SIZE), Image.BILINEAR)
    return torch.from_numpy(np.array(resized)).permute(2, 0, 1).float() / 255


def to_image(x: torch.Tensor) -> np.ndarray:
    return (x.float().permute(1, 2, 0).clamp(0, 1) * 255).round().to(torch.uint8).numpy()


class SmallConvNet(ModelTransform):
    name = "bench_small_conv_net"

    def __init__(self, batch_size: int = 16, device: str = "cpu", dtype: str = "auto", weights=None) -> None:
        super().__init__(weights=weights, batch_size=batch_size, device=device, dtype=dtype)

    def load_model(self, device, dtype):
        return small_conv_net()

    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        return to_tensor(image)

    def postprocess(self, outputs: torch.Tensor, batch) -> list[dict]:
        return [{"image": to_image(x)} for x in outputs.cpu()]


def make_images(folder: Path, n: int) -> tuple[list[str], list[str]]:
    from bench_hog_sift import natural_image

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        p = folder / f"{i:05d}.jpg"
        Image.fromarray(natural_image(375, 500, i)).save(p, quality=90)
        paths.append(str(p))
    return paths, [file_sha1(p) for p in paths]


def straightforward_net(paths: list[str], out: Path) -> float:
    model = small_conv_net().eval()
    start = time.perf_counter()
    with torch.inference_mode():
        for i, p in enumerate(paths):
            y = model(to_tensor(load_image(p))[None])[0]
            write_bytes_atomic(out / f"{i}.png", encode_png(to_image(y)))
    return len(paths) / (time.perf_counter() - start)


def straightforward_classical(name: str, paths: list[str], out: Path) -> float:
    t = create_transform(name)
    start = time.perf_counter()
    for i, p in enumerate(paths):
        write_bytes_atomic(out / f"{i}.png", encode_png(t.apply_image(load_image(p))))
    return len(paths) / (time.perf_counter() - start)


def through_runner(t, paths: list[str], shas: list[str], cache: Path, workers: int) -> float:
    start = time.perf_counter()
    report = run_batched(t, paths, shas, output_store(t, cache, None), num_workers=workers, show_progress=False)
    assert report.computed == len(set(shas)) and not report.failed, report.failed[:3]
    return len(paths) / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=192)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 16, 64])
    ap.add_argument("--classical", nargs="*", default=["canny", "hog", "sift"])
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench_runner_"))
    try:
        paths, shas = make_images(tmp / "images", args.images)
        print(f"{args.images} JPEGs 500x375; torch threads {torch.get_num_threads()}; {os.cpu_count()} CPUs; "
              f"runner workers {args.workers}")
        rows = []
        fresh = iter(range(10**6))

        def folder() -> Path:
            f = tmp / f"out{next(fresh)}"
            f.mkdir()
            return f

        base = straightforward_net(paths, folder())
        rows.append(("small conv net", "straightforward loop (batch 1, one process)", base, 1.0))
        for b in args.batches:
            rate = through_runner(SmallConvNet(batch_size=b), paths, shas, folder(), args.workers)
            rows.append(("small conv net", f"runner, batch {b}, {args.workers} workers", rate, rate / base))
        for name in args.classical:
            base = straightforward_classical(name, paths, folder())
            rows.append((name, "one process, one image at a time (previous precompute)", base, 1.0))
            t = create_transform(name)
            rate = through_runner(t, paths, shas, folder(), args.workers)
            rows.append((name, f"runner, {args.workers} workers", rate, rate / base))
        print("\n| transform | how | images/s | vs straightforward |\n|---|---|---|---|")
        for name, how, rate, ratio in rows:
            print(f"| {name} | {how} | {rate:.1f} | {ratio:.2f}x |")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
