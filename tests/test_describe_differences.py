"""describe.differences, describe.similarity, describe.explained: known answers on constructed data.

* Planted captions (dataset A mentions "a red circle", B "a blue star", C neither, shared distractors
  everywhere), embedded by the real packaged MiniLM: the planted concept ranks first for A and B and is
  significant after Benjamini-Hochberg; C has no significant positive effect; with shuffled labels nothing is
  significant.
* AUROC by ranks equals scikit-learn's (ties included); the vectorised permutation p-values equal a plain loop
  over the same permutations and are uniform-ish under the null; BH on a hand-computed example.
* Near-duplicate merging on constructed embeddings; the LLM proposer on a scripted generator (parsing, retry,
  failures recorded, proposal images only); the statistics proposer.
* A tiny random open_clip model (built here, no download): shapes, normalisation, the embedding cache (a second
  call and a second encoder compute nothing), a saved checkpoint loads back to the same vectors, a missing
  model fails before any work.
* The explained share on perfectly separable constructed features.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from sklearn.metrics import roc_auc_score

from bias.core.errors import DataError, MissingModelError
from describe.differences import (
    Hypothesis,
    Proposals,
    benjamini_hochberg,
    column_ranks,
    find_differences,
    merge_near_duplicates,
    one_vs_rest_auroc,
    parse_hypotheses,
    permutation_test,
    propose_from_statistics,
    propose_with_llm,
    score_hypotheses,
)
from describe.explained import explained_share
from describe.similarity import ClipEncoder, SentenceEncoder

torch.set_num_threads(1)

DATASETS = ["A", "B", "C"]
CONCEPT = {"A": "a red circle", "B": "a blue star", "C": None}
DISTRACTORS = ["a green square", "a yellow triangle", "an orange cross", "a purple hexagon"]
BACKGROUNDS = ["plain", "cluttered", "dark", "light"]
TINY_CLIP = {"embed_dim": 16,
             "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16},
             "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}


@dataclass
class Table:
    """The fields of describe.inputs.DescribeInputs that describe.differences reads."""

    datasets: list[str]
    sample_ids: list[str]
    labels: np.ndarray
    image_paths: list[str]
    sha1s: np.ndarray | None
    captions: list[str | None]
    role: np.ndarray


def planted_table(n_propose: int = 12, n_score: int = 36, seed: int = 0) -> Table:
    """Captions naming 1-2 shared distractor shapes on a background; A's and B's also name their concept
    (in 85% of images), C's never. The first `n_propose` of each dataset are the proposal split."""
    rng = np.random.default_rng(seed)
    ids, labels, captions, role = [], [], [], []
    for d, name in enumerate(DATASETS):
        for i in range(n_propose + n_score):
            objects = list(rng.choice(DISTRACTORS, size=int(rng.integers(1, 3)), replace=False))
            if CONCEPT[name] and rng.random() < 0.85:
                objects.append(CONCEPT[name])
            objects = [objects[j] for j in rng.permutation(len(objects))]
            captions.append(f"a photo of {' and '.join(objects)} on a {rng.choice(BACKGROUNDS)} background")
            ids.append(f"{name}-{i:03d}")
            labels.append(d)
            role.append("propose" if i < n_propose else "score")
    return Table(DATASETS, ids, np.array(labels), [f"/nonexistent/{i}.png" for i in ids], None, captions,
                 np.array(role))


@dataclass
class FakeGeneration:
    text: str
    failed: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached: bool = False


@dataclass
class ScriptedGenerator:
    """Answers a prompt by the first script entry whose key is in the prompt's group-A captions; each key's
    answers are used in turn (first attempt, retry). Records every call."""

    script: dict[str, list[FakeGeneration]]
    calls: list[dict] = field(default_factory=list)
    used: dict[str, int] = field(default_factory=dict)

    def generate(self, prompts: list[str], max_new_tokens: int, stage: str = "default") -> list[FakeGeneration]:
        self.calls.append({"prompts": list(prompts), "max_new_tokens": max_new_tokens, "stage": stage})
        out = []
        for prompt in prompts:
            group_a = prompt.split("Group A:")[1].split("Group B:")[0]
            key = next(k for k in self.script if k in group_a)
            i = self.used.get(key, 0)
            self.used[key] = i + 1
            out.append(self.script[key][min(i, len(self.script[key]) - 1)])
        return out


