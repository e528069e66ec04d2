"""The memorize and audit configs' schemas (`bias.core.schema`): unknown keys are errors in every section.

Sections whose keys belong to a class are built from it: `generator` from the registered generator's constructor
(so your own `@register_generator` class is checked too), `task.recipe` from `ZooRecipe`, each `task.regimes`
entry from `zoo_config`'s arguments, `task.fit` from `FieldFitConfig`. What a network's `arch` or a task's
`task_kwargs` / `kwargs` hold is for the code that builds them (as `model.kwargs` of classify).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import Field, create_model

from bias.core.schema import (
    LogLevel,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveInt,
    Section,
    dataclass_keys,
    keys_model,
    signature_keys,
    validate_with,
)


class VerdictSection(Section):
    tol_quality: NonNegativeFloat = 0.005
    tol_closeness: NonNegativeFloat = 0.005


class PlotsSection(Section):
    points_per_group: PositiveInt = 100
    hist_bins: PositiveInt = 15
    heatmap_indices: PositiveInt = 64
    heatmap_neighbours: PositiveInt = 3
    boundary_grid: PositiveInt = 300
    tsne: bool = True
    tsne_per_group: PositiveInt = 200
    tsne_perplexity: Annotated[float, Field(gt=0)] = 30
    shapes: PositiveInt = 8


# --- memorize ----------------------------------------------------------------------------------------------


class ZooSection(Section):
    regime: Literal["runs", "steps", "fields"] | None = None
    n_models: PositiveInt | None = None
    checkpoints_per_run: PositiveInt | None = None
    seed: NonNegativeInt = 0
    recipe: dict[str, Any] = {}  # checked against the task's recipe keys (`memorize_schema`)
    device: str | None = None
    group_size: PositiveInt | None = None


class StudyBaselinesSection(Section):
    noise_sigmas: list[NonNegativeFloat] | None = None
    noise_scale: Annotated[float, Field(gt=0)] | None = None
    num_samples: PositiveInt = 100
    average_k: PositiveInt = 16
    copy_control: bool = False


class StudyMetricsSection(Section):
    chunk: PositiveInt = 256


class FieldsSection(Section):
    points: PositiveInt = 2048
    resolution: PositiveInt = 128


class MemorizeConfig(Section):
    """A composed `memorize` config without its `hydra` key; `memorize_schema` fills in task and generator."""

    task: Any
    generator: Any
    zoo: ZooSection = ZooSection()
    seed: NonNegativeInt = 0
    num_samples: PositiveInt | None = None
    baselines: StudyBaselinesSection = StudyBaselinesSection()
    metrics: StudyMetricsSection = StudyMetricsSection()
    verdict: VerdictSection = VerdictSection()
    plots: PlotsSection = PlotsSection()
    fields: FieldsSection = FieldsSection()
    out: str | None = None
    cache_dir: str
    progress: bool = True
    print_config: bool = False
    log_level: LogLevel = "info"


@functools.cache
def _task_schema() -> type[Section]:
    from memorization.fields import FieldFitConfig
    from memorization.zoo.build import zoo_config
    from memorization.zoo.training import ZooRecipe

    recipe = keys_model("recipe", dict.fromkeys(dataclass_keys(ZooRecipe), False))
    regime_keys = signature_keys(zoo_config, skip=("task", "arch", "regime", "seed", "task_kwargs", "recipe")) or {}
    regime = keys_model("regime", dict.fromkeys(regime_keys, False))
    fit = keys_model("fit", dict.fromkeys(dataclass_keys(FieldFitConfig, skip=("seed",)), False))
    return create_model(
        "task", __base__=Section, task=(str, ...), kind=(Literal["classification", "fields"], "classification"),
        task_kwargs=(dict[str, Any] | None, None), arch=(dict[str, Any] | None, None), recipe=(recipe | None, None),
        regimes=(dict[str, regime] | None, None), dim=(Literal[2, 3] | None, None), n_shapes=(PositiveInt | None, None),
        n_test_shapes=(PositiveInt | None, None), kinds=(list[str] | None, None), fit=(fit | None, None))


def generator_schema(name: Any) -> Any:
    """``name`` and the registered generator's constructor arguments (Any when it is not registered: the registry
    says so when it is built)."""
    from memorization.generators import get_generator_class, list_generators

    if not isinstance(name, str) or name not in list_generators():
        return Any
    keys = signature_keys(get_generator_class(name).__init__)
    return Any if keys is None else keys_model(f"generator:{name}", keys, name=(str, ...))


def memorize_schema(plain: Mapping[str, Any]) -> type[MemorizeConfig]:
    from memorization.zoo.training import ZooRecipe

    generator = plain.get("generator")
    name = generator.get("name") if isinstance(generator, Mapping) else None
    recipe = keys_model("zoo.recipe", dict.fromkeys(dataclass_keys(ZooRecipe), False))
    zoo = create_model("zoo", __base__=ZooSection, recipe=(recipe, recipe()))
    return create_model("MemorizeConfig", __base__=MemorizeConfig, task=(_task_schema(), ...),
                        generator=(generator_schema(name), ...), zoo=(zoo, zoo()))


def validate_memorize_config(cfg: Any) -> dict[str, Any]:
    """One `ConfigError` naming every wrong key of a composed memorize config (and where it was set)."""
    return validate_with(cfg, memorize_schema)


# --- audit -------------------------------------------------------------------------------------------------


class ZooModel(Section):
    kind: Literal["zoo"]
    arch: dict[str, Any]


class TimmModel(Section):
    kind: Literal["timm"]
    name: str
    kwargs: dict[str, Any] | None = None


class CallableModel(Section):
    kind: Literal["callable"]
    target: str
    kwargs: dict[str, Any] | None = None
    path: str | None = None


class ZooTask(Section):
    kind: Literal["zoo"]
    name: str
    kwargs: dict[str, Any] | None = None


class CallableTask(CallableModel):
    num_classes: PositiveInt | None = None


Normalisation = Annotated[list[float], Field(min_length=1)]


class HFTask(Section):
    kind: Literal["hf"]
    path: str
    name: str | None = None
    split: str = "test"
    image_column: str = "image"
    label_column: str = "label"
    from_disk: bool = False
    image_size: PositiveInt = 32
    mean: Normalisation = [0.5, 0.5, 0.5]
    std: Normalisation = [0.5, 0.5, 0.5]
    max_samples: PositiveInt | None = None


class ImageFolderTask(Section):
    kind: Literal["image_folder"]
    root: str
    image_size: PositiveInt = 32
    mean: Normalisation = [0.5, 0.5, 0.5]
    std: Normalisation = [0.5, 0.5, 0.5]
    max_per_class: PositiveInt | None = None


#: kind -> schema, for each group of the audit command (configs/audit/<group>/<kind>.yaml)
AUDIT_KINDS: dict[str, dict[str, type[Section]]] = {
    "model": {"zoo": ZooModel, "timm": TimmModel, "callable": CallableModel},
    "task": {"zoo": ZooTask, "callable": CallableTask, "hf": HFTask, "image_folder": ImageFolderTask},
}


class AuditBaselinesSection(Section):
    noise_sigmas: list[NonNegativeFloat] = [0.02, 0.04]
    num_samples: PositiveInt = 100
    average_k: PositiveInt = 16
    copy_control: bool = False


class AlignmentSection(Section):
    enabled: bool = True
    candidates: PositiveInt = 8
    max_models: PositiveInt = 2000


class AuditMetricsSection(Section):
    chunk: PositiveInt = 256
    memory_gb: Annotated[float, Field(gt=0)] = 4.0
    block_columns: PositiveInt = 4_000_000
    refine: PositiveInt = 8


class AuditConfig(Section):
    """A composed `audit` config without its `hydra` key; `audit_schema` picks the model and task kinds."""

    model: Any
    task: Any
    train: str
    generated: str
    train_key: str | None = None
    generated_key: str | None = None
    params: list[str] | None = None
    base: str | None = None
    strip_prefix: str = ""
    seed: NonNegativeInt = 0
    baselines: AuditBaselinesSection = AuditBaselinesSection()
    alignment: AlignmentSection = AlignmentSection()
    metrics: AuditMetricsSection = AuditMetricsSection()
    device: str | None = None
    verdict: VerdictSection = VerdictSection()
    plots: PlotsSection = PlotsSection()
    out: str | None = None
    progress: bool = True
    print_config: bool = False
    log_level: LogLevel = "info"


def audit_schema(plain: Mapping[str, Any]) -> type[AuditConfig]:
    """`AuditConfig` with the schema of each group's kind (Any for a kind it does not know: the audit says so)."""
    chosen = {}
    for group, kinds in AUDIT_KINDS.items():
        section = plain.get(group)
        kind = section.get("kind") if isinstance(section, Mapping) else None
        chosen[group] = (kinds.get(kind, Any) if isinstance(kind, str) else Any, ...)
    return create_model("AuditConfig", __base__=AuditConfig, **chosen)


def validate_audit_config(cfg: Any) -> dict[str, Any]:
    """One `ConfigError` naming every wrong key of a composed audit config (and where it was set)."""
    return validate_with(cfg, audit_schema)
