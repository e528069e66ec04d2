"""Classification tasks for model zoos, by name, with seeded and recorded train/test splits.

``get_task(name, **kwargs)`` returns a `Task`: float32 inputs and int64 labels already on the
CPU, standardised with train-set statistics. All three tasks are available offline and their
default test sets are large enough that small models make hundreds of errors, so error masks
(which test samples a model gets wrong) carry information:

========== ============================================================ ================== =========
name       data                                                         input              classes
========== ============================================================ ================== =========
mnist1d    MNIST-1D, generated locally (``mnist1d.data.make_dataset``)  1 x 40             10
digits     scikit-learn's 8x8 handwritten digits (bundled, 1,797)       1 x 8 x 8 (or 28)  10
planted    the planted-bias images (`bias.data.planted.ensure_planted`),     3 x S x S          datasets
           downsampled to S x S; label = which dataset an image is from
========== ============================================================ ================== =========

Every task pools its samples and splits them with ``numpy.random.default_rng(split_seed)``
(stratified by class), so the split is a function of ``split_seed`` alone; the test indices'
hash is kept in ``task.info`` and in every zoo file's config.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from bias.configs import CONFIG_DIR as BIAS_CONFIGS
from torch import Tensor

from bias.core.registry import Registry
from bias.data.images import load_rgb
from bias.data.planted import ensure_planted
from memorization.zoo.archs import build_arch
from memorization.zoo.functional import batched_logits
from memorization.zoo.spec import _plain

TASKS: Registry[Callable[..., Task]] = Registry("zoo task", attr=None)
register_task = TASKS.register  # decorator of a function returning a Task: @register_task("digits")
list_tasks = TASKS.names


@dataclass
class Task:
    """Train and test tensors of one task (inputs ``(N, *input_shape)`` float32, labels int64)."""

    name: str
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    num_classes: int
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def n_test(self) -> int:
        return int(self.y_test.shape[0])

    @property
    def test_inputs(self) -> Tensor:
        """Test inputs in error-mask column order (for decision-boundary plots)."""
        return self.x_test

    def build_model(self, arch: Mapping[str, Any]) -> torch.nn.Module:
        return build_arch(arch, self.input_shape, self.num_classes)

    def evaluate(self, model: torch.nn.Module, spec, params: Tensor, chunk: int = 256,
                 device: str | torch.device | None = None, with_loss: bool = False):
        """Accuracy ``(n,)`` and error masks ``(n, n_test)`` (True = wrong) of flat parameter vectors.

        `model` gives the architecture, `spec` (a `ParamSpec` of its full state dict) the flatten
        order. Models are evaluated `chunk` at a time with ``vmap(functional_call)``, so memory
        is bounded by ``chunk x n_test x widest activation``. ``with_loss=True`` also returns the
        mean test cross-entropy per model.
        """
        device = torch.device(device) if device is not None else params.device
        x, y = self.x_test.to(device), self.y_test.to(device)
        accs, masks, losses = [], [], []
        for start in range(0, params.shape[0], chunk):
            p = params[start:start + chunk].to(device, torch.float32)
            with torch.no_grad():
                logits = batched_logits(model, spec, p, x, shared_inputs=True)  # (c, T, classes)
            wrong = logits.argmax(-1) != y
            masks.append(wrong.cpu())
            accs.append((~wrong).float().mean(1).cpu())
            if with_loss:
                ce = F.cross_entropy(logits.flatten(0, 1), y.repeat(p.shape[0]), reduction="none")
                losses.append(ce.view(p.shape[0], -1).mean(1).cpu())
        acc = torch.cat(accs) if accs else torch.zeros(0)
        mask = torch.cat(masks) if masks else torch.zeros(0, self.n_test, dtype=torch.bool)
        if with_loss:
            return acc, mask, (torch.cat(losses) if losses else torch.zeros(0))
        return acc, mask


def _stratified_split(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    rng = np.random.default_rng([int(seed), 0x5EED])
    train, test = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_test = int(round(len(idx) * test_fraction))
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    train_idx, test_idx = np.concatenate(train), np.concatenate(test)
    return rng.permutation(train_idx), np.sort(test_idx)


def _make_task(name: str, x: np.ndarray, y: np.ndarray, num_classes: int, test_fraction: float, split_seed: int,
               standardise: str, info: dict[str, Any]) -> Task:
    """Split, then standardise with train statistics: ``global`` (one mean/std) or ``channel`` (per channel)."""
    train_idx, test_idx = _stratified_split(y, test_fraction, split_seed)
    x = x.astype(np.float32)
    xtr = x[train_idx]
    if standardise == "global":
        mean, std = xtr.mean(), xtr.std()
    elif standardise == "channel":
        axes = (0,) + tuple(range(2, x.ndim))
        shape = (1, -1) + (1,) * (x.ndim - 2)
        mean, std = xtr.mean(axes).reshape(shape), xtr.std(axes).reshape(shape)
    else:
        raise ValueError(f"standardise must be 'global' or 'channel', got {standardise!r}")
    x = (x - mean) / np.maximum(std, 1e-6)
    info = dict(info, split_seed=int(split_seed), test_fraction=float(test_fraction), n_train=len(train_idx),
                n_test=len(test_idx), test_index_sha=hashlib.sha256(test_idx.astype(np.int64).tobytes()).hexdigest()[:16])
    as_t = torch.from_numpy
    return Task(name, as_t(np.ascontiguousarray(x[train_idx])), as_t(y[train_idx].astype(np.int64)),
                as_t(np.ascontiguousarray(x[test_idx])), as_t(y[test_idx].astype(np.int64)), int(num_classes), info)


@register_task("mnist1d")
def mnist1d_task(num_samples: int = 10000, data_seed: int = 42, test_fraction: float = 0.5, split_seed: int = 0) -> Task:
    """MNIST-1D (Greydanus 2020) generated locally with the package's published defaults (length 40).

    ``mnist1d.data.make_dataset`` seeds numpy's *global* RNG; its state is restored afterwards.
    The default 10,000 samples split 50/50 give 5,000 test signals; small MLPs reach 60-85%.
    """
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError as err:
        raise ImportError("task 'mnist1d' needs the mnist1d package: pip install 'understand-bias[memorize]'") from err
    args = get_dataset_args()
    args.num_samples, args.seed, args.train_split = int(num_samples), int(data_seed), 1.0
    state = np.random.get_state()
    import random

    py_state = random.getstate()
    try:
        data = make_dataset(args)
    finally:
        np.random.set_state(state)
        random.setstate(py_state)
    x = np.asarray(data["x"], np.float32)[:, None, :]
    y = np.asarray(data["y"], np.int64)
    return _make_task("mnist1d", x, y, 10, test_fraction, split_seed, "global",
                      {"source": "mnist1d.make_dataset", "num_samples": int(num_samples), "data_seed": int(data_seed)})


@register_task("digits")
def digits_task(test_fraction: float = 0.5, split_seed: int = 0, image_size: int = 8) -> Task:
    """scikit-learn's 1,797 8x8 digits (shipped with scikit-learn, no download); 50/50 split -> ~900 test.

    ``image_size=28`` upsamples bilinearly so the published Hyper-Representations CNN applies unchanged.
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError as err:
        raise ImportError("task 'digits' needs scikit-learn: pip install 'understand-bias[memorize]'") from err
    bunch = load_digits()
    x = (np.asarray(bunch.images, np.float32) / 16.0)[:, None]
    if int(image_size) != 8:
        x = F.interpolate(torch.from_numpy(x), size=(int(image_size),) * 2, mode="bilinear",
                          align_corners=False).numpy()
    return _make_task("digits", x, np.asarray(bunch.target, np.int64), 10, test_fraction, split_seed, "global",
                      {"source": "sklearn.datasets.load_digits", "image_size": int(image_size)})


