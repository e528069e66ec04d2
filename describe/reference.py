"""The reference classification on the describe run's own data (``classify=true``): the image accuracy that the
explained share is measured against.

`reference_config(cfg)` is the `classify` config (transform ``reference``, the packaged recipe, plus
``classify_overrides``) with the describe config's ``data`` section itself, so the run records the same data
and `describe.report.find_classify_runs` finds it; its run folder is the one `scripts/classify.py` would use,
under ``runs_root``. `run_reference(cfg)` runs it with `bias.experiment.run.run_classification` (a finished run in
that folder is reused, as classify does).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

#: what `scripts/classify.py` runs for the explained share
REFERENCE_OVERRIDES = ("transform=reference",)


def _compose_classify(overrides: list[str]) -> DictConfig:
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():  # inside scripts/describe_data.py: the same config search path
        return compose(config_name="classify", overrides=overrides)
    with initialize_config_module(config_module="bias.configs", version_base=None):
        return compose(config_name="classify", overrides=overrides)


def reference_config(cfg: Any) -> DictConfig:
    """The classify config of the reference run on `cfg`'s data (module docstring), its ``out`` set."""
    from bias.experiment.run import run_dir_for

    extra = [str(o) for o in (cfg.get("classify_overrides") or [])]
    ccfg = _compose_classify([*REFERENCE_OVERRIDES, *extra])
    data = OmegaConf.to_container(cfg.data, resolve=True)
    if "near_duplicates" not in data and "near_duplicates" in ccfg.data:
        data["near_duplicates"] = OmegaConf.to_container(ccfg.data.near_duplicates, resolve=True)
    OmegaConf.set_struct(ccfg, False)
    ccfg.data = OmegaConf.create(data)
    ccfg.cache_dir = str(cfg.cache_dir)
    if cfg.get("num_workers") is not None:
        ccfg.num_workers = cfg.num_workers
    seed = int(ccfg.seed)
    default = run_dir_for(ccfg, seed)  # runs/<data>/reference/<recipe>-<hash>/seed<seed>
    ccfg.out = str(Path(str(cfg.get("runs_root") or "runs")) / default.relative_to("runs"))
    OmegaConf.set_struct(ccfg, True)
    return ccfg


def check_reference(ccfg: DictConfig) -> Any:
    """Before any work: the reference run's config, data and model check out (`bias.experiment.run.validate`);
    returns its transform."""
    from bias.experiment.run import validate

    return validate(ccfg)


def run_reference(ccfg: DictConfig, transform: Any = None) -> dict[str, Any]:
    """Runs (or reuses) the reference classification; returns its results (accuracy, confusion, ...)."""
    from bias.experiment.run import run_classification

    return run_classification(ccfg, transform)
