"""Planted-bias datasets: procedurally drawn images whose differences are known by construction.

Dataset classification on real collections says *that* datasets differ; which kind of
information carries the difference is what the transforms are meant to reveal. To check that
the transforms reveal the right thing we need datasets whose differences we planted ourselves,
along independent, documented axes:

1. ``color``      global colour and brightness (per-image shift, tint, contrast, saturation),
                  plus the palette objects are drawn from;
2. ``texture``    texture and frequency content (none, fine noise, fine stripes, blur);
3. ``shapes``     object vocabulary: which shape classes appear;
4. ``layout``     objects per image, object scale and how centred they are;
5. ``background`` clean white, solid colour, gradient or cluttered;
6. ``overlays``   graphics (banners, bars, logos, frames) and text.

Each dataset of a preset sets parameters per axis (`DatasetParams`); what a preset does not set
takes the defaults documented on each axis class, so two datasets that list nothing for an axis
draw it from the same distribution. A preset (``configs/data/planted*.yaml``) passes its
``generator`` mapping to `ensure_planted`, which renders every image once into a cache folder
and returns ``{dataset name: folder of PNGs}``.

The single-axis presets (``planted_color``, ``planted_texture``, ``planted_objects``,
``planted_layout``) vary exactly one axis (layout and background together for the last) and
declare, under ``expected``, what a dataset classifier should show on them per transform:
``keeps`` (accuracy well above chance: more than chance + 20 points for the cpu-recipe
classifier at the known-answer budget of 300 images per dataset and 8 epochs), ``loses``
(accuracy near chance: under chance + 10 points) and ``unreliable`` (the transform keeps some or
all of the signal in principle, but the small classifier does not reliably pick it up, so
neither answer is promised). Each YAML explains why and gives the measured accuracies.

Image ``i`` of dataset ``d`` depends only on the seed, the dataset's name, ``i`` and the
parameters: each part of the image (`STREAMS`) draws from its own generator seeded with
``(seed, crc32(name), i, stream)``, so images come out byte-identical whether they are rendered
serially, in parallel, in chunks or resumed after an interruption, and changing one axis's
parameters leaves the random draws of the others alone.

Every image comes with the record of what was drawn in it (`render_scene`: objects with their
shapes, colours, sizes and positions, the background, overlays, texture, the global colour change),
stored beside the images; `bias.data.planted_scene` writes ground-truth captions from it.

Rendering one 96x96 image is a few dozen OpenCV drawing calls on uint8 arrays and a handful of
vectorised numpy operations on float32 ones: about 750-950 images/s on one core including PNG
encoding (``benchmarks/bench_planted.py``), so the default preset's 3 x 800 images take 3-5 s.
"""

from __future__ import annotations

import colorsys
import hashlib
import json
import math
import multiprocessing
import os
import warnings
import zlib
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field, fields
from functools import lru_cache, partial
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from bias.core.errors import ConfigError
from bias.core.parallel import die_with_parent
from bias.core.progress import progress_bar

#: Bump when the same parameters would render different pixels; it is part of the cache key.
GENERATOR_VERSION = 2
#: Lengths in pixels (texture periods, font sizes, line widths) are given for a 96-pixel image
#: and scale with `size / REFERENCE_SIZE`, so a preset means the same picture at any size.
REFERENCE_SIZE = 96
#: Name of the marker written, last and atomically, once every image of a cache folder exists.
DONE_FILE = "DONE.json"
#: By default, worker processes are used only from this many images to render (see `ensure_planted`).
PARALLEL_MIN_IMAGES = 5000


class PlantedConfigError(ConfigError):
    """The planted-data configuration cannot work; the message says what to change."""


# --------------------------------------------------------------------------------------------
# Parameters, one dataclass per axis
# --------------------------------------------------------------------------------------------

Range = tuple[float, float]


def _check_range(where: str, value: Any, low: float, high: float, *, integer: bool = False) -> tuple:
    """Validate a ``[lo, hi]`` pair inside ``[low, high]``; returns it as a tuple."""
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise PlantedConfigError(f"{where} must be a [low, high] pair, got {value!r}")
    lo, hi = value
    kind = int if integer else float
    if integer and not all(float(v).is_integer() for v in value):
        raise PlantedConfigError(f"{where} must hold whole numbers, got {value!r}")
    lo, hi = kind(lo), kind(hi)
    if not low <= lo <= hi <= high:
        raise PlantedConfigError(f"{where} must satisfy {low} <= low <= high <= {high}, got [{lo}, {hi}]")
    return (lo, hi)


def _check_weights(where: str, value: Any, allowed: Iterable[str]) -> dict[str, float]:
    """Validate a ``{choice: weight}`` mapping over known choices; weights need not sum to 1."""
    allowed = list(allowed)
    if not isinstance(value, Mapping) or not value:
        raise PlantedConfigError(f"{where} must map choices to weights, e.g. {{{allowed[0]}: 1.0}}; got {value!r}")
    unknown = sorted(set(map(str, value)) - set(allowed))
    if unknown:
        raise PlantedConfigError(f"{where}: unknown value(s) {unknown}; known: {allowed}")
    weights = {str(k): float(v) for k, v in value.items()}
    if any(w < 0 or not math.isfinite(w) for w in weights.values()) or sum(weights.values()) <= 0:
        raise PlantedConfigError(f"{where}: weights must be non-negative with a positive sum, got {weights}")
    return weights


