"""Does the classifier learn what a linear probe learns? Recipes on real image sets and the planted presets.

    .venv/bin/python benchmarks/bench_learnability.py                      # build the sets if missing, run, tabulate
    .venv/bin/python benchmarks/bench_learnability.py --recipes cpu --seeds 0 --sets photo_jpeg --no-planted

The real sets are rebuilt from registry packages by `benchmarks/real_sets.py` (photos saved two
ways, icon themes, fonts: the difference between their datasets is known by construction). Each
(set or planted preset, recipe) is one `scripts/classify.py` run per seed, with its baselines
(linear probes on the same split and eval view, `bias.experiment.baselines`) and its verdict; finished runs
are reused. The table compares each recipe's mean accuracy over seeds with the best probe: the
target is "at least the best probe minus 2 points".

Run it alone on the machine: the wall times it reports are what a user waits.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
REAL_SETS = ("photo_jpeg", "photo_resample", "photo_upscale", "photo_colour", "icon_themes", "font_glyphs")
PLANTED = ("planted", "planted_color", "planted_texture", "planted_objects", "planted_layout")
TARGET_GAP = 0.02


def classify(data_args: list[str], recipe: str, seeds: list[int], out: Path, log: Path) -> float:
    """One classify command over `seeds` (reused when finished); returns its wall time in seconds."""
    cmd = [sys.executable, str(ROOT / "scripts" / "classify.py"), *data_args, f"recipe={recipe}",
           f"seeds=[{','.join(map(str, seeds))}]", f"out={out}"]
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.time()
    with log.open("w") as f:
        proc = subprocess.run(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed; see {log}")
    return time.time() - start


def collect(out: Path, seeds: list[int]) -> dict:
    runs = [json.loads((out / f"seed{s}" / "results.json").read_text()) for s in seeds]
    acc = np.array([r["accuracy"] for r in runs])
    probes: dict[str, list[float]] = {}
    for r in runs:
        for b in r["baselines"]:
            probes.setdefault(b["name"], []).append(b["accuracy"])
    return {"accuracy": float(acc.mean()), "std": float(acc.std(ddof=1)) if len(acc) > 1 else 0.0,
            "per_seed": acc.tolist(), "chance": runs[0]["chance"], "verdicts": [r["verdict"]["verdict"] for r in runs],
            "probes": {k: float(np.mean(v)) for k, v in probes.items()},
            "wall_s_per_run": float(np.mean([r["wall_time_s"] for r in runs])),
            "n_train": runs[0]["n_train"], "n_val": runs[0]["n_val"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets-dir", type=Path, default=ROOT / "cache" / "real_sets")
    ap.add_argument("--sets", default=",".join(REAL_SETS))
    ap.add_argument("--planted", default=",".join(PLANTED), help="planted presets ('' for none)")
    ap.add_argument("--no-planted", action="store_true")
    ap.add_argument("--planted-before", action="store_true",
                    help="also run the before recipe on the planted presets (their before is the known-answer table)")
    ap.add_argument("--before", default="cpu_convnext", help="the recipe before ('' for none)")
    ap.add_argument("--before-seeds", default="0")
    ap.add_argument("--after", default="cpu", help="the recipe under test")
    ap.add_argument("--seeds", default="0,1,2", help="seeds of the recipe under test")
    ap.add_argument("--per-dataset", type=int, default=2000)
    ap.add_argument("--val-per-dataset", type=int, default=500)
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "learnability")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    recipes = {args.after: seeds}
    if args.before:
        recipes = {args.before: [int(s) for s in args.before_seeds.split(",")], **recipes}
    sets = [s for s in args.sets.split(",") if s]
    planted = [] if args.no_planted else [p for p in args.planted.split(",") if p]

    missing = [s for s in sets if not (args.sets_dir / s / "SET.json").exists()]
    if missing:
        subprocess.run([sys.executable, str(ROOT / "benchmarks" / "real_sets.py"), "--out", str(args.sets_dir),
                        "--sets", ",".join(missing)], check=True)
    jobs = []
    for s in sets:
        meta = json.loads((args.sets_dir / s / "SET.json").read_text())
        paths = "{" + ", ".join(f"{d}: {args.sets_dir / s / d}" for d in meta["datasets"]) + "}"
        jobs.append((s, meta["difference"], ["data=folders", f"data.paths={paths}", f"data.name={s}",
                                             f"data.per_dataset={args.per_dataset}",
                                             f"data.val_per_dataset={args.val_per_dataset}"], False))
    for p in planted:
        jobs.append((p, "planted (synthetic) preset, default budget", [f"data={p}"], not args.planted_before))

    rows = []
    for name, difference, data_args, after_only in jobs:
        row = {"set": name, "difference": difference, "recipes": {}}
        for recipe, recipe_seeds in recipes.items():
            if after_only and recipe != args.after:
                continue
            out = args.out / name / recipe
            wall = classify(data_args, recipe, recipe_seeds, out, args.out / "logs" / f"{name}-{recipe}.log")
            row["recipes"][recipe] = collect(out, recipe_seeds) | {"command_wall_s": wall}
            r = row["recipes"][recipe]
            print(f"{name} / {recipe}: {100 * r['accuracy']:.1f} +- {100 * r['std']:.1f} "
                  f"(probes {', '.join(f'{k} {100 * v:.1f}' for k, v in r['probes'].items())}; "
                  f"verdicts {r['verdicts']}; {r['wall_s_per_run']:.0f} s per run)", flush=True)
        rows.append(row)
    (args.out / "learnability.json").write_text(json.dumps(rows, indent=2))
    md = table(rows, recipes)
    (args.out / "learnability.md").write_text(md)
    print(md)


def table(rows: list[dict], recipes: dict[str, list[int]]) -> str:
    after = list(recipes)[-1]
    head = ["set", "known difference", "n train / val", "chance"] + [f"recipe={r} (seeds {','.join(map(str, s))})"
                                                                      for r, s in recipes.items()] + \
        ["pixels probe", "colour-hist probe", f"target (best probe - {100 * TARGET_GAP:.0f})", "met",
         f"verdicts ({after})", f"s per run ({after})"]
    lines = [f"Accuracy % (mean +- std over seeds); probes from the recipe={after} runs (mean over its seeds).", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        a = row["recipes"][after]
        best = max(a["probes"].values()) if a["probes"] else float("nan")
        cells = [row["set"], row["difference"], f"{a['n_train']} / {a['n_val']}", f"{100 * a['chance']:.1f}"]
        cells += [f"{100 * row['recipes'][r]['accuracy']:.1f} +- {100 * row['recipes'][r]['std']:.1f}"
                  if r in row["recipes"] else "-" for r in recipes]
        cells += [f"{100 * a['probes'].get('pixels', float('nan')):.1f}",
                  f"{100 * a['probes'].get('colour_hist', float('nan')):.1f}",
                  f"{100 * (best - TARGET_GAP):.1f}", "yes" if a["accuracy"] >= best - TARGET_GAP else "**no**",
                  ", ".join(a["verdicts"]), f"{a['wall_s_per_run']:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
