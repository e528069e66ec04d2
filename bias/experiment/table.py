"""The bias table: classify once per transform (and seed), collect, compare, plot.

Rows are transform names, optionally with parameters: `"patch_shuffle:patch_size=4,mode=fixed"`;
`model=NAME` in a row picks the classifier (`"color_hist_vector:model=mlp"`), `recipe=NAME` its recipe
(`"caption_short:recipe=sentence_t5"`). A text row (a caption transform) gets `examples/<row>.md`, the
sample images' texts, instead of an image grid.
Each row is an ordinary classify run in its own run directory, so finished runs are reused and
an interrupted table resumes where it stopped. A seed whose training diverged (a non-finite loss or
output) makes its row failed, listed with the epoch and step, never an accuracy; the other rows go on.
"""

from __future__ import annotations

import datetime
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.csv as pacsv

from bias.core.errors import TrainingDiverged
from bias.core.io import write_json
from bias.data.sources import resolve_sources
from bias.experiment.published import YCD_CHANCE, published_accuracy
from bias.experiment.results import bootstrap_ci
from bias.experiment.verdict import LEARNED, current_verdict, verdict_marker

logger = logging.getLogger(__name__)
FAMILY_ORDER = ("reference", "semantic", "structural", "spatial", "colour", "frequency")


