"""The one table every analysis of `describe` works on: the images of a data config, their captions, a role.

`build_inputs(cfg)` takes the same data configs as a classify run and reuses its indexing and seeded
split (`bias.experiment.run.prepare_split`): the images are the split's train and val samples, in split
order (optionally a seeded subsample of `images_per_dataset` per dataset). Then:

* captions: the text output of the configured caption transform (`cfg.captions`, a transform config such
  as `caption_short` or `caption_long`; on planted data its ``planted_scene`` captioner writes the
  generator's ground truth), read back from the transform's output store
  (`bias.experiment.text.stored_texts`). Images without a stored caption are computed through the
  inference runner (`compute_captions: true`, the default), else the run stops with an error naming the
  command that fills the store. A caption that still cannot be had (its captioning failed) is ``None``:
  counted and listed in `missing_captions` with its reason, never replaced;
* records: on planted data (every source of kind ``planted``), the generator's own scene record of
  each image (`bias.data.planted.find_scene_record`, found by the image's content);
* role: a seeded split of each dataset's images into ``propose`` (a `propose_fraction` share: hypotheses
  are proposed from these) and ``score`` (the rest: hypotheses are tested on these only), so no proposal is
  ever scored on the images it came from. `assign_roles` is a pure function of (labels, fraction, seed).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from bias.core.errors import ConfigError, DataError

PROPOSE, SCORE = "propose", "score"
ROLES = (PROPOSE, SCORE)
#: seed salts: the role draw and the subsample must not reuse each other's random streams
SALT_ROLE, SALT_SUBSAMPLE = 7101, 7102


@dataclass
class DescribeInputs:
    """One row per image: what every `describe` analysis reads (see the module docstring).

    The first eight fields are the design's (docs/describe_design.md); the rest say how the table was made
    (the seed and share of the role draw, the caption source, the captions that are missing and why).
    """

    datasets: list[str]            # dataset names, index = label
    sample_ids: list[str]          # one per image (what reports name)
    labels: np.ndarray             # int, index into datasets
    image_paths: list[str]         # readable image locations (bias.data.sources.load_image reads them)
    sha1s: np.ndarray              # content digests (the runner's cache keys), S40
    captions: list[str | None]     # one per image; None = no caption (counted, listed in missing_captions)
    role: np.ndarray               # "propose" | "score": disjoint split
    records: list[dict] | None     # planted_scene records (the generator's own record), planted data only
    seed: int = 0
    propose_fraction: float = 0.5
    caption_source: dict[str, Any] = field(default_factory=dict)
    missing_captions: list[dict[str, str]] = field(default_factory=list)
    sample: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.int64)
        self.sha1s = np.asarray(self.sha1s, dtype="S40")
        self.role = np.asarray(self.role, dtype="<U7")
        n = len(self.sample_ids)
        lengths = {"labels": len(self.labels), "image_paths": len(self.image_paths), "sha1s": len(self.sha1s),
                   "captions": len(self.captions), "role": len(self.role)}
        if self.records is not None:
            lengths["records"] = len(self.records)
        wrong = {k: v for k, v in lengths.items() if v != n}
        if wrong:
            raise ValueError(f"DescribeInputs: {n} sample_ids but {wrong}")
        if n and (self.labels.min() < 0 or self.labels.max() >= len(self.datasets)):
            raise ValueError(f"DescribeInputs: labels must index datasets ({len(self.datasets)}), got "
                             f"{self.labels.min()}..{self.labels.max()}")
        bad = sorted(set(self.role.tolist()) - set(ROLES))
        if bad:
            raise ValueError(f"DescribeInputs: role must be one of {ROLES}, got {bad}")

    def __len__(self) -> int:
        return len(self.sample_ids)

    def mask(self, role: str) -> np.ndarray:
        """Boolean mask of the images with this role."""
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, got {role!r}")
        return self.role == role

    def subset(self, index: np.ndarray | Sequence[int]) -> DescribeInputs:
        """The rows at `index` (positions or a boolean mask), every field kept aligned."""
        idx = np.asarray(index)
        idx = np.flatnonzero(idx) if idx.dtype == bool else idx.astype(np.int64)
        pick = idx.tolist()
        kept = {self.sample_ids[i] for i in pick}
        return DescribeInputs(list(self.datasets), [self.sample_ids[i] for i in pick], self.labels[idx],
                              [self.image_paths[i] for i in pick], self.sha1s[idx], [self.captions[i] for i in pick],
                              self.role[idx], None if self.records is None else [self.records[i] for i in pick],
                              self.seed, self.propose_fraction, dict(self.caption_source),
                              [m for m in self.missing_captions if m.get("sample_id") in kept], dict(self.sample))

    def image_of(self) -> dict[str, str]:
        """sample id -> readable image path (what the report reads thumbnails from)."""
        return dict(zip(self.sample_ids, self.image_paths))

    def summary(self) -> dict[str, Any]:
        """Counts per dataset and role, the seed and share of the role draw, the caption source, what is missing."""
        per: dict[str, dict[str, int]] = {}
        for k, name in enumerate(self.datasets):
            mine = self.labels == k
            per[name] = {"images": int(mine.sum()), **{r: int((mine & (self.role == r)).sum()) for r in ROLES},
                         "missing_captions": int(sum(1 for i in np.flatnonzero(mine) if self.captions[i] is None))
                         if self.caption_source.get("captioner") else 0}
        return {"datasets": list(self.datasets), "n_images": len(self), "per_dataset": per, "seed": self.seed,
                "propose_fraction": self.propose_fraction, "sample": dict(self.sample),
                "captioner": self.caption_source.get("captioner"), "caption_source": self.caption_source,
                "records": self.records is not None, "n_missing_captions": len(self.missing_captions),
                "missing_captions": list(self.missing_captions)}

    def to_table(self) -> pa.Table:
        """The table as Arrow (inputs.parquet): sample_id, dataset, label, image_path, sha1, caption, role."""
        names = np.asarray(self.datasets, dtype=object)
        return pa.table({
            "sample_id": pa.array(self.sample_ids, pa.string()),
            "dataset": pa.array(names[self.labels].tolist() if len(self) else [], pa.string()),
            "label": pa.array(self.labels, pa.int64()),
            "image_path": pa.array(self.image_paths, pa.string()),
            "sha1": pa.array([s.decode("ascii") for s in self.sha1s.tolist()], pa.string()),
            "caption": pa.array(self.captions, pa.string()),
            "role": pa.array(self.role.tolist(), pa.string()),
        })


def assign_roles(labels: np.ndarray, propose_fraction: float, seed: int) -> np.ndarray:
    """A seeded, per-dataset split of the images into "propose" and "score".

    Dataset k's images (in the given order) are permuted by the generator seeded with (seed, SALT_ROLE, k),
    and the first round(fraction x n_k) become "propose"; a dataset with two or more images keeps at least one
    of each role. The same labels, fraction and seed give the same roles, whatever the other datasets hold.
    """
    if not 0 < float(propose_fraction) < 1:
        raise ConfigError(f"propose_fraction: must be between 0 and 1 (exclusive), got {propose_fraction!r}")
    labels = np.asarray(labels, dtype=np.int64)
    role = np.full(len(labels), SCORE, dtype="<U7")
    for k in np.unique(labels):
        mine = np.flatnonzero(labels == k)
        n = len(mine)
        n_propose = int(round(float(propose_fraction) * n))
        if n >= 2:
            n_propose = min(max(n_propose, 1), n - 1)
        order = np.random.default_rng([int(seed), SALT_ROLE, int(k)]).permutation(n)
        role[mine[order[:n_propose]]] = PROPOSE
    return role


def subsample(labels: np.ndarray, per_dataset: int | None, seed: int) -> np.ndarray:
    """Sorted positions of a seeded sample of at most `per_dataset` images of every dataset (all if None)."""
    labels = np.asarray(labels, dtype=np.int64)
    if per_dataset is None:
        return np.arange(len(labels))
    if int(per_dataset) < 1:
        raise ConfigError(f"images_per_dataset: must be at least 1 or null, got {per_dataset!r}")
    keep = []
    for k in np.unique(labels):
        mine = np.flatnonzero(labels == k)
        order = np.random.default_rng([int(seed), SALT_SUBSAMPLE, int(k)]).permutation(len(mine))
        keep.append(mine[np.sort(order[:int(per_dataset)])])
    return np.sort(np.concatenate(keep)) if keep else np.zeros(0, np.int64)


# --- captions ---------------------------------------------------------------------------------------------

#: the stages that read captions (the others run without any captioner)
CAPTION_STAGES = ("language", "themes", "differences")
#: `captions.captioner` values describe takes: auto picks one (`resolve_captioner`); tags is describe's own
AUTO, TAGS = "auto", "tags"
CAPTIONERS = (AUTO, TAGS, "model", "planted_scene")


#: what follows from each captioner for the traits found in its captions (inputs.json caption_source.implication)
CAPTIONER_IMPLICATIONS = {
    TAGS: "The captions list only the classes the packaged classifiers know (ImageNet's 1,000, with their WordNet "
          "levels; LVIS and ADE20K where those outputs exist): caption traits are class names, and what those "
          "classes cannot name (style, layout, text in the image, people) is not described. Flat artwork and icons "
          "are often given a wrong class.",
    "model": "The captions are what the image-to-text model writes; a trait can be the captioner's habit as well "
             "as the images'.",
    "planted_scene": "The captions are the planted generator's record of what it drew: exact, planted data only.",
}


def needs_captions(plain: Mapping[str, Any]) -> bool:
    """Whether a configured stage reads captions (objects and explained alone do not)."""
    return any(s in CAPTION_STAGES for s in plain.get("stages") or [])


def _all_planted(data: Mapping[str, Any]) -> bool:
    from bias.data.sources import resolve_sources

    return all(src.kind == "planted" for src in resolve_sources(data).values())


def resolve_captioner(plain: Mapping[str, Any]) -> tuple[str, str]:
    """(captioner, why): what writes the captions of this run.

    ``auto`` (the default): the planted generator's ground truth on planted data; else the configured
    image-to-text model when its weights are on disk; else the offline ``tags`` captioner (`describe.tags`).
    An explicit choice is kept; ``planted_scene`` on other data is a `ConfigError` naming what works.
    """
    from bias.core.errors import MissingModelError

    captions = dict(plain.get("captions") or {})
    requested = captions.get("captioner", AUTO)
    if requested not in CAPTIONERS:
        raise ConfigError(f"captions.captioner: expected one of {list(CAPTIONERS)}, got {requested!r}")
    planted = _all_planted(plain["data"])
    if requested == "planted_scene" and not planted:
        raise ConfigError("captions.captioner=planted_scene writes the planted generator's ground truth and captions "
                          "only planted data (data=planted*); for your images use captions.captioner=tags (offline, "
                          "the packaged classifiers) or captions.captioner=model (an image-to-text model)")
    if requested != AUTO:
        return requested, "chosen in the config (captions.captioner)"
    if planted:
        return "planted_scene", "planted data: the generator's own record of what it drew"
    try:
        with _offline():  # auto looks at the disk only: no download is started to find out
            caption_transform({**captions, "captioner": "model"}).check_ready(plain["cache_dir"])
    except MissingModelError as err:
        return TAGS, (f"no captioning model on disk ({str(err).split('. ')[0][:160]}), so the offline tags "
                      "captioner (the packaged ImageNet classifier's classes) wrote them")
    return "model", "the configured image-to-text model is on disk"


@contextmanager
def _offline() -> Iterator[None]:
    """HF_HUB_OFFLINE=1 for the block (`bias.inference.weights` reads it at each resolve)."""
    before = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = before


def caption_transform(captions_cfg: Mapping[str, Any]):
    """The caption transform of `captions` (a transform config whose output is text); None for ``tags``."""
    from bias.experiment.run import transform_from_config

    if not captions_cfg or "name" not in captions_cfg:
        raise ConfigError("captions: expected a caption transform config (captions=caption_short or caption_long)")
    if captions_cfg.get("captioner") == TAGS:
        return None
    if captions_cfg.get("captioner") == AUTO:
        raise ConfigError("captions.captioner=auto: resolve it first (describe.inputs.resolve_captioner)")
    transform = transform_from_config(dict(captions_cfg))
    if transform.output != "text":
        raise ConfigError(f"captions.name: {transform.name!r} outputs {transform.output}s, not captions; use "
                          "caption_short or caption_long")
    return transform


def caption_command(cfg: Any, transform: Any) -> str:
    """The command that fills the caption store for this data (named in the error when captions are missing)."""
    parts = ["python scripts/transform.py", f"transform={transform.name}", f"data={cfg.data.name}"]
    if getattr(transform, "captioner", "model") != "model":
        parts.append(f"transform.captioner={transform.captioner}")
    return " ".join(parts) + " (plus the data overrides of this run)"


def _failure_reasons(store: Any) -> dict[str, str]:
    """sha1 -> why its captioning failed, from the store's entry rows."""
    entries = store.entries()
    if not len(entries):
        return {}
    rows = entries.filter(pc.equal(entries["status"], "failed")).to_pylist()
    return {r["sha1"]: f"captioning failed ({r.get('stage') or 'unknown stage'}): {r.get('reason')}" for r in rows}


