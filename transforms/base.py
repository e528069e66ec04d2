"""What every transform is.

A transform keeps one kind of information of an image. It acts at one of two places:

* `kind = "precomputed"`: `apply_image` runs once per image offline (see
  `transforms.cache`), its output is cached as an image file, and the classifier trains on the
  cache with the normal pipeline. Expensive transforms (edges, HOG, neural models) live here.
* `kind = "online"`: the transform runs inside the data pipeline, either on the decoded image
  before augmentation (`apply_image`, e.g. mean RGB) or on the augmented tensor
  (`apply_tensor`, e.g. frequency filters and shuffles).

`augment_group` names the published augmentation group the classifier uses with it:
"a" (crop, flip, RandAugment, normalisation), "b" (crop, flip), "c" (crop only). The recipe
defines what each group contains.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

FAMILIES = ("reference", "semantic", "structural", "spatial", "colour", "frequency")


class Transform:
    name: ClassVar[str] = ""
    kind: ClassVar[str] = "online"
    augment_group: ClassVar[str] = "a"
    family: ClassVar[str] = "reference"
    #: "image": the classifier sees an image; "vector": `apply_image` returns a 1-D feature
    #: vector of length `vector_size()`, classified by a small MLP (`model=mlp`).
    output: ClassVar[str] = "image"
    #: Whether `apply_image` / `apply_tensor` change anything; the pipeline skips the no-ops.
    has_image_stage: ClassVar[bool] = False
    has_tensor_stage: ClassVar[bool] = False
    #: Version of the algorithm; bump it when outputs change so caches are recomputed.
    version: ClassVar[int] = 1

    def params(self) -> dict[str, Any]:
        """Constructor parameters, as stored in the run directory and hashed for the cache."""
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}

    def cache_key(self) -> str:
        """Identifies the output of a precomputed transform: name, version and parameters."""
        blob = json.dumps({"name": self.name, "version": self.version, "params": self.params()}, sort_keys=True)
        return f"{self.name}-{hashlib.sha1(blob.encode()).hexdigest()[:10]}"

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

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({args})"
