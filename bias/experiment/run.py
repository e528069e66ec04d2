"""The experiment runner: config in, trained classifier and `results.json` out.

`run_classification(cfg)` is everything `scripts/classify.py` does. Under `accelerate launch`
it runs once per process; every process derives the same run directory from the config, and
only the main process writes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import torch
from accelerate.utils import gather_object
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationToMissingValueError, MissingMandatoryValue

from bias.core.distributed import partial_state, use_cpu
from bias.core.errors import BiasError, ConfigError, TrainingDiverged
from bias.core.io import folder_lock, read_derived, read_json_object, warn, write_json, write_text_atomic
from bias.core.registry import UnknownNameError
from bias.core.strings import StringColumn
from bias.data.dedup import NearDuplicateOptions, split_near_duplicates
from bias.data.sources import resolve_sources
from bias.data.split import DataConfigError, Split, duplicate_report, index_datasets, make_split
from bias.experiment.baselines import BaselineOptions, format_baselines, run_baselines
from bias.experiment.config import validate_classify_config
from bias.experiment.results import aggregate_seeds, format_accuracy, plot_confusion, plot_history, summarize
from bias.experiment.verdict import VerdictOptions, learnability_verdict, train_chance
from bias.inference.runner import RunReport, run_batched
from classifiers.augment import eval_augment, normalizer, train_augment, transform_view
from classifiers.data import SEED_SALT_TRAIN, SEED_SALT_VAL, DecodeCache, ImageDataset, decode_cache_from_recipe
from classifiers.models import TEXT_MODELS, check_classifier, check_model_name, create_classifier
from classifiers.trainer import EpochCallback, train_classifier
from transforms.base import Transform, output_store
from transforms.registry import create_transform, get_transform_class

RUNTIME_KEYS = ("out", "seed", "seeds", "cache_dir", "num_workers", "print_config", "log_level")
logger = logging.getLogger(__name__)


class RunConfigError(ConfigError):
    """The run directory holds a different experiment; the message says how to proceed."""


def experiment_config(cfg: DictConfig) -> dict[str, Any]:
    """The part of the config that determines results (not where files go or how many workers)."""
    plain = OmegaConf.to_container(cfg, resolve=True)
    for key in RUNTIME_KEYS:
        plain.pop(key, None)
    plain.get("recipe", {}).pop("num_workers", None)
    plain.get("data", {}).pop("expected", None)
    if not (plain.get("data", {}).get("near_duplicates") or {}).get("enabled"):
        plain.get("data", {}).pop("near_duplicates", None)  # a disabled analysis does not change results
    recipe, transform = plain.get("recipe") or {}, str((plain.get("transform") or {}).get("name"))
    if "epochs_scale" in recipe:  # what this transform trains: the same run as plain `epochs` set to that
        recipe["epochs"] = scaled_epochs(recipe, transform)
        recipe.pop("epochs_scale")
    view = transform_view(recipe, transform, _transform_view(plain.get("transform")))  # the view the run trains on
    recipe.pop("view_overrides", None)  # the table itself is not the experiment: other rows keep their hash
    if view != "scene":  # how the classifier frames the output changes results; "scene" keeps older hashes
        plain["transform_view"] = view
    return plain


def _transform_view(tcfg: Any) -> str:
    """The configured transform's `view` ("scene" when it is not a registered transform)."""
    try:
        return get_transform_class(str(tcfg["name"])).view
    except (TypeError, KeyError, UnknownNameError):
        return "scene"


def config_hash(cfg: DictConfig) -> str:
    return hashlib.sha1(json.dumps(experiment_config(cfg), sort_keys=True).encode()).hexdigest()[:8]


def run_dir_for(cfg: DictConfig, seed: int) -> Path:
    """`out` if given, else runs/<data>/<transform>/<recipe>-<config hash>/seed<seed> (no timestamps)."""
    if cfg.get("out"):
        base = Path(cfg.out)
        return base / f"seed{seed}" if cfg.get("seeds") else base
    return Path("runs") / str(cfg.data.name) / str(cfg.transform.name) / f"{cfg.recipe.name}-{config_hash(cfg)}" / f"seed{seed}"


