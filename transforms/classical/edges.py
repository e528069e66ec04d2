"""Canny edges: keep only the binary edge map (structure without colour, texture or shading)."""

from __future__ import annotations

import cv2
import numpy as np

from transforms.base import Transform
from transforms.registry import register_transform


@register_transform("canny")
class Canny(Transform):
    """OpenCV Canny edges of the blurred RGB image; single-channel uint8 0/255 output.

    Published: 3x3 Gaussian blur with sigma 0 (OpenCV derives sigma from the kernel size), then
    Canny with hysteresis thresholds 85 and 255. It is computed offline once per image and
    cached (``kind = "precomputed"``), then classified with augmentation group "c" (crop only: a
    flip or colour jitter would add nothing to a binary map, and interpolation would blur it).

    The blur and Canny run on the 3-channel image, not on a grayscale conversion: for a
    multi-channel input OpenCV computes the Sobel gradients of every channel and, per pixel,
    keeps the channel with the largest gradient magnitude. So an edge between two colours of
    equal luma is still found. The colour order (RGB vs BGR) does not matter for this reason.
    """
    keeps = "edges"
    published = "3x3 Gaussian blur, Canny 85 / 255"

    kind = "precomputed"
    augment_group = "c"
    family = "structural"
    has_image_stage = True
    has_tensor_stage = False

    def __init__(self, low: float = 85, high: float = 255, blur_kernel: int = 3, l2_gradient: bool = False) -> None:
        for label, value in (("low", low), ("high", high)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"canny: {label} threshold must be a non-negative number, got {value!r}")
        if low > high:
            raise ValueError(f"canny: low threshold ({low}) must not exceed high threshold ({high})")
        if isinstance(blur_kernel, bool) or not isinstance(blur_kernel, int) or blur_kernel < 1 or blur_kernel % 2 == 0:
            raise ValueError(f"canny: blur_kernel must be a positive odd integer (1 = no blur), got {blur_kernel!r}")
        if not isinstance(l2_gradient, bool):
            raise ValueError(f"canny: l2_gradient must be true or false, got {l2_gradient!r}")
        self.low = low
        self.high = high
        self.blur_kernel = blur_kernel
        self.l2_gradient = l2_gradient

    def apply_image(self, image: np.ndarray) -> np.ndarray:
        """HxWx3 (or HxW) uint8 in, HxW uint8 with values {0, 255} out."""
        if image.dtype != np.uint8 or image.ndim not in (2, 3):
            raise ValueError(f"canny expects an HxWx3 or HxW uint8 image, got {image.dtype} {image.shape}")
        image = np.ascontiguousarray(image)
        if self.blur_kernel > 1:
            image = cv2.GaussianBlur(image, (self.blur_kernel, self.blur_kernel), 0)
        return cv2.Canny(image, float(self.low), float(self.high), L2gradient=self.l2_gradient)
