"""object_det, object_crops / object_context and sam: known answers of the post-processing, tiny real
models (random weights) end to end through the runner and the store, one classify through the CLI,
and missing weights that stop a run before any work."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bias.core.errors import ConfigError, MissingModelError
from bias.inference.runner import run_batched
from tests.conftest import TINY, read_results, run_cli
from tests.image_factory import save_pngs
from transforms.base import output_store
from transforms.neural.detect import (
    LVIS_FILE,
    ObjectDetection,
    box_pixels,
    class_colour,
    draw_detections,
    lvis_categories,
)
from transforms.neural.objects import keep_region, object_mask, seg_class_ids
from transforms.neural.sam import SAM_CHECKPOINTS, boundary_map, mask_order, paint_masks
from transforms.neural.seg import ade20k
from transforms.registry import create_transform, get_transform_class

ROOT = Path(__file__).resolve().parent.parent

#: OWLv2 at 32 px: one layer of width 16 per tower (bos/eos as the placeholder tokenizer uses them)
OWL_ARCH = {
    "text_config": {"vocab_size": 64, "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                    "num_attention_heads": 2, "bos_token_id": 62, "eos_token_id": 63},
    "vision_config": {"image_size": 32, "patch_size": 8, "hidden_size": 16, "intermediate_size": 32,
                      "num_hidden_layers": 1, "num_attention_heads": 2},
    "projection_dim": 16,
}
#: SAM at 64 px: a 2-block ViT of width 32, decoder of width 32
SAM_ARCH = {"image_size": 64, "patch_size": 8, "encoder_embed_dim": 32, "encoder_depth": 2, "encoder_num_heads": 2,
            "encoder_global_attn_indexes": [1], "window_size": 4, "prompt_embed_dim": 32, "mask_in_chans": 4,
            "decoder_depth": 1, "decoder_mlp_dim": 64, "decoder_num_heads": 2, "iou_head_depth": 2,
            "iou_head_hidden_dim": 32}
#: every SAM mask kept (random weights predict low IoU and stability)
SAM_OPEN = {"points_per_side": 4, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}
#: SegFormer with two stages of width 8 and 16, 150 ADE20K classes
SEG_ARCH = {"model_type": "segformer", "num_labels": 150, "num_encoder_blocks": 2, "depths": [1, 1],
            "sr_ratios": [2, 1], "hidden_sizes": [8, 16], "patch_sizes": [3, 3], "strides": [2, 2],
            "num_attention_heads": [1, 1], "mlp_ratios": [2, 2], "decoder_hidden_size": 16}
OUR_CONFIGS = {"object_det": ("a", "semantic"), "object_crops": ("a", "semantic"),
               "object_context": ("a", "semantic"), "sam": ("b", "structural")}


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> tuple[list[str], list[str]]:
    """Three noisy images of different shapes, values in 10..245 (so a fill of 0 is never an image value)."""
    rng = np.random.default_rng(0)
    arrays = []
    for shape in [(40, 48), (40, 56), (48, 40)]:
        img = rng.integers(10, 246, (*shape, 3), dtype=np.uint8)
        img[8:24, 10:30] = (40, 90, 200)  # a flat block: something for SAM to find
        arrays.append(img)
    return save_pngs(tmp_path_factory.mktemp("img"), arrays)


def run(transform, images, cache: Path):
    paths, shas = images
    report = run_batched(transform, paths, shas, output_store(transform, cache, None), num_workers=0,
                         show_progress=False)
    assert (report.computed, report.failed) == (len(shas), [])
    return report.store


def stored_image(store, sha: str) -> np.ndarray:
    return np.asarray(Image.open(store.image_path(sha)))


def rows_of(table, sha: str) -> list[dict]:
    return [r for r in table.to_pylist() if r["sha1"] == sha]


def source(images, i: int) -> np.ndarray:
    return np.asarray(Image.open(images[0][i]).convert("RGB"))


# --- the LVIS vocabulary and the drawing -------------------------------------------------------------------

def test_lvis_vocabulary_is_the_1203_categories_with_unique_names():
    cats = lvis_categories()
    assert len(cats) == 1203 and [c["id"] for c in cats] == list(range(1, 1204))
    assert len({c["name"] for c in cats}) == 1203
    assert (cats[0]["name"], cats[-1]["name"]) == ("aerosol can", "zucchini")
    assert (cats[135]["name"], cats[136]["name"]) == ("bow weapon", "bow decorative ribbons")  # shared "bow"
    assert "ultralytics" in json.loads(LVIS_FILE.read_text())["source"]
    queries = ObjectDetection(weights=None, arch=OWL_ARCH).queries()
    assert len(queries) == 1203 and queries[10] == "a photo of a antenna"


def test_box_pixels_cover_what_a_box_touches_and_clip_to_the_image():
    assert box_pixels((10.2, 3.0, 20.7, 9.0), 30, 30) == (10, 3, 20, 8)
    assert box_pixels((-5, -5, 100, 100), 20, 30) == (0, 0, 29, 19)
    assert box_pixels((4.0, 4.0, 4.0, 4.0), 10, 10) == (4, 4, 4, 4)  # empty box: at least its pixel


def test_class_colours_are_fixed_distinct_and_never_light():
    assert class_colour(0) == (204, 20, 20)  # hue 0, s 0.9, v 0.8
    assert class_colour(17) == class_colour(17)
    colours = [class_colour(i) for i in range(1, 60)]
    assert len(set(colours)) == len(colours)
    assert all(max(c) <= 204 for c in colours)


def test_box_outline_is_drawn_at_its_pixels_in_its_class_colour():
    canvas = draw_detections(40, 40, np.array([[5.0, 8.0, 30.0, 25.0]]), [7], ["cat"], thickness=1, labels=False)
    x0, y0, x1, y1 = 5, 8, 29, 24
    expected = np.zeros((40, 40), dtype=bool)
    expected[[y0, y1], x0:x1 + 1] = True
    expected[y0:y1 + 1, [x0, x1]] = True
    drawn = (canvas != 255).any(axis=2)
    assert np.array_equal(drawn, expected)
    assert (canvas[drawn] == class_colour(7)).all()

    thick = draw_detections(40, 40, np.array([[5.0, 8.0, 30.0, 25.0]]), [7], ["cat"], thickness=2, labels=False)
    inner = np.zeros((40, 40), dtype=bool)
    inner[[y0 + 1, y1 - 1], x0 + 1:x1] = True
    inner[y0 + 1:y1, [x0 + 1, x1 - 1]] = True
    assert np.array_equal((thick != 255).any(axis=2), expected | inner)  # drawn inwards, never outside the box

    labelled = draw_detections(40, 40, np.array([[5.0, 20.0, 30.0, 35.0]]), [7], ["cat"], thickness=1, labels=True)
    ink = (labelled != 255).any(axis=2)
    assert ink[:20].any() and not ink[:20, :5].any()  # the name sits above the box, from its left edge
    colour = np.array(class_colour(7))
    assert (labelled[ink] == colour).all(axis=1).any()  # the text in the class colour,
    assert (labelled[ink] >= colour).all()  # its smoothed edges blends of that colour and white
    other = draw_detections(40, 40, np.array([[5.0, 20.0, 30.0, 35.0]]), [8], ["cat"], thickness=1, labels=True)
    assert np.array_equal((other != 255).any(axis=2), ink) and not np.array_equal(other, labelled)


# --- object_det: tiny OWLv2 end to end --------------------------------------------------------------------

def test_object_det_runs_a_tiny_owlv2_and_stores_canvas_and_boxes(images, tmp_path, monkeypatch):
    from transformers import Owlv2Model

    calls = []
    original = Owlv2Model.get_text_features

    def counted(self, *args, **kwargs):
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Owlv2Model, "get_text_features", counted)
    t = create_transform("object_det", weights=None, arch=OWL_ARCH, device="cpu", batch_size=1)  # published 0.5
    store = run(t, images, tmp_path / "c")
    assert len(calls) == math.ceil(1203 / 256)  # the queries are encoded once, in load, not per batch of 1
    table = store.read_table("boxes")
    assert set(table.column_names) == {"sha1", "x0", "y0", "x1", "y1", "class_id", "class_name", "score"}
    names = [c["name"] for c in lvis_categories()]
    counts = []
    for i, sha in enumerate(images[1]):
        h, w = source(images, i).shape[:2]
        rows = rows_of(table, sha)
        counts.append(len(rows))
        scores = [r["score"] for r in rows]
        assert scores == sorted(scores, reverse=True) and all(s >= 0.5 for s in scores)
        for r in rows:
            assert 0 <= r["x0"] <= r["x1"] <= w and 0 <= r["y0"] <= r["y1"] <= h
            assert 1 <= r["class_id"] <= 1203 and r["class_name"] == names[r["class_id"] - 1]
        # the stored canvas is exactly the drawing of the stored boxes, the most confident on top
        order = np.argsort(scores, kind="stable")
        boxes = np.array([[r["x0"], r["y0"], r["x1"], r["y1"]] for r in rows], dtype=np.float32).reshape(-1, 4)
        expected = draw_detections(h, w, boxes[order], [rows[j]["class_id"] for j in order],
                                   [rows[j]["class_name"] for j in order], thickness=2, font_scale=0.4)
        assert np.array_equal(stored_image(store, sha), expected)
    # this seeded random model scores one image's boxes all below 0.5 (a white canvas) and another's above
    assert min(counts) == 0 and max(counts) >= 2


def owlv2_folder(folder: Path) -> Path:
    """A complete local OWLv2 model folder at the OWL_ARCH sizes: safetensors weights, config, image processor,
    and a word-level tokenizer over the LVIS queries ([BOS] ... [EOS], [EOS] the largest id, where OWLv2 pools)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import Owlv2Config, Owlv2ForObjectDetection, Owlv2ImageProcessor, PreTrainedTokenizerFast

    split = pre_tokenizers.Whitespace()
    queries = ObjectDetection(weights=None, arch=OWL_ARCH).queries()
    words = sorted({w for q in queries for w, _ in split.pre_tokenize_str(q)})
    vocab = {"[PAD]": 0, "[UNK]": 1, **{w: i + 2 for i, w in enumerate(words)}}
    bos, eos = len(vocab), len(vocab) + 1
    tokenizer = Tokenizer(models.WordLevel({**vocab, "[BOS]": bos, "[EOS]": eos}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = split
    tokenizer.post_processor = processors.TemplateProcessing(single="[BOS] $A [EOS]",
                                                             special_tokens=[("[BOS]", bos), ("[EOS]", eos)])
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="[PAD]", unk_token="[UNK]").save_pretrained(folder)
    text = {**OWL_ARCH["text_config"], "vocab_size": eos + 1, "bos_token_id": bos, "eos_token_id": eos}
    Owlv2ForObjectDetection(Owlv2Config(**{**OWL_ARCH, "text_config": text})).save_pretrained(folder)
    Owlv2ImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


def test_object_det_loads_a_model_folder_with_its_tokenizer_and_image_processor(images, tmp_path):
    folder = owlv2_folder(tmp_path / "owlv2")
    t = create_transform("object_det", weights={"local": str(folder)}, score_threshold=0.0, max_detections=3,
                         device="cpu")
    t.check_ready(tmp_path)
    assert t.model_identity()["kind"] == "local"
    store = run(t, images, tmp_path / "c")
    table = store.read_table("boxes")
    assert sorted({r["sha1"] for r in table.to_pylist()}) == sorted(images[1])
    assert len(table) == 3 * len(images[1])  # threshold 0: the 3 best per image
    assert t.image_processor().size["height"] == 32  # the folder's processor, not a default one


def test_object_det_parameters_are_checked():
    with pytest.raises(ConfigError, match="score_threshold"):
        ObjectDetection(score_threshold=1.5)
    with pytest.raises(ConfigError, match="prompt must hold one"):
        ObjectDetection(prompt="a photo")
    with pytest.raises(ConfigError, match="weights is null but no arch"):
        ObjectDetection(weights=None)
    with pytest.raises(ConfigError, match="not both"):
        ObjectDetection(arch=OWL_ARCH)


# --- object_crops / object_context ----------------------------------------------------------------------------

def test_keep_region_and_object_mask_known_answer():
    image = np.arange(5 * 6 * 3, dtype=np.uint8).reshape(5, 6, 3) + 1
    mask = object_mask(np.array([[1.0, 1.0, 3.0, 2.0], [4.5, 3.2, 6.0, 5.0]]), 5, 6)
    expected = np.zeros((5, 6), dtype=bool)
    expected[1:2, 1:3] = True
    expected[3:5, 4:6] = True
    assert np.array_equal(mask, expected)
    crops, context = keep_region(image, mask, True, [0, 0, 0]), keep_region(image, mask, False, [7, 8, 9])
    assert np.array_equal(crops[mask], image[mask]) and (crops[~mask] == 0).all()
    assert np.array_equal(context[~mask], image[~mask]) and (context[mask] == [7, 8, 9]).all()


def test_crops_and_context_partition_the_image(images, tmp_path):
    common = {"weights": None, "arch": OWL_ARCH, "score_threshold": 0.0, "max_detections": 2, "device": "cpu",
              "batch_size": 2}
    crops = run(create_transform("object_crops", **common), images, tmp_path / "c")
    context = run(create_transform("object_context", **common), images, tmp_path / "c")
    assert crops.folder != context.folder
    table = crops.read_table("boxes")
    assert table.to_pylist() == context.read_table("boxes").to_pylist()  # the same detector, the same boxes
    partial = 0
    for i, sha in enumerate(images[1]):
        src = source(images, i)
        a, b = stored_image(crops, sha), stored_image(context, sha)
        kept_a, kept_b = (a == src).all(axis=2), (b == src).all(axis=2)
        assert (kept_a ^ kept_b).all()  # every pixel kept by exactly one of the two
        assert (a[~kept_a] == 0).all() and (b[~kept_b] == 0).all()  # the rest is the fill
        boxes = np.array([[r["x0"], r["y0"], r["x1"], r["y1"]] for r in rows_of(table, sha)])
        assert np.array_equal(kept_a, object_mask(boxes, *src.shape[:2]))
        partial += 0 < kept_a.mean() < 1
    assert partial >= 1  # the boxes did not all cover the whole image


def test_seg_class_ids_reads_the_seg_canvas_back_to_the_image_size():
    stub = np.arange(64, dtype=np.uint8).reshape(8, 8) % 150  # the seg transform's B x size x size arg-max
    seg = get_transform_class("seg")
    ids = seg_class_ids(seg, torch.from_numpy(stub[None]), {"valid": torch.tensor([[4, 8]]),
                                                            "size": torch.tensor([[8, 16]])})
    assert len(ids) == 1 and np.array_equal(ids[0], np.repeat(np.repeat(stub[:4], 2, axis=0), 2, axis=1))


def test_crops_from_seg_classes_keep_exactly_the_pixels_of_those_classes(images, tmp_path):
    names, palette = ade20k()
    seg = create_transform("seg", weights=None, arch=SEG_ARCH, size=32, device="cpu")
    seg_store = run(seg, images, tmp_path / "c")
    painted = [stored_image(seg_store, s) for s in images[1]]
    # the three most frequent classes whose palette colour is their own (ADE20K's palette repeats one)
    colours, counts = np.unique(np.concatenate([p.reshape(-1, 3) for p in painted]), axis=0, return_counts=True)
    own = [i for i in range(150) if (palette == palette[i]).all(axis=1).sum() == 1]
    freq = {tuple(c): n for c, n in zip(colours.tolist(), counts.tolist())}
    classes = sorted(own, key=lambda i: -freq.get(tuple(palette[i].tolist()), 0))[:3]
    seg_params = {"weights": None, "arch": SEG_ARCH, "size": 32}
    common = {"source": "seg", "seg": seg_params, "seg_classes": [names[classes[0]], *classes[1:]], "fill": [1, 2, 3],
              "device": "cpu"}
    crops = run(create_transform("object_crops", **common), images, tmp_path / "c")
    context = run(create_transform("object_context", **common), images, tmp_path / "c")
    for i, sha in enumerate(images[1]):
        mask = np.any([(painted[i] == palette[c]).all(axis=2) for c in classes], axis=0)
        assert 0 < mask.mean() < 1
        src = source(images, i)
        assert np.array_equal(stored_image(crops, sha), keep_region(src, mask, True, [1, 2, 3]))
        assert np.array_equal(stored_image(context, sha), keep_region(src, mask, False, [1, 2, 3]))
    assert len(crops.read_table("boxes")) == 0
    with pytest.raises(ConfigError, match="needs seg_classes"):
        create_transform("object_crops", source="seg")
    with pytest.raises(ConfigError, match="not an ADE20K class"):
        create_transform("object_crops", source="seg", seg_classes=["unicorn"])


# --- sam ------------------------------------------------------------------------------------------------------

def test_boundary_is_every_pixel_with_a_4_neighbour_of_another_id():
    ids = np.zeros((6, 6), dtype=np.int32)
    ids[2:4, 2:4] = 1
    expected = np.zeros((6, 6), dtype=np.uint8)
    expected[2:4, 2:4] = 255  # the square: each pixel touches the background
    expected[1, 2:4] = expected[4, 2:4] = expected[2:4, 1] = expected[2:4, 4] = 255  # its 4-neighbours outside
    assert np.array_equal(boundary_map(ids), expected)
    halves = np.repeat([[1, 1, 2, 2]], 4, axis=0)
    assert np.array_equal(boundary_map(halves) > 0, np.repeat([[False, True, True, False]], 4, axis=0))
    assert not boundary_map(np.full((3, 5), 7)).any()  # one region: the image border is no boundary


def test_masks_are_painted_largest_first_so_small_ones_stay_visible():
    small = np.zeros((6, 6), dtype=bool)
    small[1:3, 1:3] = True
    big = np.ones((6, 6), dtype=bool)
    order = mask_order([4, 36], [0.99, 0.5])
    assert order.tolist() == [1, 0]
    ids = paint_masks([[small, big][j] for j in order], (6, 6))
    assert (ids[small] == 2).all() and (ids[~small] == 1).all()
    assert mask_order([5, 5, 9], [0.2, 0.8, 0.1]).tolist() == [2, 1, 0]  # equal areas: higher IoU first
    assert mask_order([5, 5], [0.3, 0.3]).tolist() == [0, 1]  # full tie: SAM's order
    assert (paint_masks([], (2, 3)) == 0).all()


def test_sam_tiny_end_to_end_stores_boundaries_and_the_mask_table(images, tmp_path):
    t = create_transform("sam", weights=None, arch=SAM_ARCH, **SAM_OPEN, device="cpu", batch_size=2)
    store = run(t, images, tmp_path / "c")
    table = store.read_table("masks")
    found = 0
    for i, sha in enumerate(images[1]):
        h, w = source(images, i).shape[:2]
        out = stored_image(store, sha)
        assert out.shape == (h, w) and set(np.unique(out)) <= {0, 255}
        rows = rows_of(table, sha)
        assert [r["mask_index"] for r in rows] == list(range(len(rows)))
        areas = [r["area"] for r in rows]
        assert areas == sorted(areas, reverse=True) and min(areas) > 0
        assert all(r["visible_area"] <= r["area"] for r in rows) and sum(r["visible_area"] for r in rows) <= h * w
        assert all(0 <= r["x0"] <= r["x1"] < w and 0 <= r["y0"] <= r["y1"] < h for r in rows)
        found += len(rows) > 1 and out.any()
    assert found >= 1


def test_sam_batched_encoder_gives_what_the_per_image_generator_gives(images):
    from segment_anything import SamAutomaticMaskGenerator

    t = create_transform("sam", weights=None, arch=SAM_ARCH, **SAM_OPEN, device="cpu")
    t.load(torch.device("cpu"), torch.float32)
    image = source(images, 2)
    with torch.inference_mode():
        ours = t.forward(t.collate([t.preprocess(image)]))[0]
        official = SamAutomaticMaskGenerator(t.model, points_per_side=4, pred_iou_thresh=0.0,
                                             stability_score_thresh=0.0).generate(image)
    assert len(ours) == len(official) > 1
    for a, b in zip(ours, official):
        assert a["area"] == b["area"] and a["bbox"] == b["bbox"]
        assert np.array_equal(a["segmentation"], b["segmentation"])
        assert a["predicted_iou"] == pytest.approx(b["predicted_iou"], abs=1e-6)
    t.unload()


def test_sam_loads_a_checkpoint_file_and_gives_what_the_same_weights_give(images, tmp_path):
    from transforms.neural.random_init import seeded
    from transforms.neural.sam import build_sam, sam_config

    path = tmp_path / "sam_tiny.pth"
    torch.save(seeded(lambda: build_sam(sam_config("vit_l", SAM_ARCH))).state_dict(), path)
    loaded = run(create_transform("sam", weights=str(path), arch=SAM_ARCH, **SAM_OPEN, device="cpu"), images,
                 tmp_path / "c")
    random = run(create_transform("sam", weights=None, arch=SAM_ARCH, **SAM_OPEN, device="cpu"), images,
                 tmp_path / "c")
    assert loaded.folder != random.folder  # another model identity (the file's sha256), another cache entry
    assert loaded.read_table("masks").to_pylist() == random.read_table("masks").to_pylist()
    for sha in images[1]:
        assert np.array_equal(stored_image(loaded, sha), stored_image(random, sha))
    wrong = create_transform("sam", weights=str(path), arch={**SAM_ARCH, "encoder_depth": 3}, device="cpu")
    with pytest.raises(ConfigError, match="does not fit variant"):
        wrong.load(torch.device("cpu"), torch.float32)


def test_sam_parameters_are_checked():
    with pytest.raises(ConfigError, match="variant must be one of"):
        create_transform("sam", variant="vit_xl")
    with pytest.raises(ConfigError, match="unknown arch key encoder_width"):
        create_transform("sam", weights=None, arch={"encoder_width": 3})
    with pytest.raises(ConfigError, match="points_per_side"):
        create_transform("sam", points_per_side=0)


# --- configs and missing weights --------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(OUR_CONFIGS))
def test_each_config_builds_its_transform_with_its_published_group_and_family(name):
    import yaml

    params = yaml.safe_load((ROOT / "configs" / "transform" / f"{name}.yaml").read_text())
    assert params.pop("name") == name
    t = create_transform(name, **params)
    assert (t.augment_group, t.family, t.kind) == (*OUR_CONFIGS[name], "precomputed")
    assert t.get_params() == params


def test_missing_hf_weights_name_the_model_and_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    for name in ("object_det", "object_crops"):
        with pytest.raises(MissingModelError, match="google/owlv2-base-patch16-ensemble") as info:
            create_transform(name).check_ready(tmp_path)
        assert "hf download" in str(info.value) and "--revision main" in str(info.value)
    with pytest.raises(MissingModelError, match="facebook/mask2former-swin-large-ade-semantic"):
        create_transform("object_crops", source="seg", seg_classes=["person"]).check_ready(tmp_path)


def test_missing_sam_checkpoint_names_the_url_and_what_to_do(tmp_path):
    with pytest.raises(MissingModelError, match="sha256 is not pinned") as info:
        create_transform("sam").check_ready(tmp_path)
    assert SAM_CHECKPOINTS["vit_l"] in str(info.value) and "sha256sum" in str(info.value)
    url = "http://127.0.0.1:9/sam_vit_l_0b3195.pth"  # nothing listens: fails at once, offline
    with pytest.raises(MissingModelError, match="cannot download http://127.0.0.1:9/sam_vit_l_0b3195.pth"):
        create_transform("sam", weights={"url": url, "sha256": "0" * 64}).check_ready(tmp_path)
    with pytest.raises(MissingModelError, match="does not exist"):
        create_transform("sam", weights={"local": str(tmp_path / "sam.pth")}).check_ready(tmp_path)


def test_a_missing_detector_stops_classify_before_any_work(tmp_path):
    proc = run_cli("classify.py", "transform=object_det", f"cache_dir={tmp_path / 'cache'}", f"out={tmp_path / 'run'}",
                   *TINY, env={"HF_HUB_CACHE": str(tmp_path / "hub")}, check=False)
    assert proc.returncode != 0
    assert "google/owlv2-base-patch16-ensemble" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "cache").exists() and not (tmp_path / "run").exists()  # no data indexed, nothing run


@pytest.mark.slow
def test_classify_on_planted_data_with_tiny_sam(tmp_path):
    arch = "{" + ", ".join(f"{k}: {v}" for k, v in SAM_ARCH.items()) + "}"
    out, cache = tmp_path / "run", tmp_path / "cache"
    run_cli("classify.py", "data=planted", "data.per_dataset=8", "data.val_per_dataset=4",
            "data.generator.n_per_dataset=12", "transform=sam", "transform.weights=null", f"transform.arch={arch}",
            "transform.points_per_side=4", "transform.pred_iou_thresh=0", "transform.stability_score_thresh=0",
            "transform.device=cpu", f"cache_dir={cache}", f"out={out}", *TINY, "recipe.epochs=1")
    r = read_results(out)
    assert (r["n_train"], r["n_val"]) == (24, 12) and r["chance"] == pytest.approx(1 / 3)
    assert r["skipped"] == [] and 0 <= r["accuracy"] <= 1
    folder = next((cache / "transforms").glob("sam-*"))
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["computed"] == 36 and manifest["failed"] == [] and manifest["model"] == {"random_init": True}
    assert manifest["params"]["arch"]["image_size"] == 64
