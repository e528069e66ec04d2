"""Model transforms without weights: the real architecture from a small config, with random weights.

Every model transform of this package takes `arch` (a dict of model-config keyword arguments, default
None) beside `weights`. With `weights: null` it builds its real model class from `arch` with random
weights: for tests and throughput benchmarks, never for measurements (the outputs mean nothing). The
weights are drawn from a fixed seed, so every process and every rerun builds the same model: the cache
key of such a run (`{"random_init": True}` plus the parameters, `arch` among them) names one output.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import torch

from bias.core.errors import ConfigError

#: the seed of every randomly initialised model
RANDOM_INIT_SEED = 0

M = TypeVar("M")


def check_weights_or_arch(name: str, weights: Any, arch: Mapping[str, Any] | None,
                          arch_with_weights: bool = False) -> None:
    """Exactly one of `weights` (real weights) and `arch` (random weights from this config) is set.

    `arch_with_weights`: a model whose checkpoint carries no config (a bare state dict) may take both,
    `arch` then describing the architecture the checkpoint was trained with.
    """
    if arch is not None and not isinstance(arch, Mapping):
        raise ConfigError(f"transform ({name}): arch must be a mapping of model-config arguments, got {arch!r}")
    if weights is None and arch is None:
        raise ConfigError(f"transform ({name}): weights is null but no arch is given; set transform.weights (the "
                          "published model) or transform.arch={...} (random weights of that architecture, for tests "
                          "and benchmarks only)")
    if weights is not None and arch is not None and not arch_with_weights:
        raise ConfigError(f"transform ({name}): set either weights (a trained model) or arch (random weights of that "
                          "architecture), not both; add transform.weights=null to use arch")


def seeded(build: Callable[[], M]) -> M:
    """`build()` with torch's CPU generator seeded by `RANDOM_INIT_SEED`, leaving the global state as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_INIT_SEED)
        return build()
