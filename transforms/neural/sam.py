"""Segment Anything boundaries: keep only where regions meet (a class-free segmentation's outlines).

Published (`sam`): Segment Anything (Kirillov et al., 2023) ViT-L, its automatic mask generator with
32 points per side; the masks painted into an id map; a pixel is boundary if a 4-neighbour has
another id; the output is a 0/255 boundary image, classified with augmentation group "b".

Through the `segment-anything` package (`SamAutomaticMaskGenerator` with its defaults apart from
`points_per_side` and the thresholds exposed here; no crop layers). Checkpoints are the official
ones (`SAM_CHECKPOINTS`, by URL). Their sha256 digests are not recorded here: the default config
leaves `weights.sha256` to be filled in (download the file, `sha256sum` it, pass
`transform.weights.sha256=...`), or pass the file itself (`transform.weights=/path/to/file.pth`);
until then `check_ready` stops the run before any work and says so. `variant` picks the
architecture (`vit_l`, `vit_h`, `vit_b`); its checkpoint must match. The network is assembled by
`build_sam` (from segment_anything's ImageEncoderViT, PromptEncoder, MaskDecoder, TwoWayTransformer
and Sam) from the variant's config updated by `arch`: with `weights: null` with random weights
(tests, benchmarks); with weights, `arch` describes a checkpoint of another size (a SAM checkpoint
is a bare state dict, without a config).

Batching: the image encoder, which is nearly all of SAM's compute, runs on the whole batch in one
call (images resized to longest side `image_size` and padded, in DataLoader workers, exactly as
`SamPredictor.set_image` prepares them). The mask generator is per image: it gets each image's
precomputed embedding (`_PrecomputedPredictor`) and runs its point grid through the prompt
encoder and mask decoder in chunks of `points_per_batch`. The encoder runs under the runner's
autocast (bf16/fp16 on a GPU); the prompt encoder and mask decoder run in float32 on the
float32-cast embedding (they are a small part of the work, and the generator's bookkeeping goes
through numpy, which has no bfloat16).

Overlap order (`paint_masks`): masks are painted largest first (ties: higher predicted IoU, then
SAM's order), so a small mask lying on a larger one stays visible; ids are 1.. in that order, 0
where no mask lies. Boundary (`boundary_map`): both pixels of every 4-neighbour pair with
different ids, so an outline is two pixels wide; the image border is no boundary. The side output
`masks` lists every mask with at least one pixel: index (= id - 1), its area and the area left
visible in the id map, its box (SAM's: inclusive pixel indices x0, y0, x1, y1), predicted IoU and
stability score.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import torch

from bias.core.errors import ConfigError, MissingModelError
from bias.inference.models import weights_config
from bias.inference.store import IMAGE, OutputSpec
from transforms.base import ModelTransform
from transforms.neural.random_init import check_weights_or_arch, seeded
from transforms.registry import register_transform

#: the official checkpoints (segment-anything's README)
SAM_CHECKPOINTS = {
    "vit_h": "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth",
    "vit_l": "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_l_0b3195.pth",
    "vit_b": "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth",
}
#: what the three variants share (segment_anything.build_sam)
SAM_COMMON = {"image_size": 1024, "patch_size": 16, "mlp_ratio": 4.0, "window_size": 14, "prompt_embed_dim": 256,
              "mask_in_chans": 16, "decoder_depth": 2, "decoder_mlp_dim": 2048, "decoder_num_heads": 8,
              "iou_head_depth": 3, "iou_head_hidden_dim": 256}
SAM_VARIANTS = {
    "vit_h": {"encoder_embed_dim": 1280, "encoder_depth": 32, "encoder_num_heads": 16,
              "encoder_global_attn_indexes": [7, 15, 23, 31]},
    "vit_l": {"encoder_embed_dim": 1024, "encoder_depth": 24, "encoder_num_heads": 16,
              "encoder_global_attn_indexes": [5, 11, 17, 23]},
    "vit_b": {"encoder_embed_dim": 768, "encoder_depth": 12, "encoder_num_heads": 12,
              "encoder_global_attn_indexes": [2, 5, 8, 11]},
}
#: the published variant's checkpoint, catalogue entry sam_vit_l; its sha256 is not recorded (see the module docstring)
DEFAULT_WEIGHTS = weights_config("sam_vit_l")
PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)
MASKS = OutputSpec("table", columns={
    "mask_index": pa.int32(), "area": pa.int64(), "visible_area": pa.int64(),
    "x0": pa.int32(), "y0": pa.int32(), "x1": pa.int32(), "y1": pa.int32(),
    "predicted_iou": pa.float32(), "stability_score": pa.float32()})


def sam_config(variant: str, arch: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The full build config of a variant, updated by `arch` (unknown keys are a ConfigError)."""
    if variant not in SAM_VARIANTS:
        raise ConfigError(f"transform (sam): variant must be one of {sorted(SAM_VARIANTS)}, got {variant!r}")
    config = {**SAM_COMMON, **SAM_VARIANTS[variant]}
    unknown = sorted(set(arch or {}) - set(config))
    if unknown:
        raise ConfigError(f"transform (sam): unknown arch key {', '.join(unknown)} (known: {', '.join(sorted(config))})")
    return {**config, **dict(arch or {})}


