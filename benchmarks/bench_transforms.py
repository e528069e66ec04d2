"""Throughput of the built-in transforms, one image at a time on one CPU thread.

Tensor-stage transforms get a 3xSxS float tensor, image-stage and precomputed ones an SxSx3 uint8
image, at S = 64 and 224. Where a straightforward implementation exists (a NumPy FFT per image
for lpf/hpf, a Python loop over patches for the shuffles, a NumPy mean for mean_rgb) it is timed on the same input and its
output compared with ours, so the table shows both the speed-up and that the results agree.

    .venv/bin/python benchmarks/bench_transforms.py [--budget 1.5]

Prints a markdown table; about 45 s with the default budget.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from transforms import create_transform
from transforms.classical.frequency import LUMA_WEIGHTS

SIZES = (64, 224)


def images_per_second(fn: Callable[[int], object], budget_s: float) -> float:
    """Call fn(i) for i = 0, 1, ... until `budget_s` has passed (after one warm-up call)."""
    fn(0)
    n, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < budget_s:
        fn(n)
        n += 1
    return n / elapsed


# --- straightforward reference implementations ------------------------------------------------
def numpy_frequency_filter(x: np.ndarray, centred_gain: np.ndarray) -> np.ndarray:
    """Textbook version: luma, fft2, fftshift, mask, ifftshift, ifft2, real part, min-max, 3 channels."""
    gray = np.tensordot(np.asarray(LUMA_WEIGHTS, np.float32), x, axes=1)
    spectrum = np.fft.fftshift(np.fft.fft2(gray)) * centred_gain
    y = np.real(np.fft.ifft2(np.fft.ifftshift(spectrum)))
    span = y.max() - y.min()
    y = (y - y.min()) / span if span > 1e-5 else np.zeros_like(y)
    return np.repeat(y[None].astype(np.float32), 3, axis=0)


def loop_patch_shuffle(x: torch.Tensor, perm: torch.Tensor, p: int) -> torch.Tensor:
    """Copy patch perm[i] of the grid into slot i, one Python iteration per patch."""
    _, h, w = x.shape
    gw = w // p
    out = torch.empty_like(x)
    for i, src in enumerate(perm.tolist()):
        r, c = divmod(i, gw)
        sr, sc = divmod(src, gw)
        out[:, r * p : (r + 1) * p, c * p : (c + 1) * p] = x[:, sr * p : (sr + 1) * p, sc * p : (sc + 1) * p]
    return out


# --- the cases --------------------------------------------------------------------------------
@dataclass
class Row:
    label: str
    stage: str
    rates: dict[int, float]
    ref_rates: dict[int, float] | None = None
    max_diff: float | None = None


def tensor_case(label: str, name: str, budget: float, reference: Callable | None = None, **params: object) -> Row:
    """Time `apply_tensor` (fresh per-sample generator each call, as in the pipeline) and a reference."""
    t = create_transform(name, **params)
    row = Row(label, "tensor", {}, {} if reference else None, 0.0 if reference else None)
    for size in SIZES:
        t.setup(seed=0, image_size=size, run_dir=None)
        x = torch.rand(3, size, size)
        row.rates[size] = images_per_second(lambda i, x=x: t.apply_tensor(x, torch.Generator().manual_seed(i)), budget)
        if reference is not None:
            ref = reference(t, size)
            row.ref_rates[size] = images_per_second(lambda i, x=x, ref=ref: ref(x, i), budget)
            diff = (t.apply_tensor(x, torch.Generator().manual_seed(1)) - torch.as_tensor(ref(x, 1))).abs().max()
            row.max_diff = max(row.max_diff, float(diff))
    return row


def image_case(label: str, name: str, budget: float, reference: Callable | None = None, **params: object) -> Row:
    """Time `apply_image` on a smooth uint8 image (and `reference(image)` where given)."""
    t = create_transform(name, **params)
    row = Row(label, t.kind if t.kind == "precomputed" else "image", {}, {} if reference else None)
    row.max_diff = 0.0 if reference else None
    for size in SIZES:
        small = np.random.default_rng(0).integers(0, 256, (size // 8, size // 8, 3), dtype=np.uint8)
        image = cv2.resize(small, (size, size), interpolation=cv2.INTER_LINEAR)
        row.rates[size] = images_per_second(lambda i, image=image: t.apply_image(image), budget)
        if reference is not None:
            row.ref_rates[size] = images_per_second(lambda i, image=image: reference(image), budget)
            diff = np.abs(t.apply_image(image).astype(np.int16) - reference(image).astype(np.int16)).max()
            row.max_diff = max(row.max_diff, float(diff))
    return row


def numpy_mean_rgb(image: np.ndarray) -> np.ndarray:
    """Textbook version: float mean over the pixels, rounded half up, broadcast back."""
    mean = np.floor(image.mean(axis=(0, 1)) + 0.5).astype(np.uint8)
    return np.broadcast_to(mean, image.shape).copy()


def numpy_filter_reference(t, size: int) -> Callable:
    gain = t.gain(size, size).numpy()
    return lambda x, i: numpy_frequency_filter(x.numpy(), gain)


def loop_shuffle_reference(t, size: int) -> Callable:
    p = t.patch_shape(size, size)[0]
    n = t.num_patches(size, size)
    if t.mode == "fixed":
        return lambda x, i: loop_patch_shuffle(x, t.permutation, p)
    return lambda x, i: loop_patch_shuffle(x, torch.randperm(n, generator=torch.Generator().manual_seed(i)), p)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=1.2, help="seconds per measurement")
    budget = parser.parse_args().budget
    torch.set_num_threads(1)
    cv2.setNumThreads(1)

    rows = [
        image_case("reference", "reference", budget),
        image_case("mean_rgb", "mean_rgb", budget, numpy_mean_rgb),
        tensor_case("lpf (ideal, r=40@224)", "lpf", budget, numpy_filter_reference),
        tensor_case("hpf (ideal, r=40@224)", "hpf", budget, numpy_filter_reference),
        tensor_case("hpf (butterworth n=2)", "hpf", budget, numpy_filter_reference, filter="butterworth"),
        tensor_case("pixel_shuffle (random)", "pixel_shuffle", budget, loop_shuffle_reference),
        tensor_case("pixel_shuffle (fixed)", "pixel_shuffle", budget, None, mode="fixed"),
        tensor_case(
            "patch_shuffle (random, P=16 px)",
            "patch_shuffle",
            budget,
            loop_shuffle_reference,
            patch_size=16,
            reference_size=None,
        ),
        tensor_case(
            "patch_shuffle (random, P=4 px)",
            "patch_shuffle",
            budget,
            loop_shuffle_reference,
            patch_size=4,
            reference_size=None,
        ),
        image_case("canny", "canny", budget),
    ]

    print(f"torch {torch.__version__}, 1 thread, {budget:g} s per measurement; images/s (higher is better)\n")
    head = " | ".join(f"{s} px" for s in SIZES)
    ref_head = " | ".join(f"ref {s} px" for s in SIZES)
    print(f"| transform | stage | {head} | {ref_head} | speed-up @224 | max abs diff |")
    print("|" + "---|" * (4 + 2 * len(SIZES)))
    for r in rows:
        ours = " | ".join(f"{r.rates[s]:,.0f}" for s in SIZES)
        if r.ref_rates:
            ref = " | ".join(f"{r.ref_rates[s]:,.0f}" for s in SIZES)
            extra = f"{r.rates[SIZES[-1]] / r.ref_rates[SIZES[-1]]:.1f}x | {r.max_diff:.1e}"
        else:
            ref = " | ".join("-" for _ in SIZES)
            extra = "- | -"
        print(f"| {r.label} | {r.stage} | {ours} | {ref} | {extra} |")


if __name__ == "__main__":
    main()
