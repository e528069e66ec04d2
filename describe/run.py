"""`run_describe(cfg)`: everything `scripts/describe_data.py` does, from a composed describe config to report.html.

1. Check everything that needs no heavy work: the config against its schema (`DescribeConfig`), the data
   sources, the caption transform, each configured stage's `check_ready` (a missing model is a
   `MissingModelError` before any work) and the side outputs marked `required` (a `DataError` naming the
   command that computes them).
   With ``classify=true`` the reference classification of the same data (`describe.reference`) is checked
   too, then run first (a finished run is reused), so the explained share has an image accuracy.
2. Build the table every analysis reads (`describe.inputs.build_inputs`): every usable image of each dataset,
   a seeded sample of at most `images_per_dataset` each (recorded as ``sample``), captions only when a
   configured stage reads them (by the captioner `describe.inputs.resolve_captioner` picks: planted ground
   truth, a model on disk, else the offline `tags` captioner; computed through the runner if missing),
   planted records, the propose/score roles.
3. Run the configured stages in order, each a function of a `StageContext` registered in `STAGES`
   (`objects`, `language`, `themes`, `differences`, `explained`); each returns a plain dict (JSON-ready;
   Arrow tables under its ``tables`` key are written as parquet beside it). A stage slot without a
   function is recorded as not run, with the reason, and the report says so; a stage that raises a
   `BiasError` (its data or settings do not allow the analysis) is recorded as failed with the message and
   the run goes on. Any other exception is a bug and stops the run.
4. Write `runs/<data>/describe/` (or `out`): `inputs.parquet`, `inputs.json`, `<stage>.json` (+ parquet),
   `stages.json` (status of every stage), `stage_times.json` (wall seconds per step), `report.html` and
   `summary.json` (the report's summary as data; its schema is in `describe.report`'s docstring).
   No timestamps in paths; a rerun overwrites (every costly model call is cached by content under
   `cache_dir`, so a rerun costs little). Only the main process writes; under a launcher the other
   processes share the caption computing, then wait.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, create_model

from bias.core.errors import BiasError, ConfigError, DataError, MissingModelError
from bias.core.schema import (
    LogLevel,
    NonNegativeInt,
    PositiveInt,
    Section,
    keys_model,
    signature_keys,
    validate_with,
)
from bias.experiment.config import DataConfig, TransformConfig, data_schema, transform_schema

logger = logging.getLogger(__name__)
STAGE_ORDER = ("objects", "language", "themes", "differences", "explained")
SIDE_OUTPUTS = ("object_det", "seg")
NOT_RUN, DONE, FAILED, SKIPPED = "not run", "done", "failed", "skipped"


# --- the config -------------------------------------------------------------------------------------------

Device = str


class LLMSection(Section):
    """The LLM of the themes stage and of the differences proposer (`describe.stages.llm_generator`)."""

    weights: Any = None  # a `bias.inference.weights.WeightSource` config: a catalogue name, a hub id, a folder
    max_new_tokens: PositiveInt = 160
    batch_size: PositiveInt = 8
    device: Device = "auto"
    dtype: str = "auto"


class EncoderSection(Section):
    """The sentence encoder of caption-text similarity (`describe.stages.sentence_encoder`)."""

    weights: Any = None
    batch_size: PositiveInt = 64
    max_length: PositiveInt = 256
    device: Device = "cpu"


class ClipSection(Section):
    """open_clip image-text similarity instead of the sentence encoder (`describe.stages.make_encoder`)."""

    name: str = "ViT-B-32"
    pretrained: str | None = None
    checkpoint: str | None = None
    open_clip_config: Any = Field(None, alias="model_config")  # `model_config` is pydantic's own name
    batch_size: PositiveInt = 32
    device: Device = "cpu"
    init_seed: NonNegativeInt = 0


class SideOutputsSection(Section):
    object_det: Literal["auto", "required", "off"] = "auto"
    seg: Literal["auto", "required", "off"] = "auto"


class ObjectsSection(Section):
    sources: list[str] | None = None
    bootstrap: NonNegativeInt = 200
    top_classes: PositiveInt = 15
    max_classes: PositiveInt = 30


class LanguageSection(Section):
    topics: PositiveInt = 5
    topic_words: PositiveInt = 5
    distinctive_words: PositiveInt = 15


class DifferencesSection(Section):
    n_perm: Annotated[int, Field(ge=1)] = 1000
    q: Annotated[float, Field(gt=0, lt=1)] = 0.05
    per_dataset: Annotated[int, Field(ge=1)] = 8
    merge_similarity: Annotated[float, Field(gt=0, le=1)] = 0.9
    evidence_images: NonNegativeInt = 6
    llm_proposer: bool = True
    llm_captions: PositiveInt = 30
    object_sources: list[str] | None = None
    min_z: float = 1.96
    min_ratio: float = 1.0
    min_object_share: Annotated[float, Field(ge=0, le=1)] = 0.05


class ExplainedSection(Section):
    top_k: Annotated[int, Field(ge=1)] = 10


class ReportSection(Section):
    thumb_size: Annotated[int, Field(ge=16, le=512)] = 96
    examples_per_dataset: NonNegativeInt = 4
    max_runs: NonNegativeInt = 12


class DescribeConfig(Section):
    """A composed `describe` config, without its `hydra` key. `describe_schema` fills in the sections whose keys
    belong to a class: data (its sources), captions (the caption transform), imagenet (the `imagenet_cls`
    transform, plus `min_prob`) and themes (`describe.themes.describe_themes`' keyword arguments)."""

    data: DataConfig
    captions: TransformConfig
    cache_dir: str
    seed: NonNegativeInt = 0
    out: str | None = None
    runs_root: str = "runs"
    num_workers: NonNegativeInt | None = None
    print_config: bool = False
    log_level: LogLevel = "info"  # the command's (bias.core.logs)
    compute_captions: bool = True
    classify: bool = False
    classify_overrides: list[str] = []
    images_per_dataset: PositiveInt | None = None
    propose_fraction: Annotated[float, Field(gt=0, lt=1)] = 0.5
    stages: list[Literal["objects", "language", "themes", "differences", "explained"]] = list(STAGE_ORDER)
    side_outputs: SideOutputsSection = SideOutputsSection()
    llm: LLMSection = LLMSection()
    encoder: EncoderSection = EncoderSection()
    clip: ClipSection | None = None
    imagenet: Any = None
    objects: ObjectsSection = ObjectsSection()
    language: LanguageSection = LanguageSection()
    themes: Any = None
    differences: DifferencesSection = DifferencesSection()
    explained: ExplainedSection = ExplainedSection()
    report: ReportSection = ReportSection()

    @staticmethod
    def cross_check(values: Mapping[str, Any], key: str) -> list[str]:
        stages = list(values.get("stages") or [])
        dupes = sorted({s for s in stages if stages.count(s) > 1})
        problems = [f"stages: {dupes} listed twice"] if dupes else []
        order = [s for s in STAGE_ORDER if s in stages]
        if stages and stages != order and not dupes:
            problems.append(f"stages: must follow the order {list(STAGE_ORDER)} (a stage reads the earlier ones), "
                            f"got {stages}")
        return problems


def describe_schema(plain: Mapping[str, Any]) -> type[DescribeConfig]:
    """`DescribeConfig` with the keys of the classes its data, captions, imagenet and themes sections configure."""
    from describe.stages import _THEMES_ARGS
    from describe.themes import describe_themes

    captions = plain.get("captions")
    name = captions.get("name") if isinstance(captions, Mapping) else None
    imagenet = create_model("imagenet", __base__=transform_schema("imagenet_cls", "imagenet"),
                            name=(Literal["imagenet_cls"], "imagenet_cls"),
                            min_prob=(Annotated[float, Field(ge=0, le=1)], 0.1))
    themes = keys_model("themes", {k: False for k in signature_keys(describe_themes, skip=_THEMES_ARGS) or {}})
    return create_model("DescribeConfig", __base__=DescribeConfig, data=(data_schema(plain.get("data")), ...),
                        captions=(transform_schema(name, "captions"), ...), imagenet=(imagenet, imagenet()),
                        themes=(themes, themes()))


def validate_describe_config(cfg: Any) -> dict[str, Any]:
    """One `ConfigError` naming the key (and where it was set) when the describe config is wrong; returns the plain
    config (no `hydra`)."""
    return validate_with(cfg, describe_schema)


def describe_dir(cfg: Any) -> Path:
    """`out` if given, else runs/<data>/describe (no timestamps: a rerun writes the same folder)."""
    if cfg.get("out"):
        return Path(str(cfg.out))
    return Path(str(cfg.get("runs_root") or "runs")) / str(cfg.data.name) / "describe"


# --- stages ---------------------------------------------------------------------------------------------

@dataclass
class StageContext:
    """What a stage function gets: the config, the inputs, where to write, and the earlier stages' results."""

    cfg: Any                       # the composed config (DictConfig)
    plain: dict[str, Any]          # the same, as plain data (validated)
    inputs: Any                    # describe.inputs.DescribeInputs
    out_dir: Path                  # runs/<data>/describe
    results: dict[str, dict[str, Any]]   # earlier stages' results by name (done stages only)
    side_outputs: dict[str, Any]   # name -> OutputStore of each side output that is present (object_det, seg)
    seed: int = 0

    @property
    def cache_dir(self) -> Path:
        return Path(str(self.plain["cache_dir"]))

    def options(self, name: str) -> dict[str, Any]:
        """The config section `name` (e.g. 'differences', 'llm') as a plain dict ({} when absent or null)."""
        return dict(self.plain.get(name) or {})

    def stage_dir(self, name: str) -> Path:
        """A folder for a stage's files (figures such as word clouds); the report reads them from here."""
        path = self.out_dir / name
        path.mkdir(parents=True, exist_ok=True)
        return path


StageFunction = Callable[[StageContext], dict[str, Any]]
ReadyCheck = Callable[[Mapping[str, Any]], None]


@dataclass
class Stage:
    """One slot of the pipeline: `run(ctx) -> dict` and `check_ready(plain_cfg)` (raise before any work).

    `needs`: stages whose results `run` reads (they must be configured to run before it).
    """

    name: str
    run: StageFunction | None = None
    check_ready: ReadyCheck | None = None
    needs: tuple[str, ...] = ()


#: the pipeline's slots, in order; the integrator fills them with `register_stage`
STAGES: dict[str, Stage] = {name: Stage(name) for name in STAGE_ORDER}


def register_stage(name: str, run: StageFunction, check_ready: ReadyCheck | None = None,
                   needs: tuple[str, ...] = ()) -> None:
    """Fill the slot `name` (one of `STAGE_ORDER`) with its function and readiness check."""
    if name not in STAGES:
        raise ValueError(f"unknown stage {name!r}; the slots are {list(STAGE_ORDER)}")
    STAGES[name] = Stage(name, run, check_ready, tuple(needs))


def check_stages(plain: Mapping[str, Any], stages: Mapping[str, Stage]) -> None:
    """Every configured stage's readiness check and dependencies, before any work."""
    wanted = list(plain.get("stages") or [])
    for name in wanted:
        stage = stages[name]
        missing = [n for n in stage.needs if n not in wanted]
        if stage.run is not None and missing:
            raise ConfigError(f"stages: {name} reads the results of {missing}; add them to stages (before {name})")
        if stage.run is not None and stage.check_ready is not None:
            stage.check_ready(plain)


# --- side outputs ---------------------------------------------------------------------------------------

def side_output_transform(name: str, params: Mapping[str, Any] | None = None) -> Any:
    """The transform of a side output with its published defaults (the transform's own), updated by `params`."""
    from bias.experiment.run import transform_from_config

    return transform_from_config({"name": name, **dict(params or {})})


def side_output_stores(plain: Mapping[str, Any]) -> dict[str, Any]:
    """The stores of the side outputs that exist for this cache and image size; `required` ones that do not
    exist are a `DataError` naming the command that computes them (checked before any work)."""
    from transforms.base import output_store

    found: dict[str, Any] = {}
    data = plain["data"]
    for name in SIDE_OUTPUTS:
        mode = (plain.get("side_outputs") or {}).get(name, "auto")
        if mode == "off":
            continue
        try:  # the store is keyed by the commit of the model's snapshot: without the model, no store is known
            store = output_store(side_output_transform(name), plain["cache_dir"], data.get("resize_shorter"))
        except MissingModelError as error:
            if mode == "required":
                raise DataError(f"side_outputs.{name}=required but its model is not here ({error}); with the model "
                                f"on disk, compute the store with python scripts/transform.py transform={name} "
                                f"data={data['name']} (plus the data overrides of this run), or set "
                                f"side_outputs.{name}=auto") from error
            continue
        if (store.folder / "manifest.json").exists():
            found[name] = store
        elif mode == "required":
            raise DataError(f"side_outputs.{name}=required but {store.folder} does not exist: run "
                            f"python scripts/transform.py transform={name} data={data['name']} (plus the data "
                            f"overrides of this run), or set side_outputs.{name}=auto")
    return found


# --- the run --------------------------------------------------------------------------------------------

def _write_stage(result: Mapping[str, Any], out_dir: Path, name: str) -> dict[str, Any]:
    """`<name>.json`, with every Arrow table under `tables` written as `<name>.<table>.parquet` (named in the JSON)."""
    from bias.core.io import write_json, write_parquet_atomic

    plain = dict(result)
    tables = plain.pop("tables", None) or {}
    files = {}
    for tname, table in tables.items():
        fname = f"{name}.{tname}.parquet"
        write_parquet_atomic(table, out_dir / fname)
        files[tname] = fname
    if files:
        plain["table_files"] = files
    write_json(plain, out_dir / f"{name}.json")
    return plain


def run_stages(ctx: StageContext, stages: Mapping[str, Stage], times: dict[str, float],
               show_progress: bool = True) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """Run the configured stages in order: (results of the done ones, status of every slot)."""
    from bias.core.progress import progress_bar

    wanted = list(ctx.plain.get("stages") or [])
    status: dict[str, dict[str, Any]] = {}
    for name in STAGE_ORDER:
        if name not in wanted:
            status[name] = {"status": SKIPPED, "reason": "not in the configured stages (stages=...)"}
        elif stages[name].run is None:
            status[name] = {"status": NOT_RUN, "reason": f"stage {name!r} is not available in this build "
                            "(no function registered in describe.run.STAGES)"}
    bar = progress_bar(total=len(wanted), desc="describe", unit="stage", disable=not show_progress)
    for name in wanted:
        stage = stages[name]
        bar.set_postfix_str(name)
        if stage.run is None:
            bar.update(1)
            continue
        unmet = [n for n in stage.needs if n not in ctx.results]
        if unmet:
            status[name] = {"status": NOT_RUN, "reason": f"needs the results of {unmet}, which did not finish"}
            bar.update(1)
            continue
        start = time.perf_counter()
        try:
            result = stage.run(ctx)
        except BiasError as err:  # the data or a setting does not allow this analysis: say so, go on
            times[name] = round(time.perf_counter() - start, 3)
            status[name] = {"status": FAILED, "reason": str(err), "seconds": times[name]}
            bar.update(1)
            continue
        if not isinstance(result, Mapping):
            raise TypeError(f"stage {name!r} returned {type(result).__name__}, not a dict")
        times[name] = round(time.perf_counter() - start, 3)
        ctx.results[name] = _write_stage(result, ctx.out_dir, name)
        status[name] = {"status": DONE, "seconds": times[name]}
        bar.update(1)
    bar.close()
    return ctx.results, status


def run_describe(cfg: Any, stages: Mapping[str, Stage] | None = None) -> dict[str, Any]:
    """`scripts/describe_data.py`: the whole describe run (module docstring); returns a summary with the report path.

    `stages`: the stage slots to use (default `STAGES`, as the integrator filled them).
    """
    from bias.core.distributed import partial_state
    from bias.core.io import write_json, write_parquet_atomic
    from bias.data.sources import resolve_sources
    from describe.inputs import build_inputs, caption_transform, needs_captions, resolve_captioner
    from describe.report import collect_report, write_report, write_summary
    from describe.stages import check_objects

    stages = dict(stages if stages is not None else STAGES)
    times: dict[str, float] = {}
    start = time.perf_counter()
    plain = validate_describe_config(cfg)
    for source in resolve_sources(plain["data"]).values():
        source.check()
    captioner = captions = None
    if needs_captions(plain):                  # objects / explained alone need no captioner
        captioner = resolve_captioner(plain)
        captions = caption_transform({**dict(plain["captions"]), "captioner": captioner[0]})
        if captions is not None:
            captions.check_sources(resolve_sources(plain["data"]))
        else:
            check_objects({**plain, "objects": {"sources": ["imagenet"]}})  # the tags captioner's classifier
    check_stages(plain, stages)                # missing models fail here, before any work
    side = side_output_stores(plain)           # required side outputs too
    reference = None
    if plain.get("classify"):                  # the reference classification's config, data and model too
        from describe.reference import check_reference, reference_config

        reference = reference_config(cfg)
        reference_transform = check_reference(reference)
    times["checks"] = round(time.perf_counter() - start, 3)
    if reference is not None:                  # classify=true: the image accuracy of the explained share, first
        from describe.reference import run_reference

        mark = time.perf_counter()
        run_reference(reference, reference_transform)
        times["classify"] = round(time.perf_counter() - mark, 3)

    state = partial_state()
    out_dir = describe_dir(cfg)
    mark = time.perf_counter()
    inputs = build_inputs(cfg, state, captions, captioner, side)
    times["inputs"] = round(time.perf_counter() - mark, 3)
    if not state.is_main_process:  # the analyses and the report are the main process's
        state.wait_for_everyone()
        return {"out_dir": str(out_dir)}
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(plain, out_dir / "config.json")
    write_parquet_atomic(inputs.to_table(), out_dir / "inputs.parquet")
    write_json(inputs.summary(), out_dir / "inputs.json")
    ctx = StageContext(cfg, plain, inputs, out_dir, {}, side, int(plain["seed"]))
    try:
        results, status = run_stages(ctx, stages, times, show_progress=state.is_local_main_process)
    finally:
        from describe.stages import release_llm

        release_llm()  # the LLM the stages shared is not kept once they are done
    write_json(status, out_dir / "stages.json")
    mark = time.perf_counter()
    report = collect_report(plain, inputs, results, status, times, out_dir, sorted(side))
    path = write_report(report, out_dir / "report.html")
    write_summary(report, out_dir / "summary.json")
    times["report"] = round(time.perf_counter() - mark, 3)
    times["total"] = round(time.perf_counter() - start, 3)
    write_json(times, out_dir / "stage_times.json")
    state.wait_for_everyone()
    done = [n for n, s in status.items() if s["status"] == DONE]
    logger.info(f"describe {plain['data']['name']}: {len(inputs)} images, {inputs.summary()['n_missing_captions']} "
                f"without caption; stages done {done or 'none'}; report: {path}")
    return {"out_dir": str(out_dir), "report": str(path), "status": status, "times": times}


def load_stage_results(out_dir: str | Path) -> dict[str, dict[str, Any]]:
    """The `<stage>.json` results of a finished describe folder (e.g. to rebuild its report)."""
    out = {}
    for name in STAGE_ORDER:
        path = Path(out_dir) / f"{name}.json"
        if path.exists():
            out[name] = json.loads(path.read_text())
    return out


def _register_stage_functions() -> None:
    """Fill the slots with the real stage functions of describe/stages.py (when this module is imported)."""
    from describe.stages import STAGE_FUNCTIONS

    for name, (run, check_ready, needs) in STAGE_FUNCTIONS.items():
        register_stage(name, run, check_ready, needs)


_register_stage_functions()
