"""The flatten order of a zoo network's parameters (`ParamSpec`), and JSON-able config copies.

The lowest module of `memorization.zoo`: architectures, tasks and the store all build on it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor


def _plain(obj: Any) -> Any:
    """JSON-able copy: tuples -> lists, numpy scalars -> Python, OmegaConf containers -> dicts."""
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if hasattr(obj, "_content") and hasattr(obj, "items"):  # DictConfig without importing omegaconf
        return {str(k): _plain(v) for k, v in obj.items()}
    return obj


@dataclass
class ParamSpec:
    """Names and shapes of the parameters of one network, in the fixed flatten order."""

    names: list[str]
    shapes: list[tuple[int, ...]]

    def __post_init__(self) -> None:
        self.names = [str(n) for n in self.names]
        self.shapes = [tuple(int(s) for s in shape) for shape in self.shapes]
        if len(self.names) != len(self.shapes):
            raise ValueError(f"ParamSpec: {len(self.names)} names but {len(self.shapes)} shapes")
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"ParamSpec: duplicate parameter names in {self.names}")

    @classmethod
    def from_module(cls, module: torch.nn.Module, names: Sequence[str] | None = None) -> ParamSpec:
        """The spec of `module`'s state dict, or of the subset `names` (kept in state-dict order)."""
        state = module.state_dict()
        if names is not None:
            unknown = sorted(set(names) - set(state))
            if unknown:
                raise KeyError(f"parameters {unknown} are not in the model; it has {list(state)}")
            wanted = set(names)
            state = {k: v for k, v in state.items() if k in wanted}
        return cls(list(state), [tuple(v.shape) for v in state.values()])

    def sizes(self) -> list[int]:
        return [math.prod(s) for s in self.shapes]

    def numel(self) -> int:
        return sum(self.sizes())

    def offsets(self) -> dict[str, tuple[int, int]]:
        """``name -> (start, stop)`` of each parameter in the flat vector."""
        out, start = {}, 0
        for name, size in zip(self.names, self.sizes()):
            out[name] = (start, start + size)
            start += size
        return out

    def unflatten(self, flat: Tensor) -> dict[str, Tensor]:
        """``(..., P)`` -> ``{name: (..., *shape)}`` (views where possible)."""
        if flat.shape[-1] != self.numel():
            raise ValueError(f"expected flat parameters with last dimension {self.numel()}, got {tuple(flat.shape)}")
        batch = flat.shape[:-1]
        parts = torch.split(flat, self.sizes(), dim=-1)
        return {n: p.reshape(*batch, *s) for n, p, s in zip(self.names, parts, self.shapes)}

    def flatten(self, params: Mapping[str, Tensor]) -> Tensor:
        """Inverse of `unflatten`: ``{name: (..., *shape)}`` -> ``(..., P)``."""
        missing = [n for n in self.names if n not in params]
        if missing:
            raise KeyError(f"flatten: missing parameters {missing}")
        first, shape0 = params[self.names[0]], self.shapes[0]
        batch = first.shape[: first.ndim - len(shape0)]
        pieces = []
        for n, s in zip(self.names, self.shapes):
            p = params[n]
            if tuple(p.shape[len(batch):]) != s:
                raise ValueError(f"flatten: {n} has shape {tuple(p.shape)}, expected (..., {s})")
            pieces.append(p.reshape(*batch, -1))
        return torch.cat(pieces, dim=-1)

    def to_json(self) -> dict[str, Any]:
        return {"names": self.names, "shapes": [list(s) for s in self.shapes]}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ParamSpec:
        return cls(list(data["names"]), [tuple(s) for s in data["shapes"]])
