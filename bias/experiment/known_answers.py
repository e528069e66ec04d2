"""Check the single-axis planted presets' declared keeps/loses tables, cell by cell.

Each preset `configs/data/planted_<axis>.yaml` declares under `expected` which transforms keep
its planted signal, which lose it and which are `unreliable` at the cpu budget (see the
`bias.data.planted` docstring). `check_presets` runs (or reuses) one bias table per preset with
`scripts/table.py`, at the known-answer budget of `tests/test_known_answers.py`, then judges
every declared cell on the mean accuracy over seeds:

    keeps:  accuracy > chance + KEEPS_MARGIN (20 points)
    loses:  accuracy < chance + LOSES_MARGIN (10 points)

With 300 val images the bootstrap 95% interval of one run is about +-5.5 points, so a keep
near chance + 20 or a loss near chance + 10 is several standard errors from where these
presets put the measured accuracies (e.g. 94% and 33% for mean_rgb/canny on planted_color).
Undeclared rows (extra transforms) and `unreliable` ones are measured and reported with the side
they fall on, but never fail the check.

Runs are ordinary classify runs in their own run directories, so the check resumes and reuses.
Rows of a preset run in parallel processes (`jobs`), after one first row per preset has
rendered the preset's images into the cache.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

from bias.configs import CONFIG_DIR

KEEPS_MARGIN = 0.20
LOSES_MARGIN = 0.10
PRESETS = ("planted_color", "planted_texture", "planted_objects", "planted_layout")
#: The budget of tests/test_known_answers.py: 300 train + 100 val images per dataset, 8 epochs.
BUDGET = ("data.per_dataset=300", "data.val_per_dataset=100", "data.generator.n_per_dataset=400", "recipe.epochs=8")
EXTRA_ROWS = ("hog", "sift", "color_hist", "color_hist_vector:model=mlp")


def declared(preset: str) -> dict[str, list[str]]:
    """`expected` of a preset: {"keeps": [...], "loses": [...], "unreliable": [...]}."""
    cfg = OmegaConf.load(CONFIG_DIR / "data" / f"{preset}.yaml")
    if "expected" not in cfg:
        raise ValueError(f"configs/data/{preset}.yaml has no `expected:` table; it is not a single-axis preset")
    exp = OmegaConf.to_container(cfg.expected)
    return {key: list(exp.get(key) or []) for key in ("keeps", "loses", "unreliable")}


def rows_for(preset: str, extra_rows: Sequence[str] = EXTRA_ROWS) -> list[str]:
    exp = declared(preset)
    rows = [*exp["keeps"], *exp["loses"], *exp["unreliable"]]
    return rows + [r for r in extra_rows if r not in rows]


def verdict(expectation: str, accuracy: float, chance: float) -> tuple[str, bool | None]:
    """(side the accuracy falls on, whether it agrees with the declaration; None if nothing declared)."""
    margin = accuracy - chance
    side = "keeps" if margin > KEEPS_MARGIN else "loses" if margin < LOSES_MARGIN else "between"
    if expectation not in ("keeps", "loses"):
        return side, None
    return side, side == expectation


@dataclass
class Cell:
    preset: str
    transform: str
    expectation: str  # keeps / loses / unreliable / not declared
    accuracies: list[float]
    chance: float
    side: str
    agrees: bool | None

    @property
    def mean(self) -> float:
        return sum(self.accuracies) / len(self.accuracies)


def _table_cmd(preset: str, rows: Sequence[str], seeds: Sequence[int], out: Path, overrides: Sequence[str],
               examples: int) -> list[str]:
    quoted = ",".join(f"'{r}'" for r in rows)
    return [sys.executable, "-m", "bias.cli", "table", f"data={preset}", f"rows=[{quoted}]",
            f"seeds=[{','.join(str(s) for s in seeds)}]", f"table_out={out}", f"examples={examples}",
            *BUDGET, *overrides]


def _run(cmd: list[str], log: Path) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as f:
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}); see {log}")


def run_presets(presets: Sequence[str], seeds: Sequence[int], out: Path, jobs: int = 1,
                overrides: Sequence[str] = (), extra_rows: Sequence[str] = EXTRA_ROWS) -> dict[str, Path]:
    """Run every row of every preset (reusing finished runs); returns {preset: table.json}."""
    rows = {p: rows_for(p, extra_rows) for p in presets}
    logs = out / "logs"
    safe = lambda row: re.sub(r"[^A-Za-z0-9_.-]", "_", row)  # noqa: E731  (a folder name Hydra can parse)
    single = lambda p, r: _table_cmd(p, [r], seeds, out / p / "rows" / safe(r), overrides, 0)  # noqa: E731
    with ThreadPoolExecutor(max(1, jobs)) as pool:
        # one row per preset first: it renders the preset's images, which the others then share
        list(pool.map(lambda p: _run(single(p, rows[p][0]), logs / f"{p}-first.log"), presets))
        work = [(p, r) for p in presets for r in rows[p][1:]]
        list(pool.map(lambda pr: _run(single(*pr), logs / f"{pr[0]}-{safe(pr[1])}.log"), work))
        # the full table per preset: every run is reused, this only collects, plots and draws examples
        list(pool.map(lambda p: _run(_table_cmd(p, rows[p], seeds, out / p, overrides, 4), logs / f"{p}-table.log"),
                      presets))
    return {p: out / p / "table.json" for p in presets}


def judge(preset: str, table_json: Path) -> list[Cell]:
    exp = declared(preset)
    expectation = {t: key for key in ("keeps", "loses", "unreliable") for t in exp[key]}
    cells = []
    for row in json.loads(table_json.read_text()):
        name = row["label"].replace(" (model=mlp)", "")
        label = row["label"]
        e = expectation.get(label, expectation.get(name, "not declared"))
        side, agrees = verdict(e, sum(row["accuracies"]) / len(row["accuracies"]), row["chance"])
        cells.append(Cell(preset, label, e, list(row["accuracies"]), row["chance"], side, agrees))
    order = {"keeps": 0, "loses": 1, "unreliable": 2, "not declared": 3}
    return sorted(cells, key=lambda c: order[c.expectation])


def _mean_std(accuracies: Sequence[float]) -> str:
    """"65.0 +- 7.1 (n=2)" in percent; one seed has no spread to show: "65.0 (n=1)"."""
    n = len(accuracies)
    mean = sum(accuracies) / n
    if n == 1:
        return f"{100 * mean:.1f} (n=1)"
    std = (sum((a - mean) ** 2 for a in accuracies) / (n - 1)) ** 0.5
    return f"{100 * mean:.1f} +- {100 * std:.1f} (n={n})"


def write_report(cells: Sequence[Cell], path: Path, note: str = "") -> None:
    """known_answers.md (+ .json): one table per preset, disagreements marked."""
    lines = ["# Known answers: declared keeps/loses vs measured accuracy", "",
             f"keeps: accuracy > chance + {100 * KEEPS_MARGIN:.0f} points; loses: < chance + "
             f"{100 * LOSES_MARGIN:.0f} points (mean over seeds). {note}".strip(), ""]
    for preset in dict.fromkeys(c.preset for c in cells):
        lines += [f"## {preset}", "", "| transform | declared | accuracy % (mean +- std; n seeds) | per seed | "
                  "chance % | measured side | agrees |", "|---|---|---|---|---|---|---|"]
        for c in (c for c in cells if c.preset == preset):
            agree = "-" if c.agrees is None else "yes" if c.agrees else "**NO**"
            seeds = ", ".join(f"{100 * a:.1f}" for a in c.accuracies)
            lines.append(f"| {c.transform} | {c.expectation} | {_mean_std(c.accuracies)} | {seeds} | "
                         f"{100 * c.chance:.1f} | {c.side} | {agree} |")
        lines.append("")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))
    path.with_suffix(".json").write_text(json.dumps([c.__dict__ for c in cells], indent=2))
