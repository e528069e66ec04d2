"""Check a whole classify (or table) config before any heavy work, with messages that name the key.

`validate_classify_config(cfg)` takes the composed Hydra config (a `DictConfig`) or a plain dict
and raises one `ConfigError` when anything is wrong, e.g.::

    recipe.epochs: expected an integer, got 'abc'
    recipe.lr: must be > 0, got -0.1
    recipe.lr: expected a finite number, got inf
    recipe.precision: expected one of ['no', 'fp16', 'bf16'], got 'fp32'
    recipe.epoch: unknown key (did you mean recipe.epochs?)
    model.name is not set: pass model.name=...

Every message starts with the full dotted key (list items as `key[i]`). All problems are collected in
config order (the order of the keys in the config, then the required keys that are absent, then the
checks that relate several keys of one section); the message is the first problem, followed on the
same line by `(and N more: ...)` when there are others. The exception carries `key` (the key of the
first problem) and `problems` (every message).

The checker is generic: a schema is a dataclass whose field types say what a value may be (`int`,
`float`, `bool`, `str`, `X | None`, `list[X]`, `tuple[X, Y]`, `tuple[X, ...]`, `dict[str, X]`,
`dict[str, Any]`, `Any`, `Literal[...]`, nested dataclasses) and whose `field(metadata=...)` adds
constraints (see `CONSTRAINTS`). Rules: a bool is not a number; a float is finite (never nan or inf); an
int is accepted for a float; a float is never accepted for an int (not even 2.0); strings are never converted (YAML and Hydra already typed
the values). Unknown keys are errors with a did-you-mean suggestion, except in open mappings
(`dict[str, Any]`, `Any`, or a dataclass with `OPEN = True`, which checks its declared fields and lets
any other key through). A required field (no default) must be present; Hydra's unset marker `???` in a
checked position is reported as "KEY is not set: pass KEY=...". A schema may define a static method
`cross_check(values, key) -> list[str]` for rules that relate its fields; it runs only when the
section's own fields are valid.

Deliberately not checked here: what is inside the open data mappings (`data.paths`, `data.datasets`,
`data.list_file`, `data.generator`, `data.expected`), including the `???` the folders, webdataset, hf,
list and mixed data configs leave for the user to fill (the data sources check themselves, and say
which path is missing); the transform's parameters (its constructor checks them); `model.kwargs`
(the model builder checks them).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, TypeVar, Union

from omegaconf import DictConfig, ListConfig, OmegaConf

from bias.core.errors import ConfigError

T = TypeVar("T")

__all__ = [
    "CONSTRAINTS",
    "MISSING",
    "ClassifyConfig",
    "check_schema",
    "schema_problems",
    "to_plain",
    "validate_classify_config",
]

#: Hydra's / OmegaConf's marker of a value the user must set.
MISSING = "???"

#: The constraint names a field's metadata may hold.
CONSTRAINTS = {
    "min": "value >= min",
    "max": "value <= max",
    "gt": "value > gt",
    "lt": "value < lt",
    "choices": "value is one of these",
    "length": "a list with exactly this many items",
    "min_length": "a list with at least this many items",
    "ordered": "a list whose items do not decrease",
    "unique": "a list in which no value repeats",
    "item": "a dict of these constraints, applied to every item of a list",
}

_MORE_SHOWN = 5  # problems listed after the first one in the message


# --------------------------------------------------------------------------------------------------
# The generic checker


@dataclass(frozen=True)
class _Unresolved:
    """An interpolation that could not be resolved (reported only where the value is checked)."""

    raw: str
    error: str


def _join(prefix: str, name: Any) -> str:
    return f"{prefix}.{name}" if prefix else str(name)


def _show(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (Union, types.UnionType)


def _hints(schema: type) -> dict[str, Any]:
    return typing.get_type_hints(schema)


_PLURAL = {int: "integers", float: "numbers", bool: "booleans", str: "strings"}


def _describe(tp: Any) -> str:
    """What a value of type `tp` looks like, for 'expected ...'."""
    if tp is Any:
        return "any value"
    if tp is bool:
        return "true or false"
    if tp is int:
        return "an integer"
    if tp is float:
        return "a number"
    if tp is str:
        return "a string"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if _is_union(tp):
        others = [a for a in args if a is not type(None)]
        text = " or ".join(_describe(a) for a in others)
        return f"{text} or null" if len(others) < len(args) else text
    if origin is Literal:
        return f"one of {list(args)}"
    if origin in (list, Sequence):
        return f"a list of {_PLURAL.get(args[0], 'values')}" if args and args[0] is not Any else "a list"
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_PLURAL.get(args[0], 'values')}"
        return f"a list of {len(args)} {_PLURAL.get(args[0], 'values') if len(set(args)) == 1 else 'values'}"
    if origin in (dict, Mapping) or tp in (dict, Mapping):
        return "a mapping"
    return getattr(tp, "__name__", str(tp))


def _matches_choice(value: Any, choice: Any) -> bool:
    return type(value) is type(choice) and value == choice  # True is not 1, 1 is not 1.0


def _check_constraints(value: Any, meta: Mapping[str, Any], key: str) -> list[str]:
    unknown = set(meta) - set(CONSTRAINTS)
    if unknown:
        raise TypeError(f"schema field {key}: unknown constraint(s) {sorted(unknown)}; known: {sorted(CONSTRAINTS)}")
    if value is None:
        return []
    if "choices" in meta and not any(_matches_choice(value, c) for c in meta["choices"]):
        return [f"{key}: expected one of {list(meta['choices'])}, got {_show(value)}"]
    if isinstance(value, (list, tuple)):
        n = len(value)
        if "length" in meta and n != meta["length"]:
            return [f"{key}: expected {meta['length']} values, got {n}"]
        if "min_length" in meta and n < meta["min_length"]:
            if meta["min_length"] == 1:
                return [f"{key}: must not be empty"]
            return [f"{key}: expected at least {meta['min_length']} values, got {n}"]
        problems = [p for i, item in enumerate(value) for p in _check_constraints(item, meta.get("item", {}), f"{key}[{i}]")]
        if problems:
            return problems
        repeated = sorted({v for i, v in enumerate(value) if v in value[:i]}) if meta.get("unique") else []
        if repeated:
            return [f"{key}: {_show(repeated[0])} is given more than once; each value counts once, so give distinct "
                    f"values, got {_show(list(value))}"]
        if meta.get("ordered") and any(b < a for a, b in zip(value, value[1:])):
            return [f"{key}: values must not decrease (low <= high), got {_show(list(value))}"]
        return []
    for name, ok, text in (("gt", lambda v, b: v > b, ">"), ("min", lambda v, b: v >= b, ">="),
                           ("lt", lambda v, b: v < b, "<"), ("max", lambda v, b: v <= b, "<=")):
        if name in meta and isinstance(value, (int, float)) and not ok(value, meta[name]):
            return [f"{key}: must be {text} {meta[name]}, got {_show(value)}"]
    return []


def _check_type(value: Any, tp: Any, key: str) -> list[str]:
    """Problems of `value` against the type `tp` (constraints aside), each starting with `key`."""
    if tp is Any:
        return []
    if isinstance(value, _Unresolved):
        return [f"{key}: cannot resolve {value.raw}: {value.error}"]
    if isinstance(value, str) and value == MISSING:
        return [f"{key} is not set: pass {key}=..."]
    expected = f"{key}: expected {_describe(tp)}, got {_show(value)}"
    if _is_union(tp):
        args = typing.get_args(tp)
        if value is None:
            return [] if type(None) in args else [expected]
        others = [a for a in args if a is not type(None)]
        if len(others) == 1 and not _is_scalar(others[0]):
            return _check_type(value, others[0], key)  # a list or mapping: say where inside it is wrong
        for arm in others:
            if not _check_type(value, arm, key):
                return []
        return [expected]
    if tp is bool:
        return [] if isinstance(value, bool) else [expected]
    if tp is int:
        return [] if isinstance(value, int) and not isinstance(value, bool) else [expected]
    if tp is float:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return [expected]
        return [] if math.isfinite(value) else [f"{key}: expected a finite number, got {_show(value)}"]
    if tp is str:
        return [] if isinstance(value, str) else [expected]
    if tp is type(None):
        return [] if value is None else [expected]
    if dataclasses.is_dataclass(tp):
        return schema_problems(value, tp, key)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        return [] if any(_matches_choice(value, c) for c in args) else [expected]
    if origin in (list, Sequence, tuple):
        if not isinstance(value, (list, tuple)):
            return [expected]
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            if len(value) != len(args):
                return [f"{key}: expected {len(args)} values, got {len(value)}"]
            return [p for i, (item, arm) in enumerate(zip(value, args)) for p in _check_type(item, arm, f"{key}[{i}]")]
        item_type = args[0] if args else Any
        return [p for i, item in enumerate(value) for p in _check_type(item, item_type, f"{key}[{i}]")]
    if origin in (dict, Mapping) or tp in (dict, Mapping):
        if not isinstance(value, Mapping):
            return [expected]
        value_type = args[1] if len(args) == 2 else Any
        if value_type is Any:
            return []  # an open mapping: its keys and values belong to whoever reads it
        problems = []
        for k, v in value.items():
            if not isinstance(k, str):
                problems.append(f"{_join(key, k)}: expected a name (a string key), got {_show(k)}")
            else:
                problems.extend(_check_type(v, value_type, _join(key, k)))
        return problems
    raise TypeError(f"schema field {key}: unsupported type {tp!r}")


def _is_scalar(tp: Any) -> bool:
    return tp in (bool, int, float, str) or typing.get_origin(tp) is Literal


def _check_value(value: Any, tp: Any, meta: Mapping[str, Any], key: str) -> list[str]:
    return _check_type(value, tp, key) or _check_constraints(value, meta, key)


def schema_problems(data: Any, schema: type, key: str = "") -> list[str]:
    """Every problem of `data` (a mapping) against the dataclass `schema`, in config order; `key` is the
    dotted key of `data` ("" at the top), the prefix of every message."""
    if not dataclasses.is_dataclass(schema):
        raise TypeError(f"{schema!r} is not a dataclass schema")
    where = key or "the config"
    if isinstance(data, _Unresolved):
        return [f"{where}: cannot resolve {data.raw}: {data.error}"]
    if isinstance(data, str) and data == MISSING:
        return [f"{key} is not set: pass {key}=..."] if key else ["the config is not set"]
    if not isinstance(data, Mapping):
        return [f"{where}: expected a mapping, got {_show(data)}"]
    hints = _hints(schema)
    fields = {f.name: f for f in dataclasses.fields(schema)}
    open_ = bool(getattr(schema, "OPEN", False))
    problems: list[str] = []
    for name, value in data.items():
        sub = _join(key, name)
        if name not in fields:
            if not open_:
                problems.append(f"{sub}: unknown key{_suggest(str(name), list(fields), key)}")
            continue
        problems.extend(_check_value(value, hints[name], fields[name].metadata, sub))
    for name, f in fields.items():
        if name not in data and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            problems.append(f"{_join(key, name)}: missing required key")
    cross = getattr(schema, "cross_check", None)
    if not problems and cross is not None:
        problems.extend(cross(data, key))
    return problems


def _suggest(name: str, known: list[str], prefix: str) -> str:
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    if close:
        return f" (did you mean {_join(prefix, close[0])}?)"
    return f" (known keys: {', '.join(known)})" if known else ""


def check_schema(data: Any, schema: type, key: str = "") -> None:
    """Raise one `ConfigError` if `data` does not fit `schema` (see the module docstring)."""
    problems = schema_problems(data, schema, key)
    if problems:
        raise _error(problems)


def options_from_config(cls: type[T], schema: type, cfg: Mapping[str, Any] | None, key: str) -> T:
    """`cls(**cfg)` after `check_schema(cfg, schema, key)`; lists become tuples (options are frozen)."""
    cfg = dict(cfg or {})
    check_schema(cfg, schema, key)
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in cfg.items()})


def _error(problems: list[str]) -> ConfigError:
    message = problems[0]
    rest = problems[1:]
    if rest:
        shown = "; ".join(rest[:_MORE_SHOWN]) + ("; ..." if len(rest) > _MORE_SHOWN else "")
        message += f" (and {len(rest)} more: {shown})"
    err = ConfigError(message)
    err.problems = list(problems)
    err.key = problems[0].split(":", 1)[0].removesuffix(" is not set")
    return err


# --------------------------------------------------------------------------------------------------
# DictConfig -> plain data, keeping `???` visible


def to_plain(cfg: Any) -> Any:
    """A DictConfig/ListConfig (or plain data holding them) as plain dicts and lists. Unset values stay
    the string '???'; interpolations are resolved one by one (one that points at an unset value becomes
    '???'; one that cannot be resolved becomes a marker that is reported only where it is checked)."""
    if isinstance(cfg, DictConfig):
        if cfg._is_missing():
            return MISSING
        if cfg._is_none():
            return None
        return {k: _plain_child(cfg, k) for k in cfg.keys()}
    if isinstance(cfg, ListConfig):
        if cfg._is_missing():
            return MISSING
        if cfg._is_none():
            return None
        return [_plain_child(cfg, i) for i in range(len(cfg))]
    if isinstance(cfg, Mapping):
        return {k: to_plain(v) for k, v in cfg.items()}
    if isinstance(cfg, (list, tuple)):
        return [to_plain(v) for v in cfg]
    return cfg


def _plain_child(parent: DictConfig | ListConfig, key: Any) -> Any:
    if OmegaConf.is_missing(parent, key):
        return MISSING
    if OmegaConf.is_interpolation(parent, key):
        raw = str(parent._get_node(key)._value())
        try:
            value = parent[key]
        except Exception as err:  # noqa: BLE001 - OmegaConf raises several kinds; all mean "unresolvable"
            if type(err).__name__ == "InterpolationToMissingValueError":
                return MISSING
            return _Unresolved(raw, str(err).splitlines()[0] if str(err) else type(err).__name__)
        return to_plain(value)
    node = parent._get_node(key)
    if isinstance(node, (DictConfig, ListConfig)):
        return to_plain(node)
    return parent[key]


# --------------------------------------------------------------------------------------------------
# The classify config


def _c(default: Any = dataclasses.MISSING, **constraints: Any) -> Any:
    """A schema field with constraints; no default = required. Lists as defaults are copied."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=constraints)
    return field(default=default, metadata=constraints)


