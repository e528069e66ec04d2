"""The default bias table on real image sets: does every row learn what its probe learns? (issue 21)

    python benchmarks/real_sets.py --out cache/real_sets --sets icon_themes,font_glyphs,photo_jpeg,photo_upscale --per-dataset 3100
    python benchmarks/bench_table_sweep.py --root cache/real_sets --sets icon_themes,font_glyphs,photo_jpeg,photo_upscale \\
        --per-dataset 2500 --val-per-dataset 600 --out runs/table_sweep [-- Hydra overrides for every run]

For each set this runs the documented table command (`scripts/table.py data=folders ...`, the default
`table: classical` rows, the default recipe, seed 0 unless `--seeds`), times it, then reads every row's
`results.json` and writes `<out>/sweep.md` and `sweep.json`: per cell the val accuracy, the final train
accuracy, the best probe (name and accuracy), the verdict, and whether the cell meets the issue's target
(verdict learned and accuracy >= best probe - 2 points). A cell within 3 points of its probe or of that line
is rerun with `--zone-seeds` seeds (default 3, through the same table command with `rows=[...]`), and their
mean decides: the accuracy, and the verdict of the mean run (mean train and val accuracy, mean probes).
Finished runs are reused, so an interrupted sweep resumes.
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
from bias.experiment.verdict import above_chance, current_verdict, learnability_verdict, stored_options  # noqa: E402

TARGET = 0.02   # accuracy >= best probe - 2 points
SEEDS_ZONE = 0.03  # within 3 points of the probe or of that line, a single seed does not decide: use 3 seeds


def set_paths(folder: Path) -> dict[str, str]:
    """The datasets of a real set, in the order its SET.json lists them."""
    meta = json.loads((folder / "SET.json").read_text())
    return {name: str((folder / name).resolve()) for name in meta["datasets"]}


def run_set(name: str, folder: Path, args: argparse.Namespace, overrides: list[str]) -> dict:
    paths = "{" + ", ".join(f"{k}: {v}" for k, v in set_paths(folder).items()) + "}"
    base = [sys.executable, str(ROOT / "scripts" / "table.py"), "data=folders", f"data.paths={paths}",
            f"data.per_dataset={args.per_dataset}", f"data.val_per_dataset={args.val_per_dataset}", "examples=0"]
    out = args.out / name
    cmd = [*base, f"seeds=[{','.join(map(str, args.seeds))}]", f"table_out={out}", *overrides]
    seconds = _table(name, cmd, args.out / f"{name}.log")
    result = {"set": name, "seconds": round(seconds, 1), "command": " ".join(cmd[1:]), "cells": cells(out)}
    undecided = [c for c in result["cells"] if not c["decided"]]
    if undecided and args.zone_seeds > len(args.seeds):
        # the rows within 3 points: rerun them over seeds 0..zone_seeds-1 (the finished seeds are reused)
        specs = [row_spec(c) for c in undecided]
        seeds_out = args.out / f"{name}-seeds"
        cmd = [*base, "rows=[" + ",".join(f'"{s}"' for s in specs) + "]",
               f"seeds=[{','.join(map(str, range(args.zone_seeds)))}]", f"table_out={seeds_out}", *overrides]
        result["seeds_seconds"] = round(_table(f"{name}: {len(specs)} rows x {args.zone_seeds} seeds", cmd,
                                               args.out / f"{name}-seeds.log"), 1)
        result["seeds_command"] = " ".join(cmd[1:])
        by_label = {c["row"]: c for c in cells(seeds_out)}
        result["cells"] = [by_label.get(c["row"], c) for c in result["cells"]]
    return result


def _table(what: str, cmd: list[str], log_path: Path) -> float:
    """Run one table command, its output in `log_path`; the seconds it took."""
    print(f"[{what}] {' '.join(cmd[1:])}", flush=True)
    start = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        raise SystemExit(f"[{what}] the table command failed ({proc.returncode}); see {log_path}")
    return time.perf_counter() - start


def row_spec(cell: dict) -> str:
    """The table's row syntax for a cell, from its label: `name`, or `name (k=v, k=v)` -> `name:k=v,k=v`.

    The label holds the parameters the row was given (`table.row_label`); table.json's `params` may hold the
    transform's resolved ones, lists included, which the row syntax cannot carry."""
    name, sep, rest = cell["row"].partition(" (")
    return name if not sep else name + ":" + rest.removesuffix(")").replace(", ", ",")


