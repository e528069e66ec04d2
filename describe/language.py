"""Language statistics of captions per dataset: topics (LDA), word clouds and distinctive words (log-odds).

All three read the same words, from one tokenizer (`tokenize`): the caption lower-cased, split into runs of
letters (an apostrophe inside a word is kept, "'s" at its end dropped), words shorter than `MIN_LENGTH` and the
stop words (`STOP_WORDS`: articles, pronouns, prepositions, conjunctions, auxiliary verbs and the like, a
short list written for captions; spelled-out numbers and colours are kept: in captions they are content)
removed. Digits and other symbols separate words and are never part of one.

* `lda_topics`: per dataset, latent Dirichlet allocation (Blei, Ng & Jordan 2003; scikit-learn's
  `LatentDirichletAllocation`, batch variational Bayes, `random_state=seed`) with `n_topics` topics (5) on that
  dataset's captions, each topic given by its `n_words` (5) most probable words and their probabilities.
* `word_cloud`: word frequencies drawn by the `wordcloud` package (its bundled font, `random_state=seed`, so
  the same frequencies and seed give the same pixels), as an HxWx3 uint8 array; `word_cloud_png` as PNG bytes.
* `distinctive_words`: per dataset against all the others (one vs rest), the log-odds ratio with an informative
  Dirichlet prior of Monroe, Colaresi & Quinn ("Fightin' Words", Political Analysis 16(4), 2008, section
  3.5): for word w, group i (the dataset) and j (the rest), counts y, totals n, prior pseudo-counts a_w with
  a_0 = sum a_w,

      delta_w = log((y_iw + a_w) / (n_i + a_0 - y_iw - a_w)) - log((y_jw + a_w) / (n_j + a_0 - y_jw - a_w))
      var_w  ~= 1 / (y_iw + a_w) + 1 / (y_jw + a_w),          z_w = delta_w / sqrt(var_w).

  The prior is informative: a_w = `prior_scale` x (w's count in all captions together), i.e. the pooled
  corpus's word frequencies at a strength of `prior_scale` times its size (1.0 by default), which shrinks rare
  words towards no difference. `log_odds_z` is the formula on count arrays.

Captions that are None are counted and listed (`missing`), never silently dropped; an empty caption (or one of
stop words only) is a document without words.
"""

from __future__ import annotations

import io
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from bias.core.errors import ConfigError

#: words that carry no content in a caption (English function words, auxiliaries and caption boilerplate)
STOP_WORDS = frozenset("""
a about above after again against all also am an and any are as at be been before being below between both but
by can could did do does doing down during each either few for from further had has have having he her here hers
herself him himself his how i if in into is it its itself just me more most my myself neither no nor not of off
on once only or other our ours ourselves out over own same she should so some such than that the their theirs
them themselves then there these they this those through to too under until up upon very was we were what when
where which while who whom whose why will with within without would you your yours yourself yourselves
image picture photo photograph shows showing shown depicts depicting appears seen visible
""".split())
MIN_LENGTH = 2
_WORD = re.compile(r"[a-z]+(?:'[a-z]+)*")


def tokenize(text: str, stop_words: frozenset[str] | set[str] = STOP_WORDS, min_length: int = MIN_LENGTH) -> list[str]:
    """The content words of a text, in order (see the module docstring for the rules)."""
    words = []
    for word in _WORD.findall(text.lower()):
        if word.endswith("'s"):
            word = word[:-2]
        if len(word) >= min_length and word not in stop_words:
            words.append(word)
    return words


def _grouped(captions: Sequence[str | None], labels: np.ndarray,
             datasets: Sequence[str]) -> tuple[dict[str, list[str]], list[dict[str, Any]]]:
    """Captions by dataset name, and the images without a caption ({"index", "dataset"}), in order."""
    labels = np.asarray(labels)
    if len(labels) != len(captions):
        raise ValueError(f"labels: expected {len(captions)} (one per caption), got {len(labels)}")
    groups: dict[str, list[str]] = {name: [] for name in datasets}
    missing = []
    for i, (caption, label) in enumerate(zip(captions, labels.tolist())):
        if not 0 <= label < len(datasets):
            raise ValueError(f"label {label} of caption {i} does not index the {len(datasets)} datasets")
        if caption is None:
            missing.append({"index": i, "dataset": datasets[label]})
        else:
            groups[datasets[label]].append(str(caption))
    return groups, missing