def _check_number(where: str, value: Any, low: float, high: float = math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= float(value) <= high:
        raise PlantedConfigError(f"{where} must be a number in [{low}, {high}], got {value!r}")
    return float(value)


@dataclass(frozen=True)
class ColorAxis:
    """Axis 1: global colour and brightness, and the palette objects are drawn from.

    The scene (background, objects, overlays) is first drawn in full range and mapped linearly
    into `scene_range`; texture is added; then, per image, with jitters drawn from normal laws:

        out = gray + s * (x - gray)            saturation s = saturation + N(0, saturation_jitter)
        out = 127.5 + c * (out - 127.5)        contrast   c = contrast + N(0, contrast_jitter)
        out = out + shift                      shift = brightness + N(0, brightness_jitter)
                                                       + tint + N(0, tint_jitter) per channel

    `shift` is rounded to whole grey levels and clipped to +-`max_shift`. With contrast and
    saturation 1, the shift is exactly additive: pixel differences, hence gradients, edge maps
    and every frequency but DC, are unchanged as long as no pixel saturates. A preset that
    wants colour to be the *only* signal (``planted_color``) therefore narrows `scene_range` and
    bounds `max_shift` inside the headroom that leaves.

    Attributes:
        brightness: mean shift added to all three channels, in grey levels (negative = darker).
        brightness_jitter: standard deviation of the per-image brightness shift.
        tint: mean extra shift per channel (R, G, B), in grey levels.
        tint_jitter: standard deviation of the per-image, per-channel tint shift.
        contrast: mean gain around mid-grey (1 = unchanged).
        contrast_jitter: standard deviation of the per-image gain.
        saturation: mean factor on the distance of each pixel from its grey value (1 = unchanged).
        saturation_jitter: standard deviation of the per-image saturation factor.
        max_shift: bound on the absolute per-channel shift; null for no bound.
        scene_range: grey levels [low, high] the scene is mapped into before texture and colour.
        object_saturation: HSV saturation range of object colours, in [0, 1].
        object_value: HSV value (lightness) range of object colours, in [0, 1].
    """

    brightness: float = 0.0
    brightness_jitter: float = 8.0
    tint: tuple[float, float, float] = (0.0, 0.0, 0.0)
    tint_jitter: float = 3.0
    contrast: float = 1.0
    contrast_jitter: float = 0.0
    saturation: float = 1.0
    saturation_jitter: float = 0.0
    max_shift: float | None = None
    scene_range: Range = (0.0, 255.0)
    object_saturation: Range = (0.35, 1.0)
    object_value: Range = (0.3, 1.0)

    def __post_init__(self) -> None:
        _check_number("color.brightness", self.brightness, -255, 255)
        _check_number("color.brightness_jitter", self.brightness_jitter, 0, 255)
        if not isinstance(self.tint, (list, tuple)) or len(self.tint) != 3:
            raise PlantedConfigError(f"color.tint must be [r, g, b] shifts, got {self.tint!r}")
        object.__setattr__(self, "tint", tuple(_check_number("color.tint", t, -255, 255) for t in self.tint))
        _check_number("color.tint_jitter", self.tint_jitter, 0, 255)
        _check_number("color.contrast", self.contrast, 0, 4)
        _check_number("color.contrast_jitter", self.contrast_jitter, 0, 4)
        _check_number("color.saturation", self.saturation, 0, 4)
        _check_number("color.saturation_jitter", self.saturation_jitter, 0, 4)
        if self.max_shift is not None:
            _check_number("color.max_shift", self.max_shift, 0, 255)
        object.__setattr__(self, "scene_range", _check_range("color.scene_range", self.scene_range, 0, 255))
        object.__setattr__(self, "object_saturation",
                           _check_range("color.object_saturation", self.object_saturation, 0, 1))
        object.__setattr__(self, "object_value", _check_range("color.object_value", self.object_value, 0, 1))


TEXTURE_KINDS = ("none", "noise", "stripes", "blur")


@dataclass(frozen=True)
class TextureAxis:
    """Axis 2: texture and frequency content, applied to the whole image after the scene.

    Per image one kind is drawn with the given weights:

    * ``none``: unchanged;
    * ``noise``: band-pass luminance noise, white noise blurred with sigma ``noise_sigmas[0]``
      minus the same noise blurred with ``noise_sigmas[1]`` (a difference of Gaussians), so its
      energy peaks at periods of about 5 pixels at 96 (half of it within 3.5-6 pixels): fine
      enough to pass a high-pass cut-off, coarse enough to survive the resize to the
      classifier's 56-64-pixel crops; scaled to standard deviation `amplitude`;
    * ``stripes``: a luminance sinusoid of period `stripe_period`, random orientation and phase,
      peak amplitude `amplitude`;
    * ``blur``: Gaussian blur with sigma in `blur_sigma` (removes high frequencies instead).

    Noise and stripes are exactly zero-mean over the image and clipped to +-2.5 `amplitude`, so
    they leave the mean colour alone (unless pixels saturate; see `ColorAxis.scene_range`).

    Attributes:
        kinds: weights over ``none``, ``noise``, ``stripes``, ``blur``.
        amplitude: range of the noise standard deviation / stripe amplitude, in grey levels.
        stripe_period: range of the stripe period, in pixels of a 96-pixel image. The classifier
            sees 56-pixel crops of 35-100% of the image (57-96 pixels wide); periods of about
            4.2-5.4 pixels stay between the high-pass cut-off (radius 40 at 224, i.e. periods
            under 5.6 pixels after the resize) and the Nyquist limit for all of them.
        noise_sigmas: [fine, coarse] blur sigmas of the band-pass noise, in pixels at 96.
        blur_sigma: range of the blur sigma, in pixels of a 96-pixel image.
    """

    kinds: dict[str, float] = field(default_factory=lambda: {"none": 1.0})
    amplitude: Range = (6.0, 14.0)
    stripe_period: Range = (4.2, 5.4)
    noise_sigmas: Range = (0.7, 1.6)
    blur_sigma: Range = (0.8, 1.6)

    def __post_init__(self) -> None:
        object.__setattr__(self, "kinds", _check_weights("texture.kinds", self.kinds, TEXTURE_KINDS))
        object.__setattr__(self, "amplitude", _check_range("texture.amplitude", self.amplitude, 0, 128))
        object.__setattr__(self, "stripe_period", _check_range("texture.stripe_period", self.stripe_period, 2, 96))
        object.__setattr__(self, "noise_sigmas", _check_range("texture.noise_sigmas", self.noise_sigmas, 0.1, 20))
        object.__setattr__(self, "blur_sigma", _check_range("texture.blur_sigma", self.blur_sigma, 0.1, 20))


# Shape outlines. Each entry draws a closed outline centred on 0 (it may use `rng` for a random
# aspect ratio); `_object_outline` then rescales it to the area of a disc of diameter 1, so a
# shape's class never changes how much of the image it covers. Adding a shape = adding a row.


def _polar_outline(radii: np.ndarray, start: float = math.pi / 2) -> np.ndarray:
    """Vertices at equal angular steps with the given radii, starting at `start`."""
    angles = start + np.arange(len(radii)) * (2 * math.pi / len(radii))
    return np.stack([np.cos(angles) * radii, -np.sin(angles) * radii], axis=1)


def _regular_polygon(sides: int, rng: np.random.Generator) -> np.ndarray:
    return _polar_outline(np.ones(sides))


def _star(tips: int, inner_ratio: float, rng: np.random.Generator) -> np.ndarray:
    return _polar_outline(np.tile([1.0, inner_ratio], tips))


def _ellipse(aspect: Range, rng: np.random.Generator) -> np.ndarray:
    ratio = rng.uniform(*aspect)
    circle = _polar_outline(np.ones(40))
    return circle * np.array([1.0, 1.0 / ratio])


def _rectangle(aspect: Range, rng: np.random.Generator) -> np.ndarray:
    ratio = rng.uniform(*aspect)
    return np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], dtype=np.float64) * np.array([1.0, 1.0 / ratio])


def _rhombus(aspect: Range, rng: np.random.Generator) -> np.ndarray:
    ratio = rng.uniform(*aspect)
    return np.array([[0, -1], [1 / ratio, 0], [0, 1], [-1 / ratio, 0]], dtype=np.float64)


def _cross(arm_width: float, rng: np.random.Generator) -> np.ndarray:
    a = arm_width
    quarter = [(a, -1), (a, -a), (1, -a)]  # one quarter, rotated four times
    points = []
    for k in range(4):
        c, s = (1, 0, -1, 0)[k], (0, 1, 0, -1)[k]
        points += [(c * x - s * y, s * x + c * y) for x, y in quarter]
    return np.array(points, dtype=np.float64)


