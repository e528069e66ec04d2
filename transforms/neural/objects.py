"""Objects and their context, apart: keep only the detected objects' pixels, or only everything else.

Ours (no published counterpart): `object_crops` keeps the pixels inside the objects and fills the
rest with `fill`; `object_context` keeps the rest and fills the objects. For the same image and
parameters the two partition it: every pixel is kept by exactly one of them.

Where the objects are (`source`):

* ``boxes`` (default): the boxes of the `object_det` detector (this class *is* that transform, with
  the same parameters and weights; `box_pixels` turns each box into the pixels it touches), their
  union is the object region. Side output `boxes`: the detections, as `object_det` stores them.
* ``seg``: the pixels whose ADE20K class (the `seg` transform's per-pixel arg-max, read through
  `seg_class_ids`) is one of `seg_classes` (ids 0-149 or names, required with this source: which
  classes count as objects is a choice, e.g. [person, car, chair]). `seg` updates the parameters of
  the `seg` transform with its published defaults; the detector is not loaded, and the
  `boxes` table stays empty.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import torch

from bias.core.errors import ConfigError
from transforms.base import Transform
from transforms.neural.detect import DEFAULT_WEIGHTS, ObjectDetection, box_pixels
from transforms.registry import create_transform, register_transform

SOURCES = ("boxes", "seg")


def object_mask(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    """HxW bool: True on every pixel a box touches (`box_pixels`)."""
    mask = np.zeros((height, width), dtype=bool)
    for box in np.asarray(boxes, dtype=np.float64).reshape(-1, 4):
        x0, y0, x1, y1 = box_pixels(box, height, width)
        mask[y0:y1 + 1, x0:x1 + 1] = True
    return mask


def keep_region(image: np.ndarray, mask: np.ndarray, keep: bool, fill: Sequence[int]) -> np.ndarray:
    """A copy of `image` in which the pixels where `mask` != `keep` are set to `fill` (RGB)."""
    out = np.array(image, dtype=np.uint8, copy=True)
    out[np.asarray(mask, dtype=bool) != keep] = np.asarray(fill, dtype=np.uint8)
    return out


def seg_class_ids(seg: Transform, outputs: torch.Tensor, batch: Mapping[str, Any]) -> list[np.ndarray]:
    """The `seg` transform's per-pixel ADE20K class ids (HxW, each image's own size) from its `forward`.

    `seg.forward` gives B x size x size arg-max class ids on its canvas; as its `postprocess` does,
    each map is cropped to the image's part of the canvas (`batch["valid"]`) and resized back to the
    image's size (`batch["size"]`) by nearest neighbour (`transforms.neural.seg`).
    """
    from transforms.neural.image_models import resize_labels

    ids = outputs.cpu().numpy() if isinstance(outputs, torch.Tensor) else np.asarray(outputs)
    return [seg.crop_back(m, valid, size, resize_labels)
            for m, valid, size in zip(ids, torch.as_tensor(batch["valid"]).tolist(), torch.as_tensor(batch["size"]).tolist())]


def _check_fill(name: str, fill: Any) -> list[int]:
    values = [fill] * 3 if isinstance(fill, int) and not isinstance(fill, bool) else fill
    if not (isinstance(values, (list, tuple)) and len(values) == 3
            and all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in values)):
        raise ConfigError(f"transform ({name}): fill must be an integer 0-255 or three of them (RGB), got {fill!r}")
    return [int(v) for v in values]


class ObjectRegions(ObjectDetection):
    """`object_det` that keeps the objects' pixels (`keep_objects`) or the rest of the image; see the module docstring."""

    keep_objects: ClassVar[bool] = True
    keeps_source_image = True

    def __init__(self, source: str = "boxes", fill: Any = 0, seg: Mapping[str, Any] | None = None,
                 seg_classes: Sequence[int | str] | None = None, score_threshold: float = 0.5,
                 nms_iou: float | None = 0.5, max_detections: int = 300, prompt: str = "a photo of a {}",
                 arch: Mapping[str, Any] | None = None, weights: Any = DEFAULT_WEIGHTS, batch_size: int = 8,
                 device: str = "auto", dtype: str = "auto") -> None:
        super().__init__(score_threshold=score_threshold, nms_iou=nms_iou, max_detections=max_detections,
                         prompt=prompt, arch=arch, weights=weights, batch_size=batch_size, device=device, dtype=dtype)
        if source not in SOURCES:
            raise ConfigError(f"transform ({self.name}): source must be one of {', '.join(SOURCES)}, got {source!r}")
        self._fill = _check_fill(self.name, fill)
        if seg is not None and not isinstance(seg, Mapping):
            raise ConfigError(f"transform ({self.name}): seg must be a mapping of seg parameters, got {seg!r}")
        self.source, self.fill = source, fill
        self.seg = None if seg is None else dict(seg)
        self.seg_classes = None if seg_classes is None else list(seg_classes)
        self._seg: Transform | None = None
        self._seg_ids: list[int] = self._object_class_ids() if source == "seg" else []

    def _object_class_ids(self) -> list[int]:
        from transforms.neural.seg import ade20k

        names, _ = ade20k()
        if not self.seg_classes:
            raise ConfigError(f"transform ({self.name}): source=seg needs seg_classes, the ADE20K classes that count "
                              "as objects (ids 0-149 or names, e.g. [person, car, chair])")
        ids = []
        for c in self.seg_classes:
            if isinstance(c, str) and c in names:
                ids.append(names.index(c))
            elif isinstance(c, int) and not isinstance(c, bool) and 0 <= c < len(names):
                ids.append(c)
            else:
                raise ConfigError(f"transform ({self.name}): seg_classes: {c!r} is not an ADE20K class id (0-149) or "
                                  "name (transforms/neural/data/ade20k.json)")
        return sorted(set(ids))

    # --- the seg source ---------------------------------------------------------------------------------
    def seg_transform(self) -> Transform:
        """The `seg` transform this one reads class ids from (published parameters updated by `seg`)."""
        if self._seg is None:
            self._seg = create_transform("seg", **{"batch_size": self.batch_size,
                                                   "device": self.device, "dtype": self.dtype, **(self.seg or {})})
        return self._seg

    def check_ready(self, cache_root: str | os.PathLike = "cache") -> None:
        if self.source == "seg":
            self.seg_transform().check_ready(cache_root)
        else:
            super().check_ready(cache_root)

    def model_identity(self) -> dict[str, Any] | None:
        if self.source == "seg":
            return {"seg": self.seg_transform().model_identity()}
        return super().model_identity()

    # --- the runner's contract ----------------------------------------------------------------------------
    def load_model(self, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
        if self.source == "boxes":
            return super().load_model(device, dtype)
        seg = self.seg_transform()
        seg.load(device, dtype)
        return seg.model

    def unload(self) -> None:
        super().unload()
        if self._seg is not None:
            self._seg.unload()

    def preprocess(self, image: np.ndarray) -> dict[str, Any]:
        if self.source == "boxes":
            return super().preprocess(image)
        return {"image": image, "seg": self.seg_transform().preprocess(image)}

    def collate(self, items: Sequence[dict[str, Any]]) -> dict[str, Any]:
        if self.source == "boxes":
            return super().collate(items)
        return {"image": [it["image"] for it in items], "seg": self.seg_transform().collate([it["seg"] for it in items])}

    def forward(self, batch: Mapping[str, Any]) -> list[dict[str, np.ndarray]]:
        """Per image: the detections (boxes source) or the object mask (seg source)."""
        if self.source == "boxes":
            return super().forward(batch)
        seg = self.seg_transform()
        ids = seg_class_ids(seg, seg.forward(batch["seg"]), batch["seg"])
        return [{"mask": np.isin(m, self._seg_ids)} for m in ids]

    def postprocess(self, outputs: list[dict[str, np.ndarray]], batch: Mapping[str, Any]) -> list[dict[str, Any]]:
        items = []
        for out, image in zip(outputs, batch["image"]):
            if "mask" in out:
                mask, table = out["mask"], self.detections_table(
                    {"boxes": np.zeros((0, 4)), "class_ids": np.zeros(0, int), "scores": np.zeros(0)})
            else:
                mask, table = object_mask(out["boxes"], *image.shape[:2]), self.detections_table(out)
            items.append({"image": keep_region(image, mask, self.keep_objects, self._fill), "boxes": table})
        return items


@register_transform("object_crops")
class ObjectCrops(ObjectRegions):
    """Only the objects: pixels outside every object (box, or seg class) set to `fill`; HxWx3 uint8."""
    keeps = "only the detected objects' pixels, the rest filled"
    published = ("ours: `object_det` boxes of `owlv2_base_patch16_ensemble` = `google/owlv2-base-patch16-ensemble` "
                 "(or chosen ADE20K classes of `seg`: `source=seg`), `fill=0`")

    keep_objects = True


@register_transform("object_context")
class ObjectContext(ObjectRegions):
    """Only the context: pixels inside any object (box, or seg class) set to `fill`; HxWx3 uint8."""
    keeps = "only the pixels outside the detected objects"
    published = ("ours: the complement of `object_crops` (the two partition the image), the same detector "
                 "`owlv2_base_patch16_ensemble` = `google/owlv2-base-patch16-ensemble`")

    keep_objects = False