def _check_count(name: str, value: Any, low: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"describe.language: {name} must be an integer >= {low}, got {value!r}")


# --- topics ---------------------------------------------------------------------------------------------

def lda_topics(captions: Sequence[str | None], labels: np.ndarray, datasets: Sequence[str], *, n_topics: int = 5,
               n_words: int = 5, seed: int = 0, max_features: int = 5000, max_iter: int = 30) -> dict[str, Any]:
    """Per dataset: LDA topics of its captions, each as its `n_words` most probable words.

    Returns {"seed", "n_topics", "n_words", "missing": captions that were None, "datasets": {name: {"n_captions",
    "n_words_total", "topics": [{"words": [...], "weights": [...]}] or [] when the dataset has no words}}}.
    The vocabulary of each dataset is its `max_features` most frequent words. Deterministic for a seed.
    """
    from sklearn.decomposition import LatentDirichletAllocation
    from sklearn.feature_extraction.text import CountVectorizer

    for name, value in (("n_topics", n_topics), ("n_words", n_words), ("max_features", max_features),
                        ("max_iter", max_iter)):
        _check_count(name, value)
    groups, missing = _grouped(captions, labels, datasets)
    out: dict[str, Any] = {"seed": seed, "n_topics": n_topics, "n_words": n_words, "missing": missing,
                           "datasets": {}}
    for name, texts in groups.items():
        entry: dict[str, Any] = {"n_captions": len(texts), "n_words_total": 0, "topics": []}
        out["datasets"][name] = entry
        if not any(tokenize(t) for t in texts):
            continue
        vectorizer = CountVectorizer(analyzer=tokenize, max_features=max_features)
        counts = vectorizer.fit_transform(texts)
        vocab = vectorizer.get_feature_names_out()
        entry["n_words_total"] = int(counts.sum())
        lda = LatentDirichletAllocation(n_components=n_topics, learning_method="batch", max_iter=max_iter,
                                        random_state=seed)
        lda.fit(counts)
        topic_word = lda.components_ / lda.components_.sum(axis=1, keepdims=True)
        for row in topic_word:
            top = np.argsort(-row, kind="stable")[:n_words]
            entry["topics"].append({"words": [str(vocab[j]) for j in top], "weights": [float(row[j]) for j in top]})
    return out


# --- word clouds ----------------------------------------------------------------------------------------

def word_frequencies(texts: Sequence[str]) -> dict[str, int]:
    """How often each word (`tokenize`) occurs in `texts`, most frequent first (ties by word)."""
    counts = Counter(w for t in texts for w in tokenize(t))
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def word_cloud(frequencies: Mapping[str, float], *, seed: int = 0, width: int = 400, height: int = 200,
               max_words: int = 100, background: str = "white", colormap: str = "viridis") -> np.ndarray:
    """A word cloud of `frequencies` (word -> weight > 0) as HxWx3 uint8 RGB; the same input and seed give the
    same pixels. Raises ValueError when there is no word to draw."""
    from wordcloud import WordCloud

    words = {str(w): float(f) for w, f in frequencies.items() if f > 0}
    if not words:
        raise ValueError("word cloud: no word with a positive frequency to draw")
    cloud = WordCloud(width=width, height=height, max_words=max_words, background_color=background,
                      colormap=colormap, random_state=seed, prefer_horizontal=0.9, normalize_plurals=False)
    return np.asarray(cloud.generate_from_frequencies(words).to_array(), dtype=np.uint8)


