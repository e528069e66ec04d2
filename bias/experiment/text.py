"""Classify texts: the classify run of a transform whose output is text (the caption transforms).

The transform's text (its first text output, e.g. ``caption``) is read back from its cache, one row per
source SHA-1, for every train and val sample of the split. Then, by ``model.name``:

* ``sentence_encoder`` (``recipe=sentence_t5``, the published recipe): a sentence encoder fine-tuned in
  full with a linear head by the ordinary trainer (`classifiers.trainer`, `classifiers.text`). With
  ``recipe.grid`` (published: lr {1e-3, 1e-4, 1e-5} x epochs {1, 2, 4, 6}) every grid point is trained
  on the training samples outside a stratified held-out share (``recipe.grid_holdout``, 10%) and scored
  on that share; the best point (ties: the earlier in the grid) is trained again on all of train and
  scored on val. Val never chooses anything. Finished grid points are kept in ``grid.json`` and in
  their own checkpoint folders (``grid/lr<lr>-ep<epochs>/``), so a killed run resumes.
* ``sentence_probe`` (``model=minilm_probe``, offline): frozen sentence embeddings of an encoder (the
  packaged all-MiniLM-L6-v2 by default), then the multinomial logistic regression of the image
  baselines, its L2 strength chosen on a held-out share of train (`classifiers.probes.select_probe`).
  Fitted once on the main process; the recipe's training keys are not used.

The baseline of every text run is ``bag_of_words``: the same logistic regression on log(1 + count) of
the 2,048 words found in the most training texts, on the same samples; the verdict (`bias.experiment.
verdict`) then reads it as it reads the pixel probes of an image run. A sample whose text is missing
(its captioning failed: listed in ``skipped`` by the runner) is left out of training and metrics and
reported; an empty text is classified as the empty string it is. ``results.json`` gains ``text``:
counts of empty and missing texts, and the grid or probe that was chosen.
"""

from __future__ import annotations

import gc
import json
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from bias.core.errors import ConfigError
from bias.core.io import write_json
from bias.core.strings import sha1_array
from bias.data.split import Split
from bias.experiment.baselines import BaselineOptions, train_sample
from bias.experiment.results import bootstrap_ci
from bias.inference.store import OutputStore
from classifiers.models import TEXT_MODELS, create_classifier
from classifiers.probes import select_probe, stratified_holdout
from classifiers.text import (
    BagOfWords,
    TextDataset,
    check_max_length,
    embed_texts,
    encoder_folder,
    load_encoder,
)
from classifiers.trainer import EpochCallback, Evaluation, TrainOutcome, train_classifier

#: the probe's options (``model.kwargs`` of ``model=minilm_probe``) and their defaults
PROBE_OPTIONS = {"weights": None, "max_length": 256, "batch_size": 64, "normalize": True,
                 "l2_grid": [10.0, 1.0, 0.1, 0.01, 0.001], "holdout": 0.2, "max_iter": 200}
ENCODER_OPTIONS = {"weights": None, "max_length": 256}
#: words kept by the bag-of-words baseline (50k training texts x 2,048 float32 words = 400 MB)
BOW_MAX_WORDS = 2048
MISSING_TEXT = "no text in the cache: its captioning failed or did not run (see skipped)"


def _options(kwargs: Mapping[str, Any] | None, defaults: Mapping[str, Any], model: str) -> dict[str, Any]:
    kwargs = dict(kwargs or {})
    unknown = sorted(set(kwargs) - set(defaults))
    if unknown:
        raise ConfigError(f"model.kwargs: unknown key(s) {unknown} for model {model!r}; it takes {sorted(defaults)}")
    return {**defaults, **kwargs}


def check_text_run(transform: Any, model_cfg: Mapping[str, Any], cache_dir: str) -> None:
    """A text transform with a text model, its options, and its weights on disk: before any work."""
    name = str(model_cfg["name"])
    if transform.output != "text":
        raise ConfigError(f"model {name!r} classifies text, but transform {transform.name!r} outputs "
                          f"{transform.output}s; choose an image model (e.g. model=resnet_cpu)")
    if name not in TEXT_MODELS:
        raise ConfigError(f"transform {transform.name!r} outputs text, which model {name!r} cannot classify: add "
                          "model=minilm_probe (a logistic regression on frozen MiniLM sentence embeddings, offline) "
                          "or recipe=sentence_t5 (the published fine-tuned sentence-t5-base)")
    options = _options(model_cfg.get("kwargs"), PROBE_OPTIONS if name == "sentence_probe" else ENCODER_OPTIONS, name)
    check_max_length(options["max_length"])
    if options["weights"] is None:
        raise ConfigError(f"model.kwargs.weights: model {name!r} needs the weights of a text encoder")
    encoder_folder(options["weights"], cache_dir)  # a missing model fails here, saying what to download


