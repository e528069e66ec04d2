"""Readable phrases to propose as differences: caption n-grams without function words, number groups, class names.

A finding is read by a person, so what the statistics proposer puts forward must be a phrase:

* **caption n-grams** (`caption_phrases`): each caption is cut at function words (`describe.language.STOP_WORDS`
  plus `FILLER`: "including", "kinds", ...) and punctuation into runs of content words; every 1-3 word n-gram
  inside a run is a candidate ("white background", "small shapes"). A candidate that is only number words or
  filler is never one. Number words are grouped: "seven small shapes", "eight small shapes" and "eleven small
  shapes" are one candidate, written "seven/eight/eleven small shapes" (or "five to twelve small shapes" when
  more than `MAX_LISTED` numbers occur), present in a caption when any member is.
* **class names** (`class_phrase`): "an animal", "a tabby" (the article by the first letter).

`distinctive_phrases` ranks the candidates of each dataset one-vs-rest by the z of the log odds ratio of "the
caption contains it" (`log_odds_ratio_z`, per phrase on its own 2x2 table), and keeps the `top` above `min_z`,
dropping any whose set of captions is the same as a better one's.
`phrase_present` tells, for new captions, which contain a phrase (the share of images a finding reports).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from describe.language import STOP_WORDS

NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
                "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen",
                "twenty")
NUMBER_VALUE = {w: i for i, w in enumerate(NUMBER_WORDS)}
#: words that carry no trait on their own in captions, besides the stop words (list words, the tags captioner's frame)
FILLER = frozenset("""including include includes kind kinds type types sort sorts various several different other
another also lot lots something thing things""".split())
NUMBER = "<number>"
MAX_N = 3
MAX_LISTED = 4
#: a word (hyphenated compounds and apostrophes kept whole: "even-toed", "ping-pong", "dog's") or one other sign
_TOKEN = re.compile(r"[a-z]+(?:['-][a-z]+)*|[^a-z\s]")


@dataclass(frozen=True)
class Phrase:
    """A candidate: its pattern (number words replaced by `NUMBER`) and the numbers seen in its place."""

    pattern: tuple[str, ...]
    numbers: tuple[int, ...] = ()

    @property
    def text(self) -> str:
        if NUMBER not in self.pattern:
            return " ".join(self.pattern)
        return " ".join(number_group(self.numbers) if w == NUMBER else w for w in self.pattern)


def number_group(values: Iterable[int]) -> str:
    """'seven/eight/eleven' for a few numbers, 'five to twelve' for many, the word itself for one."""
    values = sorted(set(values))
    if len(values) > MAX_LISTED:
        return f"{NUMBER_WORDS[values[0]]} to {NUMBER_WORDS[values[-1]]}"
    return "/".join(NUMBER_WORDS[v] for v in values)


def runs(caption: str) -> list[list[str]]:
    """The runs of content words of a caption (cut at stop words, filler and punctuation), number words kept."""
    out, current = [], []
    for token in _TOKEN.findall(caption.lower()):
        if token.endswith("'s"):
            token = token[:-2]
        if not token[:1].isalpha() or token in STOP_WORDS or token in FILLER or len(token) < 2:
            if current:
                out.append(current)
            current = []
        else:
            current.append(token)
    if current:
        out.append(current)
    return out


def log_odds_ratio_z(with_in: np.ndarray, n_in: int, with_out: np.ndarray, n_out: int) -> np.ndarray:
    """z of the log odds ratio of "has it" in the dataset against the rest, per column (Haldane's +0.5 on every
    cell of the 2x2 table; standard error sqrt(sum 1/cell)). A trait in 1 of 10 images against 0 of 10 gets
    z 0.7; in 8 of 10 against 1 of 10, z 2.7."""
    a, b = np.asarray(with_in, np.float64) + 0.5, n_in - np.asarray(with_in, np.float64) + 0.5
    c, d = np.asarray(with_out, np.float64) + 0.5, n_out - np.asarray(with_out, np.float64) + 0.5
    return np.log(a * d / (b * c)) / np.sqrt(1 / a + 1 / b + 1 / c + 1 / d)


def caption_ngrams(caption: str, max_n: int = MAX_N) -> set[tuple[str, ...]]:
    """Every n-gram (1..max_n words) inside the caption's runs, except those of number words only."""
    found = set()
    for run in runs(caption):
        for n in range(1, max_n + 1):
            for i in range(len(run) - n + 1):
                gram = tuple(run[i:i + n])
                if not all(w in NUMBER_VALUE for w in gram):  # a bare number is never a phrase
                    found.add(gram)
    return found