@pytest.fixture(scope="module")
def minilm(tmp_path_factory) -> SentenceEncoder:
    encoder = SentenceEncoder(cache_dir=tmp_path_factory.mktemp("cache"))
    encoder.check_ready()
    return encoder


# --- known answers with the real MiniLM -------------------------------------------------------------------

def planted_proposals(table: Table) -> list[Proposals]:
    llm = ScriptedGenerator({
        "red circle": [FakeGeneration("1. images that contain a red circle\n2. images that contain a green square")],
        "blue star": [FakeGeneration("- Images that contain a blue star.\n- images that contain a yellow triangle")],
        "a photo": [FakeGeneration("1. images that contain an orange cross")],
    })
    by_llm = propose_with_llm(llm, table.captions, table.labels, table.datasets, table.role, seed=3)
    by_stats = propose_from_statistics(objects={"C": [("purple_hexagon", 1.2), ("green_square", 0.9)]})
    return [by_llm, by_stats]


@pytest.fixture(scope="module")
def planted_result(minilm):
    table = planted_table()
    table.captions[table.sample_ids.index("C-040")] = None  # a score image without a caption: left out, listed
    return table, find_differences(table, planted_proposals(table), minilm, n_perm=1000, seed=7)


def test_the_planted_concept_ranks_first_and_is_significant_after_bh(planted_result, tmp_path):
    table, result = planted_result
    texts = [h.text for h in result.hypotheses]
    assert texts == ["images that contain a red circle", "images that contain a green square",
                     "images that contain a blue star", "images that contain a yellow triangle",
                     "images that contain an orange cross", "a purple hexagon"]
    assert result.method["similarity"] == "caption-text" and result.method["scored_per_dataset"] == {
        "A": 36, "B": 36, "C": 35}
    assert result.skipped == [{"sample_id": "C-040", "reason": "no caption"}] and len(result.scored_ids) == 107
    for name in ("A", "B"):
        top = result.ranked(name)[0]
        assert top["text"] == f"images that contain {CONCEPT[name]}", result.ranked(name)[:3]
        assert top["significant"] and top["q"] < 0.05 and top["effect"] > 0.2
        # evidence: the top images are the dataset's own scored images, and their captions name the concept
        assert len(top["evidence"]["top_images"]) == 6
        for sample_id in top["evidence"]["top_images"]:
            i = table.sample_ids.index(sample_id)
            assert table.labels[i] == DATASETS.index(name) and table.role[i] == "score"
            assert CONCEPT[name] in table.captions[i]
    # C shows no concept of its own: nothing is significantly more typical of it, and it lacks A's and B's
    assert not any(r["significant"] and r["effect"] > 0 for r in result.ranked("C"))
    c = DATASETS.index("C")
    assert result.q[c, 0] < 0.05 and result.effect[c, 0] < 0 and result.q[c, 2] < 0.05 and result.effect[c, 2] < 0
    # the object proposer's support travels to the claim
    hexagon = next(r for r in result.ranked("C") if "hexagon" in r["text"])
    assert hexagon["evidence"]["support"] == {"class": "purple_hexagon", "ratio": 1.2}
    assert result.as_dict()["method"]["n_perm"] == 1000 and result.method["permutation_seed"] > 0
    paths = result.write(tmp_path / "out")
    saved = json.loads(paths["json"].read_text())
    assert saved["ranked"]["A"][0]["text"] == "images that contain a red circle" and saved["q"][0][0] < 0.05
    similarity = pq.read_table(paths["similarity"])
    assert similarity.column_names == ["sample_id", "dataset", *[f"h{i}" for i in range(6)]]
    assert similarity.num_rows == 107 and np.allclose(similarity.column("h2").to_numpy(), result.similarity[:, 2])