@dataclass
class MixupConfig:
    mixup_alpha: float = _c(0.8, min=0)
    cutmix_alpha: float = _c(1.0, min=0)
    prob: float = _c(1.0, min=0, max=1)
    switch_prob: float = _c(0.5, min=0, max=1)


@dataclass
class AugmentGroupConfig:
    hflip: bool = False
    randaugment: str | None = None  # a timm RandAugment spec, e.g. rand-m9-mstd0.5-inc1
    normalize: bool = False
    crop: str = _c("resized", choices=["resized", "shift"])  # see classifiers.augment.train_augment


@dataclass
class GridConfig:
    """A grid of training points, each trained on part of train and scored on the rest (never on val)."""

    lr: list[float] = _c(min_length=1, item={"gt": 0})
    epochs: list[int] = _c(min_length=1, item={"gt": 0})


@dataclass
class RecipeConfig:
    name: str
    image_size: int = _c(gt=0)
    crop_scale: tuple[float, float] = _c(item={"gt": 0, "max": 1}, ordered=True)
    crop_ratio: tuple[float, float] = _c(item={"gt": 0}, ordered=True)
    batch_size: int = _c(gt=0)
    effective_batch: int = _c(gt=0)
    epochs: int = _c(gt=0)
    warmup_epochs: float = _c(min=0)
    lr: float = _c(gt=0)
    min_lr: float = _c(min=0)
    weight_decay: float = _c(min=0)
    groups: dict[str, AugmentGroupConfig] = _c(min_length=1)
    eval_resize: int | None = _c(None, gt=0)
    eval_batch_size: int | None = _c(None, gt=0)
    betas: tuple[float, float] = _c([0.9, 0.95], item={"min": 0, "lt": 1})
    eps: float = _c(1e-8, gt=0)
    label_smoothing: float = _c(0.0, min=0, lt=1)
    mixup: MixupConfig | None = None
    clip_grad: float | None = _c(None, min=0)  # null or 0: no clipping
    precision: Literal["no", "fp16", "bf16"] = "no"
    eval_every: int | None = _c(None, min=0)  # 0 or null: evaluate after the last epoch only
    num_workers: int = _c(0, min=0)
    channels_last: bool = False  # convolutions in NHWC (faster on CPU and on GPUs with mixed precision)
    decode_cache_mb: float = _c(0, min=0)  # decoded images kept in RAM per process (0: decode every epoch)
    normalize_overrides: dict[str, bool] | None = None  # transform name -> normalise or not
    # text classifiers (recipe=sentence_t5): choose lr x epochs on a held-out share of train, then train on all
    grid: GridConfig | None = None
    grid_holdout: float = _c(0.1, gt=0, lt=1)

    @staticmethod
    def cross_check(values: Mapping[str, Any], key: str) -> list[str]:
        problems = []
        epochs, warmup = values["epochs"], values["warmup_epochs"]
        if warmup > epochs:
            problems.append(f"{_join(key, 'warmup_epochs')}: must be <= {_join(key, 'epochs')} ({epochs}), got {warmup}")
        grid = values.get("grid") or {}
        if grid and warmup > min(grid["epochs"]):
            problems.append(f"{_join(key, 'warmup_epochs')}: must be <= the fewest epochs of {_join(key, 'grid.epochs')} "
                            f"({min(grid['epochs'])}), got {warmup}")
        batch, effective = values["batch_size"], values["effective_batch"]
        if effective % batch:
            problems.append(
                f"{_join(key, 'effective_batch')}: must be a multiple of {_join(key, 'batch_size')} ({batch}), "
                f"got {effective} (gradient accumulation = effective_batch / (batch_size x processes))")
        if values["min_lr"] > values["lr"]:
            problems.append(f"{_join(key, 'min_lr')}: must be <= {_join(key, 'lr')} ({values['lr']}), got {values['min_lr']}")
        return problems


