"""`build_zoo`: train (or reuse) a zoo and write it as one safetensors file.

    from memorization.zoo import build_zoo, load_zoo_config
    zoo = build_zoo(**load_zoo_config("mnist1d_mlp", regime="runs"), seed=0, out="cache/zoos/mnist1d_mlp.safetensors")

A zoo file whose stored config hash equals the requested config's is loaded instead of
retrained (`reuse_zoo`); a file with a different config is never overwritten unless ``overwrite=True``.
`zoo_path` names the file of a config in a zoo folder (the study's ``<cache_dir>/zoos``).
The hash covers everything that changes the weights (task and its kwargs, arch, recipe, regime,
sizes, seed, subset) and nothing that does not (device, group size, progress bars, path).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from bias.configs import CONFIG_DIR as BIAS_CONFIGS

from bias.core.progress import progress_bar
from memorization.zoo.store import Zoo, config_hash
from memorization.zoo.tasks import get_task
from memorization.zoo.training import ZooRecipe, finetune_steps, train_vectorised

REGIMES = ("runs", "steps")
ZOO_VERSION = 1  # bump when the same config would train different weights
CONFIG_DIR = BIAS_CONFIGS / "memorize" / "task"


def run_seeds(seed: int, n: int) -> list[int]:
    """`n` distinct 31-bit model seeds derived from the zoo seed (zoos with different seeds share none by design)."""
    seeds = np.random.SeedSequence([int(seed), 0x200]).generate_state(n, dtype=np.uint32) >> 1
    if len(set(seeds.tolist())) != n:  # 31-bit collisions are astronomically rare; refuse rather than duplicate
        raise RuntimeError(f"seed collision among {n} model seeds of zoo seed {seed}; use another seed")
    return [int(s) for s in seeds]


def default_device() -> torch.device:
    """The device accelerate would use in this process (GPU of this rank if any, else CPU)."""
    from accelerate import PartialState

    return PartialState().device


def load_zoo_config(name: str, regime: str = "runs") -> dict[str, Any]:
    """``configs/memorize/task/<name>.yaml`` as `build_zoo` keyword arguments for `regime`."""
    from omegaconf import OmegaConf

    path = CONFIG_DIR / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
        raise FileNotFoundError(f"no zoo config {path}; known: {known}")
    cfg = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    regimes = cfg.pop("regimes", {}) or {}
    if regime not in regimes:
        raise KeyError(f"{path} has no regime {regime!r}; it has {sorted(regimes)}")
    return {**cfg, **regimes[regime], "regime": regime}


def zoo_config(task: str, arch: Mapping[str, Any], regime: str, n_models: int, seed: int,
               task_kwargs: Mapping[str, Any] | None = None, recipe: Mapping[str, Any] | None = None,
               checkpoints_per_run: int = 1, subset: Sequence[str] | None = None,
               finetune_lr: float | None = None) -> dict[str, Any]:
    """The canonical config of a zoo (what `config_hash` and the zoo file record)."""
    if regime not in REGIMES:
        raise ValueError(f"regime must be one of {REGIMES}, got {regime!r}")
    if int(n_models) < 1:
        raise ValueError(f"n_models must be positive, got {n_models}")
    cfg: dict[str, Any] = {"zoo_version": ZOO_VERSION, "task": task, "task_kwargs": dict(task_kwargs or {}),
                           "arch": dict(arch), "regime": regime, "n_models": int(n_models), "seed": int(seed),
                           "recipe": ZooRecipe.from_mapping(recipe).to_dict()}
    if regime == "runs":
        cfg["checkpoints_per_run"] = int(checkpoints_per_run)
    else:
        if not subset:
            raise ValueError("regime 'steps' needs subset=[parameter names] to train, e.g. the last layer's")
        cfg["subset"] = list(subset)
        cfg["finetune_lr"] = None if finetune_lr is None else float(finetune_lr)
    return cfg


def zoo_path(zoo_dir: str | os.PathLike, config: Mapping[str, Any], name: str | None = None) -> Path:
    """Where the zoo built from `config` lives in `zoo_dir`: ``<name>-<config_hash(config)>.safetensors``.

    `config` is the zoo's canonical config, as its file records it (`zoo_config(...)`;
    `memorization.fields.field_zoo_config(...)` for neural-field zoos). `name` defaults to
    ``<task>-<arch name>-<regime>`` of a `zoo_config` config.
    """
    if name is None:
        name = f"{config['task']}-{config['arch']['name']}-{config['regime']}"
    return Path(zoo_dir) / f"{name}-{config_hash(config)}.safetensors"


def reuse_zoo(out: str | os.PathLike | None, config: Mapping[str, Any], overwrite: bool = False) -> Zoo | None:
    """The zoo in the file `out` if it was built from `config`, else None (no file, or ``overwrite=True``).

    A file holding a zoo of another config raises `FileExistsError` unless ``overwrite=True``.
    """
    if out is None or not Path(out).exists():
        return None
    digest = config_hash(config)
    header = Zoo.read_header(out)
    if header.get("config_hash") == digest:
        return Zoo.load(out)
    if not overwrite:
        raise FileExistsError(f"{out} holds a zoo of another config (hash {header.get('config_hash')} != {digest}); "
                              "pass another out= or overwrite=True")
    return None


def build_zoo(task: str, arch: Mapping[str, Any], regime: str = "runs", n_models: int = 100, seed: int = 0,
              out: str | os.PathLike | None = None, task_kwargs: Mapping[str, Any] | None = None,
              recipe: Mapping[str, Any] | None = None, checkpoints_per_run: int = 1,
              subset: Sequence[str] | None = None, finetune_lr: float | None = None,
              device: str | torch.device | None = None, group_size: int | None = None,
              eval_chunk: int = 256, overwrite: bool = False, progress: bool = True) -> Zoo:
    """Train a zoo, or load it from `out` when the file there was built from the same config.

    Args:
        task, task_kwargs: a task of `memorization.zoo.tasks` and its arguments.
        arch: ``{"name": "mlp" | "hyperrep_cnn", **kwargs}``.
        regime: ``"runs"``: `n_models` independent runs (one seed each), ``checkpoints_per_run``
            evenly spaced checkpoints of each (the zoo has ``n_models * checkpoints_per_run``
            models, run-major). ``"steps"``: P-diff style, one base model, then only `subset`
            trained for `n_models` steps at ``finetune_lr`` (default ``recipe.lr / 10``), one
            checkpoint per step.
        seed: the zoo seed; model seeds are `run_seeds(seed, n)`.
        recipe: `ZooRecipe` fields (epochs, batch_size, lr, ...).
        device: default: accelerate's device for this process.
        group_size: train at most this many models at once (memory bound; default all).
        out: the ``.safetensors`` file to reuse or write (None: build in memory only).
    """
    cfg = zoo_config(task, arch, regime, n_models, seed, task_kwargs, recipe, checkpoints_per_run, subset, finetune_lr)
    reused = reuse_zoo(out, cfg, overwrite)
    if reused is not None:
        return reused
    device = torch.device(device) if device is not None else default_device()
    the_task = get_task(task, **cfg["task_kwargs"])
    rec = ZooRecipe.from_mapping(cfg["recipe"])
    if regime == "runs":
        seeds = run_seeds(seed, n_models)
        size = int(group_size or n_models)
        chunks, losses, steps = [], [], []
        for start in progress_bar(range(0, n_models, size), desc=f"zoo {task}/{arch['name']}", disable=not progress or
                          size >= n_models):
            res = train_vectorised(the_task, cfg["arch"], seeds[start:start + size], rec, device,
                                   checkpoints_per_run, progress, desc=f"{task}/{arch['name']}")
            chunks.append(res.params)       # (k, group, P)
            losses.append(res.train_loss)   # (k, group)
            steps, spec = res.steps, res.spec
        params = torch.cat(chunks, 1).transpose(0, 1).reshape(-1, spec.numel())   # run-major
        train_loss = torch.cat(losses, 1).transpose(0, 1).reshape(-1)
        k = len(steps)
        meta = {"run": [r for r in range(n_models) for _ in range(k)],
                "seed": [seeds[r] for r in range(n_models) for _ in range(k)],
                "step": [s for _ in range(n_models) for s in steps]}
        base, base_spec = None, None
    else:
        res = finetune_steps(the_task, cfg["arch"], int(seed), rec, cfg["subset"], n_models, cfg["finetune_lr"],
                             device, progress)
        spec, params, train_loss, base, base_spec = res.spec, res.params, res.train_loss, res.base, res.base_spec
        base_steps = rec.steps_per_epoch(int(the_task.y_train.shape[0])) * rec.epochs
        meta = {"run": [0] * n_models, "seed": [int(seed)] * n_models,
                "step": [base_steps + i + 1 for i in range(n_models)]}
    zoo = Zoo(task, dict(cfg["arch"]), spec, params, {"model_id": list(range(len(params))), **meta},
              torch.zeros(len(params), the_task.n_test, dtype=torch.bool), cfg, base, base_spec, cfg["task_kwargs"])
    acc, masks, loss = zoo.evaluate(zoo.params, chunk=eval_chunk, device=device, task=the_task, with_loss=True)
    zoo.error_masks = masks
    zoo.meta.update({"accuracy": acc.tolist(), "loss": loss.tolist(), "train_loss": train_loss.tolist(),
                     "regime": [regime] * len(params)})
    if out is not None:
        zoo.save(out)
    return zoo
