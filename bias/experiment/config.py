"""The classify / table / transform config's schema, checked whole before any heavy work, by key.

`validate_classify_config(cfg)` takes the composed Hydra config (a `DictConfig`) or a plain dict and raises one
`ConfigError` when anything is wrong, e.g.::

    recipe.epochs: expected an integer, got 'abc'
    recipe.lr: must be > 0, got -0.1
    recipe.lr: expected a finite number, got inf
    recipe.precision: expected one of ['no', 'fp16', 'bf16'], got 'fp32'
    recipe.epochz: unknown key (did you mean recipe.epochs?) [set by the command-line override +recipe.epochz=3]
    model.name is not set: pass model.name=...

The schemas are pydantic models (`bias.core.schema`: unknown keys are errors in every section, strict types,
finite numbers; see its docstring for the message format, the config order and where a key was set).

Sections whose keys belong to a class are built from that class, so your own registered class is checked too:
the `transform` section takes the transform's constructor arguments (`transforms.registry`), each
`data.datasets.<name>` entry its source kind's dataclass fields (`bias.data.sources`), `data.generator` the
planted generator's keys and axes (`bias.data.planted`). Their values are checked by their owners when they are
built (the transform's constructor, the source's `check`), as is what `model.kwargs` holds (the model builder) and
the `???` that the folders, webdataset, hf, list and mixed data configs leave for the user to fill.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, Field, create_model

from bias.core.schema import (
    MISSING,
    LogLevel,
    NonNegativeFloat,
    NonNegativeInt,
    Ordered,
    Pair,
    PositiveFloat,
    PositiveInt,
    Section,
    Unique,
    config_problems,
    dataclass_keys,
    keys_model,
    signature_keys,
    to_plain,
    validate_with,
)

T = TypeVar("T")

__all__ = ["MISSING", "ClassifyConfig", "check_schema", "classify_schema", "schema_problems", "to_plain",
           "validate_classify_config"]

Fraction = Annotated[float, Field(ge=0, le=1)]
OpenFraction = Annotated[float, Field(gt=0, lt=1)]

schema_problems = config_problems


def check_schema(data: Any, schema: type[BaseModel], key: str = "") -> None:
    """Raise one `ConfigError` if the plain `data` does not fit `schema` (`bias.core.schema.config_problems`)."""
    problems = config_problems(data, schema, key)
    if problems:
        from bias.core.schema import _error

        raise _error(problems)


def options_from_config(cls: type[T], schema: type[BaseModel], cfg: Mapping[str, Any] | None, key: str) -> T:
    """`cls(**cfg)` after `check_schema(cfg, schema, key)`; lists become tuples (options are frozen)."""
    cfg = dict(cfg or {})
    check_schema(cfg, schema, key)
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in cfg.items()})


# --------------------------------------------------------------------------------------------------
# recipe, model, data


class MixupConfig(Section):
    mixup_alpha: NonNegativeFloat = 0.8
    cutmix_alpha: NonNegativeFloat = 1.0
    prob: Fraction = 1.0
    switch_prob: Fraction = 0.5


class AugmentGroupConfig(Section):
    hflip: bool = False
    randaugment: str | None = None  # a timm RandAugment spec, e.g. rand-m9-mstd0.5-inc1
    normalize: bool = False
    crop: Literal["resized", "shift"] = "resized"  # see classifiers.augment.train_augment


class GridConfig(Section):
    """A grid of training points, each trained on part of train and scored on the rest (never on val)."""

    lr: Annotated[list[PositiveFloat], Field(min_length=1)]
    epochs: Annotated[list[PositiveInt], Field(min_length=1)]


class RecipeConfig(Section):
    name: str
    image_size: PositiveInt
    crop_scale: Annotated[Pair(Annotated[float, Field(gt=0, le=1)]), Ordered]
    crop_ratio: Annotated[Pair(PositiveFloat), Ordered]
    batch_size: PositiveInt
    effective_batch: PositiveInt
    epochs: PositiveInt
    warmup_epochs: NonNegativeFloat
    lr: PositiveFloat
    min_lr: NonNegativeFloat
    weight_decay: NonNegativeFloat
    groups: Annotated[dict[str, AugmentGroupConfig], Field(min_length=1)]
    eval_resize: PositiveInt | None = None
    eval_batch_size: PositiveInt | None = None
    betas: Pair(Annotated[float, Field(ge=0, lt=1)]) = (0.9, 0.95)
    eps: PositiveFloat = 1e-8
    label_smoothing: Annotated[float, Field(ge=0, lt=1)] = 0.0
    mixup: MixupConfig | None = None
    clip_grad: NonNegativeFloat | None = None  # null or 0: no clipping
    precision: Literal["no", "fp16", "bf16"] = "no"
    eval_every: NonNegativeInt | None = None  # 0 or null: evaluate after the last epoch only
    num_workers: NonNegativeInt = 0
    channels_last: bool = False  # convolutions in NHWC (faster on CPU and on GPUs with mixed precision)
    decode_cache_mb: NonNegativeFloat = 0  # decoded images kept in RAM per process (0: decode every epoch)
    normalize_overrides: dict[str, bool] | None = None  # transform name -> normalise or not
    epochs_scale: dict[str, PositiveFloat] | None = None  # transform name -> x epochs (a row that needs a longer run)
    view_overrides: dict[str, Literal["scene", "whole"]] | None = None  # transform name -> how the network frames it
    # text classifiers (recipe=sentence_t5): choose lr x epochs on a held-out share of train, then train on all
    grid: GridConfig | None = None
    grid_holdout: OpenFraction = 0.1

    @staticmethod
    def cross_check(values: Mapping[str, Any], key: str) -> list[str]:
        def k(name: str) -> str:
            return f"{key}.{name}" if key else name

        problems = []
        epochs, warmup = values["epochs"], values["warmup_epochs"]
        if warmup > epochs:
            problems.append(f"{k('warmup_epochs')}: must be <= {k('epochs')} ({epochs}), got {warmup}")
        grid = values.get("grid") or {}
        if grid and warmup > min(grid["epochs"]):
            problems.append(f"{k('warmup_epochs')}: must be <= the fewest epochs of {k('grid.epochs')} "
                            f"({min(grid['epochs'])}), got {warmup}")
        batch, effective = values["batch_size"], values["effective_batch"]
        if effective % batch:
            problems.append(
                f"{k('effective_batch')}: must be a multiple of {k('batch_size')} ({batch}), "
                f"got {effective} (gradient accumulation = effective_batch / (batch_size x processes))")
        if values["min_lr"] > values["lr"]:
            problems.append(f"{k('min_lr')}: must be <= {k('lr')} ({values['lr']}), got {values['min_lr']}")
        return problems


class ModelConfig(Section):
    name: str
    pretrained: bool = False
    kwargs: dict[str, Any] | None = None  # architecture arguments: the model builder checks them


class NearDuplicatesConfig(Section):
    enabled: bool = False
    max_hamming: Annotated[int, Field(ge=0, le=63)] = 4  # bits of the 64-bit pHash; bias.data.dedup allows 0..63
    exclude_train_val: bool = False
    exclude_across_datasets: bool = False
    examples: NonNegativeInt = 20
    bands: PositiveInt | None = None


class ExpectedConfig(Section):
    """A planted preset's declared known answers (`bias.experiment.known_answers`)."""

    keeps: list[str] = []
    loses: list[str] = []
    unreliable: list[str] = []


