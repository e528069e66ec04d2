"""The describe stages `objects`, `language`, `themes`, `differences` and `explained`: parts A, B and C wired into the slots of
`describe.run` (`STAGE_FUNCTIONS`, which `describe.run` registers when it is imported, so `STAGES` is filled).

Each stage is a function of a `describe.run.StageContext` (typed `Any` here: `describe.run` imports this module and
registers `STAGE_FUNCTIONS`, so this module must not import it back) returning the plain dict that `describe/report.py`'s contract names
(its module docstring), with Arrow tables under ``tables`` (written as ``<stage>.<table>.parquet``) and figures in
``ctx.stage_dir(<stage>)`` (paths relative to the describe folder). Seeds come from ``ctx.seed``; what could not
be used is listed under ``skipped`` / ``failed`` with its reason, never dropped. ``cache_use`` says what this run
computed and what it read from the caches (ImageNet outputs, sentence or CLIP embeddings); with the LLM ledger's
call counts it is the only part of a result that differs between a cold run and a rerun (besides wall times).

* ``objects``: class presence per image from every source available (`describe.objects`): the planted
  generator's records (planted data), ImageNet classes computed here through the inference runner
  (`imagenet_cls`, cached by content in its output store; config section ``imagenet``), LVIS from the
  ``object_det`` side output and ADE20K from ``seg`` where their stores exist. Per source: the share of each
  dataset's images containing each class, unique classes per image (box plots), instances per image where the
  source counts them, and the one-vs-rest logistic-regression ranking with bootstrap intervals. Which sources
  were used, and why the others were not, is in ``sources``. The presence of every image is the ``presence``
  table (long form: sample_id, source, class), which `differences` and `explained` read.
* ``language``: LDA topics, word clouds (PNG files) and distinctive words (`describe.language`) per dataset.
* ``themes``: five titled themes per dataset written by the LLM (`describe.themes.describe_themes`, config section
  ``themes`` = its keyword arguments; ``procedure: slots`` by default, one short answer per call, the chunk titles
  grouped with the sentence encoder) from the captions of the ``propose`` images only; failed steps listed.
  The LLM is built by `llm_generator` from the ``llm`` section, the one builder the differences proposer uses too.
* ``differences``: proposers on the ``propose`` images only: statistics (distinctive words and object presence
  ratios recomputed on the propose images, so nothing is read from the images it is scored on) and an LLM when
  a generator is available (`make_generator`; when `describe.llm` cannot be imported it is recorded as not run). Scored on
  the ``score`` images (`describe.differences.find_differences`) by caption-text similarity with the sentence
  encoder (``encoder``) or image-text with open_clip when ``clip`` is configured.
* ``explained``: the explained share (`describe.explained.explained_share`) of the top-k hypotheses' scores and
  of the object-presence vectors, against the latest classify run on the same data
  (`describe.report.find_classify_runs`); without one the accuracies are reported and the share is said to be
  missing (no image accuracy is invented).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from bias.core.errors import ConfigError, DataError

StageContext = Any  # describe.run.StageContext (not imported: describe.run imports this module)

#: the object sources, in the order they are reported (describe.objects.SOURCES) and their side outputs
SIDE_SOURCE = {"lvis": "object_det", "ade20k": "seg"}
#: add-half smoothing of the presence ratio share_in / share_out (a class absent from the rest stays finite)
RATIO_SMOOTHING = 0.5


def _safe(name: str) -> str:
    """A dataset name as a file name part."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(name)) or "_"


def _wanted_sources(ctx_plain: Mapping[str, Any]) -> list[str]:
    from describe.objects import SOURCES

    wanted = list((ctx_plain.get("objects") or {}).get("sources") or SOURCES)
    bad = sorted(set(wanted) - set(SOURCES))
    if bad:
        raise ConfigError(f"objects.sources: unknown {bad}; the sources are {list(SOURCES)}")
    return wanted


# --- objects --------------------------------------------------------------------------------------------

def imagenet_transform(plain: Mapping[str, Any]) -> Any:
    """The `imagenet_cls` transform of the config's ``imagenet`` section (packaged defaults for what it omits).

    Every key but ``min_prob`` (the presence threshold, read by `imagenet_presence`) is a transform parameter
    (weights, model_name, arch, size, top_k, batch_size, device, dtype, ...).
    """
    import bias.configs
    from omegaconf import OmegaConf

    from bias.experiment.run import transform_from_config

    packaged = OmegaConf.to_container(OmegaConf.load(Path(bias.configs.__file__).parent / "transform" /
                                                     "imagenet_cls.yaml"), resolve=True)
    params = {k: v for k, v in dict(plain.get("imagenet") or {}).items() if k not in ("min_prob",)}
    return transform_from_config({**packaged, **params})


