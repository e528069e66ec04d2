"""Published 3-way YCD accuracies (%), "Understanding Bias in Large-Scale Visual Datasets" (NeurIPS 2024).

These are the paper's numbers on YFCC/CC/DataComp with ConvNeXt-T at 224 px. Tables built on
other data (the planted presets, your folders) show them beside ours for orientation only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

YCD_CHANCE = 100 / 3
PUBLISHED_YCD: dict[str, float] = {
    "reference": 82.0, "seg": 69.8, "object_det": 61.9, "caption_short": 63.8, "caption_long": 66.1, "vae": 77.4,
    "canny": 71.0, "sam": 73.2, "depth": 73.1, "hog": 79.0, "sift": 53.3, "hpf": 79.2, "lpf": 70.4,
    "mean_rgb": 48.5, "uncon_gen": 77.6, "text_to_image": 58.1,
}
#: patch size at 224 px -> accuracy, for random and fixed permutations (P = 1 is pixel shuffle).
PUBLISHED_PATCH_SWEEP = {
    "random": {1: 52.2, 2: 70.7, 4: 76.2, 8: 77.2, 16: 80.2},
    "fixed": {1: 58.5, 2: 70.2, 4: 76.6, 8: 78.3, 16: 81.0},
}


def published_accuracy(transform: str, params: Mapping[str, Any]) -> float | None:
    """The paper's accuracy for this transform and parameters, or None when it reported none."""
    if transform in ("pixel_shuffle", "patch_shuffle"):
        size = 1 if transform == "pixel_shuffle" else int(params.get("patch_size", 16))
        if params.get("reference_size", 224) != 224:
            return None
        return PUBLISHED_PATCH_SWEEP.get(str(params.get("mode", "random")), {}).get(size)
    if transform in ("lpf", "hpf") and (params.get("filter", "ideal") != "ideal" or params.get("radius", 40) != 40):
        return None
    return PUBLISHED_YCD.get(transform)
