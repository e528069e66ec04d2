"""describe.differences' scoring part: the share of images on each side of the best similarity cut ("62% vs 9% of
images"), against a plain loop over every cut, and carried through `score_hypotheses` into the ranked list."""

from __future__ import annotations

import numpy as np

from describe.differences import best_cut_shares, one_vs_rest_auroc


def _loop(scores: np.ndarray, labels: np.ndarray, d: int) -> tuple[float, float]:
    """Every cut between distinct scores, one at a time: the (share_in, share_out) of largest |TPR - FPR| in the
    direction of the AUROC."""
    mine, rest = scores[labels == d], scores[labels != d]
    sign = 1 if one_vs_rest_auroc(scores[:, None], labels, int(labels.max()) + 1)[d, 0] >= 0.5 else -1
    best, out = -np.inf, (np.nan, np.nan)
    for cut in sorted(set(scores.tolist()), reverse=True):
        s_in, s_out = float((mine >= cut).mean()), float((rest >= cut).mean())
        if sign * (s_in - s_out) > best + 1e-12:
            best, out = sign * (s_in - s_out), (s_in, s_out)
    return out


def test_a_known_answer_and_the_reverse_direction():
    scores = np.array([5, 4, 3, 1, 2, 2, 0, 0], dtype=float)[:, None]
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    share_in, share_out, cut = best_cut_shares(scores, labels, 2)
    # dataset 0: at >= 3, 3 of its 4 images against none of the rest; dataset 1 (AUROC 0.125) has it less often:
    # the same cut, 0 of its images against 3 of the rest's 4
    assert share_in[:, 0].tolist() == [0.75, 0.0] and share_out[:, 0].tolist() == [0.0, 0.75]
    assert cut[:, 0].tolist() == [3.0, 3.0]


def test_vectorised_shares_equal_a_plain_loop_with_ties_and_three_classes():
    rng = np.random.default_rng(3)
    scores = np.round(rng.normal(size=(60, 5)), 1)  # ties
    labels = np.repeat([0, 1, 2], [25, 20, 15])
    scores[labels == 1, 2] += 1.0
    share_in, share_out, _ = best_cut_shares(scores, labels, 3)
    for d in range(3):
        for h in range(5):
            assert np.allclose((share_in[d, h], share_out[d, h]), _loop(scores[:, h], labels, d)), (d, h)


def test_a_class_without_images_gives_nan():
    share_in, share_out, cut = best_cut_shares(np.arange(4.0)[:, None], np.array([0, 0, 1, 1]), 3)
    assert np.isnan(share_in[2, 0]) and np.isnan(share_out[2, 0]) and np.isnan(cut[2, 0])
    assert share_in[1, 0] == 1.0 and share_out[1, 0] == 0.0


class KeywordEncoder:
    """A text encoder for tests: a text's vector counts the words "red" and "star" (L2-normalised)."""

    identity = {"name": "keywords"}

    def check_ready(self) -> None:
        pass

    def embed_texts(self, texts):
        x = np.array([[t.count("red") + 0.01, t.count("star") + 0.01] for t in texts], dtype=np.float64)
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_score_hypotheses_carries_the_shares_into_the_ranked_list_and_json():
    from types import SimpleNamespace

    from describe.differences import Hypothesis, score_hypotheses

    # scored: dataset 0 has 4 red captions of 5, dataset 1 one of 5
    captions = ["red"] * 4 + ["star"] + ["red"] + ["star"] * 4
    table = SimpleNamespace(datasets=["a", "b"], sample_ids=[f"s{i}" for i in range(10)], labels=np.repeat([0, 1], 5),
                            image_paths=[""] * 10, sha1s=None, captions=captions, role=np.array(["score"] * 10))
    result = score_hypotheses(table, [Hypothesis("red"), Hypothesis("star")], KeywordEncoder(), n_perm=50)
    top = result.ranked("a")[0]
    assert top["text"] == "red" and (top["share_in"], top["share_out"]) == (0.8, 0.2)
    assert result.as_dict()["share_in"] == [[0.8, 0.2], [0.2, 0.8]]