def check_objects(plain: Mapping[str, Any]) -> None:
    """Before any work: the sources are known and the ImageNet classifier's weights resolve."""
    if "imagenet" in _wanted_sources(plain):
        imagenet_transform(plain).check_ready(plain["cache_dir"])


def _imagenet(ctx: StageContext, sha: list[str]) -> tuple[Any, dict[str, Any]]:
    """ImageNet presence of every image, computing the missing ones through the runner (cached by content)."""
    from bias.inference.runner import run_batched
    from describe.objects import IMAGENET_THRESHOLD, imagenet_presence
    from transforms.base import output_store

    transform = imagenet_transform(ctx.plain)
    resize = ctx.plain["data"].get("resize_shorter")
    store = output_store(transform, ctx.cache_dir, resize)
    report = run_batched(transform, ctx.inputs.image_paths, ctx.inputs.sha1s, store, resize_shorter=resize,
                         num_workers=ctx.plain.get("num_workers"), show_progress=True,
                         manifest={"version": transform.version, "params": transform.get_params(),
                                   "model": transform.model_identity(), "dtype": transform.cache_dtype()})
    threshold = float((ctx.options("imagenet")).get("min_prob", IMAGENET_THRESHOLD))
    presence = imagenet_presence(report.store, sha, threshold)
    info = {"model": {"name": "imagenet_cls", "model_name": transform.model_name, "size": transform.size,
                      "top_k": transform.top_k, **(transform.model_identity() or {})},
            "store": str(report.folder), "computed": report.computed, "reused": report.reused,
            "failed": len(report.failed)}
    return presence, info


def _side_presence(ctx: StageContext, source: str, sha: list[str]) -> tuple[Any | None, dict[str, Any]]:
    from describe.objects import ade20k_presence, lvis_presence

    side = SIDE_SOURCE[source]
    mode = (ctx.plain.get("side_outputs") or {}).get(side, "auto")
    store = ctx.side_outputs.get(side)
    if store is None:
        why = (f"side_outputs.{side}=off" if mode == "off" else
               f"no {side} output for this data and cache (python scripts/transform.py transform={side} "
               f"data={ctx.plain['data']['name']} computes it)")
        return None, {"status": "missing", "reason": why}
    presence = (lvis_presence if source == "lvis" else ade20k_presence)(store, sha)
    if not presence.has_output.any():
        return None, {"status": "missing", "reason": f"the {side} store {store.folder} holds none of these images"}
    return presence, {"status": "used", "reason": f"{side} side output ({store.folder})"}


def _per_dataset(values: np.ndarray, labels: np.ndarray, ok: np.ndarray, datasets: list[str]) -> dict[str, list]:
    return {name: values[(labels == d) & ok].astype(int).tolist() for d, name in enumerate(datasets)}


