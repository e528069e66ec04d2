"""The network the audited parameters belong to, by kind: ``model=zoo``, ``timm`` or ``callable``.

`audit_model` builds it (in eval mode), and splits its state dict:

* the *full* spec: every floating-point state-dict entry, in state-dict order (weights and float
  buffers such as BatchNorm's running statistics); integer buffers (``num_batches_tracked``) stay in
  the module and are never audited;
* the *audited* spec: the entries whose names match one of the ``params`` patterns (`fnmatch`, e.g.
  ``["layer4.1.bn*"]`` for P-diff's last normalisation layers); default every entry;
* the *base*: when the audited entries are a strict subset, the rest comes from one base checkpoint
  (``base=PATH``, a ``.safetensors`` / ``.pt`` state dict), spliced in as the study's subset zoos do.

`AuditZoo` is a `memorization.zoo.store.Zoo` over the user's training checkpoints that builds this
network and evaluates on the audit's task, so every study function (evaluators, baselines, figures)
runs on it unchanged.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from bias.core.errors import ConfigError
from bias.core.registry import Registry
from memorization.audit.checkpoints import CheckpointError, _load_tensors, _read_header
from memorization.audit.tasks import import_target
from memorization.zoo.archs import build_arch
from memorization.zoo.spec import ParamSpec
from memorization.zoo.store import Zoo
from memorization.zoo.tasks import Task

MODEL_BUILDERS: Registry[Callable[..., nn.Module]] = Registry("audit model kind", attr=None)
register_model_builder = MODEL_BUILDERS.register


@register_model_builder("zoo")
def zoo_model(task: Task, arch: dict[str, Any]) -> nn.Module:
    """One of our zoo architectures (`memorization.zoo.archs`: ``{name: mlp, hidden: [32, 32]}``, ...), sized
    by the task's input shape and classes."""
    return build_arch(dict(arch), task.input_shape, task.num_classes)


@register_model_builder("timm")
def timm_model(task: Task, name: str, kwargs: dict[str, Any] | None = None) -> nn.Module:
    """``timm.create_model(name, pretrained=False, num_classes=<task's>, in_chans=<task's>, **kwargs)``."""
    import timm

    args = {"num_classes": task.num_classes, **({"in_chans": task.input_shape[0]} if len(task.input_shape) == 3 else {}),
            **dict(kwargs or {})}
    return timm.create_model(name, pretrained=False, **args)


@register_model_builder("callable")
def callable_model(task: Task, target: str, kwargs: dict[str, Any] | None = None, path: str | None = None) -> nn.Module:
    """``module:function`` returning an `nn.Module`, called with `kwargs` (the user's own code, found on `path`)."""
    model = import_target(target, path)(**dict(kwargs or {}))
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model {target} returned {type(model).__name__}, not a torch.nn.Module")
    return model


@dataclass
class AuditModel:
    module: nn.Module
    full_spec: ParamSpec              # every floating-point state-dict entry
    spec: ParamSpec                   # the audited entries (a subset of full_spec, same order)
    base: Tensor | None = None        # full_spec vector of the base checkpoint when spec is a strict subset
    base_path: str | None = None
    other: list[str] = field(default_factory=list)   # state-dict entries never audited (integer buffers)

    @property
    def is_subset(self) -> bool:
        return self.spec.names != self.full_spec.names

    @property
    def known(self) -> list[str]:
        """Every state-dict entry of the model (a checkpoint may hold any of them)."""
        return [*self.full_spec.names, *self.other]


def select_params(spec: ParamSpec, patterns: Sequence[str] | None) -> ParamSpec:
    """The entries of `spec` whose names match any of `patterns` (`fnmatch`); None: all of them."""
    if not patterns:
        return spec
    patterns = [str(p) for p in patterns]
    unmatched = [p for p in patterns if not any(fnmatch.fnmatchcase(n, p) for n in spec.names)]
    if unmatched:
        raise ConfigError(f"params: patterns {unmatched} match no parameter of the model; its parameters are "
                          f"{spec.names[:12]}{' ...' if len(spec.names) > 12 else ''}")
    keep = [i for i, n in enumerate(spec.names) if any(fnmatch.fnmatchcase(n, p) for p in patterns)]
    return ParamSpec([spec.names[i] for i in keep], [spec.shapes[i] for i in keep])


