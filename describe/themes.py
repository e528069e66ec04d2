"""Five titled themes per dataset, written by an LLM from many captions, by procedural prompting.

Per dataset, both procedures start alike: the captions (missing or empty ones counted and listed, never sent)
are shuffled with a seed derived from the run seed and the dataset name and cut into chunks of at most
`chunk_size` (at most `max_chunks` of them; the captions left over are counted in `DatasetThemes.unused`).
Then one of two procedures (``procedure``):

``list`` (the published one): the LLM lists the themes of each chunk as numbered ``Title: one-sentence
description`` lines (stage ``themes.chunk``); the chunk themes are merged, at most `merge_fanin` chunks' themes
per prompt, level by level, until one prompt merges everything into `n_themes` titled themes (``themes.merge``).
The parser (`parse_themes`) tolerates the usual variants (bullets, ``1)``, bold markers, a heading line, a title
and its description on two lines) and rejects what is empty or garbage. A small model (the packaged
SmolLM2-135M) almost never answers in this format: it copies the format line or the captions.

``slots`` (the default; it works with a small model): every call asks for ONE short answer, one slot.

1. per chunk, its most common subject as a short title (``themes.title``), then, one call at a time, "another
   common subject besides <the titles so far>", `chunk_themes` titles per chunk (more when there are too few
   chunks for `n_themes` titles). A chunk of one caption (``chunk_size: 1``, the packaged config: the 135M
   model copies the captions when it is shown many) is asked "the main subject of this image";
2. the chunk titles of a dataset are embedded with a sentence encoder (the packaged MiniLM) and clustered
   (average linkage, cosine) into `n_themes` groups, the groups ordered by how many chunk titles they hold;
3. a group of several titles gets one title from the LLM (``themes.group_title``); when that answer is
   unusable the group's most central chunk title is kept and recorded as chosen, not written
   (``title_source``: ``chunk`` one title only, ``written``, ``chosen``);
4. each theme gets one sentence (``themes.sentence``), the LLM shown its title and the captions of its chunks
   most similar to it; when that answer is unusable the description says which chunk titles the theme groups
   (``description_source``: ``written`` or ``members``).

Answers are read strictly (`parse_title`, `parse_sentence`: a title of one to `MAX_TITLE_WORDS` words that is not
a placeholder, an earlier title, a copied caption or an unfinished phrase; a sentence of four to forty words that
does not repeat itself, the title or a caption; an answer cut off by max_new_tokens is rejected), and each must be
about its subject (`MIN_SIMILARITY`, sentence-encoder cosine: a chunk title to its captions, a group title to its
group's titles, a sentence to its title), which rejects the small model's inventions ("Greatest Hero Ever" for a
group of triangles). An answer that does not parse is asked once more with a stricter prompt (a different prompt, so a
different cache key); if that fails too the step is recorded in `ThemesResult.failures` with the raw texts and
reasons, and nothing of it is shown as content (a fallback is marked as one). Decoding is the generator's
(greedy for `describe.llm.HFCausalLM`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from bias.core.errors import ConfigError
from bias.core.seeding import derive_seed
from describe.llm import Generation, TextGenerator, TokenLedger

#: Bumped whenever a prompt or the parser changes (it is in the result; the prompts are in the cache keys).
PROMPT_VERSION = "themes-v2"
PROCEDURES = ("list", "slots")
CHUNK_STAGE, MERGE_STAGE = "themes.chunk", "themes.merge"
TITLE_STAGE, GROUP_STAGE, SENTENCE_STAGE = "themes.title", "themes.group_title", "themes.sentence"
#: Longest caption text sent (characters); longer ones are cut and counted in `DatasetThemes.truncated`.
MAX_CAPTION_CHARS = 400
#: Least cosine similarity (sentence encoder) of an answer to what it is about, else it is rejected as unrelated:
#: a chunk title to its nearest caption, a group title to its group's titles (mean), a sentence to its title.
MIN_SIMILARITY = {"title": 0.3, "group": 0.5, "sentence": 0.3}
#: Longest title accepted (words): a noun phrase, not a sentence.
MAX_TITLE_WORDS = 8
#: Captions shown with a theme's title when its sentence is asked for (the chunk captions nearest the title).
SENTENCE_CAPTIONS = 6

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

# --- the slots procedure's prompts: one short answer each ---
FIRST_TITLE_PROMPT = (
    "Image captions:\n{captions}\n\n"
    "What is the most common subject in these images? Answer with a short title of one to four words.")
NEXT_TITLE_PROMPT = (
    "Image captions:\n{captions}\n\n"
    "Besides {besides}, what is another common subject in these images? Answer with a short title of one to "
    "four words.")
ONE_CAPTION_TITLE_PROMPT = (
    "Image caption: {caption}\n\n"
    "What is the main subject of this image? Answer in two to four words.")
GROUP_TITLE_PROMPT = (
    "These titles name similar subjects of images:\n{titles}\n\n"
    "Write one short title of one to four words that covers all of them.")
SENTENCE_PROMPT = (
    "Image captions:\n{captions}\n\n"
    "Write one sentence that describes the images of \"{title}\".")
#: Added to a slot prompt whose first answer did not parse (a different prompt, so a new cache key).
SLOT_STRICT = {"title": "\n\nAnswer in two to four words.",
               "sentence": "\n\nAnswer with one full sentence of five to twenty-five words and nothing else."}

_PLACEHOLDERS = {"title", "theme", "<title>", "theme title", "short title", "description", "one sentence"}
_ITEM = re.compile(r"^\s*(?:[-*•+]\s+|#{1,6}\s+)?(?:\(?(?:theme\s*)?(\d{1,2})[.):]\s*|\(?(?:theme\s*)?(\d{1,2})\)\s*)?"
                   r"(?P<body>.*\S)\s*$", re.IGNORECASE)
_BULLET = re.compile(r"^\s*(?:[-*•+]\s+|\(?(?:theme\s*)?\d{1,2}[.):]\s+)", re.IGNORECASE)
_SEPARATOR = re.compile(r"\s*(?::|\s[-–—]\s)\s*")
_EMPHASIS = re.compile(r"(\*\*|__|\*|_|`)")


@dataclass(frozen=True)
class Theme:
    """One titled theme: a short title and a one-sentence description.

    The slots procedure also says where each came from (`title_source`: ``written`` by the LLM for the theme,
    ``chunk`` the one chunk title of its group, ``chosen`` the group's most central chunk title because the
    LLM's answer was unusable; `description_source`: ``written`` or ``members``, the chunk titles listed), the
    chunk titles it groups (`members`, the most central first), the chunks they came from and their count.
    """

    title: str
    description: str
    title_source: str = "written"
    description_source: str = "written"
    members: tuple[str, ...] = ()
    chunks: tuple[int, ...] = ()
    count: int = 0


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
    positions (in the dataset's input order) that had no caption; `chunks` the caption positions of each chunk;
    `unused` the captions beyond `max_chunks` chunks (not sent); `chunk_themes` the list procedure's themes of
    each chunk, `chunk_titles` the slots procedure's titles of each chunk.
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
    unused: list[int] = field(default_factory=list)
    procedure: str = "list"
    chunk_titles: list[list[str]] = field(default_factory=list)

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


def describe_themes(captions: Mapping[str, Sequence[str | None]], generator: TextGenerator, *,
                    procedure: str = "slots", encoder: Any = None, seed: int = 0, chunk_size: int = 20,
                    max_chunks: int | None = None, n_themes: int = 5, chunk_themes: int = 3, merge_fanin: int = 8,
                    max_new_tokens_chunk: int = 200, max_new_tokens_merge: int = 250, max_new_tokens_title: int = 24,
                    max_new_tokens_sentence: int = 48) -> ThemesResult:
    """`n_themes` titled themes per dataset from its captions by `procedure` ``slots`` or ``list`` (module
    docstring).

    `captions`: per dataset, its captions (None or empty: missing, counted and listed). `generator`: any
    `TextGenerator` (wrap it in a `CachedGenerator` so a rerun costs nothing). `encoder`: for ``slots``, a text
    encoder (``embed_texts(texts) -> L2-normalised rows``: `describe.similarity.SentenceEncoder`). Each dataset's
    shuffle seed is ``derive_seed(seed, "themes/<dataset>")`` and is recorded. `max_chunks`: chunks per dataset
    (None: all). ``list``: `chunk_themes` themes per chunk prompt, `merge_fanin`, `max_new_tokens_chunk` /
    `_merge`; ``slots``: `chunk_themes` titles per chunk, `max_new_tokens_title` / `_sentence`. Prompts of all
    datasets go to the model together (batched), step by step.
    """
    if procedure not in PROCEDURES:
        raise ConfigError(f"themes.procedure: expected one of {list(PROCEDURES)}, got {procedure!r}")
    if procedure == "slots" and encoder is None:
        raise ConfigError("themes.procedure=slots needs a text encoder (describe.similarity.SentenceEncoder) to "
                          "group the chunk titles")
    _check_int("chunk_size", chunk_size, 1)
    if max_chunks is not None:
        _check_int("max_chunks", max_chunks, 1)
    _check_int("n_themes", n_themes, 1)
    _check_int("chunk_themes", chunk_themes, 1)
    _check_int("merge_fanin", merge_fanin, 2)
    for key, value in (("max_new_tokens_chunk", max_new_tokens_chunk), ("max_new_tokens_merge", max_new_tokens_merge),
                       ("max_new_tokens_title", max_new_tokens_title),
                       ("max_new_tokens_sentence", max_new_tokens_sentence)):
        _check_int(key, value, 1)
    ledger, failures = TokenLedger(), []
    found: dict[str, DatasetThemes] = {}
    cleaned: dict[str, list[str | None]] = {}
    chunk_text: dict[str, list[str]] = {}
    for name, texts in captions.items():
        present = [i for i, c in enumerate(texts) if isinstance(c, str) and c.strip()]
        missing = [i for i, c in enumerate(texts) if not (isinstance(c, str) and c.strip())]
        dataset_seed = derive_seed(seed, f"themes/{name}")
        chunks = [[present[j] for j in part] for part in chunk_indices(len(present), chunk_size, dataset_seed)]
        kept = chunks[:max_chunks] if max_chunks is not None else chunks
        unused = sorted(i for part in chunks[len(kept):] for i in part)
        cut = sum(len(texts[i].strip()) > MAX_CAPTION_CHARS for i in present)
        cleaned[name] = [" ".join(c.split())[:MAX_CAPTION_CHARS] if isinstance(c, str) and c.strip() else None
                         for c in texts]
        found[name] = DatasetThemes(dataset=name, themes=[], n_captions=len(texts), missing=missing, truncated=cut,
                                    chunks=kept, chunk_themes=[None] * len(kept), merge_levels=0,
                                    seed=dataset_seed, unused=unused, procedure=procedure)
        if not kept:
            failures.append(ThemeFailure(dataset=name, stage=CHUNK_STAGE if procedure == "list" else TITLE_STAGE,
                                         step="input", reasons=[f"no captions ({len(missing)} missing)"], raw=[]))
        chunk_text[name] = ["\n".join(f"{j + 1}. {cleaned[name][i]}" for j, i in enumerate(chunk)) if
                            procedure == "list" else _caption_lines([cleaned[name][i] for i in chunk])
                            for chunk in kept]
    settings: dict[str, Any] = {"procedure": procedure, "seed": seed, "chunk_size": chunk_size,
                                "max_chunks": max_chunks, "n_themes": n_themes, "chunk_themes": chunk_themes,
                                "max_caption_chars": MAX_CAPTION_CHARS}
    if procedure == "list":
        _list_procedure(found, chunk_text, _Asker(generator, ledger, failures), failures, n_themes=n_themes,
                        chunk_themes=chunk_themes, merge_fanin=merge_fanin, max_new_tokens_chunk=max_new_tokens_chunk,
                        max_new_tokens_merge=max_new_tokens_merge)
        settings.update(merge_fanin=merge_fanin, max_new_tokens_chunk=max_new_tokens_chunk,
                        max_new_tokens_merge=max_new_tokens_merge)
    else:
        per_chunk = _slots(found, chunk_text, cleaned, encoder, _Asker(generator, ledger, failures), failures,
                           n_themes=n_themes, chunk_themes=chunk_themes, max_new_tokens_title=max_new_tokens_title,
                           max_new_tokens_sentence=max_new_tokens_sentence)
        settings.update(titles_asked_per_chunk=per_chunk, max_new_tokens_title=max_new_tokens_title,
                        max_new_tokens_sentence=max_new_tokens_sentence, sentence_captions=SENTENCE_CAPTIONS,
                        min_similarity=dict(MIN_SIMILARITY), max_title_words=MAX_TITLE_WORDS,
                        encoder=dict(getattr(encoder, "identity", {}) or {}))
    return ThemesResult(datasets=found, failures=failures, ledger=ledger.as_dict(), prompt_version=PROMPT_VERSION,
                        model=dict(generator.identity), settings=settings)


def _list_procedure(found: dict[str, DatasetThemes], chunk_text: dict[str, list[str]], asker: _Asker,
                    failures: list[ThemeFailure], *, n_themes: int, chunk_themes: int, merge_fanin: int,
                    max_new_tokens_chunk: int, max_new_tokens_merge: int) -> None:
    """The list procedure (module docstring) on prepared chunks; fills `found`."""
    jobs: list[_Job] = []
    owners: list[tuple[str, int]] = []
    for name, d in found.items():
        for c, chunk in enumerate(d.chunks):
            jobs.append(_list_job(name, f"chunk {c}", CHUNK_PROMPT.format(n=len(chunk), captions=chunk_text[name][c],
                                                                          k=chunk_themes), 0, chunk_themes))
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
                jobs.append(_list_job(name, f"merge level {level} group {g // merge_fanin}",
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


# --- the slots procedure ------------------------------------------------------------------------------------
_SLOT_PLACEHOLDERS = _PLACEHOLDERS | {"subject", "subjects", "main subject", "common subject", "another subject",
                                      "image", "images", "caption", "captions", "title", "answer", "none",
                                      "unknown", "n/a", "one to four words", "short title"}
_LEAD = re.compile(r"^(?:(?:answer|title|subject|theme)(?:\s+is)?\s*:\s*|(?:the\s+)?title\s+is\s+|(?:the\s+)?(?:main|most\s+common|other|another"
                   r"(?:\s+common)?|common)?\s*(?:subject|theme|topic)s?(?:\s+(?:in|of)\s+(?:these|this|the)\s+"
                   r"(?:images?|captions?|dataset))?\s*(?:is|are|:)\s+|(?:these|the|this)\s+images?\s+(?:shows?|"
                   r"depicts?|contains?|has|have)\s+)", re.IGNORECASE)
_ARTICLE = re.compile(r"^(?:a|an|the)\s+", re.IGNORECASE)
#: words an unfinished title ends with ("Nine shapes of")
_DANGLING = {"a", "an", "the", "of", "and", "or", "with", "in", "on", "to", "for", "by", "at", "from", "is", "are"}
_SENTENCE_LEAD = re.compile(r"^(?:sentence|description|answer)\s*:\s*", re.IGNORECASE)


def _norm(text: str) -> str:
    return " ".join(re.findall(r"[a-z0-9']+", text.lower()))


def parse_title(text: str, avoid: Sequence[str] = (), captions: Sequence[str] = ()) -> str:
    """The short title in a one-slot answer, or `ThemeParseError`.

    Reads the first non-empty line; drops a bullet or number, emphasis, quotes, a lead such as ``Title:``,
    ``The main subject of this image is`` or ``These images show``, a leading article and end punctuation.
    Rejects: no words, more than `MAX_TITLE_WORDS` words or 70 characters, a placeholder (``subject``,
    ``title``, ...), one of `avoid` (the titles already given), a copy of one of `captions`, repeated words, an
    unfinished phrase (ending in ``of``, ``and``, ``the``, ...).
    """
    line = next((ln.strip() for ln in (text or "").replace("\r", "").split("\n") if ln.strip()), "")
    line = _BULLET.sub("", line)
    line = _ARTICLE.sub("", _clean(_LEAD.sub("", _clean(line))))
    title = _clean(line.rstrip("."))
    if not re.search(r"[A-Za-z]{2}", title):
        raise ThemeParseError(f"no title in {text[:60]!r}")
    words = title.split()
    if len(words) > MAX_TITLE_WORDS or len(title) > 70:
        raise ThemeParseError(f"not a short title ({len(words)} words): {title[:60]!r}")
    key = _norm(title)
    if key in _SLOT_PLACEHOLDERS:
        raise ThemeParseError(f"a placeholder, not a title: {title!r}")
    if key in {_norm(a) for a in avoid}:
        raise ThemeParseError(f"repeats an earlier title: {title!r}")
    if key in {_norm(_ARTICLE.sub("", c.strip())) for c in captions} | {_norm(c) for c in captions}:
        raise ThemeParseError(f"copies a caption: {title!r}")
    if len(words) >= 3 and len({w.lower() for w in words}) <= len(words) / 2:
        raise ThemeParseError(f"repeats itself: {title!r}")
    if words[-1].lower() in _DANGLING:
        raise ThemeParseError(f"unfinished: {title!r}")
    return title[0].upper() + title[1:]


def parse_sentence(text: str, title: str = "", captions: Sequence[str] = ()) -> str:
    """The one sentence in a one-slot answer, or `ThemeParseError`.

    Reads the first paragraph, drops a lead such as ``Description:`` and quotes, keeps its first sentence.
    Rejects: fewer than four or more than forty words, a sentence that repeats itself, the title alone, a copy
    of one of `captions`.
    """
    para = next((p for p in re.split(r"\n\s*\n", (text or "").replace("\r", "")) if p.strip()), "")
    para = " ".join(_BULLET.sub("", ln.strip()) for ln in para.split("\n"))
    para = _SENTENCE_LEAD.sub("", _EMPHASIS.sub("", para).strip().strip("\"'“”"))
    if title and _norm(para[:len(title) + 1]).startswith(_norm(title)) and para[len(title):].lstrip().startswith(":"):
        para = para[len(title):].lstrip()[1:].strip()  # "Title: the sentence" -> the sentence
    match = re.match(r"(.+?[.!?])(?:\s|$)", para)
    sentence = " ".join((match.group(1) if match else para).split()).strip("\"'“” ")
    words = re.findall(r"[A-Za-z']+", sentence.lower())
    if len(words) < 4:
        raise ThemeParseError(f"not a sentence (fewer than four words): {text[:60]!r}")
    if len(words) > 40:
        raise ThemeParseError(f"more than one sentence's worth ({len(words)} words)")
    if len(words) >= 8 and len(set(words)) / len(words) < 0.5:
        raise ThemeParseError(f"repeats itself: {sentence[:60]!r}")
    if _norm(sentence) == _norm(title):
        raise ThemeParseError("repeats the title")
    if _norm(sentence) in {_norm(c) for c in captions}:
        raise ThemeParseError(f"copies a caption: {sentence[:60]!r}")
    if not sentence.endswith((".", "!", "?")):
        sentence += "."
    return sentence[0].upper() + sentence[1:]


def cluster_titles(vectors: np.ndarray, k: int) -> list[list[int]]:
    """Average-linkage agglomerative clustering of L2-normalised rows by cosine similarity into `k` groups.

    `scipy.cluster.hierarchy.linkage` (``method="average"``) on the cosine distances 1 - x_i . x_j, cut where
    exactly `k` groups remain (`scipy.cluster.hierarchy.cut_tree`: by merge order, so tied heights still give
    `k`). Deterministic. Returns the groups as sorted row indices, ordered by position of their first member.
    """
    from scipy.cluster.hierarchy import cut_tree, linkage
    from scipy.spatial.distance import squareform

    n = len(vectors)
    if n == 0 or k < 1:
        return []
    if k >= n or n == 1:
        return [[i] for i in range(n)]
    x = np.asarray(vectors, dtype=np.float64)
    distance = np.clip(1.0 - x @ x.T, 0.0, None)
    tree = linkage(squareform(distance, checks=False), method="average")
    labels = cut_tree(tree, n_clusters=k)[:, 0]
    groups: dict[int, list[int]] = {}
    for i, label in enumerate(labels):
        groups.setdefault(int(label), []).append(i)
    return sorted(groups.values(), key=lambda g: g[0])


@dataclass
class _Job:
    dataset: str
    step: str
    prompt: str
    strict: str  # added to the prompt when it is asked again
    parse: Callable[[Generation], Any]  # the answer's value, or ThemeParseError


def _list_job(dataset: str, step: str, prompt: str, expected: int, k: int) -> _Job:
    """A prompt of the list procedure: numbered themes (exactly `expected` of them when non-zero)."""
    return _Job(dataset, step, prompt, STRICT_SUFFIX.format(k=k),
                lambda g: parse_themes(g.text, expected=expected or None))


def _slot_job(dataset: str, step: str, prompt: str, kind: str, parse: Callable[[str], Any]) -> _Job:
    """A one-slot prompt (`kind` "title" or "sentence"): an answer cut off by max_new_tokens is refused."""
    def checked(g: Generation) -> Any:
        if g.stop == "length" and (kind == "title" and "\n" not in g.text.strip() or
                                   kind == "sentence" and not re.search(r"[.!?]", g.text)):
            raise ThemeParseError("cut off at max_new_tokens before the answer ended")
        return parse(g.text)

    return _Job(dataset, step, prompt, SLOT_STRICT[kind], checked)


class _Asker:
    """Asks a batch of prompts, re-asks the unparseable once with the stricter prompt, records failures."""

    def __init__(self, generator: TextGenerator, ledger: TokenLedger, failures: list[ThemeFailure]) -> None:
        self.generator, self.ledger, self.failures = generator, ledger, failures

    def ask(self, jobs: list[_Job], max_new_tokens: int, stage: str, fallback: str = "") -> list[Any]:
        """The parsed answer of each job, or None (its failure recorded, `fallback` said in its reasons)."""
        results: list[Any] = [None] * len(jobs)
        raw: list[list[str]] = [[] for _ in jobs]
        reasons: list[list[str]] = [[] for _ in jobs]
        todo = list(range(len(jobs)))
        for attempt in range(2):
            if not todo:
                break
            prompts = [jobs[i].prompt + (jobs[i].strict if attempt else "") for i in todo]
            outs = self.generator.generate(prompts, max_new_tokens, stage=stage)
            self.ledger.record(stage, outs)
            again = []
            for i, g in zip(todo, outs):
                raw[i].append(g.text)
                if g.failed is not None:
                    reasons[i].append(f"generation failed: {g.failed}")
                    again.append(i)
                    continue
                try:
                    results[i] = jobs[i].parse(g)
                except ThemeParseError as error:
                    reasons[i].append(str(error))
                    again.append(i)
            todo = again
        for i in todo:
            self.failures.append(ThemeFailure(dataset=jobs[i].dataset, stage=stage, step=jobs[i].step,
                                              reasons=reasons[i] + ([fallback] if fallback else []), raw=raw[i]))
        return results


def _caption_lines(texts: Sequence[str]) -> str:
    return "\n".join(f"- {t}" for t in texts)


def _besides(titles: Sequence[str]) -> str:
    quoted = [f'"{t}"' for t in titles]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " and " + quoted[-1]


def _related(encoder: Any, answer: str, targets: Sequence[str], minimum: float, how: str = "max") -> str:
    """`answer` when its similarity to `targets` (max or mean cosine) reaches `minimum`, else `ThemeParseError`."""
    vecs = np.asarray(encoder.embed_texts([answer, *targets]), dtype=np.float64)
    sims = vecs[1:] @ vecs[0]
    value = float(sims.max() if how == "max" else sims.mean())
    if value < minimum:
        raise ThemeParseError(f"unrelated to what it is about (similarity {value:.2f} < {minimum}): {answer[:60]!r}")
    return answer


def _slots(found: dict[str, DatasetThemes], texts: dict[str, list[str]], cleaned: dict[str, list[str | None]],
           encoder: Any, asker: _Asker, failures: list[ThemeFailure], *, n_themes: int, chunk_themes: int,
           max_new_tokens_title: int, max_new_tokens_sentence: int) -> dict[str, int]:
    """The slots procedure (module docstring) on prepared chunks; fills `found`; returns titles asked per chunk.

    Three steps, each one batch of LLM calls per round: titles for every chunk, a title for every group of
    similar chunk titles, a sentence for every group.
    """
    per_chunk = _chunk_titles(found, texts, cleaned, encoder, asker, n_themes=n_themes, chunk_themes=chunk_themes,
                              max_new_tokens=max_new_tokens_title)
    plans = _title_groups(found, encoder, asker, failures, n_themes=n_themes, max_new_tokens=max_new_tokens_title)
    _theme_sentences(found, plans, cleaned, encoder, asker, max_new_tokens=max_new_tokens_sentence)
    return per_chunk


def _chunk_title_prompt(chunk_caps: Sequence[str | None], caps: str, so_far: Sequence[str]) -> str:
    """The prompt for a chunk's next title: its one caption, its captions, or its captions and the titles so far."""
    if len(chunk_caps) == 1 and not so_far:
        return ONE_CAPTION_TITLE_PROMPT.format(caption=chunk_caps[0])
    if not so_far:
        return FIRST_TITLE_PROMPT.format(captions=caps)
    return NEXT_TITLE_PROMPT.format(captions=caps, besides=_besides(so_far))


def _chunk_titles(found: dict[str, DatasetThemes], texts: dict[str, list[str]],
                  cleaned: dict[str, list[str | None]], encoder: Any, asker: _Asker, *, n_themes: int,
                  chunk_themes: int, max_new_tokens: int) -> dict[str, int]:
    """Step 1: up to `per_chunk` titles for every chunk, one round per title (a chunk whose answer fails is asked
    no more), into ``d.chunk_titles``. Returns `per_chunk` per dataset: enough for `n_themes` over all chunks."""
    per_chunk = {name: max(chunk_themes, math.ceil(n_themes / len(d.chunks))) if d.chunks else 0
                 for name, d in found.items()}
    for d in found.values():
        d.chunk_titles = [[] for _ in d.chunks]
    active = {(name, c) for name, d in found.items() for c in range(len(d.chunks))}
    for r in range(max(per_chunk.values(), default=0)):
        jobs, owners = [], []
        for name, d in found.items():
            for c, chunk in enumerate(d.chunks):
                if (name, c) not in active or r >= per_chunk[name]:
                    continue
                so_far = d.chunk_titles[c]
                chunk_caps = [cleaned[name][i] for i in chunk]
                prompt = _chunk_title_prompt(chunk_caps, texts[name][c], so_far)
                jobs.append(_slot_job(name, f"chunk {c} title {r + 1}", prompt, "title",
                                      lambda t, a=tuple(so_far), cc=tuple(chunk_caps): _related(
                                          encoder, parse_title(t, a, cc), cc, MIN_SIMILARITY["title"])))
                owners.append((name, c))
        for (name, c), title in zip(owners, asker.ask(jobs, max_new_tokens, TITLE_STAGE,
                                                      "no more titles asked for this chunk")):
            if title is None:
                active.discard((name, c))
            else:
                found[name].chunk_titles[c].append(title)
    return per_chunk


def _distinct_titles(name: str, d: DatasetThemes, failures: list[ThemeFailure], n_themes: int
                     ) -> list[dict[str, Any]]:
    """A dataset's distinct chunk titles (by normalised text) with how often and in which chunks each came; a
    failure recorded when there are none, or fewer than `n_themes`."""
    unique: dict[str, dict[str, Any]] = {}
    for c, titles in enumerate(d.chunk_titles):
        for t in titles:
            entry = unique.setdefault(_norm(t), {"title": t, "count": 0, "chunks": set()})
            entry["count"] += 1
            entry["chunks"].add(c)
    if d.chunks and not unique:
        failures.append(ThemeFailure(dataset=name, stage=GROUP_STAGE, step="input",
                                     reasons=["no chunk gave a title: nothing to group"], raw=[]))
    if unique and len(unique) < n_themes:
        failures.append(ThemeFailure(dataset=name, stage=GROUP_STAGE, step="input",
                                     reasons=[f"only {len(unique)} distinct chunk title(s): fewer than "
                                              f"{n_themes} themes"], raw=[]))
    return list(unique.values())


def _group_plans(entries: list[dict[str, Any]], encoder: Any, n_themes: int) -> list[dict[str, Any]]:
    """Cluster the distinct titles into at most `n_themes` groups, ordered by how many titles (then chunks) they
    hold; each group's members ordered by centrality (count-weighted similarity to the others), its chunks and
    count."""
    vectors = np.asarray(encoder.embed_texts([e["title"] for e in entries]), dtype=np.float64)
    counts = np.array([e["count"] for e in entries], dtype=np.float64)
    groups = cluster_titles(vectors, min(n_themes, len(entries)))
    groups.sort(key=lambda g: (-counts[g].sum(), -len({c for i in g for c in entries[i]["chunks"]}), g[0]))
    plans = []
    for g in groups:
        centrality = (vectors[g] @ vectors[g].T) @ counts[g]
        order = [g[j] for j in np.argsort(-centrality, kind="stable")]
        plans.append({"members": [entries[i]["title"] for i in order],
                      "chunks": sorted({c for i in g for c in entries[i]["chunks"]}),
                      "count": int(counts[g].sum())})
    return plans


def _group_title_job(name: str, k: int, plans: list[dict[str, Any]], encoder: Any) -> _Job:
    """The prompt for group k's title: its members; the answer must differ from every other group's members."""
    plan = plans[k]
    others = [m for j, p in enumerate(plans) if j != k for m in p["members"]]
    return _slot_job(name, f"group {k} title", GROUP_TITLE_PROMPT.format(titles=_caption_lines(plan["members"])),
                     "title", lambda t, a=tuple(others), m=tuple(plan["members"]): _related(
                         encoder, parse_title(t, a), m, MIN_SIMILARITY["group"], "mean"))


def _title_groups(found: dict[str, DatasetThemes], encoder: Any, asker: _Asker, failures: list[ThemeFailure], *,
                  n_themes: int, max_new_tokens: int) -> dict[str, list[dict[str, Any]]]:
    """Step 2: each dataset's chunk titles grouped (`_group_plans`), and a written title asked for every group of
    more than one member. A group keeps its most central chunk title where it has one member ("chunk"), the
    answer fails or repeats an earlier group's title ("chosen"). Returns the plans per dataset."""
    plans: dict[str, list[dict[str, Any]]] = {}
    jobs: list[_Job] = []
    owners: list[tuple[str, int]] = []
    for name, d in found.items():
        d.merge_levels = 1 if d.chunks else 0
        d.chunk_themes = [None] * len(d.chunks)
        entries = _distinct_titles(name, d, failures, n_themes)
        if not entries:
            continue
        plans[name] = _group_plans(entries, encoder, n_themes)
        for k, plan in enumerate(plans[name]):
            if len(plan["members"]) > 1:
                jobs.append(_group_title_job(name, k, plans[name], encoder))
                owners.append((name, k))
    for plan in (p for ps in plans.values() for p in ps):
        plan["title"], plan["title_source"] = plan["members"][0], "chunk"
    answers = asker.ask(jobs, max_new_tokens, GROUP_STAGE, "kept the group's most central chunk title (chosen, not written)")
    for (name, k), title in zip(owners, answers):
        plan = plans[name][k]
        earlier = {_norm(p["title"]) for p in plans[name][:k]}
        if title and _norm(title) in earlier:  # two groups given one title: the later keeps its own chunk title
            failures.append(ThemeFailure(dataset=name, stage=GROUP_STAGE, step=f"group {k} title",
                                         reasons=[f"the title {title!r} was given to an earlier group",
                                                  "kept the group's most central chunk title (chosen, not written)"],
                                         raw=[title]))
            title = None
        plan["title"], plan["title_source"] = (title, "written") if title else (plan["members"][0], "chosen")
    return plans


def _sentence_captions(plan: dict[str, Any], d: DatasetThemes, cleaned: list[str | None], encoder: Any) -> list:
    """The captions of a group's chunks, at most `SENTENCE_CAPTIONS` of them: those nearest its title."""
    pool = sorted({i for c in plan["chunks"] for i in d.chunks[c]})
    caps = [cleaned[i] for i in pool]
    if len(caps) > SENTENCE_CAPTIONS:
        vecs = np.asarray(encoder.embed_texts([plan["title"], *caps]), dtype=np.float64)
        near = np.argsort(-(vecs[1:] @ vecs[0]), kind="stable")[:SENTENCE_CAPTIONS]
        caps = [caps[j] for j in sorted(near)]
    return caps


def _theme_sentences(found: dict[str, DatasetThemes], plans: dict[str, list[dict[str, Any]]],
                     cleaned: dict[str, list[str | None]], encoder: Any, asker: _Asker, *, max_new_tokens: int
                     ) -> None:
    """Step 3: one sentence per group, shown the captions of its chunks nearest its title, and the groups as
    `Theme`s into ``d.themes`` (a failed sentence becomes the list of the group's chunk titles, marked)."""
    jobs: list[_Job] = []
    owners: list[tuple[str, int]] = []
    for name, ps in plans.items():
        for k, plan in enumerate(ps):
            caps = _sentence_captions(plan, found[name], cleaned[name], encoder)
            jobs.append(_slot_job(name, f"theme {k} sentence",
                                  SENTENCE_PROMPT.format(captions=_caption_lines(caps), title=plan["title"]),
                                  "sentence", lambda t, ti=plan["title"], cc=tuple(caps): _related(
                                      encoder, parse_sentence(t, ti, cc), [ti], MIN_SIMILARITY["sentence"])))
            owners.append((name, k))
    answers = asker.ask(jobs, max_new_tokens, SENTENCE_STAGE, "the theme's description lists its chunk titles instead")
    for (name, k), sentence in zip(owners, answers):
        plan = plans[name][k]
        written = sentence is not None
        description = sentence if written else "Groups the chunk titles: " + "; ".join(plan["members"]) + "."
        found[name].themes.append(Theme(title=plan["title"], description=description,
                                        title_source=plan["title_source"],
                                        description_source="written" if written else "members",
                                        members=tuple(plan["members"]), chunks=tuple(plan["chunks"]),
                                        count=plan["count"]))


def captions_by_dataset(inputs: Any, role: str | None = None) -> dict[str, list[str | None]]:
    """Per dataset name, the captions of a `describe.inputs.DescribeInputs` (only `role` images if given)."""
    labels = np.asarray(inputs.labels)
    roles = np.asarray(inputs.role) if role is not None else None
    out: dict[str, list[str | None]] = {name: [] for name in inputs.datasets}
    for i, caption in enumerate(inputs.captions):
        if roles is None or roles[i] == role:
            out[inputs.datasets[int(labels[i])]].append(caption)
    return out