def test_with_shuffled_labels_no_hypothesis_is_significant(planted_result, minilm):
    table, result = planted_result
    rng = np.random.default_rng(11)
    shuffled = Table(**{**table.__dict__, "labels": table.labels[rng.permutation(len(table.labels))]})
    before = minilm.stats.computed
    control = score_hypotheses(shuffled, result.hypotheses, minilm, n_perm=1000, seed=7)
    assert minilm.stats.computed == before  # the same captions and hypotheses: all from the cache
    assert np.nanmin(control.q) >= 0.05, control.q
    assert np.nanmin(result.q) < 1e-2  # the unshuffled run did find differences on the same captions


def test_sentence_embeddings_are_normalised_and_cached(minilm, tmp_path):
    texts = ["a red circle", "a photo of a red circle on a plain background", "stock market prices"]
    x = minilm.embed_texts(texts)
    assert x.shape == (3, 384) and np.allclose(np.linalg.norm(x, axis=1), 1, atol=1e-5)
    assert x[0] @ x[1] > x[0] @ x[2] + 0.2
    fresh = SentenceEncoder(cache_dir=minilm.cache_dir)  # a second encoder reads the cache, loads no model
    assert np.array_equal(fresh.embed_texts(texts[::-1]), x[::-1])
    assert fresh.stats.computed == 0 and fresh.stats.cached == 3 and fresh._model is None
    assert list((minilm.cache_dir / "embeddings").glob("*/part-*.parquet"))
    with pytest.raises(ValueError, match="not a string"):
        minilm.embed_texts(["ok", None])
    uncaptioned = planted_table(2, 3)
    uncaptioned.captions = [None] * len(uncaptioned.captions)
    with pytest.raises(DataError, match="no usable score image"):
        score_hypotheses(uncaptioned, [Hypothesis("a red circle")], minilm, n_perm=10)


# --- AUROC, permutations, BH --------------------------------------------------------------------------------

def test_auroc_by_ranks_equals_sklearn_with_ties():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 5, size=(60, 7)).astype(float)  # many ties
    scores[:, 3] = 1.0  # all tied: 0.5
    labels = rng.integers(0, 3, size=60)
    auc = one_vs_rest_auroc(scores, labels, 4)
    for d in range(3):
        for h in range(7):
            assert auc[d, h] == pytest.approx(roc_auc_score(labels == d, scores[:, h]), abs=1e-12)
    assert np.allclose(auc[:3, 3], 0.5)
    assert np.all(np.isnan(auc[3]))  # a class with no images has no AUROC
    assert np.array_equal(column_ranks(np.array([3.0, 1.0, 3.0, 2.0]))[:, 0], [3.5, 1.0, 3.5, 2.0])


def test_vectorised_permutation_p_values_equal_a_plain_loop():
    rng = np.random.default_rng(1)
    scores = rng.normal(size=(30, 4))
    scores[:10, 0] += 1.5  # class 0 is separable on hypothesis 0
    scores = np.round(scores, 1)  # ties
    labels = np.repeat([0, 1, 2], 10)
    n_perm, seed = 200, 5
    auc, p = permutation_test(scores, labels, 3, n_perm=n_perm, seed=seed, max_cells=30 * 4 * 7)  # 7 per chunk
    order = np.argsort(np.random.default_rng(seed).random((n_perm, 30)), axis=1)
    # AUROC by counting pairs (no ranks): P(positive > negative) + P(tie) / 2, for every permutation at once
    greater_pairs = np.sign(scores[:, None, :] - scores[None, :, :])  # [i, j, h]
    exceed = np.zeros((3, 4))
    for d in range(3):
        pos = (labels[order] == d).astype(float)  # [P, n]
        pairs = np.einsum("pi,pj,ijh->ph", pos, 1 - pos, greater_pairs)
        null = 0.5 + pairs / (2 * 10 * 20)
        exceed[d] = (np.abs(null - 0.5) >= np.abs(auc[d] - 0.5) - 1e-12).sum(0)
    assert np.allclose(auc[0], [roc_auc_score(labels == 0, scores[:, h]) for h in range(4)])
    assert np.allclose(p, (1 + exceed) / (1 + n_perm))
    assert p[0, 0] == 1 / (1 + n_perm) and p.min() > 0
    _, greater = permutation_test(scores, labels, 3, n_perm=n_perm, seed=seed, alternative="greater")
    assert greater[0, 0] == 1 / (1 + n_perm)


