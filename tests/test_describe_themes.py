"""describe.themes, the slots procedure: one short answer per call, chunk titles grouped by a text encoder.

A scripted generator answers like a model that follows the slot prompts (the most frequent subject family of
the chunk it is shown that it has not named yet), with planted garbage where a fallback must be taken; a
keyword encoder puts the two words of a family on one direction, so the five groups are known in advance.
"""

from __future__ import annotations

import json
import re
from collections import Counter

import numpy as np
import pytest

from bias.core.errors import ConfigError
from describe.llm import CachedGenerator, Generation, TextGenerator
from describe.themes import (
    GROUP_STAGE,
    PROMPT_VERSION,
    SENTENCE_STAGE,
    SLOT_STRICT,
    TITLE_STAGE,
    ThemeParseError,
    cluster_titles,
    describe_themes,
    parse_sentence,
    parse_title,
)

#: five subject families, two words each: the groups the titles must fall into
FAMILIES = {"dogs": ("dog", "puppy"), "cats": ("cat", "kitten"), "cars": ("car", "truck"),
            "trees": ("tree", "oak"), "boats": ("boat", "ship")}
WORD_FAMILY = {w: f for f, words in FAMILIES.items() for w in words}


class KeywordEncoder:
    """One direction per family (a text naming a family word), an extra one for everything else; L2-normalised."""

    identity = {"model": "keywords"}

    def __init__(self) -> None:
        self.texts: list[str] = []

    def embed_texts(self, texts):
        self.texts.extend(texts)
        names = list(FAMILIES)
        out = np.zeros((len(texts), len(names) + 1), dtype=np.float32)
        for row, text in enumerate(texts):
            words = set(re.findall(r"[a-z]+", text.lower()))
            for w in words:
                if w in WORD_FAMILY:
                    out[row, names.index(WORD_FAMILY[w])] = 1.0
            if not out[row].any():
                out[row, -1] = 1.0
        return out / np.linalg.norm(out, axis=1, keepdims=True)


def family_of(text: str) -> str | None:
    """The subject family a title or caption names (the first family word in it)."""
    return next((WORD_FAMILY[w] for w in re.findall(r"[a-z]+", text.lower()) if w in WORD_FAMILY), None)


def _captions_of(prompt: str) -> list[str]:
    return re.findall(r"^- (.+)$", prompt.split("\n\n")[0], flags=re.M)


class SlotLLM(TextGenerator):
    """Answers the slot prompts; planted faults:

    * the first answer to the first title prompt it sees is a placeholder ("Title"); the stricter retry is fine;
    * group-title prompts whose members name boats are answered by copying the instruction (both attempts);
    * sentence prompts about a title of the cats family are answered with one word repeated (both attempts);
    * a chunk whose families are all named is answered with an earlier title (rejected as a repeat).
    """

    identity = {"model": "slots-scripted"}

    def __init__(self) -> None:
        self.calls: Counter = Counter()
        self.first_titles: list[list[str]] = []
        self.sentence_prompts: list[str] = []
        self.faulted = False

    def answer(self, p: str) -> str:
        strict = p.endswith(SLOT_STRICT["title"]) or p.endswith(SLOT_STRICT["sentence"])
        if p.startswith("These titles name similar subjects"):
            members = re.findall(r"^- (.+)$", p, flags=re.M)
            fams = {WORD_FAMILY[w] for m in members for w in re.findall(r"[a-z]+", m.lower()) if w in WORD_FAMILY}
            if fams == {"boats"}:
                return "Write one short title of one to four words that covers all of them."
            return f"**{FAMILIES[fams.pop()][0].title()} pictures**" if len(fams) == 1 else "Mixed things"
        if "Write one sentence that describes" in p:
            self.sentence_prompts.append(p)
            title = re.search(r'images of "([^"]+)"', p).group(1)
            if family_of(title) == "cats":
                return "cat cat cat cat cat cat cat cat cat"
            return f"Description: Images that show {title.lower()} in {len(_captions_of(p))} different scenes."
        caps = _captions_of(p)
        if "most common subject" in p and not strict and not self.faulted:
            self.faulted = True
            return "Title"
        if "most common subject" in p:
            self.first_titles.append(caps)
        said = re.search(r"Besides (.+?), what is another", p)
        named = set(re.findall(r'"([^"]+)"', said.group(1))) if said else set()
        named_fams = {WORD_FAMILY[w] for t in named for w in re.findall(r"[a-z]+", t.lower()) if w in WORD_FAMILY}
        words = Counter(w for c in caps for w in re.findall(r"[a-z]+", c.lower()) if w in WORD_FAMILY)
        fams = Counter()
        for w, n in words.items():
            fams[WORD_FAMILY[w]] += n
        for fam, _ in sorted(fams.items(), key=lambda kv: (-kv[1], list(FAMILIES).index(kv[0]))):
            if fam not in named_fams:
                word = max(FAMILIES[fam], key=lambda w: (words[w], w))
                return f"1. {word.title()} photos"
        return sorted(named)[0]  # nothing left to name: repeats an earlier title (rejected)

    def generate(self, prompts, max_new_tokens, stage=None):
        out = []
        for p in prompts:
            self.calls[stage] += 1
            text = self.answer(p)
            out.append(Generation(text=text, prompt_tokens=len(p.split()), completion_tokens=len(text.split()),
                                  cached=False))
        return out


