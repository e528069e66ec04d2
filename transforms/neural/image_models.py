"""What the image-to-image model transforms (`seg`, `depth`, `vae`) share.

* The model: from `weights`, a model folder (a Hugging Face id + revision, or a local folder) read by
  the library's own `from_pretrained`; or, with ``weights: null``, from `arch` with seeded random
  weights (`transforms.neural.random_init`: tests and throughput benchmarks). `check_ready` fails
  before any work when the folder is not there, or is there without its config or weight files.
* The input: by default exactly as the checkpoint's authors feed it, through the image processor saved with
  the weights (transformers' `AutoImageProcessor` reading ``preprocessor_config.json``: its size, resize rule,
  mean and std); each image is processed on its own, and a batch of differently shaped inputs runs as groups of
  equal shape. Setting any of `size`, `fit`, `mean`, `std` switches to our canvas below, the values not set
  taken from the processor (random weights without a processor: the transform's `FALLBACK`); an override that
  departs from the checkpoint's value is said in one line (a warning) and recorded (`preprocessing`).
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

import dataclasses
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

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
#: the file that holds a transformers image processor's settings
PROCESSOR_FILE = "preprocessor_config.json"
#: the options that replace the checkpoint's own preprocessing with our canvas
CANVAS_OPTIONS = ("size", "fit", "mean", "std")
#: an image processor's settings that say how it resizes (recorded with the preprocessing)
_RESIZE_KEYS = ("do_resize", "keep_aspect_ratio", "ensure_multiple_of", "size_divisor", "do_pad", "do_center_crop",
                "crop_size", "resample", "do_rescale", "rescale_factor", "do_normalize")


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


def unit_scale(values: Sequence[float]) -> list[float]:
    """Channel statistics on the 0-1 scale (some processors write them on the 0-255 scale)."""
    values = [float(v) for v in values]
    return [v / 255 for v in values] if max(values) > 1 else values


def processor_settings(processor: Any) -> dict[str, Any]:
    """What an image processor does, as plain values: its class, size, resize rule, mean and std (0-1 scale)."""
    out: dict[str, Any] = {"processor": type(processor).__name__, "size": _setting(getattr(processor, "size", None))}
    for key in _RESIZE_KEYS:
        value = getattr(processor, key, None)
        if value is not None:
            out[key] = _setting(value)
    for key in ("image_mean", "image_std"):
        value = getattr(processor, key, None)
        out[key.removeprefix("image_")] = None if value is None else unit_scale(value)
    return out


def _setting(value: Any) -> Any:
    """A processor setting as a plain value: size dicts (transformers' `SizeDict` too) without their unset keys."""
    if value is None or isinstance(value, (int, float, bool, str)):
        return value
    if dataclasses.is_dataclass(value):
        value = dataclasses.asdict(value)
    if isinstance(value, Mapping):
        return {str(k): v for k, v in value.items() if v is not None}
    return str(value)


def processor_side(size: Mapping[str, Any] | None) -> int | None:
    """The canvas side an image processor's `size` corresponds to (shortest edge, or the larger of height/width)."""
    if not size:
        return None
    if size.get("shortest_edge"):
        return int(size["shortest_edge"])
    sides = [int(size[k]) for k in ("height", "width", "longest_edge") if size.get(k)]
    return max(sides) if sides else None


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
    """An `ImageModelTransform` fed as its checkpoint says (its image processor), or on our ``size x size`` canvas.

    Checkpoint mode (no canvas option set, a processor saved with the weights): `preprocess` gives {"pixels": the
    processor's 3 x H x W float input, "valid": (H, W), "size": the image's (height, width)}; the prediction
    covers the whole image and is resized back to it. Canvas mode (any of `size`, `fit`, `mean`, `std` set, or no
    processor): {"pixels": 3 x size x size uint8, "valid": (h, w) of the image on the canvas, "size": ...},
    normalised on the device (`normalise`). `collate` stacks equal shapes and keeps a list otherwise;
    `per_shape` runs the network on each group of equal shape; `crop_back` takes a prediction back to the image.
    """

    #: the canvas of random weights without a processor (tests, benchmarks): the transform's published values
    FALLBACK: ClassVar[Mapping[str, Any]] = {"size": 512, "fit": "pad", "mean": IMAGENET_MEAN, "std": IMAGENET_STD}

    def __init__(self, weights: Any = None, arch: Mapping[str, Any] | None = None, size: int | None = None,
                 fit: str | None = None, mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                 batch_size: int = 16, device: str = "auto", dtype: str = "auto") -> None:
        super().__init__(weights=weights, arch=arch, batch_size=batch_size, device=device, dtype=dtype)
        if size is not None:
            check_size(f"{self.name}: size", size)
        if fit is not None and fit not in FITS:
            raise ValueError(f"{self.name}: fit must be one of {', '.join(FITS)}, got {fit!r}")
        if (mean is None) != (std is None):
            raise ValueError(f"{self.name}: set mean and std together (or neither: the checkpoint's own)")
        if mean is not None:
            mean, std = (list(v) for v in check_channel_stats(self.name, mean, std))
        self.size, self.fit, self.mean, self.std = size, fit, mean, std
        self._spec: dict[str, Any] | None = None
        self._processor: Any = None

    # --- what the input is ----------------------------------------------------------------------------------
    def overrides(self) -> dict[str, Any]:
        """The canvas options set on this transform (empty: the checkpoint's own preprocessing)."""
        return {k: getattr(self, k) for k in CANVAS_OPTIONS if getattr(self, k) is not None}

    def processor_folder(self) -> Path | None:
        """The weights' folder when it holds an image processor, else None."""
        path = self.weight_path(self._cache_root)
        return path if path is not None and path.is_dir() and (path / PROCESSOR_FILE).is_file() else None

    def checkpoint_processor(self) -> Any:
        """The checkpoint's own image processor (transformers' AutoImageProcessor of the weights' folder), or None."""
        folder = self.processor_folder()
        if folder is None:
            return None
        from transformers import AutoImageProcessor

        return AutoImageProcessor.from_pretrained(folder)

    def checkpoint_preprocessing(self) -> tuple[dict[str, Any] | None, Any]:
        """(what the checkpoint's own preprocessing is, the object that does it for `input_pixels`), or (None, None)."""
        processor = self.checkpoint_processor()
        return (None, None) if processor is None else (processor_settings(processor), processor)

    def input_pixels(self, image: np.ndarray) -> torch.Tensor:
        """HxWx3 uint8 -> the checkpoint processor's 3 x H' x W' float input."""
        return self._processor(images=image, return_tensors="pt")["pixel_values"][0].float()

    def checkpoint_canvas(self, settings: Mapping[str, Any]) -> dict[str, Any]:
        """The checkpoint's preprocessing as canvas values (those it does not say: None)."""
        keeps_aspect = settings.get("keep_aspect_ratio") or (settings.get("size") or {}).get("shortest_edge")
        return {"size": processor_side(settings.get("size")), "fit": "pad" if keeps_aspect else "stretch",
                "mean": settings.get("mean"), "std": settings.get("std")}

    def preprocessing(self) -> dict[str, Any]:
        """The preprocessing this transform actually uses, as a run records it: ``from`` (checkpoint, override or
        fallback), the values, and ``departs`` (the overrides that differ from the checkpoint's own)."""
        if self._spec is None:
            settings, processor = self.checkpoint_preprocessing()
            overrides = self.overrides()
            if settings is not None and not overrides:
                self._spec, self._processor = {"from": "checkpoint", **settings}, processor
                return self._spec
            own = self.checkpoint_canvas(settings) if settings is not None else {}
            usable = {k: v for k, v in own.items() if v is not None and (k != "fit" or v in FITS)}
            values = {k: overrides.get(k, usable.get(k, self.FALLBACK[k])) for k in CANVAS_OPTIONS}
            values["mean"], values["std"] = [float(v) for v in values["mean"]], [float(v) for v in values["std"]]
            departs = {k: {"ours": overrides[k], "checkpoint": own[k]} for k in overrides
                       if own.get(k) is not None and not _same(overrides[k], own[k])}
            source = "override" if overrides and settings is not None else \
                "fallback (no image processor with the weights)" if settings is None else "checkpoint"
            self._spec = {"from": source, "canvas": values, "checkpoint": settings, "departs": departs}
            self._processor = None
            if departs:
                said = ", ".join(f"{k}={v['ours']} (checkpoint: {v['checkpoint']})" for k, v in departs.items())
                warnings.warn(f"{self.name}: the preprocessing departs from the checkpoint's own: {said}",
                              stacklevel=2)
        return self._spec

    def canvas(self) -> dict[str, Any] | None:
        """The canvas values in use (None: the checkpoint's processor feeds the network)."""
        return self.preprocessing().get("canvas")

    def check_ready(self, cache_root: str | os.PathLike = "cache") -> None:
        super().check_ready(cache_root)
        self.preprocessing()  # before any work: read the processor, say where an override departs from it

    # --- the runner's contract ------------------------------------------------------------------------------
    def preprocess(self, image: np.ndarray) -> dict[str, torch.Tensor]:
        canvas = self.canvas()
        if canvas is None:
            pixels = self.input_pixels(image)
            valid = tuple(pixels.shape[-2:])
        else:
            array, valid = fit_canvas(image, canvas["size"], canvas["fit"], mean_colour(canvas["mean"]))
            pixels = torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))
        return {"pixels": pixels, "valid": torch.tensor(valid, dtype=torch.int64),
                "size": torch.tensor(image.shape[:2], dtype=torch.int64)}

    def collate(self, items: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, Any]:
        if len({tuple(item["pixels"].shape) for item in items}) == 1:
            return stack_fields(items)
        return {"pixels": [item["pixels"] for item in items],
                **stack_fields([{k: v for k, v in item.items() if k != "pixels"} for item in items])}

    def normalise(self, pixels: torch.Tensor) -> torch.Tensor:
        """The network's input: a canvas's B x 3 x H x W uint8 as (x / 255 - mean) / std; a processor's float input
        as it is."""
        if pixels.dtype != torch.uint8:
            return pixels.float()
        canvas = self.canvas()
        mean = torch.tensor(canvas["mean"], device=pixels.device).view(1, 3, 1, 1)
        std = torch.tensor(canvas["std"], device=pixels.device).view(1, 3, 1, 1)
        return (pixels.float() / 255 - mean) / std

    def per_shape(self, pixels: torch.Tensor | Sequence[torch.Tensor],
                  run: Callable[[torch.Tensor], torch.Tensor]) -> list[torch.Tensor]:
        """`run` (a normalised batch of one shape -> one output per item) over `pixels`, a stacked batch or a list
        of differently shaped inputs (run in groups of equal shape); the outputs in the items' order."""
        if isinstance(pixels, torch.Tensor):
            return list(run(self.normalise(pixels)))
        device = next(self.model.parameters()).device
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, p in enumerate(pixels):
            groups.setdefault(tuple(p.shape), []).append(i)
        out: list[Any] = [None] * len(pixels)
        for members in groups.values():
            batch = torch.stack([pixels[i] for i in members]).to(device)
            for i, y in zip(members, run(self.normalise(batch))):
                out[i] = y
        return out

    @staticmethod
    def crop_back(prediction: np.ndarray, valid: Sequence[int], size: Sequence[int],
                  resize: Callable[[np.ndarray, tuple[int, int]], np.ndarray]) -> np.ndarray:
        """A canvas-sized HxW[xC] prediction -> the image's part of it, resized to the image's (height, width)."""
        return resize(np.ascontiguousarray(prediction[:int(valid[0]), :int(valid[1])]), (int(size[0]), int(size[1])))


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(abs(float(x) - float(y)) < 1e-6 for x, y in zip(a, b))
    return a == b