def png_bytes(image: np.ndarray) -> bytes:
    """An HxWx3 uint8 RGB array as PNG bytes (Pillow, no metadata)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buf, format="PNG")
    return buf.getvalue()


def word_cloud_png(frequencies: Mapping[str, float], **kwargs: Any) -> bytes:
    """`word_cloud` as PNG bytes."""
    return png_bytes(word_cloud(frequencies, **kwargs))


def dataset_word_clouds(captions: Sequence[str | None], labels: np.ndarray, datasets: Sequence[str], *,
                        seed: int = 0, **kwargs: Any) -> dict[str, Any]:
    """Per dataset: the word cloud of its captions (`word_cloud`, PNG bytes, seeded). Returns {"seed",
    "clouds": {name: PNG bytes}, "without_words": datasets with no word to draw, "missing": captions that were
    None}."""
    groups, missing = _grouped(captions, labels, datasets)
    clouds, empty = {}, []
    for name, texts in groups.items():
        freqs = word_frequencies(texts)
        if freqs:
            clouds[name] = word_cloud_png(freqs, seed=seed, **kwargs)
        else:
            empty.append(name)
    return {"seed": seed, "clouds": clouds, "without_words": empty, "missing": missing}


# --- distinctive words ------------------------------------------------------------------------------------

def log_odds_z(counts_i: np.ndarray, counts_j: np.ndarray, prior: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(delta, z) per word: the log-odds ratio of group i against group j with Dirichlet prior pseudo-counts
    `prior` (Monroe, Colaresi & Quinn 2008; the formula is in the module docstring). Arrays of one length."""
    y_i, y_j, a = (np.asarray(v, dtype=np.float64) for v in (counts_i, counts_j, prior))
    if not y_i.shape == y_j.shape == a.shape or y_i.ndim != 1:
        raise ValueError(f"log-odds: counts and prior must be 1-D of one length, got {y_i.shape}, {y_j.shape}, "
                         f"{a.shape}")
    if (a <= 0).any():
        raise ValueError("log-odds: every prior pseudo-count must be > 0")
    n_i, n_j, a0 = y_i.sum(), y_j.sum(), a.sum()
    delta = (np.log((y_i + a) / (n_i + a0 - y_i - a)) - np.log((y_j + a) / (n_j + a0 - y_j - a)))
    variance = 1.0 / (y_i + a) + 1.0 / (y_j + a)
    return delta, delta / np.sqrt(variance)


def count_table(captions: Sequence[str | None], labels: np.ndarray,
                datasets: Sequence[str]) -> tuple[list[str], np.ndarray, list[dict[str, Any]]]:
    """(vocabulary in sorted order, word counts [n_datasets, n_words], captions that were None)."""
    groups, missing = _grouped(captions, labels, datasets)
    per = [Counter(w for t in groups[name] for w in tokenize(t)) for name in datasets]
    vocab = sorted(set().union(*per)) if per else []
    index = {w: k for k, w in enumerate(vocab)}
    counts = np.zeros((len(datasets), len(vocab)), dtype=np.int64)
    for d, counter in enumerate(per):
        for w, c in counter.items():
            counts[d, index[w]] = c
    return vocab, counts, missing


def distinctive_words(captions: Sequence[str | None], labels: np.ndarray, datasets: Sequence[str], *,
                      top: int = 20, prior_scale: float = 1.0, min_count: int = 1) -> pa.Table:
    """Per dataset, the `top` words most over-represented in its captions against all the others (one vs rest),
    by the z-score of the informative-prior log-odds ratio (`log_odds_z`; prior a_w = prior_scale x pooled count).

    Words counted fewer than `min_count` times in all captions together are left out. Rows: dataset, rank,
    word, z, delta, count_in, count_out; the schema metadata records prior_scale, min_count and how many
    captions were None.
    """
    _check_count("top", top)
    _check_count("min_count", min_count)
    if isinstance(prior_scale, bool) or not isinstance(prior_scale, (int, float)) or prior_scale <= 0:
        raise ConfigError(f"describe.language: prior_scale must be a number > 0, got {prior_scale!r}")
    vocab, counts, missing = count_table(captions, labels, datasets)
    total = counts.sum(axis=0)
    keep = np.flatnonzero(total >= min_count)
    words, counts, total = [vocab[k] for k in keep], counts[:, keep], total[keep]
    out: dict[str, list[Any]] = {k: [] for k in ("dataset", "rank", "word", "z", "delta", "count_in", "count_out")}
    for d, name in enumerate(datasets):
        if not len(words) or len(datasets) < 2:
            break
        rest = total - counts[d]
        delta, z = log_odds_z(counts[d], rest, prior_scale * total)
        for rank, k in enumerate(np.argsort(-z, kind="stable")[:top], start=1):
            out["dataset"].append(name)
            out["rank"].append(rank)
            out["word"].append(words[k])
            out["z"].append(float(z[k]))
            out["delta"].append(float(delta[k]))
            out["count_in"].append(int(counts[d, k]))
            out["count_out"].append(int(rest[k]))
    schema = pa.schema([("dataset", pa.string()), ("rank", pa.int64()), ("word", pa.string()), ("z", pa.float64()),
                        ("delta", pa.float64()), ("count_in", pa.int64()), ("count_out", pa.int64())],
                       metadata={"prior_scale": str(prior_scale), "min_count": str(min_count),
                                 "missing_captions": str(len(missing))})
    return pa.table(out, schema=schema)