def transform_from_config(tcfg: Mapping[str, Any]) -> Transform:
    """The configured transform; bad parameters are a `ConfigError` naming `transform.<name>`."""
    params = {k: v for k, v in dict(tcfg).items() if k != "name"}
    params = {k: (list(v) if isinstance(v, tuple) else v) for k, v in params.items()}
    try:
        return create_transform(str(tcfg["name"]), **params)
    except (TypeError, ValueError) as err:
        if isinstance(err, ConfigError):
            raise
        raise ConfigError(f"transform ({tcfg['name']}): {err}") from err


def validate(cfg: DictConfig, classifier: bool = True) -> Transform:
    """Every check that needs no heavy work, so mistakes fail in seconds; returns the transform, built once.

    `classifier=False` (the transform command, which trains nothing) leaves the model unchecked.
    """
    validate_classify_config(cfg)
    for key in ("out", "cache_dir"):
        check_output_folder(key, cfg.get(key))
    transform = transform_from_config(_plain(cfg.transform))
    if classifier:
        _check_classifier(transform, _plain(cfg.model), cfg.cache_dir)
    try:
        data = _plain(cfg.data)
    except (MissingMandatoryValue, InterpolationToMissingValueError) as err:  # e.g. data.list_file, interpolated
        found = re.search(r"Missing mandatory value: (\S+)", str(err))
        key = found.group(1) if found else str(err.full_key)
        key = key if key.startswith("data.") else f"data.{key}"
        raise DataConfigError(f"{key} is not set: pass {key}=...") from err
    sources = resolve_sources(data)
    for source in sources.values():
        source.check()
    transform.check_sources(sources)
    BaselineOptions.from_config(_plain(cfg.get("baselines")))
    VerdictOptions.from_config(_plain(cfg.get("verdict")))
    transform.check_ready(cfg.cache_dir)  # missing model weights fail here, before any work
    return transform


def check_output_folder(key: str, value: str | None) -> None:
    """`key=value` names a folder this run may create and write: not a file, not on a read-only disk."""
    if not value:
        return
    path = Path(os.path.expanduser(str(value)))
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        named = "names a file" if existing == path else f"lies under {existing}, which is a file"
        raise ConfigError(f"{key}={value} {named}; {key} takes a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{key}={value}: the folder {existing} is not writable (read-only or not yours); "
                          f"choose another {key}=DIR")


def _check_classifier(transform: Transform, model_cfg: dict[str, Any], cache_dir: str) -> None:
    """The model fits what the transform outputs (images, vectors or text) and can be built."""
    name = str(model_cfg["name"])
    check_model_name(name)
    if transform.output == "text" or name in TEXT_MODELS:
        from bias.experiment.text import check_text_run

        check_text_run(transform, model_cfg, cache_dir)
        return
    if (transform.output == "vector") != (name == "mlp"):
        raise ConfigError(
            f"transform {transform.name!r} outputs {transform.output}s but model {name!r} "
            + ("classifies images: add model=mlp" if transform.output == "vector" else "classifies feature vectors")
        )
    check_classifier(name, 2, model_cfg.get("kwargs"), transform.vector_size() if transform.output == "vector" else None)


def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def prepare_split(cfg: DictConfig, accelerator) -> tuple[Split, list[dict[str, str]], dict[str, Any]]:
    """Folders -> checked indexes -> seeded split; the main process builds, the others reuse."""
    data = OmegaConf.to_container(cfg.data, resolve=True)
    cache_dir = Path(cfg.cache_dir)
    with accelerator.main_process_first():  # the main process indexes (and renders planted data) first
        indexes = index_datasets(resolve_sources(data), cache_dir, cfg.get("num_workers"))
    skipped = [row for index in indexes.values() for row in index.broken()]
    per_dataset = data.get("per_dataset")
    split = make_split(indexes, None if per_dataset is None else int(per_dataset), int(data["val_per_dataset"]),
                       int(data.get("split_seed", 0)))
    dupes = duplicate_report(split)
    positions = dupes.pop("_train_positions_in_val")
    if data.get("exclude_train_val_duplicates") and len(positions):
        split = split.without_train(positions)
        dupes["excluded_from_train"] = int(len(positions))
    near = NearDuplicateOptions.from_config(data.get("near_duplicates"))
    if near.enabled:
        with accelerator.main_process_first():  # the main process fills the hash cache, the others reuse it
            dupes["near"], positions = split_near_duplicates(split, near, cache_dir, cfg.get("num_workers"))
        if len(positions):
            split = split.without_train(positions)
    return split, skipped, dupes