def text_output(store: OutputStore) -> str:
    """The store's first text output: what a text transform's classifier reads."""
    names = [name for name, spec in store.outputs.items() if spec.kind == "text"]
    if not names:
        raise ConfigError(f"{store.folder.name} has no text output to classify")
    return names[0]


def stored_texts(store: OutputStore, sha1s: np.ndarray) -> list[str | None]:
    """The stored text of every digest, in order; None where there is none (a failed or missing caption)."""
    try:
        table = store.read_text(text_output(store)).sort_by("sha1")
    except FileNotFoundError:  # nothing was stored: every captioning failed
        return [None] * len(sha1s)
    known = sha1_array(table["sha1"])
    texts = table["text"].to_pylist()
    wanted = sha1_array(sha1s)
    pos = np.searchsorted(known, wanted)
    hit = (pos < len(known)) & (known[np.minimum(pos, max(0, len(known) - 1))] == wanted) if len(known) else \
        np.zeros(len(wanted), dtype=bool)
    return [texts[p] if h else None for p, h in zip(pos.tolist(), hit.tolist())]


def _missing_rows(texts: Sequence[str | None], paths: Any) -> list[dict[str, str]]:
    return [{"path": paths[i], "reason": MISSING_TEXT} for i, t in enumerate(texts) if t is None]


def _broadcast(obj: Any, accelerator) -> Any:
    if accelerator.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        box = [obj]
        broadcast_object_list(box, from_process=0)
        return box[0]
    return obj


# --- the baseline -------------------------------------------------------------------------------------

def bag_of_words_baseline(train_texts: Sequence[str], y_train: np.ndarray, val_texts: Sequence[str],
                          y_val: np.ndarray, num_classes: int, opts: BaselineOptions, seed: int) -> dict[str, Any]:
    """The bag-of-words logistic regression, in the form of `bias.experiment.baselines.run_baselines`."""
    start = time.time()
    sample = train_sample(len(train_texts), opts.max_train, seed)
    fit_texts = [train_texts[i] for i in sample]
    bow = BagOfWords(BOW_MAX_WORDS).fit(fit_texts)
    name = f"{len(bow.vocabulary_)}words"
    probe = select_probe({name: bow.transform(fit_texts)}, y_train[sample], num_classes, opts.l2_grid, opts.holdout,
                         seed)
    correct = probe.model.predict(bow.transform(val_texts)) == y_val
    return {"baselines": [{
        "name": "bag_of_words", "description": "logistic regression on log(1 + word counts)",
        "accuracy": float(correct.mean()) if len(correct) else float("nan"),
        "ci95": list(bootstrap_ci(correct, seed=seed)), "features": probe.features, "l2": probe.l2,
        "holdout_accuracy": probe.holdout_accuracy, "n_train": int(len(sample)), "n_val": int(len(y_val)),
        "candidates": probe.candidates}], "time_s": round(time.time() - start, 2), "max_train": opts.max_train,
        "sample_seed": seed}


def _baselines(cfg, texts: dict[str, tuple[list[str], np.ndarray]], num_classes: int, seed: int, run_dir: Path,
               accelerator) -> dict[str, Any]:
    from omegaconf import DictConfig, OmegaConf

    section = cfg.get("baselines")
    opts = BaselineOptions.from_config(OmegaConf.to_container(section, resolve=True)
                                       if isinstance(section, DictConfig) else section)
    if not opts.enabled:
        return {"baselines": [], "enabled": False}
    saved = run_dir / "baselines.json"
    result = None
    if accelerator.is_main_process:
        if saved.exists():
            result = json.loads(saved.read_text())
        else:
            (tr, y_tr), (va, y_va) = texts["train"], texts["val"]
            result = bag_of_words_baseline(tr, y_tr, va, y_va, num_classes, opts, seed)
            write_json(result, saved)
    return _broadcast(result, accelerator)


# --- the probe ------------------------------------------------------------------------------------------

