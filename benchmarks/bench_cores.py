"""Transform throughput on one core and on two cores (a process pool, one thread per process).

Each case applies one transform to a fixed set of images, the way `scripts/transform.py`
precomputes (one image at a time per process, split across processes). The script pins itself
and its workers to the first N CPUs (`os.sched_setaffinity`) for the N-core measurement, so on
a bigger machine the numbers still mean "one core" and "two cores".

    .venv/bin/python benchmarks/bench_cores.py [--seconds 3] [--cores 1 2]

Images: 500x375 for the precomputed transforms (hog, sift, canny: the published
shorter-side-500 inputs) and for the scikit-image HOG reference; 224x224 for the on-the-fly
ones (colour histograms, filters), the size they see in training.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import time  # noqa: E402
from concurrent.futures import ProcessPoolExecutor  # noqa: E402
from multiprocessing import get_context  # noqa: E402

import numpy as np  # noqa: E402

CASES = {  # label -> (transform name or reference, params, image size (h, w))
    "hog (ours, gray)": ("hog", {}, (375, 500)),
    "hog (scikit-image)": ("skimage_hog", {}, (375, 500)),
    "sift": ("sift", {}, (375, 500)),
    "canny": ("canny", {}, (375, 500)),
    "color_hist (sorted)": ("color_hist", {}, (224, 224)),
    "color_hist (rendered)": ("color_hist", {"mode": "rendered"}, (224, 224)),
    "color_hist_vector (per channel)": ("color_hist_vector", {}, (224, 224)),
    "color_hist_vector (joint)": ("color_hist_vector", {"mode": "joint"}, (224, 224)),
    "lpf (ideal)": ("lpf", {}, (224, 224)),
    "hpf (ideal)": ("hpf", {}, (224, 224)),
}

_worker_fn = None


def _natural_image(h: int, w: int, seed: int) -> np.ndarray:
    from bench_hog_sift import natural_image  # this folder is on sys.path, in workers too

    return natural_image(h, w, seed)


def _init(label: str, cpus: list[int]) -> None:
    """Build the case's per-image function once per worker, pinned to `cpus`, one thread."""
    global _worker_fn
    os.sched_setaffinity(0, cpus)
    import cv2
    import torch

    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    name, params, (h, w) = CASES[label]
    images = [_natural_image(h, w, seed) for seed in range(4)]
    if name == "skimage_hog":
        from skimage.feature import hog

        from transforms.classical.hog import to_uint8_min_max

        grays = [cv2.cvtColor(im, cv2.COLOR_RGB2GRAY) for im in images]
        _worker_fn = lambda i: to_uint8_min_max(hog(grays[i % 4], visualize=True, transform_sqrt=True)[1])  # noqa: E731
        return
    from transforms import create_transform

    t = create_transform(name, **params)
    t.setup(seed=0, image_size=h, run_dir=None)
    if t.has_tensor_stage:
        tensors = [torch.from_numpy(im).permute(2, 0, 1).float().div(255) for im in images]
        _worker_fn = lambda i: t.apply_tensor(tensors[i % 4], torch.Generator().manual_seed(i))  # noqa: E731
    else:
        _worker_fn = lambda i: t.apply_image(images[i % 4])  # noqa: E731


def _work(start_and_count: tuple[int, int]) -> int:
    start, count = start_and_count
    for i in range(start, start + count):
        _worker_fn(i)
    return count


def images_per_second(label: str, cores: int, seconds: float) -> float:
    """Run chunks of images on `cores` single-threaded processes for about `seconds`."""
    cpus = sorted(os.sched_getaffinity(0))[:cores]
    if len(cpus) < cores:
        raise SystemExit(f"only {len(cpus)} CPUs available, asked for {cores}")
    with ProcessPoolExecutor(cores, mp_context=get_context("spawn"), initializer=_init, initargs=(label, cpus)) as pool:
        list(pool.map(_work, [(0, 1)] * cores))  # warm-up: every worker built its inputs
        # size chunks so one chunk takes ~0.2 s on one core
        t0 = time.perf_counter()
        pool.submit(_work, (0, 2)).result()
        per_image = max((time.perf_counter() - t0) / 2, 1e-5)
        chunk = max(1, int(0.2 / per_image))
        n_chunks = max(cores * 2, int(seconds / (chunk * per_image) * cores))
        t0 = time.perf_counter()
        done = sum(pool.map(_work, [(k * chunk, chunk) for k in range(n_chunks)]))
        return done / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="measured time per case and core count")
    parser.add_argument("--cores", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--cases", nargs="+", default=list(CASES), help="labels from CASES")
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPUs on this machine, load {os.getloadavg()[0]:.1f}; images/s, one thread per process\n")
    print("| transform | input | " + " | ".join(f"{c} core{'s' * (c > 1)}" for c in args.cores) + " | scaling |")
    print("|---|---|" + "---|" * (len(args.cores) + 1))
    for label in args.cases:
        rates = [images_per_second(label, c, args.seconds) for c in args.cores]
        h, w = CASES[label][2]
        scaling = f"{rates[-1] / rates[0]:.2f}x" if len(rates) > 1 else "-"
        print(f"| {label} | {w}x{h} | " + " | ".join(f"{r:,.0f}" for r in rates) + f" | {scaling} |", flush=True)
    print(f"\nload after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