class DataConfig(Section):
    name: str
    val_per_dataset: Annotated[int, Field(ge=1)]
    per_dataset: PositiveInt | None = None  # null: every image not in val
    split_seed: NonNegativeInt = 0
    resize_shorter: PositiveInt | None = None
    exclude_train_val_duplicates: bool = False
    near_duplicates: NearDuplicatesConfig = NearDuplicatesConfig()
    kind: str | None = None  # the data source kind, where a config names it
    # Their keys are checked by the classes that read them (`data_schema`); the sources check the values and
    # report the `???` left for the user (folders: paths; webdataset/hf/list/mixed: datasets, list_file).
    paths: Any = None
    datasets: Any = None
    list_file: Any = None
    generator: Any = None
    expected: ExpectedConfig | None = None


class TransformConfig(Section):
    """A transform that is not registered: its name is checked by the registry, its keys cannot be."""

    model_config = {**Section.model_config, "extra": "allow"}
    name: str


def transform_schema(name: Any, section: str = "transform") -> type[Section]:
    """The schema of a transform section: ``name`` and the registered transform's constructor arguments (any key
    when it takes ``**kwargs`` or `name` is not registered: the registry says so when it is built)."""
    import transforms  # noqa: F401  (registers the built-ins)
    from transforms.registry import get_transform_class, list_transforms

    if not isinstance(name, str) or name not in list_transforms():
        return TransformConfig
    return _transform_model(get_transform_class(name), section)


