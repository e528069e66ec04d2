"""ADE20K semantic segmentation: keep which kind of stuff or object is where, painted in the class colours."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from bias.core.errors import ConfigError
from bias.inference.store import IMAGE, OutputSpec
from transforms.neural.image_models import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    CanvasModelTransform,
    hf_config,
    resize_labels,
)
from transforms.registry import register_transform

#: transformers model types that predict (class, mask) pairs rather than per-pixel logits
MASK_CLASSIFICATION = ("mask2former", "maskformer")
CLASS_TABLE = OutputSpec("table", columns={"class_id": pa.int32(), "class_name": pa.string(), "pixels": pa.int64(),
                                           "share": pa.float32()})


@lru_cache(maxsize=1)
def ade20k() -> tuple[tuple[str, ...], np.ndarray]:
    """(the 150 ADE20K class names, their 150 x 3 uint8 palette), from `data/ade20k.json` (source noted there)."""
    data = json.loads(resources.files("transforms.neural").joinpath("data", "ade20k.json").read_text())
    palette = np.asarray(data["palette"], dtype=np.uint8)
    if len(data["classes"]) != 150 or palette.shape != (150, 3):
        raise ValueError("transforms/neural/data/ade20k.json must hold 150 class names and 150 RGB colours")
    return tuple(data["classes"]), palette


def paint_classes(ids: np.ndarray) -> np.ndarray:
    """An HxW map of ADE20K class ids (0-149) -> HxWx3 uint8, each class in its palette colour."""
    _, palette = ade20k()
    if ids.size and (ids.min() < 0 or ids.max() >= len(palette)):
        raise ValueError(f"class ids must lie in [0, {len(palette) - 1}], got {ids.min()}..{ids.max()}")
    return palette[ids]


def class_shares(ids: np.ndarray) -> dict[str, list[Any]]:
    """The classes present in an id map, by id: class_id, class_name, pixels and share (of all pixels)."""
    names, palette = ade20k()
    counts = np.bincount(ids.ravel().astype(np.int64), minlength=len(palette))
    present = np.flatnonzero(counts)
    return {"class_id": present.astype(np.int32).tolist(), "class_name": [names[i] for i in present],
            "pixels": counts[present].tolist(), "share": (counts[present] / max(1, ids.size)).astype(np.float32).tolist()}


@register_transform("seg")
class SemanticSegmentation(CanvasModelTransform):
    """ADE20K semantic segmentation (150 classes) painted with the standard ADE20K palette; HxWx3 uint8.

    Published: ADE20K semantic segmentation with Mask2Former (the study's backbone was a BEiT-v2-L
    ViT-Adapter, which is not in transformers); each class painted in the standard palette;
    classified with augmentation group "c" (crop only: a flip adds little and interpolation would mix
    class colours). Our default is Mask2Former Swin-L trained on ADE20K (`weights`, a Hugging Face id and
    revision); any transformers ADE20K model works by id: per-pixel models (SegFormer, UperNet, BEiT,
    DPT, ...) and mask-classification models (Mask2Former, MaskFormer: a pixel's class score is the
    sum over queries of class probability times mask probability, the null class left out).

    The input is the checkpoint's own (its image processor: Mask2Former's resizes the shorter side and rounds
    to a multiple of 32), or with `size`/`fit`/`mean`/`std` set our ``size x size`` canvas (see
    `transforms.neural.image_models`); class scores are upsampled (bilinear) to the input, the arg-max
    taken there, and the id map cropped to the image and resized back to its size by nearest neighbour.
    Side output `classes`: per image, one row per class present (class_id, class_name, pixels, share of
    the image's pixels), in class order.
    """
    keeps = "which ADE20K class (150) is where, painted in the standard ADE20K palette"
    published = (
        'ADE20K semantic segmentation (paper: Mask2Former BEiT-v2-L ViT-Adapter); ours: Mask2Former Swin-L '
        '`mask2former_swin_large_ade` = `facebook/mask2former-swin-large-ade-semantic` (any transformers '
        'ADE20K model by id, e.g. SegFormer-B5, UperNet), fed by its own image processor'
    )

    kind = "precomputed"
    augment_group = "c"
    family = "semantic"
    outputs = {"image": IMAGE, "classes": CLASS_TABLE}

    #: without an image processor (random weights): Mask2Former's ADE20K test size, the aspect kept, ImageNet stats
    FALLBACK = {"size": 640, "fit": "pad", "mean": IMAGENET_MEAN, "std": IMAGENET_STD}

    def __init__(self, weights: Any = "mask2former_swin_large_ade", arch: Mapping[str, Any] | None = None,
                 size: int | None = None, fit: str | None = None, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None, batch_size: int = 8, device: str = "auto",
                 dtype: str = "auto") -> None:
        super().__init__(weights=weights, arch=arch, size=size, fit=fit, mean=mean, std=std, batch_size=batch_size,
                         device=device, dtype=dtype)
        self._mask_classification = False

    # --- the model ----------------------------------------------------------------------------------
    def _auto_class(self, config: Any) -> Any:
        from transformers import AutoModelForSemanticSegmentation, AutoModelForUniversalSegmentation
        from transformers.models.auto.modeling_auto import MODEL_FOR_SEMANTIC_SEGMENTATION_MAPPING_NAMES

        if config.model_type in MASK_CLASSIFICATION:
            return AutoModelForUniversalSegmentation
        if config.model_type in MODEL_FOR_SEMANTIC_SEGMENTATION_MAPPING_NAMES:
            return AutoModelForSemanticSegmentation
        known = sorted({*MODEL_FOR_SEMANTIC_SEGMENTATION_MAPPING_NAMES, *MASK_CLASSIFICATION})
        raise ConfigError(f"transform (seg): model type {config.model_type!r} is not a semantic-segmentation model "
                          f"(known: {', '.join(known)})")

    def pretrained(self, folder: Path) -> torch.nn.Module:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(folder)
        return self._auto_class(config).from_pretrained(folder, config=config)

    def from_arch(self, arch: Mapping[str, Any]) -> torch.nn.Module:
        config = hf_config(arch, self.name)
        return self._auto_class(config).from_config(config)

    def load_model(self, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
        model = self.build()
        classes, _ = ade20k()
        if model.config.num_labels != len(classes):
            raise ConfigError(f"transform (seg): the model predicts {model.config.num_labels} classes, not the "
                              f"{len(classes)} ADE20K classes this transform paints; use an ADE20K model")
        self._mask_classification = model.config.model_type in MASK_CLASSIFICATION
        return model

    # --- the runner's contract ------------------------------------------------------------------------
    def forward(self, batch: Mapping[str, Any]) -> list[torch.Tensor]:
        """Per image, its H x W uint8 class ids (the arg-max over classes) at the network's input size."""
        return self.per_shape(batch["pixels"], self._class_ids)

    def _class_ids(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(pixel_values=x)
        if self._mask_classification:
            classes = out.class_queries_logits.float().softmax(dim=-1)[..., :-1]
            scores = torch.einsum("bqc,bqhw->bchw", classes, out.masks_queries_logits.float().sigmoid())
        else:
            scores = out.logits.float()
        scores = torch.nn.functional.interpolate(scores, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return scores.argmax(dim=1).to(torch.uint8)

    def postprocess(self, outputs: Sequence[torch.Tensor], batch: Mapping[str, Any]) -> list[dict[str, Any]]:
        items = []
        for ids, valid, size in zip(outputs, batch["valid"].tolist(), batch["size"].tolist()):
            ids = self.crop_back(ids.cpu().numpy(), valid, size, resize_labels)
            items.append({"image": paint_classes(ids), "classes": class_shares(ids)})
        return items