def family_captions(name: str, n: int, families: list[str], seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        fam = families[i % len(families)]
        out.append(f"a photo of a {FAMILIES[fam][int(rng.integers(2))]} in set {name} number {i}")
    return out


@pytest.fixture(scope="module")
def slots(tmp_path_factory):
    captions = {"a": family_captions("a", 30, list(FAMILIES), 1) + [None, " "],
                "b": family_captions("b", 50, list(FAMILIES), 2),
                "c": family_captions("c", 8, ["dogs", "cats"], 3),
                "d": [None, None]}
    llm, encoder = SlotLLM(), KeywordEncoder()
    cache = tmp_path_factory.mktemp("slots_cache")
    result = describe_themes(captions, CachedGenerator(llm, cache), encoder=encoder, seed=3, chunk_size=10,
                             max_chunks=3, chunk_themes=5)
    return {"captions": captions, "llm": llm, "result": result, "cache": cache, "encoder": encoder}


def test_every_used_caption_is_read_once_and_the_rest_is_counted(slots):
    r, captions, llm = slots["result"], slots["captions"], slots["llm"]
    seen = Counter(c for caps in llm.first_titles for c in caps)
    used = {name: [captions[name][i] for chunk in d.chunks for i in chunk] for name, d in r.datasets.items()}
    assert seen == Counter(c for caps in used.values() for c in caps)  # each sent chunk read once, first title
    a, b, c = r.datasets["a"], r.datasets["b"], r.datasets["c"]
    assert sorted(i for ch in a.chunks for i in ch) == list(range(30)) and a.missing == [30, 31] and a.unused == []
    assert len(b.chunks) == 3 and len(b.unused) == 20 and sorted([*b.unused, *(i for ch in b.chunks for i in ch)]) \
        == list(range(50))
    assert len(c.chunks) == 1 and r.settings["titles_asked_per_chunk"]["c"] == 5
    assert r.prompt_version == PROMPT_VERSION == "themes-v2" and r.settings["procedure"] == "slots"


def chunk_families(captions: list, chunks: list[list[int]]) -> list[set[str]]:
    return [{family_of(captions[i]) for i in chunk} for chunk in chunks]


def test_five_themes_are_the_five_families_with_their_chunks(slots):
    r, captions = slots["result"], slots["captions"]
    for name in ("a", "b"):
        d = r.datasets[name]
        present = chunk_families(captions[name], d.chunks)
        assert len(d.themes) == 5 and len({t.title for t in d.themes}) == 5
        assert sorted(family_of(m) for t in d.themes for m in t.members[:1]) == sorted(FAMILIES)
        for t in d.themes:
            fam = family_of(t.members[0])
            assert {family_of(m) for m in t.members} == {fam}  # one family per group, the whole family
            assert t.chunks == tuple(c for c, fams in enumerate(present) if fam in fams) and t.count == len(t.chunks)
            assert len(set(t.members)) == len(t.members) and all(m.endswith("photos") for m in t.members)
            if len(t.members) > 1 and fam != "boats":
                assert t.title == f"{FAMILIES[fam][0].title()} pictures" and t.title_source == "written"
            elif len(t.members) == 1:
                assert t.title == t.members[0] and t.title_source == "chunk"
        counts = [t.count for t in d.themes]
        assert counts == sorted(counts, reverse=True)  # the most common theme first
    # known coverage: each chunk gave one title per family it holds, then one rejected repeat when any was left
    a = r.datasets["a"]
    assert [len(t) for t in a.chunk_titles] == [len(f) for f in chunk_families(captions["a"], a.chunks)]
    assert any(len(t.members) > 1 for t in a.themes + r.datasets["b"].themes if family_of(t.members[0]) == "boats")


def test_fallbacks_are_marked_and_recorded_never_shown_as_written(slots):
    r = slots["result"]
    by_step = {(f.dataset, f.stage, f.step): f for f in r.failures}
    for name in ("a", "b"):
        d = r.datasets[name]
        boats = next(t for t in d.themes if family_of(t.members[0]) == "boats")
        if len(boats.members) > 1:
            assert boats.title_source == "chosen" and boats.title == boats.members[0]
            k = d.themes.index(boats)
            f = by_step[(name, GROUP_STAGE, f"group {k} title")]
            assert len(f.raw) == 2 and "chosen, not written" in f.reasons[-1]
        else:
            assert boats.title_source == "chunk"
        cats = next(t for t in d.themes if family_of(t.members[0]) == "cats")
        assert cats.description_source == "members"
        assert cats.description == "Groups the chunk titles: " + "; ".join(cats.members) + "."
        f = by_step[(name, SENTENCE_STAGE, f"theme {d.themes.index(cats)} sentence")]
        assert f.raw == ["cat cat cat cat cat cat cat cat cat"] * 2 and "repeats itself" in f.reasons[0]
        for t in d.themes:
            if t is not cats:
                assert t.description_source == "written" and t.description.startswith("Images that show")
    shown = json.dumps([t.description for d in r.datasets.values() for t in d.themes])
    assert "cat cat cat" not in shown and "Write one short title" not in json.dumps(r.to_json()["datasets"])
    # c names two families, then repeats itself: that step fails, and so fewer than five themes are reported
    c = r.datasets["c"]
    assert [len(t) for t in c.chunk_titles] == [2] and len(c.themes) == 2
    assert "repeats an earlier title" in by_step[("c", TITLE_STAGE, "chunk 0 title 3")].reasons[0]
    assert "only 2 distinct chunk title(s)" in by_step[("c", GROUP_STAGE, "input")].reasons[0]
    assert not r.datasets["d"].themes and by_step[("d", TITLE_STAGE, "input")].reasons == ["no captions (2 missing)"]
    # the placeholder first answer was retried with the stricter prompt and accepted: no failure for it
    assert not any(f.step == "chunk 0 title 1" and f.dataset == "a" for f in r.failures)
    assert {f.dataset for f in r.failures} == {"a", "b", "c", "d"}


def test_sentences_see_the_theme_s_nearest_captions_and_the_ledger_counts_every_call(slots, tmp_path):
    r, llm = slots["result"], slots["llm"]
    captions = slots["captions"]
    for p in llm.sentence_prompts:
        title = re.search(r'images of "([^"]+)"', p).group(1)
        caps = _captions_of(p)
        name = caps[0].split()[7]
        d = r.datasets[name]
        theme = next(t for t in d.themes if t.title == title)
        pool = [captions[name][i] for c in theme.chunks for i in d.chunks[c]]
        mine = [c for c in pool if family_of(c) == family_of(theme.members[0])]
        assert 1 <= len(caps) <= 6 and all(c in pool for c in caps)
        assert sum(family_of(c) == family_of(theme.members[0]) for c in caps) == min(6, len(mine))
    for stage in (TITLE_STAGE, GROUP_STAGE, SENTENCE_STAGE):
        assert r.ledger["stages"][stage]["calls"] == llm.calls[stage] > 0
    # a rerun is answered from the cache: no call reaches the model
    before = sum(llm.calls.values())
    again = describe_themes(slots["captions"], CachedGenerator(llm, slots["cache"]), encoder=KeywordEncoder(),
                            seed=3, chunk_size=10, max_chunks=3, chunk_themes=5)
    assert sum(llm.calls.values()) == before and again.ledger["cached_calls"] == again.ledger["calls"]
    assert [t.title for t in again.datasets["a"].themes] == [t.title for t in r.datasets["a"].themes]


def test_parse_title_reads_the_slot_and_rejects_what_is_no_title():
    assert parse_title("1. **Dogs**") == "Dogs"
    assert parse_title("The main subject of these images is dogs.") == "Dogs"
    assert parse_title('Title: "Red cars"\nMore text') == "Red cars"
    assert parse_title("- geometric shapes on white") == "Geometric shapes on white"
    assert parse_title("The main subject of this image is a large pink cross.") == "Large pink cross"
    assert parse_title("These images show two large shapes") == "Two large shapes"
    assert parse_title('Title is: "The Hexagon and a Rectangle"') == "Hexagon and a Rectangle"
    for bad, why in (("", "no title"), ("Title", "placeholder"), ("subject", "placeholder"),
                     ("There are many different kinds of shapes in these images.", "not a short title"),
                     ("Dogs", "repeats an earlier"), ("a photo of a dog", "copies a caption"),
                     ("shapes shapes shapes shapes", "repeats itself"), ("Nine shapes of", "unfinished"),
                     ("The most common subject in these images is the rectangle and", "unfinished")):
        with pytest.raises(ThemeParseError, match=why):
            parse_title(bad, avoid=["dogs"], captions=["A photo of a dog."])


def test_parse_sentence_keeps_one_sentence_and_rejects_garbage():
    assert parse_sentence("Description: Dogs run in a park. They are happy.") == "Dogs run in a park."
    assert parse_sentence('"small shapes on a white background"') == "Small shapes on a white background."
    assert parse_sentence("Red cars: Red cars parked along a street.", title="Red cars") == \
        "Red cars parked along a street."
    for bad, why in (("Dogs.", "fewer than four"), ("dog " * 12, "repeats itself"),
                     ("A photo of a dog on grass.", "copies a caption"), ("Red cars on roads", "repeats the title"),
                     (" ".join(["word"] + [f"w{i}x" for i in range(45)]), "more than one")):
        with pytest.raises(ThemeParseError, match=why):
            parse_sentence(bad, title="red cars on roads", captions=["a photo of a dog on grass"])


def test_cluster_titles_finds_the_planted_groups():
    rng = np.random.default_rng(0)
    centres = np.eye(4)[:3]
    rows = np.array([0, 1, 0, 2, 1, 0, 2])
    vectors = centres[rows] + 0.05 * rng.normal(size=(7, 4))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    assert cluster_titles(vectors, 3) == [[0, 2, 5], [1, 4], [3, 6]]
    assert cluster_titles(vectors, 7) == [[i] for i in range(7)] and cluster_titles(vectors[:0], 3) == []



def _greedy_average_linkage(vectors: np.ndarray, k: int) -> list[list[int]]:
    """The clustering as this module did it before scipy: merge the pair of groups of largest mean similarity."""
    sim = vectors @ vectors.T
    groups, total = [[i] for i in range(len(vectors))], sim.copy()
    while len(groups) > k:
        sizes = np.array([len(g) for g in groups], dtype=np.float64)
        mean = total / np.outer(sizes, sizes)
        np.fill_diagonal(mean, -np.inf)
        a, b = sorted(np.unravel_index(int(np.argmax(mean)), mean.shape))
        groups[a] = sorted(groups[a] + groups[b])
        total[a, :] += total[b, :]
        total[:, a] += total[:, b]
        total = np.delete(np.delete(total, b, axis=0), b, axis=1)
        del groups[b]
    return sorted(groups, key=lambda g: g[0])


def test_cluster_titles_by_scipy_equals_the_hand_written_average_linkage():
    for seed in range(60):
        rng = np.random.default_rng(seed)
        n = int(rng.integers(2, 30))
        k = int(rng.integers(1, n + 1))
        vectors = rng.normal(size=(n, 8)) + 3 * (rng.integers(0, 5, n)[:, None] == np.arange(8))
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        groups = cluster_titles(vectors, k)
        assert len(groups) == k and sorted(i for g in groups for i in g) == list(range(n))
        assert groups == _greedy_average_linkage(vectors, k), seed


def test_slots_needs_an_encoder_and_a_known_procedure():
    with pytest.raises(ConfigError, match="needs a text encoder"):
        describe_themes({"a": ["x"]}, SlotLLM())
    with pytest.raises(ConfigError, match="themes.procedure"):
        describe_themes({"a": ["x"]}, SlotLLM(), procedure="tree", encoder=KeywordEncoder())


class CutOff(TextGenerator):
    """Every answer runs into max_new_tokens: a title without an end is rejected, never taken."""

    identity = {"model": "cut-off"}

    def generate(self, prompts, max_new_tokens, stage=None):
        return [Generation(text="The main subject of this image is a large", prompt_tokens=5,
                           completion_tokens=max_new_tokens, cached=False, stop="length") for _ in prompts]


def test_an_answer_cut_off_by_max_new_tokens_is_rejected_and_recorded():
    result = describe_themes({"a": ["A large pink cross on a white background."]}, CutOff(),
                             encoder=KeywordEncoder(), chunk_size=1)
    d = result.datasets["a"]
    assert d.themes == [] and d.chunk_titles == [[]]
    f = next(f for f in result.failures if f.stage == TITLE_STAGE)
    assert f.reasons[:2] == ["cut off at max_new_tokens before the answer ended"] * 2 and len(f.raw) == 2
