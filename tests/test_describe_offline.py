"""describe on the user's own folders, offline (issue 19 point 1): no split-size errors, the sample recorded, each
stage asking only for its own inputs, the offline tags captioner, and hints that are commands that work."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from PIL import Image

from bias.core.errors import ConfigError, MissingModelError
from bias.inference.models import weight_source
from bias.inference.weights import WeightSource
from describe.hierarchy import broader_names, broader_presence
from describe.inputs import build_inputs, resolve_captioner
from describe.run import run_describe, validate_describe_config
from describe.tags import class_phrase, tag_caption, with_article

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
#: a tiny random-weight ImageNet classifier (the packaged one is tested in test_neural_objects.py)
TINY_IMAGENET = ["imagenet.weights=null", "+imagenet.model_name=test_efficientnet", "+imagenet.arch={}",
                 "imagenet.size=32", "num_workers=0", "objects.bootstrap=20", "differences.n_perm=50",
                 "differences.llm_proposer=false"]


def composed(*overrides: str, name: str = "describe"):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        return compose(config_name=name, overrides=list(overrides))


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    """Two folders of 7 and 4 small pictures: fewer than the data config's split sizes (1000 + 100)."""
    root = tmp_path_factory.mktemp("own_folders")
    rng = np.random.default_rng(0)
    out = {}
    for name, n, colour in (("reds", 7, (200, 40, 40)), ("greens", 4, (40, 180, 60))):
        folder = root / name
        folder.mkdir()
        for i in range(n):
            pixels = np.clip(np.array(colour) + rng.normal(0, 30, (32, 32, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{i:02d}.png")
        out[name] = folder
    return out


def _folder_overrides(folders: dict[str, Path], cache: Path) -> list[str]:
    return ["data=folders", f"data.paths={{reds: {folders['reds']}, greens: {folders['greens']}}}",
            f"cache_dir={cache}", *TINY_IMAGENET]


def test_objects_alone_run_on_small_folders_without_captions_or_split_errors(folders, tmp_path):
    cfg = composed(*_folder_overrides(folders, tmp_path / "cache"), f"out={tmp_path / 'out'}", "stages=[objects]",
                   "images_per_dataset=5")
    summary = run_describe(cfg)
    assert summary["status"]["objects"]["status"] == "done"
    inputs = json.loads((tmp_path / "out" / "inputs.json").read_text())
    # at most images_per_dataset each, fewer where fewer exist; the classifier's split sizes play no part
    assert inputs["sample"]["available"] == {"reds": 7, "greens": 4}
    assert inputs["sample"]["used"] == {"reds": 5, "greens": 4} and inputs["sample"]["images_per_dataset"] == 5
    assert inputs["captioner"] is None and "no configured stage reads captions" in inputs["caption_source"]["why"]
    assert inputs["per_dataset"]["greens"]["missing_captions"] == 0


def test_the_default_captioner_on_own_folders_is_tags_and_is_recorded(folders, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = composed(*_folder_overrides(folders, tmp_path / "cache"), "stages=[objects,language]")
    plain = validate_describe_config(cfg)
    name, why = resolve_captioner(plain)
    assert name == "tags" and "no captioning model on disk" in why
    x = build_inputs(cfg)
    assert len(x) == 11 and x.caption_source["captioner"] == "tags" and x.summary()["captioner"] == "tags"
    assert all(isinstance(c, str) and c.startswith(("a ", "an ")) for c in x.captions)
    assert x.caption_source["sources"] == ["imagenet"] and x.caption_source["why"] == why
    assert "only the classes the packaged classifiers know" in x.caption_source["implication"]


def test_captioner_choices_and_the_planted_default():
    assert resolve_captioner(validate_describe_config(composed()))[0] == "planted_scene"  # planted data
    with pytest.raises(ConfigError, match="captions.captioner: expected one of"):
        resolve_captioner(validate_describe_config(composed("captions.captioner=blip")))


def _hints(message: str) -> list[str]:
    """The `key=value` command-line overrides a message suggests."""
    return re.findall(r"(?<![\w.])([+~]?[a-z_]+(?:\.[a-z_]+)+=[^\s,;)`]+)", message)


def test_every_hint_of_the_captioner_errors_is_an_override_that_works(folders, tmp_path):
    base = _folder_overrides(folders, tmp_path / "cache")
    with pytest.raises(ConfigError) as err:
        resolve_captioner(validate_describe_config(composed(*base, "captions.captioner=planted_scene")))
    hints = _hints(str(err.value))
    assert hints == ["captions.captioner=planted_scene", "captions.captioner=tags", "captions.captioner=model"]
    for hint in hints[1:]:
        name, _ = resolve_captioner(validate_describe_config(composed(*base, hint)))
        assert name == hint.split("=")[1]


def test_the_missing_model_hint_for_a_local_folder_composes_and_resolves(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(MissingModelError) as err:
        WeightSource.from_config({"hf": "nobody/no-such-captioner", "revision": "main"}).resolve(tmp_path)
    hints = [h for h in _hints(str(err.value)) if h.startswith(("captions.", "+captions.", "transform."))]
    assert hints == ["transform.weights=DIR", "captions.weights=DIR"]
    folder = tmp_path / "my_captioner"
    folder.mkdir()
    cfg = composed(hints[1].replace("DIR", str(folder)))
    source = weight_source(validate_describe_config(cfg)["captions"]["weights"])
    assert source.kind == "local" and source.resolve(tmp_path) == folder
    transform_cfg = composed("transform=caption_short", hints[0].replace("DIR", str(folder)), name="transform")
    assert weight_source(transform_cfg.transform.weights).resolve(tmp_path) == folder


def test_the_caption_transform_hint_works_for_scripts_transform(tmp_path):
    from bias.data.sources import resolve_sources
    from describe.inputs import caption_transform

    planted_only = caption_transform({"name": "caption_short", "captioner": "planted_scene"})
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
    paths = f"data.paths={{a: {tmp_path / 'a'}, b: {tmp_path / 'b'}}}"
    cfg = composed("data=folders", paths, "transform=caption_short", name="transform")
    with pytest.raises(ConfigError) as err:
        planted_only.check_sources(resolve_sources(dict(cfg.data)))
    hint = next(h for h in _hints(str(err.value)) if h.startswith("transform."))
    assert hint == "transform.captioner=model"
    fixed = composed("data=folders", paths, "transform=caption_short", hint, name="transform")
    assert fixed.transform.captioner == "model"


# --- the tags captioner's text and the WordNet levels ------------------------------------------------------

def test_tag_captions_read_with_articles_and_broader_levels():
    assert with_article("Egyptian cat") == "an Egyptian cat" and with_article("tabby") == "a tabby"
    assert with_article("text") == "text" and with_article("food") == "food"  # mass nouns take no article
    assert class_phrase("tabby", ["domestic cat", "cat"]) == "a tabby (a kind of domestic cat, cat)"
    text = tag_caption(["tabby", "Egyptian cat"], {"tabby": ["cat", "animal"]}, ["remote_control"], ["wall"])
    assert text == "a tabby (a kind of cat, animal), or an Egyptian cat; also a remote control; in a scene with wall"
    assert tag_caption([]) is None


def test_imagenet_classes_count_at_their_wordnet_levels():
    assert {"cat", "feline", "mammal", "animal"} <= set(broader_names("tabby"))
    assert {"dog", "mammal", "animal"} <= set(broader_names("golden retriever"))
    assert "food" in broader_names("pizza") and "device" in broader_names("laptop")
    assert "entity" not in broader_names("tabby") and broader_names("no such class") == []
    classes = ["tabby", "golden retriever", "goldfish", "pizza"]
    present = np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=bool)
    levels, names = broader_presence(present, classes)
    col = names.index("animal")
    assert levels[:, col].tolist() == [True, True, True, False]  # three different animals share "animal"
    assert "mammal" in names and levels[:, names.index("mammal")].tolist() == [True, True, False, False]
    assert "food" not in names  # a level above one class alone says no more than the class


def test_a_path_list_runs_with_the_defaults_too(folders, tmp_path):
    rows = ["path,dataset"]
    rows += [f"{p},yfcc" for p in sorted(folders["reds"].glob("*.png"))[:3]]
    rows += [f"{p},cc" for p in sorted(folders["reds"].glob("*.png"))[3:]]
    rows += [f"{p},datacomp" for p in sorted(folders["greens"].glob("*.png"))]
    (tmp_path / "all.csv").write_text("\n".join(rows) + "\n")
    cfg = composed("data=list", f"data.list_file={tmp_path / 'all.csv'}", f"cache_dir={tmp_path / 'cache'}",
                   f"out={tmp_path / 'out'}", "stages=[objects]", *TINY_IMAGENET)
    assert run_describe(cfg)["status"]["objects"]["status"] == "done"
    sample = json.loads((tmp_path / "out" / "inputs.json").read_text())["sample"]
    assert sample["used"] == sample["available"] == {"yfcc": 3, "cc": 4, "datacomp": 4}


def test_two_halves_of_one_folder_give_no_finding(tmp_path):
    """The control: the same kind of pictures on both sides. The differences stage is done (not failed) and
    reports no finding, whether or not a proposer found a candidate."""
    rng = np.random.default_rng(1)
    paths = {}
    for half in ("half_a", "half_b"):
        (tmp_path / half).mkdir()
        paths[half] = tmp_path / half
    for i in range(16):
        pixels = np.clip(np.array((120, 120, 200)) + rng.normal(0, 40, (32, 32, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(tmp_path / ("half_a" if i % 2 else "half_b") / f"{i:02d}.png")
    cfg = composed("data=folders", f"data.paths={{half_a: {paths['half_a']}, half_b: {paths['half_b']}}}",
                   f"cache_dir={tmp_path / 'cache'}", f"out={tmp_path / 'out'}", "stages=[objects,differences]",
                   *TINY_IMAGENET)
    status = run_describe(cfg)["status"]
    assert status["differences"]["status"] == "done", status["differences"]
    diff = json.loads((tmp_path / "out" / "differences.json").read_text())
    assert not any(h["finding"] for h in diff["hypotheses"])
    assert diff["hypotheses"] or "no proposer found" in diff["note"]


def test_the_side_output_and_caption_store_hints_are_commands_that_compose(tmp_path):
    from bias.core.errors import DataError
    from describe.run import side_output_stores

    cfg = composed(f"cache_dir={tmp_path}", "side_outputs.object_det=required")
    with pytest.raises(DataError) as err:
        side_output_stores(validate_describe_config(cfg))
    message = str(err.value)
    command = re.search(r"python scripts/transform\.py ((?:\S+=\S+ ?)+)", message).group(1).split()
    assert command == ["transform=object_det", "data=planted"]
    assert composed(*command, name="transform").transform.name == "object_det"  # scripts/transform.py's config
    hint = _hints(message)[-1]
    assert hint == "side_outputs.object_det=auto"
    assert side_output_stores(validate_describe_config(composed(f"cache_dir={tmp_path}", hint))) == {}
    assert validate_describe_config(composed("compute_captions=true"))["compute_captions"] is True


def test_webdataset_shards_run_with_the_tags_captioner(tmp_path, monkeypatch):
    from tests.test_sources import write_dataset_shards

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    shards = {name: write_dataset_shards(tmp_path / name, colour, 1, 5, seed)[0]
              for seed, (name, colour) in enumerate((("yfcc", (200, 40, 40)), ("cc", (40, 200, 40)),
                                                     ("datacomp", (40, 40, 200))))}
    cfg = composed("data=webdataset", *[f"data.datasets.{n}.shards={p}" for n, p in shards.items()],
                   f"cache_dir={tmp_path / 'cache'}", f"out={tmp_path / 'out'}", "stages=[objects,language]",
                   *TINY_IMAGENET)
    status = run_describe(cfg)["status"]
    assert status["objects"]["status"] == "done" and status["language"]["status"] != "failed", status
    inputs = json.loads((tmp_path / "out" / "inputs.json").read_text())
    assert inputs["captioner"] == "tags" and inputs["sample"]["used"] == {"yfcc": 5, "cc": 5, "datacomp": 5}
    assert inputs["n_missing_captions"] == 0


def test_hugging_face_datasets_run_with_the_tags_captioner(tmp_path, monkeypatch):
    """`data=hf` (two save_to_disk sets, one row without a picture) through the offline defaults: the missing
    picture is counted, not dropped silently, and the sample adapts to what exists."""
    from tests.test_sources import saved_hf_dataset

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    saved_hf_dataset(tmp_path / "reds", 6, (200, 40, 40), missing=(2,))
    saved_hf_dataset(tmp_path / "blues", 5, (40, 40, 200))
    cfg = composed("data=hf", f"data.datasets.a.path={tmp_path / 'reds'}", "data.datasets.a.image_column=picture",
                   f"data.datasets.b.path={tmp_path / 'blues'}", "data.datasets.b.image_column=picture",
                   f"cache_dir={tmp_path / 'cache'}", f"out={tmp_path / 'out'}", "stages=[objects,language]",
                   *TINY_IMAGENET)
    status = run_describe(cfg)["status"]
    assert status["objects"]["status"] == "done" and status["language"]["status"] != "failed", status
    inputs = json.loads((tmp_path / "out" / "inputs.json").read_text())
    assert inputs["captioner"] == "tags" and inputs["sample"]["used"] == {"a": 5, "b": 5}
    assert inputs["sample"]["available"] == {"a": 5, "b": 5}


def test_a_dataset_of_one_image_is_one_clear_line_without_split_sizes(folders, tmp_path):
    from bias.core.errors import DataError

    single = tmp_path / "single"
    single.mkdir()
    Image.fromarray(np.full((32, 32, 3), 128, np.uint8)).save(single / "only.png")
    cfg = composed("data=folders", f"data.paths={{reds: {folders['reds']}, single: {single}}}",
                   f"cache_dir={tmp_path / 'cache'}", "stages=[objects]", *TINY_IMAGENET)
    with pytest.raises(DataError, match=r"'single' has 1 usable image\(s\); describe needs at least 2") as err:
        build_inputs(cfg)
    assert "per_dataset" not in str(err.value)


def test_on_planted_data_each_dataset_s_top_finding_names_its_planted_axis(tmp_path):
    """The planted demo's known answers (issue 19 point 6), from the statistics proposer on ground-truth captions:
    yfcc_like many shapes / clutter, cc_like text or graphics overlaid, datacomp_like large shapes / white."""
    cfg = composed("data.generator.n_per_dataset=60", "data.generator.size=32", "images_per_dataset=60",
                   f"cache_dir={tmp_path / 'cache'}", f"out={tmp_path / 'out'}", "stages=[differences]",
                   "num_workers=0", "differences.n_perm=300", "differences.llm_proposer=false")
    assert run_describe(cfg)["status"]["differences"]["status"] == "done"
    diff = json.loads((tmp_path / "out" / "differences.json").read_text())
    axes = {"yfcc_like": ("cluttered", "six", "seven", "eight", "nine", "ten", "eleven", "twelve"),
            "cc_like": ("text", "banner", "bar", "logo", "frame"), "datacomp_like": ("large", "white")}
    for name, words in axes.items():
        findings = sorted((h for h in diff["hypotheses"] if h["dataset"] == name and h["finding"]),
                          key=lambda h: -h["auroc"])
        top = findings[0]
        assert any(w in top["text"].split() or w in top["text"].replace("/", " ").split() for w in words), top
        assert top["q"] < 0.05 and top["share_in"] > top["share_out"] and top["proposer"] == "words"
        assert not any(h["text"] in ("seven", "twelve", "kinds", "including") for h in diff["hypotheses"])
