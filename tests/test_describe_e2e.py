"""describe end to end: one real run with the packaged models, every code path with tiny random models, the
shuffled-label control on planted data, and the report's marks on titles and descriptions not written by the LLM.

* `real`: `run_describe` on the default planted data at a tiny size (3 datasets x 16 images of 48 px, ground-truth
  captions), every stage on, with the packaged SmolLM2 (themes and the LLM proposer, few and short calls through
  config overrides), MiniLM and EfficientNet-Lite0 (describe.yaml defaults); then the same run again on the same
  cache into another folder: every model answer comes from the caches (the ledgers' model_calls and the encoders'
  and the ImageNet store's computed counts are zero) and every result JSON is the same, but for wall times and
  the run accounting (``cache_use``, the ledger's model/cached split).
* `tiny`: captions written by a tiny random LLaVA through the caption transform and the inference runner, read by
  the describe inputs; the differences stage scoring image-text similarity with a tiny random open_clip; a tiny
  random Llama as the ``llm.weights`` local folder in the themes stage and the LLM proposer.
* The known answer of the differences stage on planted data: with the true labels some hypothesis is significant
  (the control has power); with the labels shuffled (seeded), none is at q = 0.05 (statistics proposer, MiniLM).
* The report marks a theme title that was chosen (not written) and a description that is the member list.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import open_dict

from bias.inference.runner import run_batched
from describe.inputs import build_inputs
from describe.llm import SMOLLM2_SHA256
from describe.report import DESCRIPTION_MARKS, SECTIONS, TITLE_MARKS, build_report, esc
from describe.run import STAGE_ORDER, StageContext, run_describe, validate_describe_config
from describe.stages import differences_stage
from tests.helpers.tiny_llm import tiny_llama
from tests.helpers.tiny_models import WORDS, save_tiny_llava

torch.set_num_threads(1)

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
#: the default planted data (three datasets differing in layout, background, overlays), 10 train + 6 val each
SMALL = ["data.per_dataset=10", "data.val_per_dataset=6", "data.generator.n_per_dataset=16",
         "data.generator.size=48", "num_workers=0"]
#: few, short LLM calls: one one-caption chunk and one theme per dataset (a title, then its sentence), 2 + 2
#: captions per proposer prompt (each call at most twice: the first answer and one retry)
FEW_CALLS = ["themes.max_chunks=1", "themes.n_themes=1", "themes.max_new_tokens_sentence=12",
             "llm.max_new_tokens=8", "differences.llm_captions=2",
             "differences.per_dataset=4", "differences.n_perm=500", "objects.bootstrap=20"]
#: keys whose values say what a run computed or read from the caches: the only ones a rerun may change
ACCOUNTING = {"cache_use", "seconds", "cached_calls", "model_calls", "model_prompt_tokens", "model_completion_tokens"}
EFFICIENTNET_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
MINILM_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
TINY_CLIP = {"embed_dim": 16,
             "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16},
             "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}


def composed(*overrides: str):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        return compose(config_name="describe", overrides=list(overrides))


def _section(page: str, sid: str) -> str:
    part = page[page.index(f'<section id="{sid}">'):]
    return part[:part.index("</section>")]


def _json(folder: Path) -> dict[str, Any]:
    """Every result JSON of a describe folder (relative path -> data), config.json aside (it names the folder)."""
    return {str(p.relative_to(folder)): json.loads(p.read_text()) for p in sorted(folder.rglob("*.json"))
            if p.name not in ("config.json", "stage_times.json")}


def stable(value: Any) -> Any:
    """`value` without the run-accounting keys (`ACCOUNTING`), and without the caption store's computed/reused."""
    if isinstance(value, dict):
        return {k: stable(v) for k, v in value.items() if k not in ACCOUNTING and
                not (k in ("computed", "reused") and "store" in value)}
    if isinstance(value, list):
        return [stable(v) for v in value]
    return value


# --- one real run with the packaged models ------------------------------------------------------------------

