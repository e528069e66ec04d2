"""describe.stages: one end-to-end `run_describe` on tiny planted_objects data (3 datasets x 60 images of 32 px that
differ only in shape vocabulary: yfcc_like pointy, cc_like boxy, datacomp_like round), checked against what the
generator planted; the explained share against a classify run; the LLM proposer's wiring with a stand-in generator;
the themes stage through the same run with a scripted generator (its answers and faults are known), its themes in
report.html and its failed steps listed, not shown.

The ImageNet source runs timm's tiny random `test_efficientnet` through the real runner (the packaged
EfficientNet-Lite0 is checked once, in tests/test_describe_objects.py); the sentence encoder is the packaged MiniLM.
"""

from __future__ import annotations

import functools
import json
import re
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from PIL import Image

from bias.core.errors import ConfigError, MissingModelError
from describe.inputs import build_inputs
from describe.llm import Generation, TextGenerator
from describe.report import esc
from describe.run import (
    STAGE_ORDER,
    STAGES,
    Stage,
    StageContext,
    load_stage_results,
    run_describe,
    validate_describe_config,
)
from describe.stages import check_themes, default_make_generator, differences_stage, explained_stage, themes_stage

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
TINY = ["data=planted_objects", "data.per_dataset=40", "data.val_per_dataset=20", "data.generator.n_per_dataset=60",
        "data.generator.size=32", "num_workers=0", "imagenet.weights=null", "+imagenet.model_name=test_efficientnet",
        "+imagenet.arch={}", "imagenet.size=32", "objects.bootstrap=50", "differences.n_perm=400",
        "differences.object_sources=[planted_scene]", "themes.chunk_size=5", "themes.chunk_themes=3"]
#: the shape vocabulary each dataset of planted_objects favours (configs/data/planted_objects.yaml)
VOCABULARY = {"yfcc_like": ("triangle", "star", "cross"), "cc_like": ("square", "rectangle"),
              "datacomp_like": ("circle", "ellipse")}


def composed(*overrides: str):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        return compose(config_name="describe", overrides=list(overrides))


def _no_llm(ctx):
    return None, "not run: no LLM in this test"


SHAPES = ("circle", "ellipse", "square", "rectangle", "triangle", "star", "cross")
GARBAGE = "circles circles circles circles circles circles circles circles"


def shape_title(shape: str) -> str:
    return shape.title() + ("es" if shape.endswith("s") else "s")


class ShapeLLM(TextGenerator):
    """Answers the slots procedure's prompts as a model that follows them: a chunk's most frequent shape it has
    not named yet ("Squares"; an earlier title when none is left, which is rejected). Planted faults: every
    group-title answer copies the instruction (so the most central chunk title is kept), and every sentence about
    "Circles" is one word repeated (so that description falls back to the member list)."""

    identity = {"model": "shape-scripted"}

    def __init__(self) -> None:
        self.stages: list[str] = []

    def answer(self, p: str) -> str:
        if p.startswith("These titles name similar subjects"):
            return "These titles name similar subjects of images"
        if "Write one sentence that describes" in p:
            title = p.split('images of "')[1].split('"')[0]
            return GARBAGE if title == "Circles" else f"Images with {title.lower()} among other shapes."
        caps = ([p.split("\n\n")[0].removeprefix("Image caption: ")] if p.startswith("Image caption: ") else
                re.findall(r"^- (.+)$", p.split("\n\n")[0], flags=re.M))
        named = set(re.findall(r'"([^"]+)"', p.split("what is another")[0])) if "Besides" in p else set()
        counts = {s: sum(len(re.findall(rf"\b{s}(?:es|s)?\b", c.lower())) for c in caps) for s in SHAPES}
        for shape in sorted(SHAPES, key=lambda s: (-counts[s], s)):
            if counts[shape] and shape_title(shape) not in named:
                return shape_title(shape)
        return sorted(named)[0] if named else "Title"  # nothing (new) to name: an answer that is rejected

    def generate(self, prompts, max_new_tokens, stage=None):
        self.stages += [stage] * len(prompts)
        return [Generation(text=self.answer(p), prompt_tokens=len(p.split()), completion_tokens=3, cached=False)
                for p in prompts]