def objects_stage(ctx: StageContext) -> dict[str, Any]:
    """Object statistics of every available source (module docstring)."""
    from describe.objects import (
        box_plot_png,
        class_shares,
        ovr_ranking,
        planted_presence,
        unique_per_image,
    )

    x, opts = ctx.inputs, ctx.options("objects")
    n_boot, top = int(opts.get("bootstrap", 200)), int(opts.get("top_classes", 15))
    max_classes = int(opts.get("max_classes", 30))
    wanted = _wanted_sources(ctx.plain)
    sha = [s.decode("ascii") for s in x.sha1s.tolist()]
    presences: dict[str, Any] = {}
    sources: dict[str, dict[str, Any]] = {}
    cache_use: dict[str, dict[str, int]] = {}
    for source in ("planted_scene", "imagenet", "lvis", "ade20k"):
        if source not in wanted:
            sources[source] = {"status": "off", "reason": "not in objects.sources"}
        elif source == "planted_scene":
            if x.records is None:
                sources[source] = {"status": "missing", "reason": "not planted data: there is no generator record"}
            else:
                presences[source] = planted_presence(x.records, sha)
                sources[source] = {"status": "used", "reason": "the planted generator's own scene records"}
        elif source == "imagenet":
            presences[source], info = _imagenet(ctx, sha)
            sources[source] = {"status": "used", "reason": f"imagenet_cls run through the inference runner, "
                               f"its outputs cached in {info['store']}", "model": info["model"]}
            cache_use["imagenet"] = {k: info[k] for k in ("computed", "reused", "failed")}
        else:
            presence, sources[source] = _side_presence(ctx, source, sha)
            if presence is not None:
                presences[source] = presence
    if not presences:
        raise DataError(f"describe.objects: no object source is available: {sources}")

    ids = np.asarray(x.sample_ids, dtype=object)
    out: dict[str, Any] = {"sources": sources, "top_classes": top, "share": {}, "unique_per_image": {},
                           "instances_per_image": {}, "ranking": {}, "rules": {}, "figures": {}, "seed": ctx.seed,
                           "skipped": [], "models": [s["model"] for s in sources.values() if s.get("model")],
                           "cache_use": cache_use}
    tables: dict[str, pa.Table] = {}
    long: dict[str, list[str]] = {"sample_id": [], "source": [], "class": []}
    folder = ctx.stage_dir("objects")
    for source, p in presences.items():
        sources[source]["images_with_output"] = int(p.has_output.sum())
        sources[source]["images_missing"] = len(p.missing)
        out["rules"][source] = p.rule
        out["skipped"] += [{"item": x.sample_ids[m["index"]], "source": source, "reason": m["reason"]}
                           for m in p.missing]
        shares = class_shares(p, x.labels, x.datasets)
        tables[f"share_{source}"] = shares
        per: dict[str, dict[str, float]] = {d: {} for d in x.datasets}
        for row in shares.to_pylist():
            if row["share"] == row["share"]:  # NaN: the dataset has no image with output
                per[row["dataset"]][row["class"]] = row["share"]
        out["share"][source] = per
        unique = unique_per_image(p, x.labels, x.datasets)
        out["unique_per_image"][source] = {d: v["values"] for d, v in unique.items()}
        png = folder / f"unique_per_image_{_safe(source)}.png"
        png.write_bytes(box_plot_png(unique, title=f"{source}: unique classes per image"))
        out["figures"][source] = str(png.relative_to(ctx.out_dir))
        if p.counts is not None:
            out["instances_per_image"][source] = _per_dataset(p.counts.sum(axis=1), x.labels, p.has_output,
                                                              x.datasets)
        ranking = ovr_ranking(p, x.labels, x.datasets, max_classes=max_classes, n_boot=n_boot, seed=ctx.seed)
        tables[f"ranking_{source}"] = ranking
        ranked: dict[str, list[dict[str, Any]]] = {d: [] for d in x.datasets}
        for row in ranking.to_pylist():
            ranked[row["dataset"]].append({"class": row["class"], "coef": row["coef"],
                                           "ci95": [row["ci_low"], row["ci_high"]],
                                           "excludes_zero": row["excludes_zero"], "share_in": row["share_in"],
                                           "share_out": row["share_out"]})
        out["ranking"][source] = ranked
        rows, cols = np.nonzero(p.present)
        long["sample_id"] += ids[rows].tolist()
        long["source"] += [source] * len(rows)
        long["class"] += [p.classes[c] for c in cols]
    tables["presence"] = pa.table({k: pa.array(v, pa.string()) for k, v in long.items()},
                                  metadata={"sources": ",".join(presences)})
    out["tables"] = tables
    return out


def presence_matrix(ctx: StageContext, sample_ids: list[str], sources: list[str] | None = None
                    ) -> tuple[np.ndarray, list[str], dict[str, int]]:
    """Binary presence [len(sample_ids), C] from the objects stage's ``presence`` table, columns
    "source:class" (sorted), the sources given or all used; and per source, how many of the rows it has no
    output for (those rows are all False for it)."""
    import pyarrow.parquet as pq

    res = ctx.results.get("objects") or {}
    files = res.get("table_files") or {}
    if "presence" not in files:
        raise DataError("describe: the objects stage wrote no presence table")
    table = pq.read_table(ctx.out_dir / files["presence"]).to_pydict()
    used = [s for s, v in (res.get("sources") or {}).items() if v.get("status") == "used"]
    sources = [s for s in (sources or used) if s in used]
    missing_ids = {s: {m["item"] for m in res.get("skipped") or [] if m.get("source") == s} for s in sources}
    row = {sid: i for i, sid in enumerate(sample_ids)}
    keys = sorted({f"{s}:{c}" for s, c in zip(table["source"], table["class"]) if s in sources})
    col = {k: j for j, k in enumerate(keys)}
    matrix = np.zeros((len(sample_ids), len(keys)), dtype=bool)
    for sid, s, c in zip(table["sample_id"], table["source"], table["class"]):
        if s in sources and sid in row:
            matrix[row[sid], col[f"{s}:{c}"]] = True
    no_output = {s: sum(1 for sid in sample_ids if sid in missing_ids[s]) for s in sources}
    return matrix, keys, no_output


