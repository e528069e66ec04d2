"""Images/s of the data pipeline (decode + augment + transform) and of a training step, cpu recipe.

    python benchmarks/bench_pipeline.py [--size 64] [--seconds 5]

Compares the pipeline with the straightforward way (PIL open + torchvision transforms without
our per-item seeding) and the training step of the cpu recipe's model with ConvNeXt-T at the
same resolution, so the numbers say whether the loader keeps the trainer fed.
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf
from PIL import Image
from torchvision import transforms as T

from classifiers.augment import normalizer, train_augment
from classifiers.data import DecodeCache, ImageDataset
from classifiers.models import create_classifier
from classifiers.optim import build_optimizer
from transforms.registry import create_transform

ROOT = Path(__file__).resolve().parent.parent


def rate(fn, seconds: float) -> float:
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        n += fn()
    return n / (time.perf_counter() - start)


def pipeline_rate(ds: ImageDataset, seconds: float) -> float:
    counter = iter(range(10**9))
    return rate(lambda: (ds[(next(counter) % len(ds), 0)], 1)[1], seconds)


def plain_rate(paths: list[str], augment, seconds: float) -> float:
    counter = iter(range(10**9))
    return rate(lambda: (augment(Image.open(paths[next(counter) % len(paths)]).convert("RGB")), 1)[1], seconds)


def train_rate(model: torch.nn.Module, batch: int, size: int, seconds: float) -> float:
    opt = build_optimizer(model, 1e-3, 0.05)
    x, y = torch.randn(batch, 3, size, size), torch.randint(0, 3, (batch,))

    def step() -> int:
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad()
        return batch

    step()
    return rate(step, seconds)


def shard_cases(tmp: Path, labels: np.ndarray, seconds: float) -> None:
    """The paper's inputs: 500x375 JPEGs (img2dataset's shorter-side-500 output) read from a tar shard."""
    import io

    from bias.data.sources.webdataset import ShardWriter, WebDatasetSource

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_hog_sift import natural_image

    writer = ShardWriter(tmp / "shards", per_shard=len(labels))
    files = []
    for i in range(len(labels)):
        buf = io.BytesIO()
        Image.fromarray(natural_image(375, 500, seed=i)).save(buf, "JPEG", quality=90)
        writer.write(f"{i:09d}", {"jpg": buf.getvalue()})
        files.append(tmp / f"{i}.jpg")
        files[-1].write_bytes(buf.getvalue())
    writer.close()
    index = WebDatasetSource(name="bench", shards=str(tmp / "shards" / "00000.tar")).index(tmp / "cache", 0)
    read = index.read_paths(index.usable())
    paper = OmegaConf.to_container(OmegaConf.load(ROOT / "configs/recipe/paper.yaml").recipe)
    t = create_transform("reference")
    t.setup(seed=0, image_size=224, run_dir=None)
    for label, recipe in (("cpu recipe, 56 px", OmegaConf.to_container(OmegaConf.load(ROOT / "configs/recipe/cpu.yaml").recipe)),
                          ("paper recipe, 224 px + RandAugment", paper)):
        size = recipe["image_size"]
        for where, paths in (("tar shard", read), ("files", [str(f) for f in files])):
            ds = ImageDataset(paths, labels, train_augment(recipe, "a"), t, 0, 1, size, normalize=normalizer(recipe, "a"))
            print(f"| pipeline reference, 500x375 JPEG from {where} -> {label} | {pipeline_rate(ds, seconds):.0f} |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--source-size", type=int, default=96)
    args = ap.parse_args()
    torch.set_num_threads(1)
    recipe = OmegaConf.to_container(OmegaConf.load(ROOT / "configs/recipe/cpu.yaml").recipe)
    with tempfile.TemporaryDirectory() as tmp:
        rng = np.random.default_rng(0)
        paths = []
        for i in range(64):
            p = Path(tmp) / f"{i}.png"
            Image.fromarray(rng.integers(0, 255, (args.source_size, args.source_size, 3), dtype=np.uint8)).save(p)
            paths.append(str(p))
        labels = np.zeros(len(paths), dtype=np.int64)
        print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, 1 thread")
        print("| stage | images/s |\n|---|---|")
        for name in ("reference", "mean_rgb", "hpf", "pixel_shuffle", "patch_shuffle"):
            t = create_transform(name)
            t.setup(seed=0, image_size=recipe["image_size"], run_dir=None)
            ds = ImageDataset(paths, labels, train_augment(recipe, t.augment_group), t, 0, 1, recipe["image_size"],
                              normalize=normalizer(recipe, t.augment_group))
            print(f"| pipeline {name} ({args.source_size}px png -> {recipe['image_size']}) | "
                  f"{pipeline_rate(ds, args.seconds):.0f} |")
        t = create_transform("reference")
        cache = DecodeCache(int(recipe["decode_cache_mb"] * 2**20))
        ds = ImageDataset(paths, labels, train_augment(recipe, "a"), t, 0, 1, recipe["image_size"],
                          normalize=normalizer(recipe, "a"), decode_cache=cache)
        for i in range(len(paths)):  # the probes' pass of a run fills the cache before training
            ds[(i, 0)]
        print(f"| pipeline reference, decoded images in RAM (recipe.decode_cache_mb, {len(cache)} cached) | "
              f"{pipeline_rate(ds, args.seconds):.0f} |")
        plain = T.Compose([T.RandomResizedCrop(recipe["image_size"], scale=(0.35, 1)), T.RandomHorizontalFlip(), T.ToTensor()])
        print(f"| straightforward PIL + torchvision (reference) | {plain_rate(paths, plain, args.seconds):.0f} |")
        shard_cases(Path(tmp), labels, args.seconds)
    cpu_model = OmegaConf.to_container(OmegaConf.load(ROOT / "configs/model/resnet_cpu.yaml"))
    for model_name, kwargs, size, batch in ((cpu_model["name"], cpu_model["kwargs"], 56, 64),
                                           ("convnext_tiny", {}, 64, 32), ("convnext_tiny", {}, 224, 8)):
        for threads in (1, 2):
            torch.set_num_threads(threads)
            model = create_classifier(model_name, 3, kwargs=kwargs)
            label = "cpu recipe model" if kwargs else model_name
            print(f"| train step {label} {size}px batch {batch}, {threads} thread(s) | "
                  f"{train_rate(model, batch, size, args.seconds):.0f} |")


if __name__ == "__main__":
    main()
