"""``report.md`` of an audit: the verdict and its reason, the study's table, the audit's own measures, figures."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from memorization.report import results_table


def _num(x: Any, digits: int = 4) -> str:
    return f"{x:.{digits}g}" if isinstance(x, (int, float)) and math.isfinite(x) else "-"


def audit_lines(result: Mapping[str, Any], evaluator: Any) -> list[str]:
    """The report's lines (also usable as a section of another page)."""
    v, c = result["verdict"], result["verdict"]["checks"]
    nov, ref, front = result["novelty"], result["reference_nn"], result["front"]
    m, t = result["model"], result["task"]
    lines = [f"**Verdict: {v['verdict']}** -- {v['reason']}.", "",
             f"Training checkpoints: `{result['train']['path']}` ({result['train']['n']}); generated: "
             f"`{result['generated']['path']}` ({result['generated']['n']}). Model `{m['kind']}` with "
             f"{m['num_audited']} audited of {m['num_params']} parameters"
             + (f" (the rest from `{m['base']}`)" if m.get("base") else "") + f"; task `{t['kind']}` ({t['n_eval']} "
             f"evaluation samples, {t['num_classes']} classes). "
             + ("Distances streamed in coordinate blocks." if result["streamed"] else ""), "",
             f"Noise baselines: sigma {', '.join(f'{s:g}' for s in result['noise']['sigmas'])} in raw parameter units "
             "around the training checkpoints; averages and a per-coordinate Gaussian fitted on them.", "",
             "## Groups", "", *results_table({"kind": "classification", "groups": result["groups"]}), "",
             "## Novelty against the training checkpoints", "",
             "| measure | value |", "|---|---|",
             f"| train-to-train nearest L2 (reference): min / median / max | {_num(ref.get('min'))} / "
             f"{_num(ref.get('median'))} / {_num(ref.get('max'))} |",
             f"| replica rate (generated closer than the closest training pair) | {_num(nov['replica_rate']['rate'])} |"]
    ts = nov["two_sample_test"]
    if "mannwhitney_p_generated_closer" in ts:
        lines.append(f"| generated vs train-to-train nearest L2: medians {_num(ts['median_generated'])} vs "
                     f"{_num(ts['median_train'])}; Mann-Whitney p (generated closer) | "
                     f"{_num(ts['mannwhitney_p_generated_closer'], 3)}; KS {_num(ts['ks_statistic'], 3)} "
                     f"(p {_num(ts['ks_p'], 3)}) |")
    al = result["alignment"]
    if al.get("applicable"):
        ra = nov["replica_rate_aligned"]
        lines += [f"| after permutation alignment: train-to-train nearest L2 median | {_num(al['train_nn']['median'])} |",
                  f"| after permutation alignment: generated nearest L2 median | {_num(al['generated_nn']['median'])} |",
                  f"| replica rate after alignment | {_num(ra['rate'])} |"]
    else:
        lines.append(f"| permutation alignment | not computed: {al.get('reason')} |")
    b = front["beyond_noise_front"]
    lines += [f"| generated checkpoints beyond the noise baselines' accuracy-novelty front | {b['count']} "
              f"({_num(100 * b['share'], 3)}%) |", "",
              "## Verdict rule", "", v["rule"], "",
              f"Checks: lowest noise `{c['lowest_noise']}`; closeness generated {_num(c['closeness_generated'])} vs "
              f"{_num(c['closeness_lowest_noise'])}; median min-L2 generated {_num(c['min_l2_generated'])} vs "
              f"{_num(c['min_l2_lowest_noise'])}; dominates noise: {c['dominates_noise']}; dominated by: "
              f"{c['dominated_by'] or 'none'}.", "",
              f"Quality = {evaluator.quality_label}; closeness = {evaluator.closeness_label}.", "", "## Figures", ""]
    lines += [f"![{name}]({file})" for name, file in result["figures"].items()]
    lines += ["", "Seeds, per-checkpoint numbers and what each baseline picked: `audit.json`. Timings (s): "
              + ", ".join(f"{k} {s:.1f}" for k, s in result["timings_s"].items()), ""]
    return lines


def write_audit_report(path: Path, result: Mapping[str, Any], evaluator: Any) -> None:
    path.write_text("\n".join(["# Memorization audit", "", *audit_lines(result, evaluator)]))
