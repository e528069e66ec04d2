"""Ground-truth captions of planted images, written from the generator's record of what it drew.

`bias.data.planted.render_scene` records every part of a planted image (objects with their shapes,
fill colours, sizes and positions; the background; graphics and text; texture; the global colour
change). This module turns a record into English, in the two forms of the caption transforms:

* `short_caption`: one sentence, as "Describe this image in one sentence." asks for: how many
  objects and of which shapes (the two most frequent, when there are more than three kinds), their
  size when they share one, the background, and whether there is text or a graphic. E.g. "Three large
  shapes (two circles and a star) on a white background, with a logo."
* `long_caption`: one paragraph, as "Describe this image in one paragraph." asks for: every object
  with its colour, size and place, then the background, the graphic and the words written, the
  texture and the global colour change.

These are not a model's captions: they are what the generator knows it drew, so a classifier on them
measures what the *content* of the planted datasets says, with no captioner in between (the caption
transforms call this captioner `planted_scene`). Colours are named from the RGB they were drawn with
(`colour_name`: hue, lightness and saturation bands), sizes from the object's diameter as a share of
the image side (`size_name`), places from the third of the image the centre lies in (`place_name`).
"""

from __future__ import annotations

import colorsys
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

#: hue band upper bounds in degrees -> name (the last band wraps back to red)
HUES = ((15, "red"), (40, "orange"), (68, "yellow"), (160, "green"), (195, "teal"), (255, "blue"),
        (290, "purple"), (335, "pink"), (360, "red"))
#: object diameter / image side: below the first bound "small", below the second "medium", else "large"
SIZE_BOUNDS = (0.15, 0.3)
NUMBERS = ("no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve")
TEXTURES = {"none": "", "noise": "The image is grainy, with fine noise all over it.",
            "stripes": "Fine stripes run across the whole image.", "blur": "The whole image is slightly blurred."}
GRAPHICS = {"banner": "banner", "bar": "bar", "logo": "logo", "frame": "frame"}
#: a global shift of at least this many grey levels is worth a sentence
SHIFT_NOTICED = 8


def colour_name(rgb: Sequence[int]) -> str:
    """A plain English name of an RGB colour (0-255): black, white, greys, or '[dark |light ]<hue>'."""
    h, s, v = colorsys.rgb_to_hsv(*(float(c) / 255.0 for c in rgb))
    if v < 0.18:
        return "black"
    if s < 0.15:
        if v > 0.9:
            return "white"
        return "light grey" if v > 0.65 else "grey" if v > 0.35 else "dark grey"
    degrees = h * 360.0
    hue = next(name for bound, name in HUES if degrees < bound or bound == 360)
    if v < 0.45:
        return f"dark {hue}"
    if s < 0.35 and v > 0.7:
        return f"light {hue}"
    return hue


def size_name(size: float) -> str:
    return "small" if size < SIZE_BOUNDS[0] else "medium" if size < SIZE_BOUNDS[1] else "large"


def place_name(center: Sequence[float]) -> str:
    """Where a point (x, y in fractions of the side, from the top left) lies, by thirds of the image:
    'in the top left', 'at the top', 'on the left', 'in the centre', ..."""
    x, y = (min(2, max(0, int(c * 3))) for c in center)
    row, col = ("top", "middle", "bottom")[y], ("left", "middle", "right")[x]
    if row == col == "middle":
        return "in the centre"
    if row == "middle":
        return f"on the {col}"
    if col == "middle":
        return f"at the {row}"
    return f"in the {row} {col}"


def number(n: int) -> str:
    return NUMBERS[n] if 0 <= n < len(NUMBERS) else str(n)


def plural(shape: str, n: int) -> str:
    if n == 1:
        return shape
    return shape + ("es" if shape.endswith(("s", "x", "ch", "sh")) else "s")


def counted(shape: str, n: int) -> str:
    """'a star', 'two crosses'."""
    return f"{article(shape)} {shape}" if n == 1 else f"{number(n)} {plural(shape, n)}"


def article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def listing(items: Sequence[str]) -> str:
    """'a', 'a and b', 'a, b and c'."""
    items = list(items)
    if len(items) <= 2:
        return " and ".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def shape_counts(objects: Sequence[Mapping[str, Any]]) -> list[tuple[str, int]]:
    """(shape, count) pairs, the most frequent first, ties by name."""
    counts = Counter(o["shape"] for o in objects)
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))


def background_phrase(background: Mapping[str, Any]) -> str:
    """'a white background', 'a cluttered dark green background', 'a gradient from blue to orange'."""
    kind = background["kind"]
    if kind == "white":
        return "a white background"
    colour = colour_name(background["rgb"])
    if kind == "gradient":
        end = colour_name(background["rgb_end"])
        return f"a {colour} background" if end == colour else f"a background fading from {colour} to {end}"
    if kind == "cluttered":
        return f"a cluttered {colour} background"
    return f"a plain {colour} background"


def _overlay_words(overlays: Mapping[str, Any]) -> list[str]:
    graphic = overlays.get("graphic")
    words = [t["text"] for t in overlays.get("text", [])]
    if graphic and graphic.get("text") and graphic["kind"] == "banner":
        words.insert(0, graphic["text"])
    return words


