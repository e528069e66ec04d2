"""Rebuild describe/data/imagenet_hierarchy.json: each ImageNet-1k class's broader WordNet levels, readable
(and those of the LVIS and ADE20K class names, by their first WordNet noun sense).

ImageNet-1k classes are WordNet 3.0 noun synsets (timm ships their ids, timm/data/_info/imagenet_synsets.txt:
"n02123045" is offset 02123045 of data.noun). This reads Debian's `wordnet-base` database
(apt-get install wordnet-base: /usr/share/wordnet/data.noun), walks each class's hypernyms (and instance
hypernyms) up to the root, and writes per class its ancestors, nearest first, each as its first lemma
("tabby cat" -> cat, feline, carnivore, placental, mammal, vertebrate, chordate, animal). Levels that say
nothing about what an image shows (entity, physical entity, object, whole, abstraction, ...) are left out
(`TOO_ABSTRACT`). The file is committed, so describe needs no WordNet at run time.

    python benchmarks/build_imagenet_hierarchy.py [--wordnet /usr/share/wordnet] [--out describe/data/...]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

#: WordNet levels too abstract to name what an image depicts (first lemmas)
TOO_ABSTRACT = frozenset("""entity physical_entity object whole abstraction matter causal_agent unit
living_thing organism artifact instrumentality part relation psychological_feature attribute group
thing measure physical_object substance solid location region point sphere""".split())


def read_nouns(folder: Path) -> dict[str, tuple[str, list[str]]]:
    """offset -> (first lemma, hypernym offsets) of every noun synset in data.noun."""
    out = {}
    for line in (folder / "data.noun").read_text(encoding="latin-1").splitlines():
        if line.startswith(" "):
            continue  # the licence header
        fields = line.split(" | ")[0].split()
        offset, n_words = fields[0], int(fields[3], 16)
        lemma = fields[4]
        rest = fields[4 + 2 * n_words:]
        n_ptr = int(rest[0])
        hypernyms = [rest[1 + 4 * k + 1] for k in range(n_ptr) if rest[1 + 4 * k] in ("@", "@i")]
        out[offset] = (lemma, hypernyms)
    return out


def ancestors(offset: str, nouns: dict[str, tuple[str, list[str]]]) -> list[str]:
    """The readable ancestors of a synset, nearest first (breadth first over every hypernym path)."""
    seen, order, frontier = {offset}, [], [offset]
    while frontier:
        nxt = []
        for o in frontier:
            for h in nouns[o][1]:
                if h not in seen:
                    seen.add(h)
                    order.append(h)
                    nxt.append(h)
        frontier = nxt
    names = []
    for o in order:
        lemma = nouns[o][0]
        if lemma.lower() not in TOO_ABSTRACT:
            name = lemma.replace("_", " ")
            if name not in names:
                names.append(name)
    return names


def first_senses(folder: Path) -> dict[str, str]:
    """noun lemma (lower case, underscores) -> the offset of its first (most frequent) sense, from index.noun."""
    out = {}
    for line in (folder / "index.noun").read_text(encoding="latin-1").splitlines():
        if line.startswith(" "):
            continue
        fields = line.split()
        n_synsets, n_ptr = int(fields[2]), int(fields[3])
        offsets = fields[4 + n_ptr + 2:]
        if len(offsets) == n_synsets and offsets:
            out[fields[0]] = offsets[0]
    return out


def by_name(names: list[list[str]], senses: dict[str, str], nouns: dict[str, tuple[str, list[str]]]
            ) -> dict[str, list[str]]:
    """class name -> ancestors of the first WordNet noun sense of its first synonym WordNet knows (the class
    itself, when it is a WordNet lemma, is the first entry's own synset: its ancestors start above it)."""
    table = {}
    for synonyms in names:
        for word in synonyms:
            offset = senses.get(word.lower().replace(" ", "_"))
            if offset is not None:
                table[synonyms[0]] = ancestors(offset, nouns)
                break
    return table


def compact_json(value: object, depth: int = 0) -> str:
    """JSON with one line per class (a dict of lists), so the committed file stays small and diffs readably."""
    if isinstance(value, dict) and any(isinstance(v, (dict, list)) for v in value.values()):
        inner = ",\n".join(f"{json.dumps(k)}: {compact_json(v, depth + 1).strip()}" for k, v in sorted(value.items()))
        return "{\n" + inner + "\n}" + ("\n" if depth == 0 else "")
    return json.dumps(value)


def main() -> None:
    import timm

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--wordnet", default="/usr/share/wordnet")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "describe" / "data" /
                                             "imagenet_hierarchy.json"))
    args = parser.parse_args()
    from transforms.neural.imagenet import imagenet_classes

    synsets = (Path(timm.__file__).parent / "data" / "_info" / "imagenet_synsets.txt").read_text().split()
    nouns = read_nouns(Path(args.wordnet))
    classes = imagenet_classes()
    if [s for s, _ in classes] != synsets:
        raise SystemExit("timm's class table and imagenet_synsets.txt disagree")
    table = {name: ancestors(synset[1:], nouns) for synset, name in classes}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    senses = first_senses(Path(args.wordnet))
    data = Path(__file__).resolve().parents[1] / "transforms" / "neural" / "data"
    lvis = [c["synonyms"] or [c["name"]] for c in json.loads((data / "lvis_v1.json").read_text())["categories"]]
    lvis = [[c["name"], *s] for c, s in zip(json.loads((data / "lvis_v1.json").read_text())["categories"], lvis)]
    ade = [[c] for c in json.loads((data / "ade20k.json").read_text())["classes"]]
    payload = {"source": "WordNet 3.0 (Debian wordnet-base), hypernyms and instance hypernyms, first lemmas; "
                         "built by benchmarks/build_imagenet_hierarchy.py",
               "too_abstract": sorted(TOO_ABSTRACT), "broader": table,
               "by_name_rule": "LVIS and ADE20K classes carry no synset id here: the first WordNet noun sense of the "
                               "first synonym WordNet knows (a heuristic: 'mouse' is the animal)",
               "by_name": {"lvis": by_name(lvis, senses, nouns), "ade20k": by_name(ade, senses, nouns)}}
    out.write_text(compact_json(payload))
    print(f"{len(table)} ImageNet classes, {len(payload['by_name']['lvis'])} LVIS and "
          f"{len(payload['by_name']['ade20k'])} ADE20K names -> {out}")


if __name__ == "__main__":
    main()