def read_captions(cfg: Any, transform: Any, read_paths: Sequence[str], sha1s: np.ndarray, state: Any,
                  compute: bool) -> tuple[list[str | None], dict[str, Any], dict[str, str]]:
    """Captions of every digest from the transform's store, computing the missing ones when `compute`.

    Returns (captions, the caption source record, sha1 -> reason for each caption still missing).
    """
    from bias.experiment.run import precompute
    from bias.experiment.text import MISSING_TEXT, stored_texts
    from transforms.base import output_store

    resize = cfg.data.get("resize_shorter")
    store = output_store(transform, cfg.cache_dir, resize)
    texts = stored_texts(store, sha1s)
    computed = reused = 0
    if any(t is None for t in texts):
        if not compute:
            n = sum(t is None for t in texts)
            raise DataError(f"{n} of {len(texts)} images have no caption in {store.folder}: run "
                            f"{caption_command(cfg, transform)}, or set compute_captions=true")
        transform.check_ready(cfg.cache_dir)  # a missing captioning model fails here, saying what to download
        report = precompute(transform, read_paths, sha1s, cfg, state)
        store, computed, reused = report.store, report.computed, report.reused
        texts = stored_texts(store, sha1s)
    else:
        reused = len(set(np.asarray(sha1s).tolist()))
    reasons = _failure_reasons(store) if any(t is None for t in texts) else {}
    missing = {s.decode("ascii"): reasons.get(s.decode("ascii"), MISSING_TEXT)
               for s, t in zip(np.asarray(sha1s, dtype="S40").tolist(), texts) if t is None}
    source = {"transform": transform.name, "captioner": getattr(transform, "captioner", None),
              "store": str(store.folder), "model": transform.model_identity(), "computed": int(computed),
              "reused": int(reused)}
    return texts, source, missing