def fit_probe(options: Mapping[str, Any], train: tuple[list[str], np.ndarray], val: tuple[list[str], np.ndarray],
              num_classes: int, seed: int, device: torch.device, cache_dir: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Frozen embeddings + logistic regression: (val predictions and the one-entry history, what was chosen)."""
    start = time.time()
    encoder, tokenizer = load_encoder(encoder_folder(options["weights"], cache_dir))

    def embed(texts: list[str]) -> np.ndarray:
        return embed_texts(encoder, tokenizer, texts, int(options["batch_size"]), int(options["max_length"]), device,
                           bool(options["normalize"]))

    (tr_texts, y_tr), (va_texts, y_va) = train, val
    x_tr, x_va = embed(tr_texts), embed(va_texts)
    fit = select_probe({"embedding": x_tr}, y_tr, num_classes, options["l2_grid"], float(options["holdout"]), seed,
                       int(options["max_iter"]))
    train_logits = fit.model.decision_function(x_tr)
    probs = fit.model.predict_proba(x_va)
    history = [{"epoch": 1, "step": 0, "lr": 0.0,
                "train_loss": float(F.cross_entropy(train_logits, torch.as_tensor(y_tr)).item()),
                "train_acc": float((train_logits.argmax(-1).numpy() == y_tr).mean()),
                "val_acc": float((probs.argmax(1) == y_va).mean()) if len(y_va) else float("nan")}]
    info = {"probe": {"l2": fit.l2, "holdout_accuracy": fit.holdout_accuracy, "candidates": fit.candidates,
                      "embedding_dim": int(x_tr.shape[1]), "encoder": str(encoder_folder(options["weights"], cache_dir)),
                      "time_s": round(time.time() - start, 2)}}
    return {"probs": probs, "history": history}, info


# --- the grid -------------------------------------------------------------------------------------------

def grid_points(grid: Mapping[str, Sequence[Any]]) -> list[tuple[float, int]]:
    """(lr, epochs) in grid order: the learning rates as listed, each with the epochs as listed."""
    return [(float(lr), int(epochs)) for lr in grid["lr"] for epochs in grid["epochs"]]


def point_name(point: tuple[float, int]) -> str:
    return f"lr{point[0]:g}-ep{point[1]}"


def choose_grid_point(points: Sequence[tuple[float, int]], train_labels: np.ndarray, holdout: float, seed: int,
                      score: Callable[[tuple[float, int], np.ndarray, np.ndarray], float],
                      done: Mapping[str, float] | None = None,
                      record: Callable[[str, float], None] | None = None) -> tuple[tuple[float, int], list[dict]]:
    """The grid point with the best held-out accuracy, and every point's score.

    `score(point, fit_positions, holdout_positions)` trains on the training samples at `fit_positions` and
    returns the accuracy on those at `holdout_positions` (a stratified `holdout` share of train, seeded):
    only positions of train are ever handed out. `done` holds the scores of points already finished (by
    `point_name`); `record(name, accuracy)` is called after each new one. Ties go to the earlier point.
    """
    fit, held = stratified_holdout(np.asarray(train_labels), holdout, seed)
    done = dict(done or {})
    tried = []
    for point in points:
        name = point_name(point)
        if name not in done:
            done[name] = float(score(point, fit, held))
            if record is not None:
                record(name, done[name])
        tried.append({"lr": point[0], "epochs": point[1], "holdout_accuracy": done[name]})
    best = max(range(len(points)), key=lambda i: (tried[i]["holdout_accuracy"], -i))
    return points[best], tried


def fine_tune(cfg, recipe: Mapping[str, Any], model_cfg: Mapping[str, Any], train_set: TextDataset,
              val_set: TextDataset, num_classes: int, seed: int, run_dir: Path, accelerator,
              callbacks: Sequence[EpochCallback]) -> tuple[TrainOutcome, dict[str, Any]]:
    """The sentence encoder through the trainer; with `recipe.grid`, its point chosen on a part of train."""
    kwargs = _options(model_cfg.get("kwargs"), ENCODER_OPTIONS, "sentence_encoder") | {"cache_root": cfg.cache_dir}

    def train(point: tuple[float, int], train_part: TextDataset, eval_part: TextDataset, folder: Path,
              hooks: Sequence[EpochCallback] = ()) -> TrainOutcome:
        torch.manual_seed(seed)
        model = create_classifier("sentence_encoder", num_classes, kwargs=kwargs)
        point_recipe = {**recipe, "lr": point[0], "epochs": point[1],
                        "min_lr": min(float(recipe.get("min_lr", 0.0)), point[0])}
        try:
            return train_classifier(model, train_part, eval_part, point_recipe, accelerator, folder, seed, num_classes,
                                    hooks)
        finally:
            del model
            accelerator.free_memory()  # the prepared model and optimizer of this point go
            gc.collect()

    info: dict[str, Any] = {}
    grid = recipe.get("grid")
    if grid:
        saved = run_dir / "grid.json"
        done = json.loads(saved.read_text()) if saved.exists() else {}

        def score(point, fit_positions, held_positions) -> float:
            out = train(point, train_set.subset(fit_positions), train_set.subset(held_positions),
                        run_dir / "grid" / point_name(point))
            return out.evaluation.accuracy

        def record(name: str, accuracy: float) -> None:
            done[name] = accuracy
            if accelerator.is_main_process:
                write_json(done, saved)

        holdout = float(recipe.get("grid_holdout", 0.1))
        chosen, tried = choose_grid_point(grid_points(grid), train_set.labels, holdout, seed, score, done, record)
        info["grid"] = {"holdout": holdout, "points": tried, "chosen": {"lr": chosen[0], "epochs": chosen[1]}}
    else:
        chosen = (float(recipe["lr"]), int(recipe["epochs"]))
    outcome = train(chosen, train_set, val_set, run_dir, callbacks)
    return outcome, info


# --- the run --------------------------------------------------------------------------------------------

def classify_texts(cfg, recipe: Mapping[str, Any], split: Split, store: OutputStore, seed: int, run_dir: Path,
                   accelerator, callbacks: Sequence[EpochCallback] = ()) -> tuple[TrainOutcome, dict[str, Any],
                                                                                 dict[str, Any]]:
    """(the training outcome, the baselines, ``{"text": ...}`` for results.json) of a text transform's run."""
    from omegaconf import OmegaConf

    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    train_texts, val_texts = stored_texts(store, split.train_sha1), stored_texts(store, split.val_sha1)
    y_train, y_val = np.asarray(split.train_labels), np.asarray(split.val_labels)
    have_tr = np.array([t is not None for t in train_texts], dtype=bool)
    have_va = np.array([t is not None for t in val_texts], dtype=bool)
    present = {"train": ([t for t in train_texts if t is not None], y_train[have_tr]),
               "val": ([t for t in val_texts if t is not None], y_val[have_va])}
    baselines = _baselines(cfg, present, split.num_classes, seed, run_dir, accelerator)
    info: dict[str, Any] = {"missing": int((~have_tr).sum() + (~have_va).sum()),
                            "empty_train": sum(1 for t in train_texts if t == ""),
                            "empty_val": sum(1 for t in val_texts if t == "")}
    failed_train = _missing_rows(train_texts, split.train_paths)
    failed_val = _missing_rows(val_texts, split.val_paths)
    if model_cfg["name"] == "sentence_probe":
        start = time.time()
        options = _options(model_cfg.get("kwargs"), PROBE_OPTIONS, "sentence_probe")
        fitted = None
        if accelerator.is_main_process:
            fitted = fit_probe(options, present["train"], present["val"], split.num_classes, seed, accelerator.device,
                               cfg.cache_dir)
        (result, chosen) = _broadcast(fitted, accelerator)
        probs = result["probs"]
        evaluation = Evaluation(np.flatnonzero(have_va), y_val[have_va], probs.argmax(1), probs, failed_val)
        outcome = TrainOutcome(evaluation, result["history"], failed_train, 0, 0, time.time() - start)
        info |= chosen
    else:
        tokenizer = load_encoder_tokenizer(model_cfg, cfg.cache_dir)
        max_length = int(_options(model_cfg.get("kwargs"), ENCODER_OPTIONS, "sentence_encoder")["max_length"])
        reasons_tr = {int(i): MISSING_TEXT for i in np.flatnonzero(~have_tr)}
        reasons_va = {int(i): MISSING_TEXT for i in np.flatnonzero(~have_va)}
        train_set = TextDataset(train_texts, y_train, tokenizer, max_length, split.train_paths, reasons_tr)
        val_set = TextDataset(val_texts, y_val, tokenizer, max_length, split.val_paths, reasons_va)
        outcome, chosen = fine_tune(cfg, recipe, model_cfg, train_set, val_set, split.num_classes, seed, run_dir,
                                    accelerator, callbacks)
        info |= chosen
    return outcome, baselines, {"text": info}


def load_encoder_tokenizer(model_cfg: Mapping[str, Any], cache_dir: str) -> Any:
    """The tokenizer of a text model's encoder folder (the datasets tokenise with it)."""
    from transformers import AutoTokenizer

    options = _options(model_cfg.get("kwargs"), ENCODER_OPTIONS, str(model_cfg["name"]))
    return AutoTokenizer.from_pretrained(encoder_folder(options["weights"], cache_dir))


def write_text_examples(store: OutputStore, samples: Mapping[str, tuple[Sequence[str], np.ndarray]], path: Path,
                        title: str) -> None:
    """`examples/<row>.md` of the bias table: each dataset's sample images and their stored texts."""
    lines = [f"# {title}: example texts", ""]
    for name, (paths, sha1s) in samples.items():
        lines += [f"## {name}", ""]
        for image, text in zip(paths, stored_texts(store, sha1s)):
            shown = "(no text: failed)" if text is None else (text or "(empty)")
            lines.append(f"- `{Path(str(image)).name}`: {shown}")
        lines.append("")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))