@pytest.fixture(scope="module")
def real(tmp_path_factory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("describe_e2e")
    base = [*SMALL, *FEW_CALLS, f"cache_dir={root / 'cache'}", f"runs_root={root / 'runs'}"]
    cfg = composed(*base, f"out={root / 'first'}")
    first = run_describe(cfg)
    second = run_describe(composed(*base, f"out={root / 'again'}"))
    return {"cfg": cfg, "root": root, "first": first, "second": second, "out": Path(first["out_dir"]),
            "again": Path(second["out_dir"])}


def _results(out: Path) -> dict[str, dict[str, Any]]:
    return {n: json.loads((out / f"{n}.json").read_text()) for n in STAGE_ORDER}


def test_a_real_run_fills_every_section_or_says_why(real):
    assert {n: s["status"] for n, s in real["first"]["status"].items()} == dict.fromkeys(STAGE_ORDER, "done")
    res = _results(real["out"])
    page = (real["out"] / "report.html").read_text()
    for sid, _ in SECTIONS:
        body = re.sub(r"^<section[^>]*><h2>[^<]*</h2>", "", _section(page, sid))
        text = re.sub(r"<[^>]+>", " ", body).strip()
        assert len(text) > 20, sid
        for reason in re.findall(r'<p class="missing">(.*?)</p>', body):
            assert len(reason) > 15, (sid, reason)
        assert esc("Stage '") not in body, (sid, body[:300])  # no stage section left without its result
    # no classify run on this data: the bias table and confusion sections say so instead of showing numbers
    assert "No bias table:" in _section(page, "bias-table") and "No confusion matrices:" in _section(page, "confusion")
    # the packaged models, named by their digests
    imagenet = res["objects"]["sources"]["imagenet"]
    assert imagenet["status"] == "used" and imagenet["model"]["sha256"] == EFFICIENTNET_SHA256
    assert imagenet["images_with_output"] == 48 and res["objects"]["cache_use"]["imagenet"]["computed"] == 48
    assert res["themes"]["models"][0]["sha256"] == SMOLLM2_SHA256
    assert res["differences"]["model"]["weights"]["sha256"] == MINILM_SHA256
    assert res["differences"]["similarity"]["kind"] == "caption-text"
    assert res["differences"]["proposers"]["llm"]["status"] == "done"
    # each dataset has its theme from the LLM's answers, or the failed steps that left it without one, and says so
    themes_html, failed = _section(page, "themes"), res["themes"]["failed"]
    for name in ("yfcc_like", "cc_like", "datacomp_like"):
        themes = res["themes"]["themes"][name]
        assert all(t["title"].strip() and t["description"].strip() for t in themes), themes
        assert all(t["title_source"] in ("written", "chunk", "chosen") for t in themes)
        if not themes:
            assert [f for f in failed if f["dataset"] == name and f["reason"]]
    assert sum(len(ts) for ts in res["themes"]["themes"].values()) >= 1  # the 135M model does write some
    assert themes_html.count("no theme parsed for this dataset") == sum(not ts for ts in res["themes"]["themes"].values())
    for t in (t for ts in res["themes"]["themes"].values() for t in ts):  # not written for the theme: marked
        if t["description_source"] == "members":
            assert esc(DESCRIPTION_MARKS["members"]) in themes_html
        if t["title_source"] != "written":
            assert esc(TITLE_MARKS[t["title_source"]]) in themes_html
    shown = re.findall(r'<div class="theme-title">(.*?)</div>', themes_html)
    for f in failed:  # a failed answer is listed, never shown as a theme
        assert not [r for r in f["raw"] if r.strip() and esc(r.strip()) in shown]


def test_the_ledger_counts_real_tokens_and_the_report_shows_them(real):
    res = _results(real["out"])
    for stage in ("themes", "differences"):
        ledger = res[stage]["ledger"]
        assert ledger["calls"] > 0 and ledger["model_calls"] == ledger["calls"] - ledger["failed_calls"]
        assert ledger["cached_calls"] == 0 and ledger["prompt_tokens"] > 10 * ledger["calls"]
        assert 0 < ledger["completion_tokens"] <= ledger["calls"] * 24  # the longest: a title
    assert res["themes"]["ledger"]["calls"] <= 2 * 3 * 2  # few calls: a title and a sentence per dataset, retries
    models = _section((real["out"] / "report.html").read_text(), "models")
    assert str(res["themes"]["ledger"]["prompt_tokens"]) in models and "Token ledger" in models


def test_a_rerun_is_served_from_the_caches_and_writes_the_same_results(real):
    again = _results(real["again"])
    for stage in ("themes", "differences"):
        ledger = again[stage]["ledger"]
        assert ledger["model_calls"] == 0 and ledger["cached_calls"] == ledger["calls"] > 0, ledger
    assert again["objects"]["cache_use"]["imagenet"] == {"computed": 0, "reused": 48, "failed": 0}
    for stage in ("themes", "differences"):
        use = again[stage]["cache_use"]["encoder"]
        assert use["computed"] == 0 and use["batches"] == 0 and use["cached"] > 0, (stage, use)
    captions = json.loads((real["again"] / "inputs.json").read_text())["caption_source"]
    assert (captions["computed"], captions["reused"]) == (0, 48), captions
    first, second = _json(real["out"]), _json(real["again"])
    assert sorted(first) == sorted(second)
    for name in first:
        assert stable(first[name]) == stable(second[name]), name
    assert (real["out"] / "inputs.parquet").read_bytes() == (real["again"] / "inputs.parquet").read_bytes()


# --- the known answer of the differences stage on planted data ------------------------------------------------

def _no_llm(ctx):
    return None, "not run: the statistics proposer only"


def test_shuffled_labels_give_no_significant_difference_on_planted_data(real, tmp_path):
    plain = validate_describe_config(real["cfg"])
    plain["differences"]["n_perm"] = 1000
    inputs = build_inputs(real["cfg"])
    objects = json.loads((real["out"] / "objects.json").read_text())
    found = {}
    for kind, seed in (("true", None), ("shuffled", 11)):
        x = inputs
        if seed is not None:
            x = dataclasses.replace(inputs, labels=np.random.default_rng(seed).permutation(inputs.labels))
            assert not np.array_equal(x.labels, inputs.labels) and np.bincount(x.labels).tolist() == [16, 16, 16]
        out = tmp_path / kind
        out.mkdir()
        shutil.copy(real["out"] / objects["table_files"]["presence"], out / objects["table_files"]["presence"])
        ctx = StageContext(real["cfg"], plain, x, out, {"objects": objects}, {}, 0)
        found[kind] = differences_stage(ctx, make_generator=_no_llm)
    true, shuffled = found["true"], found["shuffled"]
    assert shuffled["proposers"]["llm"]["status"] == "not run" and shuffled["similarity"]["n_perm"] == 1000
    assert len(shuffled["hypotheses"]) >= 6  # the statistics proposer did propose, from the shuffled groups
    assert not [h for h in shuffled["hypotheses"] if h["significant"] or h["q"] < 0.05]
    assert any(h["significant"] for h in true["hypotheses"])  # the same procedure finds the planted differences


# --- every code path with tiny random models --------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("describe_tiny")
    llava = save_tiny_llava(root / "llava")
    model, tokenizer = tiny_llama(seed=3)
    llm = root / "llama"
    model.save_pretrained(llm)
    tokenizer.save_pretrained(llm)
    cfg = composed("data.per_dataset=5", "data.val_per_dataset=3", "data.generator.n_per_dataset=8",
                   "data.generator.size=32", "num_workers=0", f"cache_dir={root / 'cache'}", f"out={root / 'out'}",
                   f"runs_root={root / 'runs'}", "captions.captioner=model", f"captions.weights={llava}",
                   "captions.device=cpu", "captions.batch_size=4", "captions.max_new_tokens=8",
                   "stages=[objects,language,themes,differences]", "objects.sources=[planted_scene]",
                   "objects.bootstrap=10", "themes.max_chunks=2", "themes.n_themes=2",
                   "themes.max_new_tokens_title=6", "themes.max_new_tokens_sentence=8", "llm.max_new_tokens=8",
                   "llm.device=cpu", "differences.llm_captions=2", "differences.n_perm=50",
                   "differences.per_dataset=3")
    with open_dict(cfg):
        cfg.llm.weights = {"local": str(llm)}
        cfg.clip = {"name": "tiny", "model_config": TINY_CLIP, "init_seed": 1}
    summary = run_describe(cfg)
    out = Path(summary["out_dir"])
    return {"cfg": cfg, "root": root, "llava": llava, "llm": llm, "summary": summary, "out": out,
            "results": {n: json.loads((out / f"{n}.json").read_text()) for n in
                        ("objects", "language", "themes", "differences")}}


def test_captions_of_a_tiny_llava_reach_the_describe_inputs(tiny, tmp_path):
    from transforms.base import output_store
    from transforms.registry import create_transform

    summary = json.loads((tiny["out"] / "inputs.json").read_text())
    assert summary["caption_source"]["captioner"] == "model" and summary["n_images"] == 24
    x = build_inputs(tiny["cfg"])
    assert sum(c is not None for c in x.captions) + summary["n_missing_captions"] == 24
    vocabulary = {w.lower() for w in WORDS} | {"<unk>"}
    texts = [c for c in x.captions if c]
    assert texts and all(set(re.findall(r"[a-z<>]+", c.lower())) <= vocabulary for c in texts)
    # the same model run afresh on two of the images, outside describe, writes the same (greedy) captions
    t = create_transform("caption_short", weights={"local": str(tiny["llava"])}, device="cpu", batch_size=4,
                         max_new_tokens=8)
    t.check_ready(tmp_path)
    store = output_store(t, tmp_path, None)
    report = run_batched(t, x.image_paths[:2], x.sha1s[:2], store, num_workers=0, show_progress=False)
    assert report.computed == 2
    fresh = {r["sha1"]: r["text"] for r in report.store.read_text("caption").to_pylist()}
    assert [fresh[s.decode()] for s in x.sha1s[:2]] == [c or "" for c in x.captions[:2]]
    assert tiny["results"]["language"]["captions_per_dataset"]


def test_a_tiny_open_clip_scores_image_text_similarity(tiny):
    res = tiny["results"]["differences"]
    assert res["similarity"]["kind"] == "image-text" and res["model"]["name"] == "similarity encoder"
    assert "tiny" in json.dumps(res["model"]) and res["similarity"]["scored"] == 12  # every score image is read
    assert res["cache_use"]["encoder"]["computed"] >= 12 and res["hypotheses"]
    assert all(0.0 <= h["auroc"] <= 1.0 for h in res["hypotheses"])


def test_a_tiny_causal_lm_folder_runs_the_themes_and_the_llm_proposer(tiny):
    themes, diff = tiny["results"]["themes"], tiny["results"]["differences"]
    llm = themes["models"][0]
    assert llm["name"] == "llm" and llm["kind"] == "local" and llm["model"] == "llama"
    assert llm["local"] == str(tiny["llm"].resolve()) and len(llm["sha256"]) == 64  # the folder's weight digest
    assert themes["ledger"]["model_calls"] > 0 and themes["ledger"]["completion_tokens"] > 0
    assert diff["proposers"]["llm"]["status"] == "done" and diff["ledger"]["calls"] >= 3
    assert diff["ledger"]["prompt_tokens"] > 0
    page = _section((tiny["out"] / "report.html").read_text(), "themes")
    shown = re.findall(r'<div class="theme-title">(.*?)</div>', page)
    for f in themes["failed"]:  # random text fails the parser: listed with its reason, never a card's title
        assert f["reason"] and all(esc(r.strip()) not in shown for r in f["raw"] if r.strip())
    for ts in themes["themes"].values():
        assert len(ts) <= 2 and all(esc(t["title"]) in shown for t in ts)


# --- the report's marks ---------------------------------------------------------------------------------------

def test_theme_cards_mark_chosen_titles_and_member_list_descriptions():
    themes = {"A": [{"title": "Red circles", "description": "Images of red circles.", "title_source": "written",
                     "description_source": "written"},
                    {"title": "Stars", "description": "Groups the chunk titles: Stars; Blue stars.",
                     "title_source": "chosen", "description_source": "members", "members": ["Stars", "Blue stars"]},
                    {"title": "Squares", "description": "Squares on white.", "title_source": "chunk",
                     "description_source": "written"}]}
    page = build_report({"stages": {"themes": {"themes": themes}}, "status": {"themes": {"status": "done"}}})
    cards = re.findall(r'<div class="card">(.*?)</div></div>', _section(page, "themes"))
    assert len(cards) == 3
    written, chosen, chunk = cards
    assert "theme-source" not in written
    assert esc(TITLE_MARKS["chosen"]) in chosen and esc(DESCRIPTION_MARKS["members"]) in chosen
    assert esc(TITLE_MARKS["chunk"]) in chunk and esc(DESCRIPTION_MARKS["members"]) not in chunk
    assert '<div class="theme-title">Stars</div>' in chosen  # the title itself is unchanged
