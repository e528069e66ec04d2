"""A transform that keeps only the global colour (mean RGB)."""

from __future__ import annotations

import cv2
import numpy as np

from transforms.base import Transform
from transforms.registry import register_transform


@register_transform("mean_rgb")
class MeanRGB(Transform):
    """Replace every pixel by the per-channel mean colour of the whole image.

    Keeps only the global colour statistics (three numbers per image), so the accuracy that
    survives measures how much dataset bias lives in the average colour. It runs on the full
    decoded image *before* augmentation, as published: the mean is that of the full image, not
    of the crop, and the constant image then goes through the normal group "a" pipeline.

    Rounding: the mean is rounded half up, floor(mean + 1/2), computed exactly from the integer
    channel sums; a mean of 127.5 becomes 128 and 0.5 becomes 1 (NumPy's round-half-to-even
    would give 0).
    """
    keeps = "the mean colour only"
    published = "per-channel mean of the full image"

    kind = "online"
    augment_group = "a"
    family = "colour"
    has_image_stage = True
    has_tensor_stage = False

    def apply_image(self, image: np.ndarray) -> np.ndarray:
        """HxWxC uint8 in, constant HxWxC uint8 of the per-channel mean out."""
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[0] == 0 or image.shape[1] == 0:
            raise ValueError(f"mean_rgb expects a non-empty HxWxC uint8 image, got {image.dtype} {image.shape}")
        h, w, c = image.shape
        if c <= 4:  # OpenCV sums up to 4 channels ~100x faster than NumPy; exact for uint8 (integers < 2**53)
            sums = np.asarray(cv2.sumElems(np.ascontiguousarray(image))[:c]).astype(np.int64)
        else:
            sums = image.reshape(-1, c).sum(axis=0, dtype=np.int64)
        n = h * w
        value = ((2 * sums + n) // (2 * n)).astype(np.uint8)  # floor(sum / n + 1/2), in exact integers
        out = np.empty((h, w * c), np.uint8)
        out[:] = np.tile(value, w)  # fill row-wise: broadcasting a 3-vector directly is ~30x slower
        return out.reshape(h, w, c)