def run_classification(cfg: DictConfig, transform: Transform | None = None,
                       callbacks: Sequence[EpochCallback] = ()) -> dict[str, Any]:
    """Run one seed (`seed`) or several (`seeds=[...]`, then also writes `aggregate.json`).

    `transform`: the transform `validate(cfg)` built (it is built once per process: a model
    transform must not load its weights twice). `callbacks` run after every training epoch.
    """
    transform = transform if transform is not None else validate(cfg)
    seeds = list(cfg.seeds) if cfg.get("seeds") else [int(cfg.seed)]
    runs = [run_one(cfg, int(s), transform, callbacks) for s in seeds]
    if len(runs) == 1:
        return runs[0]
    agg = aggregate_seeds(runs)
    base = run_dir_for(cfg, seeds[0]).parent
    if partial_state().is_main_process:
        write_json(agg, base / "aggregate.json")
        logger.info(f"{len(seeds)} seeds: accuracy {100 * agg['accuracy_mean']:.1f} +- "
                    f"{100 * agg['accuracy_std']:.1f}% (chance {100 * agg['chance']:.1f}%) -> {base / 'aggregate.json'}")
    return agg


#: keys every finished run's results.json holds; a file without them is damaged
RESULT_KEYS = ("accuracy", "ci95", "chance", "per_dataset", "confusion", "datasets", "seed", "history")


def read_results(run_dir: Path, set_aside: bool = True) -> tuple[dict[str, Any] | None, str | None]:
    """A finished run's results, checked (`bias.core.io.read_derived`): (results, None), (None, None) when the run
    has not finished, or (None, note) when results.json was damaged (moved aside unless `set_aside=False`:
    rerunning rebuilds it from the last checkpoint)."""
    def reader(path: Path) -> dict[str, Any]:
        results = read_json_object(path, RESULT_KEYS)
        if not isinstance(results["accuracy"], float) or not math.isfinite(results["accuracy"]):
            raise ValueError(f"accuracy {results['accuracy']!r} is not a finite number")
        return results

    return read_derived(run_dir / "results.json", reader, f"{run_dir / 'results.json'}", set_aside)


def _run_lock(run_dir: Path, is_main: bool):
    """The main process holds the run folder's lock while the run writes it; another run on it is refused."""
    if not is_main:
        return contextlib.nullcontext()
    return folder_lock(run_dir, wait=False, busy=f"another run is writing {run_dir} (it holds {run_dir / '.lock'}); "
                                                 "wait for it to finish, or choose another out=DIR")


def run_one(cfg: DictConfig, seed: int, transform: Transform, callbacks: Sequence[EpochCallback] = ()) -> dict[str, Any]:
    """One seed's run in its run folder, under the folder's lock (see `_run_in_folder`).

    A check that fails before training starts removes the folder if this run made it, so that it never blocks
    the corrected command."""
    run_dir = run_dir_for(cfg, seed)
    state = partial_state()
    started: list[bool] = []
    with _run_lock(run_dir, state.is_main_process):
        try:
            return _run_in_folder(cfg, seed, transform, run_dir, started, callbacks)
        except BiasError:
            if not started and state.is_main_process:
                _remove_if_empty(run_dir)
            raise


def _remove_if_empty(run_dir: Path) -> None:
    """Remove a run folder that holds nothing but its lock file (under that lock: a contender is refused)."""
    with contextlib.suppress(OSError):
        if {p.name for p in run_dir.iterdir()} <= {".lock"}:
            (run_dir / ".lock").unlink(missing_ok=True)
            run_dir.rmdir()


def _run_in_folder(cfg: DictConfig, seed: int, transform: Transform, run_dir: Path, started: list[bool],
                   callbacks: Sequence[EpochCallback]) -> dict[str, Any]:
    """The run's steps: reuse a finished run, or prepare the data, train, evaluate, save and report."""
    from accelerate import Accelerator

    state = partial_state()
    recipe = _recipe(cfg)
    expected = experiment_config(cfg)
    _check_folder_holds(run_dir, expected)
    results, repaired = _finished_results(run_dir, state.is_main_process)
    if results is not None:
        return results

    start = time.time()
    accelerator = Accelerator(cpu=use_cpu(), log_with="tensorboard", project_dir=str(run_dir),
                              mixed_precision=str(recipe.get("precision", "no")))
    data = _prepare_data(cfg, seed, transform, recipe, run_dir, expected, accelerator, started)
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    try:
        outcome, baselines, text_info = _train(cfg, recipe, model_cfg, data.split, transform, seed, data.resize,
                                               data.train_read, data.val_read, run_dir, accelerator, callbacks,
                                               data.report.store if data.report else None)
    except TrainingDiverged as err:
        _record_divergence(err, seed, run_dir, accelerator)
    results = _evaluate(cfg, transform, recipe, model_cfg, data, outcome, baselines, seed, accelerator)
    results.update(wall_time_s=round(time.time() - start, 2), train_time_s=round(outcome.wall_time_s, 2),
                   run_dir=str(run_dir),
                   repaired=repaired + (data.report.repaired_files if data.report else []) + outcome.repaired
                   + baselines.get("repaired", []), **text_info)
    if accelerator.is_main_process:
        _save_run(cfg, transform, data, outcome, results, run_dir)
        _log_run(str(cfg.data.name), results, run_dir)
    accelerator.end_training()
    return results