@functools.cache
def _transform_model(cls: type, section: str) -> type[Section]:
    keys = {} if cls.__init__ is object.__init__ else signature_keys(cls.__init__)
    return TransformConfig if keys is None else keys_model(f"{section}:{cls.name}", keys, name=(str, ...))


@functools.cache
def _generator_schema() -> type[Section]:
    from bias.data.planted import AXES, PlantedConfig

    axes = keys_model("axes", {}, **{axis: (keys_model(axis, dict.fromkeys(dataclass_keys(cls), False)) | None, None)
                                     for axis, cls in AXES.items()})
    typed = {"datasets": (dict[str, axes | None] | None, None), "common": (axes | None, None)}
    return keys_model("generator", {k: False for k in PlantedConfig.KEYS if k not in typed}, **typed)


def _datasets_schema(datasets: Any) -> Any:
    """One entry per dataset, each with its source kind's keys; Any where the kind is unknown (the sources say)."""
    from bias.data.sources import SOURCE_KINDS

    if not isinstance(datasets, Mapping):
        return Any
    fields = {}
    for name, entry in datasets.items():
        kind = entry.get("kind") if isinstance(entry, Mapping) else None
        if isinstance(kind, str) and kind in SOURCE_KINDS:
            keys = {k: False for k in dataclass_keys(SOURCE_KINDS.get(kind), skip=("name",))}
            fields[str(name)] = (keys_model(f"{kind} source", {"kind": True, **keys}), ...)
        else:
            fields[str(name)] = (Any, ...)
    return create_model("datasets", __base__=Section, **fields) | None


def data_schema(data: Any) -> type[Section]:
    """`DataConfig` with the keys of its datasets' source kinds and of the planted generator filled in."""
    datasets = data.get("datasets") if isinstance(data, Mapping) else None
    return create_model("data", __base__=DataConfig, datasets=(_datasets_schema(datasets), None),
                        generator=(_generator_schema() | None, None))


# --------------------------------------------------------------------------------------------------
# the whole config


class BaselinesConfig(Section):
    enabled: bool = True
    max_train: Annotated[int, Field(ge=10)] = 50_000
    holdout: OpenFraction = 0.2
    resolutions: Annotated[list[PositiveInt], Field(min_length=1)] = [16, 32]
    hist_bins: Annotated[int, Field(ge=2)] = 32
    l2_grid: Annotated[list[NonNegativeFloat], Field(min_length=1)] = [10.0, 1.0, 0.1, 0.01, 0.001]
    batch_size: PositiveInt = 256


class VerdictConfig(Section):
    underfit_margin: Annotated[float, Field(ge=0, lt=1)] = 0.05
    baseline_margin: Annotated[float, Field(ge=0, lt=1)] = 0.05


class ClassifyConfig(Section):
    """A composed `classify` (or `table`, `transform`) config, without its `hydra` key."""

    seed: NonNegativeInt  # numpy's generators take no negative seeds
    cache_dir: str
    data: DataConfig
    transform: TransformConfig
    recipe: RecipeConfig
    model: ModelConfig
    seeds: Annotated[list[NonNegativeInt], Field(min_length=1), Unique] | None = None
    out: str | None = None
    num_workers: NonNegativeInt | None = None
    threads: PositiveInt | None = None
    print_config: bool = False
    log_level: LogLevel = "info"
    baselines: BaselinesConfig = BaselinesConfig()
    verdict: VerdictConfig = VerdictConfig()
    # the transform command
    all_files: bool = False
    # the table command
    rows: list[Any] | None = None
    table_out: str | None = None
    examples: NonNegativeInt = 4


def classify_schema(plain: Mapping[str, Any]) -> type[ClassifyConfig]:
    """`ClassifyConfig` with the transform's and the data's own keys (`transform_schema`, `data_schema`)."""
    transform = plain.get("transform")
    name = transform.get("name") if isinstance(transform, Mapping) else None
    return create_model("ClassifyConfig", __base__=ClassifyConfig, transform=(transform_schema(name), ...),
                        data=(data_schema(plain.get("data")), ...))


def validate_classify_config(cfg: Any) -> None:
    """Raise one `ConfigError` naming the key (and where it was set) if the composed classify/table config `cfg`
    is wrong.

    Cheap (no data, model or transform is touched): call it before any heavy work. The `hydra` key is ignored;
    see the module docstring for what is and is not checked."""
    validate_with(cfg, classify_schema)
