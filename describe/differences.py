"""Ranked, tested differences between datasets: hypotheses proposed on one split, scored on another.

1. **Proposers** (`Proposals`) work on the ``role == "propose"`` images only:
   * `propose_with_llm`: for each dataset, a seeded sample of its captions against a sample of the other
     datasets' captions, and a text generator asked for short phrases ("images that contain ...") more common
     in the first group. Unparseable output is retried once with a stricter prompt, then recorded in
     ``failures`` and never shown as a hypothesis.
   * `propose_from_statistics`: no model; distinctive words (word, z) and object presence ratios (class, ratio)
     per dataset, as the language and object analyses computed them, become "a photo with a {word}" and
     "a photo that contains a {class}"; the word or ratio travels with the hypothesis as its support.
2. **Near-duplicates** are merged by the cosine similarity of their embeddings (`merge_near_duplicates`): the
   first (best-ranked) of a group is kept and lists the others.
3. **Scoring** (`score_hypotheses`) works on the ``role == "score"`` images only, disjoint from the proposal
   split, so a hypothesis is never tested on the images it was read from (VisDiff ranks on its proposal set).
   For every dataset one-vs-rest and every hypothesis: the AUROC of the similarity between image and
   hypothesis (image-text with a `ClipEncoder`, else caption-text with the sentence encoder). AUROC comes from
   ranks (`one_vs_rest_auroc`: Mann-Whitney U over average ranks, ties counted half), for all datasets and
   hypotheses at once.
4. **Significance** (`permutation_test`): the labels are permuted (seeded) and every AUROC recomputed from the
   same ranks (they do not depend on the labels), giving p = (1 + #null at least as extreme) / (1 + n_perm)
   per (dataset, hypothesis); `benjamini_hochberg` turns all of them into q-values together.
5. **Output** (`Differences`): the dataset x hypothesis effect matrix (AUROC - 0.5), p, q, the shares of the
   dataset's and the rest's images above the best-separating similarity cut (`best_cut_shares`), a ranked list per
   dataset, and evidence per claim: the top-k images of the dataset by similarity (sample ids) and the
   proposer's support (words, object ratios, the captions it read).

The LLM is any object with ``generate(prompts, max_new_tokens, stage=...)`` returning items with ``.text`` and
``.failed`` (`describe.llm.CachedGenerator` is one); this module does not import it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from bias.core.errors import DataError
from bias.core.seeding import derive_seed
from describe.phrases import is_content
from describe.tags import with_article

PROPOSE, SCORE = "propose", "score"
ALTERNATIVES = ("two-sided", "greater", "less")
HYPOTHESIS_PREFIX = "images that contain"
WORD_TEMPLATE = "{word}"     # a caption phrase as it is ("white background", "seven/eight small shapes")
OBJECT_TEMPLATE = "{name}"    # a class name with its article ("an animal")
#: the example answers of the strict proposal prompt: an LLM that copies them proposed nothing
PROMPT_EXAMPLES = ("a dog on a beach", "people in a kitchen")
#: the prefixes an LLM line may start with (the concept follows); the first is the one asked for
_PREFIX = re.compile(r"^(?:images?|photos?|pictures?)\s+(?:that|which)\s+(?:contains?|shows?|has|have|depicts?)\s+",
                     re.IGNORECASE)
_LIST_MARK = re.compile(r"^\s*(?:[-*\u2022]+|\(?\d{1,2}[.):]|[a-z][.)])\s*")
_MAX_WORDS = 16


# --- the generator contract (describe.llm provides one; not imported here) -----------------------------

class GenerationLike(Protocol):
    """One generation: its text, and why it failed (None when it did not)."""

    text: str
    failed: str | None


class TextGeneratorLike(Protocol):
    """A text generator: one generation per prompt, greedy and cached (describe.llm.CachedGenerator)."""

    def generate(self, prompts: list[str], max_new_tokens: int, stage: str = ...) -> list[GenerationLike]: ...


class EncoderLike(Protocol):
    """An encoder of `describe.similarity`: L2-normalised text embeddings (CLIP ones embed images too)."""

    identity: dict[str, Any]

    def check_ready(self) -> None: ...

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray: ...


class TableLike(Protocol):
    """The fields of `describe.inputs.DescribeInputs` this module reads."""

    datasets: list[str]
    sample_ids: list[str]
    labels: np.ndarray
    image_paths: list[str]
    sha1s: np.ndarray
    captions: list[str | None]
    role: np.ndarray


# --- hypotheses and proposals -------------------------------------------------------------------------

@dataclass
class Hypothesis:
    """A testable phrase, where it came from and what supported it.

    `source`: "llm", "words", "objects" or "given"; `dataset`: the dataset it was proposed for (None: none);
    `support`: the proposer's evidence (a word and its z, a class and its ratio, the captions an LLM read);
    `merged`: the near-duplicates folded into it (text, source, dataset, similarity).
    """

    text: str
    source: str = "given"
    dataset: str | None = None
    support: dict[str, Any] = field(default_factory=dict)
    merged: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Proposals:
    """What a proposer produced: hypotheses (best first per dataset), failures, and what it read."""

    hypotheses: list[Hypothesis]
    failures: list[dict[str, Any]] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"hypotheses": [asdict(h) for h in self.hypotheses], "failures": self.failures, "info": self.info}


def _caption_sample(captions: Sequence[str | None], positions: np.ndarray, n: int, rng: np.random.Generator
                    ) -> list[str]:
    usable = [int(i) for i in positions if captions[int(i)] is not None and captions[int(i)].strip()]
    chosen = rng.permutation(len(usable))[:n]
    return [" ".join(captions[usable[int(j)]].split()) for j in sorted(chosen)]


def propose_prompt(group: Sequence[str], rest: Sequence[str], n_hypotheses: int, strict: bool = False) -> str:
    """The proposal prompt: captions of group A and of group B, asking for phrases more common in A."""
    lines = ["Below are captions of images from two groups, A and B.", "", "Group A:"]
    lines += [f"- {c}" for c in group]
    lines += ["", "Group B:"]
    lines += [f"- {c}" for c in rest]
    lines += ["", f"List {n_hypotheses} short phrases describing what the images of group A show more often than "
              "the images of group B. Write one phrase per line, each starting with "
              f'"{HYPOTHESIS_PREFIX}".']
    if strict:
        lines += [f"Answer with exactly {n_hypotheses} lines and nothing else, for example:",
                  f"1. {HYPOTHESIS_PREFIX} a dog on a beach", f"2. {HYPOTHESIS_PREFIX} people in a kitchen"]
    return "\n".join(lines)


def parse_hypotheses(text: str, limit: int | None = None) -> list[str]:
    """Phrases in a generator's answer, as "images that contain <concept>", in order, without repeats.

    A line counts when it starts (after a list mark such as "1." or "-") with "images that contain" or a
    close variant ("photos which show", ...); its concept must be 1-16 words. Anything else (preambles,
    explanations, empty concepts) is ignored.
    """
    found: list[str] = []
    for raw in text.splitlines():
        line = _LIST_MARK.sub("", raw.strip()).strip().strip("\"'`*").strip()
        match = _PREFIX.match(line)
        if not match:
            continue
        concept = line[match.end():].strip().rstrip(".;,:!").strip().strip("\"'`*").strip()
        concept = " ".join(concept.split()).lower()
        if not concept or len(concept.split()) > _MAX_WORDS or not is_content(concept) or concept in PROMPT_EXAMPLES:
            continue  # empty, too long, only function or number words, or the prompt's own example
        phrase = f"{HYPOTHESIS_PREFIX} {concept}"
        if phrase not in found:
            found.append(phrase)
    return found[:limit] if limit else found


def propose_with_llm(generator: TextGeneratorLike, captions: Sequence[str | None], labels: np.ndarray,
                     datasets: Sequence[str], role: np.ndarray, *, n_captions: int = 30, n_hypotheses: int = 5,
                     max_new_tokens: int = 200, seed: int = 0, stage: str = "differences.propose") -> Proposals:
    """Hypotheses per dataset from an LLM reading captions of the ``role == "propose"`` images only.

    Per dataset: up to `n_captions` of its captions and up to `n_captions` of the others' (seeded samples, the
    other datasets in equal parts);
    one prompt each, all in one `generate` call; those without a parseable answer (or whose generation
    failed) are asked again once with a stricter prompt; what still fails is in ``failures``.
    """
    labels = np.asarray(labels)
    propose = np.asarray(role) == PROPOSE
    prompts, samples = {}, {}
    no_caption = [int(i) for i in np.flatnonzero(propose) if captions[int(i)] is None]
    for d, name in enumerate(datasets):
        rng = np.random.default_rng(derive_seed(seed, f"describe.propose.{name}"))
        group = _caption_sample(captions, np.flatnonzero(propose & (labels == d)), n_captions, rng)
        # the others in equal parts (a large dataset does not drown the small ones), in dataset order
        share = -(-n_captions // max(1, len(datasets) - 1))
        rest = [c for o in range(len(datasets)) if o != d
                for c in _caption_sample(captions, np.flatnonzero(propose & (labels == o)), share, rng)][:n_captions]
        samples[name] = {"captions": len(group), "other_captions": len(rest)}
        if group and rest:
            prompts[name] = (group, rest)
    failures = [{"dataset": name, "stage": stage, "attempts": 0, "reasons": ["no captions to compare"],
                 "output": ""} for name in datasets if name not in prompts]
    answers: dict[str, list[str]] = {}
    reasons: dict[str, list[str]] = {name: [] for name in prompts}
    last: dict[str, str] = {}
    pending = list(prompts)
    for attempt in (0, 1):
        if not pending:
            break
        texts = [propose_prompt(*prompts[name], n_hypotheses, strict=attempt == 1) for name in pending]
        generations = generator.generate(texts, max_new_tokens, stage=stage)
        if len(generations) != len(texts):
            raise RuntimeError(f"the generator returned {len(generations)} generations for {len(texts)} prompts")
        still = []
        for name, gen in zip(pending, generations):
            last[name] = gen.text or ""
            parsed = [] if gen.failed else parse_hypotheses(gen.text or "", n_hypotheses)
            if parsed:
                answers[name] = parsed
            else:
                copied = not gen.failed and any(e in (gen.text or "") for e in PROMPT_EXAMPLES)
                reasons[name].append(f"generation failed: {gen.failed}" if gen.failed else
                                     "only the prompt's own examples" if copied else
                                     f'no line starting with "{HYPOTHESIS_PREFIX}"')
                still.append(name)
        pending = still
    failures += [{"dataset": name, "stage": stage, "attempts": 2, "reasons": reasons[name],
                  "output": last.get(name, "")[:500]} for name in pending]
    hypotheses = [Hypothesis(text, "llm", name, {"captions": samples[name]["captions"],
                                                 "other_captions": samples[name]["other_captions"], "rank": r + 1})
                  for name in datasets if name in answers for r, text in enumerate(answers[name])]
    info = {"seed": int(seed), "n_captions": int(n_captions), "n_hypotheses": int(n_hypotheses),
            "max_new_tokens": int(max_new_tokens), "samples": samples, "propose_images": int(propose.sum()),
            "propose_images_without_caption": len(no_caption), "retried": sorted(n for n, r in reasons.items() if r)}
    return Proposals(hypotheses, failures, info)


def propose_from_statistics(words: Mapping[str, Sequence[tuple[Any, ...]]] | None = None,
                            objects: Mapping[str, Sequence[tuple[Any, ...]]] | None = None, *, top_k: int = 5,
                            min_z: float = 1.96, min_ratio: float = 1.0, word_template: str = WORD_TEMPLATE,
                            object_template: str = OBJECT_TEMPLATE) -> Proposals:
    """Hypotheses without a model, from the distinctive phrases and object classes of each dataset.

    `words`: dataset -> [(phrase, z)] or [(phrase, z, extra support)] (log-odds z-scores: `describe.phrases`,
    `describe.language`); phrases with z > `min_z` that name something (`describe.phrases.is_content`: never a
    bare number or function word) and are not the name of a class proposed for the same dataset (the tags
    captioner writes class names into captions), the `top_k` largest, written as they are. `objects`: dataset ->
    [(class, ratio)] or [(class, ratio, z)] (its presence share over the rest's; with z, ranked by z, else by
    ratio); classes with ratio > `min_ratio`, the `top_k` best, written with their article ("an animal").
    Underscores in class names become spaces. The phrase and z, or class and ratio, are the hypothesis's support.
    """
    hypotheses: list[Hypothesis] = []
    considered = {"words": 0, "objects": 0}
    classes = {name: {str(t[0]).replace("_", " ").lower() for t in items} for name, items in (objects or {}).items()}
    for name, items in (words or {}).items():
        considered["words"] += len(items)
        kept = sorted(((str(t[0]), float(t[1]), dict(t[2]) if len(t) > 2 else {}) for t in items
                       if np.isfinite(t[1]) and t[1] > min_z and is_content(str(t[0]))
                       and str(t[0]).lower() not in classes.get(name, ())),  # the class says it, with its article
                      key=lambda t: -t[1])
        hypotheses += [Hypothesis(word_template.format(word=w), "words", name, {"word": w, "z": z, **extra})
                       for w, z, extra in kept[:top_k]]
    for name, items in (objects or {}).items():
        considered["objects"] += len(items)
        rows = [(str(t[0]), float(t[1]), float(t[2]) if len(t) > 2 else float(t[1])) for t in items]
        kept = sorted(((c, r, k) for c, r, k in rows if np.isfinite(r) and r > min_ratio and is_content(c.replace("_", " "))),
                      key=lambda t: -t[2])
        hypotheses += [Hypothesis(object_template.format(name=with_article(c)), "objects", name,
                                  {"class": c, "ratio": r, **({"z": k} if k != r else {})}) for c, r, k in kept[:top_k]]
    info = {"top_k": top_k, "min_z": min_z, "min_ratio": min_ratio, "considered": considered}
    return Proposals(hypotheses, [], info)


# --- near-duplicates ------------------------------------------------------------------------------------

def merge_near_duplicates(hypotheses: Sequence[Hypothesis], embeddings: np.ndarray, threshold: float = 0.9
                          ) -> list[Hypothesis]:
    """The hypotheses without near-duplicates, in order: each one whose cosine similarity to an already kept
    one is >= `threshold` (or whose text is the same) is folded into the most similar kept one, which lists
    it in ``merged``. `embeddings` [H, d] need not be normalised."""
    if len(hypotheses) != len(embeddings):
        raise ValueError(f"merge_near_duplicates: {len(hypotheses)} hypotheses, {len(embeddings)} embeddings")
    x = np.asarray(embeddings, dtype=np.float64)
    x = x / np.clip(np.linalg.norm(x, axis=1, keepdims=True), 1e-12, None)
    kept: list[int] = []
    out: list[Hypothesis] = []
    for i, h in enumerate(hypotheses):
        text = " ".join(h.text.lower().split())
        if kept:
            sims = x[kept] @ x[i]
            same = [j for j, k in enumerate(kept) if " ".join(hypotheses[k].text.lower().split()) == text]
            best = same[0] if same else int(np.argmax(sims))
            if same or sims[best] >= threshold:
                out[best].merged.append({"text": h.text, "source": h.source, "dataset": h.dataset,
                                         "support": h.support, "similarity": round(float(sims[best]), 4)})
                out[best].merged.extend(h.merged)
                continue
        kept.append(i)
        out.append(Hypothesis(h.text, h.source, h.dataset, dict(h.support), list(h.merged)))
    return out


# --- AUROC, permutations, BH ------------------------------------------------------------------------------

def column_ranks(scores: np.ndarray) -> np.ndarray:
    """Average ranks (1..n, ties share their mean rank) of each column of [n, H] scores."""
    from scipy.stats import rankdata

    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim == 1:
        scores = scores[:, None]
    return rankdata(scores, axis=0, method="average")


def _auroc_from_rank_sums(rank_sums: np.ndarray, n_pos: np.ndarray, n: int) -> np.ndarray:
    """AUROC from the rank sums of the positives: (R - n1 (n1 + 1) / 2) / (n1 n0); NaN without both sides.
    `rank_sums` [..., D, H], `n_pos` [D]."""
    n1 = n_pos.astype(np.float64)[:, None]
    n0 = n - n1
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = (rank_sums - n1 * (n1 + 1) / 2) / (n1 * n0)
    return np.where((n1 > 0) & (n0 > 0), auc, np.nan)


def one_vs_rest_auroc(scores: np.ndarray, labels: np.ndarray, n_classes: int,
                      ranks: np.ndarray | None = None) -> np.ndarray:
    """[D, H]: for each class d one-vs-rest and each score column h, the AUROC of the score for "is d".

    The Mann-Whitney U of `scipy.stats.mannwhitneyu` divided by n1 n0 (ties count half), computed from
    average ranks: all D x H rank sums are one matrix product with the one-hot labels. Kept over a loop of
    ``mannwhitneyu`` / ``sklearn.metrics.roc_auc_score`` calls because it is 4x / 20x faster and
    `permutation_test` reuses the same ranks (`benchmarks/bench_stats.py`, benchmarks/results/describe.md);
    tests check it against both.
    """
    labels = np.asarray(labels, dtype=np.int64)
    ranks = column_ranks(scores) if ranks is None else ranks
    onehot = np.eye(n_classes, dtype=np.float64)[labels]  # [n, D]
    return _auroc_from_rank_sums(onehot.T @ ranks, onehot.sum(0), len(labels))


def _extremeness(auc: np.ndarray, alternative: str) -> np.ndarray:
    if alternative == "two-sided":
        return np.abs(auc - 0.5)
    return auc - 0.5 if alternative == "greater" else 0.5 - auc


def permutation_test(scores: np.ndarray, labels: np.ndarray, n_classes: int, n_perm: int = 1000, seed: int = 0,
                     alternative: str = "two-sided", max_cells: int = 20_000_000) -> tuple[np.ndarray, np.ndarray]:
    """(AUROC [D, H], p [D, H]) under a label-permutation null.

    The ranks are computed once; each permutation only moves the labels, so all D x H AUROCs of a chunk of
    permutations are one matrix product (one-hot labels [P, n, D] with ranks [n, H]). p = (1 + #{null at least
    as extreme as observed}) / (1 + n_perm); extreme is |AUROC - 0.5| for "two-sided", AUROC - 0.5 for
    "greater", 0.5 - AUROC for "less". The permutations are drawn from `seed`.

    The same p-values as `scipy.stats.permutation_test` on the ranks with statistic |AUROC - 0.5| and
    ``alternative="greater"`` (tested). Kept because it shares one permutation across all D one-vs-rest
    splits and does a chunk of permutations as one matrix product: 3-5x faster than scipy at 1,500 scored
    images and 25x at 15,000 (D = 3, H = 30, 1,000 permutations; `benchmarks/bench_stats.py`).
    """
    if alternative not in ALTERNATIVES:
        raise ValueError(f"alternative: expected one of {', '.join(ALTERNATIVES)}, got {alternative!r}")
    if n_perm < 1:
        raise ValueError(f"n_perm: expected >= 1, got {n_perm}")
    labels = np.asarray(labels, dtype=np.int64)
    ranks = column_ranks(scores)
    n, h = ranks.shape
    n_pos = np.bincount(labels, minlength=n_classes)
    observed = one_vs_rest_auroc(scores, labels, n_classes, ranks)
    obs_stat = _extremeness(observed, alternative)
    exceed = np.zeros((n_classes, h), dtype=np.int64)
    rng = np.random.default_rng(seed)
    chunk = max(1, int(max_cells // max(1, n * max(n_classes, h))))
    eye = np.eye(n_classes, dtype=np.float64)
    done = 0
    while done < n_perm:
        p = min(chunk, n_perm - done)
        order = np.argsort(rng.random((p, n)), axis=1)
        onehot = eye[labels[order]]                                  # [p, n, D]
        null = _auroc_from_rank_sums(np.matmul(onehot.transpose(0, 2, 1), ranks), n_pos, n)  # [p, D, H]
        exceed += (_extremeness(null, alternative) >= obs_stat - 1e-12).sum(0)
        done += p
    pvalues = (1.0 + exceed) / (1.0 + n_perm)
    return observed, np.where(np.isnan(observed), np.nan, pvalues)


def best_cut_shares(scores: np.ndarray, labels: np.ndarray, n_classes: int, auroc: np.ndarray | None = None
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(share_in [D, H], share_out [D, H], cut [D, H]): for each class d one-vs-rest and each score column h, the
    share of d's images and of the rest's with a score >= the cut that separates them best (the ROC point of
    largest TPR - FPR, Youden's J; the smallest when AUROC < 0.5, so the shares then say how much rarer it is).

    This is how "62% vs 9% of images" is read off a continuous similarity: the cut is chosen on the same images,
    so the gap is the ROC curve's best point, descriptive and optimistic; AUROC and its permutation p-value are
    the test. Cuts lie between distinct scores only (tied images fall on the same side). NaN without both sides.
    """
    x = np.asarray(scores, dtype=np.float64)
    x = x[:, None] if x.ndim == 1 else x
    labels = np.asarray(labels, dtype=np.int64)
    n, h = x.shape
    order = np.argsort(-x, axis=0, kind="stable")                          # [n, H], largest first
    sorted_x = np.take_along_axis(x, order, axis=0)
    n_pos = np.bincount(labels, minlength=n_classes).astype(np.float64)   # [D]
    n_neg = n - n_pos
    eye = np.eye(n_classes, dtype=np.int32)
    above = np.cumsum(eye[labels[order]], axis=0, dtype=np.int64)          # [n, H, D]: d's images in the top k+1
    total = np.arange(1, n + 1, dtype=np.float64)[:, None, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        tpr = above / n_pos
        fpr = (total - above) / n_neg
    last = np.ones((1, h), dtype=bool)
    valid = np.concatenate([sorted_x[1:] != sorted_x[:-1], last], axis=0)  # [n, H]: a cut after row k
    if auroc is None:
        auroc = one_vs_rest_auroc(x, labels, n_classes)
    sign = np.where(np.nan_to_num(np.asarray(auroc, dtype=np.float64), nan=0.5) >= 0.5, 1.0, -1.0).T  # [H, D]
    j = np.where(valid[:, :, None], sign[None] * (tpr - fpr), -np.inf)    # [n, H, D]
    best = np.argmax(np.nan_to_num(j, nan=-np.inf), axis=0)               # [H, D]
    share_in = np.take_along_axis(tpr, best[None], axis=0)[0].T
    share_out = np.take_along_axis(fpr, best[None], axis=0)[0].T
    cut = np.stack([sorted_x[best[:, d], np.arange(h)] for d in range(n_classes)])  # [D, H]
    ok = ((n_pos > 0) & (n_neg > 0))[:, None]
    return (np.where(ok, share_in, np.nan), np.where(ok, share_out, np.nan), np.where(ok, cut, np.nan))


def benjamini_hochberg(pvalues: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg q-values of all finite p-values of an array together (same shape; NaN stays NaN):
    `scipy.stats.false_discovery_control` (``method="bh"``) over the finite entries."""
    from scipy.stats import false_discovery_control

    p = np.asarray(pvalues, dtype=np.float64)
    q = np.full(p.shape, np.nan)
    finite = np.isfinite(p)
    if finite.any():
        q[finite] = false_discovery_control(p[finite], method="bh")
    return q


# --- scoring ------------------------------------------------------------------------------------------------

@dataclass
class Differences:
    """The tested differences: D x H matrices over `datasets` x `hypotheses`, and what stands behind them.

    `effect` = AUROC - 0.5 (positive: the dataset's images match the hypothesis more than the rest's);
    `similarity` [m, H] and `scored_ids`/`scored_labels` [m]: the scored images; `skipped`: score images left
    out, with the reason; `evidence[d][h]`: the top-k sample ids of dataset d by similarity to hypothesis h;
    `method`: similarity kind, encoder identity, seed, permutations, alternative, alpha.
    """

    datasets: list[str]
    hypotheses: list[Hypothesis]
    auroc: np.ndarray
    p: np.ndarray
    q: np.ndarray
    similarity: np.ndarray
    scored_ids: list[str]
    scored_labels: np.ndarray
    skipped: list[dict[str, Any]]
    evidence: list[list[list[str]]]
    method: dict[str, Any]
    proposal_failures: list[dict[str, Any]] = field(default_factory=list)
    share_in: np.ndarray | None = None
    share_out: np.ndarray | None = None

    @property
    def effect(self) -> np.ndarray:
        return self.auroc - 0.5

    def ranked(self, dataset: str | int) -> list[dict[str, Any]]:
        """One dataset's hypotheses by effect, largest first (NaN last; ties by p, then order)."""
        d = dataset if isinstance(dataset, int) else self.datasets.index(dataset)
        eff = self.effect[d]
        keys = sorted(range(len(self.hypotheses)),
                      key=lambda h: (np.isnan(eff[h]), -np.nan_to_num(eff[h], nan=0.0), np.nan_to_num(self.p[d, h],
                                                                                                    nan=2.0), h))
        alpha = self.method["alpha"]
        return [{"rank": r + 1, "hypothesis": h, "text": self.hypotheses[h].text,
                 "source": self.hypotheses[h].source, "proposed_for": self.hypotheses[h].dataset,
                 "auroc": _num(self.auroc[d, h]), "effect": _num(eff[h]), "p": _num(self.p[d, h]),
                 "q": _num(self.q[d, h]), **self._shares(d, h), "significant": bool(np.isfinite(self.q[d, h]) and self.q[d, h] < alpha),
                 "evidence": {"top_images": self.evidence[d][h], "support": self.hypotheses[h].support,
                              "merged": self.hypotheses[h].merged}}
                for r, h in enumerate(keys)]

    def _shares(self, d: int, h: int) -> dict[str, float | None]:
        if self.share_in is None or self.share_out is None:
            return {"share_in": None, "share_out": None}
        return {"share_in": _num(self.share_in[d, h]), "share_out": _num(self.share_out[d, h])}

    def similarity_table(self) -> Any:
        """The per-image similarities as an Arrow table: sample_id, dataset, then one column per hypothesis
        (named h0, h1, ... in the order of `hypotheses`; their texts are in the JSON)."""
        import pyarrow as pa

        columns = {"sample_id": pa.array(self.scored_ids, pa.string()),
                   "dataset": pa.array([self.datasets[int(i)] for i in self.scored_labels], pa.string())}
        columns |= {f"h{h}": pa.array(self.similarity[:, h].astype(np.float32)) for h in range(len(self.hypotheses))}
        return pa.table(columns)

    def write(self, folder: str | Path) -> dict[str, Path]:
        """``differences.json`` (`as_dict`) and ``similarity.parquet`` (`similarity_table`) in `folder`."""
        from bias.core.io import write_json, write_parquet_atomic

        folder = Path(folder)
        paths = {"json": folder / "differences.json", "similarity": folder / "similarity.parquet"}
        write_json(self.as_dict(), paths["json"])
        write_parquet_atomic(self.similarity_table(), paths["similarity"])
        return paths

    def as_dict(self) -> dict[str, Any]:
        """Everything but the per-image similarities, JSON-ready."""
        return {"datasets": self.datasets, "hypotheses": [asdict(h) for h in self.hypotheses],
                "effect": _nested(self.effect), "auroc": _nested(self.auroc), "p": _nested(self.p),
                "q": _nested(self.q),
                **({} if self.share_in is None else {"share_in": _nested(self.share_in),
                                                     "share_out": _nested(self.share_out)}),
                "ranked": {name: self.ranked(d) for d, name in enumerate(self.datasets)},
                "scored": len(self.scored_ids), "skipped": self.skipped, "method": self.method,
                "proposal_failures": self.proposal_failures}


def _num(x: float) -> float | None:
    return None if not np.isfinite(x) else float(x)


def _nested(a: np.ndarray) -> list:
    return [[_num(v) for v in row] for row in np.asarray(a, dtype=np.float64)]


def hypothesis_similarity(table: TableLike, hypotheses: Sequence[Hypothesis], encoder: EncoderLike
                          ) -> tuple[np.ndarray, np.ndarray, list[dict[str, Any]], str]:
    """Similarity [m, H] of the usable score images to each hypothesis, their positions in the table, the
    skipped score images (sample id, reason) and the similarity kind ("image-text" or "caption-text")."""
    role = np.asarray(table.role)
    score = np.flatnonzero(role == SCORE)
    texts = encoder.embed_texts([h.text for h in hypotheses])
    skipped: list[dict[str, Any]] = []
    if hasattr(encoder, "embed_images"):
        kind = "image-text"
        result = encoder.embed_images([table.image_paths[i] for i in score],
                                      digests=[table.sha1s[i] for i in score] if table.sha1s is not None else None)
        vectors, bad = result.vectors, result.failed
        skipped += [{"sample_id": table.sample_ids[score[j]], "reason": reason} for j, reason in sorted(bad.items())]
        usable = np.array([j not in bad for j in range(len(score))], dtype=bool)
    else:
        kind = "caption-text"
        usable = np.array([table.captions[i] is not None for i in score], dtype=bool)
        skipped += [{"sample_id": table.sample_ids[i], "reason": "no caption"} for i in score[~usable]]
        vectors = np.full((len(score), texts.shape[1]), np.nan, dtype=np.float32)
        if usable.any():
            vectors[usable] = encoder.embed_texts([table.captions[i] for i in score[usable]])
    return vectors[usable] @ texts.T, score[usable], skipped, kind


def score_hypotheses(table: TableLike, hypotheses: Sequence[Hypothesis], encoder: EncoderLike, *,
                     n_perm: int = 1000, seed: int = 0, alternative: str = "two-sided", alpha: float = 0.05,
                     top_k: int = 6, proposal_failures: Sequence[dict[str, Any]] = ()) -> Differences:
    """Scores every hypothesis against every dataset (one-vs-rest) on the ``role == "score"`` images.

    The permutation seed is derived from `seed` (recorded in ``method``); q-values are BH over all D x H
    p-values. Score images without a caption (caption-text) or unreadable (image-text) are left out and
    listed in ``skipped``. Raises `DataError` with no hypotheses or no usable score image.
    """
    if not hypotheses:
        raise DataError("describe.differences: no hypotheses to score (every proposer failed or found nothing)")
    encoder.check_ready()
    sim, positions, skipped, kind = hypothesis_similarity(table, hypotheses, encoder)
    if not len(positions):
        raise DataError(f"describe.differences: no usable score image ({len(skipped)} skipped: "
                        f"{', '.join(sorted({s['reason'] for s in skipped})[:3])})")
    labels = np.asarray(table.labels, dtype=np.int64)[positions]
    d_count = len(table.datasets)
    perm_seed = derive_seed(seed, "describe.differences.permutation")
    auroc, p = permutation_test(sim, labels, d_count, n_perm, perm_seed, alternative)
    q = benjamini_hochberg(p)
    share_in, share_out, _ = best_cut_shares(sim, labels, d_count, auroc)
    ids = [table.sample_ids[int(i)] for i in positions]
    evidence = []
    for d in range(d_count):
        mine = np.flatnonzero(labels == d)
        order = np.argsort(-sim[mine], axis=0, kind="stable")[:top_k]  # [k, H]
        evidence.append([[ids[int(mine[j])] for j in order[:, h]] for h in range(len(hypotheses))])
    counts = np.bincount(labels, minlength=d_count)
    method = {"similarity": kind, "encoder": encoder.identity, "seed": int(seed), "permutation_seed": perm_seed,
              "n_perm": int(n_perm), "alternative": alternative, "alpha": float(alpha), "top_k": int(top_k),
              "correction": "benjamini-hochberg over all datasets x hypotheses",
              "scored_per_dataset": {name: int(c) for name, c in zip(table.datasets, counts)}}
    return Differences(list(table.datasets), list(hypotheses), auroc, p, q, sim, ids, labels, skipped, evidence,
                       method, list(proposal_failures), share_in, share_out)


def find_differences(table: TableLike, proposals: Sequence[Proposals], encoder: EncoderLike, *,
                     merge_threshold: float = 0.9, merge_encoder: EncoderLike | None = None, n_perm: int = 1000,
                     seed: int = 0, alternative: str = "two-sided", alpha: float = 0.05, top_k: int = 6
                     ) -> Differences:
    """The whole analysis: the proposers' hypotheses (in the order given), near-duplicates merged by the
    text embeddings of `merge_encoder` (default `encoder`), then `score_hypotheses`."""
    hypotheses = [h for prop in proposals for h in prop.hypotheses]
    failures = [f for prop in proposals for f in prop.failures]
    if not hypotheses:
        raise DataError("describe.differences: no hypotheses to score; proposer failures: "
                        f"{failures[:3] if failures else 'none (no proposer ran)'}")
    merger = merge_encoder or encoder
    merged = merge_near_duplicates(hypotheses, merger.embed_texts([h.text for h in hypotheses]), merge_threshold)
    result = score_hypotheses(table, merged, encoder, n_perm=n_perm, seed=seed, alternative=alternative, alpha=alpha,
                              top_k=top_k, proposal_failures=failures)
    result.method["merge_threshold"] = float(merge_threshold)
    result.method["proposed"] = len(hypotheses)
    return result