SHAPE_LLM = ShapeLLM()


def in_vocabulary(text: str, dataset: str) -> bool:
    """A word or hypothesis names one of the dataset's planted shapes (singular or plural)."""
    return any(v in text.lower() for v in VOCABULARY[dataset])


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("describe_stages")
    overrides = [*TINY, f"cache_dir={root / 'cache'}", f"out={root / 'out'}", f"runs_root={root / 'runs'}"]
    cfg = composed(*overrides)
    stages = dict(STAGES)
    stages["differences"] = Stage("differences", functools.partial(differences_stage, make_generator=_no_llm),
                                  STAGES["differences"].check_ready)
    stages["themes"] = Stage("themes", functools.partial(themes_stage, make_generator=lambda c: (SHAPE_LLM, "")),
                             STAGES["themes"].check_ready)
    summary = run_describe(cfg, stages)
    out = Path(summary["out_dir"])
    return {"cfg": cfg, "out": out, "root": root, "summary": summary, "results": load_stage_results(out),
            "inputs": build_inputs(cfg)}


def test_the_five_stages_are_registered_and_done(run):
    assert all(STAGES[n].run is not None for n in STAGE_ORDER)
    status = run["summary"]["status"]
    assert {n: status[n]["status"] for n in STAGE_ORDER} == dict.fromkeys(STAGE_ORDER, "done")


def test_objects_recover_the_planted_counts_and_vocabulary(run):
    x, res = run["inputs"], run["results"]["objects"]
    src = res["sources"]
    assert src["planted_scene"]["status"] == "used" and src["imagenet"]["status"] == "used"
    assert src["imagenet"]["images_with_output"] == len(x) and src["imagenet"]["model"]["model_name"] == \
        "test_efficientnet"
    assert src["lvis"]["status"] == "missing" and "transform=object_det" in src["lvis"]["reason"]
    assert src["ade20k"]["status"] == "missing" and "transform=seg" in src["ade20k"]["reason"]
    for k, name in enumerate(x.datasets):
        recs = [x.records[i] for i in np.flatnonzero(x.labels == k)]
        extras = [bool(r["overlays"].get("graphic")) + len(r["overlays"].get("text") or []) for r in recs]
        assert res["instances_per_image"]["planted_scene"][name] == [len(r["objects"]) + e for r, e in
                                                                     zip(recs, extras)]
        kinds = [len({o["shape"] for o in r["objects"]}) + bool(r["overlays"].get("graphic")) +
                 bool(r["overlays"].get("text")) for r in recs]
        assert res["unique_per_image"]["planted_scene"][name] == kinds
        for shape in ("circle", "star", "square"):
            share = np.mean([any(o["shape"] == shape for o in r["objects"]) for r in recs])
            assert res["share"]["planted_scene"][name].get(shape, 0.0) == pytest.approx(share)
        top = res["ranking"]["planted_scene"][name][:2]
        assert all(in_vocabulary(r["class"], name) and r["ci95"][0] > 0 for r in top), top
    assert (run["out"] / res["figures"]["planted_scene"]).read_bytes()[:4] == b"\x89PNG"
    assert {"presence", "share_planted_scene", "ranking_imagenet"} <= set(res["table_files"])


def test_topics_and_distinctive_words_hold_the_planted_vocabulary(run):
    res = run["results"]["language"]
    for name in VOCABULARY:
        top_words = [w["word"] for w in res["distinctive"][name][:4]]
        assert all(in_vocabulary(w, name) for w in top_words), (name, top_words)
        assert res["distinctive"][name][0]["z"] > 3
        topic_words = [w for t in res["topics"][name] for w in t["words"]]
        assert len(res["topics"][name]) == 5 and all(len(t["words"]) == 5 for t in res["topics"][name])
        assert sum(in_vocabulary(w, name) for w in topic_words) >= 3
        with Image.open(run["out"] / res["wordclouds"][name]) as im:
            assert im.size == (400, 200) and np.asarray(im).std() > 10