def tag_captions_for(cfg: Any, read_paths: Sequence[str], sha1s: np.ndarray, state: Any,
                     side_stores: Mapping[str, Any] | None = None) -> tuple[list[str | None], dict[str, Any], dict[str, str]]:
    """The offline tags captions (`describe.tags`) of every digest: the ImageNet classes of the describe config's
    ``imagenet`` section (computed through the runner, cached by content: the objects stage reuses them) plus
    the LVIS / ADE20K side outputs in `side_stores` (name -> store: ``object_det``, ``seg``; describe.run's
    `side_output_stores`). Same return as `read_captions`."""
    from bias.inference.runner import run_batched
    from describe.objects import IMAGENET_THRESHOLD, ade20k_presence, imagenet_presence, lvis_presence
    from describe.stages import imagenet_transform
    from describe.tags import imagenet_probabilities, source_record, tag_captions
    from transforms.base import output_store

    plain = _plain(cfg)
    transform = imagenet_transform(plain)
    transform.check_ready(plain["cache_dir"])
    resize = plain["data"].get("resize_shorter")
    store = output_store(transform, plain["cache_dir"], resize)
    with state.main_process_first():  # the main process computes, the others read the cache
        report = run_batched(transform, list(read_paths), sha1s, store, resize_shorter=resize,
                             num_workers=plain.get("num_workers"), show_progress=state.is_local_main_process,
                             manifest={"version": transform.version, "params": transform.get_params(),
                                       "model": transform.model_identity(), "dtype": transform.cache_dtype()})
    sha = [s.decode("ascii") for s in np.asarray(sha1s, dtype="S40").tolist()]
    min_prob = float((plain.get("imagenet") or {}).get("min_prob", IMAGENET_THRESHOLD))
    imagenet = imagenet_presence(report.store, sha, min_prob)
    side: dict[str, Any] = {}
    for name, store_ in (side_stores or {}).items():
        side["lvis" if name == "object_det" else "ade20k"] = (lvis_presence if name == "object_det"
                                                              else ade20k_presence)(store_, sha)
    texts, missing_rows = tag_captions(imagenet, imagenet_probabilities(report.store, sha), side.get("lvis"),
                                       side.get("ade20k"))
    source = {**source_record(transform, min_prob, sorted(side)), "store": str(report.folder),
              "computed": int(report.computed), "reused": int(report.reused)}
    missing = {sha[i]: reason for i, reason in missing_rows.items()}
    return texts, source, missing