@dataclass
class ModelConfig:
    name: str
    pretrained: bool = False
    kwargs: dict[str, Any] | None = None  # architecture arguments: the model builder checks them


@dataclass
class NearDuplicatesConfig:
    enabled: bool = False
    max_hamming: int = _c(4, min=0, max=63)  # bits of the 64-bit pHash; bias.data.dedup allows 0..63
    exclude_train_val: bool = False
    exclude_across_datasets: bool = False
    examples: int = _c(20, min=0)
    bands: int | None = _c(None, gt=0)


@dataclass
class DataConfig:
    name: str
    val_per_dataset: int = _c(min=1)
    per_dataset: int | None = _c(None, gt=0)  # null: every image not in val
    split_seed: int = _c(0, min=0)
    resize_shorter: int | None = _c(None, gt=0)
    exclude_train_val_duplicates: bool = False
    near_duplicates: NearDuplicatesConfig = field(default_factory=NearDuplicatesConfig)
    kind: str | None = None  # the data source kind, where a config names it
    # Open: the data sources read and check these (folders: paths; webdataset/hf/list/mixed: datasets,
    # list_file; planted: generator, expected). `???` inside them is theirs to report.
    paths: Any = None
    datasets: Any = None
    list_file: Any = None
    generator: dict[str, Any] | None = None
    expected: dict[str, Any] | None = None


