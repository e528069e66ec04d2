"""Five titled themes per dataset, written by an LLM from many captions, by procedural prompting.

The published procedure (an LLM prompted procedurally over many captions writes a per-dataset description,
five titled themes each): per dataset,

1. the captions (missing or empty ones counted and listed, never sent) are shuffled with a seed derived
   from the run seed and the dataset name, and cut into chunks of at most `chunk_size`;
2. the LLM lists the themes of each chunk (stage ``themes.chunk``);
3. the chunk themes are merged, at most `merge_fanin` chunks' themes per prompt, level by level, until one
   prompt merges everything into `n_themes` titled themes (stage ``themes.merge``).

Every answer must follow one simple format, numbered ``Title: one-sentence description`` lines. The parser
(`parse_themes`) tolerates the usual variants (bullets, ``1)``, bold markers, a heading line, a title and its
description on two lines) and rejects what is empty or garbage. An answer that does not parse is asked once
more with a stricter prompt (a different prompt, so a different cache key); if that fails too the step is
recorded in `ThemesResult.failures` with the raw texts and reasons, and nothing of it is shown as content.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from bias.core.errors import ConfigError
from bias.core.seeding import derive_seed
from describe.llm import Generation, TextGenerator, TokenLedger

#: Bumped whenever a prompt or the parser changes (it is in the result; the prompts are in the cache keys).
PROMPT_VERSION = "themes-v1"
CHUNK_STAGE, MERGE_STAGE = "themes.chunk", "themes.merge"
#: Longest caption text sent (characters); longer ones are cut and counted in `DatasetThemes.truncated`.
MAX_CAPTION_CHARS = 400

CHUNK_PROMPT = (
    "Below are {n} image captions from one image dataset.\n\n{captions}\n\n"
    "What themes do these images share? List the {k} most common themes. Answer with exactly {k} numbered "
    "lines and nothing else, each in the form:\n1. Title: one sentence that describes the theme.")
MERGE_PROMPT = (
    "Below are themes found in groups of image captions from one image dataset.\n\n{themes}\n\n"
    "Merge them into the {k} themes that best describe the whole dataset. Answer with exactly {k} numbered "
    "lines and nothing else, each in the form:\n1. Title: one sentence that describes the theme.")
#: Added to a prompt whose first answer did not parse (the retry is a different prompt, so a new cache key).
STRICT_SUFFIX = (
    "\n\nFollow the format strictly: {k} lines, numbered 1 to {k}. Each line is the number, a period, a short "
    "title of two to five words, a colon, and one full sentence. Do not write anything before or after them.")

_PLACEHOLDERS = {"title", "theme", "<title>", "theme title", "short title", "description", "one sentence"}
_ITEM = re.compile(r"^\s*(?:[-*•+]\s+|#{1,6}\s+)?(?:\(?(?:theme\s*)?(\d{1,2})[.):]\s*|\(?(?:theme\s*)?(\d{1,2})\)\s*)?"
                   r"(?P<body>.*\S)\s*$", re.IGNORECASE)
_BULLET = re.compile(r"^\s*(?:[-*•+]\s+|\(?(?:theme\s*)?\d{1,2}[.):]\s+)", re.IGNORECASE)
_SEPARATOR = re.compile(r"\s*(?::|\s[-–—]\s)\s*")
_EMPHASIS = re.compile(r"(\*\*|__|\*|_|`)")


@dataclass(frozen=True)
class Theme:
    """One titled theme: a short title and a one-sentence description."""

    title: str
    description: str


class ThemeParseError(ValueError):
    """An answer that holds no usable themes; the message says why."""


def _clean(text: str) -> str:
    return " ".join(_EMPHASIS.sub("", text).split()).strip(" \t\"'“”.;,-–—")


def _usable(title: str, description: str) -> str | None:
    """Why a (title, description) pair is not a theme, or None when it is one."""
    if not re.search(r"[A-Za-z]", title) or not re.search(r"[A-Za-z]{2}", description):
        return "no words"
    if title.lower() in _PLACEHOLDERS or description.lower() in _PLACEHOLDERS:
        return "a placeholder from the format, not a theme"
    if len(title) > 80 or len(title.split()) > 10:
        return "title too long"
    words = re.findall(r"[A-Za-z']+", description.lower())
    if len(words) < 3:
        return "description shorter than three words"
    if len(words) >= 6 and len(set(words)) / len(words) < 0.34:
        return "description repeats itself"
    if description.lower() == title.lower():
        return "description repeats the title"
    return None


def parse_themes(text: str, expected: int | None = None, minimum: int = 1) -> list[Theme]:
    """The themes in an LLM answer, in order, or `ThemeParseError`.

    Items are lines like ``1. Title: description`` (also ``- ``, ``1)``, ``**Title**: ...``, ``Title -
    description``), or an item line holding only a title followed by a line with its description. Other
    lines (an introduction, a closing remark) are ignored. Repeated titles keep their first occurrence.
    With `expected`, at least that many themes are needed and the first `expected` are returned; else at
    least `minimum`.
    """
    lines = [line for line in (text or "").replace("\r", "").split("\n")]
    themes: list[Theme] = []
    reasons: list[str] = []
    seen: set[str] = set()
    i = 0
    while i < len(lines):
        line = lines[i].strip().strip("`")
        i += 1
        if not line:
            continue
        is_item = bool(_BULLET.match(line))
        match = _ITEM.match(line)
        body = match.group("body") if match else line
        parts = _SEPARATOR.split(body, maxsplit=1)
        title, description = (parts[0], parts[1]) if len(parts) == 2 else (parts[0], "")
        if not _clean(description) and is_item and i < len(lines):
            # a marked title alone on an item line ("1. **Nature**"): its description is the next line,
            # indented or right below it; an unmarked line followed by a closing remark is no theme
            nxt = lines[i]
            marked = bool(_EMPHASIS.search(title)) or line.lstrip().startswith("#")
            if nxt.strip() and not _BULLET.match(nxt.strip()) and (marked or nxt[:1].isspace()):
                description, i = nxt, i + 1
        title, description = _clean(title), _clean(description)
        if not description:
            continue  # an introduction such as "Here are the themes:" or a bare heading
        why = _usable(title, description)
        if why:
            reasons.append(f"{line[:60]!r}: {why}")
            continue
        key = title.lower()
        if key in seen:
            continue
        seen.add(key)
        themes.append(Theme(title=title, description=description if description.endswith((".", "!", "?"))
                            else description + "."))
    need = expected if expected is not None else minimum
    if len(themes) < need:
        detail = f"; rejected {'; '.join(reasons[:3])}" if reasons else ""
        raise ThemeParseError(f"found {len(themes)} theme(s) in the 'Title: description' format, needed {need}"
                              f"{detail}")
    return themes[:expected] if expected is not None else themes


def chunk_indices(n: int, chunk_size: int, seed: int) -> list[np.ndarray]:
    """A seeded shuffle of ``range(n)`` cut into ceil(n / chunk_size) chunks of near-equal size (<= chunk_size)."""
    if n == 0:
        return []
    order = np.random.default_rng(seed).permutation(n)
    return [np.sort(part) for part in np.array_split(order, math.ceil(n / chunk_size))]


@dataclass
class ThemeFailure:
    """A step whose answers did not parse (both attempts): the raw texts, never shown as themes."""

    dataset: str
    stage: str
    step: str  # "chunk 3" or "merge level 1 group 0"
    reasons: list[str]
    raw: list[str]


@dataclass
class DatasetThemes:
    """The themes of one dataset and how they were made.

    `themes` is empty when the final merge failed (see the failures); `missing` lists the caption
    positions (in the dataset's input order) that had no caption; `chunks` the caption positions of each chunk.
    """

    dataset: str
    themes: list[Theme]
    n_captions: int
    missing: list[int]
    truncated: int
    chunks: list[list[int]]
    chunk_themes: list[list[Theme] | None]
    merge_levels: int
    seed: int

    @property
    def ok(self) -> bool:
        return bool(self.themes)


@dataclass
class ThemesResult:
    """Per-dataset themes, every failure, the token ledger of these calls, and what made them."""

    datasets: dict[str, DatasetThemes]
    failures: list[ThemeFailure]
    ledger: dict[str, Any]
    prompt_version: str
    model: dict[str, Any]
    settings: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (what the report reads)."""
        return {"prompt_version": self.prompt_version, "model": self.model, "settings": self.settings,
                "ledger": self.ledger, "failures": [asdict(f) for f in self.failures],
                "datasets": {name: {**asdict(d), "ok": d.ok} for name, d in self.datasets.items()}}


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"themes.{name}: expected an integer >= {minimum}, got {value!r}")
    return value


