"""Config schemas on pydantic v2: one `ConfigError` that names every wrong key, and where it was set.

A schema is a `Section` (a pydantic model with ``extra="forbid"``, strict types, finite floats): an unknown key
is an error in every section. A value's type and range come from its annotation, e.g.
``Annotated[float, Field(gt=0)]``; `Unique` and `Ordered` add list rules. Sections whose keys belong to a class
(a transform, a data source, a function's keyword arguments) are built from it with `keys_model`, so a user's own
registered class is checked too.

`config_problems(data, schema)` returns every problem as a message that starts with the full dotted key (list
items as ``key[i]``), in config order::

    recipe.epochs: expected an integer, got 'abc'
    recipe.lr: must be > 0, got -0.1
    recipe.epoch: unknown key (did you mean recipe.epochs?)
    model.name is not set: pass model.name=...

Rules kept from the hand-written checker this replaces: a bool is not a number; an int is accepted for a float,
a float never for an int; strings are never converted; floats are finite; Hydra's unset marker ``???`` is "KEY
is not set"; a section's `cross_check(values, key) -> list[str]` (rules relating its fields) runs only when no
field below it is wrong.

`ConfigSources` says where a key was set: a command-line override, a config group option's file
(``transform=canny (configs/transform/canny.yaml)``) or the command's own config file. `check_config` appends it
to each problem (``[set by ...]``) when the Hydra run (or a config composed with ``return_hydra_config=True``)
says which overrides and group options were used. `validate_with(cfg, schema)` is the one call a command's
validator makes: the composed config to plain data (`to_plain`), its schema (or the schema built from it), the check.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.resources
import inspect
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from omegaconf import DictConfig, ListConfig, OmegaConf
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    ValidationError,
    create_model,
    field_validator,
)
from pydantic_core import PydanticCustomError

from bias.core.errors import ConfigError

__all__ = ["MISSING", "ConfigSources", "LogLevel", "NonNegativeFloat", "NonNegativeInt", "Ordered", "PositiveFloat",
           "PositiveInt", "Section", "Unique", "check_config", "config_problems", "keys_model", "to_plain",
           "validate_with"]

#: Hydra's / OmegaConf's marker of a value the user must set.
MISSING = "???"
_MORE_SHOWN = 5  # problems listed after the first one in the message


@dataclass(frozen=True)
class _Unresolved:
    """An interpolation that could not be resolved (reported only where the value is checked)."""

    raw: str
    error: str


class Section(BaseModel):
    """A config section: unknown keys, strings for numbers, bools for integers and nan/inf are errors."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, arbitrary_types_allowed=True,
                              protected_namespaces=())

    @field_validator("*", mode="before")
    @classmethod
    def _set_and_resolved(cls, value: Any, info: Any) -> Any:
        annotation = cls.model_fields[info.field_name].annotation
        if annotation is Any:
            return value
        if isinstance(value, _Unresolved):
            raise PydanticCustomError("unresolved", "cannot resolve {raw}: {error}", {"raw": value.raw, "error": value.error})
        if isinstance(value, str) and value == MISSING:
            raise PydanticCustomError("unset", "is not set")
        return value


def Pair(item: Any) -> Any:  # noqa: N802 - a type factory, read like a type
    """Two values (a YAML list of two) of type `item`."""
    return Annotated[tuple[item, item], Strict(False)]


def _unique(values: Sequence[Any]) -> Sequence[Any]:
    repeated = sorted({v for i, v in enumerate(values) if v in values[:i]})
    if repeated:
        raise PydanticCustomError("repeated", "{value} is given more than once; each value counts once, so give "
                                  "distinct values, got {values}", {"value": repr(repeated[0]), "values": repr(list(values))})
    return values


def _ordered(values: Sequence[Any]) -> Sequence[Any]:
    if any(b < a for a, b in zip(values, values[1:])):
        raise PydanticCustomError("ordered", "values must not decrease (low <= high), got {values}",
                                  {"values": repr(list(values))})
    return values


Unique = AfterValidator(_unique)
Ordered = AfterValidator(_ordered)
PositiveInt = Annotated[int, Field(gt=0)]
NonNegativeInt = Annotated[int, Field(ge=0)]
PositiveFloat = Annotated[float, Field(gt=0)]
NonNegativeFloat = Annotated[float, Field(ge=0)]
#: the top-level `log_level` every command takes
LogLevel = Literal["debug", "info", "warning", "error"]


