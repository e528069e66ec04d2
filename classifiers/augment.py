"""Train and eval preprocessing for the published augmentation groups (up to the [0, 1] tensor).

Group "a": RandomResizedCrop + flip + RandAugment + ImageNet normalisation; "b": crop + flip;
"c": crop only. The recipe says what each group holds (`recipe.groups`), the transform says
which group it uses (`Transform.augment_group`). A transform whose output is a chart rather than a
scene (`Transform.view = "whole"`, e.g. colours sorted into rows) is shown whole instead, in training
and evaluation alike (`whole_view`).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def crop_box(width: int, height: int, scale: Sequence[float], ratio: Sequence[float],
             rng: random.Random) -> tuple[int, int, int, int]:
    """``(top, left, height, width)`` of a random-resized-crop box, torchvision's rule with `rng`'s draws.

    Ten tries of an area share in `scale` and a log-uniform aspect ratio in `ratio`; if none fits,
    the centre crop with the ratio clamped into `ratio`. Same distribution as
    ``T.RandomResizedCrop.get_params``, which pays ~50 us per image for its one-element torch draws.
    """
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return rng.randint(0, height - h), rng.randint(0, width - w), h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


class SeededRandomResizedCrop:
    """RandomResizedCrop (bicubic) whose box comes from Python's `random`, which `ImageDataset` seeds per
    sample (as it seeds torch's generator); the crop and resize are torchvision's."""

    def __init__(self, size: int, scale: Sequence[float], ratio: Sequence[float],
                 interpolation: InterpolationMode = InterpolationMode.BICUBIC) -> None:
        self.size, self.scale, self.ratio, self.interpolation = [size, size], tuple(scale), tuple(ratio), interpolation

    def __call__(self, img: Image.Image) -> Image.Image:
        top, left, h, w = crop_box(img.width, img.height, self.scale, self.ratio, random)
        return TF.resized_crop(img, top, left, h, w, self.size, self.interpolation, antialias=True)

    def __repr__(self) -> str:
        return f"SeededRandomResizedCrop(size={self.size}, scale={self.scale}, ratio={self.ratio})"


class SeededShiftCrop:
    """The eval view shifted: resize the shorter side to `resize` (bicubic, as `eval_augment`), then a
    `size` x `size` crop at a random position drawn from Python's `random` (seeded per sample).

    The training view keeps the evaluation's scale, so a one-pixel structure (an edge map's lines, the
    8-px JPEG block grid, the highest frequencies) is never resampled between training and evaluation;
    a random-resized crop rescales every training view by a random factor and smears exactly those.
    """

    def __init__(self, size: int, resize: int) -> None:
        self.size, self.resize = size, resize

    def __call__(self, img: Image.Image) -> Image.Image:
        if min(img.size) != self.resize:
            img = TF.resize(img, self.resize, InterpolationMode.BICUBIC, antialias=True)
        top = random.randint(0, img.height - self.size) if img.height > self.size else 0
        left = random.randint(0, img.width - self.size) if img.width > self.size else 0
        return TF.crop(img, top, left, self.size, self.size)

    def __repr__(self) -> str:
        return f"SeededShiftCrop(size={self.size}, resize={self.resize})"


class SeededHorizontalFlip:
    """Mirror with probability `p`, drawn from Python's `random` (seeded per sample)."""

    def __init__(self, p: float = 0.5) -> None:
        self.p = p

    def __call__(self, img: Image.Image) -> Image.Image:
        return img.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if random.random() < self.p else img


def to_unit_tensor(img: Image.Image) -> torch.Tensor:
    """``T.ToTensor()`` (C x H x W float32 in [0, 1], the same values) without its per-call overhead for
    8-bit RGB and grey images; other modes go through torchvision."""
    if img.mode not in ("RGB", "L"):
        return TF.to_tensor(img)
    arr = np.asarray(img)
    if not arr.flags.writeable:
        arr = arr.copy()
    t = torch.from_numpy(arr)
    t = t[None] if t.ndim == 2 else t.permute(2, 0, 1)
    return t.contiguous().to(torch.float32).div(255)