SHAPES: dict[str, Callable[[np.random.Generator], np.ndarray]] = {
    "circle": partial(_ellipse, (1.0, 1.0)),
    "ellipse": partial(_ellipse, (1.5, 2.3)),
    "square": partial(_rectangle, (1.0, 1.0)),
    "rectangle": partial(_rectangle, (1.6, 2.6)),
    "diamond": partial(_rhombus, (1.4, 1.8)),
    "triangle": partial(_regular_polygon, 3),
    "pentagon": partial(_regular_polygon, 5),
    "hexagon": partial(_regular_polygon, 6),
    "star": partial(_star, 5, 0.45),
    "cross": partial(_cross, 0.34),
}


@dataclass(frozen=True)
class ShapesAxis:
    """Axis 3: object vocabulary, i.e. which shape classes appear and how often.

    Every shape is scaled to the same area for a given object scale (that of a disc whose
    diameter is the scale), so the vocabulary changes outlines, corners and curvature but not
    how much of the image objects cover.

    Attributes:
        vocabulary: weights over the shape classes in `SHAPES` (circle, ellipse, square,
            rectangle, diamond, triangle, pentagon, hexagon, star, cross); a preset that lists
            this mapping replaces the default one whole, so unlisted shapes do not appear.
        outline_prob: probability that an object also gets a 1-pixel contrasting outline.
    """

    vocabulary: dict[str, float] = field(default_factory=lambda: dict.fromkeys(SHAPES, 1.0))
    outline_prob: float = 0.3

    def __post_init__(self) -> None:
        object.__setattr__(self, "vocabulary", _check_weights("shapes.vocabulary", self.vocabulary, SHAPES))
        _check_number("shapes.outline_prob", self.outline_prob, 0, 1)


@dataclass(frozen=True)
class LayoutAxis:
    """Axis 4: how many objects an image holds, how large and where.

    Attributes:
        count: [min, max] objects per image, uniform over whole numbers, both ends included.
        scale: [min, max] object size as a fraction of the image side (diameter of the
            equal-area disc), drawn log-uniformly so small and large objects are equally common.
        center_spread: object centres are uniform in a centred square of this fraction of the
            image side: 1 = anywhere, 0.3 = object-centric photos.
    """

    count: tuple[int, int] = (2, 6)
    scale: Range = (0.15, 0.4)
    center_spread: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "count", _check_range("layout.count", self.count, 0, 256, integer=True))
        object.__setattr__(self, "scale", _check_range("layout.scale", self.scale, 0.01, 2.0))
        _check_number("layout.center_spread", self.center_spread, 0, 1)


BACKGROUND_KINDS = ("white", "solid", "gradient", "cluttered")


@dataclass(frozen=True)
class BackgroundAxis:
    """Axis 5: what lies behind the objects.

    * ``white``: a clean near-white field (grey level 236-255, very slight tint);
    * ``solid``: one random, moderately saturated colour;
    * ``gradient``: a linear blend between two random colours in a random direction;
    * ``cluttered``: a muted base colour covered with `clutter_count` muted rectangles, ellipses
      and lines of random sizes (many weak edges at every scale).

    Attributes:
        kinds: weights over ``white``, ``solid``, ``gradient``, ``cluttered``.
        clutter_count: [min, max] number of clutter elements on a cluttered background.
    """

    kinds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(BACKGROUND_KINDS, 1.0))
    clutter_count: tuple[int, int] = (14, 28)

    def __post_init__(self) -> None:
        object.__setattr__(self, "kinds", _check_weights("background.kinds", self.kinds, BACKGROUND_KINDS))
        object.__setattr__(self, "clutter_count",
                           _check_range("background.clutter_count", self.clutter_count, 0, 512, integer=True))


GRAPHIC_KINDS = ("banner", "bar", "logo", "frame")


@dataclass(frozen=True)
class OverlayAxis:
    """Axis 6: graphics and text drawn over the scene, as on web images and adverts.

    * graphics (one per image, drawn with probability `graphic_prob`): ``banner`` (a saturated
      strip along the top or bottom with a word in it), ``bar`` (a solid strip along one side),
      ``logo`` (a small disc or square with a letter, in a corner), ``frame`` (a border);
    * text (with probability `text_prob`): `text_count` short random strings of capitals,
      digits and price-like tokens, written with OpenCV's Hershey fonts.

    Attributes:
        text_prob: probability that an image carries text.
        text_count: [min, max] strings per image that carries text.
        text_scale: [min, max] OpenCV font scale at 96 pixels (0.3 = about 9 px high capitals).
        graphic_prob: probability that an image carries a graphic.
        graphics: weights over ``banner``, ``bar``, ``logo``, ``frame``.
    """

    text_prob: float = 0.0
    text_count: tuple[int, int] = (1, 3)
    text_scale: Range = (0.25, 0.5)
    graphic_prob: float = 0.0
    graphics: dict[str, float] = field(default_factory=lambda: dict.fromkeys(GRAPHIC_KINDS, 1.0))

    def __post_init__(self) -> None:
        _check_number("overlays.text_prob", self.text_prob, 0, 1)
        object.__setattr__(self, "text_count", _check_range("overlays.text_count", self.text_count, 0, 32, integer=True))
        object.__setattr__(self, "text_scale", _check_range("overlays.text_scale", self.text_scale, 0.1, 3))
        _check_number("overlays.graphic_prob", self.graphic_prob, 0, 1)
        object.__setattr__(self, "graphics", _check_weights("overlays.graphics", self.graphics, GRAPHIC_KINDS))


#: Axis name -> parameter class, in the order each axis is applied.
AXES: dict[str, type] = {
    "background": BackgroundAxis,
    "layout": LayoutAxis,
    "shapes": ShapesAxis,
    "overlays": OverlayAxis,
    "texture": TextureAxis,
    "color": ColorAxis,
}


@dataclass(frozen=True)
class DatasetParams:
    """Every parameter of one planted dataset, one field per axis (see the axis classes)."""

    background: BackgroundAxis = field(default_factory=BackgroundAxis)
    layout: LayoutAxis = field(default_factory=LayoutAxis)
    shapes: ShapesAxis = field(default_factory=ShapesAxis)
    overlays: OverlayAxis = field(default_factory=OverlayAxis)
    texture: TextureAxis = field(default_factory=TextureAxis)
    color: ColorAxis = field(default_factory=ColorAxis)

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any] | None, where: str = "dataset") -> DatasetParams:
        """Build from ``{axis: {parameter: value}}``; unknown axes and parameters are errors."""
        mapping = dict(mapping or {})
        unknown = sorted(set(mapping) - set(AXES))
        if unknown:
            raise PlantedConfigError(f"{where}: unknown axis {unknown}; axes are {list(AXES)}")
        axes = {}
        for axis_name, axis_cls in AXES.items():
            values = mapping.get(axis_name) or {}
            if not isinstance(values, Mapping):
                raise PlantedConfigError(f"{where}.{axis_name} must be a mapping of parameters, got {values!r}")
            known = {f.name for f in fields(axis_cls)}
            bad = sorted(set(values) - known)
            if bad:
                raise PlantedConfigError(f"{where}.{axis_name}: unknown parameter(s) {bad}; known: {sorted(known)}")
            try:
                axes[axis_name] = axis_cls(**values)
            except PlantedConfigError as err:
                raise PlantedConfigError(f"{where}: {err}") from None
        return cls(**axes)