def cells(table_dir: Path) -> list[dict]:
    out = []
    for row in json.loads((table_dir / "table.json").read_text()):
        runs = [json.loads((ROOT / d / "results.json").read_text()) for d in row["run_dirs"]]  # relative: to ROOT
        acc = [r["accuracy"] for r in runs]
        train = [r["verdict"]["final_train_accuracy"] for r in runs]
        probes: dict[str, list[float]] = {}
        for r in runs:
            for b in r.get("baselines") or []:
                probes.setdefault(b["name"], []).append(b["accuracy"])
        best = max(probes, key=lambda k: sum(probes[k]) / len(probes[k])) if probes else None
        best_acc = sum(probes[best]) / len(probes[best]) if best else float("nan")
        mean = sum(acc) / len(acc)
        verdicts = [current_verdict(r) for r in runs]  # as this code decides it from the run's stored numbers
        gap = mean - best_acc
        n_val = int(runs[0]["n_val"])
        # The cell is judged on the mean over its seeds, as the issue asks: the verdict of the mean run (mean train
        # and val accuracy, mean probes, the runs' margins). Near the significance line single seeds split
        # (52.0% and 52.4% on 1,200 images fall on either side of it); the mean does not depend on which did.
        stored = runs[0]["verdict"]
        cell_verdict = learnability_verdict(
            [{"train_acc": sum(train) / len(train)}], stored["train_chance"], mean,
            [{"name": k, "accuracy": sum(v) / len(v)} for k, v in probes.items()],
            stored_options(stored), n_val=n_val)["verdict"]
        learned = cell_verdict == "learned"
        # the other acceptable outcome: the information is absent, the row under-fit with all probes at chance
        absent = cell_verdict == "under-fit" and not any(
            above_chance(sum(a) / len(a), n_val, runs[0]["chance"]) for a in probes.values())
        out.append({"row": row["label"], "transform": row["transform"], "params": row.get("params") or {},
                    "family": runs[0].get("family"), "accuracy": mean, "seeds": len(acc),
                    "train_accuracy": sum(train) / len(train), "best_probe": best, "probe_accuracy": best_acc,
                    "chance": runs[0]["chance"], "verdict": cell_verdict, "verdicts": verdicts, "gap": gap,
                    "absent": absent, "meets": (learned and gap >= -TARGET) or absent,
                    "decided": len(acc) >= 3 or absent or not in_seed_zone(gap),
                    "train_time_s": sum(r.get("train_time_s", 0) for r in runs)})
    return out


def verdict_text(cell: dict) -> str:
    """The cell's verdict (of the mean over seeds), with the seeds' own where they differ from it."""
    same = set(cell["verdicts"]) == {cell["verdict"]}
    return cell["verdict"] + ("" if same else f" (seeds: {', '.join(cell['verdicts'])})")


def in_seed_zone(gap: float) -> bool:
    """Within 3 points of the probe (|gap| <= 3) or of the target line (|gap + 2| <= 3): one seed does not decide."""
    return -(TARGET + SEEDS_ZONE) <= gap <= SEEDS_ZONE


def pct(x: float) -> str:
    return f"{100 * x:.1f}"


def write_markdown(results: list[dict], path: Path, args: argparse.Namespace) -> None:
    lines = [f"per dataset: {args.per_dataset} train + {args.val_per_dataset} val; seeds {args.seeds}; rows within "
             f"3 points: {args.zone_seeds} seeds", ""]
    for res in results:
        extra = f", then {res['seeds_seconds'] / 60:.1f} min for more seeds" if "seeds_seconds" in res else ""
        lines += [f"### {res['set']} ({res['seconds'] / 60:.1f} min for the table{extra})", "",
                  "| row | accuracy | train acc | best probe | verdict | acc - probe | target met |",
                  "|---|---|---|---|---|---|---|"]
        for c in res["cells"]:
            met = "yes" if c["meets"] else "**no**"
            if c["absent"]:
                met = "yes: no signal (network and probes at chance)"
            elif not c["decided"]:
                met += " (within 3 points: needs 3 seeds)"
            lines.append(f"| {c['row']} | {pct(c['accuracy'])} (n={c['seeds']}) | {pct(c['train_accuracy'])} | "
                         f"{c['best_probe']} {pct(c['probe_accuracy'])} | {verdict_text(c)} | "
                         f"{100 * c['gap']:+.1f} | {met} |")
        lines.append("")
    path.write_text("\n".join(lines))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=ROOT / "cache" / "real_sets")
    ap.add_argument("--sets", default="icon_themes,font_glyphs,photo_jpeg,photo_upscale")
    ap.add_argument("--per-dataset", type=int, default=640)
    ap.add_argument("--val-per-dataset", type=int, default=160)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--zone-seeds", type=int, default=3,
                    help="rerun the rows within 3 points of the target with this many seeds (0: do not)")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "table_sweep")
    ap.add_argument("overrides", nargs="*", help="Hydra overrides for every run (after --)")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    for name in args.sets.split(","):
        folder = args.root / name
        if not (folder / "SET.json").exists():
            raise SystemExit(f"{folder} is not a real set: build it with python benchmarks/real_sets.py --out "
                             f"{args.root} --sets {name}")
        results.append(run_set(name, folder, args, list(args.overrides)))
        write_markdown(results, args.out / "sweep.md", args)
        (args.out / "sweep.json").write_text(json.dumps(results, indent=1))
    print((args.out / "sweep.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