def object_ratios(matrix: np.ndarray, keys: list[str], labels: np.ndarray, datasets: list[str],
                  min_share: float = 0.05) -> dict[str, list[tuple[str, float]]]:
    """Per dataset: (class, smoothed share_in / share_out) of the classes in at least `min_share` of its images;
    share = (containing + 0.5) / (images + 1) on both sides, so a class the rest never shows stays finite."""
    out: dict[str, list[tuple[str, float]]] = {}
    a = RATIO_SMOOTHING
    for d, name in enumerate(datasets):
        mine, rest = labels == d, labels != d
        if not mine.any() or not rest.any():
            out[name] = []
            continue
        c_in, c_out = matrix[mine].sum(axis=0), matrix[rest].sum(axis=0)
        s_in = (c_in + a) / (mine.sum() + 2 * a)
        s_out = (c_out + a) / (rest.sum() + 2 * a)
        keep = c_in / mine.sum() >= min_share
        out[name] = [(keys[j].split(":", 1)[1], float(s_in[j] / s_out[j])) for j in np.flatnonzero(keep)]
    return out


# --- language -------------------------------------------------------------------------------------------

def language_stage(ctx: StageContext) -> dict[str, Any]:
    """LDA topics, word clouds and distinctive words per dataset (module docstring)."""
    from describe.language import dataset_word_clouds, distinctive_words, lda_topics

    x, opts = ctx.inputs, ctx.options("language")
    if all(c is None for c in x.captions):
        raise DataError("describe.language: no image has a caption")
    lda = lda_topics(x.captions, x.labels, x.datasets, n_topics=int(opts.get("topics", 5)),
                     n_words=int(opts.get("topic_words", 5)), seed=ctx.seed)
    clouds = dataset_word_clouds(x.captions, x.labels, x.datasets, seed=ctx.seed)
    folder = ctx.stage_dir("language")
    wordclouds = {}
    for name, png in clouds["clouds"].items():
        path = folder / f"wordcloud_{_safe(name)}.png"
        path.write_bytes(png)
        wordclouds[name] = str(path.relative_to(ctx.out_dir))
    words = distinctive_words(x.captions, x.labels, x.datasets, top=int(opts.get("distinctive_words", 15)))
    distinctive: dict[str, list[dict[str, Any]]] = {d: [] for d in x.datasets}
    for row in words.to_pylist():
        distinctive[row["dataset"]].append({"word": row["word"], "z": row["z"], "delta": row["delta"],
                                            "count_in": row["count_in"], "count_out": row["count_out"]})
    skipped = [{"item": x.sample_ids[m["index"]], "dataset": m["dataset"], "reason": "no caption"}
               for m in lda["missing"]]
    skipped += [{"item": d, "dataset": d, "reason": "no word to draw or model (every caption empty)"}
                for d in clouds["without_words"]]
    return {"topics": {d: v["topics"] for d, v in lda["datasets"].items()}, "wordclouds": wordclouds,
            "distinctive": distinctive, "seed": ctx.seed,
            "captions_per_dataset": {d: v["n_captions"] for d, v in lda["datasets"].items()},
            "skipped": skipped, "tables": {"distinctive": words}}


# --- differences ----------------------------------------------------------------------------------------

def sentence_encoder(plain: Mapping[str, Any]) -> Any:
    """The sentence encoder of the ``encoder`` section (the packaged MiniLM by default), not loaded yet."""
    from describe.similarity import SentenceEncoder

    enc = dict(plain.get("encoder") or {})
    return SentenceEncoder(weights=enc.get("weights"), cache_dir=plain["cache_dir"],
                           batch_size=int(enc.get("batch_size", 64)), max_length=int(enc.get("max_length", 256)),
                           device=str(enc.get("device", "cpu")))


def make_encoder(plain: Mapping[str, Any]) -> Any:
    """The similarity encoder: open_clip (image-text) when ``clip`` is configured, else the sentence encoder."""
    from describe.similarity import ClipEncoder

    clip = plain.get("clip")
    if clip:
        clip = dict(clip)
        return ClipEncoder(model=clip.get("name", "ViT-B-32"), pretrained=clip.get("pretrained"),
                           checkpoint=clip.get("checkpoint"), model_config=clip.get("model_config"),
                           cache_dir=plain["cache_dir"], batch_size=int(clip.get("batch_size", 32)),
                           device=str(clip.get("device", "cpu")), init_seed=int(clip.get("init_seed", 0)))
    return sentence_encoder(plain)


