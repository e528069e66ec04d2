"""Many strings in two numpy buffers, for datasets that DataLoader workers share.

A list (or numpy object array) of N path strings is N Python objects. Forked DataLoader workers
touch their reference counts on every access, so each worker gradually copies the pages that
hold them: with millions of samples and 10 workers per GPU this shows up as a "memory leak" of
gigabytes. `StringColumn` keeps all strings as one UTF-8 byte buffer plus int64 offsets, two
numpy arrays without Python objects inside, and builds a `str` only for the item asked for.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np


class StringColumn:
    """An immutable sequence of `str` stored as one UTF-8 buffer and N + 1 offsets."""

    __slots__ = ("_data", "_offsets")

    def __init__(self, strings: Iterable[str]) -> None:
        encoded = [str(s).encode("utf-8") for s in strings]
        lengths = np.fromiter((len(b) for b in encoded), dtype=np.int64, count=len(encoded))
        self._offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum(lengths, out=self._offsets[1:])
        self._data = np.frombuffer(b"".join(encoded), dtype=np.uint8) if encoded else np.zeros(0, np.uint8)

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def __getitem__(self, index: int) -> str:
        n = len(self)
        i = int(index)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"index {index} out of range for {n} strings")
        return self._data[self._offsets[i] : self._offsets[i + 1]].tobytes().decode("utf-8")

    def __iter__(self) -> Iterator[str]:
        return (self[i] for i in range(len(self)))

    @property
    def nbytes(self) -> int:
        return int(self._data.nbytes + self._offsets.nbytes)