class ChannelNormalize:
    """``T.Normalize(mean, std)`` on a C x H x W float tensor, the same values, without its checks and clone."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x.sub(self.mean.to(x.dtype)).div_(self.std.to(x.dtype))

    def __repr__(self) -> str:
        return f"ChannelNormalize(mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()})"


def _group(recipe: Mapping[str, Any], group: str) -> Mapping[str, Any]:
    groups = recipe["groups"]
    if group not in groups:
        raise KeyError(f"recipe has no augmentation group {group!r}; it defines {sorted(groups)}")
    return groups[group]


def normalizer(recipe: Mapping[str, Any], group: str, transform: str | None = None
               ) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """The group's normalisation, applied after the transform's tensor stage.

    Shuffles commute with per-channel normalisation, but filters do not: an hpf output is
    min-max scaled to [0, 1], so normalising before it would be undone. A recipe may set
    `normalize_overrides: {transform name: bool}` to depart from the group for one transform.
    """
    normalize = _group(recipe, group).get("normalize", False)
    normalize = (recipe.get("normalize_overrides") or {}).get(transform, normalize)
    return ChannelNormalize(IMAGENET_MEAN, IMAGENET_STD) if normalize else None


VIEWS = ("scene", "whole")


def whole_view(size: int) -> Callable[[Image.Image], torch.Tensor]:
    """The whole image resized to `size` x `size` (bicubic, antialiased; untouched when already that size),
    no crop, no flip: for charts, where every position means something (`Transform.view = "whole"`)."""

    def resize(img: Image.Image) -> Image.Image:
        if img.size == (size, size):
            return img
        return TF.resize(img, [size, size], InterpolationMode.BICUBIC, antialias=True)

    return T.Compose([resize, to_unit_tensor])


def transform_view(recipe: Mapping[str, Any], name: str, declared: str) -> str:
    """How the network frames transform `name`'s output under `recipe`: the transform's declared view, unless the
    recipe's `view_overrides: {transform name: view}` departs from it for that transform (as `normalize_overrides`
    does for normalisation). `recipe=cpu` shows the random pixel shuffle whole: its output is a bag of pixels, and
    a random crop only subsamples and resamples the bag."""
    view = (recipe.get("view_overrides") or {}).get(name, declared)
    _check_view(view)
    return view


def _check_view(view: str) -> None:
    if view not in VIEWS:
        raise ValueError(f"a transform's view must be one of {VIEWS}, not {view!r}")


def train_augment(recipe: Mapping[str, Any], group: str, view: str = "scene"
                  ) -> Callable[[Image.Image], torch.Tensor]:
    """The training view of the group's published augmentation, or the whole image for `view="whole"`."""
    spec = _group(recipe, group)
    _check_view(view)
    if view == "whole":
        return whole_view(int(recipe["image_size"]))
    size = int(recipe["image_size"])
    crop = spec.get("crop", "resized")
    if crop == "resized":
        steps: list[Callable] = [SeededRandomResizedCrop(size, recipe["crop_scale"], recipe["crop_ratio"])]
    elif crop == "shift":
        steps = [SeededShiftCrop(size, int(recipe.get("eval_resize") or size))]
    else:
        raise ValueError(f"recipe.groups.{group}.crop must be 'resized' or 'shift', not {crop!r}")
    if spec.get("hflip", False):
        steps.append(SeededHorizontalFlip())
    if spec.get("randaugment"):
        from timm.data.auto_augment import rand_augment_transform

        hparams = {"translate_const": int(size * 0.45), "img_mean": tuple(round(255 * m) for m in IMAGENET_MEAN),
                   "interpolation": Image.BICUBIC}
        steps.append(posterize_to_zero_bits(rand_augment_transform(str(spec["randaugment"]), hparams)))
    return T.Compose([*steps, to_unit_tensor])


def _posterize(img: Image.Image, bits_to_keep: int, **_: Any) -> Image.Image:
    """Keep the `bits_to_keep` most significant bits; 0 bits gives a black image, as Pillow < 13 did."""
    if bits_to_keep >= 8:
        return img
    if bits_to_keep <= 0:
        return Image.new(img.mode, img.size)
    from PIL import ImageOps

    return ImageOps.posterize(img, bits_to_keep)


def posterize_to_zero_bits(rand_augment: Any) -> Any:
    """Let timm's RandAugment posterize to 0 bits again.

    With `inc1` the posterize level is `4 - int(magnitude / 10 * 4)`, which is 0 whenever the
    sampled magnitude (m9, std 0.5, clipped to 10) reaches 10; Pillow 13 raises on 0 bits where
    older versions returned a black image, so training with `recipe=paper` would crash now and
    then. This swaps in a posterize with the old behaviour, leaving every other op alone.
    """
    for op in getattr(rand_augment, "ops", []):
        if op.name.startswith("Posterize"):
            op.aug_fn = _posterize
    return rand_augment


def eval_augment(recipe: Mapping[str, Any], group: str, view: str = "scene"
                 ) -> Callable[[Image.Image], torch.Tensor]:
    """Resize the shorter side to `eval_resize` (bicubic), centre-crop `image_size` (paper: 256 -> 224); the
    whole image resized to `image_size` for `view="whole"`."""
    _group(recipe, group)
    _check_view(view)
    size = int(recipe["image_size"])
    if view == "whole":
        return whole_view(size)
    resize = int(recipe.get("eval_resize") or size)
    return T.Compose([T.Resize(resize, interpolation=InterpolationMode.BICUBIC), T.CenterCrop(size), to_unit_tensor])