def build_sam(config: Mapping[str, Any]) -> torch.nn.Module:
    """segment_anything's Sam assembled from its building blocks at the sizes of `config` (`sam_config`)."""
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    c = dict(config)
    size, patch, dim = int(c["image_size"]), int(c["patch_size"]), int(c["prompt_embed_dim"])
    encoder = ImageEncoderViT(
        depth=c["encoder_depth"], embed_dim=c["encoder_embed_dim"], img_size=size, mlp_ratio=c["mlp_ratio"],
        norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), num_heads=c["encoder_num_heads"], patch_size=patch,
        qkv_bias=True, use_rel_pos=True, global_attn_indexes=tuple(c["encoder_global_attn_indexes"]),
        window_size=c["window_size"], out_chans=dim)
    prompts = PromptEncoder(embed_dim=dim, image_embedding_size=(size // patch, size // patch),
                            input_image_size=(size, size), mask_in_chans=c["mask_in_chans"])
    decoder = MaskDecoder(
        num_multimask_outputs=3, transformer_dim=dim, iou_head_depth=c["iou_head_depth"],
        iou_head_hidden_dim=c["iou_head_hidden_dim"],
        transformer=TwoWayTransformer(depth=c["decoder_depth"], embedding_dim=dim, mlp_dim=c["decoder_mlp_dim"],
                                      num_heads=c["decoder_num_heads"]))
    return Sam(image_encoder=encoder, prompt_encoder=prompts, mask_decoder=decoder, pixel_mean=list(PIXEL_MEAN),
               pixel_std=list(PIXEL_STD))


def mask_order(areas: Sequence[int], predicted_iou: Sequence[float]) -> np.ndarray:
    """The painting order: largest area first, then higher predicted IoU, then the given order."""
    areas, ious = np.asarray(areas, dtype=np.int64), np.asarray(predicted_iou, dtype=np.float64)
    return np.lexsort((np.arange(len(areas)), -ious, -areas)).astype(np.int64)


def paint_masks(masks: Sequence[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """An int32 id map: mask i (in the given order) paints id i + 1 over what was painted before; 0 = no mask."""
    ids = np.zeros(shape, dtype=np.int32)
    for i, mask in enumerate(masks):
        ids[np.asarray(mask, dtype=bool)] = i + 1
    return ids


def boundary_map(ids: np.ndarray) -> np.ndarray:
    """uint8 0/255: 255 where a 4-neighbour (inside the image) holds another id."""
    edge = np.zeros(ids.shape, dtype=bool)
    across = ids[:, 1:] != ids[:, :-1]
    edge[:, 1:] |= across
    edge[:, :-1] |= across
    down = ids[1:, :] != ids[:-1, :]
    edge[1:, :] |= down
    edge[:-1, :] |= down
    return edge.astype(np.uint8) * 255


def _precomputed_predictor(model: torch.nn.Module) -> Any:
    """A `SamPredictor` whose `set_image` takes an embedding computed beforehand for the whole batch."""
    from segment_anything import SamPredictor

    class _PrecomputedPredictor(SamPredictor):
        def use(self, features: torch.Tensor, original_size: tuple[int, int], input_size: tuple[int, int]) -> None:
            self._next = (features, original_size, input_size)

        def set_image(self, image: np.ndarray, image_format: str = "RGB") -> None:
            features, original_size, input_size = self._next
            if tuple(image.shape[:2]) != original_size:
                raise RuntimeError(f"sam: the mask generator asked for a {image.shape[:2]} crop; only whole images "
                                   f"{original_size} have precomputed embeddings (crop layers are not supported)")
            self.reset_image()
            self.features, self.original_size, self.input_size = features, original_size, input_size
            self.is_image_set = True

    return _PrecomputedPredictor(model)


@register_transform("sam")
class SegmentAnything(ModelTransform):
    """SAM boundary image (uint8 0/255, HxW) and the `masks` table; see the module docstring.

    Parameters: `variant` (vit_l published; vit_h, vit_b), `points_per_side` (published 32),
    `pred_iou_thresh`, `stability_score_thresh`, `box_nms_thresh`, `min_mask_region_area`
    (segment-anything's defaults: 0.88, 0.95, 0.7, 0), `points_per_batch` (prompts per decoder
    call; does not change the result), `arch` (updates the variant's config; with `weights: null`,
    random weights), and ModelTransform's `weights`, `batch_size`, `device`, `dtype`.
    """
    keeps = "where regions meet: outlines of a class-free segmentation"
    published = (
        "SAM ViT-L (official checkpoint by URL + sha256, or a local file), automatic masks at 32 points per side,"
        " painted largest first (small masks stay visible), 4-neighbour boundary, 0/255"
    )

    augment_group = "b"
    family = "structural"
    outputs: ClassVar[Mapping[str, OutputSpec]] = {"image": IMAGE, "masks": MASKS}
    runtime_params = ("batch_size", "device", "points_per_batch")

    def __init__(self, variant: str = "vit_l", points_per_side: int = 32, pred_iou_thresh: float = 0.88,
                 stability_score_thresh: float = 0.95, box_nms_thresh: float = 0.7, min_mask_region_area: int = 0,
                 points_per_batch: int = 64, arch: Mapping[str, Any] | None = None,
                 weights: Any = DEFAULT_WEIGHTS,
                 batch_size: int = 4, device: str = "auto", dtype: str = "auto") -> None:
        super().__init__(weights=weights, batch_size=batch_size, device=device, dtype=dtype)
        sam_config(variant, arch)  # checks variant and arch keys
        for key, value, low in (("points_per_side", points_per_side, 1), ("points_per_batch", points_per_batch, 1),
                                ("min_mask_region_area", min_mask_region_area, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"transform (sam): {key} must be an integer >= {low}, got {value!r}")
        for key, value in (("pred_iou_thresh", pred_iou_thresh), ("stability_score_thresh", stability_score_thresh),
                           ("box_nms_thresh", box_nms_thresh)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
                raise ConfigError(f"transform (sam): {key} must be a number in [0, 1], got {value!r}")
        check_weights_or_arch("sam", weights, arch, arch_with_weights=True)
        self.variant, self.points_per_side, self.points_per_batch = variant, points_per_side, points_per_batch
        self.pred_iou_thresh, self.stability_score_thresh = pred_iou_thresh, stability_score_thresh
        self.box_nms_thresh, self.min_mask_region_area = box_nms_thresh, min_mask_region_area
        self.arch = None if arch is None else dict(arch)
        self._generator: Any = None

    # --- weights ----------------------------------------------------------------------------------------
    def weight_source(self) -> Any:
        weights = self.weights
        if isinstance(weights, Mapping) and weights.get("url") and not weights.get("sha256"):
            raise MissingModelError(
                f"sam: weights.sha256 is not pinned for {weights['url']}: download it where the URL can be reached, "
                f"run `sha256sum` on it and pass transform.weights.sha256=<digest> (it is then downloaded once into "
                f"<cache_dir>/weights/, or put there as the error then says), or pass the downloaded file itself: "
                f"transform.weights=/path/to/{weights['url'].rsplit('/', 1)[-1]}")
        return super().weight_source()

    def config(self) -> dict[str, Any]:
        return sam_config(self.variant, self.arch)

    # --- the runner's contract ----------------------------------------------------------------------------
    def load_model(self, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
        from segment_anything import SamAutomaticMaskGenerator

        from bias.inference.weights import load_state_dict

        if self.weights is None:
            model = seeded(lambda: build_sam(self.config()))
        else:
            model = build_sam(self.config())
            path = self.weight_path()
            try:
                model.load_state_dict(load_state_dict(path))
            except RuntimeError as err:
                raise ConfigError(f"transform (sam): {path} does not fit variant {self.variant!r} ({str(err)[:300]}); "
                                  f"the official checkpoints are {SAM_CHECKPOINTS}") from err
        model = model.to(device).eval()
        self._generator = SamAutomaticMaskGenerator(
            model, points_per_side=self.points_per_side, points_per_batch=self.points_per_batch,
            pred_iou_thresh=self.pred_iou_thresh, stability_score_thresh=self.stability_score_thresh,
            box_nms_thresh=self.box_nms_thresh, min_mask_region_area=self.min_mask_region_area,
            output_mode="binary_mask")
        self._generator.predictor = _precomputed_predictor(model)
        return model

    def unload(self) -> None:
        super().unload()
        self._generator = None

    def preprocess(self, image: np.ndarray) -> dict[str, torch.Tensor]:
        """As `SamPredictor.set_image` + `Sam.preprocess`: longest side to `image_size`, normalise, pad bottom/right."""
        from segment_anything.utils.transforms import ResizeLongestSide

        size = int(self.config()["image_size"])
        resized = ResizeLongestSide(size).apply_image(np.ascontiguousarray(image))
        x = torch.from_numpy(resized).permute(2, 0, 1).float()
        x = (x - torch.tensor(PIXEL_MEAN).view(3, 1, 1)) / torch.tensor(PIXEL_STD).view(3, 1, 1)
        pixels = torch.nn.functional.pad(x, (0, size - x.shape[2], 0, size - x.shape[1]))
        return {"pixels": pixels, "original_size": torch.tensor(image.shape[:2]),
                "input_size": torch.tensor(resized.shape[:2])}

    def collate(self, items: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        return {k: torch.stack([it[k] for it in items]) for k in ("pixels", "original_size", "input_size")}

    def forward(self, batch: Mapping[str, torch.Tensor]) -> list[list[dict[str, Any]]]:
        """The encoder on the batch, then the mask generator per image: one list of SAM mask records each."""
        features = self.model.image_encoder(batch["pixels"]).float()
        predictor = self._generator.predictor
        out = []
        with torch.autocast(features.device.type, enabled=False):  # see the module docstring, "Batching"
            for i in range(len(features)):
                original = tuple(int(v) for v in batch["original_size"][i])
                predictor.use(features[i:i + 1], original, tuple(int(v) for v in batch["input_size"][i]))
                out.append(self._generator.generate(np.zeros((*original, 3), dtype=np.uint8)))
        return out

    def postprocess(self, outputs: list[list[dict[str, Any]]], batch: Mapping[str, torch.Tensor]) -> list[dict[str, Any]]:
        items = []
        for records, size in zip(outputs, batch["original_size"]):
            shape = (int(size[0]), int(size[1]))
            records = [r for r in records if r["area"] > 0]
            order = mask_order([r["area"] for r in records], [r["predicted_iou"] for r in records])
            ranked = [records[j] for j in order]
            ids = paint_masks([r["segmentation"] for r in ranked], shape)
            visible = np.bincount(ids.ravel(), minlength=len(ranked) + 1)[1:]
            boxes = np.array([r["bbox"] for r in ranked], dtype=np.float64).reshape(-1, 4)  # x, y, w, h
            table = {"mask_index": list(range(len(ranked))), "area": [int(r["area"]) for r in ranked],
                     "visible_area": [int(v) for v in visible],
                     "x0": boxes[:, 0].astype(int).tolist(), "y0": boxes[:, 1].astype(int).tolist(),
                     "x1": (boxes[:, 0] + boxes[:, 2]).astype(int).tolist(),
                     "y1": (boxes[:, 1] + boxes[:, 3]).astype(int).tolist(),
                     "predicted_iou": [float(r["predicted_iou"]) for r in ranked],
                     "stability_score": [float(r["stability_score"]) for r in ranked]}
            items.append({"image": boundary_map(ids), "masks": table})
        return items
