"""Train and eval preprocessing for the published augmentation groups (up to the [0, 1] tensor).

Group "a": RandomResizedCrop + flip + RandAugment + ImageNet normalisation; "b": crop + flip;
"c": crop only. The recipe says what each group holds (`recipe.groups`), the transform says
which group it uses (`Transform.augment_group`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from PIL import Image
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


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
    return T.Normalize(IMAGENET_MEAN, IMAGENET_STD) if normalize else None


def train_augment(recipe: Mapping[str, Any], group: str) -> Callable[[Image.Image], torch.Tensor]:
    spec = _group(recipe, group)
    size = int(recipe["image_size"])
    steps: list[Callable] = [
        T.RandomResizedCrop(size, scale=tuple(recipe["crop_scale"]), ratio=tuple(recipe["crop_ratio"]),
                            interpolation=InterpolationMode.BICUBIC)
    ]
    if spec.get("hflip", False):
        steps.append(T.RandomHorizontalFlip())
    if spec.get("randaugment"):
        from timm.data.auto_augment import rand_augment_transform

        hparams = {"translate_const": int(size * 0.45), "img_mean": tuple(round(255 * m) for m in IMAGENET_MEAN),
                   "interpolation": Image.BICUBIC}
        steps.append(posterize_to_zero_bits(rand_augment_transform(str(spec["randaugment"]), hparams)))
    return T.Compose([*steps, T.ToTensor()])


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


def eval_augment(recipe: Mapping[str, Any], group: str) -> Callable[[Image.Image], torch.Tensor]:
    """Resize the shorter side to `eval_resize` (bicubic), centre-crop `image_size` (paper: 256 -> 224)."""
    _group(recipe, group)
    size = int(recipe["image_size"])
    resize = int(recipe.get("eval_resize") or size)
    return T.Compose([T.Resize(resize, interpolation=InterpolationMode.BICUBIC), T.CenterCrop(size), T.ToTensor()])