def _recipe(cfg: DictConfig) -> dict[str, Any]:
    """The recipe as a dict, with the number of data-loading workers this run uses and the transform's epochs."""
    recipe = OmegaConf.to_container(cfg.recipe, resolve=True)
    recipe["num_workers"] = int(cfg.num_workers if cfg.get("num_workers") is not None else recipe.get("num_workers", 0))
    return recipe_for_transform(recipe, str(cfg.transform.name))


def scaled_epochs(recipe: Mapping[str, Any], transform: str) -> int:
    """The epochs `transform` trains under `recipe`: `epochs`, times `epochs_scale[transform]` where the recipe
    sets one (rounded, at least `warmup_epochs` and 1)."""
    scale = (recipe.get("epochs_scale") or {}).get(transform)
    if scale is None:
        return int(recipe["epochs"])
    return max(int(round(int(recipe["epochs"]) * float(scale))), int(recipe.get("warmup_epochs") or 0), 1)


def recipe_for_transform(recipe: dict[str, Any], transform: str) -> dict[str, Any]:
    """The recipe one transform trains with: `epochs_scale: {transform name: factor}` multiplies `epochs` for a
    row that needs a longer schedule; a shorter `recipe.epochs` on the command line shortens that row in
    proportion. Warmup and evaluation points stay as set."""
    epochs = scaled_epochs(recipe, transform)
    if epochs == int(recipe["epochs"]):
        return recipe
    logger.info("recipe.epochs_scale: %s trains %d epochs (recipe.epochs %d x %g)", transform, epochs,
                int(recipe["epochs"]), float(recipe["epochs_scale"][transform]))
    return {**recipe, "epochs": epochs}


def _check_folder_holds(run_dir: Path, expected: dict[str, Any]) -> None:
    """A run folder that holds another experiment (its experiment.json differs, or is unreadable) is refused."""
    saved = run_dir / "experiment.json"
    if not saved.exists():
        return
    try:
        held = json.loads(saved.read_text())
    except (OSError, ValueError) as err:
        raise RunConfigError(f"{saved} is damaged ({type(err).__name__}), so what {run_dir} holds is unknown: "
                             f"delete the folder {run_dir} to start this run afresh, or choose another out=DIR"
                             ) from None
    if held != expected:
        raise RunConfigError(
            f"{run_dir} holds a run with a different configuration; choose another out=DIR or delete that folder"
        )


def _finished_results(run_dir: Path, is_main: bool) -> tuple[dict[str, Any] | None, list[str]]:
    """(results of the finished run in `run_dir`, else None; the note about a damaged results.json, if any).

    Every process reads: all reuse the run or none does."""
    results, damaged = read_results(run_dir, set_aside=is_main)
    if damaged and is_main:
        warn(damaged)
    if results is not None and is_main:
        logger.info("reusing finished run %s: %s", run_dir, format_accuracy(results))
    return results, [damaged] if damaged else []


@dataclass
class _RunData:
    """What a run trains and evaluates on: the split, the files skipped, the duplicates found, where the
    transformed inputs are read, and the precomputed transform's report (None for an online transform)."""

    split: Split
    skipped: list[dict[str, str]]
    dupes: dict[str, Any]
    train_read: StringColumn
    val_read: StringColumn
    resize: int | None
    report: RunReport | None