def test_permutation_p_values_are_uniform_under_the_null():
    rng = np.random.default_rng(2)
    scores = rng.normal(size=(45, 300))
    labels = np.repeat([0, 1, 2], 15)
    _, p = permutation_test(scores, labels, 3, n_perm=400, seed=9)
    flat = p.reshape(-1)
    assert 0.45 < flat.mean() < 0.55
    for alpha in (0.05, 0.2, 0.5):
        assert abs((flat <= alpha).mean() - alpha) < 0.04 + alpha * 0.1, alpha
    assert np.nanmin(benjamini_hochberg(p)) > 0.05


def test_benjamini_hochberg_on_a_hand_computed_example():
    p = np.array([[0.001, 0.008, 0.039, 0.041], [0.042, 0.06, 0.074, 0.205], [np.nan, np.nan, np.nan, np.nan]])
    q = benjamini_hochberg(p)
    # m = 8: p * 8 / rank = .008 .032 .104 .082 .0672 .08 .0846 .205, then the running minimum from the top
    expected = np.array([[0.008, 0.032, 0.0672, 0.0672], [0.0672, 0.08, 0.0845714, 0.205]])
    assert np.allclose(q[:2], expected, atol=1e-6) and np.all(np.isnan(q[2]))
    assert np.allclose(benjamini_hochberg(np.array([0.5, 0.9])), [0.9, 0.9])



def _hand_written_bh(p: np.ndarray) -> np.ndarray:
    """The q-values as this module computed them before scipy: running minimum of m p_(j) / j from the top."""
    flat = p.reshape(-1)
    q = np.full_like(flat, np.nan)
    finite = np.flatnonzero(np.isfinite(flat))
    order = finite[np.argsort(flat[finite], kind="stable")]
    scaled = flat[order] * len(finite) / np.arange(1, len(finite) + 1)
    q[order] = np.minimum(1.0, np.minimum.accumulate(scaled[::-1])[::-1])
    return q.reshape(p.shape)


def test_benjamini_hochberg_by_scipy_equals_the_hand_written_formula_with_ties_and_nan():
    rng = np.random.default_rng(3)
    for _ in range(20):
        p = rng.random((3, 40)) ** 3
        p[0, :6] = p[0, 6]  # ties
        p[1, rng.integers(0, 40, 5)] = np.nan
        p[2, :3] = 1.0
        q = benjamini_hochberg(p)
        assert np.array_equal(np.isnan(q), np.isnan(p))
        assert np.nanmax(np.abs(q - _hand_written_bh(p))) <= 1e-12
    assert np.all(np.isnan(benjamini_hochberg(np.full((2, 2), np.nan))))


def test_auroc_equals_scipy_mann_whitney_u_over_n1_n0_with_ties():
    from scipy.stats import mannwhitneyu

    rng = np.random.default_rng(4)
    scores = np.round(rng.normal(size=(80, 6)), 1)
    labels = rng.integers(0, 3, size=80)
    auc = one_vs_rest_auroc(scores, labels, 3)
    for d in range(3):
        pos, neg = scores[labels == d], scores[labels != d]
        u = mannwhitneyu(pos, neg, axis=0, method="asymptotic").statistic
        assert np.allclose(auc[d], u / (len(pos) * len(neg)), atol=1e-12)


