"""Monocular depth: keep the 3-D layout of a scene (how far each part is), without colour or texture."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from bias.core.errors import ConfigError
from transforms.classical.hog import to_uint8_min_max
from transforms.neural.image_models import IMAGENET_MEAN, IMAGENET_STD, CanvasModelTransform, hf_config
from transforms.registry import register_transform


def resize_depth(depth: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """An HxW float map -> `size` (height, width), bilinear (never outside the map's own range)."""
    if depth.shape[:2] == tuple(size):
        return depth
    return cv2.resize(depth, (int(size[1]), int(size[0])), interpolation=cv2.INTER_LINEAR)


def depth_to_image(depth: np.ndarray) -> np.ndarray:
    """An HxW prediction -> HxWx3 uint8: min-max scaled to 0-255 (a constant map: all zeros), in 3 channels."""
    depth = np.asarray(depth, dtype=np.float32)
    if not np.isfinite(depth).all():
        raise ValueError("the depth prediction has non-finite values")
    return np.repeat(to_uint8_min_max(depth)[:, :, None], 3, axis=2)


@register_transform("depth")
class Depth(CanvasModelTransform):
    """Depth Anything V2 Large (through transformers' AutoModelForDepthEstimation); HxWx3 uint8.

    Published: Depth Anything V2 Large; prediction min-max scaled to 0-255, 3 channels; classified
    with augmentation group "b" (crop + flip: a mirrored depth map is still a depth map). Depth
    Anything predicts relative inverse depth, so near is bright. The default `weights` are the
    transformers port of the Large model (a Hugging Face id and revision); any transformers depth
    model works by id.

    The input is the checkpoint's own (its image processor: Depth Anything V2's keeps the aspect ratio, scales
    a photo's shorter side to 518, rounds both sides to multiples of 14, bicubic, no padding), or with `size`/`fit`/`mean`/`std`
    set our ``size x size`` canvas (`size` a multiple of the model's patch size); the prediction is
    upsampled to the input if the model outputs less, cropped to the image, resized back to its size
    (bilinear), then min-max scaled over the image.
    """
    keeps = "relative depth, the 3-D layout (near is bright)"
    published = (
        'Depth Anything V2 Large `depth_anything_v2_large` = `depth-anything/Depth-Anything-V2-Large-hf`, fed '
        "by its own image processor (aspect kept, a photo's shorter side 518, multiples of 14), resized to "
        'the image, min-max to 0-255, 3 channels'
    )

    kind = "precomputed"
    augment_group = "b"
    family = "structural"

    #: without an image processor (random weights): Depth Anything's input size, ImageNet statistics
    FALLBACK = {"size": 518, "fit": "pad", "mean": IMAGENET_MEAN, "std": IMAGENET_STD}

    def __init__(self, weights: Any = "depth_anything_v2_large", arch: Mapping[str, Any] | None = None,
                 size: int | None = None, fit: str | None = None, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None, batch_size: int = 8, device: str = "auto",
                 dtype: str = "auto") -> None:
        super().__init__(weights=weights, arch=arch, size=size, fit=fit, mean=mean, std=std, batch_size=batch_size,
                         device=device, dtype=dtype)

    def pretrained(self, folder: Path) -> torch.nn.Module:
        from transformers import AutoModelForDepthEstimation

        return AutoModelForDepthEstimation.from_pretrained(folder)

    def from_arch(self, arch: Mapping[str, Any]) -> torch.nn.Module:
        from transformers import AutoModelForDepthEstimation

        return AutoModelForDepthEstimation.from_config(hf_config(arch, self.name))

    def load_model(self, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
        model = self.build()
        patch = getattr(model.config, "patch_size", None)
        side = (self.canvas() or {}).get("size")
        if isinstance(patch, int) and side and side % patch:
            raise ConfigError(f"transform (depth).size: {side} is not a multiple of the model's patch size "
                              f"{patch}; use e.g. {patch * max(1, round(side / patch))}")
        return model

    def forward(self, batch: Mapping[str, Any]) -> list[torch.Tensor]:
        """Per image, its float32 prediction at the network's input size."""
        return self.per_shape(batch["pixels"], self._depth)

    def _depth(self, x: torch.Tensor) -> torch.Tensor:
        depth = self.model(pixel_values=x).predicted_depth.float()
        if depth.shape[-2:] != x.shape[-2:]:
            depth = torch.nn.functional.interpolate(depth[:, None], size=x.shape[-2:], mode="bilinear",
                                                    align_corners=False)[:, 0]
        return depth

    def postprocess(self, outputs: Sequence[torch.Tensor], batch: Mapping[str, Any]) -> list[dict[str, Any]]:
        return [{"image": depth_to_image(self.crop_back(d.cpu().numpy(), valid, size, resize_depth))}
                for d, valid, size in zip(outputs, batch["valid"].tolist(), batch["size"].tolist())]