def _merge_axes(common: Mapping[str, Any], own: Mapping[str, Any]) -> dict[str, Any]:
    """Per axis, the dataset's parameters override the common ones (a whole value at a time)."""
    merged: dict[str, Any] = {axis: dict(values or {}) for axis, values in common.items()}
    for axis, values in own.items():
        if isinstance(values, Mapping) and isinstance(merged.get(axis), dict):
            merged[axis].update(values)
        else:
            merged[axis] = values
    return merged


@dataclass(frozen=True)
class PlantedConfig:
    """A whole planted preset: what the ``generator`` mapping of a data config holds.

    Attributes:
        seed: base seed; every image's randomness derives from (seed, dataset name, index).
        size: side of the square RGB images, in pixels.
        n_per_dataset: images rendered per dataset (the data layer draws train and val from them).
        datasets: dataset name -> its parameters; the order is the label order.
    """

    seed: int
    size: int
    n_per_dataset: int
    datasets: dict[str, DatasetParams]

    KEYS = ("seed", "size", "n_per_dataset", "datasets", "common")

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any]) -> PlantedConfig:
        """Read a ``generator`` mapping (plain dict or OmegaConf node).

        ``common`` (optional) holds axis parameters shared by every dataset; each dataset's own
        parameters override them. Everything else a preset leaves out takes the axis defaults.
        """
        mapping = _to_plain(mapping)
        if not isinstance(mapping, Mapping):
            raise PlantedConfigError(f"the planted generator config must be a mapping, got {type(mapping).__name__}")
        unknown = sorted(set(mapping) - set(cls.KEYS))
        if unknown:
            raise PlantedConfigError(f"generator: unknown key(s) {unknown}; known: {list(cls.KEYS)}")
        seed = mapping.get("seed", 0)
        size = mapping.get("size", REFERENCE_SIZE)
        n = mapping.get("n_per_dataset")
        for key, value, low in (("seed", seed, 0), ("size", size, 16), ("n_per_dataset", n, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise PlantedConfigError(f"generator.{key} must be a whole number >= {low}, got {value!r}")
        datasets = mapping.get("datasets")
        if not isinstance(datasets, Mapping) or len(datasets) < 2:
            count = len(datasets) if isinstance(datasets, Mapping) else 0
            raise PlantedConfigError(
                f"generator.datasets must map two or more dataset names to their axis parameters, got {count}"
            )
        common = mapping.get("common") or {}
        if not isinstance(common, Mapping):
            raise PlantedConfigError(f"generator.common must be a mapping of axes, got {common!r}")
        parsed = {}
        for name, own in datasets.items():
            name = str(name)
            if not name or not all(ch.isalnum() or ch in "_-." for ch in name):
                raise PlantedConfigError(f"dataset name {name!r} may only use letters, digits, '_', '-' and '.'")
            if own is not None and not isinstance(own, Mapping):
                raise PlantedConfigError(f"generator.datasets.{name} must be a mapping of axes, got {own!r}")
            parsed[name] = DatasetParams.from_mapping(_merge_axes(common, own or {}), where=f"datasets.{name}")
        return cls(seed=seed, size=size, n_per_dataset=n, datasets=parsed)

    def manifest(self) -> dict[str, Any]:
        """Everything that determines the pixels, fully resolved (defaults included)."""
        return {
            "generator_version": GENERATOR_VERSION,
            "seed": self.seed,
            "size": self.size,
            "n_per_dataset": self.n_per_dataset,
            "datasets": {name: asdict(params) for name, params in self.datasets.items()},
        }

    def cache_key(self) -> str:
        """Folder name for this preset's images: a hash of `manifest`, so any change re-renders."""
        blob = json.dumps(self.manifest(), sort_keys=True)
        return f"planted-{hashlib.sha1(blob.encode()).hexdigest()[:12]}"

    def render(self, dataset: str, index: int) -> np.ndarray:
        """Image `index` of `dataset` as an HxWx3 uint8 RGB array."""
        return render_image(self.datasets[dataset], seed=self.seed, dataset=dataset, index=index, size=self.size)


def _to_plain(mapping: Any) -> Any:
    try:
        from omegaconf import DictConfig, OmegaConf
    except ImportError:  # pragma: no cover - omegaconf is a dependency, but the generator does not need it
        return mapping
    if isinstance(mapping, DictConfig):
        return OmegaConf.to_container(mapping, resolve=True)
    return mapping


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------


def _pick(rng: np.random.Generator, weights: Mapping[str, float]) -> str:
    """One key drawn with probability proportional to its weight (one uniform draw)."""
    names = list(weights)
    cumulative = np.cumsum([weights[n] for n in names])
    return names[min(int(np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right")), len(names) - 1)]


def _hsv(h: float, s: float, v: float) -> tuple[float, float, float]:
    """HSV in [0, 1] to an RGB tuple in [0, 255], as OpenCV drawing calls take colours."""
    r, g, b = colorsys.hsv_to_rgb(h, s, v)
    return (r * 255.0, g * 255.0, b * 255.0)


def _random_color(rng: np.random.Generator, saturation: Range, value: Range) -> tuple[float, float, float]:
    return _hsv(rng.random(), rng.uniform(*saturation), rng.uniform(*value))


def _contrasting(color: tuple[float, float, float]) -> tuple[float, float, float]:
    """Black or white, whichever stands out more against `color`."""
    luma = 0.299 * color[0] + 0.587 * color[1] + 0.114 * color[2]
    return (20.0, 20.0, 20.0) if luma > 128 else (240.0, 240.0, 240.0)


def _fixed(points: np.ndarray) -> np.ndarray:
    """Sub-pixel vertex coordinates for OpenCV's `shift=4` fixed-point drawing."""
    return np.round(points * 16).astype(np.int32)


@lru_cache(maxsize=8)
def _unit_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates in [-0.5, 0.5], as float32 row and column vectors."""
    coords = (np.arange(size, dtype=np.float32) + 0.5) / size - 0.5
    return coords[:, None], coords[None, :]


# Backgrounds: (rng, size, axis) -> (HxWx3 uint8 RGB, what was drawn: its colours as RGB lists).

Drawn = dict[str, Any]


def _rgb(color: Any) -> list[int]:
    """A drawing colour as the RGB whole numbers it is painted with (what a scene record keeps)."""
    return [int(c) for c in np.asarray(color, dtype=np.float64).astype(np.uint8)]


def _background_white(rng: np.random.Generator, size: int, axis: BackgroundAxis) -> tuple[np.ndarray, Drawn]:
    level = rng.uniform(236, 255)
    tint = rng.uniform(-3, 3, size=3)
    color = np.clip(level + tint, 0, 255).astype(np.uint8)
    return np.broadcast_to(color, (size, size, 3)).copy(), {"rgb": _rgb(color)}


def _background_solid(rng: np.random.Generator, size: int, axis: BackgroundAxis) -> tuple[np.ndarray, Drawn]:
    color = _random_color(rng, (0.1, 0.6), (0.35, 0.95))
    return np.broadcast_to(np.array(color, dtype=np.uint8), (size, size, 3)).copy(), {"rgb": _rgb(color)}


def _background_gradient(rng: np.random.Generator, size: int, axis: BackgroundAxis) -> tuple[np.ndarray, Drawn]:
    start = np.array(_random_color(rng, (0.1, 0.7), (0.3, 1.0)), dtype=np.float32)
    end = np.array(_random_color(rng, (0.1, 0.7), (0.3, 1.0)), dtype=np.float32)
    angle = rng.uniform(0, 2 * math.pi)
    rows, cols = _unit_grid(size)
    t = np.clip(0.5 + (cols * math.cos(angle) + rows * math.sin(angle)) * 1.2, 0, 1)[..., None]
    return (start + t * (end - start)).astype(np.uint8), {"rgb": _rgb(start), "rgb_end": _rgb(end)}


def _clutter_rectangle(img: np.ndarray, rng: np.random.Generator, center: np.ndarray, extent: float, color) -> None:
    half = extent * rng.uniform(0.3, 1.0, size=2) / 2
    cv2.rectangle(img, _fixed(center - half).tolist(), _fixed(center + half).tolist(), color, -1, cv2.LINE_8, 4)


def _clutter_ellipse(img: np.ndarray, rng: np.random.Generator, center: np.ndarray, extent: float, color) -> None:
    axes = (extent * rng.uniform(0.15, 0.5, size=2) * 16).astype(int).tolist()
    cv2.ellipse(img, _fixed(center).tolist(), axes, rng.uniform(0, 180), 0, 360, color, -1, cv2.LINE_AA, 4)


def _clutter_line(img: np.ndarray, rng: np.random.Generator, center: np.ndarray, extent: float, color) -> None:
    angle = rng.uniform(0, math.pi)
    delta = np.array([math.cos(angle), math.sin(angle)]) * extent / 2
    thickness = int(rng.integers(1, 1 + max(1, img.shape[0] // 32)))
    cv2.line(img, _fixed(center - delta).tolist(), _fixed(center + delta).tolist(), color, thickness, cv2.LINE_AA, 4)


CLUTTER_ELEMENTS = (_clutter_rectangle, _clutter_ellipse, _clutter_line)


def _background_cluttered(rng: np.random.Generator, size: int, axis: BackgroundAxis) -> tuple[np.ndarray, Drawn]:
    img, base = _background_solid(rng, size, axis)
    count = int(rng.integers(axis.clutter_count[0], axis.clutter_count[1] + 1))
    for _ in range(count):
        draw = CLUTTER_ELEMENTS[int(rng.integers(len(CLUTTER_ELEMENTS)))]
        center = rng.uniform(0, size, size=2)
        extent = size * math.exp(rng.uniform(math.log(0.06), math.log(0.45)))
        draw(img, rng, center, extent, _random_color(rng, (0.0, 0.5), (0.25, 0.85)))
    return img, {**base, "clutter": count}


BACKGROUNDS: dict[str, Callable[[np.random.Generator, int, BackgroundAxis], tuple[np.ndarray, Drawn]]] = {
    "white": _background_white,
    "solid": _background_solid,
    "gradient": _background_gradient,
    "cluttered": _background_cluttered,
}


def _object_outline(shape: str, rng: np.random.Generator) -> np.ndarray:
    """The shape's outline, rescaled to the area of a disc of diameter 1 (pi / 4)."""
    outline = SHAPES[shape](rng)
    x, y = outline[:, 0], outline[:, 1]
    area = 0.5 * abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))
    return outline * math.sqrt((math.pi / 4) / area)


def _draw_objects(img: np.ndarray, rngs: Mapping[str, np.random.Generator], params: DatasetParams) -> list[Drawn]:
    """Objects: geometry from the layout stream, class from the shapes stream, fill from the palette one.

    Returns what was drawn, in drawing order (later objects lie on top): shape, fill RGB, size (the
    diameter of the equal-area disc as a fraction of the image side), centre (x, y as fractions of the
    side, from the top-left corner) and whether it has an outline.
    """
    size = img.shape[0]
    layout_rng, shapes_rng, palette_rng = rngs["layout"], rngs["shapes"], rngs["palette"]
    layout, shapes, color = params.layout, params.shapes, params.color
    count = int(layout_rng.integers(layout.count[0], layout.count[1] + 1))
    log_lo, log_hi = math.log(layout.scale[0]), math.log(layout.scale[1])
    line = max(1, round(size / REFERENCE_SIZE))
    drawn = []
    for _ in range(count):
        diameter = size * math.exp(layout_rng.uniform(log_lo, log_hi))
        angle = layout_rng.uniform(0, 2 * math.pi)
        center = size / 2 + (layout_rng.random(2) - 0.5) * layout.center_spread * size
        shape = _pick(shapes_rng, shapes.vocabulary)
        outline = _object_outline(shape, shapes_rng)
        has_outline = shapes_rng.random() < shapes.outline_prob
        fill = _random_color(palette_rng, color.object_saturation, color.object_value)
        c, s = math.cos(angle), math.sin(angle)
        points = _fixed(outline @ np.array([[c, s], [-s, c]]) * diameter + center)
        cv2.fillPoly(img, [points], fill, cv2.LINE_AA, 4)
        if has_outline:
            cv2.polylines(img, [points], True, _contrasting(fill), line, cv2.LINE_AA, 4)
        drawn.append({"shape": shape, "rgb": _rgb(fill), "size": round(diameter / size, 4),
                      "center": [round(float(center[0]) / size, 4), round(float(center[1]) / size, 4)],
                      "outlined": bool(has_outline)})
    return drawn


# Text and graphics. Graphics: (img, rng) -> what was drawn, drawn in place.

FONTS = (cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_TRIPLEX, cv2.FONT_HERSHEY_COMPLEX)
_CAPITALS = "ABCDEFGHJKLMNPQRSTUVWXYZ"
_DIGITS = "0123456789"


def _random_word(rng: np.random.Generator) -> str:
    """A short token as found on web images: a word in capitals, a number, a price or a percentage."""
    style = int(rng.integers(4))
    if style == 0:
        return "$" + str(int(rng.integers(1, 100))) + "." + "".join(rng.choice(list(_DIGITS), 2))
    if style == 1:
        return str(int(rng.integers(5, 95))) + "%"
    alphabet = _CAPITALS if style == 2 else _CAPITALS + _DIGITS
    return "".join(rng.choice(list(alphabet), int(rng.integers(2, 7))))


def _put_text(img: np.ndarray, rng: np.random.Generator, text: str, scale: float, color, origin=None) -> None:
    size = img.shape[0]
    font = FONTS[int(rng.integers(len(FONTS)))]
    thickness = max(1, round(scale * 2.5 * rng.uniform(0.6, 1.4)))
    (width, height), _ = cv2.getTextSize(text, font, scale, thickness)
    if origin is None:
        origin = (int(rng.uniform(0, max(1, size - width))), int(rng.uniform(height, max(height + 1, size))))
    cv2.putText(img, text, origin, font, scale, color, thickness, cv2.LINE_AA)


def _graphic_banner(img: np.ndarray, rng: np.random.Generator) -> Drawn:
    size = img.shape[0]
    height = int(size * rng.uniform(0.14, 0.24))
    top = 0 if rng.random() < 0.5 else size - height
    fill = _random_color(rng, (0.6, 1.0), (0.5, 1.0))
    cv2.rectangle(img, (0, top), (size, top + height), fill, -1)
    scale = height / 34 * rng.uniform(0.8, 1.1)
    word = _random_word(rng)
    _put_text(img, rng, word, scale, _contrasting(fill), (int(size * rng.uniform(0.02, 0.3)), top + int(height * 0.75)))
    return {"side": "top" if top == 0 else "bottom", "rgb": _rgb(fill), "text": word}


def _graphic_bar(img: np.ndarray, rng: np.random.Generator) -> Drawn:
    size = img.shape[0]
    width = int(size * rng.uniform(0.05, 0.12))
    fill = _random_color(rng, (0.5, 1.0), (0.3, 1.0))
    side = int(rng.integers(4))
    corners = (((0, 0), (width, size)), ((size - width, 0), (size, size)),
               ((0, 0), (size, width)), ((0, size - width), (size, size)))[side]
    cv2.rectangle(img, corners[0], corners[1], fill, -1)
    return {"side": ("left", "right", "top", "bottom")[side], "rgb": _rgb(fill)}


def _graphic_logo(img: np.ndarray, rng: np.random.Generator) -> Drawn:
    size = img.shape[0]
    extent = size * rng.uniform(0.14, 0.22)
    margin = size * 0.04 + extent / 2
    center = np.array([margin if rng.random() < 0.5 else size - margin, margin if rng.random() < 0.5 else size - margin])
    fill = _random_color(rng, (0.6, 1.0), (0.4, 1.0))
    shape = "circle" if rng.random() < 0.5 else "square"
    outline = _object_outline(shape, rng) * extent + center
    cv2.fillPoly(img, [_fixed(outline)], fill, cv2.LINE_AA, 4)
    letter = _CAPITALS[int(rng.integers(len(_CAPITALS)))]
    scale = extent / 30
    (width, height), _ = cv2.getTextSize(letter, cv2.FONT_HERSHEY_DUPLEX, scale, 1)
    origin = (int(center[0] - width / 2), int(center[1] + height / 2))
    cv2.putText(img, letter, origin, cv2.FONT_HERSHEY_DUPLEX, scale, _contrasting(fill), 1, cv2.LINE_AA)
    corner = ("top" if center[1] < size / 2 else "bottom") + (" left" if center[0] < size / 2 else " right")
    return {"side": corner, "rgb": _rgb(fill), "shape": shape, "text": letter}


def _graphic_frame(img: np.ndarray, rng: np.random.Generator) -> Drawn:
    size = img.shape[0]
    thickness = int(rng.integers(2, 2 + max(2, size // 24)))
    fill = _random_color(rng, (0.0, 1.0), (0.2, 1.0))
    inset = thickness // 2
    cv2.rectangle(img, (inset, inset), (size - 1 - inset, size - 1 - inset), fill, thickness)
    return {"rgb": _rgb(fill)}


GRAPHICS: dict[str, Callable[[np.ndarray, np.random.Generator], Drawn]] = {
    "banner": _graphic_banner,
    "bar": _graphic_bar,
    "logo": _graphic_logo,
    "frame": _graphic_frame,
}


def _draw_overlays(img: np.ndarray, rng: np.random.Generator, axis: OverlayAxis) -> Drawn:
    """Graphics and text; returns {"graphic": null or {kind, side, rgb, ...}, "text": [{text, rgb}, ...]}."""
    # Both decisions are drawn up front so the number of draws does not depend on the outcome.
    has_graphic, has_text = rng.random() < axis.graphic_prob, rng.random() < axis.text_prob
    drawn: Drawn = {"graphic": None, "text": []}
    if has_graphic:
        kind = _pick(rng, axis.graphics)
        drawn["graphic"] = {"kind": kind, **GRAPHICS[kind](img, rng)}
    if has_text:
        factor = img.shape[0] / REFERENCE_SIZE
        for _ in range(int(rng.integers(axis.text_count[0], axis.text_count[1] + 1))):
            color = _random_color(rng, (0.0, 1.0), (0.0, 1.0))
            word = _random_word(rng)
            _put_text(img, rng, word, rng.uniform(*axis.text_scale) * factor, color)
            drawn["text"].append({"text": word, "rgb": _rgb(color)})
    return drawn


# Texture: (float32 RGB image, rng, axis) -> image. The additive kinds add the same
# field to the three channels, i.e. they change luminance only.


#: Additive textures are clipped to this many times their amplitude (bounds the headroom needed).
TEXTURE_PEAK = 2.5


def _zero_mean_clipped(texture: np.ndarray, amplitude: float) -> np.ndarray:
    texture = np.clip(texture, -TEXTURE_PEAK * amplitude, TEXTURE_PEAK * amplitude)
    return texture - texture.mean()


def _texture_none(img: np.ndarray, rng: np.random.Generator, axis: TextureAxis) -> np.ndarray:
    return img


def _texture_noise(img: np.ndarray, rng: np.random.Generator, axis: TextureAxis) -> np.ndarray:
    size = img.shape[0]
    amplitude = rng.uniform(*axis.amplitude)
    white = rng.standard_normal((size, size), dtype=np.float32)
    fine, coarse = (sigma * size / REFERENCE_SIZE for sigma in axis.noise_sigmas)
    band = cv2.GaussianBlur(white, (0, 0), fine, borderType=cv2.BORDER_REFLECT)
    band -= cv2.GaussianBlur(white, (0, 0), coarse, borderType=cv2.BORDER_REFLECT)
    band *= amplitude / max(float(band.std()), 1e-6)
    return img + _zero_mean_clipped(band, amplitude)[..., None]


def _texture_stripes(img: np.ndarray, rng: np.random.Generator, axis: TextureAxis) -> np.ndarray:
    size = img.shape[0]
    amplitude = rng.uniform(*axis.amplitude)
    period = rng.uniform(*axis.stripe_period) / REFERENCE_SIZE  # in units of the image side
    angle, phase = rng.uniform(0, math.pi), rng.uniform(0, 2 * math.pi)
    rows, cols = _unit_grid(size)
    wave = np.sin((cols * math.cos(angle) + rows * math.sin(angle)) * (2 * math.pi / period) + phase) * amplitude
    return img + _zero_mean_clipped(wave.astype(np.float32), amplitude)[..., None]


def _texture_blur(img: np.ndarray, rng: np.random.Generator, axis: TextureAxis) -> np.ndarray:
    sigma = rng.uniform(*axis.blur_sigma) * img.shape[0] / REFERENCE_SIZE
    return cv2.GaussianBlur(img, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)


TEXTURES: dict[str, Callable[[np.ndarray, np.random.Generator, TextureAxis], np.ndarray]] = {
    "none": _texture_none,
    "noise": _texture_noise,
    "stripes": _texture_stripes,
    "blur": _texture_blur,
}

_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def _apply_color(img: np.ndarray, rng: np.random.Generator, axis: ColorAxis) -> tuple[np.ndarray, Drawn]:
    """Saturation, contrast and shift of `ColorAxis`; `img` holds whole grey levels on entry.

    Returns the image and the change drawn for it (saturation and contrast factors, RGB shift in grey levels).
    """
    draws = rng.standard_normal(6)  # always six draws, whatever is enabled
    saturation = max(0.0, axis.saturation + draws[0] * axis.saturation_jitter)
    contrast = max(0.0, axis.contrast + draws[1] * axis.contrast_jitter)
    shift = axis.brightness + draws[2] * axis.brightness_jitter + np.asarray(axis.tint) + draws[3:] * axis.tint_jitter
    if axis.max_shift is not None:
        shift = np.clip(shift, -axis.max_shift, axis.max_shift)
    shift = np.floor(shift + 0.5).astype(np.float32)  # whole levels: an exactly additive change
    if saturation != 1.0:
        gray = (img @ _LUMA)[..., None]
        img = gray + saturation * (img - gray)
    if contrast != 1.0:
        img = 127.5 + contrast * (img - 127.5)
    change = {"saturation": round(float(saturation), 4), "contrast": round(float(contrast), 4),
              "shift": [int(v) for v in shift]}
    return img + shift, change


#: Independent random streams of one image; the position is the last element of the stream's
#: seed. "palette" (object colours) is separate from "color" (the global change) so that
#: changing the number of objects does not change the global colour drawn for an image.
STREAMS = ("background", "layout", "shapes", "overlays", "texture", "color", "palette")


def _dataset_key(name: str) -> int:
    return zlib.crc32(name.encode("utf-8"))


def render_image(params: DatasetParams, *, seed: int, dataset: str, index: int, size: int = REFERENCE_SIZE) -> np.ndarray:
    """Render image `index` of the dataset called `dataset`: an (size, size, 3) uint8 RGB array.

    The result depends only on the arguments: each part of the image draws from its own
    generator seeded with ``(seed, crc32(dataset), index, stream)`` (see `STREAMS`).
    """
    return render_scene(params, seed=seed, dataset=dataset, index=index, size=size)[0]


#: Bump when a scene record gains, loses or changes a field (records are rewritten, pixels are not).
SCENE_VERSION = 1


def render_scene(params: DatasetParams, *, seed: int, dataset: str, index: int,
                 size: int = REFERENCE_SIZE) -> tuple[np.ndarray, dict[str, Any]]:
    """`render_image` and the record of what was drawn in it (the same draws: recording changes no pixel).

    The record (plain JSON types)::

        dataset, index, size, scene_version, [sha1: of the image file, added when it is written]
        background  {kind: white | solid | gradient | cluttered, rgb, [rgb_end: gradient], [clutter: count]}
        objects     [{shape, rgb, size, center: [x, y], outlined}, ...] in drawing order (later on top);
                    size = diameter of the equal-area disc / image side, center in fractions of the side
        overlays    {graphic: null | {kind: banner | bar | logo | frame, rgb, [side], [text], [shape]},
                     text: [{text, rgb}, ...]}
        texture     none | noise | stripes | blur
        color       {saturation, contrast, shift: [r, g, b]}: the global change applied after drawing

    Colours are those the parts were drawn with, before texture and the global colour change.
    `bias.data.planted_scene` writes captions from it.
    """
    key = _dataset_key(dataset)
    rngs = {stream: np.random.default_rng([seed, key, index, position]) for position, stream in enumerate(STREAMS)}
    kind = _pick(rngs["background"], params.background.kinds)
    img, background = BACKGROUNDS[kind](rngs["background"], size, params.background)
    objects = _draw_objects(img, rngs, params)
    overlays = _draw_overlays(img, rngs["overlays"], params.overlays)
    low, high = params.color.scene_range
    scene = img.astype(np.float32)
    if (low, high) != (0.0, 255.0):
        # whole levels again, so that texture (not rounding) is all that differs between datasets
        scene = np.floor(low + scene * ((high - low) / 255.0) + 0.5)
    texture_rng = rngs["texture"]
    texture = _pick(texture_rng, params.texture.kinds)
    scene = TEXTURES[texture](scene, texture_rng, params.texture)
    scene = np.floor(scene + 0.5)
    scene, color = _apply_color(scene, rngs["color"], params.color)
    record = {"dataset": dataset, "index": int(index), "size": int(size), "scene_version": SCENE_VERSION,
              "background": {"kind": kind, **background}, "objects": objects, "overlays": overlays,
              "texture": texture, "color": color}
    return np.clip(np.floor(scene + 0.5), 0, 255).astype(np.uint8), record


# --------------------------------------------------------------------------------------------
# Cache: render once, reuse, resume
# --------------------------------------------------------------------------------------------


def image_name(index: int) -> str:
    """File name of image `index` inside its dataset folder."""
    return f"{index:06d}.png"


#: Folder of a preset's scene records, beside its dataset folders; '@' is not allowed in dataset names.
SCENES_DIR = "@scenes"


def scene_record_path(image_path: str | os.PathLike) -> Path:
    """Where the scene record of a rendered planted image lies: ``<preset>/@scenes/<dataset>/<index>.json``."""
    image_path = Path(image_path)
    return image_path.parent.parent / SCENES_DIR / image_path.parent.name / f"{image_path.stem}.json"


#: In a preset's `SCENES_DIR`: {SHA-1 of an image file: "<dataset>/<index>.json"}, written with DONE.json.
SCENE_INDEX = "sha1.json"


def _write_scene_index(root: Path, folders: Mapping[str, Path]) -> None:
    index = {}
    for folder in folders.values():
        for record_path in sorted((root / SCENES_DIR / folder.name).glob("*.json")):
            index[json.loads(record_path.read_text())["sha1"]] = f"{folder.name}/{record_path.name}"
    _write_atomic(root / SCENES_DIR / SCENE_INDEX, json.dumps(index, sort_keys=True).encode())


@lru_cache(maxsize=64)
def _scene_index(path: str, mtime_ns: int) -> dict[str, str]:
    return json.loads(Path(path).read_text())


def find_scene_record(sha1: str, cache_dir: str | os.PathLike) -> dict[str, Any]:
    """The scene record of the planted image whose file has SHA-1 `sha1`, from any preset under `cache_dir`.

    Content-addressed like everything downstream of the index: the record is found by the image's
    bytes, not by a path. `KeyError` (saying so) when no preset in this cache rendered such an image.
    """
    for index_path in sorted(Path(cache_dir).glob(f"planted/*/{SCENES_DIR}/{SCENE_INDEX}")):
        entry = _scene_index(str(index_path), index_path.stat().st_mtime_ns).get(sha1)
        if entry is not None:
            return _load_scene_record(index_path.parent / entry)
    raise KeyError(f"no planted scene record of the image with SHA-1 {sha1} under {Path(cache_dir) / 'planted'}: "
                   "it is not an image of the planted generator (data=planted*) rendered into this cache")


def read_scene_record(image_path: str | os.PathLike) -> dict[str, Any]:
    """The scene record (`render_scene`) of a planted image file; `FileNotFoundError` if it is not one."""
    path = scene_record_path(image_path)
    if not path.exists():
        raise FileNotFoundError(f"no planted scene record at {path}: {image_path} is not an image of the "
                                "planted generator (data=planted*)")
    return _load_scene_record(path)


def _load_scene_record(path: Path) -> dict[str, Any]:
    record = json.loads(path.read_text())
    if record.get("scene_version") != SCENE_VERSION:
        raise ValueError(f"{path} is a scene record of version {record.get('scene_version')}, not "
                         f"{SCENE_VERSION}: render the planted data again (delete {path.parent.parent.parent})")
    return record


def _write_atomic(path: Path, data: bytes) -> None:
    """Write to a hidden temporary file beside `path`, then rename: readers never see half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _encode_png(image: np.ndarray) -> bytes:
    ok, buffer = cv2.imencode(".png", np.ascontiguousarray(image[..., ::-1]), [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:  # pragma: no cover - OpenCV only fails here on invalid arrays
        raise RuntimeError("OpenCV could not encode a PNG")
    return buffer.tobytes()


@dataclass(frozen=True)
class _Chunk:
    """A unit of work: some images of one dataset, rendered and written by one process."""

    params: DatasetParams
    seed: int
    size: int
    dataset: str
    folder: Path
    indices: tuple[int, ...]


def _render_chunk(chunk: _Chunk) -> int:
    """Render the chunk's images and their scene records; an image already on disk is not rewritten
    (a cache from before scene records gets its records only: the pixels would be the same)."""
    for index in chunk.indices:
        image, record = render_scene(chunk.params, seed=chunk.seed, dataset=chunk.dataset, index=index,
                                     size=chunk.size)
        path = chunk.folder / image_name(index)
        if path.exists():
            data = path.read_bytes()
        else:
            data = _encode_png(image)
            _write_atomic(path, data)
        record["sha1"] = hashlib.sha1(data, usedforsecurity=False).hexdigest()  # the file's, as indexes key it
        record_path = scene_record_path(path)
        record_path.parent.mkdir(parents=True, exist_ok=True)
        _write_atomic(record_path, json.dumps(record, separators=(",", ":")).encode())
    return len(chunk.indices)


def _init_worker() -> None:
    die_with_parent()
    cv2.setNumThreads(1)  # one process per core already; OpenCV's own threads would only contend


def _render_in_workers(chunks: list[_Chunk], workers: int, bar: Any) -> list[_Chunk]:
    """Render chunks in `workers` processes; returns the chunks left undone if the pool broke.

    Workers are spawned, not forked: the caller may hold torch or OpenCV thread pools that a
    fork would copy mid-state. A spawned worker re-imports the caller's main module, which fails
    when there is none to import (code piped into ``python -``, some notebooks); the pool then
    breaks, and the caller renders what is left in its own process instead of hanging.
    """
    finished: set[int] = set()
    try:
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=_init_worker) as pool:
            futures = {pool.submit(_render_chunk, chunk): position for position, chunk in enumerate(chunks)}
            for future in as_completed(futures):
                bar.update(future.result())
                finished.add(futures[future])
    except BrokenProcessPool:
        warnings.warn("planted: the worker processes failed to start; rendering in this process instead",
                      RuntimeWarning, stacklevel=3)
    return [chunk for position, chunk in enumerate(chunks) if position not in finished]


def _missing(folder: Path, n: int) -> list[int]:
    """Indices whose image or scene record is not on disk."""
    present = set(os.listdir(folder)) if folder.is_dir() else set()
    records = folder.parent / SCENES_DIR / folder.name
    recorded = set(os.listdir(records)) if records.is_dir() else set()
    return [i for i in range(n) if image_name(i) not in present or f"{i:06d}.json" not in recorded]


def _is_done(root: Path, manifest: Mapping[str, Any], folders: Mapping[str, Path], n: int) -> bool:
    try:
        recorded = json.loads((root / DONE_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return False
    if recorded.get("manifest") != json.loads(json.dumps(manifest)):
        return False
    if not (root / SCENES_DIR / SCENE_INDEX).exists():
        return False
    return not any(_missing(folder, n) for folder in folders.values())


def planted_folders(generator_cfg: Mapping[str, Any] | PlantedConfig,
                    cache_dir: str | os.PathLike) -> tuple[Path, dict[str, Path]]:
    """Where `ensure_planted` puts a preset: its cache folder and ``{dataset name: folder}``."""
    config = generator_cfg if isinstance(generator_cfg, PlantedConfig) else PlantedConfig.from_mapping(generator_cfg)
    root = Path(cache_dir) / "planted" / config.cache_key()
    return root, {name: root / name for name in config.datasets}


def ensure_planted(
    generator_cfg: Mapping[str, Any],
    cache_dir: str | os.PathLike,
    num_workers: int | None = None,
    progress: bool = True,
    chunk_size: int = 50,
) -> dict[str, Path]:
    """Render a planted preset into the cache once and return ``{dataset name: folder of PNGs}``.

    The preset goes to ``cache_dir/planted/planted-<hash of every resolved parameter>``, so
    changing any parameter (or `GENERATOR_VERSION`) renders into a new folder. It holds one
    folder per dataset with ``000000.png`` ..., the scene record of every image (`render_scene`) in
    ``@scenes/<dataset>/000000.json`` ... (`scene_record_path`), and, written atomically after the
    last image, ``@scenes/sha1.json`` (image file SHA-1 -> its record, for `find_scene_record`) and
    ``DONE.json`` with the parameters. When ``DONE.json`` is present and matches and every file
    exists, nothing is rendered; otherwise only the missing images are (every PNG is written
    atomically, so a file that exists is whole). Concurrent callers are safe but duplicate the
    work; callers that can, let one process render first.

    Args:
        generator_cfg: the ``generator`` mapping of a data config (dict or OmegaConf node).
        cache_dir: cache root.
        num_workers: processes to render with; 0 or 1 = in this process. None = in this process
            below `PARALLEL_MIN_IMAGES` missing images, else min(2, CPU count): a spawned worker
            re-imports the caller's main module (torch and all, for a training script), which
            costs more than rendering a few thousand images. The bytes are the same either way.
        progress: show a progress bar.
        chunk_size: images per task handed to a worker.
    """
    config = PlantedConfig.from_mapping(generator_cfg)
    root, folders = planted_folders(config, cache_dir)
    manifest = config.manifest()
    if _is_done(root, manifest, folders, config.n_per_dataset):
        return folders
    (root / DONE_FILE).unlink(missing_ok=True)
    chunks = []
    for name, folder in folders.items():
        folder.mkdir(parents=True, exist_ok=True)
        missing = _missing(folder, config.n_per_dataset)
        for start in range(0, len(missing), chunk_size):
            chunks.append(_Chunk(config.datasets[name], config.seed, config.size, name, folder,
                                 tuple(missing[start:start + chunk_size])))
    total = sum(len(c.indices) for c in chunks)
    if num_workers is None:
        workers = min(2, os.cpu_count() or 1) if total >= PARALLEL_MIN_IMAGES else 1
    else:
        workers = num_workers
    workers = max(1, min(workers, len(chunks)))
    with progress_bar(total=total, desc=f"rendering {root.name}", unit="img", disable=not progress or total == 0) as bar:
        left = _render_in_workers(chunks, workers, bar) if workers > 1 else chunks
        for chunk in left:
            bar.update(_render_chunk(chunk))
    _write_scene_index(root, folders)
    record = {"manifest": manifest, "counts": {name: config.n_per_dataset for name in folders}}
    _write_atomic(root / DONE_FILE, json.dumps(record, indent=1, sort_keys=True).encode())
    return folders