def _prepare_data(cfg: DictConfig, seed: int, transform: Transform, recipe: dict[str, Any], run_dir: Path,
                  expected: dict[str, Any], accelerator, started: list[bool]) -> _RunData:
    """Split the data, create the run folder (only now: a check that failed before leaves nothing that blocks a
    rerun), set the transform up and fill a precomputed transform's store."""
    split, skipped, dupes = prepare_split(cfg, accelerator)
    if accelerator.is_main_process:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json(expected, run_dir / "experiment.json")
        write_text_atomic(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    accelerator.wait_for_everyone()
    started.append(True)
    transform.setup(seed=seed, image_size=int(recipe["image_size"]),
                    run_dir=run_dir if accelerator.is_main_process else None)
    data = _RunData(split, skipped, dupes, split.train_read, split.val_read, cfg.data.get("resize_shorter"), None)
    if transform.kind == "precomputed":
        data.report = precompute(transform, split.all_read(), split.all_sha1(), cfg, accelerator)
        data.skipped += _named_by_sample_id(data.report.failed, split)
        data.train_read = data.report.read_paths(split.train_sha1)
        data.val_read = data.report.read_paths(split.val_sha1)
        data.resize = None  # the cache is stored at the resized size already
    return data


def _record_divergence(err: TrainingDiverged, seed: int, run_dir: Path, accelerator) -> NoReturn:
    """Record a diverged run in failed.json and raise the error again, naming that file."""
    if accelerator.is_main_process:
        write_json({"status": "failed", "reason": str(err), "what": err.what, "value": str(err.value),
                    "epoch": err.epoch, "step": err.step, "seed": seed}, run_dir / "failed.json")
    accelerator.end_training()
    raise TrainingDiverged(err.what, err.value, err.epoch, err.step,
                           f"the run is recorded as failed in {run_dir / 'failed.json'}") from None


def _evaluate(cfg: DictConfig, transform: Transform, recipe: dict[str, Any], model_cfg: dict[str, Any],
              data: _RunData, outcome: Any, baselines: dict[str, Any], seed: int, accelerator) -> dict[str, Any]:
    """The run's results: accuracy and confusion on val, the learnability verdict, and what the run was."""
    ev, split = outcome.evaluation, data.split
    results = summarize(ev.label, ev.pred, split.names, seed)
    verdict = learnability_verdict(outcome.history, train_chance(split.train_labels, split.num_classes),
                                   results["accuracy"], baselines["baselines"],
                                   VerdictOptions.from_config(_plain(cfg.get("verdict"))), n_val=len(ev.label))
    skipped = data.skipped + [dict(f, stage="load") for f in outcome.failed_train + ev.failed]
    results.update(
        transform=transform.name,
        transform_params=transform.get_params(),
        transform_model=transform.model_identity(),  # hub weights: the commit of the snapshot loaded
        transform_preprocessing=transform.preprocessing(),
        family=transform.family,
        model=model_cfg["name"],
        recipe=recipe.get("name"),
        seed=seed,
        split_seed=int(cfg.data.get("split_seed", 0)),
        n_train=int(len(split.train_paths) - len({f["path"] for f in outcome.failed_train})),
        n_val=int(len(ev.label)),
        n_skipped=len(skipped),
        skipped=skipped,
        duplicates=data.dupes,
        history=outcome.history,
        baselines=baselines["baselines"],
        baselines_info={k: v for k, v in baselines.items() if k not in ("baselines", "repaired")},
        verdict=verdict,
        resumed_from_epoch=outcome.resumed_from_epoch,
        optimizer_steps=outcome.steps,
        processes=accelerator.num_processes,
    )
    return results


def _save_run(cfg: DictConfig, transform: Transform, data: _RunData, outcome: Any, results: dict[str, Any],
              run_dir: Path) -> None:
    """The main process writes predictions.csv, the confusion and history figures, and results.json."""
    split = data.split
    pacsv.write_csv(_predictions_table(split, outcome.evaluation, np.array(split.names)), run_dir / "predictions.csv")
    plot_confusion(np.array(results["confusion"]), split.names, run_dir / "confusion.png",
                   f"{transform.name}: {100 * results['accuracy']:.1f}% (chance {100 * results['chance']:.1f}%)")
    plot_history(outcome.history, results["chance"], run_dir / "history.png", f"{cfg.data.name} / {transform.name}")
    write_json(results, run_dir / "results.json")
    (run_dir / "failed.json").unlink(missing_ok=True)  # an earlier attempt diverged; this one finished


def _log_run(data_name: str, results: dict[str, Any], run_dir: Path) -> None:
    """The run's result lines: accuracy, per dataset, the probes, the verdict, what was skipped or repaired,
    and where the files are."""
    verdict, dupes = results["verdict"], results["duplicates"]
    logger.info("\n%s / %s / seed %s: %s", data_name, results["transform"], results["seed"], format_accuracy(results))
    logger.info("  per dataset: %s", ", ".join(f"{k} {100 * v:.1f}%" for k, v in results["per_dataset"].items()))
    if results["baselines"]:
        logger.info("  baselines (linear probes, same split and inputs): %s", format_baselines(results["baselines"]))
    logger.info("  verdict: %s (%s)", verdict["verdict"], verdict["reason"])
    if results["skipped"]:
        logger.info("  skipped %d unusable files (listed in results.json)", len(results["skipped"]))
    if dupes["train_val"] or dupes["across_datasets"]:
        logger.info("  exact duplicates: %s val images also in train, %s contents in more than one dataset",
                    dupes["train_val"], dupes["across_datasets"])
    for note in results["repaired"]:
        logger.info("  repaired: %s", note)
    logger.info("  results: %s\n  figures: %s, %s", run_dir / "results.json", run_dir / "confusion.png",
                run_dir / "history.png")


def _train(cfg: DictConfig, recipe: dict[str, Any], model_cfg: dict[str, Any], split: Split, transform: Transform,
           seed: int, resize: int | None, train_read: StringColumn, val_read: StringColumn, run_dir: Path, accelerator,
           callbacks: Sequence[EpochCallback], store: Any) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """Train and evaluate the run's classifier: (outcome, baselines, text-run info)."""
    text_info: dict[str, Any] = {}
    if transform.output == "text":  # captions: read back from the cache, classified by a text model
        from bias.experiment.text import classify_texts

        start_logging(split, run_dir, accelerator)
        outcome, baselines, text_info = classify_texts(cfg, recipe, split, store, seed, run_dir, accelerator,
                                                       callbacks)
    else:
        group, view = transform.augment_group, transform_view(recipe, transform.name, transform.view)
        size = int(recipe["image_size"])
        norm = normalizer(recipe, group, transform.name)
        decoded = decode_cache_from_recipe(recipe)  # shared: the probes' pass decodes, training epochs reuse
        train_set = ImageDataset(train_read, split.train_labels, train_augment(recipe, group, view), transform, seed,
                                 SEED_SALT_TRAIN, size, resize, report_paths=split.train_paths, normalize=norm,
                                 decode_cache=decoded)
        val_set = ImageDataset(val_read, split.val_labels, eval_augment(recipe, group, view), transform, seed,
                               SEED_SALT_VAL, size, resize, report_paths=split.val_paths, normalize=norm,
                               decode_cache=decoded)

        baselines = _baselines(cfg, recipe, split, transform, seed, resize, train_read, val_read, run_dir, accelerator,
                               decoded)

        torch.manual_seed(seed)
        model = create_classifier(model_cfg["name"], split.num_classes, bool(model_cfg.get("pretrained", False)),
                                  model_cfg.get("kwargs"),
                                  in_features=transform.vector_size() if transform.output == "vector" else None)
        start_logging(split, run_dir, accelerator)
        outcome = train_classifier(model, train_set, val_set, recipe, accelerator, run_dir, seed, split.num_classes,
                                   callbacks)
    return outcome, baselines, text_info


def start_logging(split: Split, run_dir: Path, accelerator) -> None:
    """The main process writes the run's manifest and starts its TensorBoard log, before training."""
    if accelerator.is_main_process:
        pq.write_table(split.manifest(), run_dir / "manifest.parquet")
        accelerator.init_trackers("tensorboard")


def _baselines(cfg: DictConfig, recipe: dict[str, Any], split: Split, transform: Transform, seed: int,
               resize: int | None, train_read: StringColumn, val_read: StringColumn, run_dir: Path,
               accelerator, decoded: DecodeCache | None = None) -> dict[str, Any]:
    """The run's linear probes (`bias.experiment.baselines`), computed once on the main process and kept in
    `baselines.json` (a resumed run reuses it); every process gets the same result."""
    from accelerate.utils import broadcast_object_list

    opts = BaselineOptions.from_config(_plain(cfg.get("baselines")))
    if not opts.enabled:
        return {"baselines": [], "enabled": False}
    saved = run_dir / "baselines.json"
    result: list[Any] = [None]
    if accelerator.is_main_process:
        result[0], damaged = read_derived(saved, lambda p: read_json_object(p, ("baselines",)))
        if damaged:
            warn(damaged)
        if result[0] is None:
            group, size = transform.augment_group, int(recipe["image_size"])
            probe_view = eval_augment(recipe, group, transform_view(recipe, transform.name, transform.view))
            probe_train = ImageDataset(train_read, split.train_labels, probe_view, transform, seed, SEED_SALT_VAL, size,
                                       resize, report_paths=split.train_paths, decode_cache=decoded)
            probe_val = ImageDataset(val_read, split.val_labels, probe_view, transform, seed, SEED_SALT_VAL, size, resize,
                                     report_paths=split.val_paths, decode_cache=decoded)
            result[0] = run_baselines(probe_train, probe_val, split.num_classes, transform.output == "vector", opts,
                                      seed, int(recipe["num_workers"]))
            write_json(result[0], saved)
            if damaged:
                result[0] = {**result[0], "repaired": [damaged]}
    if accelerator.num_processes > 1:
        broadcast_object_list(result, from_process=0)
    return result[0]


def _named_by_sample_id(failed: list[dict[str, str]], split: Split) -> list[dict[str, str]]:
    """Failure rows name what was read (a shard locator for tar members); reports name the sample id."""
    if not failed:
        return failed
    read = split.all_read()
    wanted = pa.array(sorted({f["path"] for f in failed}), pa.large_string())
    hits = np.flatnonzero(pc.is_in(read.to_arrow(), value_set=wanted).to_numpy(zero_copy_only=False))
    ids = dict(zip(read[hits], split.all_paths()[hits]))  # only the failed samples
    return [dict(f, path=ids.get(f["path"], f["path"])) for f in failed]


def _predictions_table(split: Split, ev, names: np.ndarray) -> pa.Table:
    cols = {"path": split.val_paths[ev.index].to_arrow().cast(pa.string()), "dataset": names[ev.label],
            "predicted": names[ev.pred]}
    for j, name in enumerate(names):
        cols[f"p_{name}"] = ev.probs[:, j]
    return pa.table(cols)


def precompute(transform: Transform, paths: StringColumn, sha1s: np.ndarray, cfg: DictConfig, state) -> RunReport:
    """Fill the transform's output store for these sources (`bias.inference.runner`), split across processes."""
    resize = cfg.data.get("resize_shorter")
    gather = (lambda obj: gather_object([obj])) if state.num_processes > 1 else None
    return run_batched(transform, paths, sha1s, output_store(transform, cfg.cache_dir, resize), resize_shorter=resize,
                       rank=state.process_index, world_size=state.num_processes, barrier=state.wait_for_everyone,
                       gather=gather, num_workers=cfg.get("num_workers"), show_progress=state.is_local_main_process,
                       manifest=transform.manifest())


def precompute_for_config(cfg: DictConfig) -> dict[str, Any]:
    """`scripts/transform.py`: fill the cache of a precomputed transform for the configured data."""
    transform = validate(cfg, classifier=False)
    state = partial_state()
    if transform.kind != "precomputed":
        raise ConfigError(f"transform {transform.name!r} runs online inside the data pipeline; nothing to precompute")
    if cfg.get("all_files"):
        data = OmegaConf.to_container(cfg.data, resolve=True)
        with state.main_process_first():
            indexes = index_datasets(resolve_sources(data), Path(cfg.cache_dir), cfg.get("num_workers"))
        paths = StringColumn.concat([ix.read_paths(ix.usable()) for ix in indexes.values()])
        sha1s = np.concatenate([ix.sha1[ix.ok] for ix in indexes.values()])
    else:
        split, _, _ = prepare_split(cfg, state)
        paths, sha1s = split.all_read(), split.all_sha1()
    report = precompute(transform, paths, sha1s, cfg, state)
    summary = {"folder": str(report.folder), "computed": report.computed, "reused": report.reused,
               "repaired": report.repaired, "failed": len(report.failed), "repaired_files": report.repaired_files}
    if state.is_main_process:
        logger.info(f"{transform.name}: {report.computed} computed ({report.repaired} of them repaired), "
                    f"{report.reused} reused, {len(report.failed)} failed -> {report.folder} (manifest.json lists "
                    "failures)")
        for note in report.repaired_files:
            logger.info("  repaired: %s", note)
    return summary
