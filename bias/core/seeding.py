"""Seeds derived from a run seed: every random choice is reproducible and independent of the others."""

from __future__ import annotations

import zlib

import numpy as np


def item_seed(seed: int, salt: int, epoch: int, index: int) -> int:
    """A 63-bit seed for one sample in one epoch, well mixed by numpy's SeedSequence."""
    return int(np.random.SeedSequence([seed, salt, epoch, index]).generate_state(2, np.uint32).view(np.uint64)[0] >> 1)


def derive_seed(seed: int, tag: str) -> int:
    """A 31-bit seed for one named random choice of a run (stable across versions and platforms)."""
    state = np.random.SeedSequence([int(seed), zlib.crc32(tag.encode())]).generate_state(1, dtype=np.uint32)
    return int(state[0] >> 1)
