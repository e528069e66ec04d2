"""LVIS object detection: keep only which objects are where (boxes and class names on a white canvas).

Published (`object_det`): an LVIS detector (1,203 classes; the study used ViTDet-H Cascade Mask
R-CNN), detections with score >= 0.5, drawn on a white canvas as box outlines with their class
names, one colour per class; classified with augmentation group "a".

Substitution: transformers has no ViTDet, so the detector here is OWLv2, an open-vocabulary
detector (Minderer et al., "Scaling Open-Vocabulary Object Detection", NeurIPS 2023), by Hugging
Face id + revision (`google/owlv2-base-patch16-ensemble` by default), queried with the names of
the 1,203 LVIS v1 categories (`transforms/neural/data/lvis_v1.json`, with its source). Its
published LVIS AP for this B/16 checkpoint is not recorded here; the paper's abstract reports
44.6% AP on LVIS *rare* classes for its larger L/14 model, a different checkpoint. Scores of an
open-vocabulary detector are calibrated differently from ViTDet's, so the same 0.5 threshold does
not keep the same detections: compare counts per image before comparing accuracies.

How a batch is computed:

* `load` (once per process): the model, then the text queries (`prompt` filled with every
  category name) through the text tower, once; their embeddings stay on the device.
* `preprocess` (DataLoader workers): OWLv2's own image processor (pad bottom/right to a square,
  resize to the model's input size, CLIP normalisation).
* `forward`: the image tower on the batch, class logits against the stored query embeddings and
  boxes; per image, one class per predicted box (the best query), score = sigmoid of its logit,
  kept if >= `score_threshold`, per-class NMS at IoU `nms_iou` (ours; ViTDet's outputs are
  NMS-ed too), at most `max_detections` (LVIS evaluates 300), most confident first.
* `postprocess`: the canvas (`draw_detections`) and the `boxes` table.

Boxes are in source-pixel coordinates (the image as the transform received it, after any
`resize_shorter`): continuous x0, y0, x1, y1 with (0, 0) the top-left corner of the top-left
pixel, clipped to the image. On the canvas a box covers every pixel it touches (`box_pixels`).
Class ids are LVIS v1 category ids (1..1203).
"""

from __future__ import annotations

import colorsys
import functools
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import cv2
import numpy as np
import pyarrow as pa
import torch

from bias.core.errors import ConfigError
from bias.inference.store import IMAGE, OutputSpec
from transforms.base import ModelTransform
from transforms.neural.random_init import check_weights_or_arch, seeded
from transforms.registry import register_transform

LVIS_FILE = Path(__file__).resolve().parent / "data" / "lvis_v1.json"
#: the published detector's substitute
DEFAULT_WEIGHTS = "owlv2_base_patch16_ensemble"  #: a catalogue name (bias.inference.models)
#: one row per kept detection
DETECTIONS = OutputSpec("table", columns={
    "x0": pa.float32(), "y0": pa.float32(), "x1": pa.float32(), "y1": pa.float32(),
    "class_id": pa.int32(), "class_name": pa.string(), "score": pa.float32()})
#: text queries encoded per forward of the text tower while loading
_QUERY_CHUNK = 256
_FONT = cv2.FONT_HERSHEY_SIMPLEX
_GOLDEN = (math.sqrt(5) - 1) / 2


@functools.lru_cache(maxsize=1)
def lvis_categories() -> tuple[dict[str, Any], ...]:
    """The 1,203 LVIS v1 categories in id order: {"id", "name", "synonyms"} (see the file's "source")."""
    cats = tuple(json.loads(LVIS_FILE.read_text())["categories"])
    if [c["id"] for c in cats] != list(range(1, len(cats) + 1)):
        raise ValueError(f"{LVIS_FILE}: category ids must run 1..n in order")
    return cats


def class_colour(class_id: int) -> tuple[int, int, int]:
    """A fixed RGB colour per class: hue stepped by the golden ratio (neighbouring ids far apart), never light."""
    r, g, b = colorsys.hsv_to_rgb((class_id * _GOLDEN) % 1.0, 0.9, 0.8)
    return round(r * 255), round(g * 255), round(b * 255)


