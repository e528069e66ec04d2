"""What every transform is.

A transform keeps one kind of information of an image. It acts at one of two places:

* `kind = "precomputed"`: the transform runs once per distinct image, through the batched runner
  of `bias.inference.runner`, and its outputs are stored in the content-addressed cache
  (`bias.inference.store`); the classifier then trains on the stored image with the normal
  pipeline. Expensive transforms (edges, HOG, neural models) live here.
* `kind = "online"`: the transform runs inside the data pipeline, either on the decoded image
  before augmentation (`apply_image`, e.g. mean RGB) or on the augmented tensor
  (`apply_tensor`, e.g. frequency filters and shuffles).

`augment_group` names the published augmentation group the classifier uses with it:
"a" (crop, flip, RandAugment, normalisation), "b" (crop, flip), "c" (crop only). The recipe
defines what each group contains.

Parameters are the constructor's arguments, read back from attributes of the same name
(scikit-learn's `get_params` convention): they are what a run records and what the cache key
hashes. State that is not a parameter (a loaded model, a fixed permutation) lives in attributes
starting with `_`, so it can never leak into a key.

The runner's contract for a precomputed transform (`bias.inference.runner.BatchModel`):

    load(device, dtype)      heavy state, once per process (a model's weights); classical: nothing
    preprocess(image)        CPU, in DataLoader worker processes; classical transforms do all their work here
                             (`preprocess(image, sha1=...)` when the class sets `preprocess_takes_sha1`)
    collate(items)           items -> one batch (default: a list; model transforms stack tensors)
    forward(batch)           the model, under inference mode and autocast (GPU: fp16/bf16, CPU: fp32)
    postprocess(out, batch)  -> one {output name: value} per item: "image", and any declared side output
    unload()                 free the heavy state before training starts
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from bias.inference.models import weight_source
from bias.inference.runner import resolve_device
from bias.inference.store import IMAGE, OutputSpec, OutputStore

FAMILIES = ("reference", "semantic", "structural", "spatial", "colour", "frequency")


class Transform:
    name: ClassVar[str] = ""
    kind: ClassVar[str] = "online"
    augment_group: ClassVar[str] = "a"
    family: ClassVar[str] = "reference"
    #: How the classifier frames an image output. "scene" (default): the augmentation group's crops and
    #: flips, as for a photograph. "whole": the output is a chart in which every position means something (a
    #: colour distribution sorted into rows, a histogram's bars), so a crop would cut part of it and a flip
    #: would reorder it; training, evaluation and the probes all see it whole, resized to the recipe's
    #: image size (`classifiers.augment.whole_view`), whatever the recipe or group.
    view: ClassVar[str] = "scene"
    #: "image": the classifier sees an image; "vector": `apply_image` returns a 1-D feature
    #: vector of length `vector_size()`, classified by a small MLP (`model=mlp`); "text": a precomputed
    #: transform whose first text output (e.g. a caption) is read back from the cache and classified by a
    #: text model (`model=minilm_probe`, `recipe=sentence_t5`; `bias.experiment.text`).
    output: ClassVar[str] = "image"
    #: For the documentation's transform table (docs/transforms.md is generated from the registry): what
    #: information the output keeps, and the published parameters (or ours, where we depart from them).
    keeps: ClassVar[str] = ""
    published: ClassVar[str] = ""
    #: Whether `apply_image` / `apply_tensor` change anything; the pipeline skips the no-ops.
    has_image_stage: ClassVar[bool] = False
    has_tensor_stage: ClassVar[bool] = False
    #: Version of the algorithm; bump it when outputs change so caches are recomputed.
    version: ClassVar[int] = 1
    #: What a precomputed transform stores per image: its image, and side outputs (text, tables,
    #: vectors) that `describe/` reads from the same cache entry.
    outputs: ClassVar[Mapping[str, OutputSpec]] = {"image": IMAGE}
    #: Constructor arguments that change how, not what, is computed: left out of the cache key.
    runtime_params: ClassVar[tuple[str, ...]] = ()
    #: Items per batch in the runner (classical transforms: per DataLoader hand-over).
    batch_size: int = 32
    #: True: the runner calls `preprocess(image, sha1=...)` with the SHA-1 of the source's bytes, for
    #: transforms keyed by content (a per-image seed, another transform's stored output of that source).
    preprocess_takes_sha1: ClassVar[bool] = False

    # --- parameters --------------------------------------------------------------------------------
    @classmethod
    def param_names(cls) -> list[str]:
        """The constructor's named arguments, in order."""
        sig = inspect.signature(cls.__init__)
        return [p.name for p in list(sig.parameters.values())[1:]
                if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]

    def get_params(self) -> dict[str, Any]:
        """Constructor parameters by name, as recorded in a run and hashed into the cache key."""
        missing = [n for n in self.param_names() if not hasattr(self, n)]
        if missing:
            raise AttributeError(f"{type(self).__name__} must store its constructor arguments {missing} as attributes "
                                 "of the same name (get_params reads them back)")
        return {n: getattr(self, n) for n in self.param_names()}

    def model_identity(self) -> dict[str, Any] | None:
        """What identifies a model transform's weights (Hugging Face id + revision, or a sha256); None without weights."""
        return None

    def cache_dtype(self) -> str | None:
        """The dtype the outputs are computed in, part of the cache key (None: no model)."""
        return None

    def preprocessing(self) -> dict[str, Any] | None:
        """How a model transform feeds its network (the checkpoint's own preprocessing, or the overrides used);
        None without a model."""
        return None

    def manifest(self) -> dict[str, Any]:
        """What a precompute run records in its store's ``manifest.json``: version, parameters, the weights'
        identity (hub weights: the commit loaded), dtype and the preprocessing used."""
        return {"version": self.version, "params": self.get_params(), "model": self.model_identity(),
                "dtype": self.cache_dtype(), "preprocessing": self.preprocessing()}

    def output_params(self) -> dict[str, Any]:
        """The parameters that can change the outputs (the cache key's): `get_params` less `runtime_params`.
        A transform with modes that ignore some parameters narrows this further."""
        return {k: v for k, v in self.get_params().items() if k not in self.runtime_params}

    def cache_key(self) -> str:
        """Identifies the outputs of a precomputed transform: name, version, parameters, weights and dtype."""
        params = self.output_params()
        blob = json.dumps({"name": self.name, "version": self.version, "params": params,
                           "model": self.model_identity(), "dtype": self.cache_dtype()}, sort_keys=True, default=str)
        return f"{self.name}-{hashlib.sha1(blob.encode()).hexdigest()[:10]}"

    # --- online and per-image stages ----------------------------------------------------------------
    def setup(self, *, seed: int, image_size: int, run_dir: Path | None) -> None:
        """Prepare state that depends on the run (a seeded permutation, say).

        Called identically on every process, so state must derive from `seed` alone; only
        the process that passes `run_dir` writes it there.
        """

    def apply_image(self, image: np.ndarray) -> np.ndarray:
        """HxWx3 uint8 RGB in, HxWx3 (or HxW) uint8 out."""
        return image

    def vector_size(self) -> int:
        raise NotImplementedError(f"transform {self.name!r} outputs images, not vectors")

    def apply_tensor(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """CxHxW float tensor (after the group's normalisation) in and out.

        `generator` is seeded per sample and epoch, so random transforms are reproducible.
        """
        return x

    def check_sources(self, sources: Mapping[str, Any]) -> None:
        """Fail before any work if the transform cannot work on these data sources (name -> `Source`);
        called by `validate`. Most transforms take any images."""

    def check_ready(self, cache_root: str | os.PathLike = "cache") -> None:
        """Fail before any work if something the transform needs is missing (a model's weights).

        Raises `bias.core.errors.MissingModelError` naming what to download and where; called by
        `validate` before indexing, precompute or training start.
        """

    # --- the runner's contract (precomputed transforms) --------------------------------------------
    def load(self, device: torch.device, dtype: torch.dtype) -> None:
        """Create heavy state (model weights) once per process; keep it in `_` attributes."""

    def unload(self) -> None:
        """Free the heavy state (the runner calls this before training starts)."""

    def runtime_device(self) -> str:
        """'cpu', 'cuda' or 'auto' (a GPU when there is one); classical transforms run on the CPU."""
        return "cpu"

    def runtime_dtype(self, device: torch.device) -> torch.dtype:
        return torch.float32

    def preprocess(self, image: np.ndarray) -> Any:
        """CPU work per decoded image, in DataLoader workers; a classical transform computes its output here."""
        return self.apply_image(image)

    def collate(self, items: Sequence[Any]) -> Any:
        return list(items)

    def forward(self, batch: Any) -> Any:
        """The model on a batch (on the runner's device); classical transforms pass the batch through."""
        return batch

    def postprocess(self, outputs: Any, batch: Any) -> list[dict[str, Any]]:
        """One {output name: value} per item; the image output is an HxW or HxWx3 uint8 array."""
        return [{"image": np.ascontiguousarray(o)} for o in outputs]

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"


def output_store(transform: Transform, cache_root: str | os.PathLike, resize_shorter: int | None) -> OutputStore:
    """The store of a precomputed transform's outputs: `<cache>/transforms/<cache key>-<size tag>/`."""
    tag = f"s{resize_shorter}" if resize_shorter else "orig"
    return OutputStore(Path(cache_root) / "transforms" / f"{transform.cache_key()}-{tag}", transform.outputs)


DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class ModelTransform(Transform):
    """A precomputed transform that runs a neural network through `bias.inference.runner`.

    A subclass takes its own parameters plus these (all in its constructor, stored by name):

        weights      where the weights come from: a catalogue name (`bias.inference.models`) or a
                     `bias.inference.weights.WeightSource` (a Hugging Face id + revision, a local
                     path, a URL + sha256, or a file inside an installed package); part of the
                     cache key through its identity (hub weights: the commit loaded)
        batch_size   images per forward (halved automatically on CUDA out-of-memory)
        device       "auto" (the process's GPU if there is one, else the CPU), "cpu", "cuda", "cuda:1"
        dtype        "auto" (bf16 on GPUs that support it, else fp16; fp32 on the CPU), or
                     "float32", "float16", "bfloat16"; part of the cache key

    and implements `load_model(device, dtype)` (build the network, load `self.weight_path()`),
    `preprocess(image)` (CPU, in DataLoader workers: decoded HxWx3 uint8 -> a tensor) and
    `postprocess(outputs, batch)` (-> one {output name: value} per item). `forward` calls the
    model on the collated batch; override it for models with other inputs.
    """

    kind = "precomputed"
    runtime_params = ("batch_size", "device")

    def __init__(self, weights: Any = None, batch_size: int = 16, device: str = "auto", dtype: str = "auto") -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"{self.name}: batch_size must be a positive integer, got {batch_size!r}")
        if dtype != "auto" and dtype not in DTYPES:
            raise ValueError(f"{self.name}: dtype must be 'auto' or one of {sorted(DTYPES)}, got {dtype!r}")
        self.weights, self.batch_size, self.device, self.dtype = weights, batch_size, str(device), dtype
        self._model: torch.nn.Module | None = None
        self._source: Any = None

    # --- weights ------------------------------------------------------------------------------------
    def weight_source(self) -> Any:
        """The `WeightSource` of `weights` (None: the architecture runs with random weights, for tests)."""
        if self.weights is None:
            return None
        if self._source is None:
            self._source = weight_source(self.weights)
        return self._source

    def weight_path(self, cache_root: str | os.PathLike = "cache") -> Path | None:
        source = self.weight_source()
        return None if source is None else source.resolve(cache_root)

    def model_identity(self) -> dict[str, Any] | None:
        """The weights' identity (hub weights: the commit of the snapshot loaded), which stands for `weights` in
        the cache key: the same file named by a catalogue name or spelled out gives the same key."""
        source = self.weight_source()
        return {"random_init": True} if source is None else source.identity()

    def output_params(self) -> dict[str, Any]:
        params = super().output_params()
        if self.weights is not None:
            params.pop("weights", None)
        return params

    def check_ready(self, cache_root: str | os.PathLike = "cache") -> None:
        self.weight_path(cache_root)  # resolves (and verifies) the weights, or raises MissingModelError

    # --- device and dtype -------------------------------------------------------------------------------
    def runtime_device(self) -> str:
        return self.device

    def runtime_dtype(self, device: torch.device) -> torch.dtype:
        if self.dtype != "auto":
            return DTYPES[self.dtype]
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32

    def cache_dtype(self) -> str:
        return str(self.runtime_dtype(resolve_device(self.device))).removeprefix("torch.")

    # --- the runner's contract ----------------------------------------------------------------------------
    def load_model(self, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
        raise NotImplementedError(f"{type(self).__name__} must implement load_model(device, dtype)")

    def load(self, device: torch.device, dtype: torch.dtype) -> None:
        if self._model is None:
            self._model = self.load_model(device, dtype).to(device).eval()

    def unload(self) -> None:
        self._model = None

    @property
    def model(self) -> torch.nn.Module:
        if self._model is None:
            raise RuntimeError(f"{self.name}: the model is not loaded (the runner calls load() first)")
        return self._model

    def collate(self, items: Sequence[Any]) -> Any:
        return torch.stack(list(items))

    def forward(self, batch: Any) -> Any:
        return self.model(batch)
