"""What the image-to-image model transforms (`seg`, `depth`, `vae`) share.

* The model: from `weights`, a model folder (a Hugging Face id + revision, or a local folder) read by
  the library's own `from_pretrained`; or, with ``weights: null``, from `arch` with seeded random
  weights (`transforms.neural.random_init`: tests and throughput benchmarks). `check_ready` fails
  before any work when the folder is not there, or is there without its config or weight files.
* The canvas: images of any size go through the network in fixed-size batches. `fit_canvas` places
  an image on a ``size x size`` canvas, either keeping its aspect ratio (``fit: pad``: the longer side
  becomes `size`, the image sits in the top-left corner, the rest is filled with the normalisation
  mean, i.e. zeros after normalising) or stretched to the square (``fit: stretch``). The prediction is
  cropped back to the image's part of the canvas and resized to the image's own size. Workers ship the
  canvas as uint8; it is normalised on the device (`normalise`).

transformers and diffusers are imported inside the functions that build models, so the package
imports without the ``[neural]`` extra.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from bias.core.errors import ConfigError, MissingModelError
from transforms.base import ModelTransform
from transforms.neural.random_init import check_weights_or_arch, seeded

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
FITS = ("pad", "stretch")
#: a model folder holds its config and at least one file with one of these suffixes
MODEL_FILE_SUFFIXES = (".safetensors", ".bin")


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """HxW[xC] array -> `size` (height, width): area averaging when shrinking, bicubic when enlarging."""
    h, w = image.shape[:2]
    if (h, w) == tuple(size):
        return image
    shrinking = size[0] * size[1] < h * w
    return cv2.resize(image, (int(size[1]), int(size[0])), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC)


def resize_labels(ids: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """An HxW map of class ids -> `size` (height, width) by nearest neighbour (ids are never blended)."""
    if ids.shape[:2] == tuple(size):
        return ids
    return cv2.resize(ids, (int(size[1]), int(size[0])), interpolation=cv2.INTER_NEAREST)


def fit_canvas(image: np.ndarray, size: int, fit: str, fill: Sequence[int]) -> tuple[np.ndarray, tuple[int, int]]:
    """(size x size x 3 uint8 canvas, (height, width) of the image's part of it, from the top-left corner)."""
    h, w = image.shape[:2]
    if fit == "stretch":
        return resize_image(image, (size, size)), (size, size)
    scale = size / max(h, w)
    valid = (max(1, min(size, round(h * scale))), max(1, min(size, round(w * scale))))
    canvas = np.empty((size, size, 3), dtype=np.uint8)
    canvas[:] = np.asarray(fill, dtype=np.uint8)
    canvas[:valid[0], :valid[1]] = resize_image(image, valid)
    return canvas, valid


def mean_colour(mean: Sequence[float]) -> tuple[int, ...]:
    """The uint8 colour that normalises to (about) zero: the padding of a ``fit: pad`` canvas."""
    return tuple(int(round(255 * m)) for m in mean)


def stack_fields(items: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Items of equal-shaped tensors by name -> one batch: each name's tensors stacked."""
    return {k: torch.stack([item[k] for item in items]) for k in items[0]}


def check_size(name: str, value: Any, multiple: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < multiple or value % multiple:
        what = "a positive integer" if multiple == 1 else f"a positive multiple of {multiple}"
        raise ValueError(f"{name} must be {what}, got {value!r}")


def check_channel_stats(name: str, mean: Any, std: Any) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """`mean` and `std` as three numbers each (RGB, 0-1 scale), std > 0."""
    out = []
    for label, value in (("mean", mean), ("std", std)):
        ok = isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 3 and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
        if not ok or (label == "std" and min(value) <= 0):
            rule = "three positive numbers" if label == "std" else "three numbers"
            raise ValueError(f"{name}: {label} must be {rule} (RGB, 0-1 scale), got {value!r}")
        out.append(tuple(float(v) for v in value))
    return out[0], out[1]


def plain(value: Any) -> Any:
    """Mappings and sequences (OmegaConf containers too) as dicts and lists all the way down."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        return [plain(v) for v in value]
    return value


def hf_config(arch: Mapping[str, Any], who: str) -> Any:
    """A transformers config from ``{"model_type": ..., <that config's keys>}`` (nested configs as mappings)."""
    from transformers import AutoConfig

    kwargs = dict(arch)
    model_type = kwargs.pop("model_type", None)
    if not model_type:
        raise ConfigError(f"transform ({who}).arch: needs model_type (a transformers model type such as "
                          "segformer, mask2former, depth_anything) and that model's config keys")
    try:
        return AutoConfig.for_model(str(model_type), **kwargs)
    except (ValueError, KeyError, TypeError) as err:
        raise ConfigError(f"transform ({who}).arch: {err}") from err


class ImageModelTransform(ModelTransform):
    """A `ModelTransform` built from a model folder (`weights`) or from `arch` with random weights.

    Subclasses implement `pretrained(folder)` (the library's own loading of a model folder) and
    `from_arch(arch)` (the same class from a config, random weights) and call `build()` in
    `load_model`.
    """

    def __init__(self, weights: Any = None, arch: Mapping[str, Any] | None = None, batch_size: int = 16,
                 device: str = "auto", dtype: str = "auto") -> None:
        super().__init__(weights=weights, batch_size=batch_size, device=device, dtype=dtype)
        check_weights_or_arch(self.name, weights, arch)
        self.arch = None if arch is None else plain(arch)
        self._cache_root: str | os.PathLike = "cache"

    def check_ready(self, cache_root: str | os.PathLike = "cache") -> None:
        """Resolve the weights (or say what to download) and check that they are a complete model folder."""
        self._cache_root = cache_root
        path = self.weight_path(cache_root)
        if path is not None:
            self._check_folder(path)

    def _check_folder(self, path: Path) -> None:
        if not path.is_dir():
            raise ConfigError(f"transform ({self.name}).weights: {path} is a single file; this transform loads a "
                              "model folder (config.json and its weights): a Hugging Face id or a local folder")
        names = {p.name for p in path.iterdir()}
        missing = [what for what, ok in (("config.json", "config.json" in names),
                                         ("weight file (.safetensors or .bin)",
                                          any(Path(n).suffix in MODEL_FILE_SUFFIXES for n in names))) if not ok]
        if missing:
            source = self.weight_source()
            fix = (f"download it again: `hf download {source.hf} --revision {source.revision}`" if source.kind == "hf"
                   else "point weights at a complete model folder")
            raise MissingModelError(f"weights: the model folder {path} has no {' and no '.join(missing)}: the download "
                                    f"is incomplete or this is not a {self.name} model; {fix}")

    def build(self) -> torch.nn.Module:
        """The network: from the weights' folder, or from `arch` with seeded random weights."""
        path = self.weight_path(self._cache_root)
        if path is None:
            return seeded(lambda: self.from_arch(self.arch))
        self._check_folder(path)
        return self.pretrained(path)

    def pretrained(self, folder: Path) -> torch.nn.Module:
        raise NotImplementedError(f"{type(self).__name__} must implement pretrained(folder)")

    def from_arch(self, arch: Mapping[str, Any]) -> torch.nn.Module:
        raise NotImplementedError(f"{type(self).__name__} must implement from_arch(arch)")


class CanvasModelTransform(ImageModelTransform):
    """An `ImageModelTransform` whose network sees the image on a normalised ``size x size`` canvas.

    `preprocess` gives {"pixels": 3 x size x size uint8, "valid": (h, w) of the image on the canvas,
    "size": the image's (height, width)}; `collate` stacks each; `normalise` turns the pixels into
    the network's input on the device; `crop_back` takes a canvas-sized prediction back to the image.
    """

    def __init__(self, weights: Any = None, arch: Mapping[str, Any] | None = None, size: int = 512,
                 fit: str = "pad", mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                 batch_size: int = 16, device: str = "auto", dtype: str = "auto") -> None:
        super().__init__(weights=weights, arch=arch, batch_size=batch_size, device=device, dtype=dtype)
        check_size(f"{self.name}: size", size)
        if fit not in FITS:
            raise ValueError(f"{self.name}: fit must be one of {', '.join(FITS)}, got {fit!r}")
        stats = check_channel_stats(self.name, mean, std)
        self.size, self.fit = size, fit
        self.mean, self.std = list(stats[0]), list(stats[1])

    def preprocess(self, image: np.ndarray) -> dict[str, torch.Tensor]:
        canvas, valid = fit_canvas(image, self.size, self.fit, mean_colour(self.mean))
        return {"pixels": torch.from_numpy(np.ascontiguousarray(canvas.transpose(2, 0, 1))),
                "valid": torch.tensor(valid, dtype=torch.int64),
                "size": torch.tensor(image.shape[:2], dtype=torch.int64)}

    def collate(self, items: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        return stack_fields(items)

    def normalise(self, pixels: torch.Tensor) -> torch.Tensor:
        """B x 3 x H x W uint8 -> float32, (x / 255 - mean) / std."""
        mean = torch.tensor(self.mean, device=pixels.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=pixels.device).view(1, 3, 1, 1)
        return (pixels.float() / 255 - mean) / std

    @staticmethod
    def crop_back(prediction: np.ndarray, valid: Sequence[int], size: Sequence[int],
                  resize: Callable[[np.ndarray, tuple[int, int]], np.ndarray]) -> np.ndarray:
        """A canvas-sized HxW[xC] prediction -> the image's part of it, resized to the image's (height, width)."""
        return resize(np.ascontiguousarray(prediction[:int(valid[0]), :int(valid[1])]), (int(size[0]), int(size[1])))