def _default_cache() -> Path:
    return Path(os.environ.get("BIAS_CACHE_DIR", "cache"))


@register_task("planted")
def planted_task(preset: str = "planted", n_per_dataset: int = 1000, render_size: int = 32, image_size: int = 16,
                 seed: int = 0, test_fraction: float = 0.5, split_seed: int = 0, cache_dir: str | None = None,
                 generator: Mapping[str, Any] | None = None) -> Task:
    """Dataset classification on planted-bias images: which of the preset's datasets an image comes from.

    The preset's ``generator`` mapping (``configs/data/<preset>.yaml``, or `generator` given
    directly) is rendered by `bias.data.planted.ensure_planted` at ``render_size`` pixels with
    ``n_per_dataset`` images each (cached on disk), then every image is area-downsampled to
    ``image_size`` x ``image_size`` RGB.
    """
    import cv2


    if generator is None:
        from omegaconf import OmegaConf

        path = BIAS_CONFIGS / "data" / f"{preset}.yaml"
        if not path.is_file():
            raise FileNotFoundError(f"no planted preset {path}; pass preset= one of configs/data/planted*.yaml")
        generator = OmegaConf.to_container(OmegaConf.load(path)["generator"], resolve=True)
    cfg = dict(generator, seed=int(seed), size=int(render_size), n_per_dataset=int(n_per_dataset))
    folders = ensure_planted(cfg, cache_dir or _default_cache(), progress=False)
    xs, ys = [], []
    for label, (_, folder) in enumerate(sorted(folders.items())):
        for i in range(int(n_per_dataset)):
            img = load_rgb(Path(folder) / f"{i:06d}.png")
            if img.shape[0] != image_size or img.shape[1] != image_size:
                img = cv2.resize(img, (int(image_size), int(image_size)), interpolation=cv2.INTER_AREA)
            xs.append(img)
            ys.append(label)
    x = np.stack(xs).astype(np.float32).transpose(0, 3, 1, 2) / 255.0
    return _make_task("planted", x, np.asarray(ys, np.int64), len(folders), test_fraction, split_seed, "channel",
                      {"source": "bias.data.planted.ensure_planted", "preset": preset, "datasets": sorted(folders),
                       "render_size": int(render_size), "image_size": int(image_size),
                       "n_per_dataset": int(n_per_dataset), "seed": int(seed)})


@functools.lru_cache(maxsize=16)
def _cached(name: str, kwargs_json: str) -> Task:
    return TASKS.create(name, **json.loads(kwargs_json))


def get_task(name: str, **kwargs: Any) -> Task:
    """The task `name` with `kwargs` (cached per process: building a task takes up to seconds)."""
    TASKS.get(name)  # an unknown name fails here, listing the known ones
    return _cached(name, json.dumps(_plain(kwargs), sort_keys=True))