def test_permutation_p_values_agree_with_scipy_permutation_test():
    """The same null and p-value definition as scipy's permutation_test (statistic |AUROC - 0.5|, greater):
    on the same data the two p-values differ only by Monte Carlo error (different permutations)."""
    from scipy.stats import permutation_test as scipy_permutation_test

    rng = np.random.default_rng(6)
    labels = np.repeat([0, 1, 2], 20)
    scores = np.round(rng.normal(size=(60, 5)), 1)
    scores[labels == 0, 0] += 1.5  # clear
    scores[labels == 1, 1] += 0.5  # borderline
    scores[labels == 2, 2] += np.linspace(0.0, 1.0, 20)
    n_perm = 4000
    auc, p = permutation_test(scores, labels, 3, n_perm=n_perm, seed=1)
    ranks = column_ranks(scores).T
    for d in range(3):
        pos, neg = ranks[:, labels == d], ranks[:, labels != d]
        n1, n0 = pos.shape[1], neg.shape[1]

        def extremeness(x, y, axis, n1=n1, n0=n0):
            return np.abs((x.sum(axis=axis) - n1 * (n1 + 1) / 2) / (n1 * n0) - 0.5)

        ref = scipy_permutation_test((pos, neg), extremeness, permutation_type="independent", vectorized=True,
                                     n_resamples=n_perm, alternative="greater", axis=-1,
                                     rng=np.random.default_rng(2))
        assert np.allclose(ref.statistic, np.abs(auc[d] - 0.5), atol=1e-12)
        tolerance = 4 * np.sqrt(ref.pvalue * (1 - ref.pvalue) / n_perm) + 2 / n_perm
        assert np.all(np.abs(p[d] - ref.pvalue) <= tolerance), (d, p[d], ref.pvalue)
    assert p[0, 0] == 1 / (1 + n_perm)


# --- merging, proposers --------------------------------------------------------------------------------------

def test_near_duplicates_are_merged_into_the_first_by_cosine_similarity():
    e = np.array([[1, 0, 0], [0.99, 0.141, 0], [0, 1, 0], [0, 0.95, 0.31], [0, 0, 1], [0.2, 0.2, 0.9]], float)
    hyps = [Hypothesis(t, "llm", "A") for t in ("red circle", "a red round disc", "blue star", "a blue star shape",
                                                 "a tree", "Red  Circle")]
    kept = merge_near_duplicates(hyps, e, threshold=0.9)
    assert [h.text for h in kept] == ["red circle", "blue star", "a tree"]
    assert [m["text"] for m in kept[0].merged] == ["a red round disc", "Red  Circle"]  # the same text merges too
    assert kept[0].merged[0]["similarity"] == pytest.approx(0.99 / np.hypot(0.99, 0.141), abs=1e-4)
    assert [m["text"] for m in kept[1].merged] == ["a blue star shape"] and not kept[2].merged
    strict = merge_near_duplicates(hyps, e, threshold=0.96)  # cos(blue star, blue star shape) = 0.95: kept
    assert [h.text for h in strict] == ["red circle", "blue star", "a blue star shape", "a tree"]
    assert not hyps[0].merged  # the inputs are not changed


def test_parse_hypotheses_keeps_list_lines_with_the_prefix():
    text = ("Sure! Here are the phrases:\n1. Images that contain a red circle.\n2) images which show  a Blue sky\n"
            "- photos that have dogs on a beach\n* images that contain\nimages that contain a red circle\n"
            "Some explanation about images.")
    assert parse_hypotheses(text) == ["images that contain a red circle", "images that contain a blue sky",
                                      "images that contain dogs on a beach"]
    assert parse_hypotheses(text, limit=1) == ["images that contain a red circle"]
    assert parse_hypotheses("no list here") == []