#: the last `HFCausalLM` built by `llm_generator` and its settings: the themes stage and the LLM proposer of one
#: run share it, so the model is loaded (and its weights hashed) once per process, not once per stage
_SHARED_LLM: dict[str, Any] = {}


def llm_generator(plain: Mapping[str, Any]) -> Any:
    """The one LLM builder of the stages: `describe.llm.CachedGenerator` over `HFCausalLM` from the ``llm``
    section (weights, batch_size, device, dtype; the call cache under ``cache_dir``), not loaded yet. The same
    settings give the same `HFCausalLM` object (one load per process, `_SHARED_LLM`; not for ``local`` weights,
    whose files can change in place); each call gets its own `CachedGenerator`, so each stage has its own token
    ledger. Raises ImportError when `describe.llm` cannot be imported."""
    import json

    from describe.llm import CachedGenerator, HFCausalLM

    opts = dict(plain.get("llm") or {})
    weights = {"weights": opts["weights"]} if opts.get("weights") else {}
    settings = {**weights, "batch_size": int(opts.get("batch_size", 8)), "device": str(opts.get("device", "auto")),
                "dtype": str(opts.get("dtype", "auto")), "cache_root": str(plain["cache_dir"])}
    key = json.dumps(settings, sort_keys=True, default=str)
    fresh = HFCausalLM(**settings)  # cheap: nothing is read until it is used
    if fresh.source is not None and fresh.source.kind == "local":  # files that can change in place: not shared
        return CachedGenerator(fresh, plain["cache_dir"])
    if _SHARED_LLM.get("key") != key:
        _SHARED_LLM.clear()  # one model at a time: a run with other settings frees the last one
        _SHARED_LLM.update(key=key, model=fresh)
    return CachedGenerator(_SHARED_LLM["model"], plain["cache_dir"])


def release_llm() -> None:
    """Drop the shared LLM (`llm_generator`): `describe.run.run_describe` calls it when its stages are done, so a
    process that goes on (tests, a notebook) does not keep the model in memory."""
    _SHARED_LLM.clear()


def _llm_generator(plain: Mapping[str, Any]) -> tuple[Any | None, str]:
    """The differences proposer's LLM (`llm_generator`), or None and why (switched off, or not importable)."""
    if not (plain.get("differences") or {}).get("llm_proposer", True):
        return None, "not run: differences.llm_proposer=false"
    try:
        return llm_generator(plain), ""
    except ImportError:
        return None, "not run: describe.llm not available"


def default_make_generator(ctx: StageContext) -> tuple[Any | None, str]:
    """(the LLM of the ``llm`` section, `describe.llm.CachedGenerator` over `HFCausalLM`, or None, and why none:
    `describe.llm` not importable, or ``differences.llm_proposer=false``), so nothing is faked."""
    return _llm_generator(ctx.plain)


GeneratorFactory = Callable[[StageContext], "tuple[Any | None, str]"]


def check_differences(plain: Mapping[str, Any]) -> None:
    """Before any work: the encoder's weights resolve, and the LLM's when it proposes (MissingModelError)."""
    make_encoder(plain).check_ready()
    generator, _ = _llm_generator(plain)
    if generator is not None:
        generator.check_ready()


def _encode_use(encoder: Any) -> dict[str, int]:
    """What an encoder computed and what it read from its embedding cache in this run (``cache_use``: the part of
    a stage result that differs between a cold run and a rerun, with the ledger's call counts)."""
    stats = getattr(encoder, "stats", None)
    if stats is None:
        return {}
    return {"computed": int(stats.computed), "cached": int(stats.cached), "batches": int(stats.batches)}


