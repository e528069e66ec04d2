"""The offline `tags` captioner: a short text per image from the packaged classifiers' confident classes.

No captioning model installs from the package registries, so describe writes its own captions from what the
packaged models see (docs: ../shared/reference/packaged_models.md):

* the ImageNet-1k classes of the packaged EfficientNet-Lite0 (`imagenet_cls`, the describe config's ``imagenet``
  section, the same outputs the objects stage reads, cached by content): the top-1 class, and each other stored
  class with probability >= ``min_prob``, each with its broader WordNet levels (`describe.hierarchy`: a
  "tabby cat" is also "a cat, a mammal, an animal");
* the LVIS classes of the ``object_det`` side output and the ADE20K classes of ``seg`` where those stores exist.

The caption reads "a tabby cat (a kind of cat, feline, mammal, animal); also a remote control; in a scene with
wall, floor". It is what the classifiers saw, not a description: classes they do not know (icons, text,
diagrams) come out as their nearest ImageNet class. Every caption records which sources wrote it
(`source_record`), and describe's report names the captioner. A caption is None (with the reason) when no
source has an output for the image.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

TAGS = "tags"
#: the tags captioner's version (in the caption source record; change it when the text changes)
TAGS_VERSION = 1
#: broader WordNet levels named per ImageNet class in a caption
CAPTION_LEVELS = 12
#: LVIS / ADE20K classes named per caption (the most present first)
SIDE_CLASSES = 5
_VOWEL_SOUND = ("a", "e", "i", "o", "u")


#: class names that are mass nouns or plural-only: no article ("text", "food", not "a text")
MASS_NOUNS = frozenset(["text", "food", "produce", "equipment", "clothing", "furniture", "footwear", "hardware",
                        "software", "foodstuff", "beverage", "seafood", "meat", "bread", "pasta", "fruit", "sand",
                        "water", "grass", "snow", "sky", "paper", "cloth", "fabric", "jewelry", "sports equipment",
                        "rolling stock"])


def with_article(name: str) -> str:
    """'a tabby cat', 'an Egyptian cat' (a vowel letter takes "an": close enough for class names); a mass noun
    ("text", "food", `MASS_NOUNS`) takes none."""
    name = " ".join(str(name).replace("_", " ").split())
    if name.lower() in MASS_NOUNS:
        return name
    return f"{'an' if name[:1].lower() in _VOWEL_SOUND else 'a'} {name}"


def class_phrase(name: str, broader: Sequence[str] = ()) -> str:
    """'a tabby cat (a kind of cat, feline, mammal)': the class with its article and its broader levels."""
    phrase = with_article(name)
    levels = [b for b in broader if b.lower() != name.lower()][:CAPTION_LEVELS]
    return f"{phrase} (a kind of {', '.join(levels)})" if levels else phrase


def tag_caption(imagenet: Sequence[str], broader: Mapping[str, Sequence[str]] | None = None,
                lvis: Sequence[str] = (), ade20k: Sequence[str] = ()) -> str | None:
    """One image's caption from its classes (most confident first); None when there are none."""
    broader = broader or {}
    parts = []
    if imagenet:
        parts.append(class_phrase(imagenet[0], broader.get(imagenet[0], ())))
        parts += [f"or {class_phrase(c, broader.get(c, ()))}" for c in imagenet[1:]]
    text = ", ".join(parts)
    if lvis:
        text += ("; also " if text else "") + ", ".join(with_article(c) for c in lvis[:SIDE_CLASSES])
    if ade20k:
        text += ("; " if text else "") + "in a scene with " + ", ".join(c.replace("_", " ")
                                                                      for c in ade20k[:SIDE_CLASSES])
    return text or None


def _ordered_classes(presence: Any, row: int, probs: np.ndarray | None = None) -> list[str]:
    cols = np.flatnonzero(presence.present[row])
    if probs is not None:
        cols = cols[np.argsort(-probs[row, cols], kind="stable")]
    return [presence.classes[int(c)] for c in cols]


def imagenet_probabilities(store: Any, sha1s: Sequence[str]) -> np.ndarray:
    """[n, 1000] stored top-k probabilities of each image (0 where not stored): the order of its classes."""
    import pyarrow.compute as pc

    from describe.objects import _rows

    out = np.zeros((len(sha1s), 1000), dtype=np.float32)
    rows = _rows(store, "classes")
    if not len(rows):
        return out
    from bias.core.strings import sha1_array

    pos: dict[bytes, list[int]] = {}
    for i, s in enumerate(sha1_array(sha1s)):
        pos.setdefault(bytes(s), []).append(i)
    ids = rows["class_id"].to_numpy(zero_copy_only=False)
    probs = pc.cast(rows["prob"], "float32").to_numpy(zero_copy_only=False)
    for k, c, p in zip(sha1_array(rows["sha1"]), ids, probs):
        for i in pos.get(bytes(k), ()):
            out[i, int(c)] = p
    return out


def tag_captions(imagenet: Any, probs: np.ndarray | None = None, lvis: Any = None, ade20k: Any = None
                 ) -> tuple[list[str | None], dict[int, str]]:
    """Captions of every image from its `describe.objects.Presence` rows (imagenet required, lvis and ade20k
    optional), and row -> reason for each image without a caption."""
    from describe.hierarchy import broader_names

    captions: list[str | None] = []
    missing: dict[int, str] = {}
    for i in range(imagenet.n_images):
        classes = _ordered_classes(imagenet, i, probs) if imagenet.has_output[i] else []
        side_l = _ordered_classes(lvis, i) if lvis is not None and lvis.has_output[i] else []
        side_a = _ordered_classes(ade20k, i) if ade20k is not None and ade20k.has_output[i] else []
        text = tag_caption(classes, {c: broader_names(c) for c in classes}, side_l, side_a)
        captions.append(text)
        if text is None:
            reasons = [m["reason"] for m in imagenet.missing if m["index"] == i]
            missing[i] = f"tags captioner: no classifier output ({'; '.join(reasons) or 'no class'})"
    return captions, missing


def source_record(transform: Any, min_prob: float, side: Sequence[str]) -> dict[str, Any]:
    """What wrote the tags captions (inputs.json ``caption_source``)."""
    return {"transform": TAGS, "captioner": TAGS, "version": TAGS_VERSION,
            "model": {"imagenet": {"model_name": transform.model_name, "size": transform.size,
                                   **(transform.model_identity() or {})}},
            "rule": f"the top-1 ImageNet-1k class and any other with probability >= {min_prob}, each with its "
                    f"broader WordNet levels" + (f"; plus the {', '.join(side)} classes" if side else ""),
            "sources": ["imagenet", *side]}