def keys_model(model_name: str, keys: Mapping[str, bool], /, **typed: Any) -> type[Section]:
    """A section whose allowed keys are `keys` (name -> required) with any value (their owner checks the values),
    plus the `typed` fields (name -> (annotation, default))."""
    fields: dict[str, Any] = {k: (Any, ...) if required else (Any, None) for k, required in keys.items()}
    fields.update(typed)
    return create_model(model_name, __base__=Section, **fields)


def signature_keys(function: Callable[..., Any], skip: Iterable[str] = ()) -> dict[str, bool] | None:
    """The keyword arguments of `function` (name -> required), or None when it takes ``**kwargs`` (open)."""
    params = list(inspect.signature(function).parameters.values())
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return {p.name: p.default is p.empty for p in params
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in (*skip, "self")}


def dataclass_keys(cls: type, skip: Iterable[str] = ()) -> dict[str, bool]:
    """The fields of the dataclass `cls` (name -> required)."""
    return {f.name: f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            for f in dataclasses.fields(cls) if f.name not in skip and f.init}


# --------------------------------------------------------------------------------------------------
# DictConfig -> plain data, keeping `???` visible


def to_plain(cfg: Any) -> Any:
    """A DictConfig/ListConfig (or plain data holding them) as plain dicts and lists. Unset values stay the string
    '???'; interpolations are resolved one by one (one that points at an unset value becomes '???'; one that cannot
    be resolved becomes a marker that is reported only where it is checked)."""
    if isinstance(cfg, (DictConfig, ListConfig)):
        try:  # the common case, in one call; a failing interpolation is looked at node by node below
            return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
        except Exception:  # noqa: BLE001 - OmegaConf raises several kinds
            pass
    if isinstance(cfg, DictConfig):
        return {k: _plain_child(cfg, k) for k in cfg.keys()}
    if isinstance(cfg, ListConfig):
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
        raw = str(OmegaConf.to_container(parent, resolve=False)[key])
        try:
            value = parent[key]
        except Exception as err:  # noqa: BLE001 - OmegaConf raises several kinds; all mean "unresolvable"
            if type(err).__name__ == "InterpolationToMissingValueError":
                return MISSING
            return _Unresolved(raw, str(err).splitlines()[0] if str(err) else type(err).__name__)
        return to_plain(value)
    return to_plain(parent[key])


# --------------------------------------------------------------------------------------------------
# pydantic's errors -> one line per problem


