"""Check every single-axis planted preset's declared keeps/loses table (see bias/experiment/known_answers.py).

    python scripts/known_answers.py                                # 4 presets, seeds 0 1 2
    python scripts/known_answers.py --presets planted_color --seeds 0 --jobs 2
    python scripts/known_answers.py -- recipe.num_workers=4         # Hydra overrides for every run

Writes <out>/known_answers.md and .json, one bias table per preset under <out>/<preset>/, and
exits 1 if a declared keeps/loses cell falls on the wrong side.
"""

import argparse
import sys
from pathlib import Path

from bias.experiment.known_answers import EXTRA_ROWS, PRESETS, judge, run_presets, write_report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=list(PRESETS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--jobs", type=int, default=1, help="classify runs in parallel (1 on a 2-core machine)")
    parser.add_argument("--out", type=Path, default=Path("runs/known_answers"))
    parser.add_argument("--extra-rows", nargs="*", default=list(EXTRA_ROWS), help="undeclared transforms to measure")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides passed to every run (after --)")
    args = parser.parse_args()
    tables = run_presets(args.presets, args.seeds, args.out, args.jobs, args.overrides, args.extra_rows)
    cells = [c for preset, path in tables.items() for c in judge(preset, path)]
    report = args.out / "known_answers.md"
    write_report(cells, report, f"Seeds {args.seeds}; overrides: {' '.join(args.overrides) or 'none'}.")
    print(report.read_text())
    bad = [c for c in cells if c.agrees is False]
    for c in bad:
        print(f"DISAGREES: {c.preset} / {c.transform}: declared {c.expectation}, measured {100 * c.mean:.1f}% "
              f"(chance {100 * c.chance:.1f}%)", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
