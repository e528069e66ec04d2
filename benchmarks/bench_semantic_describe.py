"""describe's known answers on real images: each dataset's top trait must name its known category.

    .venv/bin/python benchmarks/bench_semantic_describe.py [--sets DIR] [--cache DIR] [--runs DIR] [--only a,b]

Builds the sets of benchmarks/semantic_sets.py when missing, runs `scripts/describe_data.py data=folders ...` on each
with the offline defaults (nothing else overridden), and reads each dataset's top trait from the differences
stage: its findings (``finding``: proposed for it, q < differences.q, more common in it) ordered by AUROC, the
first. The trait names the
known category when its words, or the broader WordNet levels of the class it names (`describe.hierarchy`), hold
one of the category's words (`CATEGORY_WORDS`): "a tabby" names "animals" (tabby -> cat -> ... -> animal). The
control set (two random halves of one folder) passes when no trait is significant. Prints one line per dataset
and a verdict; writes OUT/<set>/known_answers.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.semantic_sets import SETS  # noqa: E402
from describe.hierarchy import broader_names  # noqa: E402

#: the words that name each known category: its name and its narrower classes, i.e. the Unicode subcategories of
#: the emoji it holds (emoji.json: animal-mammal, ..., food-fruit, food-vegetable, food-prepared, food-asian,
#: food-sweet, drink, dishware; transport-ground/water/air), plus WordNet's word for the category; a class whose
#: broader WordNet levels hold one of these names it too
CATEGORY_WORDS = {"animals": {"animal", "mammal", "bird", "fish", "insect", "bug", "reptile", "amphibian"},
                  "food and drink": {"food", "drink", "beverage", "fruit", "vegetable", "dish", "sweet", "dessert"},
                  "vehicles": {"vehicle", "conveyance", "transport", "aircraft", "vessel", "craft"}}


def names_category(finding: dict, category: str) -> bool:
    words = CATEGORY_WORDS.get(category)
    if words is None:
        return False
    text = finding["text"].lower()
    classes = [o["class"].replace("_", " ") for o in (finding.get("evidence") or {}).get("objects") or []]
    levels = {lv.lower() for c in classes for lv in [c, *broader_names(c)]}
    tokens = {w.rstrip("s") for w in text.replace("/", " ").split()} | {w for w in text.split()}
    return bool(words & (tokens | levels))


def top_trait(diff: dict, dataset: str) -> dict | None:
    found = [h for h in diff["hypotheses"] if h["dataset"] == dataset and h.get("finding")]
    return max(found, key=lambda h: h["auroc"]) if found else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sets", type=Path, default=ROOT / "cache" / "semantic_sets")
    ap.add_argument("--cache", type=Path, default=ROOT / "cache")
    ap.add_argument("--runs", type=Path, default=ROOT / "runs" / "semantic_sets")
    ap.add_argument("--only", default=",".join(SETS))
    ap.add_argument("--extra", nargs="*", default=[], help="more describe overrides (default: none)")
    args = ap.parse_args(argv)
    ok = True
    for name in args.only.split(","):
        spec = SETS[name]
        if not (args.sets / name / "SET.json").exists():
            subprocess.run([sys.executable, str(ROOT / "benchmarks" / "semantic_sets.py"), "--out", str(args.sets),
                            "--sets", name], check=True)
        paths = ", ".join(f"{d}: {args.sets / name / d}" for d in spec.datasets)
        out = args.runs / name
        start = time.perf_counter()
        subprocess.run([sys.executable, str(ROOT / "scripts" / "describe_data.py"), "data=folders",
                        f"data.paths={{{paths}}}", f"cache_dir={args.cache}", f"out={out}", *args.extra], check=True,
                       stdout=subprocess.DEVNULL)
        seconds = time.perf_counter() - start
        status = json.loads((out / "stages.json").read_text())["differences"]
        if status["status"] != "done":
            print(f"{name}: the differences stage {status['status']}: {status.get('reason')}")
            ok = False
            continue
        diff = json.loads((out / "differences.json").read_text())
        inputs = json.loads((out / "inputs.json").read_text())
        rows = []
        for d, (_, category) in spec.datasets.items():
            top = top_trait(diff, d)
            passed = (top is None) if spec.halves else (top is not None and names_category(top, category))
            ok &= passed
            rows.append({"dataset": d, "category": category, "passed": passed, "top": top and {
                k: top[k] for k in ("text", "auroc", "share_in", "share_out", "q", "proposer")}})
            line = "no significant trait" if top is None else (
                f'"{top["text"]}" AUROC {top["auroc"]:.2f}, {100 * top["share_in"]:.0f}% vs '
                f'{100 * top["share_out"]:.0f}% of images, q {top["q"]:.3g}, proposed by {top["proposer"]}')
            print(f"{name} / {d} (known: {category}): {line} -> {'PASS' if passed else 'FAIL'}")
        (out / "known_answers.json").write_text(json.dumps(
            {"set": name, "seconds": round(seconds, 1), "captioner": inputs.get("captioner"),
             "sample": inputs.get("sample"), "datasets": rows}, indent=1) + "\n")
        print(f"{name}: {seconds:.0f} s, captioner {inputs.get('captioner')}, images {inputs['sample']['used']}")
    print("all known answers found" if ok else "SOME KNOWN ANSWERS MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