def _key(loc: Sequence[Any]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _show(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _bound(value: Any) -> Any:
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _unwrap(tp: Any) -> Any:
    while typing.get_origin(tp) is Annotated:
        tp = typing.get_args(tp)[0]
    if typing.get_origin(tp) in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return _unwrap(args[0])
    return tp


def _nullable(tp: Any) -> bool:
    while typing.get_origin(tp) is Annotated:
        tp = typing.get_args(tp)[0]
    return typing.get_origin(tp) in (Union, types.UnionType) and type(None) in typing.get_args(tp)


def _fields(model: type[BaseModel]) -> dict[str, Any]:
    """A model's fields by the key a config uses (the alias, where a field has one)."""
    return {field.alias or name: field for name, field in model.model_fields.items()}


def _annotation_at(schema: type[BaseModel], loc: Sequence[Any]) -> Any:
    """The (raw) annotation of the value at `loc` below the model `schema`, or None when unknown."""
    tp: Any = schema
    for part in loc:
        inner = _unwrap(tp)
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            field = _fields(inner).get(str(part))
            if field is None:
                return None
            tp = field.annotation
            if field.metadata:
                tp = Annotated[(tp, *field.metadata)]
            continue
        origin, args = typing.get_origin(inner), typing.get_args(inner)
        if origin in (dict, Mapping) and len(args) == 2:
            tp = args[1]
        elif origin in (list, Sequence) and args:
            tp = args[0]
        elif origin is tuple and args and isinstance(part, int):
            tp = args[0] if args[-1] is Ellipsis else args[min(part, len(args) - 1)]
        else:
            return None
    return tp


_PLURAL = {int: "integers", float: "numbers", bool: "booleans", str: "strings"}


def _describe(tp: Any) -> str:
    """What a value of type `tp` looks like, for 'expected ...'."""
    nullable, tp = _nullable(tp), _unwrap(tp)
    text = _describe_plain(tp)
    return f"{text} or null" if nullable else text


def _describe_plain(tp: Any) -> str:
    if tp is Any or tp is None:
        return "any value"
    simple = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    if tp in simple:
        return simple[tp]
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return "a mapping"
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    args = tuple(_unwrap(a) for a in args)
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


def _at(data: Any, loc: Sequence[Any]) -> Any:
    for part in loc:
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return None
    return data


def _order(data: Any, loc: Sequence[Any]) -> tuple[int, ...]:
    """Where `loc` sits in `data` (config order); a key that is absent sorts after the present ones."""
    out = []
    for part in loc:
        if isinstance(data, Mapping) and part in data:
            out.append(list(data).index(part))
            data = data[part]
        elif isinstance(data, (list, tuple)) and isinstance(part, int) and part < len(data):
            out.append(part)
            data = data[part]
        else:
            out.append(1 << 30)
            data = None
    return tuple(out)


def _message(error: Mapping[str, Any], schema: type[BaseModel], data: Any,
             prefix: tuple[str, ...] = ()) -> tuple[tuple[Any, ...], str]:
    """(the loc to report, the problem's line) for one pydantic error; `prefix`: the dotted key of `data`."""
    loc, kind, value, ctx = tuple(error["loc"]), error["type"], error.get("input"), error.get("ctx") or {}
    key = _key((*prefix, *loc))
    if kind == "missing" and loc and isinstance(loc[-1], int):  # a tuple one item short
        parent = _at(data, loc[:-1])
        expected = typing.get_args(_unwrap(_annotation_at(schema, loc[:-1])))
        return loc[:-1], f"{_key((*prefix, *loc[:-1]))}: expected {len(expected)} values, got {len(parent or [])}"
    if kind == "unset" or (isinstance(value, str) and value == MISSING and kind != "extra_forbidden"):
        return loc, f"{key} is not set: pass {key}=..."
    if kind == "unresolved" or isinstance(value, _Unresolved):
        raw, why = (value.raw, value.error) if isinstance(value, _Unresolved) else (ctx["raw"], ctx["error"])
        return loc, f"{key}: cannot resolve {raw}: {why}"
    if kind == "missing":
        return loc, f"{key}: missing required key"
    if kind == "extra_forbidden":
        parent = _unwrap(_annotation_at(schema, loc[:-1]))
        known = list(_fields(parent)) if isinstance(parent, type) and issubclass(parent, BaseModel) else []
        return loc, f"{key}: unknown key{_suggest(str(loc[-1]), known, _key((*prefix, *loc[:-1])))}"
    if kind == "finite_number":
        return loc, f"{key}: expected a finite number, got {_show(value)}"
    bounds = {"greater_than": ("gt", ">"), "greater_than_equal": ("ge", ">="), "less_than": ("lt", "<"),
              "less_than_equal": ("le", "<=")}
    if kind in bounds:
        name, sign = bounds[kind]
        return loc, f"{key}: must be {sign} {_bound(ctx[name])}, got {_show(value)}"
    if kind == "too_short" and ctx.get("min_length") == 1:
        return loc, f"{key}: must not be empty"
    if kind == "too_short":
        return loc, f"{key}: expected at least {ctx['min_length']} values, got {ctx['actual_length']}"
    if kind == "too_long":
        return loc, f"{key}: expected {ctx['max_length']} values, got {ctx['actual_length']}"
    if kind in ("repeated", "ordered"):
        return loc, f"{key}: {error['msg']}"
    if kind.endswith("_type") or kind.endswith("_parsing") or kind in ("literal_error", "int_from_float"):
        return loc, f"{key}: expected {_describe(_annotation_at(schema, loc))}, got {_show(value)}"
    return loc, f"{key}: {error['msg']}, got {_show(value)}"


def _suggest(name: str, known: list[str], prefix: str) -> str:
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    if close:
        return f" (did you mean {f'{prefix}.' if prefix else ''}{close[0]}?)"
    return f" (known keys: {', '.join(known)})" if known else ""


def _cross_checks(data: Any, schema: Any, loc: tuple[Any, ...], bad: list[tuple[Any, ...]]) -> list[str]:
    """Every `cross_check` of a section below which no field is wrong, depth first."""
    tp = _unwrap(schema)
    if not (isinstance(tp, type) and issubclass(tp, BaseModel)) or not isinstance(data, Mapping):
        origin, args = typing.get_origin(tp), typing.get_args(tp)
        if origin in (dict, Mapping) and len(args) == 2 and isinstance(data, Mapping):
            return [p for k, v in data.items() for p in _cross_checks(v, args[1], (*loc, k), bad)]
        return []
    if any(b[: len(loc)] == loc for b in bad):
        return []
    out = []
    for name, value in data.items():
        field = _fields(tp).get(name)
        if field is not None:
            out += _cross_checks(value, field.annotation, (*loc, name), bad)
    cross = getattr(tp, "cross_check", None)
    return out + (cross(data, _key(loc)) if cross is not None else [])


def config_problems(data: Any, schema: type[BaseModel], key: str = "") -> list[str]:
    """Every problem of `data` (plain data, see `to_plain`) against `schema`, in config order; `key` is the
    dotted key of `data` ("" at the top), the prefix of every message."""
    prefix = tuple(key.split(".")) if key else ()
    if not isinstance(data, Mapping):
        where = key or "the config"
        if isinstance(data, str) and data == MISSING:
            return [f"{key} is not set: pass {key}=..."] if key else ["the config is not set"]
        return [f"{where}: expected a mapping, got {_show(data)}"]
    try:
        schema.model_validate(data)
    except ValidationError as err:
        found = [_message(e, schema, data, prefix) for e in err.errors()]
        found.sort(key=lambda item: _order(data, item[0]))
        seen: list[str] = []
        for _, line in found:
            if line not in seen:
                seen.append(line)
        bad = [loc for loc, _ in found]
        return seen + _cross_checks(data, schema, prefix, [(*prefix, *b) for b in bad])
    return _cross_checks(data, schema, prefix, [])


# --------------------------------------------------------------------------------------------------
# where a key was set


@dataclass
class ConfigSources:
    """What a composed config was made of: the command-line overrides, the chosen group options, the config's own
    file, and the folders that Hydra searched (`from_hydra`)."""

    overrides: list[str]
    choices: dict[str, str]
    config_name: str | None
    search_dirs: list[Path]
    package_dirs: list[Path] = dataclasses.field(default_factory=list)  # shown relative to their parent

    @classmethod
    def from_hydra(cls, hydra: Any) -> ConfigSources:
        """From a config's ``hydra`` node (`HydraConfig.get()` or ``cfg.hydra``)."""
        dirs, packages = [], []
        for source in hydra.runtime.get("config_sources") or []:
            if source.schema == "file":
                dirs.append(Path(source.path))
            elif source.schema == "pkg" and source.provider != "hydra":
                try:
                    dirs.append(Path(str(importlib.resources.files(source.path))))
                except ModuleNotFoundError:
                    continue
                packages.append(dirs[-1])
        choices = {str(k): str(v) for k, v in (hydra.runtime.get("choices") or {}).items()
                   if v is not None and not str(k).startswith("hydra/")}
        return cls([str(o) for o in hydra.overrides.get("task") or []], choices, hydra.job.get("config_name"), dirs,
                   packages)

    def _find(self, relative: str) -> Path | None:
        return next((d / relative for d in self.search_dirs if (d / relative).is_file()), None)

    def _show(self, path: Path) -> str:
        """A packaged config file as the package's folder name and its path in it (configs/recipe/cpu.yaml)."""
        for folder in self.package_dirs:
            try:
                return str(Path(folder.name) / path.resolve().relative_to(folder.resolve()))
            except ValueError:
                continue
        try:  # a folder of yours: as you would type it from here
            return str(path.resolve().relative_to(Path.cwd()))
        except ValueError:
            return str(path)

    def _files(self) -> list[tuple[str, Path, tuple[str, ...]]]:
        """(how it was chosen, file, package) of the command's config, its plain defaults and each group option."""
        files: list[tuple[str, Path, tuple[str, ...]]] = []
        pending = [self.config_name] if self.config_name else []
        while pending:
            name = pending.pop(0)
            path = self._find(f"{name}.yaml")
            if path is None:
                continue
            files.append(("", path, ()))
            defaults = OmegaConf.load(path).get("defaults") or []
            pending += [str(d) for d in defaults if isinstance(d, str) and d != "_self_"]
        for choice, option in self.choices.items():
            group, _, package = choice.partition("@")
            path = self._find(f"{group}/{option}.yaml")
            if path is None:
                continue
            header = next((line for line in path.read_text().splitlines()[:3] if line.startswith("# @package")), "")
            declared = header.removeprefix("# @package").strip()
            package = declared if declared and not package else package or group.replace("/", ".")
            files.append((f"{choice}={option}", path, () if package == "_global_" else tuple(package.split("."))))
        return files

    def where(self, key: str) -> str:
        """Where `key` (dotted, list items as [i]) was set, as a phrase: the command-line override that sets it, else
        every config file that holds it (the command's own, its plain defaults, the chosen group options); '' when
        no source is known."""
        parts = tuple(key.replace("[", ".").replace("]", "").split("."))
        for override in self.overrides:
            name, _, value = override.partition("=")
            name = name.lstrip("+~")
            if "@" in name or name in {c.partition("@")[0] for c in self.choices}:
                continue  # a group choice: its file says more
            mine = tuple(name.split("."))
            if mine == parts[: len(mine)] or parts == mine[: len(parts)]:
                return f"set by the command-line override {override}"
        found = []
        for chosen, path, package in self._files():
            if parts[: len(package)] != package:
                continue
            node: Any = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
            for part in parts[len(package):]:
                if isinstance(node, Mapping) and part in node:
                    node = node[part]
                elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                    node = node[int(part)]
                else:
                    break
            else:
                found.append(f"{chosen} ({self._show(path)})" if chosen else self._show(path))
        return f"set in {' and '.join(found)}" if found else ""


def _sources(cfg: Any) -> ConfigSources | None:
    hydra = cfg.get("hydra") if isinstance(cfg, (DictConfig, Mapping)) else None
    if isinstance(hydra, DictConfig) and "runtime" in hydra:
        return ConfigSources.from_hydra(hydra)
    from hydra.core.hydra_config import HydraConfig

    return ConfigSources.from_hydra(HydraConfig.get()) if HydraConfig.initialized() else None


def check_config(cfg: Any, schema: type[BaseModel], sources: ConfigSources | None = None,
                 plain: Any = None) -> dict[str, Any]:
    """`cfg` (a composed config without or with its ``hydra`` node, or plain data) as plain data, after one
    `ConfigError` listing every problem against `schema`, each followed by where its key was set when known
    (`sources`, else the config's ``hydra`` node, else the running Hydra app's). `plain`: `to_plain(cfg)`, where
    the caller has it already."""
    plain = to_plain(cfg) if plain is None else plain
    if isinstance(plain, Mapping):
        plain = {k: v for k, v in plain.items() if k != "hydra"}
    problems = config_problems(plain, schema)
    if problems:
        sources = sources or _sources(cfg)
        if sources is not None:
            problems = [_with_source(p, sources) for p in problems]
        raise _error(problems)
    return plain


def validate_with(cfg: Any, schema: type[BaseModel] | Callable[[Mapping[str, Any]], type[BaseModel]]) -> dict[str, Any]:
    """`check_config` with `schema`, or with the schema that `schema(plain)` builds from the plain config (sections
    whose keys depend on a name in the config: a transform, a data source kind); returns the plain config."""
    plain = to_plain(cfg)
    if not isinstance(plain, Mapping):
        raise ConfigError(f"the config: expected a mapping, got {_show(plain)}")
    model = schema if isinstance(schema, type) else schema(plain)
    return check_config(cfg, model, plain=plain)


def _with_source(problem: str, sources: ConfigSources) -> str:
    key = problem.split(":", 1)[0].removesuffix(" is not set")
    where = sources.where(key)
    if where and " is not set: " in problem.split(":", 1)[0] + ": ":
        where = where.replace("set in ", "left unset (???) in ", 1)
    return f"{problem} [{where}]" if where else problem


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

