"""`run_audit`: the memorization study's measures on the user's checkpoints (``scripts/audit.py``).

1. builds the task and the network, and checks both sides' checkpoints from their headers alone
   (`memorization.audit.checkpoints.open_checkpoints`): nothing is evaluated before every file,
   key and shape is known to fit; one forward pass checks that the network runs on the task;
2. evaluates, with the study's code: accuracy and error masks of every checkpoint
   (`memorization.study.ClassificationEvaluator`), max error-IoU similarity and min L2 to the
   training checkpoints (training vs training: self excluded, the reference distances), the noise
   grid, averaging and Gaussian baselines fitted on the training checkpoints
   (`memorization.study.baseline_groups`), the group summaries and the verdict by the study's rule
   (`memorization.study.summarize`, `memorization.report.decide_verdict`);
3. adds what an audit of foreign checkpoints needs: min L2 after permutation alignment where the
   network is a plain MLP (`memorization.metrics.aligned_min_l2`), the replica rate, a two-sample
   test of generated-to-train against train-to-train nearest distances, and the accuracy-novelty
   front with the share of generated checkpoints beyond the noise baseline's front
   (`memorization.metrics.novelty`);
4. writes ``audit.json`` (every number, the verdict and its reason, the seeds), ``report.md`` and the
   study's figures to ``out``.

When all checkpoints and baselines do not fit in ``metrics.memory_gb`` as float32, the same
measures are computed from coordinate blocks (`memorization.audit.streaming`): peak memory is then a
few blocks, whatever the network size; the figures that need whole vectors (heatmap, decision
boundaries, t-SNE) are left out and listed as such.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from bias.core.errors import ConfigError
from bias.core.seeding import derive_seed
from memorization.audit.checkpoints import CheckpointError, CheckpointSet, column_blocks, open_checkpoints
from memorization.audit.models import AuditModel, audit_model, audit_zoo
from memorization.audit.tasks import create_task
from memorization.metrics.novelty import beyond_front, pareto_front, replica_rate, two_sample_test
from memorization.study import ClassificationEvaluator, Group, baseline_groups, summarize
from memorization.zoo.store import _plain, config_hash
from memorization.zoo.tasks import Task

logger = logging.getLogger(__name__)
RUNTIME_KEYS = ("out", "progress", "print_config", "device", "log_level")


def _plain_cfg(cfg: DictConfig | dict) -> dict[str, Any]:
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else json.loads(json.dumps(cfg))


def audit_dir(cfg: DictConfig) -> Path:
    """``out``, else ``runs/audit/<hash of everything that changes results>``."""
    if cfg.get("out"):
        return Path(cfg.out)
    plain = {k: v for k, v in _plain_cfg(cfg).items() if k not in RUNTIME_KEYS and k != "hydra"}
    return Path("runs") / "audit" / config_hash(plain)[:12]


def _kind_params(node: Any, group: str) -> tuple[str, dict[str, Any]]:
    missing = [k for k in (node or {}) if OmegaConf.is_missing(node, k)] if isinstance(node, DictConfig) else []
    if missing:
        raise ConfigError(f"{group}: give {', '.join(f'{group}.{k}=...' for k in missing)} (configs/audit/{group}/)")
    params = _plain_cfg(node) if node is not None else {}
    kind = params.pop("kind", None)
    if not kind:
        raise ConfigError(f"{group}: no kind; choose {group}=<option> (configs/audit/{group}/)")
    return str(kind), params


def _check_runs(model: AuditModel, task: Task, zoo_like) -> None:
    """One forward pass on two test inputs: the network must accept the task's inputs and give its classes."""
    try:
        zoo_like.evaluate(zoo_like.params[:1], chunk=1, task=task)
    except Exception as err:  # the user's network on the user's data: any failure is a configuration mismatch
        raise ConfigError(f"the model does not run on the task's inputs {tuple(task.x_test.shape[1:])} "
                          f"({type(err).__name__}: {err}); check model= and task=") from err
    with torch.no_grad():
        out = model.module(task.x_test[:2])
    if out.ndim != 2 or out.shape[1] < task.num_classes:
        raise ConfigError(f"the model gives outputs of shape {tuple(out.shape)} but the task has {task.num_classes} "
                          "classes; set the model's number of classes")


def _finite_or_fail(params: torch.Tensor, source: CheckpointSet, what: str) -> None:
    bad = (~torch.isfinite(params)).any(1).nonzero().flatten().tolist()
    if bad:
        names = source.names
        raise CheckpointError(f"{what}: {len(bad)} checkpoint(s) with NaN or infinite values: "
                              f"{[names[i] for i in bad[:10]]}; remove them")