def load_base(path: str | os.PathLike, spec: ParamSpec, strip_prefix: str = "") -> Tensor:
    """The `spec` vector of the base checkpoint at `path`; missing keys and wrong shapes are named."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"base={path}: no such checkpoint file")
    try:
        header = _read_header(path)
    except Exception as err:
        raise CheckpointError(f"base={path} cannot be read ({type(err).__name__}: {err})") from err
    header = {k[len(strip_prefix):] if strip_prefix and k.startswith(strip_prefix) else k: v for k, v in header.items()}
    missing = [n for n in spec.names if n not in header]
    wrong = [f"{n} {header[n][0]} != {s}" for n, s in zip(spec.names, spec.shapes) if n in header and header[n][0] != s]
    if missing or wrong:
        raise CheckpointError(f"base={path}: " + "; ".join(
            ([f"missing keys {missing[:8]}"] if missing else []) + ([f"shapes {wrong[:6]}"] if wrong else [])))
    tensors = _load_tensors(path, [strip_prefix + n for n in spec.names])
    return spec.flatten({n[len(strip_prefix):]: v.float() for n, v in tensors.items()})


def audit_model(kind: str, task: Task, params: Sequence[str] | None = None, base: str | None = None,
                strip_prefix: str = "", **kwargs: Any) -> AuditModel:
    """Build the network (`MODEL_BUILDERS`), choose the audited parameters and load the base for the rest."""
    try:
        module = MODEL_BUILDERS.create(kind, task, **kwargs).eval()
    except (TypeError, ValueError, KeyError, RuntimeError) as err:  # the builder refused these arguments
        if isinstance(err, ConfigError):
            raise
        raise ConfigError(f"model={kind} cannot be built for inputs {task.input_shape} and {task.num_classes} "
                          f"classes: {err}") from err
    state = module.state_dict()
    floats = {k: v for k, v in state.items() if v.is_floating_point()}
    full = ParamSpec(list(floats), [tuple(v.shape) for v in floats.values()])
    spec = select_params(full, params)
    other = [k for k in state if k not in floats]
    if spec.names == full.names:
        if base:
            raise ConfigError("base= gives the parameters that are not audited, but params= selects all of them; "
                              "drop base= or narrow params=")
        return AuditModel(module, full, spec, other=other)
    if not base:
        raise ConfigError(f"params= audits {len(spec.names)} of the model's {len(full.names)} tensors; give base=PATH, "
                          "a checkpoint holding the others")
    return AuditModel(module, full, spec, load_base(base, full, strip_prefix), str(base), other)


@dataclass
class AuditZoo(Zoo):
    """A `Zoo` of the user's checkpoints: the network and the task are objects, not names in our registries."""

    module: nn.Module | None = None
    eval_task: Task | None = None

    def get_task(self) -> Task:
        return self.eval_task

    def build_model(self) -> nn.Module:
        return self.module


def audit_zoo(model: AuditModel, task: Task, params: Tensor, name: str, model_cfg: dict[str, Any], chunk: int = 256,
              device: str | torch.device | None = None, evaluate: bool = True) -> AuditZoo:
    """The training checkpoints as a zoo, evaluated on `task` (accuracy and error masks, as the study's zoos;
    ``evaluate=False``: not yet, all counted as errors)."""
    n = len(params)
    zoo = AuditZoo(task=name, arch=dict(model_cfg), spec=model.spec, params=params,
                   meta={"model_id": list(range(n)), "run": list(range(n))},
                   error_masks=torch.zeros(n, task.n_test, dtype=torch.bool), config={"audit": True},
                   base=model.base if model.is_subset else None, base_spec=model.full_spec if model.is_subset else None,
                   module=model.module, eval_task=task)
    if not evaluate:
        zoo.meta["accuracy"] = [0.0] * n
        return zoo
    acc, masks = zoo.evaluate(zoo.params, chunk=chunk, device=device, task=task)
    zoo.error_masks = masks
    zoo.meta["accuracy"] = acc.tolist()
    return zoo