@dataclass
class TransformConfig:
    OPEN: ClassVar[bool] = True  # every other key is a parameter that the transform's constructor checks
    name: str


@dataclass
class BaselinesConfig:
    enabled: bool = True
    max_train: int = _c(50_000, min=10)
    holdout: float = _c(0.2, gt=0, lt=1)
    resolutions: list[int] = _c([16, 32], min_length=1, item={"gt": 0})
    hist_bins: int = _c(32, min=2)
    l2_grid: list[float] = _c([10.0, 1.0, 0.1, 0.01, 0.001], min_length=1, item={"min": 0})
    batch_size: int = _c(256, gt=0)


@dataclass
class VerdictConfig:
    underfit_margin: float = _c(0.05, min=0, lt=1)
    baseline_margin: float = _c(0.05, min=0, lt=1)


@dataclass
class ClassifyConfig:
    """A composed `classify` (or `table`) config, without its `hydra` key."""

    seed: int = _c(min=0)  # numpy's generators take no negative seeds
    cache_dir: str = _c()
    data: DataConfig = _c()
    transform: TransformConfig = _c()
    recipe: RecipeConfig = _c()
    model: ModelConfig = _c()
    seeds: list[int] | None = _c(None, min_length=1, unique=True, item={"min": 0})
    out: str | None = None
    num_workers: int | None = _c(None, min=0)
    threads: int | None = _c(None, gt=0)
    print_config: bool = False
    baselines: BaselinesConfig = field(default_factory=BaselinesConfig)
    verdict: VerdictConfig = field(default_factory=VerdictConfig)
    # the transform command
    all_files: bool = False
    # the table command
    rows: list[Any] | None = None
    table_out: str | None = None
    examples: int = _c(4, min=0)


def validate_classify_config(cfg: DictConfig | Mapping[str, Any]) -> None:
    """Raise one `ConfigError` naming the key if the composed classify/table config `cfg` is wrong.

    Cheap (no data, model or transform is touched): call it before any heavy work. The `hydra` key is
    ignored; see the module docstring for what is and is not checked."""
    plain = to_plain(cfg)
    if isinstance(plain, Mapping):
        plain = {k: v for k, v in plain.items() if k != "hydra"}
    check_schema(plain, ClassifyConfig)