def test_the_true_concept_ranks_first_and_is_significant_for_each_dataset(run):
    res = run["results"]["differences"]
    assert res["proposers"]["llm"] == {"status": "not run", "reason": "not run: no LLM in this test"}
    assert res["similarity"]["kind"] == "caption-text" and res["similarity"]["scored"] == 90
    for name in VOCABULARY:
        mine = sorted((h for h in res["hypotheses"] if h["dataset"] == name), key=lambda h: h["rank"])
        first = mine[0]
        assert in_vocabulary(first["text"], name) and first["significant"] and first["q"] < 0.05, first
        assert first["auroc"] > 0.7 and len(first["evidence"]["images"]) == 6
        assert first["evidence"]["words"] or first["evidence"]["objects"]
        # the fields the summary reads: counted on the score images, the trait more common in its dataset
        assert first["tested"] and first["finding"] and first["share_in"] > first["share_out"]
        assert first["share_basis"] and 0 <= first["share_out"] < first["share_in"] <= 1
    score_ids = {run["inputs"].sample_ids[i] for i in np.flatnonzero(run["inputs"].mask("score"))}
    assert all(set(h["evidence"]["images"]) <= score_ids for h in res["hypotheses"])  # evidence from scored images
    em = res["effect_matrix"]
    assert np.asarray(em["values"], dtype=float).shape == (3, len(em["hypotheses"]))


def test_explained_share_without_and_with_a_classify_run(run):
    res = run["results"]["explained"]
    assert res["image_accuracy"] is None and res["image_classifier"]["status"] == "missing"
    assert "No image-classifier accuracy" in res["sentence"] and "share" not in res["objects"]
    assert res["objects"]["accuracy"] > res["chance"] + 0.2 and res["hypotheses"]["accuracy"] > res["chance"] + 0.2
    # a finished classify run on the same data: its accuracy is the reference
    plain = json.loads((run["out"] / "config.json").read_text())
    run_dir = run["root"] / "runs" / "planted_objects" / "canny" / "abc" / "seed0"
    run_dir.mkdir(parents=True)
    (run_dir / "experiment.json").write_text(json.dumps({"data": plain["data"]}))
    (run_dir / "results.json").write_text(json.dumps({"transform": "canny", "model": "resnet", "accuracy": 0.8,
                                                      "chance": 1 / 3, "datasets": list(VOCABULARY), "seed": 0}))
    ctx = StageContext(run["cfg"], plain, run["inputs"], run["out"], dict(run["results"]), {}, 0)
    again = explained_stage(ctx)
    assert again["image_accuracy"] == 0.8 and again["image_classifier"]["run_dir"] == str(run_dir)
    obj = again["objects"]
    assert obj["share"] == pytest.approx((obj["accuracy"] - obj["chance"]) / (0.8 - 1 / 3))
    assert "points above chance" in again["sentence"] and obj["accuracy"] == res["objects"]["accuracy"]


def test_the_report_shows_every_stage_with_data(run):
    page = (run["out"] / "report.html").read_text()
    for text in ("Share of images per class: planted_scene", "Unique classes per image: imagenet",
                 "Most distinctive classes (one-vs-rest logistic regression): planted_scene", "LDA topics: cc_like",
                 "Word clouds", "Distinctive words (log-odds, informative Dirichlet prior): datacomp_like",
                 "Ranked hypotheses", "Effect matrix", "No image-classifier accuracy"):
        assert text in page, text
    for stage in ("objects", "language", "differences", "explained"):
        assert esc(f"Stage '{stage}'") not in page and f"Stage '{stage}'" not in page


class StandIn:
    """A generator for the wiring only: the same answer to every prompt, and a ledger."""

    def __init__(self) -> None:
        self.calls = 0
        self.ledger = SimpleNamespace(as_dict=lambda: {"calls": self.calls})

    def generate(self, prompts, max_new_tokens, stage="x"):
        self.calls += len(prompts)
        return [SimpleNamespace(text="- images that contain many stars and crosses", failed=None) for _ in prompts]


