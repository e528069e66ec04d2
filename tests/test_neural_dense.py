"""The dense neural transforms (seg, depth, vae): the real model classes at tiny size with random weights
through the runner and the store, known answers of their post-processing, and missing weights."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from bias.core.errors import ConfigError, MissingModelError
from bias.experiment.run import transform_from_config
from bias.inference.runner import run_batched
from tests.conftest import ROOT, TINY, read_results, run_cli
from tests.image_factory import save_pngs
from transforms.base import output_store
from transforms.neural.depth import depth_to_image
from transforms.neural.image_models import fit_canvas
from transforms.neural.seg import ade20k, class_shares, paint_classes
from transforms.registry import create_transform

_SWIN = {"model_type": "swin", "embed_dim": 8, "depths": [1, 1, 1, 1], "num_heads": [1, 1, 1, 1], "window_size": 4,
         "image_size": 64, "out_features": ["stage1", "stage2", "stage3", "stage4"]}
#: the real transformers / diffusers classes at tiny size (a few thousand to 120k parameters)
SEG_ARCHS = {
    "segformer": {"model_type": "segformer", "num_labels": 150, "depths": [1, 1, 1, 1], "hidden_sizes": [8, 8, 16, 16],
                  "num_attention_heads": [1, 1, 1, 1], "sr_ratios": [8, 4, 2, 1], "decoder_hidden_size": 16},
    "mask2former": {"model_type": "mask2former", "num_labels": 150, "hidden_dim": 32, "feature_size": 32,
                    "mask_feature_size": 32, "encoder_feedforward_dim": 32, "dim_feedforward": 32, "encoder_layers": 1,
                    "decoder_layers": 2, "num_attention_heads": 2, "num_queries": 8, "backbone_config": _SWIN},
    "upernet": {"model_type": "upernet", "num_labels": 150, "hidden_size": 16, "use_auxiliary_head": False,
                "backbone_config": {"model_type": "convnext", "hidden_sizes": [8, 8, 16, 16], "depths": [1, 1, 1, 1],
                                    "out_features": ["stage1", "stage2", "stage3", "stage4"]}},
}
DEPTH_ARCH = {"model_type": "depth_anything", "patch_size": 14, "reassemble_hidden_size": 16, "fusion_hidden_size": 16,
              "neck_hidden_sizes": [8, 8, 16, 16], "head_hidden_size": 8,
              "backbone_config": {"model_type": "dinov2", "image_size": 28, "patch_size": 14, "hidden_size": 16,
                                  "num_hidden_layers": 4, "num_attention_heads": 2, "intermediate_size": 32,
                                  "out_indices": [1, 2, 3, 4], "apply_layernorm": True, "reshape_hidden_states": False}}
VAE_ARCH = {"block_out_channels": [8, 16], "down_block_types": ["DownEncoderBlock2D"] * 2,
            "up_block_types": ["UpDecoderBlock2D"] * 2, "layers_per_block": 1, "latent_channels": 4,
            "norm_num_groups": 4, "sample_size": 32}
#: (height, width) of the test images: landscape, portrait, square, odd
SIZES = [(40, 64), (64, 40), (32, 32), (45, 58)]


def tiny(name: str, **params) -> object:
    arch = {"seg": SEG_ARCHS["segformer"], "depth": DEPTH_ARCH, "vae": VAE_ARCH}[name]
    size = {"seg": 32, "depth": 56, "vae": 32}[name]
    return create_transform(name, **{"weights": None, "arch": arch, "size": size, "batch_size": 3, "device": "cpu",
                                     **params})


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> tuple[list[str], list[str]]:
    rng = np.random.default_rng(0)
    arrays = []
    for i, (h, w) in enumerate(SIZES):
        y, x = np.mgrid[:h, :w]
        img = np.stack([x * 255 // w, y * 255 // h, np.full_like(x, 60 * i)], axis=2).astype(np.uint8)
        img[h // 3: h // 2, w // 4: w // 2] = rng.integers(0, 256, 3, dtype=np.uint8)  # a square of another colour
        arrays.append(img)
    return save_pngs(tmp_path_factory.mktemp("images"), arrays)


def run(transform, images, cache: Path):
    paths, shas = images
    transform.check_ready(cache)
    return run_batched(transform, paths, shas, output_store(transform, cache, None), num_workers=0, show_progress=False)


def stored(report, sha: str) -> np.ndarray:
    return np.asarray(Image.open(report.store.image_path(sha)))


# --- the tiny real models through the runner and the store --------------------------------------------

@pytest.mark.parametrize("model", sorted(SEG_ARCHS))
def test_seg_paints_every_pixel_in_its_class_colour_and_tables_the_shares(model, images, tmp_path):
    t = tiny("seg", arch=SEG_ARCHS[model], size=64 if model == "mask2former" else 32)
    report = run(t, images, tmp_path / "c")
    assert (report.computed, report.failed) == (4, [])
    names, palette = ade20k()
    rows = report.store.read_table("classes").to_pylist()
    for sha, (h, w) in zip(images[1], SIZES):
        image = stored(report, sha)
        assert image.shape == (h, w, 3)
        mine = [r for r in rows if r["sha1"] == sha]
        assert [r["class_id"] for r in mine] == sorted({r["class_id"] for r in mine})  # one row per class, in order
        assert all(r["class_name"] == names[r["class_id"]] for r in mine)
        assert sum(r["pixels"] for r in mine) == h * w
        assert sum(r["share"] for r in mine) == pytest.approx(1.0, abs=1e-5)
        assert all(r["share"] == pytest.approx(r["pixels"] / (h * w), rel=1e-6) for r in mine)
        # the painted image and the table agree colour by colour (road and skyscraper share one colour)
        colours, counts = np.unique(image.reshape(-1, 3), axis=0, return_counts=True)
        by_colour: dict[tuple, int] = {}
        for r in mine:
            key = tuple(int(v) for v in palette[r["class_id"]])
            by_colour[key] = by_colour.get(key, 0) + r["pixels"]
        assert dict(zip(map(tuple, colours.tolist()), counts.tolist())) == by_colour


def test_depth_is_min_max_scaled_in_three_equal_channels_at_the_image_size(images, tmp_path):
    report = run(tiny("depth"), images, tmp_path / "c")
    assert (report.computed, report.failed) == (4, [])
    for sha, (h, w) in zip(images[1], SIZES):
        image = stored(report, sha)
        assert image.shape == (h, w, 3)
        assert np.array_equal(image[..., 0], image[..., 1]) and np.array_equal(image[..., 0], image[..., 2])
        assert (image.min(), image.max()) == (0, 255)


def test_vae_reconstruction_comes_back_at_the_image_size_and_is_the_posterior_mode(images, tmp_path):
    a = run(tiny("vae"), images, tmp_path / "a")
    b = run(tiny("vae", batch_size=1), images, tmp_path / "b")  # a fresh build; a sampled posterior would differ
    assert (a.computed, a.failed) == (4, [])
    for sha, (h, w) in zip(images[1], SIZES):
        assert stored(a, sha).shape == (h, w, 3)
        assert np.abs(stored(a, sha).astype(int) - stored(b, sha)).max() <= 1  # fp32 batch-size jitter at most
    assert a.folder.name == b.folder.name  # batch_size is a runtime option: the same cache key


@pytest.mark.parametrize("name", ["seg", "depth", "vae"])
def test_a_saved_model_folder_loads_through_from_pretrained_and_gives_the_same_outputs(name, images, tmp_path):
    random_init = tiny(name)
    model = random_init.build()
    model.save_pretrained(tmp_path / "model")
    from_folder = tiny(name, weights={"local": str(tmp_path / "model")}, arch=None)
    assert type(from_folder.build()) is type(model)
    a, b = run(random_init, images, tmp_path / "a"), run(from_folder, images, tmp_path / "b")
    assert a.folder != b.folder  # other weights identity, other cache entry
    for sha in images[1]:
        assert np.array_equal(stored(a, sha), stored(b, sha))


def test_a_seg_model_that_is_not_ade20k_is_refused_when_it_loads(images, tmp_path):
    t = tiny("seg", arch={**SEG_ARCHS["segformer"], "num_labels": 19})
    with pytest.raises(ConfigError, match="predicts 19 classes, not the 150 ADE20K classes"):
        run(t, images, tmp_path / "c")


# --- known answers of the post-processing -----------------------------------------------------------

def test_palette_mapping_of_a_known_id_map():
    ids = np.array([[0, 1, 2], [6, 48, 149]], dtype=np.uint8)
    expected = [[[120, 120, 120], [180, 120, 120], [6, 230, 230]], [[140, 140, 140], [140, 140, 140], [92, 0, 255]]]
    assert paint_classes(ids).tolist() == expected and paint_classes(ids).dtype == np.uint8
    names, _ = ade20k()
    assert (names[0], names[7], names[12], names[149]) == ("wall", "bed", "person", "flag")
    with pytest.raises(ValueError, match=r"\[0, 149\]"):
        paint_classes(np.array([[150]], dtype=np.int32))


def test_class_share_table_of_a_known_id_map():
    ids = np.array([[0, 0, 0, 2], [2, 5, 5, 5]], dtype=np.uint8)
    assert class_shares(ids) == {"class_id": [0, 2, 5], "class_name": ["wall", "sky", "ceiling"],
                                 "pixels": [3, 2, 3], "share": [0.375, 0.25, 0.375]}


def test_seg_postprocess_crops_the_canvas_and_resizes_ids_by_nearest_neighbour():
    t = tiny("seg")
    canvas = torch.tensor([[[1, 2, 3, 4], [5, 6, 7, 8], [9, 9, 9, 9], [9, 9, 9, 9]]], dtype=torch.uint8)
    batch = {"valid": torch.tensor([[2, 4]]), "size": torch.tensor([[4, 8]])}  # a 4x8 image on a 4x4 canvas
    [item] = t.postprocess(canvas, batch)
    ids = np.repeat(np.repeat(np.array([[1, 2, 3, 4], [5, 6, 7, 8]]), 2, axis=0), 2, axis=1)
    assert np.array_equal(item["image"], paint_classes(ids))
    assert item["classes"]["class_id"] == [1, 2, 3, 4, 5, 6, 7, 8] and item["classes"]["pixels"] == [4] * 8
    assert 9 not in item["classes"]["class_id"]  # the padding never counts


def test_depth_min_max_scaling_of_known_values():
    out = depth_to_image(np.array([[0.0, 1.0], [2.0, 4.0]], dtype=np.float32))
    assert out.shape == (2, 2, 3) and out.dtype == np.uint8
    assert out[..., 0].tolist() == [[0, 64], [128, 255]] and np.array_equal(out[..., 0], out[..., 2])
    assert depth_to_image(np.array([[-3.0, 5.0]])).tolist() == [[[0] * 3, [255] * 3]]
    with np.errstate(all="raise"):  # a constant map: zeros, no division by zero
        assert depth_to_image(np.full((3, 2), 7.5, dtype=np.float32)).tolist() == [[[0] * 3] * 2] * 3
    with pytest.raises(ValueError, match="non-finite"):
        depth_to_image(np.array([[0.0, np.nan]]))


def test_depth_postprocess_scales_over_the_image_only_not_the_padding():
    t = tiny("depth")
    canvas = torch.tensor([[[0.0, 1.0], [1000.0, -1000.0]]])  # row 2 is padding
    [item] = t.postprocess(canvas, {"valid": torch.tensor([[1, 2]]), "size": torch.tensor([[1, 2]])})
    assert item["image"][..., 0].tolist() == [[0, 255]]


def test_vae_postprocess_resizes_the_reconstruction_back_to_each_image():
    t = tiny("vae")
    out = torch.full((2, 3, 32, 32), 77, dtype=torch.uint8)
    out[1, 1] = 200
    items = t.postprocess(out, {"size": torch.tensor([[5, 13], [40, 7]])})
    assert [i["image"].shape for i in items] == [(5, 13, 3), (40, 7, 3)]
    assert (items[0]["image"] == 77).all() and items[1]["image"][0, 0].tolist() == [77, 200, 77]
    pre = t.preprocess(np.zeros((5, 13, 3), dtype=np.uint8))
    assert tuple(pre["pixels"].shape) == (3, 32, 32) and pre["size"].tolist() == [5, 13]


def test_fit_canvas_keeps_the_aspect_ratio_and_fills_with_the_mean_colour():
    image = np.full((2, 4, 3), 9, dtype=np.uint8)
    canvas, valid = fit_canvas(image, 8, "pad", (124, 116, 104))
    assert valid == (4, 8) and canvas.shape == (8, 8, 3)
    assert (canvas[:4] == 9).all() and (canvas[4:] == [124, 116, 104]).all()
    stretched, valid = fit_canvas(image, 8, "stretch", (0, 0, 0))
    assert valid == (8, 8) and (stretched == 9).all()
    pre = tiny("seg").preprocess(np.zeros((10, 40, 3), dtype=np.uint8))
    assert tuple(pre["pixels"].shape) == (3, 32, 32) and pre["valid"].tolist() == [8, 32] and pre["size"].tolist() == [10, 40]


# --- weights: missing, incomplete, or both ways at once ---------------------------------------------

def shipped(name: str, **overrides) -> object:
    config = OmegaConf.to_container(OmegaConf.load(ROOT / "configs" / "transform" / f"{name}.yaml"))
    return transform_from_config({**config, **overrides})


@pytest.fixture
def empty_hf_cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path / "hf" / "hub"


@pytest.mark.parametrize("name, model_id", [("seg", "facebook/mask2former-swin-large-ade-semantic"),
                                            ("depth", "depth-anything/Depth-Anything-V2-Large-hf"),
                                            ("vae", "stabilityai/sd-vae-ft-ema")])
def test_a_shipped_model_missing_offline_fails_before_any_work_saying_what_to_download(name, model_id,
                                                                                      empty_hf_cache, tmp_path):
    t = shipped(name)
    assert t.weight_source().hf == model_id and t._model is None
    with pytest.raises(MissingModelError) as missing:
        t.check_ready(tmp_path / "cache")
    message = str(missing.value)
    assert f"'{model_id}'" in message and f"`hf download {model_id} --revision main`" in message
    assert str(empty_hf_cache / ("models--" + model_id.replace("/", "--"))) in message
    assert not (tmp_path / "cache").exists() and t._model is None


def test_an_incomplete_download_is_missing_weights_not_a_crash_later(empty_hf_cache, tmp_path):
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = empty_hf_cache / "models--some-org--half-done"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "snapshots" / commit / "config.json").write_text("{}")
    t = tiny("depth", weights={"hf": "some-org/half-done"}, arch=None)
    with pytest.raises(MissingModelError, match=r"has no weight file .*`hf download some-org/half-done --revision main`"):
        t.check_ready(tmp_path / "cache")


def test_weights_and_arch_are_checked_when_the_transform_is_built(tmp_path):
    with pytest.raises(ConfigError, match="weights is null but no arch"):
        create_transform("seg", weights=None)
    with pytest.raises(ConfigError, match="not both"):
        create_transform("vae", weights={"local": str(tmp_path)}, arch=VAE_ARCH)
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(ConfigError, match="single file"):
        create_transform("depth", weights={"local": str(tmp_path / "model.safetensors")}).check_ready(tmp_path)
    with pytest.raises(ValueError, match="fit must be one of pad, stretch"):
        create_transform("seg", weights=None, arch=SEG_ARCHS["segformer"], fit="crop")
    with pytest.raises(ValueError, match="std must be three positive numbers"):
        create_transform("depth", weights=None, arch=DEPTH_ARCH, mean=[0.5] * 3, std=[0.2, 0.0, 0.2])
    with pytest.raises(ValueError, match="set mean and std together"):
        create_transform("depth", weights=None, arch=DEPTH_ARCH, std=[0.2, 0.2, 0.2])


def test_the_command_line_names_the_missing_model_in_one_line(tmp_path):
    proc = run_cli("classify.py", "transform=depth", f"out={tmp_path / 'run'}", f"cache_dir={tmp_path / 'cache'}",
                   env={"HF_HOME": str(tmp_path / "hf"), "HF_HUB_CACHE": str(tmp_path / "hf" / "hub")}, check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: weights: Hugging Face model "
                                                   "'depth-anything/Depth-Anything-V2-Large-hf'")
    assert "`hf download depth-anything/Depth-Anything-V2-Large-hf" in lines[0]
    assert not (tmp_path / "cache").exists()  # before generating, indexing or loading anything


# --- one classify run end to end through the command line -------------------------------------------

def hydra_value(value) -> str:
    """A Python value in Hydra's override grammar ({k: v, ...}, [a, b], bare strings)."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {hydra_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(hydra_value(v) for v in value) + "]"
    return json.dumps(value) if isinstance(value, bool) else str(value)


