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
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from bias.core.errors import DataError
from memorization.zoo.archs import build_arch
from memorization.zoo.spec import ParamSpec, _plain
from memorization.zoo.tasks import get_task

FORMAT_VERSION = 1
META_COLUMNS = ("model_id", "run", "seed", "step", "accuracy", "loss", "regime")


class ZooFileError(DataError):
    """A zoo file cannot be read; the message says what is wrong and what to do."""


def config_hash(config: Mapping[str, Any]) -> str:
    """A short, order-independent hash of a JSON-able config: equal configs give equal zoos."""
    text = json.dumps(_plain(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


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
        return get_task(self.task, **self.task_kwargs)

    def build_model(self) -> torch.nn.Module:
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
