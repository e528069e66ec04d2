"""The memorization study: one config in, a run directory with samples, metrics, figures and a verdict out.

    python scripts/memorize.py task=mnist1d_mlp generator=pdiff

`run_study` (what the script calls):

1. builds the zoo of the task, or reuses the file in ``<cache_dir>/zoos/`` built from the same
   config (`memorization.zoo.build_zoo` for classification tasks, `memorization.fields.build_field_zoo`
   for neural-field tasks, ``task.kind: fields``); the regime is the generator's published one
   (P-diff: consecutive steps; the others: independent runs) unless ``zoo.regime`` says otherwise;
2. fits the generator (seed ``seed``) and samples ``num_samples`` models (seeded);
3. runs the baselines of the reference (`NOISE_PROTOCOL`): training + noise at the method's
   published sigma pair, averages of ``average_k`` random training models, a per-coordinate
   Gaussian, optionally the copy control. Baselines are fitted on the generator's *reference* set,
   the set novelty is measured against (the training weights; Hyper-Representations: the
   autoencoder's reconstructions, as published);
4. evaluates every group: accuracy and error masks, max error-IoU similarity to the reference set
   and min L2 to it (training vs training: self excluded); for neural fields, Chamfer novelty
   (min CD to the training shapes) and quality (min CD to held-out test shapes) instead;
5. writes ``samples.safetensors``, ``metrics.json``, ``report.md`` (table, published numbers,
   verdict by the rule of `memorization.report.decide_verdict`) and the figures.

Every random choice (fit, sampling, baselines, plotted subsets, heatmap indices, t-SNE) uses a
seed derived from ``seed`` by `derive_seed`, and all of them are recorded in ``metrics.json``.
The run directory is a function of the config (no timestamps); a finished run is reused, and a
directory holding a different config is refused.

G.pt noise scale: the study adds its G.pt noise (sigma 0.05 / 0.1) in G.pt's normalised parameter
space and quotes a factor 4.185 between that space and raw weights (normalised = raw x 4.185,
i.e. a raw std of about 1/4.185 = 0.239). Our G.pt normalises with a fitted `Standardizer`
(``normalize: global``: one mean and std over all coordinates of its training checkpoints), so
its normalised space is raw / std; the consistent baseline adds raw noise of std ``sigma x std``,
i.e. ``scale = std`` of the fitted generator (``norm_.std``; for ``normalize: coordinate`` the mean
of the per-coordinate stds). ``metrics.json`` records the scale and the implied factor 1 / std
beside the published 4.185.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from bias.configs import CONFIG_DIR as BIAS_CONFIGS
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from bias.core.errors import ConfigError
from bias.core.progress import progress_bar
from bias.core.seeding import derive_seed
from memorization.zoo.store import Zoo, _plain, config_hash

logger = logging.getLogger(__name__)
CONFIG_DIR = BIAS_CONFIGS / "memorize"
RUNTIME_KEYS = ("out", "cache_dir", "progress", "print_config", "log_level")
PUBLISHED_GPT_FACTOR = 4.185


class StudyConfigError(ConfigError):
    """The study config or run directory is inconsistent; the message says what to do."""


@dataclass(frozen=True)
class NoiseProtocol:
    """The published noise baseline of one method: sigma pair and the space it is added in."""

    sigmas: tuple[float, float]
    space: str          # "raw": parameter units; "normalised": the generator's normalised space (norm_.std)
    note: str


NOISE_PROTOCOL: dict[str, NoiseProtocol] = {
    "hyperreps": NoiseProtocol((0.02, 0.04), "raw", "added to the autoencoder's reconstructions (published)"),
    "gpt": NoiseProtocol((0.05, 0.1), "normalised", "in G.pt's normalised space (published x4.185); raw std = "
                                                      "sigma x the fitted normalisation std"),
    "hyperdiffusion": NoiseProtocol((0.02, 0.04), "raw", "published"),
    "pdiff": NoiseProtocol((0.06, 0.12), "raw", "published"),
}
DEFAULT_NOISE = NoiseProtocol((0.02, 0.04), "raw", "not a published method; Hyper-Reps' / HyperDiffusion's pair")
DEFAULT_REGIME = {"pdiff": "steps"}  # published regimes; every other generator: independent runs


def register_resolvers() -> None:
    """``${memorize_config_dir:}`` (configs/memorize, where the task/generator/study groups live)."""
    if not OmegaConf.has_resolver("memorize_config_dir"):
        OmegaConf.register_new_resolver("memorize_config_dir", lambda: str(CONFIG_DIR))


# -- config -> identity ---------------------------------------------------------------------------
def study_config(cfg: DictConfig | Mapping[str, Any]) -> dict[str, Any]:
    """The part of the config that changes results (not where files go, bars or devices)."""
    plain = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else _plain(cfg)
    plain = json.loads(json.dumps(plain))
    for key in RUNTIME_KEYS:
        plain.pop(key, None)
    plain.get("generator", {}).pop("progress", None)
    for key in ("device", "group_size"):
        plain.get("zoo", {}).pop(key, None)
    return plain


def run_dir_for(cfg: DictConfig, names: Mapping[str, str] | None = None) -> Path:
    """``out`` if given, else ``runs/memorize/<task>/<generator>-<config hash>/seed<seed>``."""
    if cfg.get("out"):
        return Path(cfg.out)
    names = names or {}
    task = names.get("task") or _task_label(cfg)
    generator = names.get("generator") or str(cfg.generator.name)
    return Path("runs") / "memorize" / task / f"{generator}-{config_hash(study_config(cfg))[:8]}" / f"seed{int(cfg.seed)}"


def _task_label(cfg: DictConfig) -> str:
    arch = cfg.task.get("arch") or {}
    return f"{cfg.task.task}_{arch.get('name', '')}".rstrip("_")


def _container(node: Any) -> dict[str, Any]:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node or {})


# -- zoos ---------------------------------------------------------------------------------------
@dataclass
class ZooBuild:
    zoo: Zoo
    path: Path
    reused: bool
    regime: str
    kind: str
    test_shapes: list | None = None   # fields only: held-out shapes for the quality metric


def classification_zoo(cfg: DictConfig, zoo_dir: Path, progress: bool) -> ZooBuild:
    from memorization.zoo.build import build_zoo, zoo_config, zoo_path

    task = _container(cfg.task)
    task.pop("kind", None)
    regimes = task.pop("regimes", None) or {}
    regime = cfg.zoo.regime or DEFAULT_REGIME.get(str(cfg.generator.name), "runs")
    if regime not in regimes:
        raise StudyConfigError(f"task {task.get('task')!r} has no regime {regime!r} (it has {sorted(regimes)}); "
                               "set zoo.regime=runs or zoo.regime=steps")
    kwargs = {**task, **regimes[regime]}
    kwargs["recipe"] = {**(kwargs.get("recipe") or {}), **_container(cfg.zoo.recipe)}
    if cfg.zoo.n_models is not None:
        kwargs["n_models"] = int(cfg.zoo.n_models)
    if cfg.zoo.checkpoints_per_run is not None:
        if regime != "runs":
            raise StudyConfigError("zoo.checkpoints_per_run applies to the runs regime only")
        kwargs["checkpoints_per_run"] = int(cfg.zoo.checkpoints_per_run)
    kwargs.update(regime=regime, seed=int(cfg.zoo.seed))
    path = zoo_path(zoo_dir, zoo_config(**kwargs))
    reused = path.exists()
    zoo = build_zoo(**kwargs, out=path, device=cfg.zoo.device, group_size=cfg.zoo.group_size, progress=progress)
    return ZooBuild(zoo, path, reused, regime, "classification")


def fields_zoo(cfg: DictConfig, zoo_dir: Path, progress: bool) -> ZooBuild:
    from memorization.fields import FieldFitConfig, build_field_zoo, field_zoo_config, random_shapes
    from memorization.zoo.build import zoo_path

    task = _container(cfg.task)
    if cfg.zoo.regime not in (None, "fields"):
        raise StudyConfigError(f"neural-field tasks have one regime ('fields'), not {cfg.zoo.regime!r}")
    n = int(cfg.zoo.n_models or task["n_shapes"])
    seed = int(cfg.zoo.seed)
    fit = FieldFitConfig(**{**task.get("fit", {}), "seed": seed})
    kinds = list(task.get("kinds") or [])
    path = zoo_path(zoo_dir, field_zoo_config(n, int(task["dim"]), seed, kinds, fit), name=task["task"])
    reused = path.exists()
    try:
        zoo = build_field_zoo(n, int(task["dim"]), seed, kinds or None, fit, str(cfg.zoo.device or "cpu"), progress,
                              out=path)
    except FileExistsError as err:
        raise StudyConfigError(f"{path} holds a field zoo of another config; delete it to rebuild") from err
    test_seed = derive_seed(seed, "test_shapes")
    test_shapes = random_shapes(int(task.get("n_test_shapes", 50)), int(task["dim"]), test_seed, kinds or None)
    return ZooBuild(zoo, path, reused, "fields", "fields", test_shapes)


ZOO_SOURCES: dict[str, Callable[[DictConfig, Path, bool], ZooBuild]] = {
    "classification": classification_zoo,
    "fields": fields_zoo,
}


# -- evaluation ---------------------------------------------------------------------------------
class ClassificationEvaluator:
    """Accuracy, error masks, max error-IoU similarity and min L2 of parameter vectors against a reference set."""

    kind = "classification"
    quality_label, closeness_label = "test accuracy", "max similarity to training (error IoU)"

    def __init__(self, zoo: Zoo, reference: Tensor, chunk: int, device: Any = None) -> None:
        self.zoo, self.reference, self.chunk, self.device = zoo, reference, int(chunk), device
        self.task = zoo.get_task()
        if reference is zoo.params:
            self.ref_accuracy, self.ref_masks = zoo.accuracy, zoo.error_masks
        else:
            self.ref_accuracy, self.ref_masks = zoo.evaluate(reference, chunk=self.chunk, device=device, task=self.task)

    def __call__(self, params: Tensor, exclude_self: bool = False, self_index: Tensor | None = None,
                 precomputed: tuple[Tensor, Tensor] | None = None) -> dict[str, np.ndarray]:
        from memorization.metrics import max_similarity, min_l2

        acc, masks = precomputed or self.zoo.evaluate(params, chunk=self.chunk, device=self.device, task=self.task)
        sim, sim_idx = max_similarity(masks, self.ref_masks, exclude_self, self_index)
        l2, l2_idx = min_l2(params, self.reference, exclude_self, self_index)
        return {"accuracy": acc.numpy(), "max_similarity": sim.numpy(), "nearest_behaviour": sim_idx.numpy(),
                "min_l2": l2.numpy(), "nearest": l2_idx.numpy(), "quality": acc.numpy(), "closeness": sim.numpy()}

    def reference_metrics(self) -> dict[str, np.ndarray]:
        return self(self.reference, exclude_self=True, precomputed=(self.ref_accuracy, self.ref_masks))


class FieldsEvaluator:
    """Chamfer novelty (min CD to the training shapes) and quality (min CD to held-out test shapes).

    Fields whose logits never cross 0 on the grid have no surface: they are counted (``empty``)
    and get NaN Chamfer values; reference fields without a surface are left out of the reference.
    For the verdict, ``quality = -CD_quality / mean training CD_quality`` and ``closeness =
    -CD_novelty / mean training CD_novelty`` (unitless, higher = better / closer), so the
    tolerances of the rule are relative to the training set's own values.
    """

    kind = "fields"
    quality_label, closeness_label = "min Chamfer to test shapes", "min Chamfer to training"

    def __init__(self, zoo: Zoo, reference: Tensor, test_shapes: list, n_points: int, resolution: int,
                 seed: int, progress: bool = True) -> None:
        from memorization.fields import shape_surface_points

        self.zoo, self.reference, self.n_points, self.resolution, self.seed = zoo, reference, n_points, resolution, seed
        self.progress = progress
        self.ref_points, self.ref_ok = self.surfaces(reference, "reference")
        if int(self.ref_ok.sum()) < 2:
            raise StudyConfigError(f"only {int(self.ref_ok.sum())} of {len(reference)} training fields have a surface on "
                                   "the grid; fit the fields longer (task.fit.steps, task.fit.first_steps)")
        self.test_points = shape_surface_points(test_shapes, n_points, resolution, seed)
        self.scale_quality = self.scale_novelty = 1.0

    def surfaces(self, params: Tensor, desc: str) -> tuple[Tensor, Tensor]:
        from memorization.fields import field_surface_points

        pts, ok = [], []
        for a in progress_bar(range(0, len(params), 64), desc=f"surfaces ({desc})", leave=False, disable=not self.progress):
            p, o = field_surface_points(self.zoo.arch, params[a:a + 64], self.n_points, self.resolution, self.seed + a)
            pts.append(p)
            ok.append(o)
        return torch.cat(pts), torch.cat(ok)

    def __call__(self, params: Tensor, exclude_self: bool = False, self_index: Tensor | None = None,
                 desc: str = "") -> dict[str, np.ndarray]:
        from memorization.metrics import min_l2
        from memorization.metrics.fields import min_chamfer, pairwise_chamfer

        n = len(params)
        pts, ok = (self.ref_points, self.ref_ok) if exclude_self else self.surfaces(params, desc)
        novelty, quality = np.full(n, np.nan), np.full(n, np.nan)
        nearest_shape = np.full(n, -1)
        rows, ref_rows = ok.nonzero().flatten(), self.ref_ok.nonzero().flatten()
        if len(rows):
            skip = None
            if self_index is not None:  # reference index to skip -> its position among the kept reference rows
                position = torch.full((len(self.reference) + 1,), -1, dtype=torch.long)
                position[ref_rows] = torch.arange(len(ref_rows))
                skip = position[torch.as_tensor(self_index, dtype=torch.long)[rows]]  # -1 (none) reads the last: -1
            v, j = min_chamfer(pts[rows], self.ref_points[ref_rows], exclude_self=exclude_self, self_index=skip)
            v = torch.where(torch.isinf(v), torch.nan, v)  # nothing left to compare with
            novelty[rows.numpy()] = v.numpy()
            nearest_shape[rows.numpy()] = ref_rows[j].numpy()
            to_test = pairwise_chamfer(pts[rows], self.test_points)
            quality[rows.numpy()] = to_test.min(1).values.numpy()
            mmd = float(to_test.min(0).values.mean())  # minimum matching distance of the test shapes
        else:
            mmd = float("nan")
        l2, l2_idx = min_l2(params, self.reference, exclude_self, self_index)
        return {"chamfer_novelty": novelty, "chamfer_quality": quality, "nearest_behaviour": nearest_shape,
                "empty": (~ok).numpy(), "mmd": np.array([mmd]), "min_l2": l2.numpy(), "nearest": l2_idx.numpy(),
                "quality": -quality / self.scale_quality, "closeness": -novelty / self.scale_novelty}

    def reference_metrics(self) -> dict[str, np.ndarray]:
        out = self(self.reference, exclude_self=True)
        self.scale_quality = float(np.nanmean(out["chamfer_quality"]))
        self.scale_novelty = float(np.nanmean(out["chamfer_novelty"]))
        out["quality"] = -out["chamfer_quality"] / self.scale_quality
        out["closeness"] = -out["chamfer_novelty"] / self.scale_novelty
        return out


# -- groups ---------------------------------------------------------------------------------------
@dataclass
class Group:
    key: str                  # metrics.json key: training, generated, noise_0.06, average, ...
    label: str                # legends and the report table
    role: str                 # training | generated | noise | baseline | control | original
    params: Tensor
    metrics: dict[str, np.ndarray]
    seed: int | None = None
    picks: Any = None         # what a baseline sampler picked (training indices), recorded


def reference_zoo(generator: Any, zoo: Zoo) -> Zoo:
    """The models the generator was trained on: the zoo, less any runs it held out (G.pt's ``train_indices_``).

    Held-out runs only provide G.pt's sampling starts; a sample that lands near a held-out run's
    later checkpoint has generalised, not memorised, so they are not part of the reference set
    (nor of the baselines, which perturb, average or fit the training checkpoints).
    """
    index = getattr(generator, "train_indices_", None)
    return zoo if index is None or len(index) == len(zoo) else zoo.subset(index)


def noise_scale(generator: Any, protocol: NoiseProtocol, configured: float | None) -> float:
    """Raw noise std per unit sigma: ``configured``, else 1 (raw), else the generator's normalisation std."""
    if configured is not None:
        return float(configured)
    if protocol.space == "raw":
        return 1.0
    norm = getattr(generator, "norm_", None)
    if norm is None:
        raise StudyConfigError(f"{generator.name} has no fitted normalisation (norm_); set baselines.noise_scale")
    return float(norm.std.float().mean())


def summarize_group(group: Group) -> dict[str, Any]:
    m = group.metrics

    def stats(name: str) -> dict[str, float]:
        v = np.asarray(m[name], dtype=np.float64)
        v = v[np.isfinite(v)]
        if not len(v):
            return {f"{name}_mean": float("nan"), f"{name}_std": float("nan"), f"{name}_median": float("nan")}
        return {f"{name}_mean": float(v.mean()), f"{name}_std": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
                f"{name}_median": float(np.median(v))}

    out: dict[str, Any] = {"label": group.label, "role": group.role, "n": int(len(group.params))}
    for name in ("accuracy", "max_similarity", "chamfer_novelty", "chamfer_quality", "min_l2", "quality", "closeness"):
        if name in m:
            out.update(stats(name))
    if "empty" in m:
        out["n_empty"] = int(np.sum(m["empty"]))
    if "mmd" in m:
        out["mmd"] = float(m["mmd"][0])
    return out


def baseline_groups(ref_zoo: Zoo, evaluator: Any, sigmas: list[float], scale: float, num_samples: int,
                    average_k: int, copy_control: bool, seed: int, progress: bool = True,
                    desc: Callable[[str], dict[str, str]] = lambda key: {}) -> list[Group]:
    """The trivial baselines fitted on `ref_zoo` and evaluated: training + noise per sigma (raw std
    ``sigma x scale``), averages of ``average_k`` random models, a per-coordinate Gaussian, optionally the
    copy control. Each uses the seed ``derive_seed(seed, key)`` (recorded in the group)."""
    from memorization.generators import create_generator

    specs = [(f"noise_{s:g}", f"noise sigma={s:g}", "noise", "noise", {"sigma": s, "scale": scale}) for s in sigmas]
    specs += [("average", f"average (k={average_k})", "baseline", "average", {"k": min(average_k, len(ref_zoo))}),
              ("gaussian", "gaussian", "baseline", "gaussian", {})]
    if copy_control:
        specs.append(("copy", "copy (control)", "control", "copy", {}))
    groups = []
    for key, label, role, name, params in progress_bar(specs, desc="baselines", leave=False, disable=not progress):
        key_seed = derive_seed(seed, key)
        base = create_generator(name, **params).fit(ref_zoo, seed=key_seed)
        p = base.sample(num_samples, seed=key_seed)
        groups.append(Group(key, label, role, p, evaluator(p, **desc(key)), key_seed, _plain(base.last_sample)))
    return groups


def summarize(groups: list[Group], tol_quality: float, tol_closeness: float) -> tuple[dict[str, Any], dict[str, Any]]:
    """Per-group summaries (`summarize_group`) and the verdict of `memorization.report.decide_verdict`."""
    from memorization.report import decide_verdict

    summary = {g.key: summarize_group(g) for g in groups}
    noise_keys = [g.key for g in groups if g.role == "noise"]
    other_keys = [g.key for g in groups if g.role == "baseline"]
    return summary, decide_verdict(summary, noise_keys, other_keys, tol_quality=tol_quality, tol_closeness=tol_closeness)


# -- the study ----------------------------------------------------------------------------------
def _generator_params(cfg: DictConfig, progress: bool) -> dict[str, Any]:
    params = _container(cfg.generator)
    params.pop("name", None)
    if "progress" in params:
        params["progress"] = bool(params["progress"]) and progress
    return params


def run_study(cfg: DictConfig, names: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Run (or reuse) one study; returns the contents of ``metrics.json``.

    The steps (`_Study`): build or reuse the zoo, fit the generator and sample it, evaluate every group
    (training, generated, noise and copy baselines), then save the figures, report and metrics."""
    run_dir = run_dir_for(cfg, names)
    expected = study_config(cfg)
    finished = _finished_study(run_dir, expected)
    if finished is not None:
        return finished
    study = _Study(cfg, names)
    study.build_zoo()
    study.fit_and_sample()
    groups = study.evaluate()
    metrics = study.save(run_dir, expected, groups)
    verdict = metrics["verdict"]
    logger.info("verdict: %s -- %s\n  report: %s", verdict["verdict"], verdict["reason"], run_dir / "report.md")
    return metrics


def _finished_study(run_dir: Path, expected: dict[str, Any]) -> dict[str, Any] | None:
    """The metrics of the finished study in `run_dir`, else None; a folder of another study is refused."""
    saved = run_dir / "experiment.json"
    if saved.exists() and json.loads(saved.read_text()) != expected:
        raise StudyConfigError(f"{run_dir} holds a study of a different configuration; choose another out=DIR "
                               "or delete that folder")
    metrics_file = run_dir / "metrics.json"
    if not metrics_file.exists():
        return None
    metrics = json.loads(metrics_file.read_text())
    logger.info("reusing finished study %s: verdict '%s'", run_dir, metrics["verdict"]["verdict"])
    return metrics


class _Study:
    """One study's state through its steps, in order: `build_zoo`, `fit_and_sample`, `evaluate`, `save`.

    The constructor checks the task kind and builds the generator, so bad parameters fail before any training."""

    def __init__(self, cfg: DictConfig, names: Mapping[str, str] | None) -> None:
        from memorization.generators import create_generator

        self.cfg, self.names = cfg, names
        self.kind = str(cfg.task.get("kind", "classification"))
        if self.kind not in ZOO_SOURCES:
            raise StudyConfigError(f"unknown task kind {self.kind!r}; choose one of {sorted(ZOO_SOURCES)}")
        self.gen_name, self.progress = str(cfg.generator.name), bool(cfg.progress)
        self.generator = create_generator(self.gen_name, **_generator_params(cfg, self.progress))
        self.timings: dict[str, float] = {}
        self.seeds: dict[str, Any] = {"fit": int(cfg.seed), "sample": derive_seed(cfg.seed, "sample"),
                                      "plots": derive_seed(cfg.seed, "plots"), "zoo": int(cfg.zoo.seed)}

    def _timed(self, step: str, started: float) -> None:
        self.timings[step] = time.time() - started

    def build_zoo(self) -> None:
        """Build the zoo of trained checkpoints, or reuse the cached one."""
        t0 = time.time()
        self.built = ZOO_SOURCES[self.kind](self.cfg, Path(self.cfg.cache_dir) / "zoos", self.progress)
        self.zoo = self.built.zoo
        self._timed("zoo", t0)
        logger.info("%s zoo %s (%d models, %d params, regime %s)", "reusing" if self.built.reused else "built",
                    self.built.path, len(self.zoo), self.zoo.spec.numel(), self.built.regime)

    def fit_and_sample(self) -> None:
        """Fit the generator on the zoo and draw its samples; `reference` is what the samples are compared with
        (the training weights, or an autoencoder's reconstructions of them)."""
        t0 = time.time()
        self.generator.fit(self.zoo, seed=self.seeds["fit"])
        self._timed("fit", t0)
        t0 = time.time()
        self.samples = self.generator.sample(self.cfg.num_samples, seed=self.seeds["sample"])
        self._timed("sample", t0)
        self.generated_picks = _plain(self.generator.last_sample)
        self.trained_on = reference_zoo(self.generator, self.zoo)
        self.reference = self.generator.reference_params(self.trained_on)
        self.reference_differs = self.reference is not self.trained_on.params

    def evaluate(self) -> list[Group]:
        """Every group's metrics: the training reference (and the original weights where they differ), the
        generated samples, and the noise and copy baselines."""
        cfg, kind, trained_on = self.cfg, self.kind, self.trained_on
        t0 = time.time()
        if kind == "fields":
            self.evaluator: Any = FieldsEvaluator(trained_on, self.reference, self.built.test_shapes,
                                                  int(cfg.fields.points), int(cfg.fields.resolution),
                                                  derive_seed(cfg.seed, "surfaces"), self.progress)
        else:
            self.evaluator = ClassificationEvaluator(trained_on, self.reference, int(cfg.metrics.chunk), cfg.zoo.device)
        groups = [Group("training", "training (AE reconstructions)" if self.reference_differs else "training",
                        "training", self.reference, self.evaluator.reference_metrics())]
        if self.reference_differs:
            stored = {} if kind == "fields" else {"precomputed": (trained_on.accuracy, trained_on.error_masks)}
            groups.append(Group("training_original", "training (original weights)", "original", trained_on.params,
                                self.evaluator(trained_on.params, self_index=torch.arange(len(trained_on)),
                                               **_desc(kind, "original"), **stored)))
        groups.append(Group("generated", f"generated ({self.gen_name})", "generated", self.samples,
                            self.evaluator(self.samples, **_desc(kind, "generated")), self.seeds["sample"],
                            self.generated_picks))
        groups += self._baselines()
        self._timed("evaluate", t0)
        return groups

    def _baselines(self) -> list[Group]:
        """The noise baselines (at the generator's published noise protocol, unless configured) and the copy
        control, around the reference."""
        b = self.cfg.baselines
        self.protocol = NOISE_PROTOCOL.get(self.gen_name, DEFAULT_NOISE)
        self.sigmas = [float(s) for s in (b.noise_sigmas or self.protocol.sigmas)]
        self.scale = noise_scale(self.generator, self.protocol, b.noise_scale)
        ref_zoo = dataclasses.replace(self.trained_on, params=self.reference) if self.reference_differs else self.trained_on
        return baseline_groups(ref_zoo, self.evaluator, self.sigmas, self.scale, int(b.num_samples), int(b.average_k),
                               bool(b.copy_control), int(self.cfg.seed), self.progress,
                               desc=lambda key: _desc(self.kind, key))

    def save(self, run_dir: Path, expected: dict[str, Any], groups: list[Group]) -> dict[str, Any]:
        """The verdict, and the run folder: config.yaml, the samples, the figures, report.md, experiment.json and
        metrics.json (last: a study killed before it is not taken as finished)."""
        from bias.core.io import write_json
        from memorization.report import write_figures, write_report

        summary, verdict = summarize(groups, float(self.cfg.verdict.tol_quality), float(self.cfg.verdict.tol_closeness))
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(self.cfg, resolve=True))
        _save_samples(run_dir / "samples.safetensors", groups)
        t0 = time.time()
        figures, figure_seeds = write_figures(run_dir, groups, self.zoo, self.evaluator, self.cfg, self.seeds["plots"])
        self._timed("figures", t0)
        self.seeds.update(figure_seeds)
        self.seeds["baselines"] = {g.key: g.seed for g in groups if g.role in ("noise", "baseline", "control")}
        metrics = self._metrics(groups, summary, verdict, figures)
        write_report(run_dir / "report.md", metrics, self.evaluator)
        write_json(expected, run_dir / "experiment.json")
        write_json(metrics, run_dir / "metrics.json")
        return metrics

    def _metrics(self, groups: list[Group], summary: Any, verdict: dict[str, Any], figures: Any) -> dict[str, Any]:
        """The contents of metrics.json."""
        zoo, trained_on, protocol = self.zoo, self.trained_on, self.protocol
        return {
            "task": self.names.get("task") if self.names else _task_label(self.cfg), "generator": self.gen_name,
            "kind": self.kind, "verdict": verdict, "groups": summary,
            "zoo": {"path": str(self.built.path), "reused": self.built.reused, "hash": zoo.hash,
                    "regime": self.built.regime, "n_models": len(zoo), "num_params": zoo.spec.numel(), "task": zoo.task,
                    "arch": zoo.arch, "trained_on": len(trained_on)},
            "reference": ("autoencoder reconstructions of the training weights" if self.reference_differs
                          else "training weights")
            + (f" (the {len(trained_on)} checkpoints the generator was trained on; {len(zoo) - len(trained_on)} of "
               "held-out runs left out)" if len(trained_on) < len(zoo) else ""),
            "noise": {"sigmas": self.sigmas, "scale": self.scale, "space": protocol.space, "note": protocol.note,
                      "implied_factor": (1.0 / self.scale) if protocol.space == "normalised" else None,
                      "published_factor": PUBLISHED_GPT_FACTOR if self.gen_name == "gpt" else None},
            "generator_params": _plain(self.generator.params()), "seeds": self.seeds,
            "picks": {g.key: g.picks for g in groups if g.picks is not None},
            "figures": figures, "timings_s": self.timings,
        }


def _desc(kind: str, name: str) -> dict[str, str]:
    return {"desc": name} if kind == "fields" else {}


def _save_samples(path: Path, groups: list[Group]) -> None:
    from safetensors.torch import save_file

    tensors = {g.key: g.params.detach().cpu().float().contiguous() for g in groups
               if g.role not in ("training", "original")}
    meta = {g.key: {"label": g.label, "seed": g.seed} for g in groups if g.key in tensors}
    save_file(tensors, str(path), metadata={"groups": json.dumps(meta)})