def test_classify_on_planted_data_through_a_tiny_segmentation_model(tmp_path):
    cache = tmp_path / "cache"
    run_cli("classify.py", "data=planted", "data.per_dataset=12", "data.val_per_dataset=6",
            "data.generator.n_per_dataset=18", "data.generator.size=48", "transform=seg", "transform.weights=null",
            f"transform.arch={hydra_value(SEG_ARCHS['segformer'])}", "transform.size=32", "transform.device=cpu",
            "baselines.enabled=false", f"out={tmp_path / 'run'}", f"cache_dir={cache}", *TINY, "recipe.epochs=1")
    r = read_results(tmp_path / "run")
    assert r["transform"] == "seg" and r["family"] == "semantic" and r["n_train"] == 36 and r["n_val"] == 18
    assert r["transform_params"]["arch"]["model_type"] == "segformer" and r["skipped"] == []
    [folder] = (cache / "transforms").iterdir()
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["computed"] == 54 and manifest["failed"] == [] and manifest["model"] == {"random_init": True}
    classes = pq.read_table(folder / "tables" / "classes.parquet")
    shares = classes.group_by("sha1").aggregate([("share", "sum")])
    assert len(shares) == 54 and np.allclose(shares["share_sum"].to_numpy(), 1.0, atol=1e-5)
    _, palette = ade20k()
    painted = np.asarray(Image.open(next(folder.glob("*/*.png"))))
    assert painted.shape == (48, 48, 3)
    def rgb_key(c):
        return c.reshape(-1, 3).astype(np.int64) @ np.array([1 << 16, 1 << 8, 1])

    assert np.isin(rgb_key(painted), rgb_key(palette)).all()