def box_pixels(box: Sequence[float], height: int, width: int) -> tuple[int, int, int, int]:
    """The inclusive pixel rectangle (x0, y0, x1, y1) a continuous box touches, clipped to the image."""
    x0 = min(max(int(math.floor(box[0])), 0), width - 1)
    y0 = min(max(int(math.floor(box[1])), 0), height - 1)
    x1 = min(max(int(math.ceil(box[2])) - 1, x0), width - 1)
    y1 = min(max(int(math.ceil(box[3])) - 1, y0), height - 1)
    return x0, y0, x1, y1


def draw_detections(height: int, width: int, boxes: np.ndarray, class_ids: Sequence[int], names: Sequence[str],
                    thickness: int = 2, font_scale: float = 0.4, labels: bool = True) -> np.ndarray:
    """A white HxWx3 canvas with each box outline (`thickness` px, drawn inwards from the box's pixel
    rectangle) and, with `labels`, its class name above the box (inside it where there is no room above),
    both in the class's colour. Boxes are drawn in order, later over earlier."""
    canvas = np.full((height, width, 3), 255, dtype=np.uint8)
    for box, cid, name in zip(np.asarray(boxes, dtype=np.float64).reshape(-1, 4), class_ids, names):
        colour = class_colour(int(cid))
        x0, y0, x1, y1 = box_pixels(box, height, width)
        for k in range(thickness):
            if x0 + k > x1 - k or y0 + k > y1 - k:
                break
            cv2.rectangle(canvas, (x0 + k, y0 + k), (x1 - k, y1 - k), colour, 1, cv2.LINE_8)
        if labels and name:
            (tw, th), base = cv2.getTextSize(name, _FONT, font_scale, 1)
            baseline_y = y0 - 2 - base if y0 - 2 - base - th >= 0 else y0 + thickness + th + 1
            cv2.putText(canvas, name, (x0, baseline_y), _FONT, font_scale, colour, 1, cv2.LINE_8)
    return canvas