def pattern_of(gram: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """(the n-gram with its number words replaced by `NUMBER`, the numbers)."""
    return (tuple(NUMBER if w in NUMBER_VALUE else w for w in gram),
            tuple(NUMBER_VALUE[w] for w in gram if w in NUMBER_VALUE))


def caption_phrases(captions: Sequence[str | None], max_n: int = MAX_N) -> tuple[list[Phrase], np.ndarray]:
    """(every n-gram as a `Phrase`, presence [n_captions, n_phrases]) of all captions (None: a row of False)."""
    per = [caption_ngrams(c, max_n) if c else set() for c in captions]
    grams = sorted(set().union(*per)) if per else []
    col = {g: j for j, g in enumerate(grams)}
    present = np.zeros((len(captions), len(grams)), dtype=bool)
    for i, found in enumerate(per):
        for g in found:
            present[i, col[g]] = True
    return [Phrase(*pattern_of(g)) for g in grams], present


def distinctive_phrases(captions: Sequence[str | None], labels: np.ndarray, datasets: Sequence[str], *,
                        top: int = 8, min_z: float = 1.96, min_count: int = 2) -> dict[str, list[tuple[Phrase, float]]]:
    """Per dataset, its `top` phrases over-represented against the rest (module docstring), best first.

    The statistic is `log_odds_ratio_z` on the number of captions containing the phrase. Number variants of one
    pattern ("seven shapes", "eight shapes") become one candidate per dataset: the variants over-represented in
    it, present in a caption when any of them is."""
    labels = np.asarray(labels, dtype=np.int64)
    has = np.array([c is not None for c in captions], dtype=bool)
    phrases, present = caption_phrases(captions)
    out: dict[str, list[tuple[Phrase, float]]] = {name: [] for name in datasets}
    if not phrases:
        return out
    groups: dict[tuple[str, ...], list[int]] = {}
    for j, p in enumerate(phrases):
        if p.numbers:
            groups.setdefault(p.pattern, []).append(j)
    plain = [j for j, p in enumerate(phrases) if not p.numbers]
    for d, name in enumerate(datasets):
        mine, rest = has & (labels == d), has & (labels != d)
        n_in, n_out = int(mine.sum()), int(rest.sum())
        if not n_in or not n_out:
            continue
        z_all = log_odds_ratio_z(present[mine].sum(0), n_in, present[rest].sum(0), n_out)
        cands: list[tuple[Phrase, np.ndarray]] = [(phrases[j], present[:, j]) for j in plain]
        for pattern, cols in groups.items():
            members = [j for j in cols if z_all[j] > 0]
            if members:
                numbers = tuple(sorted({v for j in members for v in phrases[j].numbers}))
                cands.append((Phrase(pattern, numbers), present[:, members].any(axis=1)))
        columns = np.column_stack([c for _, c in cands])
        z = log_odds_ratio_z(columns[mine].sum(0), n_in, columns[rest].sum(0), n_out)
        index = {c[0]: j for j, c in enumerate(cands)}
        seen: set[bytes] = set()
        # best z first; among equal z (the same captions) the longer phrase reads better: "cluttered background"
        for j in np.lexsort((-np.array([len(c[0].pattern) for c in cands]), -np.round(z, 9))):
            if not np.isfinite(z[j]) or z[j] <= min_z or len(out[name]) >= top:
                break
            if columns[mine, j].sum() < min_count:
                continue
            j = _longest_cover(j, cands, columns, mine, index)
            key = np.packbits(columns[:, j]).tobytes()
            if key in seen:
                continue  # the same captions as a better phrase: it says nothing new
            seen.add(key)
            out[name].append((cands[j][0], float(z[j])))
    return out


#: a longer phrase replaces a shorter one it contains when it is in at least this share of the dataset's
#: captions that hold the shorter ("two large" -> "two large shapes")
COVER = 0.9


def _longest_cover(j: int, cands: list[tuple[Phrase, np.ndarray]], columns: np.ndarray, mine: np.ndarray,
                   index: dict[Phrase, int]) -> int:
    """The longest candidate that contains candidate j's words and covers `COVER` of its captions in the dataset."""
    while True:
        base = cands[j][0]
        n_base = columns[mine, j].sum()
        longer = [k for p, k in index.items() if len(p.pattern) == len(base.pattern) + 1
                  and (p.pattern[1:] == base.pattern or p.pattern[:-1] == base.pattern)
                  and (not base.numbers or set(p.numbers) <= set(base.numbers) or not p.numbers)]
        best = max(longer, key=lambda k: columns[mine, k].sum(), default=None)
        if best is None or columns[mine & columns[:, j], best].sum() < COVER * n_base:
            return j
        j = best


def phrase_present(phrase: Phrase, captions: Sequence[str | None]) -> np.ndarray:
    """Which captions contain the phrase (a numbered phrase: with any of its numbers)."""
    out = np.zeros(len(captions), dtype=bool)
    wanted = set(phrase.numbers)
    for i, c in enumerate(captions):
        if c:
            out[i] = any(pattern == phrase.pattern and (not wanted or set(numbers) <= wanted)
                         for pattern, numbers in map(pattern_of, caption_ngrams(c, len(phrase.pattern))))
    return out


def is_content(text: str) -> bool:
    """Whether a phrase names something: at least one word that is no stop word, filler or number word."""
    return any(r for r in runs(text) if any(w not in NUMBER_VALUE for w in r))
