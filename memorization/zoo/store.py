"""A model zoo on disk and in memory: flattened parameters, metadata and per-model test error masks.

A `Zoo` is what weight generators train on and what the metrics compare against:

* ``params``       ``(n_models, P)`` float32, every model flattened in the fixed order of ``spec``;
* ``meta``         a dict of columns, one entry per model: ``model_id``, ``run`` (the independent
                   run a checkpoint came from), ``seed``, ``step``, ``accuracy``, ``loss``,
                   ``regime`` (plus whatever else a builder adds);
* ``error_masks``  ``(n_models, n_test)`` bool, True where the model misclassifies test sample t;
* ``task`` / ``arch`` / ``config``  enough to rebuild the task, the network and the zoo itself;
* ``base``         only for subset zoos (P-diff regime, ``regime="steps"``): the full flattened
                   parameters of the converged base model, in the order of ``base_spec``; ``spec``
                   then names the trained subset and ``params`` holds only those coordinates.

Flatten order (`ParamSpec`): the parameters in ``module.state_dict()`` order (our zoo networks
have no buffers, so that is also ``named_parameters()`` order), each tensor flattened row-major
(``tensor.reshape(-1)``) and concatenated. For ``nn.Linear`` that is weight ``[out, in]`` row by
row, then bias; for ``nn.Conv2d`` weight ``[out, in, kh, kw]``, then bias.

To evaluate parameter vectors of a zoo (trained, generated or perturbed)::

    from memorization.zoo import get_task
    task = get_task(zoo.task, **zoo.task_kwargs)      # the same seeded data and split
    acc, masks = zoo.evaluate(params)                  # (n,), (n, n_test) bool; handles subset zoos
    # or directly, for full-parameter zoos:  task.evaluate(zoo.build_model(), zoo.spec, params)

File format (``.safetensors``, no pickle): tensors ``params`` (float32), ``error_masks_packed``
(uint8, ``numpy.packbits`` along the test axis, big-endian bit order), optional ``base``; the
string metadata holds JSON under ``zoo`` (task, arch, spec, config, config hash, n_test, meta
columns, format version).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

FORMAT_VERSION = 1
META_COLUMNS = ("model_id", "run", "seed", "step", "accuracy", "loss", "regime")


class ZooFileError(ValueError):
    """A zoo file cannot be read; the message says what is wrong and what to do."""


def config_hash(config: Mapping[str, Any]) -> str:
    """A short, order-independent hash of a JSON-able config: equal configs give equal zoos."""
    text = json.dumps(_plain(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


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


def pack_masks(masks: Tensor) -> Tensor:
    """``(n, T)`` bool -> ``(n, ceil(T/8))`` uint8 (numpy.packbits, big-endian bit order)."""
    return torch.from_numpy(np.packbits(masks.cpu().numpy().astype(bool), axis=-1))


def unpack_masks(packed: Tensor, n_test: int) -> Tensor:
    """Inverse of `pack_masks`."""
    return torch.from_numpy(np.unpackbits(packed.cpu().numpy(), axis=-1, count=n_test).astype(bool))


@dataclass
class Zoo:
    """A set of trained networks of one architecture on one task; see the module docstring."""

    task: str
    arch: dict[str, Any]
    spec: ParamSpec
    params: Tensor
    meta: dict[str, list]
    error_masks: Tensor
    config: dict[str, Any] = field(default_factory=dict)
    base: Tensor | None = None
    base_spec: ParamSpec | None = None
    task_kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.params = torch.as_tensor(self.params, dtype=torch.float32)
        self.error_masks = torch.as_tensor(self.error_masks).bool()
        n = self.params.shape[0]
        if self.params.ndim != 2 or self.params.shape[1] != self.spec.numel():
            raise ValueError(f"params must be (n_models, {self.spec.numel()}), got {tuple(self.params.shape)}")
        if self.error_masks.ndim != 2 or self.error_masks.shape[0] != n:
            raise ValueError(f"error_masks must be (n_models={n}, n_test), got {tuple(self.error_masks.shape)}")
        self.meta = {k: list(v.tolist() if hasattr(v, "tolist") else v) for k, v in self.meta.items()}
        bad = {k: len(v) for k, v in self.meta.items() if len(v) != n}
        if bad:
            raise ValueError(f"meta columns must have one entry per model ({n}); got lengths {bad}")
        if (self.base is None) != (self.base_spec is None):
            raise ValueError("a subset zoo needs both base and base_spec (or neither)")
        if self.base is not None:
            self.base = torch.as_tensor(self.base, dtype=torch.float32).reshape(-1)
            if self.base.numel() != self.base_spec.numel():
                raise ValueError(f"base has {self.base.numel()} values, base_spec {self.base_spec.numel()}")
            missing = set(self.spec.names) - set(self.base_spec.names)
            if missing:
                raise ValueError(f"subset parameters {sorted(missing)} are not in base_spec")

    def __len__(self) -> int:
        return int(self.params.shape[0])

    @property
    def n_test(self) -> int:
        return int(self.error_masks.shape[1])

    @property
    def accuracy(self) -> Tensor:
        return torch.tensor(self.meta["accuracy"], dtype=torch.float32)

    @property
    def regime(self) -> str:
        return str(self.config.get("regime", self.meta.get("regime", ["?"])[0]))

    @property
    def hash(self) -> str:
        return config_hash(self.config)

    # -- evaluation --------------------------------------------------------------------------
    def full_params(self, params: Tensor | None = None) -> Tensor:
        """Subset vectors ``(n, P)`` spliced into the base model -> full vectors; full zoos: unchanged."""
        params = self.params if params is None else params
        if self.base is None:
            return params
        full = self.base.to(params.device, params.dtype).expand(params.shape[0], -1).clone()
        offsets, sub = self.base_spec.offsets(), self.spec.offsets()
        for name in self.spec.names:
            a, b = offsets[name]
            c, d = sub[name]
            full[:, a:b] = params[:, c:d]
        return full

    def get_task(self):
        from memorization.zoo.tasks import get_task

        return get_task(self.task, **self.task_kwargs)

    def build_model(self) -> torch.nn.Module:
        from memorization.zoo.archs import build_arch

        task = self.get_task()
        return build_arch(self.arch, task.input_shape, task.num_classes)

    def evaluate(self, params: Tensor, chunk: int = 256, device: str | torch.device | None = None,
                 task=None, with_loss: bool = False) -> tuple[Tensor, Tensor] | tuple[Tensor, Tensor, Tensor]:
        """Test accuracy ``(n,)`` and error masks ``(n, n_test)`` of parameter vectors in this zoo's order.

        ``with_loss=True`` also returns the mean test cross-entropy per model (`Task.evaluate`).
        """
        task = task or self.get_task()
        model = self.build_model()
        spec = self.base_spec if self.base is not None else self.spec
        return task.evaluate(model, spec, self.full_params(params), chunk=chunk, device=device, with_loss=with_loss)

    # -- storage -----------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write atomically to `path` (``.safetensors``)."""
        from safetensors.torch import save_file

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {"params": self.params.detach().cpu().contiguous(),
                   "error_masks_packed": pack_masks(self.error_masks).contiguous()}
        if self.base is not None:
            tensors["base"] = self.base.detach().cpu().contiguous()
        header = {
            "format_version": FORMAT_VERSION, "task": self.task, "task_kwargs": _plain(self.task_kwargs),
            "arch": _plain(self.arch), "spec": self.spec.to_json(), "config": _plain(self.config),
            "config_hash": self.hash, "n_test": self.n_test, "meta": _plain(self.meta),
            "base_spec": self.base_spec.to_json() if self.base_spec is not None else None,
        }
        tmp = path.with_name(path.name + ".tmp")
        save_file(tensors, str(tmp), metadata={"zoo": json.dumps(header)})
        os.replace(tmp, path)
        return path

    @staticmethod
    def read_header(path: str | os.PathLike) -> dict[str, Any]:
        """The JSON header of a zoo file without loading its tensors."""
        from safetensors import safe_open

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no zoo file at {path}; build one with memorization.zoo.build_zoo(...)")
        try:
            with safe_open(str(path), framework="pt") as f:
                metadata = f.metadata() or {}
        except Exception as err:  # safetensors raises its own error types for truncated files
            raise ZooFileError(f"{path} is not a readable safetensors file ({err}); delete it and rebuild") from err
        if "zoo" not in metadata:
            raise ZooFileError(f"{path} is a safetensors file but not a zoo (no 'zoo' metadata)")
        header = json.loads(metadata["zoo"])
        if header.get("format_version") != FORMAT_VERSION:
            raise ZooFileError(f"{path} has zoo format {header.get('format_version')}, this code reads "
                               f"{FORMAT_VERSION}; rebuild the zoo")
        return header

    @classmethod
    def load(cls, path: str | os.PathLike) -> Zoo:
        from safetensors.torch import load_file

        header = cls.read_header(path)
        tensors = load_file(str(path))
        base_spec = ParamSpec.from_json(header["base_spec"]) if header.get("base_spec") else None
        return cls(task=header["task"], arch=header["arch"], spec=ParamSpec.from_json(header["spec"]),
                   params=tensors["params"], meta=header["meta"],
                   error_masks=unpack_masks(tensors["error_masks_packed"], int(header["n_test"])),
                   config=header["config"], base=tensors.get("base"), base_spec=base_spec,
                   task_kwargs=header.get("task_kwargs") or {})

    def subset(self, index: Sequence[int] | Tensor) -> Zoo:
        """A zoo of the models at `index` (same task, spec, base)."""
        idx = torch.as_tensor(index, dtype=torch.long)
        rows = idx.tolist()
        return Zoo(self.task, dict(self.arch), self.spec, self.params[idx], {k: [v[i] for i in rows]
                   for k, v in self.meta.items()}, self.error_masks[idx], dict(self.config), self.base,
                   self.base_spec, dict(self.task_kwargs))