def _theme_lines(themes: Sequence[Theme]) -> str:
    return "\n".join(f"- {t.title}: {t.description}" for t in themes)


class _Asker:
    """Asks a batch of prompts, re-asks the unparseable once with the stricter prompt, records failures."""

    def __init__(self, generator: TextGenerator, ledger: TokenLedger, failures: list[ThemeFailure]) -> None:
        self.generator, self.ledger, self.failures = generator, ledger, failures

    def _generate(self, prompts: list[str], max_new_tokens: int, stage: str) -> list[Generation]:
        if not prompts:
            return []
        out = self.generator.generate(prompts, max_new_tokens, stage=stage)
        self.ledger.record(stage, out)
        return out

    def ask(self, jobs: list[tuple[str, str, str, int, int]], max_new_tokens: int,
            stage: str) -> list[list[Theme] | None]:
        """jobs: (dataset, step, prompt, expected or 0, k); the themes of each, or None (a failure recorded)."""
        results: list[list[Theme] | None] = [None] * len(jobs)
        raw: list[list[str]] = [[] for _ in jobs]
        reasons: list[list[str]] = [[] for _ in jobs]
        todo = list(range(len(jobs)))
        for attempt in range(2):
            prompts = [jobs[i][2] + (STRICT_SUFFIX.format(k=jobs[i][4]) if attempt else "") for i in todo]
            outs = self._generate(prompts, max_new_tokens, stage)
            again = []
            for i, g in zip(todo, outs):
                raw[i].append(g.text)
                if g.failed is not None:
                    reasons[i].append(f"generation failed: {g.failed}")
                    again.append(i)
                    continue
                try:
                    results[i] = parse_themes(g.text, expected=jobs[i][3] or None)
                except ThemeParseError as error:
                    reasons[i].append(str(error))
                    again.append(i)
            todo = again
        for i in todo:
            dataset, step = jobs[i][0], jobs[i][1]
            self.failures.append(ThemeFailure(dataset=dataset, stage=stage, step=step, reasons=reasons[i],
                                              raw=raw[i]))
        return results