def scene_records(sha1s: np.ndarray, cache_dir: str | Path) -> list[dict]:
    """The planted generator's record of every image, by content; a missing record is a `DataError`."""
    from bias.data.planted import find_scene_record

    out = []
    for s in np.asarray(sha1s, dtype="S40").tolist():
        try:
            out.append(find_scene_record(s.decode("ascii"), cache_dir))
        except KeyError as err:
            raise DataError(f"{err.args[0]}; delete {Path(cache_dir) / 'planted'} to render the planted data again") from None
    return out


# --- the whole table ------------------------------------------------------------------------------------

def build_inputs(cfg: Any, state: Any = None, transform: Any = None, captioner: tuple[str, str] | None = None,
                 side_stores: Mapping[str, Any] | None = None) -> DescribeInputs:
    """The `DescribeInputs` of a describe config (data, captions, seed, propose_fraction, images_per_dataset).

    The images are every usable image of each dataset (the data config's classifier split sizes,
    ``per_dataset`` and ``val_per_dataset``, are not used: describe needs no train/val split), then a seeded
    sample of at most ``images_per_dataset`` each; what was available and what was used is in ``sample``.
    Captions are read only when a configured stage reads them (`needs_captions`), by the captioner
    `resolve_captioner` picks (`captioner`: its result, if already resolved). Every process takes part
    (indexing and caption computing are shared as in a classify run); `state` is an accelerate state (default
    `bias.core.distributed.partial_state()`). `transform`: the caption transform, if already built;
    `side_stores`: the side outputs the tags captioner reads (describe.run's `side_output_stores`).
    """
    from omegaconf import OmegaConf

    from bias.core.distributed import partial_state
    from bias.data.split import DataConfigError
    from bias.experiment.run import prepare_split

    state = state if state is not None else partial_state()
    plain = _plain(cfg)
    seed = int(cfg.get("seed", 0))
    data = OmegaConf.to_container(cfg.data, resolve=True)
    every = OmegaConf.create({"data": {**data, "per_dataset": None, "val_per_dataset": 1},
                              "cache_dir": plain["cache_dir"], "num_workers": plain.get("num_workers")})
    try:
        split, skipped, _ = prepare_split(every, state)
    except DataConfigError as err:  # the split's own hint names its sizes, which describe does not use
        few = re.match(r"dataset '(.+)' has (\d+) usable images", str(err))
        if few is None:
            raise
        raise DataError(f"dataset {few.group(1)!r} has {few.group(2)} usable image(s); describe needs at least 2 per "
                        "dataset (one to propose traits from, one to test them on): add images to it") from None
    labels = split.all_labels()
    wanted = cfg.get("images_per_dataset")
    keep = subsample(labels, wanted, seed)
    ids, reads = split.all_paths().take(keep).tolist(), split.all_read().take(keep).tolist()
    sha1s, labels = split.all_sha1()[keep], labels[keep]
    sample = {"images_per_dataset": None if wanted is None else int(wanted),
              "available": {name: int((split.all_labels() == k).sum()) for k, name in enumerate(split.names)},
              "used": {name: int((labels == k).sum()) for k, name in enumerate(split.names)},
              "rule": "every usable image of each dataset" + ("" if wanted is None else
                                                              f", a seeded sample of at most {int(wanted)} each")}
    if needs_captions(plain):
        name, why = captioner or resolve_captioner(plain)
        if name == TAGS:
            captions, source, missing = tag_captions_for(cfg, reads, sha1s, state, side_stores)
        else:
            transform = transform if transform is not None else caption_transform(
                {**dict(plain["captions"]), "captioner": name})
            captions, source, missing = read_captions(cfg, transform, reads, sha1s, state,
                                                      bool(cfg.get("compute_captions", True)))
        source["why"] = why
        source["implication"] = CAPTIONER_IMPLICATIONS.get(name, "")
    else:
        captions, missing = [None] * len(ids), {}
        source = {"captioner": None, "why": "no configured stage reads captions (they are read by "
                                            f"{', '.join(CAPTION_STAGES)})"}
    source["unusable_files"] = skipped  # files the index could not use: never part of the table
    missing_rows = [{"sample_id": i, "dataset": split.names[int(lab)], "reason": missing[s.decode("ascii")]}
                    for i, lab, s, c in zip(ids, labels.tolist(), sha1s.tolist(), captions)
                    if c is None and s.decode("ascii") in missing]
    planted = _all_planted(data)
    records = scene_records(sha1s, cfg.cache_dir) if planted else None
    fraction = float(cfg.get("propose_fraction", 0.5))
    return DescribeInputs(list(split.names), ids, labels, reads, sha1s, captions, assign_roles(labels, fraction, seed),
                          records, seed, fraction, source, missing_rows, sample)


def _plain(node: Any) -> Any:
    from omegaconf import DictConfig, OmegaConf

    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node
