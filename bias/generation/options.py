"""The options of the generator's training and sampling, checked by key before any work (`train.steps: ...`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, TypeVar

from bias.core.errors import ConfigError

OptionsT = TypeVar("OptionsT")
PRECISIONS = ("no", "fp16", "bf16")
WORDS = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string"}


def options_from(cls: type[OptionsT], mapping: Mapping[str, Any] | None, prefix: str) -> OptionsT:
    """A dataclass of options from a config mapping: unknown keys and values of the wrong type are a `ConfigError`."""
    values = dict(mapping or {})
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(f"{prefix}.{unknown[0]}: not an option (they are {', '.join(fields)})")
    out = {}
    for name, value in values.items():
        kind = fields[name].type
        if kind == "bool":
            ok = isinstance(value, bool)
        elif kind == "int":
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif kind == "float":
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            value = float(value) if ok else value
        else:
            ok = isinstance(value, str)
        if not ok:
            raise ConfigError(f"{prefix}.{name}: expected {WORDS.get(kind, kind)}, got {value!r}")
        out[name] = value
    options = cls(**out)
    problem = options.problem() if hasattr(options, "problem") else None
    if problem:
        raise ConfigError(f"{prefix}.{problem}")
    return options


@dataclasses.dataclass(frozen=True)
class TrainOptions:
    """How one DiT is trained (published: DiT's recipe, 275k steps)."""

    steps: int = 275_000
    batch_size: int = 256         # global, split evenly across processes
    lr: float = 1e-4              # AdamW, constant
    weight_decay: float = 0.0
    ema_decay: float = 0.9999     # the EMA of the weights is what samples
    flip: bool = True             # random horizontal flips
    precision: str = "no"         # accelerate mixed precision: no, fp16, bf16
    checkpoint_every: int = 5000  # and at the last step
    log_every: int = 100          # TensorBoard loss points
    grid_every: int = 25_000      # a sample grid of the EMA model every this many steps (0: at the last step only)
    grid_size: int = 16           # images per grid

    def problem(self) -> str | None:
        for name in ("steps", "batch_size", "checkpoint_every", "log_every", "grid_size"):
            if getattr(self, name) < 1:
                return f"{name}: expected a positive integer, got {getattr(self, name)}"
        if self.grid_every < 0:
            return f"grid_every: expected 0 or a positive integer, got {self.grid_every}"
        if not 0.0 <= self.ema_decay < 1.0:
            return f"ema_decay: expected a number in [0, 1), got {self.ema_decay}"
        if self.lr <= 0 or self.weight_decay < 0:
            return "lr: must be > 0" if self.lr <= 0 else "weight_decay: must be >= 0"
        if self.precision not in PRECISIONS:
            return f"precision: expected one of {', '.join(PRECISIONS)}, got {self.precision!r}"
        return None


@dataclasses.dataclass(frozen=True)
class SampleOptions:
    """How the samples that are classified are drawn."""

    n: int = 11_000        # samples per dataset
    steps: int = 250       # DDPM steps (published 250)
    batch_size: int = 64
    use_ema: bool = True   # sample the EMA weights (DiT's practice) rather than the last ones

    def problem(self) -> str | None:
        for name in ("n", "steps", "batch_size"):
            if getattr(self, name) < 1:
                return f"{name}: expected a positive integer, got {getattr(self, name)}"
        return None