# -- measures beyond the study ----------------------------------------------------------------------
def alignment_measures(model: AuditModel, train: torch.Tensor | None, generated: torch.Tensor | None,
                       cfg: Any) -> dict[str, Any]:
    """Min L2 after hidden-unit permutation alignment (both sides), or why it was not computed."""
    from memorization.metrics import aligned_min_l2, mlp_layers

    if not cfg.enabled:
        return {"applicable": False, "reason": "alignment.enabled=false"}
    if model.is_subset:
        return {"applicable": False, "reason": "only part of the network is audited (params=); permuting hidden "
                "units would move the frozen base parameters too"}
    try:
        mlp_layers(model.spec)
    except ValueError as err:
        return {"applicable": False, "reason": f"not a plain MLP: {err}"}
    if train is None or generated is None:
        return {"applicable": False, "reason": "checkpoints streamed (larger than metrics.memory_gb)"}
    if len(train) + len(generated) > int(cfg.max_models):
        return {"applicable": False, "reason": f"{len(train) + len(generated)} checkpoints > alignment.max_models"}
    k = int(cfg.candidates)
    t_nn, _ = aligned_min_l2(train, train, model.spec, exclude_self=True, candidates=k)
    g_nn, g_idx = aligned_min_l2(generated, train, model.spec, candidates=k)
    return {"applicable": True, "candidates": k, "train_nn": t_nn.numpy(), "generated_nn": g_nn.numpy(),
            "generated_nearest": g_idx.numpy()}


def front_measures(groups: list[Group], tol_quality: float, tol_closeness: float) -> dict[str, Any]:
    """The accuracy-novelty front (novelty = 1 - max error-IoU) of every group, and how many generated
    checkpoints lie beyond the front of all noise baselines together."""
    by_key = {g.key: g for g in groups}
    out: dict[str, Any] = {"fronts": {}}
    for g in groups:
        q, n = g.metrics["quality"], 1.0 - g.metrics["closeness"]
        f = pareto_front(q, n)
        out["fronts"][g.key] = [[float(q[i]), float(n[i])] for i in f]
    noise = [g for g in groups if g.role == "noise"]
    gen = by_key["generated"]
    rq = np.concatenate([g.metrics["quality"] for g in noise])
    rn = np.concatenate([1.0 - g.metrics["closeness"] for g in noise])
    beyond = beyond_front(gen.metrics["quality"], 1.0 - gen.metrics["closeness"], rq, rn, tol_quality, tol_closeness)
    out["beyond_noise_front"] = {"count": int(beyond.sum()), "share": float(beyond.mean()) if len(beyond) else 0.0,
                                 "noise_groups": [g.key for g in noise]}
    return out


def novelty_measures(groups: list[Group], alignment: dict[str, Any]) -> dict[str, Any]:
    by_key = {g.key: g for g in groups}
    train_nn, gen_nn = by_key["training"].metrics["min_l2"], by_key["generated"].metrics["min_l2"]
    out = {"replica_rate": replica_rate(gen_nn, train_nn), "two_sample_test": two_sample_test(gen_nn, train_nn)}
    if alignment.get("applicable"):
        out["replica_rate_aligned"] = replica_rate(alignment["generated_nn"], alignment["train_nn"])
        out["two_sample_test_aligned"] = two_sample_test(alignment["generated_nn"], alignment["train_nn"])
    return out


# -- the audit --------------------------------------------------------------------------------------
def prepare(cfg: DictConfig) -> tuple[Task, AuditModel, CheckpointSet, CheckpointSet, dict[str, Any]]:
    """Everything that can be checked before any work: task, network, both sides' checkpoints."""
    missing = [k for k in ("train", "generated") if OmegaConf.is_missing(cfg, k)]
    if missing:
        raise ConfigError(f"give {' and '.join(f'{k}=PATH' for k in missing)}: a folder of checkpoints or a stacked "
                          "tensor file")
    task_kind, task_params = _kind_params(cfg.task, "task")
    model_kind, model_params = _kind_params(cfg.model, "model")
    task = create_task(task_kind, **task_params)
    params = list(cfg.params) if cfg.get("params") else None
    model = audit_model(model_kind, task, params, cfg.get("base"), str(cfg.get("strip_prefix") or ""), **model_params)
    prefix = str(cfg.get("strip_prefix") or "")
    train = open_checkpoints(cfg.train, model.spec, "train", cfg.get("train_key"), model.known, prefix)
    generated = open_checkpoints(cfg.generated, model.spec, "generated", cfg.get("generated_key"), model.known, prefix)
    if len(train) < 2:
        raise CheckpointError(f"train={cfg.train}: {len(train)} checkpoint; the train-to-train reference needs >= 2")
    return task, model, train, generated, {"task": task_kind, "model": model_kind}


