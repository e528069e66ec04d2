"""A picture of what a transform keeps: the same sample images of each dataset, before and after."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from bias.data.sources import load_image
from transforms.base import Transform


def transformed_view(transform: Transform, image: np.ndarray, size: int, seed: int = 0,
                     stored: np.ndarray | None = None) -> np.ndarray:
    """What the classifier is shown, as an image (before normalisation); vectors come back 1-D.

    `stored`: a precomputed transform's output for `image`, read from its output store (the
    runner computed it; a model transform is never called here).
    """
    if transform.kind == "precomputed":
        if stored is None:
            raise ValueError(f"{transform.name} is precomputed: pass its stored output")
        out = stored
    else:
        out = transform.apply_image(image) if transform.has_image_stage else image
    if transform.output == "vector":
        return np.asarray(out)
    if out.ndim == 2:
        out = np.repeat(out[:, :, None], 3, axis=2)
    if transform.has_tensor_stage:
        resized = Image.fromarray(out).resize((size, size), Image.BICUBIC)
        x = torch.from_numpy(np.asarray(resized, dtype=np.float32) / 255).permute(2, 0, 1)
        x = transform.apply_tensor(x, torch.Generator().manual_seed(seed))
        out = (x.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    return out


def example_grid(transform: Transform, samples: Mapping[str, Sequence[str]], path: Path, size: int = 224,
                 resize_shorter: int | None = None, seed: int = 0,
                 stored: Mapping[str, Sequence[str]] | None = None) -> Path:
    """Two rows per dataset (original, transformed), one column per sample image; saved as PNG.

    `samples` maps a dataset name to what `bias.data.sources.load_image` reads: file paths or shard
    member locators. `stored`: for a precomputed transform, the stored output of each sample
    (same layout).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    transform.setup(seed=seed, image_size=size, run_dir=None)
    n = max(len(v) for v in samples.values())
    fig, axes = plt.subplots(2 * len(samples), n, figsize=(1.9 * n, 3.9 * len(samples)), squeeze=False)
    for r, (name, paths) in enumerate(samples.items()):
        for c in range(n):
            top, bottom = axes[2 * r, c], axes[2 * r + 1, c]
            for ax in (top, bottom):
                ax.set_xticks([])
                ax.set_yticks([])
            if c >= len(paths):
                top.axis("off")
                bottom.axis("off")
                continue
            image = load_image(paths[c], resize_shorter=resize_shorter)
            out = load_image(stored[name][c]) if stored is not None else None
            view = transformed_view(transform, image, size, seed + c, stored=out)
            top.imshow(image)
            if view.ndim == 1:
                bottom.bar(np.arange(len(view)), view, width=1.0, color="0.3")
            else:
                bottom.imshow(view)
            if c == 0:
                top.set_ylabel(f"{name}\noriginal", fontsize=8)
                bottom.set_ylabel(transform.name, fontsize=8)
    fig.suptitle(f"{transform.name}: {transform!r}", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