def placeholder_token_ids(texts: Sequence[str], vocab_size: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids for a randomly initialised text tower (no tokenizer files exist without weights).

    Each text becomes [bos] + its UTF-8 bytes folded into 1..vocab_size-3 + [eos], zero-padded to `length`,
    with bos = vocab_size - 2 and eos = vocab_size - 1: the largest id, where OWLv2 pools (argmax of the ids).
    Deterministic; only for `arch` models, whose outputs mean nothing anyway.
    """
    if vocab_size < 4 or length < 3:
        raise ConfigError(f"arch.text_config: vocab_size >= 4 and max_position_embeddings >= 3 needed, got "
                          f"{vocab_size} and {length}")
    ids = torch.zeros((len(texts), length), dtype=torch.long)
    mask = torch.zeros((len(texts), length), dtype=torch.long)
    for i, text in enumerate(texts):
        body = [b % (vocab_size - 3) + 1 for b in text.encode()][: length - 2]
        row = [vocab_size - 2, *body, vocab_size - 1]
        ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
    return ids, mask


def _check_number(name: str, key: str, value: Any, low: float, high: float | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < low or (high is not None and value > high):
        bounds = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise ConfigError(f"transform ({name}): {key} must be a number {bounds}, got {value!r}")


def _check_int(name: str, key: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"transform ({name}): {key} must be an integer >= {low}, got {value!r}")


@register_transform("object_det")
class ObjectDetection(ModelTransform):
    """LVIS detections as outlines and class names on white; side output `boxes` (see the module docstring).

    Parameters: `score_threshold` (published 0.5), `nms_iou`, `max_detections`, `prompt` (the query
    template, "{}" is the category name), `thickness` and `font_scale` of the drawing, `labels`
    (draw class names), `arch` (random weights from an `Owlv2Config(**arch)`, with `weights: null`),
    and ModelTransform's `weights`, `batch_size`, `device`, `dtype`.
    """
    keeps = "which objects are where: LVIS box outlines and class names, one colour per class, on white"
    published = (
        'LVIS (1,203 classes), score >= 0.5 (paper: ViTDet-H, not in transformers); ours: open-vocabulary '
        'OWLv2 `owlv2_base_patch16_ensemble` = `google/owlv2-base-patch16-ensemble` queried with the LVIS v1 '
        'names, per-class NMS 0.5'
    )

    augment_group = "a"
    family = "semantic"
    outputs: ClassVar[Mapping[str, OutputSpec]] = {"image": IMAGE, "boxes": DETECTIONS}
    #: whether preprocess passes the decoded image on to postprocess (object_crops/context need it)
    keeps_source_image: ClassVar[bool] = False

    def __init__(self, score_threshold: float = 0.5, nms_iou: float | None = 0.5, max_detections: int = 300,
                 prompt: str = "a photo of a {}", thickness: int = 2, font_scale: float = 0.4, labels: bool = True,
                 arch: Mapping[str, Any] | None = None, weights: Any = DEFAULT_WEIGHTS, batch_size: int = 8,
                 device: str = "auto", dtype: str = "auto") -> None:
        super().__init__(weights=weights, batch_size=batch_size, device=device, dtype=dtype)
        name = self.name or "object_det"
        _check_number(name, "score_threshold", score_threshold, 0.0, 1.0)
        if nms_iou is not None:
            _check_number(name, "nms_iou", nms_iou, 0.0, 1.0)
        _check_int(name, "max_detections", max_detections, 1)
        _check_int(name, "thickness", thickness, 1)
        _check_number(name, "font_scale", font_scale, 0.0)
        if not isinstance(prompt, str) or prompt.count("{}") != 1:
            raise ConfigError(f"transform ({name}): prompt must hold one {{}} for the class name, got {prompt!r}")
        if not isinstance(labels, bool):
            raise ConfigError(f"transform ({name}): labels must be true or false, got {labels!r}")
        check_weights_or_arch(name, weights, arch)
        self.score_threshold, self.nms_iou, self.max_detections = score_threshold, nms_iou, max_detections
        self.prompt, self.thickness, self.font_scale, self.labels = prompt, thickness, font_scale, labels
        self.arch = None if arch is None else dict(arch)
        self._processor: Any = None
        self._queries: torch.Tensor | None = None

    # --- names ----------------------------------------------------------------------------------------
    @staticmethod
    def class_names() -> list[str]:
        return [c["name"] for c in lvis_categories()]

    def queries(self) -> list[str]:
        return [self.prompt.format(n) for n in self.class_names()]

    # --- the runner's contract ----------------------------------------------------------------------------
    def load_model(self, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
        from transformers import AutoTokenizer, Owlv2Config, Owlv2ForObjectDetection

        if self.weights is None:
            model = seeded(lambda: Owlv2ForObjectDetection(Owlv2Config(**self.arch)))
            text = model.config.text_config
            ids, mask = placeholder_token_ids(self.queries(), text.vocab_size, text.max_position_embeddings)
        else:
            path = self.weight_path()
            model = Owlv2ForObjectDetection.from_pretrained(path, use_safetensors=True)
            tokens = AutoTokenizer.from_pretrained(path)(
                self.queries(), padding="max_length", truncation=True, return_tensors="pt",
                max_length=model.config.text_config.max_position_embeddings)
            ids, mask = tokens["input_ids"], tokens["attention_mask"]
        model = model.to(device).eval()
        with torch.inference_mode():
            self._queries = torch.cat([
                model.owlv2.get_text_features(input_ids=ids[i:i + _QUERY_CHUNK].to(device),
                                              attention_mask=mask[i:i + _QUERY_CHUNK].to(device)).pooler_output
                for i in range(0, len(ids), _QUERY_CHUNK)])
        return model

    def unload(self) -> None:
        super().unload()
        self._queries = None

    def image_processor(self) -> Any:
        """OWLv2's image processor (from the weights' folder, or at the `arch` input size), made once per process."""
        if self._processor is None:
            from transformers import Owlv2ImageProcessor

            if self.weights is None:
                size = int((self.arch.get("vision_config") or {}).get("image_size", 768))
                self._processor = Owlv2ImageProcessor(size={"height": size, "width": size})
            else:
                self._processor = Owlv2ImageProcessor.from_pretrained(self.weight_path())
        return self._processor

    def preprocessing(self) -> dict[str, Any]:
        """OWLv2's own image processor (from the weights' folder): recorded as the run's preprocessing."""
        from transforms.neural.image_models import processor_settings

        source = "checkpoint" if self.weights is not None else "fallback (random weights: OWLv2's defaults)"
        return {"from": source, **processor_settings(self.image_processor())}

    def preprocess(self, image: np.ndarray) -> dict[str, Any]:
        pixels = self.image_processor()(images=image, return_tensors="pt")["pixel_values"][0]
        item = {"pixel_values": pixels, "size": torch.tensor(image.shape[:2])}
        if self.keeps_source_image:
            item["image"] = image
        return item

    def collate(self, items: Sequence[dict[str, Any]]) -> dict[str, Any]:
        batch = {k: torch.stack([it[k] for it in items]) for k in ("pixel_values", "size")}
        if self.keeps_source_image:
            batch["image"] = [it["image"] for it in items]
        return batch

    def forward(self, batch: Mapping[str, Any]) -> list[dict[str, np.ndarray]]:
        """Per image: boxes [n, 4] (source pixels), class_ids [n] (LVIS ids), scores [n], most confident first."""
        from torchvision.ops import batched_nms

        model = self.model
        feature_map, _ = model.image_embedder(pixel_values=batch["pixel_values"])
        b, h, w, d = feature_map.shape
        feats = feature_map.reshape(b, h * w, d)
        logits, _ = model.class_predictor(feats, self._queries[None].expand(b, -1, -1), None)
        pred = model.box_predictor(feats, feature_map).float()  # [b, patches, 4] cx, cy, w, h of the padded square
        scores, labels = logits.float().sigmoid().max(dim=-1)
        out = []
        for i in range(b):
            height, width = (int(v) for v in batch["size"][i])
            keep = scores[i] >= self.score_threshold
            cxcywh, score, label = pred[i][keep], scores[i][keep], labels[i][keep]
            side = max(height, width)
            boxes = torch.stack([cxcywh[:, 0] - cxcywh[:, 2] / 2, cxcywh[:, 1] - cxcywh[:, 3] / 2,
                                 cxcywh[:, 0] + cxcywh[:, 2] / 2, cxcywh[:, 1] + cxcywh[:, 3] / 2], dim=1) * side
            boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)
            boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)
            if self.nms_iou is not None and len(boxes):
                order = batched_nms(boxes, score, label, float(self.nms_iou))
            else:
                order = torch.argsort(score, descending=True, stable=True)
            order = order[: self.max_detections]
            out.append({"boxes": boxes[order].cpu().numpy(), "class_ids": (label[order] + 1).cpu().numpy(),
                        "scores": score[order].cpu().numpy()})
        return out

    def detections_table(self, det: Mapping[str, np.ndarray]) -> dict[str, list[Any]]:
        names = self.class_names()
        boxes = np.asarray(det["boxes"], dtype=np.float32).reshape(-1, 4)
        return {"x0": boxes[:, 0].tolist(), "y0": boxes[:, 1].tolist(), "x1": boxes[:, 2].tolist(),
                "y1": boxes[:, 3].tolist(), "class_id": [int(c) for c in det["class_ids"]],
                "class_name": [names[int(c) - 1] for c in det["class_ids"]],
                "score": [float(s) for s in det["scores"]]}

    def postprocess(self, outputs: list[dict[str, np.ndarray]], batch: Mapping[str, Any]) -> list[dict[str, Any]]:
        names = self.class_names()
        items = []
        for det, size in zip(outputs, batch["size"]):
            height, width = (int(v) for v in size)
            draw = np.argsort(det["scores"], kind="stable")  # least confident first: the best on top
            ids = [int(c) for c in det["class_ids"][draw]]
            canvas = draw_detections(height, width, det["boxes"][draw], ids, [names[c - 1] for c in ids],
                                     self.thickness, self.font_scale, self.labels)
            items.append({"image": canvas, "boxes": self.detections_table(det)})
        return items