def short_caption(record: Mapping[str, Any]) -> str:
    """One sentence: the objects by shape (and size, when they share one), the background, text or a graphic."""
    objects = record["objects"]
    counts = shape_counts(objects)
    sizes = {size_name(o["size"]) for o in objects}
    size = f"{sizes.pop()} " if len(sizes) == 1 else ""
    if not objects:
        subject = "Nothing but"
        where = background_phrase(record["background"])
        sentence = f"{subject} {where}"
    else:
        if len(objects) == 1:
            only = objects[0]
            subject = f"{article(size or colour_name(only['rgb']))} {size}{colour_name(only['rgb'])} {only['shape']}"
        elif len(counts) == 1:
            subject = f"{number(len(objects))} {size}{plural(counts[0][0], len(objects))}"
        elif len(counts) <= 3:
            subject = f"{number(len(objects))} {size}shapes ({listing([counted(s, n) for s, n in counts])})"
        else:
            most = listing([counted(s, n) for s, n in counts[:2]])
            subject = f"{number(len(objects))} {size}shapes of {number(len(counts))} kinds, including {most},"
        sentence = f"{subject} on {background_phrase(record['background'])}"
    extras = []
    graphic = record["overlays"].get("graphic")
    if graphic:
        extras.append(f"{article(graphic['kind'])} {GRAPHICS[graphic['kind']]}")
    if record["overlays"].get("text"):
        extras.append("text")
    if extras:
        sentence += ", with " + " and ".join(extras)
    return sentence[0].upper() + sentence[1:] + "."


def long_caption(record: Mapping[str, Any]) -> str:
    """One paragraph: every object (colour, size, place), the background, graphic, words, texture, colour cast."""
    objects = record["objects"]
    sentences = []
    n = len(objects)
    where = background_phrase(record["background"])
    if n == 0:
        sentences.append(f"The image shows {where} with no objects on it.")
    else:
        kinds = listing([counted(s, c) for s, c in shape_counts(objects)])
        sentences.append(f"The image shows {number(n)} {plural('object', n)} on {where}: {kinds}.")
        for shape, count in shape_counts(objects):
            mine = [o for o in objects if o["shape"] == shape]
            if count == 1:
                sentences.append(f"There is {_object_phrase(mine[0], shape)}.")
            else:
                sentences.append(f"The {plural(shape, count)} are {listing([_object_phrase(o, 'one') for o in mine])}.")
    if record["background"]["kind"] == "cluttered":
        sentences.append(f"Behind them, {number(int(record['background']['clutter']))} faint rectangles, ellipses "
                         "and lines clutter the background.")
    graphic = record["overlays"].get("graphic")
    if graphic:
        colour = colour_name(graphic["rgb"])
        kind = graphic["kind"]
        if kind == "banner":
            sentences.append(f"A {colour} banner runs along the {graphic['side']} of the image.")
        elif kind == "bar":
            sentences.append(f"A {colour} bar runs along the {graphic['side']} edge.")
        elif kind == "logo":
            sentences.append(f"A small {colour} {graphic['shape']} logo with the letter {graphic['text']} sits in the "
                             f"{graphic['side']} corner.")
        else:
            sentences.append(f"A {colour} frame borders the image.")
    words = _overlay_words(record["overlays"])
    if words:
        quoted = listing([f'"{w}"' for w in words])
        sentences.append(f"The text {quoted} is written on it." if len(words) == 1 else
                         f"The words {quoted} are written on it.")
    texture = TEXTURES.get(record.get("texture", "none"), "")
    if texture:
        sentences.append(texture)
    sentences += _colour_sentences(record.get("color") or {})
    return " ".join(sentences)


def _object_phrase(obj: Mapping[str, Any], noun: str) -> str:
    """'a small red star with an outline in the top left' (noun 'one' for an object of a named group)."""
    description = f"{size_name(obj['size'])} {colour_name(obj['rgb'])}"
    outline = " with an outline" if obj["outlined"] else ""
    return f"{article(description)} {description} {noun}{outline} {place_name(obj['center'])}"


def _colour_sentences(color: Mapping[str, Any]) -> list[str]:
    out = []
    shift = list(color.get("shift") or [0, 0, 0])
    mean = sum(shift) / 3 if shift else 0.0
    if mean <= -SHIFT_NOTICED:
        out.append("The whole image is darkened.")
    elif mean >= SHIFT_NOTICED:
        out.append("The whole image is brightened.")
    if shift and shift[0] - shift[2] >= SHIFT_NOTICED:
        out.append("It has a warm, reddish cast.")
    elif shift and shift[2] - shift[0] >= SHIFT_NOTICED:
        out.append("It has a cool, bluish cast.")
    saturation = float(color.get("saturation", 1.0))
    if saturation < 0.8:
        out.append("Its colours are muted.")
    elif saturation > 1.25:
        out.append("Its colours are vivid.")
    return out


CAPTIONS = {"short": short_caption, "long": long_caption}


def scene_caption(record: Mapping[str, Any], form: str) -> str:
    """The `form` ('short' or 'long') caption of a scene record."""
    if form not in CAPTIONS:
        raise ValueError(f"caption form must be one of {sorted(CAPTIONS)}, got {form!r}")
    return CAPTIONS[form](record)