def test_the_llm_proposer_parses_retries_once_and_records_failures():
    table = planted_table(n_propose=6, n_score=4)
    table.captions[table.sample_ids.index("A-009")] = "a photo of a SCORE_ONLY marker"  # a score image
    table.captions[table.sample_ids.index("B-001")] = None  # a proposal image without a caption
    gen = ScriptedGenerator({
        "red circle": [FakeGeneration("Here you go:\n1. images that contain a red circle\n2. images that contain "
                                      "a red circle\n3. Images that contain red shapes.")],
        "blue star": [FakeGeneration("I cannot compare these."), FakeGeneration("- images that contain a blue star")],
        "a photo": [FakeGeneration("", failed="out of memory"), FakeGeneration("nothing useful")],
    })
    out = propose_with_llm(gen, table.captions, table.labels, table.datasets, table.role, n_captions=4,
                           n_hypotheses=5, max_new_tokens=64, seed=0)
    assert [(h.dataset, h.text) for h in out.hypotheses] == [
        ("A", "images that contain a red circle"), ("A", "images that contain red shapes"),
        ("B", "images that contain a blue star")]
    assert out.hypotheses[0].source == "llm" and out.hypotheses[0].support["captions"] == 4
    assert len(gen.calls) == 2 and len(gen.calls[0]["prompts"]) == 3 and len(gen.calls[1]["prompts"]) == 2
    assert all(c["stage"] == "differences.propose" and c["max_new_tokens"] == 64 for c in gen.calls)
    assert all("exactly 5 lines" in p for p in gen.calls[1]["prompts"])  # the retry is stricter
    group_b_of_a = gen.calls[0]["prompts"][0].split("Group B:")[1].split("\n\n")[0].strip().splitlines()
    assert len(group_b_of_a) == 4 and sum("blue star" in c for c in group_b_of_a) >= 1  # B and C, 2 each
    assert not any("SCORE_ONLY" in p for c in gen.calls for p in c["prompts"])  # score images are never read
    assert out.failures == [{"dataset": "C", "stage": "differences.propose", "attempts": 2,
                             "reasons": ["generation failed: out of memory",
                                         'no line starting with "images that contain"'],
                             "output": "nothing useful"}]
    assert out.info["propose_images_without_caption"] == 1 and out.info["retried"] == ["B", "C"]
    assert out.info["samples"]["B"]["captions"] == 4
    again = propose_with_llm(ScriptedGenerator(gen.script), table.captions, table.labels, table.datasets,
                             table.role, n_captions=4, n_hypotheses=5, max_new_tokens=64, seed=0)
    assert [h.text for h in again.hypotheses] == [h.text for h in out.hypotheses]  # seeded samples


def test_the_statistics_proposer_turns_words_and_ratios_into_hypotheses():
    out = propose_from_statistics(words={"A": [("circle", 5.0), ("red", 7.5), ("the", 0.3)], "B": [("x", np.nan)]},
                                  objects={"B": [("golden_retriever", 3.0), ("cat", 0.5), ("tabby", 1.5),
                                                 ("egyptian_cat", 2.0)]},
                                  top_k=5, min_z=1.96, min_ratio=1.0)
    assert [(h.dataset, h.source, h.text, h.support) for h in out.hypotheses] == [
        ("A", "words", "red", {"word": "red", "z": 7.5}),
        ("A", "words", "circle", {"word": "circle", "z": 5.0}),
        ("B", "objects", "a golden retriever", {"class": "golden_retriever", "ratio": 3.0}),
        ("B", "objects", "an egyptian cat", {"class": "egyptian_cat", "ratio": 2.0}),
        ("B", "objects", "a tabby", {"class": "tabby", "ratio": 1.5})]
    assert out.info["considered"] == {"words": 4, "objects": 4}
    assert len(propose_from_statistics(words={"A": [("apple", 9.0), ("banana", 8.0)]}, top_k=1).hypotheses) == 1
    # a bare number or function word is never a hypothesis, however distinctive
    bare = propose_from_statistics(words={"A": [("seven", 9.0), ("including", 8.0), ("twelve", 7.0), ("the", 6.0)]})
    assert bare.hypotheses == []
    # with a z (third element), object classes rank by z, not by ratio
    by_z = propose_from_statistics(objects={"A": [("animal", 3.0, 9.0), ("piggy_bank", 20.0, 2.5)]})
    assert [h.text for h in by_z.hypotheses] == ["an animal", "a piggy bank"]
    assert by_z.hypotheses[0].support == {"class": "animal", "ratio": 3.0, "z": 9.0}
    # a caption phrase that is a class proposed for the same dataset is left to the class (one trait, its article)
    both = propose_from_statistics(words={"A": [("animal", 8.0), ("fur", 5.0)]}, objects={"A": [("animal", 3.0, 9.0)]})
    assert [h.text for h in both.hypotheses] == ["fur", "an animal"]