def describe_themes(captions: Mapping[str, Sequence[str | None]], generator: TextGenerator, *, seed: int = 0,
                    chunk_size: int = 40, n_themes: int = 5, chunk_themes: int = 5, merge_fanin: int = 8,
                    max_new_tokens_chunk: int = 200, max_new_tokens_merge: int = 250) -> ThemesResult:
    """Five (`n_themes`) titled themes per dataset from its captions; see the module docstring.

    `captions`: per dataset, its captions (None or empty: missing, counted and listed). `generator`: any
    `TextGenerator` (wrap it in a `CachedGenerator` so a rerun costs nothing). Each dataset's shuffle seed is
    ``derive_seed(seed, "themes/<dataset>")`` and is recorded. Chunk prompts of all datasets go to the model
    together (batched), then each merge level.
    """
    _check_int("chunk_size", chunk_size, 1)
    _check_int("n_themes", n_themes, 1)
    _check_int("chunk_themes", chunk_themes, 1)
    _check_int("merge_fanin", merge_fanin, 2)
    _check_int("max_new_tokens_chunk", max_new_tokens_chunk, 1)
    _check_int("max_new_tokens_merge", max_new_tokens_merge, 1)
    ledger, failures = TokenLedger(), []
    asker = _Asker(generator, ledger, failures)
    found: dict[str, DatasetThemes] = {}
    jobs: list[tuple[str, str, str, int, int]] = []
    owners: list[tuple[str, int]] = []
    for name, texts in captions.items():
        present = [i for i, c in enumerate(texts) if isinstance(c, str) and c.strip()]
        missing = [i for i, c in enumerate(texts) if not (isinstance(c, str) and c.strip())]
        dataset_seed = derive_seed(seed, f"themes/{name}")
        chunks = [[present[j] for j in part] for part in chunk_indices(len(present), chunk_size, dataset_seed)]
        cut = sum(len(texts[i].strip()) > MAX_CAPTION_CHARS for i in present)
        found[name] = DatasetThemes(dataset=name, themes=[], n_captions=len(texts), missing=missing, truncated=cut,
                                    chunks=chunks, chunk_themes=[None] * len(chunks), merge_levels=0,
                                    seed=dataset_seed)
        if not chunks:
            failures.append(ThemeFailure(dataset=name, stage=CHUNK_STAGE, step="input",
                                         reasons=[f"no captions ({len(missing)} missing)"], raw=[]))
        for c, chunk in enumerate(chunks):
            lines = "\n".join(f"{j + 1}. {' '.join(texts[i].split())[:MAX_CAPTION_CHARS]}"
                              for j, i in enumerate(chunk))
            jobs.append((name, f"chunk {c}", CHUNK_PROMPT.format(n=len(chunk), captions=lines, k=chunk_themes), 0,
                         chunk_themes))
            owners.append((name, c))
    for (name, c), themes in zip(owners, asker.ask(jobs, max_new_tokens_chunk, CHUNK_STAGE)):
        found[name].chunk_themes[c] = themes[:chunk_themes] if themes else None

    # merge level by level: groups of at most merge_fanin theme lists -> one list each, until one remains
    levels = {name: [t for t in d.chunk_themes if t] for name, d in found.items()}
    for name, d in found.items():
        if d.chunks and not levels[name]:
            failures.append(ThemeFailure(dataset=name, stage=MERGE_STAGE, step="input",
                                         reasons=["no chunk gave themes: nothing to merge"], raw=[]))
    level = 0
    while any(levels.values()):
        level += 1
        jobs, owners = [], []
        for name, lists in levels.items():
            if not lists:
                continue
            final = len(lists) <= merge_fanin
            for g in range(0, len(lists), merge_fanin):
                group = [t for themes in lists[g:g + merge_fanin] for t in themes]
                jobs.append((name, f"merge level {level} group {g // merge_fanin}",
                             MERGE_PROMPT.format(themes=_theme_lines(group), k=n_themes),
                             n_themes if final else 0, n_themes))
                owners.append((name, int(final)))
        answers = asker.ask(jobs, max_new_tokens_merge, MERGE_STAGE)
        nxt: dict[str, list[list[Theme]]] = {name: [] for name in levels}
        for (name, final), themes in zip(owners, answers):
            found[name].merge_levels = level
            if final:
                found[name].themes = list(themes or [])
            elif themes:
                nxt[name].append(themes[:n_themes])
        for name, lists in nxt.items():
            if levels[name] and len(levels[name]) > merge_fanin and not lists:
                failures.append(ThemeFailure(dataset=name, stage=MERGE_STAGE, step=f"merge level {level}",
                                             reasons=["every merge of this level failed"], raw=[]))
        levels = nxt
    settings = {"seed": seed, "chunk_size": chunk_size, "n_themes": n_themes, "chunk_themes": chunk_themes,
                "merge_fanin": merge_fanin, "max_new_tokens_chunk": max_new_tokens_chunk,
                "max_new_tokens_merge": max_new_tokens_merge, "max_caption_chars": MAX_CAPTION_CHARS}
    return ThemesResult(datasets=found, failures=failures, ledger=ledger.as_dict(), prompt_version=PROMPT_VERSION,
                        model=dict(generator.identity), settings=settings)


def captions_by_dataset(inputs: Any, role: str | None = None) -> dict[str, list[str | None]]:
    """Per dataset name, the captions of a `describe.inputs.DescribeInputs` (only `role` images if given)."""
    labels = np.asarray(inputs.labels)
    roles = np.asarray(inputs.role) if role is not None else None
    out: dict[str, list[str | None]] = {name: [] for name in inputs.datasets}
    for i, caption in enumerate(inputs.captions):
        if roles is None or roles[i] == role:
            out[inputs.datasets[int(labels[i])]].append(caption)
    return out