def parse_row(spec: str | Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """`"name"` or `"name:key=value,key=value"` (values parsed as YAML scalars) -> (name, params)."""
    if isinstance(spec, Mapping):
        params = dict(spec)
        return str(params.pop("transform")), params
    name, _, rest = str(spec).partition(":")
    params: dict[str, Any] = {}
    if rest:
        import yaml

        for item in rest.split(","):
            key, eq, value = item.partition("=")
            if not eq:
                raise ValueError(f"cannot read {item!r} in row {spec!r}: use name:key=value,key=value")
            params[key.strip()] = yaml.safe_load(value.strip())
    return name.strip(), params


def row_label(name: str, params: Mapping[str, Any]) -> str:
    return name if not params else name + " (" + ", ".join(f"{k}={v}" for k, v in params.items()) + ")"


def override_value(value: Any) -> str:
    """A row parameter in Hydra's override grammar: null, true/false, numbers, quoted strings, {k: v}, [a, b].

    (`str(value)` would turn None into the string 'None' and a dict into Python's repr, which Hydra cannot read.)
    """
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}: {override_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(override_value(v) for v in value) + "]"
    text = str(value).replace("\\", "\\\\").replace("'", "\\'")
    return f"'{text}'"


def example_file_name(label: str) -> str:
    """The example grid's file name for a row: the label with spaces as '_', characters unsafe in a file
    name as '_', and long labels (an `arch` dict, say) cut short with a digest of the whole label."""
    import hashlib
    import re

    stem = re.sub(r"[^\w.,=()+\-]", "_", label.replace(" ", "_"))
    if len(stem) > 100:
        stem = f"{stem[:80]}-{hashlib.sha1(label.encode()).hexdigest()[:10]}"
    return f"{stem}.png"


@dataclass
class Row:
    label: str
    transform: str
    family: str
    params: dict[str, Any]
    accuracies: list[float]
    chance: float
    ci95: tuple[float, float]
    published: float | None
    run_dirs: list[str] = field(default_factory=list)
    #: baseline name -> its val accuracy per seed (`bias.experiment.baselines`)
    baselines: dict[str, list[float]] = field(default_factory=dict)
    #: the learnability verdict per seed (`bias.experiment.verdict`)
    verdicts: list[str] = field(default_factory=list)
    #: one line per seed whose run failed (non-finite loss, ...): such a row shows no accuracy
    failures: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return bool(self.failures)

    @property
    def mean(self) -> float:
        return float(np.mean(self.accuracies)) if self.accuracies else float("nan")

    @property
    def best_baseline(self) -> tuple[str, float] | None:
        """The baseline with the highest mean accuracy over seeds."""
        if not self.baselines:
            return None
        name = max(self.baselines, key=lambda k: np.mean(self.baselines[k]))
        return name, float(np.mean(self.baselines[name]))

    @property
    def marker(self) -> str:
        """'' when every seed learned; else e.g. 'under-fit' or 'beaten by baseline 2/3 seeds'; 'failed' when a
        seed's run failed."""
        return "failed" if self.failed else verdict_marker(self.verdicts)

    @property
    def std(self) -> float:
        return float(np.std(self.accuracies, ddof=1)) if len(self.accuracies) > 1 else 0.0


def _correct(run_dir: Path) -> np.ndarray:
    table = pacsv.read_csv(run_dir / "predictions.csv")
    return np.asarray(table.column("dataset").to_pylist()) == np.asarray(table.column("predicted").to_pylist())


def run_failure(run: Mapping[str, Any]) -> str | None:
    """Why a run failed (`status: failed`, e.g. its training diverged), or None for a finished run."""
    if run.get("status") != "failed":
        return None
    f = run.get("failure") or {}
    if isinstance(f, str):
        return f
    if {"what", "epoch", "step"} <= set(f):
        return f"non-finite {f['what']} at epoch {f['epoch']}, step {f['step']}"
    return str(f.get("reason") or "the run failed")


def failed_row(label: str, transform: str, failures: Sequence[str], run_dirs: Sequence[Path]) -> Row:
    """A row of which some seed failed: no accuracy, no interval, only the failures."""
    return Row(label, transform, "", {}, [], float("nan"), (float("nan"), float("nan")), None,
               [str(d) for d in run_dirs], failures=list(failures))


def make_row(label: str, runs: Sequence[Mapping[str, Any]], run_dirs: Sequence[Path]) -> Row:
    """One table row from the results of the same transform over seeds.

    The 95% interval is the bootstrap over all seeds' val predictions pooled, so it reflects
    the val-set size; the std over seeds reflects training noise. A row with a failed seed is a
    failed row: an accuracy averaged over the seeds that did finish would misreport it.
    """
    first = runs[0]
    failures = [f"seed {r.get('seed', i)}: {why}" for i, r in enumerate(runs) if (why := run_failure(r))]
    if failures:
        row = failed_row(label, first.get("transform", label), failures, run_dirs)
        row.family = first.get("family", "")
        return row
    correct = np.concatenate([_correct(Path(d)) for d in run_dirs])
    params = dict(first.get("transform_params", {}))
    baselines: dict[str, list[float]] = {}
    for r in runs:
        for b in r.get("baselines") or []:
            baselines.setdefault(b["name"], []).append(float(b["accuracy"]))
    verdicts = [current_verdict(r) for r in runs]  # reused runs are judged by the current rule
    return Row(label, first["transform"], first.get("family", ""), params, [r["accuracy"] for r in runs],
               first["chance"], bootstrap_ci(correct), published_accuracy(first["transform"], params),
               [str(d) for d in run_dirs], baselines, verdicts)


def accuracy_text(r: Row) -> str:
    """`88.2 (n=1)` for one seed (its bootstrap interval is the uncertainty), `mean +- std (n=k)` from two seeds
    up: a `+- 0.0` would read as "no variance across seeds"."""
    if r.failed:
        return "failed"
    n = len(r.accuracies)
    return f"{100 * r.mean:.1f} (n=1)" if n == 1 else f"{100 * r.mean:.1f} +- {100 * r.std:.1f} (n={n})"


def _accuracy_cell(r: Row) -> str:
    cell = accuracy_text(r)
    if r.failed:
        return f"**failed** ({'; '.join(r.failures)})"
    if r.marker:
        best = r.best_baseline
        cell += f" **[{r.marker}]**" + (f" (probe {best[0]}: {100 * best[1]:.1f})" if best else "")
    return cell


def _interval_cell(r: Row) -> str:
    return "-" if r.failed else f"{100 * r.ci95[0]:.1f}-{100 * r.ci95[1]:.1f}"


def _link(target: Path, table_dir: Path) -> str:
    """A link that opens from the table's own folder, as a markdown viewer resolves it."""
    return Path(os.path.relpath(Path(target).resolve(), Path(table_dir).resolve())).as_posix()


def _baselines_cell(r: Row) -> str:
    return " / ".join(f"{name} {100 * np.mean(v):.1f}" for name, v in r.baselines.items()) or "-"


def table_header(data: str, recipe: str, seeds: Sequence[int], date: datetime.date | None = None) -> list[str]:
    """The lines under the title: what was classified, how, with which seeds, when."""
    date = date or datetime.date.today()
    return [f"- data: `{data}`", f"- recipe: `{recipe}`",
            f"- seeds: {', '.join(str(s) for s in seeds)} (n={len(seeds)})", f"- written: {date.isoformat()}", ""]


def write_table(rows: Sequence[Row], out: Path, title: str, num_classes: int,
                header: Sequence[str] = ()) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    rows = sorted(rows, key=lambda r: (FAMILY_ORDER.index(r.family) if r.family in FAMILY_ORDER else 99))
    ref = next((r for r in rows if r.transform == "reference" and not r.failed), None)
    lines = [
        f"# {title}",
        "",
        *header,
        f"Accuracy (%) of telling {num_classes} datasets apart after each transform: the value alone with `n=1` "
        "for one seed (the 95% interval is then its uncertainty), mean +- std over seeds from two seeds up; "
        "bootstrap 95% interval over the pooled val predictions. The paper column is the paper's number on "
        f"YFCC/CC/DataComp (3-way, chance {YCD_CHANCE:.1f}%): a different dataset, shown for orientation only.",
        "",
        "Baselines are linear probes fitted on the same split and transformed inputs (mean over seeds). A marker "
        "in brackets flags seeds whose network did not learn: **under-fit** (train accuracy near chance, or the "
        "network and every probe at chance on val: the number says nothing more than that no signal was found) "
        "or **beaten by baseline** (a probe is more than 5 points and significantly better: read the probe's "
        "number as the lower bound).",
        "",
        "| transform | family | accuracy | verdict | 95% interval | drop from reference | chance "
        "| baselines (linear probes) | seeds | published YCD (paper, other data) | run |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        drop = f"{100 * (ref.mean - r.mean):+.1f}" if ref is not None and r is not ref and not r.failed else "-"
        pub = f"{r.published:.1f}" if r.published is not None else "-"
        chance = "-" if r.failed else f"{100 * r.chance:.1f}"
        if not r.run_dirs:
            run = "-"
        elif r.failed:
            run = f"[run]({_link(Path(r.run_dirs[0]), out)})"
        else:
            run = f"[confusion]({_link(Path(r.run_dirs[0]) / 'confusion.png', out)})"
        lines.append(
            f"| {r.label} | {r.family} | {_accuracy_cell(r)} | {r.marker or LEARNED} | {_interval_cell(r)} "
            f"| {drop} | {chance} | {_baselines_cell(r)} | {len(r.run_dirs)} | {pub} | {run} |"
        )
    not_learned = [r for r in rows if r.marker]
    if not_learned:
        lines += ["", "Rows not marked `learned`: " + "; ".join(f"**{r.label}**: {r.marker}" for r in not_learned)
                  + ". Their accuracy is not a measurement of the transform's information (see the verdict above)."]
    md = out / "table.md"
    md.write_text("\n".join(lines) + "\n")
    write_json([r.__dict__ | {"mean": None if r.failed else r.mean, "std": None if r.failed else r.std,
                              "marker": r.marker, "accuracy_text": accuracy_text(r)} for r in rows],
               out / "table.json")
    png = out / "table.png"
    plot_table(rows, png, title)
    return md, png


def table_figure(rows: Sequence[Row], title: str) -> Any:
    """The table as bars (mean, std over seeds from two seeds up), the 95% interval, the paper's and the best
    probe's markers; rows not learned are hatched and named, failed rows show the word "failed" and no bar. The
    legend sits outside the axes, so it covers no data."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = dict(zip(FAMILY_ORDER, ("0.35", "tab:purple", "tab:blue", "tab:green", "tab:orange", "tab:red")))
    x = np.arange(len(rows))
    means = np.array([np.nan if r.failed else 100 * r.mean for r in rows])
    fig, ax = plt.subplots(figsize=(max(6, 0.75 * len(rows) + 2), 4.2))
    bars = ax.bar(x, np.nan_to_num(means), yerr=[100 * r.std if len(r.accuracies) > 1 else np.nan for r in rows],
                  capsize=3, color=[colours.get(r.family, "0.6") for r in rows])
    low = [100 * (r.mean - r.ci95[0]) for r in rows]
    high = [100 * (r.ci95[1] - r.mean) for r in rows]
    ax.errorbar(x + 0.22, means, yerr=[low, high], fmt="none", ecolor="k", lw=0.8, capsize=2, label="95% interval")
    pubs = [(i, r.published) for i, r in enumerate(rows) if r.published is not None]
    if pubs:
        ax.scatter(*zip(*pubs), marker="_", s=300, color="k", label="paper (YCD, other data)")
    probes = [(i, 100 * r.best_baseline[1]) for i, r in enumerate(rows) if r.best_baseline is not None]
    if probes:
        ax.scatter(*zip(*probes), marker="x", s=30, color="tab:red", zorder=3, label="best linear probe")
    for i, r in enumerate(rows):
        if r.failed:
            ax.text(i, 2, "failed", rotation=90, ha="center", va="bottom", fontsize=7, color="tab:red")
        elif r.marker:
            bars[i].set_hatch("//")
            ax.text(i, means[i] + 3, r.marker.replace(" by baseline", "").replace(" seeds", ""), rotation=90,
                    ha="center", va="bottom", fontsize=6, color="tab:red")
    chance = next((r.chance for r in rows if not r.failed), None)
    if chance is not None:
        ax.axhline(100 * chance, color="grey", ls="--", lw=1, label="chance")
    ax.set_xticks(x, [r.label for r in rows], rotation=35, ha="right", fontsize=8)
    ax.set_ylabel("dataset classification accuracy %")
    ax.set_ylim(0, 100)
    handles = [plt.Rectangle((0, 0), 1, 1, color=colours[f]) for f in FAMILY_ORDER if any(r.family == f for r in rows)]
    labels = [f for f in FAMILY_ORDER if any(r.family == f for r in rows)]
    if any(r.marker and not r.failed for r in rows):
        handles.append(plt.Rectangle((0, 0), 1, 1, facecolor="white", edgecolor="k", hatch="//"))
        labels.append("not learned (verdict)")
    h2, l2 = ax.get_legend_handles_labels()
    ax.legend(handles + h2, labels + l2, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    ax.set_title(title)
    fig.tight_layout()
    return fig


def plot_table(rows: Sequence[Row], path: Path, title: str) -> None:
    import matplotlib.pyplot as plt

    fig = table_figure(rows, title)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


TABLE_KEYS = ("rows", "table_out", "table", "examples")


def example_samples(cfg, k: int) -> dict[str, tuple[list[str], np.ndarray]]:
    """The first `k` usable samples (in index order) of every dataset, from any data source: (read paths, SHA-1s)."""
    from omegaconf import OmegaConf

    from bias.data.split import index_datasets

    cache_dir = Path(cfg.cache_dir)
    indexes = index_datasets(resolve_sources(OmegaConf.to_container(cfg.data, resolve=True)), cache_dir,
                             cfg.get("num_workers"))
    out = {}
    for name, index in indexes.items():
        pos = index.usable()[:k]
        out[name] = ([str(p) for p in index.read_paths(pos)], index.sha1[pos])
    return out


def run_table(cfg, task_overrides: Sequence[str]) -> tuple[Path, Path]:
    """Run (or reuse) one classify run per row and seed, then write table.md, table.png and example grids."""
    from hydra import compose
    from omegaconf import OmegaConf

    from bias.core.distributed import partial_state
    from bias.experiment.run import precompute, run_classification, run_dir_for, validate

    keep = [o for o in task_overrides if o.split("=", 1)[0].lstrip("+~") not in TABLE_KEYS
            and not o.lstrip("+~").startswith(("transform=", "transform.", "seeds=", "seed=", "out="))]
    seeds = list(cfg.seeds) if cfg.get("seeds") else [int(cfg.seed)]
    specs = [parse_row(s) for s in OmegaConf.to_container(cfg.rows, resolve=True)]
    configs = []
    for name, params in specs:  # validate every row before training any
        model = [f"model={params.pop('model')}"] if "model" in params else []  # e.g. vectors need model=mlp
        recipe = [f"recipe={params.pop('recipe')}"] if "recipe" in params else []  # e.g. recipe=sentence_t5
        common = [o for o in keep if not (recipe and o.startswith("recipe="))]
        sub = compose(config_name="classify", overrides=[*common, f"transform={name}", *recipe, *model,
                                                         *(f"transform.{k}={override_value(v)}" for k, v in params.items())])
        configs.append((row_label(name, params), sub, validate(sub)))
    rows = []
    for label, sub, transform in configs:
        runs, dirs = [], []
        for s in seeds:
            sub.seed = s
            try:
                runs.append(run_classification(sub, transform))
            except TrainingDiverged as err:  # recorded in the run's failed.json; the table says so and goes on
                logger.error("error: %s, seed %s: %s", label, s, err)
                runs.append({"status": "failed", "seed": s, "transform": transform.name, "family": transform.family,
                             "failure": {"what": err.what, "epoch": err.epoch, "step": err.step, "reason": str(err)}})
            dirs.append(run_dir_for(sub, s))
        rows.append(make_row(label, runs, dirs))
    out = Path(cfg.table_out) if cfg.get("table_out") else Path("runs") / str(cfg.data.name) / f"table-{cfg.recipe.name}"
    state = partial_state()
    md, png = out / "table.md", out / "table.png"
    if state.is_main_process:
        header = table_header(str(cfg.data.name), str(cfg.recipe.name), seeds)
        num_classes = len(resolve_sources(OmegaConf.to_container(cfg.data, resolve=True)))
        md, png = write_table(rows, out, f"Bias table: {cfg.data.name}, recipe {cfg.recipe.name}", num_classes,
                              header)
    if cfg.get("examples"):
        from bias.experiment.examples import example_grid

        samples = example_samples(cfg, int(cfg.examples))
        paths = {name: p for name, (p, _) in samples.items()}
        for label, sub, t in configs:
            stored = None
            if t.kind == "precomputed":  # every process takes part; outputs come from the store
                report = precompute(t, [p for ps in paths.values() for p in ps],
                                    np.concatenate([h for _, h in samples.values()]), sub, state)
                if t.output == "text":  # captions: the sample images' texts, not an image grid
                    if state.is_main_process:
                        from bias.experiment.text import write_text_examples

                        write_text_examples(report.store, samples,
                                            out / "examples" / example_file_name(label).replace(".png", ".md"), label)
                    continue
                stored = {name: [str(x) for x in report.read_paths(h)] for name, (_, h) in samples.items()}
            if state.is_main_process:
                example_grid(t, paths, out / "examples" / example_file_name(label),
                             size=int(sub.recipe.image_size), resize_shorter=sub.data.get("resize_shorter"),
                             stored=stored)
    if not state.is_main_process:
        return md, png
    logger.info("table: %s\nfigure: %s", md, png)
    return md, png