def _evidence_lists(h: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    supports = [h.support, *[m.get("support") or {} for m in h.merged]]
    words = [{"word": s["word"], "z": s["z"]} for s in supports if "word" in s]
    objects = [{"class": s["class"], "ratio": s["ratio"]} for s in supports if "class" in s]
    return words, objects


def differences_stage(ctx: StageContext, make_generator: GeneratorFactory | None = None) -> dict[str, Any]:
    """Proposed on the propose images, scored on the score images (module docstring)."""
    from describe.differences import find_differences, propose_from_statistics, propose_with_llm
    from describe.language import distinctive_words

    make_generator = make_generator or default_make_generator
    x, opts = ctx.inputs, ctx.options("differences")
    per = int(opts.get("per_dataset", 8))
    propose = x.mask("propose")
    idx = np.flatnonzero(propose)
    sub = x.subset(idx)
    words: dict[str, list[tuple[str, float]]] = {d: [] for d in x.datasets}
    if any(c is not None for c in sub.captions):
        for row in distinctive_words(sub.captions, sub.labels, sub.datasets, top=max(per, 20)).to_pylist():
            words[row["dataset"]].append((row["word"], row["z"]))
    objects: dict[str, list[tuple[str, float]]] = {}
    if "objects" in ctx.results:
        matrix, keys, _ = presence_matrix(ctx, sub.sample_ids, opts.get("object_sources"))
        objects = object_ratios(matrix, keys, sub.labels, sub.datasets, float(opts.get("min_object_share", 0.05)))
    stats = propose_from_statistics(words, objects, top_k=per, min_z=float(opts.get("min_z", 1.96)),
                                    min_ratio=float(opts.get("min_ratio", 1.0)))
    proposals = [stats]
    proposers: dict[str, dict[str, Any]] = {
        "statistics": {"status": "done", "hypotheses": len(stats.hypotheses),
                       "reason": "distinctive words and object presence ratios of the propose images"
                                 + ("" if objects else " (no objects stage result: words only)")}}
    generator, why = make_generator(ctx)
    ledger = None
    if generator is None:
        proposers["llm"] = {"status": "not run", "reason": why}
    else:
        llm_opts = ctx.options("llm")
        llm = propose_with_llm(generator, x.captions, x.labels, x.datasets, x.role,
                               n_captions=int(opts.get("llm_captions", 30)), n_hypotheses=per,
                               max_new_tokens=int(llm_opts.get("max_new_tokens", 160)), seed=ctx.seed)
        proposals.append(llm)
        proposers["llm"] = {"status": "done", "hypotheses": len(llm.hypotheses), "failures": len(llm.failures)}
        ledger = generator.ledger.as_dict() if hasattr(generator, "ledger") else None
    encoder = make_encoder(ctx.plain)
    alpha = float(opts.get("q", 0.05))
    diff = find_differences(x, proposals, encoder, merge_threshold=float(opts.get("merge_similarity", 0.9)),
                            n_perm=int(opts.get("n_perm", 1000)), seed=ctx.seed, alpha=alpha,
                            top_k=int(opts.get("evidence_images", 6)))
    diff.write(ctx.stage_dir("differences"))
    hypotheses = []
    for d, name in enumerate(x.datasets):
        for entry in diff.ranked(d)[:per]:
            h = diff.hypotheses[entry["hypothesis"]]
            ev_words, ev_objects = _evidence_lists(h)
            hypotheses.append({"text": entry["text"], "dataset": name, "rank": entry["rank"],
                               "proposer": entry["source"], "proposed_for": entry["proposed_for"],
                               "auroc": entry["auroc"], "effect": entry["effect"], "share_in": entry["share_in"],
                               "share_out": entry["share_out"], "p": entry["p"], "q": entry["q"],
                               "significant": entry["significant"],
                               "evidence": {"images": entry["evidence"]["top_images"], "words": ev_words,
                                            "objects": ev_objects, "merged": [m["text"] for m in h.merged]}})
    m = diff.method
    out: dict[str, Any] = {
        "hypotheses": hypotheses,
        "effect_matrix": {"datasets": list(x.datasets), "hypotheses": [h.text for h in diff.hypotheses],
                          "values": [[None if v is None else v for v in row] for row in diff.as_dict()["effect"]],
                          "label": "effect (AUROC - 0.5)"},
        "similarity": {"kind": m["similarity"], "n_perm": m["n_perm"], "alpha": m["alpha"],
                       "scored": len(diff.scored_ids), "proposed": m.get("proposed"),
                       "after_merging": len(diff.hypotheses), "seed": m["seed"]},
        "proposers": proposers, "model": {"name": "similarity encoder", **encoder.identity},
        "failed": diff.proposal_failures, "skipped": diff.skipped,
        "files": {"full": "differences/differences.json", "similarity": "differences/similarity.parquet"},
        "tables": {"similarity": diff.similarity_table()},
        "cache_use": {"encoder": _encode_use(encoder)}}
    if ledger:
        out["ledger"] = ledger
    return out


# --- themes ---------------------------------------------------------------------------------------------

#: describe_themes' arguments that are not config keys
_THEMES_ARGS = ("captions", "generator", "encoder", "seed")
#: longest raw answer text kept per failure in the stage result (the full texts are in themes/themes.json)
RAW_SHOWN = 200


def themes_options(plain: Mapping[str, Any]) -> dict[str, Any]:
    """The ``themes`` section as `describe.themes.describe_themes` keyword arguments; a key it does not take is a
    `ConfigError` naming the keys it does."""
    import inspect

    from describe.themes import describe_themes

    allowed = [p for p in inspect.signature(describe_themes).parameters if p not in _THEMES_ARGS]
    opts = dict(plain.get("themes") or {})
    unknown = sorted(set(opts) - set(allowed))
    if unknown:
        raise ConfigError(f"themes: unknown key(s) {unknown}; describe_themes takes {allowed}")
    return opts


def default_themes_generator(ctx: StageContext) -> tuple[Any | None, str]:
    """The themes stage's LLM: `llm_generator` of the ``llm`` section (the same one the differences proposer uses)."""
    try:
        return llm_generator(ctx.plain), ""
    except ImportError:
        return None, "describe.llm not available"


def check_themes(plain: Mapping[str, Any]) -> None:
    """Before any work: the ``themes`` keys are known, the LLM's weights resolve (`check_ready` of the generator)
    and, for ``procedure: slots``, the sentence encoder's (MissingModelError)."""
    from describe.themes import PROCEDURES

    opts = themes_options(plain)
    procedure = opts.get("procedure", "slots")
    if procedure not in PROCEDURES:
        raise ConfigError(f"themes.procedure: expected one of {list(PROCEDURES)}, got {procedure!r}")
    llm_generator(plain).check_ready()
    if procedure == "slots":
        sentence_encoder(plain).check_ready()


EncoderFactory = Callable[[StageContext], Any]


def themes_stage(ctx: StageContext, make_generator: GeneratorFactory | None = None,
                 make_encoder: EncoderFactory | None = None) -> dict[str, Any]:
    """Five titled themes per dataset written by the LLM from the captions of the ``propose`` images.

    Only the propose images' captions are read: the score images stay unread by any LLM, so a theme taken up as
    a hypothesis can still be tested on images it was not written from (as the differences stage does). The
    ``themes`` section holds `describe.themes.describe_themes`' keyword arguments (``procedure``: ``slots`` by
    default, or ``list``); the seed is ``ctx.seed``. What is shown: each dataset's themes (title, description and
    where they came from); every failed step is in ``failed`` (never shown as a theme), captions missing in
    ``skipped``; the call costs in ``ledger``; the full result (raw answers, chunks) in ``themes/themes.json``.
    """
    from bias.core.errors import MissingModelError
    from bias.core.io import write_json
    from describe.themes import describe_themes

    opts = themes_options(ctx.plain)
    generator, why = (make_generator or default_themes_generator)(ctx)
    if generator is None:
        raise MissingModelError(f"describe.themes: no LLM ({why})")
    procedure = opts.get("procedure", "slots")
    encoder = None
    if procedure == "slots":
        encoder = make_encoder(ctx) if make_encoder is not None else sentence_encoder(ctx.plain)
    x = ctx.inputs
    rows = np.flatnonzero(x.mask("propose"))
    captions: dict[str, list[str | None]] = {name: [] for name in x.datasets}
    ids: dict[str, list[str]] = {name: [] for name in x.datasets}
    for i in rows:
        name = x.datasets[int(x.labels[i])]
        captions[name].append(x.captions[i])
        ids[name].append(x.sample_ids[i])
    result = describe_themes(captions, generator, encoder=encoder, seed=ctx.seed, **opts)
    full = result.to_json()
    write_json(full, ctx.stage_dir("themes") / "themes.json")
    themes = {name: [{"title": t.title, "description": t.description, "title_source": t.title_source,
                      "description_source": t.description_source, **({"members": list(t.members),
                                                                        "chunks": list(t.chunks)} if t.members else {})}
                     for t in d.themes] for name, d in result.datasets.items()}
    failed = [{"dataset": f.dataset, "step": f"{f.stage} {f.step}", "reason": "; ".join(f.reasons),
               "raw": [r[:RAW_SHOWN] for r in f.raw]} for f in result.failures]
    skipped = [{"item": ids[name][m], "dataset": name, "reason": "no caption"}
               for name, d in result.datasets.items() for m in d.missing]
    per = {name: {"captions": d.n_captions - len(d.missing), "missing": len(d.missing), "chunks": len(d.chunks),
                  "unused": len(d.unused), "truncated": d.truncated, "themes": len(d.themes), "seed": d.seed}
           for name, d in result.datasets.items()}
    models = [{"name": "llm", **result.model}]
    if encoder is not None:
        models.append({"name": "title encoder", **dict(encoder.identity)})
    cache_use = {"encoder": _encode_use(encoder)} if encoder is not None else {}
    return {"themes": themes, "failed": failed, "skipped": skipped, "ledger": result.ledger, "models": models,
            "cache_use": cache_use,
            "procedure": {"name": procedure, "prompt_version": result.prompt_version, "images": "propose",
                          "settings": {k: v for k, v in result.settings.items() if k != "encoder"}},
            "per_dataset": per, "files": {"full": "themes/themes.json"}}


# --- explained ------------------------------------------------------------------------------------------

def explained_stage(ctx: StageContext) -> dict[str, Any]:
    """The explained share of the hypotheses and of object presence (module docstring)."""
    import pyarrow.parquet as pq

    from describe.explained import explained_share
    from describe.report import find_classify_runs

    x, opts = ctx.inputs, ctx.options("explained")
    scores = names = None
    diff = ctx.results.get("differences")
    if diff and (diff.get("table_files") or {}).get("similarity"):
        sim = pq.read_table(ctx.out_dir / diff["table_files"]["similarity"]).to_pydict()
        ids = list(sim["sample_id"])
        names = list(diff["effect_matrix"]["hypotheses"])
        scores = np.column_stack([np.asarray(sim[f"h{h}"], dtype=np.float64) for h in range(len(names))])
    else:
        score_rows = np.flatnonzero(x.mask("score"))
        ids = [x.sample_ids[i] for i in score_rows]
    pos = {sid: i for i, sid in enumerate(x.sample_ids)}
    labels = np.asarray([x.labels[pos[s]] for s in ids], dtype=np.int64)
    presence = keys = None
    no_output: dict[str, int] = {}
    if "objects" in ctx.results:
        presence, keys, no_output = presence_matrix(ctx, ids)
    if scores is None and presence is None:
        raise DataError("describe.explained: neither the differences nor the objects stage has results")
    if len(np.unique(labels)) < 2:
        raise DataError("describe.explained: the scored images hold fewer than two datasets")
    runs, why = find_classify_runs(ctx.plain.get("runs_root") or "runs", ctx.plain["data"], 1, 0)
    run = runs[0] if runs else None
    image_acc = None if run is None else run.get("accuracy")
    have_image = isinstance(image_acc, (int, float))
    share = explained_share(labels, float(image_acc) if have_image else 0.0, hypothesis_scores=scores,
                            object_presence=presence, hypothesis_names=names, object_names=keys,
                            k=int(opts.get("top_k", 10)),
                            image_chance=(run.get("chance") if have_image else 0.0), seed=ctx.seed)
    parts = {k: share[k] for k in ("hypotheses", "objects") if k in share}
    if not have_image:
        for part in parts.values():
            for key in ("image_accuracy", "image_chance", "points", "image_points", "share", "sentence"):
                part.pop(key, None)
    chance = next(iter(parts.values()))["chance"]
    sentences = [p["sentence"] for p in parts.values() if p.get("sentence")]
    if have_image:
        sentence = "; ".join(sentences) + f" (image classifier: {run['transform']} / {run['model']}, " \
                                          f"{100 * float(image_acc):.1f}% in {run['run_dir']})."
    else:
        accs = ", ".join(f"{k} {100 * p['accuracy']:.1f}%" for k, p in parts.items())
        sentence = (f"No image-classifier accuracy on the same data ({why}), so no explained share: held-out "
                    f"accuracy of the description classifiers {accs} (chance {100 * chance:.1f}%).")
    out: dict[str, Any] = {"sentence": sentence, "chance": chance, "image_accuracy": float(image_acc) if have_image
                           else None, **parts,
                           "image_classifier": ({"run_dir": run["run_dir"], "transform": run["transform"],
                                                 "model": run["model"], "accuracy": image_acc,
                                                 "chance": run.get("chance")} if have_image else
                                                {"status": "missing", "reason": why or "its results have no accuracy"}),
                           "split": {**share["split"], "seed": share["seed"], "split_seed": share["split_seed"],
                                     "holdout": share["holdout"], "k": share["k"]}}
    if no_output:
        out["objects_without_output"] = no_output
    return out


#: name -> (run, check_ready, needs): what `describe.run` registers in its slots
STAGE_FUNCTIONS: dict[str, tuple[Callable[[Any], dict[str, Any]], Callable[[Mapping[str, Any]], None] | None,
                                 tuple[str, ...]]] = {
    "objects": (objects_stage, check_objects, ()),
    "language": (language_stage, None, ()),
    "themes": (themes_stage, check_themes, ()),
    "differences": (differences_stage, check_differences, ()),
    "explained": (explained_stage, None, ()),
}

