"""A rehearsal of the real loading path, and preprocessing taken from the weights.

For each default hub model, the architecture at tiny size with random weights is saved as the hub ships it
(config with its label map, the processor file with the published preprocessing: `tests.helpers.tiny_models`),
laid out as a Hugging Face cache (``models--org--name/snapshots/<commit>/``) and loaded by the default catalogue
name with ``HF_HUB_OFFLINE=1``, as a user with a downloaded checkpoint would; the transform then runs end to end
through the runner and the store. Only the weights' values stay untested.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bias.inference.models import entry
from bias.inference.runner import run_batched
from tests.helpers.tiny_models import (
    PUBLISHED_PROCESSORS,
    SD_VAE_SCALING_FACTOR,
    hub_snapshot,
    save_tiny_depth_anything,
    save_tiny_mask2former_ade,
    save_tiny_sd_vae,
)
from tests.image_factory import save_pngs
from transforms.base import output_store
from transforms.registry import create_transform

COMMIT = "a" * 40
OTHER = "b" * 40
#: (height, width) of the test images
SIZES = [(40, 64), (48, 32)]


@pytest.fixture
def hub(offline_hf) -> Path:
    """An empty Hugging Face cache (tests/conftest.py `offline_hf`), offline: where the snapshots go."""
    return offline_hf


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> tuple[list[str], list[str]]:
    arrays = []
    for i, (h, w) in enumerate(SIZES):
        y, x = np.mgrid[:h, :w]
        arrays.append(np.stack([x * 255 // w, y * 255 // h, np.full_like(x, 90 * i)], axis=2).astype(np.uint8))
    return save_pngs(tmp_path_factory.mktemp("images"), arrays)


def run(transform, images, cache: Path):
    paths, shas = images
    transform.check_ready(cache)
    return run_batched(transform, paths, shas, output_store(transform, cache, None), num_workers=0,
                       show_progress=False, manifest=transform.manifest())


def manifest(report) -> dict:
    return json.loads((report.store.folder / "manifest.json").read_text())


def hub_id(name: str) -> str:
    return entry(name).source["hf"]


# --- the default hub models, by their catalogue names, from a Hugging Face cache, offline -----------------------

def test_seg_default_loads_from_the_hub_cache_with_its_processor_and_ade20k_labels(hub, images, tmp_path):
    repo = hub_id("mask2former_swin_large_ade")
    snapshot = save_tiny_mask2former_ade(hub_snapshot(hub, repo, COMMIT))
    t = create_transform("seg", device="cpu", batch_size=2)  # every parameter the packaged default
    report = run(t, images, tmp_path / "cache")
    assert (report.computed, report.failed) == (2, [])
    record = manifest(report)
    assert record["model"] == {"kind": "hf", "hf": repo, "commit": COMMIT}
    spec = record["preprocessing"]
    assert spec["from"] == "checkpoint" and spec["processor"] == "Mask2FormerImageProcessor"
    assert spec["size"] == {"shortest_edge": 640, "longest_edge": 2560} and spec["size_divisor"] == 32
    assert spec["mean"] == pytest.approx([0.485, 0.456, 0.406], abs=1e-4)
    # the network saw the processor's input: shorter side 640, a multiple of 32, the aspect about kept
    pixels = t.preprocess(np.zeros((40, 64, 3), dtype=np.uint8))["pixels"]
    assert pixels.shape[1] == 640 and pixels.shape[2] % 32 == 0 and abs(pixels.shape[2] - 1024) <= 32
    assert json.loads((snapshot / "config.json").read_text())["id2label"]["149"] == "flag"
    for sha, (h, w) in zip(images[1], SIZES):
        assert np.asarray(Image.open(report.store.image_path(sha))).shape == (h, w, 3)


def test_depth_default_loads_from_the_hub_cache_and_keeps_the_aspect_ratio(hub, images, tmp_path):
    repo = hub_id("depth_anything_v2_large")
    save_tiny_depth_anything(hub_snapshot(hub, repo, COMMIT))
    t = create_transform("depth", device="cpu", batch_size=2)
    report = run(t, images, tmp_path / "cache")
    assert (report.computed, report.failed) == (2, [])
    record = manifest(report)
    assert record["model"]["commit"] == COMMIT and record["preprocessing"]["keep_aspect_ratio"] is True
    # Depth Anything V2's own rule (DPT keep_aspect_ratio): the aspect kept, the scale nearer 1 of those that bring
    # a side to 518, sides rounded to multiples of 14, no padding: a photo's shorter side becomes 518
    shapes = {(600, 900): (3, 518, 784), (40, 64): (3, 322, 518), (48, 32): (3, 518, 350)}
    for (h, w), shape in shapes.items():
        assert tuple(t.preprocess(np.zeros((h, w, 3), dtype=np.uint8))["pixels"].shape) == shape
    for sha, (h, w) in zip(images[1], SIZES):
        image = np.asarray(Image.open(report.store.image_path(sha)))
        assert image.shape == (h, w, 3) and (image.min(), image.max()) == (0, 255)


def test_vae_default_loads_from_the_hub_cache_and_records_its_scaling_factor(hub, images, tmp_path):
    repo = hub_id("sd_vae_ft_ema")
    save_tiny_sd_vae(hub_snapshot(hub, repo, COMMIT))
    t = create_transform("vae", device="cpu", size=32, batch_size=2)
    report = run(t, images, tmp_path / "cache")
    assert (report.computed, report.failed) == (2, [])
    record = manifest(report)
    assert record["model"]["commit"] == COMMIT
    assert record["preprocessing"]["scaling_factor"] == SD_VAE_SCALING_FACTOR


def test_object_det_default_loads_from_the_hub_cache_with_its_tokenizer_and_processor(hub, images, tmp_path):
    from tests.test_neural_objects import owlv2_folder

    repo = hub_id("owlv2_base_patch16_ensemble")
    snapshot = owlv2_folder(hub_snapshot(hub, repo, COMMIT))
    from tests.helpers.tiny_models import published_processor

    published_processor(repo, size={"height": 32, "width": 32}).save_pretrained(snapshot)  # the tiny tower's size
    t = create_transform("object_det", device="cpu", score_threshold=0.0, max_detections=2)
    report = run(t, images, tmp_path / "cache")
    assert (report.computed, report.failed) == (2, [])
    record = manifest(report)
    assert record["model"] == {"kind": "hf", "hf": repo, "commit": COMMIT}
    assert record["preprocessing"]["processor"] == "Owlv2ImageProcessor"
    assert record["preprocessing"]["mean"] == pytest.approx(PUBLISHED_PROCESSORS[repo]["image_mean"])
    assert len(report.store.read_table("boxes")) == 4


def test_caption_default_loads_from_the_hub_cache_with_its_processor_and_chat_template(hub, images, tmp_path):
    from tests.helpers.tiny_models import save_tiny_llava

    repo = hub_id("llava_1_5_7b")
    save_tiny_llava(hub_snapshot(hub, repo, COMMIT), image=336)  # the published 336 px CLIP tower input
    t = create_transform("caption_short", captioner="model", device="cpu", max_new_tokens=3, batch_size=2)
    report = run(t, images, tmp_path / "cache")
    assert (report.computed, report.failed) == (2, [])
    record = manifest(report)
    assert record["model"] == {"kind": "hf", "hf": repo, "commit": COMMIT}
    spec = record["preprocessing"]
    assert spec["size"] == PUBLISHED_PROCESSORS[repo]["size"] and spec["crop_size"] == {"height": 336, "width": 336}
    assert spec["prompt_text"] == "USER: <image>\nDescribe this image in one sentence. ASSISTANT:"
    assert len(report.store.read_text("caption")) == 2
    # describe reads these captions back and names the commit in its models section
    from omegaconf import OmegaConf

    from describe.inputs import read_captions
    from describe.report import Builder, section_models

    cfg = OmegaConf.create({"data": {"resize_shorter": None}, "cache_dir": str(tmp_path / "cache")})
    texts, source, missing = read_captions(cfg, t, images[0], np.asarray(images[1], dtype="S40"), None, compute=False)
    assert missing == {} and source["model"]["commit"] == COMMIT
    blocks = json.dumps(section_models(Builder({"inputs": {"caption_source": source}})), default=str)
    assert COMMIT in blocks and repo in blocks  # the report's appendix B: its template renders these cells


def test_a_store_computed_from_another_commit_is_not_reused(hub, images, tmp_path):
    repo = hub_id("depth_anything_v2_large")
    for commit, seed in ((COMMIT, 0), (OTHER, 1)):
        save_tiny_depth_anything(hub_snapshot(hub, repo, commit), seed=seed)
    hub_snapshot(hub, repo, COMMIT)  # refs/main -> COMMIT
    first = run(create_transform("depth", device="cpu"), images, tmp_path / "cache")
    hub_snapshot(hub, repo, OTHER)  # the branch moved on: refs/main -> OTHER
    second = run(create_transform("depth", device="cpu"), images, tmp_path / "cache")
    assert first.store.folder != second.store.folder
    assert (first.computed, second.computed, second.reused) == (2, 2, 0)
    assert manifest(second)["model"]["commit"] == OTHER
    hub_snapshot(hub, repo, COMMIT)  # back: the first store is found again
    third = run(create_transform("depth", device="cpu"), images, tmp_path / "cache")
    assert third.store.folder == first.store.folder and (third.computed, third.reused) == (0, 2)


# --- preprocessing comes with the weights --------------------------------------------------------------------

def test_two_folders_with_different_processors_get_exactly_what_each_declares(tmp_path):
    """The real transform code, two tiny depth models: the published processor (aspect kept, multiples of 14,
    ImageNet statistics) and one that stretches to 56 x 56 with mean 0.5, std 0.25."""
    published = save_tiny_depth_anything(tmp_path / "published")
    other = save_tiny_depth_anything(tmp_path / "other", size={"height": 56, "width": 56}, keep_aspect_ratio=False,
                                     image_mean=[0.5, 0.5, 0.5], image_std=[0.25, 0.25, 0.25])
    colour = np.array([200, 100, 50], dtype=np.float64)
    image = np.empty((40, 64, 3), dtype=np.uint8)
    image[:] = colour.astype(np.uint8)
    for folder, shape, mean, std in ((published, (3, 322, 518), [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
                                     (other, (3, 56, 56), [0.5] * 3, [0.25] * 3)):
        t = create_transform("depth", weights={"local": str(folder)}, device="cpu")
        t.check_ready(tmp_path / "cache")
        pixels = t.preprocess(image)["pixels"]
        assert tuple(pixels.shape) == shape
        expected = (colour / 255 - np.array(mean)) / np.array(std)  # a uniform image stays uniform when resized
        assert np.allclose(pixels.mean(dim=(1, 2)).numpy(), expected, atol=2e-3)
        assert t.preprocessing()["from"] == "checkpoint" and t.preprocessing()["mean"] == pytest.approx(mean)
    keys = {create_transform("depth", weights={"local": str(f)}, device="cpu").cache_key() for f in (published, other)}
    assert len(keys) == 2


def test_an_override_departs_in_one_line_and_is_recorded(tmp_path, images):
    folder = save_tiny_depth_anything(tmp_path / "model")
    t = create_transform("depth", weights={"local": str(folder)}, size=56, device="cpu")
    with pytest.warns(UserWarning, match=r"^depth: the preprocessing departs from the checkpoint's own: size=56 "
                                         r"\(checkpoint: 518\)$"):
        t.check_ready(tmp_path / "cache")
    spec = t.preprocessing()
    assert spec["from"] == "override" and spec["departs"] == {"size": {"ours": 56, "checkpoint": 518}}
    # the values not overridden come from the checkpoint: its statistics, its aspect rule (a padded canvas)
    assert spec["canvas"] == {"size": 56, "fit": "pad", "mean": pytest.approx([0.485, 0.456, 0.406]),
                              "std": pytest.approx([0.229, 0.224, 0.225])}
    assert tuple(t.preprocess(np.zeros((40, 64, 3), dtype=np.uint8))["pixels"].shape) == (3, 56, 56)
    same = create_transform("depth", weights={"local": str(folder)}, mean=[0.485, 0.456, 0.406],
                            std=[0.229, 0.224, 0.225], device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # overriding with the checkpoint's own values says nothing
        same.check_ready(tmp_path / "cache")
    report = run(t, images, tmp_path / "cache")
    assert manifest(report)["preprocessing"]["departs"] == {"size": {"ours": 56, "checkpoint": 518}}


def test_a_batch_of_different_shapes_runs_as_groups_and_gives_what_one_at_a_time_gives(tmp_path, images):
    folder = save_tiny_depth_anything(tmp_path / "model")
    together = run(create_transform("depth", weights={"local": str(folder)}, device="cpu", batch_size=2), images,
                   tmp_path / "a")
    alone = run(create_transform("depth", weights={"local": str(folder)}, device="cpu", batch_size=1), images,
                tmp_path / "b")
    for sha in images[1]:
        a = np.asarray(Image.open(together.store.image_path(sha))).astype(int)
        b = np.asarray(Image.open(alone.store.image_path(sha))).astype(int)
        assert np.abs(a - b).max() <= 1
    assert torch.get_num_threads() >= 1


def test_sentence_t5_default_loads_from_the_hub_cache_and_classifies_text(hub, tmp_path):
    from omegaconf import OmegaConf

    from classifiers.models import create_classifier
    from classifiers.text import tokenize
    from tests.conftest import ROOT
    from tests.helpers.tiny_models import save_tiny_t5

    save_tiny_t5(hub_snapshot(hub, hub_id("sentence_t5_base"), COMMIT))
    kwargs = OmegaConf.to_container(OmegaConf.load(ROOT / "configs" / "model" / "sentence_t5.yaml"))["kwargs"]
    assert kwargs["weights"] == "sentence_t5_base"
    model = create_classifier("sentence_encoder", num_classes=3, kwargs={**kwargs, "max_length": 8})
    x = torch.stack([tokenize(model.tokenizer, text, 8) for text in ("a red circle", "two blue squares")])
    assert tuple(model(x).shape) == (2, 3)


def test_text_to_image_default_loads_from_the_hub_cache(hub, tmp_path):
    from bias.inference.store import OutputStore
    from tests.test_generation import FakeCaptioner, tiny_sdxl

    repo = hub_id("sdxl_turbo")
    tiny_sdxl(hub_snapshot(hub, repo, COMMIT))
    arrays = [np.full((24, 20, 3), value, dtype=np.uint8) for value in (10, 110)]  # captioned as CAPTIONS 0 and 2
    (tmp_path / "images").mkdir()
    paths, shas = save_pngs(tmp_path / "images", arrays)
    captions = OutputStore(tmp_path / "captions", FakeCaptioner.outputs)
    run_batched(FakeCaptioner(), paths, shas, captions, num_workers=0, show_progress=False)
    t = create_transform("text_to_image", captions={"folder": str(captions.folder)}, size=32, device="cpu")
    report = run(t, (paths, shas), tmp_path / "cache")
    assert (report.computed, report.failed) == (2, [])
    assert manifest(report)["model"]["pipeline"] == {"kind": "hf", "hf": repo, "commit": COMMIT}
    assert np.asarray(Image.open(report.store.image_path(shas[0]))).shape == (32, 32, 3)  # generated at size


@pytest.mark.slow
def test_a_classify_run_records_the_commit_and_the_preprocessing_it_used(hub, tmp_path):
    from tests.conftest import TINY, read_results, run_cli

    repo = hub_id("depth_anything_v2_large")
    save_tiny_depth_anything(hub_snapshot(hub, repo, COMMIT))
    out = tmp_path / "run"
    run_cli("classify.py", "data=planted", "data.per_dataset=6", "data.val_per_dataset=3",
            "data.generator.n_per_dataset=9", "transform=depth", "transform.device=cpu", f"cache_dir={tmp_path / 'c'}",
            f"out={out}", *TINY, "recipe.epochs=1", env={"HF_HOME": str(hub.parent), "HF_HUB_OFFLINE": "1"})
    r = read_results(out)
    assert r["transform_params"]["weights"] == "depth_anything_v2_large"
    assert r["transform_model"] == {"kind": "hf", "hf": repo, "commit": COMMIT}
    assert r["transform_preprocessing"]["from"] == "checkpoint"
    assert r["transform_preprocessing"]["processor"] == "DPTImageProcessor"