def test_the_llm_proposer_runs_when_a_generator_is_given_and_is_absent_otherwise(run, monkeypatch):
    plain = json.loads((run["out"] / "config.json").read_text())
    ctx = StageContext(run["cfg"], plain, run["inputs"], run["out"], dict(run["results"]), {}, 0)
    gen = StandIn()
    res = differences_stage(ctx, make_generator=lambda c: (gen, ""))
    assert res["proposers"]["llm"]["status"] == "done" and res["ledger"] == {"calls": 3}
    llm = [h for h in res["hypotheses"] if h["proposer"] == "llm"]
    assert llm and llm[0]["text"] == "images that contain many stars and crosses"
    yfcc = [h for h in llm if h["dataset"] == "yfcc_like"]
    assert yfcc and yfcc[0]["auroc"] > 0.6
    monkeypatch.setitem(sys.modules, "describe.llm", None)  # not importable
    assert default_make_generator(ctx) == (None, "not run: describe.llm not available")


def _section(html: str, sid: str) -> str:
    part = html[html.index(f'<section id="{sid}"'):]
    return part[:part.index("</section>")]


def test_themes_reach_the_report_and_failed_steps_are_listed_not_shown(run):
    x, res = run["inputs"], run["results"]["themes"]
    html = (run["out"] / "report.html").read_text()
    section = _section(html, "themes")
    cards = section[:section.index("Failed generations")] if "Failed generations" in section else section
    n_themes = sum(len(t) for t in res["themes"].values())
    assert cards.count('<div class="theme-title">') == n_themes and GARBAGE not in cards
    by_step = {(f["dataset"], f["step"]): f for f in res["failed"]}
    full = json.loads((run["out"] / res["files"]["full"]).read_text())
    for k, name in enumerate(x.datasets):
        themes = res["themes"][name]
        # five asked; the scripted LLM names one shape per chunk, so a draw with fewer distinct shapes gives four
        assert len(themes) in (4, 5) and res["per_dataset"][name]["captions"] == int(
            (x.mask("propose") & (x.labels == k)).sum())  # the propose images' captions only
        # most chunks' titles (a caption's most common shape) are shapes the generator favoured for this dataset
        firsts = [titles[0] for titles in full["datasets"][name]["chunk_titles"] if titles]
        assert len(firsts) == len(full["datasets"][name]["chunks"]) and sum(in_vocabulary(t, name) for t in firsts) >= 0.75 * len(firsts)
        for j, t in enumerate(themes):
            assert f'<div class="theme-title">{esc(t["title"])}</div>' in section
            assert t["title"] in {shape_title(s) for s in SHAPES} and t["title_source"] in ("chunk", "chosen")
            if t["title_source"] == "chosen":
                assert "chosen, not written" in by_step[(name, f"themes.group_title group {j} title")]["reason"]
            if t["title"] == "Circles":
                assert t["description_source"] == "members" and (name, f"themes.sentence theme {j} sentence") \
                    in by_step
            else:
                assert t["description"] == f"Images with {t['title'].lower()} among other shapes."
    assert any(t["title"] == "Circles" for ts in res["themes"].values() for t in ts)
    assert any(t["title_source"] == "chosen" for ts in res["themes"].values() for t in ts)
    models = _section(html, "models")  # failed steps are diagnostics (appendix B), never theme cards
    failed = models[models.index("Failed generations and steps: themes"):]
    assert all(esc(step) in failed for _, step in by_step) and GARBAGE in failed
    assert res["ledger"]["calls"] == len(SHAPE_LLM.stages) and set(res["ledger"]["stages"]) == set(SHAPE_LLM.stages)
    assert "themes.title" in _section(html, "models")
    assert full["prompt_version"] == "themes-v2" and full["settings"]["procedure"] == "slots"


def test_the_themes_config_is_checked_before_any_work(run, tmp_path):
    base = [*TINY, f"cache_dir={run['root'] / 'cache'}"]
    check_themes(validate_describe_config(composed(*base)))  # the packaged SmolLM2 and MiniLM resolve
    with pytest.raises(ConfigError, match=r"^themes\.per_dataset: unknown key"):  # the schema, before check_themes
        check_themes(validate_describe_config(composed(*base, "+themes.per_dataset=5")))
    with pytest.raises(ConfigError, match="themes.procedure"):
        check_themes(validate_describe_config(composed(*base, "themes.procedure=tree")))
    plain = validate_describe_config(composed(*base))
    plain["llm"]["weights"] = {"local": str(tmp_path / "none")}
    with pytest.raises(MissingModelError, match="does not exist"):
        check_themes(plain)