def run_audit(cfg: DictConfig) -> dict[str, Any]:
    """Run one audit; returns the contents of ``audit.json``."""
    t_start = time.time()
    out = audit_dir(cfg)
    task, model, train, generated, kinds = prepare(cfg)
    progress = bool(cfg.progress)
    b = cfg.baselines
    sigmas = [float(s) for s in b.noise_sigmas]
    if not sigmas:
        raise ConfigError("baselines.noise_sigmas: the verdict needs at least one noise level")
    nb, k = int(b.num_samples), int(b.average_k)
    n_baseline_rows = nb * (len(sigmas) + 2 + int(bool(b.copy_control)))
    need = 4 * model.spec.numel() * (len(train) + len(generated) + n_baseline_rows)
    streamed = need > float(cfg.metrics.memory_gb) * 2 ** 30
    chunk, device = int(cfg.metrics.chunk), cfg.get("device")
    model_cfg = {"kind": kinds["model"], **_plain_cfg(cfg.model)}
    logger.info(f"audit: {len(train)} training and {len(generated)} generated checkpoints of {model.spec.numel()} "
                f"audited parameters ({'streamed in blocks' if streamed else 'in memory'}; float32 need "
                f"{need / 2**30:.2f} GiB)")
    timings: dict[str, float] = {}
    t0 = time.time()
    seeds = {"baselines": {}, "plots": derive_seed(int(cfg.seed), "plots")}
    if not streamed:
        train_p, gen_p = train.load(), generated.load()
        _finite_or_fail(train_p, train, "train")
        _finite_or_fail(gen_p, generated, "generated")
        timings["load"] = time.time() - t0
        _check_runs(model, task, audit_zoo(model, task, train_p[:1], kinds["task"], model_cfg, evaluate=False))
        zoo = audit_zoo(model, task, train_p, kinds["task"], model_cfg, chunk, device)
        evaluator: Any = ClassificationEvaluator(zoo, zoo.params, chunk, device)
        groups = [Group("training", "training", "training", zoo.params, evaluator.reference_metrics()),
                  Group("generated", "generated", "generated", gen_p, evaluator(gen_p))]
        groups += baseline_groups(zoo, evaluator, sigmas, 1.0, nb, k, bool(b.copy_control), int(cfg.seed), progress)
    else:
        from memorization.audit.streaming import AverageRows, GaussianRows, NoiseRows, StreamingEvaluator

        train_p = gen_p = None
        budget = float(cfg.metrics.memory_gb) * 2 ** 30   # one block of the training set and of one other set
        width = int(budget // (12 * (len(train) + max(len(generated), nb))))
        blocks = column_blocks(model.spec, max(1, min(int(cfg.metrics.block_columns), width)))
        zoo = audit_zoo(model, task, train.rows(0, 1), kinds["task"], model_cfg, evaluate=False)
        _check_runs(model, task, zoo)
        eval_rows = max(1, min(chunk, int(float(cfg.metrics.memory_gb) * 2 ** 30 // (16 * model.full_spec.numel()))))
        evaluator = StreamingEvaluator(zoo, train, blocks, eval_rows, int(cfg.metrics.refine), device, progress)
        groups = [Group("training", "training", "training", train, evaluator.reference_metrics()),
                  Group("generated", "generated", "generated", generated, evaluator(generated))]
        lazy = [(f"noise_{s:g}", f"noise sigma={s:g}", "noise", lambda seed, s=s: NoiseRows(train, blocks, nb, seed, s))
                for s in sigmas]
        lazy += [("average", f"average (k={k})", "baseline", lambda seed: AverageRows(train, blocks, nb, seed, k)),
                 ("gaussian", "gaussian", "baseline", lambda seed: GaussianRows(train, blocks, nb, seed))]
        for key, label, role, make in lazy:
            s = derive_seed(int(cfg.seed), key)
            src = make(s)
            picks = getattr(src, "picks", None)
            groups.append(Group(key, label, role, src, evaluator(src), s,
                                {"indices": picks.tolist()} if picks is not None else None))
    timings["evaluate"] = time.time() - t0
    seeds["baselines"] = {g.key: g.seed for g in groups if g.role in ("noise", "baseline", "control")}

    tq, tc = float(cfg.verdict.tol_quality), float(cfg.verdict.tol_closeness)
    summary, verdict = summarize(groups, tq, tc)
    t0 = time.time()
    alignment = alignment_measures(model, train_p, gen_p, cfg.alignment)
    timings["alignment"] = time.time() - t0
    novelty = novelty_measures(groups, alignment)
    front = front_measures(groups, tq, tc)

    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    figures = _figures(out, groups, zoo, evaluator, cfg, seeds, streamed)
    from memorization.report import plot_fronts

    plot_fronts(front["fronts"], {g.key: g.label for g in groups}, out / "fronts.png", "audit")
    figures["fronts"] = "fronts.png"
    timings["figures"] = time.time() - t0
    timings["total"] = time.time() - t_start
    result = {
        "verdict": verdict, "groups": summary,
        "train": {"path": str(cfg.train), "n": len(train), "ignored_files": train.ignored},
        "generated": {"path": str(cfg.generated), "n": len(generated), "ignored_files": generated.ignored},
        "model": {**model_cfg, "audited": model.spec.to_json(), "num_audited": model.spec.numel(),
                  "num_params": model.full_spec.numel(), "base": model.base_path},
        "task": {"kind": kinds["task"], "name": task.name, "n_eval": task.n_test, "num_classes": task.num_classes,
                 "info": _plain(task.info)},
        "streamed": streamed, "noise": {"sigmas": sigmas, "scale": 1.0, "space": "raw"},
        "reference_nn": _stats(groups[0].metrics["min_l2"]),
        "novelty": novelty, "alignment": _alignment_summary(alignment), "front": front,
        "per_checkpoint": _per_checkpoint(groups, train, generated, alignment),
        "seeds": seeds, "picks": {g.key: g.picks for g in groups if g.picks is not None},
        "figures": figures, "timings_s": timings, "config": {k: v for k, v in _plain_cfg(cfg).items() if k != "hydra"},
    }
    from bias.core.io import write_json
    from memorization.audit.report import write_audit_report

    write_json(result, out / "audit.json")
    write_audit_report(out / "report.md", result, evaluator)
    logger.info(f"verdict: {verdict['verdict']} -- {verdict['reason']}\n  report: {out / 'report.md'}")
    return result


def _stats(values) -> dict[str, float]:
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    if not len(v):
        return {}
    return {"min": float(v.min()), "median": float(np.median(v)), "mean": float(v.mean()), "max": float(v.max())}


def _alignment_summary(alignment: dict[str, Any]) -> dict[str, Any]:
    if not alignment.get("applicable"):
        return alignment
    return {"applicable": True, "candidates": alignment["candidates"],
            "train_nn": _stats(alignment["train_nn"]), "generated_nn": _stats(alignment["generated_nn"])}


def _per_checkpoint(groups: list[Group], train: CheckpointSet, generated: CheckpointSet,
                    alignment: dict[str, Any]) -> dict[str, Any]:
    """Every training and generated checkpoint by name: accuracy, max similarity, min L2 (+ aligned), nearest."""
    by_key = {g.key: g for g in groups}
    out = {}
    for key, source in (("training", train), ("generated", generated)):
        m = by_key[key].metrics
        rows = {"name": source.names, "accuracy": m["accuracy"].tolist(), "max_similarity": m["max_similarity"].tolist(),
                "min_l2": m["min_l2"].tolist(), "nearest_training": m["nearest"].tolist()}
        if alignment.get("applicable"):
            rows["min_l2_aligned"] = alignment["train_nn" if key == "training" else "generated_nn"].tolist()
        out[key] = rows
    return out


def _figures(out: Path, groups: list[Group], zoo, evaluator, cfg: DictConfig, seeds: dict[str, Any],
             streamed: bool) -> dict[str, str]:
    from memorization.report import plot_min_l2_histograms, plot_quality_vs_closeness, write_figures

    if not streamed:
        figures, record = write_figures(out, groups, zoo, evaluator, SimpleNamespace(plots=cfg.plots), seeds["plots"])
        seeds.update(record)
        return figures
    labels = {g.key: g.label for g in groups}
    plot_min_l2_histograms({g.key: g.metrics["min_l2"] for g in groups}, labels, out / "min_l2_hist.png",
                           int(cfg.plots.hist_bins), "audit")
    plot_quality_vs_closeness({g.key: g.metrics["max_similarity"] for g in groups},
                              {g.key: 100 * g.metrics["accuracy"] for g in groups}, labels,
                              out / "accuracy_vs_similarity.png",
                              "max similarity to training (error IoU; left = more novel)", "test accuracy %", "audit")
    return {"min_l2_hist": "min_l2_hist.png", "accuracy_vs_similarity": "accuracy_vs_similarity.png"}