# --- the tiny open_clip model ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def clip_images(tmp_path_factory):
    from PIL import Image

    folder = tmp_path_factory.mktemp("clip_images")
    rng = np.random.default_rng(4)
    paths = []
    for i in range(3):
        path = folder / f"{i}.png"
        Image.fromarray(rng.integers(0, 255, size=(40, 48, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    (folder / "broken.png").write_bytes(b"not a png")
    return paths, str(folder / "broken.png")


def test_a_tiny_random_open_clip_embeds_images_and_texts_and_caches_them(tmp_path, clip_images):
    from safetensors.torch import save_file

    paths, broken = clip_images
    clip = ClipEncoder("tiny", model_config=TINY_CLIP, cache_dir=tmp_path, init_seed=1)
    clip.check_ready()  # random weights need nothing on disk
    array = np.full((24, 24, 3), 128, dtype=np.uint8)
    images = clip.embed_images([*paths, array, broken, paths[0]])
    assert images.vectors.shape == (6, 16) and list(images.failed) == [4]
    good = np.array([0, 1, 2, 3, 5])
    assert np.allclose(np.linalg.norm(images.vectors[good], axis=1), 1, atol=1e-5)
    assert np.all(np.isnan(images.vectors[4])) and np.array_equal(images.vectors[0], images.vectors[5])
    texts = clip.embed_texts(["a red circle", "a blue star"])
    assert texts.shape == (2, 16) and np.allclose(np.linalg.norm(texts, axis=1), 1, atol=1e-5)
    assert not np.allclose(texts[0], texts[1])
    computed, batches = clip.stats.computed, clip.stats.batches
    assert computed == 6  # 4 distinct readable images + 2 texts
    again = clip.embed_images([*paths, array])
    assert np.array_equal(again.vectors, images.vectors[:4]) and not again.failed
    clip.embed_texts(["a blue star"])
    assert (clip.stats.computed, clip.stats.batches) == (computed, batches)  # the second call computes nothing
    fresh = ClipEncoder("tiny", model_config=TINY_CLIP, cache_dir=tmp_path, init_seed=1)
    assert np.array_equal(fresh.embed_texts(["a red circle"]), texts[:1]) and fresh._model is None
    other_seed = ClipEncoder("tiny", model_config=TINY_CLIP, cache_dir=tmp_path, init_seed=2)
    assert other_seed.cache.key != clip.cache.key and not np.allclose(other_seed.embed_texts(["a red circle"]),
                                                                      texts[:1])
    # the same weights saved as safetensors load back as a checkpoint (another identity, the same vectors)
    weights = tmp_path / "tiny_clip.safetensors"
    save_file({k: v.contiguous() for k, v in clip._load()[0].state_dict().items()}, weights)
    loaded = ClipEncoder("tiny", model_config=TINY_CLIP, checkpoint={"local": str(weights)}, cache_dir=tmp_path)
    assert loaded.identity["weights"]["kind"] == "local" and loaded.cache.key != clip.cache.key
    assert np.allclose(loaded.embed_texts(["a red circle", "a blue star"]), texts, atol=1e-6)
    assert np.allclose(loaded.embed_images(paths).vectors, images.vectors[:3], atol=1e-6)


def test_image_text_scoring_with_clip_lists_unreadable_images(tmp_path, clip_images):
    paths, broken = clip_images
    table = Table(["A", "B"], ["a0", "a1", "b0", "b1", "bx"], np.array([0, 0, 1, 1, 1]),
                  [paths[0], paths[1], paths[2], paths[0], broken], None, [None] * 5,
                  np.array(["score"] * 5))
    clip = ClipEncoder("tiny", model_config=TINY_CLIP, cache_dir=tmp_path)
    result = score_hypotheses(table, [Hypothesis("a red circle"), Hypothesis("a blue star")], clip, n_perm=50)
    assert result.method["similarity"] == "image-text" and result.similarity.shape == (4, 2)
    assert result.skipped == [{"sample_id": "bx", "reason": result.skipped[0]["reason"]}]
    assert result.scored_ids == ["a0", "a1", "b0", "b1"] and result.auroc.shape == (2, 2)
    assert np.allclose(result.auroc[0] + result.auroc[1], 1.0)  # two datasets: one-vs-rest mirror each other


def test_missing_models_fail_before_any_work(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty_hub"))
    clip = ClipEncoder("ViT-B-32", pretrained="laion2b_s34b_b79k", cache_dir=tmp_path)
    with pytest.raises(MissingModelError, match="CLIP-ViT-B-32-laion2B-s34B-b79K"):
        clip.check_ready()
    with pytest.raises(MissingModelError, match="does not exist"):
        SentenceEncoder({"local": str(tmp_path / "no_model")}, cache_dir=tmp_path).check_ready()
    with pytest.raises(MissingModelError, match="not installed"):
        SentenceEncoder({"package": "no_such_weights_pkg", "file": "m.safetensors", "sha256": "0" * 64}).check_ready()
    with pytest.raises(MissingModelError):  # score_hypotheses checks before embedding anything
        score_hypotheses(planted_table(2, 2), [Hypothesis("x")], clip, n_perm=10)
    assert not (tmp_path / "embeddings").exists()


# --- explained share -------------------------------------------------------------------------------------------

def test_explained_share_on_separable_features():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], 60)
    informative = np.eye(3)[labels] + rng.normal(0, 0.05, size=(180, 3))
    scores = np.concatenate([rng.normal(size=(180, 3)), informative], axis=1)  # columns 3, 4, 5 tell them apart
    presence = (rng.random((180, 4)) < 0.5).astype(float)  # unrelated to the labels
    out = explained_share(labels, 0.8, hypothesis_scores=scores, object_presence=presence,
                          hypothesis_names=[f"h{i}" for i in range(6)], object_names=list("wxyz"), k=1, seed=3)
    h = out["hypotheses"]
    assert h["chosen"] == ["h3", "h4", "h5"] and h["features"] == 3
    assert h["accuracy"] == 1.0 and h["chance"] == pytest.approx(1 / 3)  # 18 held out per dataset
    assert out["split"] == {"fit": 126, "held_out": 54}
    assert h["share"] == pytest.approx((1 - 1 / 3) / (0.8 - 1 / 3))
    assert h["sentence"] == "the descriptions account for 66.7 of the 46.7 points above chance (143%)"
    o = out["objects"]
    assert o["share"] == pytest.approx((o["accuracy"] - 1 / 3) / (0.8 - 1 / 3)) and o["accuracy"] < 0.6
    assert o["features"] == 4 and o["chosen"] == list("wxyz")
    alone = explained_share(labels, 0.8, hypothesis_scores=scores, hypothesis_names=[f"h{i}" for i in range(6)],
                            k=1, seed=3)
    assert alone | {"objects": o} == out  # seeded: the same split and fit
    below = explained_share(labels, 0.3, hypothesis_scores=scores, k=1, seed=3)["hypotheses"]
    assert below["share"] is None and "not above chance" in below["sentence"]
