"""Per-image text columns without per-image Python objects: paths, ids and content hashes.

A list (or numpy object array) of N path strings is N Python objects, about 60 bytes each on top
of the text, created one by one at start-up. Forked DataLoader workers also touch their reference
counts on every access, so each worker gradually copies the pages that hold them: with millions
of samples and 10 workers per GPU this shows up as a "memory leak" of gigabytes.

`StringColumn` keeps all strings as one UTF-8 byte buffer plus int64 offsets (the layout of an
Arrow `large_string` array, and convertible to and from one without copying), so indexes, splits
and datasets hold two numpy arrays, and a `str` is built only for the item asked for. Gathering,
concatenating, sorting and joining run in Arrow's C++ kernels.

File names that are not valid UTF-8 (possible on Linux) round-trip through Python's
`surrogateescape`, as `os.fsencode`/`os.fsdecode` do.

SHA-1 content hashes are fixed width and live in numpy `S40` arrays (40 bytes per image, no
objects; `b""` where a file was unreadable), which sort, compare and `np.isin` natively.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

SHA1_HEX = 40
SHA1_DTYPE = np.dtype(f"S{SHA1_HEX}")


class StringColumn:
    """An immutable sequence of `str` stored as one UTF-8 buffer and N + 1 offsets.

    `column[i]` is a `str`; `column[positions]` (an integer or boolean array, or a slice) is a new
    `StringColumn`. Build one from any iterable of strings (encoded one at a time, so no list of all
    of them is made) or, without copying, from an Arrow string array with `from_arrow`.
    """

    __slots__ = ("_data", "_offsets")
    __hash__ = None  # compared by value, like a list

    def __init__(self, strings: Iterable[str] = ()) -> None:
        data = bytearray()
        ends = array("q")
        for s in strings:
            data += str(s).encode("utf-8", "surrogateescape")
            ends.append(len(data))
        self._offsets = np.zeros(len(ends) + 1, dtype=np.int64)
        self._offsets[1:] = np.frombuffer(ends, dtype=np.int64) if len(ends) else 0
        self._data = np.frombuffer(data, dtype=np.uint8)  # a view of the bytearray: no second copy

    @classmethod
    def _from_buffers(cls, data: np.ndarray, offsets: np.ndarray) -> StringColumn:
        col = cls.__new__(cls)
        col._data, col._offsets = data, offsets
        return col

    @classmethod
    def from_arrow(cls, values: pa.Array | pa.ChunkedArray) -> StringColumn:
        """From an Arrow (large) string array; the text is shared, not copied, for an unchunked array (int32
        offsets are widened to int64). Nulls are refused."""
        if isinstance(values, pa.ChunkedArray):
            values = values.combine_chunks() if values.num_chunks != 1 else values.chunk(0)
        if values.null_count:
            raise ValueError(f"{values.null_count} of {len(values)} strings are null")
        if pa.types.is_string(values.type):  # int32 offsets (parquet's default): widen those, share the text
            width = np.int32
        else:
            if not pa.types.is_large_string(values.type):
                values = values.cast(pa.large_string())
            width = np.int64
        _, offsets_buf, data_buf = values.buffers()
        n = len(values)
        offsets = np.frombuffer(offsets_buf, dtype=width, count=values.offset + n + 1)[values.offset:]
        offsets = offsets.astype(np.int64, copy=False)
        data = np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None else np.zeros(0, np.uint8)
        if n == 0:
            return cls._from_buffers(np.zeros(0, np.uint8), np.zeros(1, np.int64))
        if offsets[0]:
            data, offsets = data[offsets[0]:offsets[-1]], offsets - offsets[0]
        return cls._from_buffers(data, offsets)

    def to_arrow(self) -> pa.LargeStringArray:
        """The same bytes as an Arrow `large_string` array (no copy)."""
        return pa.LargeStringArray.from_buffers(len(self), pa.py_buffer(self._offsets), pa.py_buffer(self._data))

    @classmethod
    def concat(cls, columns: Sequence[StringColumn]) -> StringColumn:
        if not columns:
            return cls()
        data = np.concatenate([c._data for c in columns])
        starts = np.cumsum([0] + [len(c._data) for c in columns[:-1]])
        offsets = np.concatenate([np.zeros(1, np.int64)] + [c._offsets[1:] + s for c, s in zip(columns, starts)])
        return cls._from_buffers(data, offsets)

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, (int, np.integer)):
            n = len(self)
            i = int(index)
            if i < 0:
                i += n
            if not 0 <= i < n:
                raise IndexError(f"index {index} out of range for {n} strings")
            return self._data[self._offsets[i] : self._offsets[i + 1]].tobytes().decode("utf-8", "surrogateescape")
        return self.take(index)

    def take(self, positions: Any) -> StringColumn:
        """The strings at `positions` (integer array, boolean mask or slice), as a new column."""
        if isinstance(positions, slice):
            positions = np.arange(len(self))[positions]
        positions = np.asarray(positions)
        if positions.dtype == bool:
            if len(positions) != len(self):
                raise IndexError(f"boolean mask of length {len(positions)} for {len(self)} strings")
            positions = np.flatnonzero(positions)
        positions = positions.astype(np.int64, copy=False)
        if len(positions) and (positions.min() < -len(self) or positions.max() >= len(self)):
            raise IndexError(f"positions out of range for {len(self)} strings")
        positions = np.where(positions < 0, positions + len(self), positions)
        return StringColumn.from_arrow(self.to_arrow().take(pa.array(positions, pa.int64())))

    def __iter__(self) -> Iterator[str]:
        return (self[i] for i in range(len(self)))

    def tolist(self) -> list[str]:
        return list(self)

    def argsort(self) -> np.ndarray:
        """Positions that sort the strings by their UTF-8 bytes (stable)."""
        return pc.sort_indices(self.to_arrow()).to_numpy()

    def __eq__(self, other: object) -> bool:
        if isinstance(other, StringColumn):
            return (len(self) == len(other) and np.array_equal(self._offsets - self._offsets[0],
                                                               other._offsets - other._offsets[0])
                    and np.array_equal(self._data, other._data))
        if isinstance(other, (list, tuple)):
            return self.tolist() == list(other)
        return NotImplemented

    def __repr__(self) -> str:
        head = ", ".join(repr(s) for s in (self[i] for i in range(min(3, len(self)))))
        return f"StringColumn([{head}{', ...' if len(self) > 3 else ''}], n={len(self)})"

    @property
    def nbytes(self) -> int:
        return int(self._data.nbytes + self._offsets.nbytes)


def decode_codes(codes: np.ndarray, values: Sequence[str]) -> pa.LargeStringArray:
    """``values[codes]`` as an Arrow string array, built in Arrow (few distinct values, many rows)."""
    return pa.DictionaryArray.from_arrays(pa.array(codes, pa.int32()),
                                          pa.array(list(values), pa.large_string())).dictionary_decode()


def join_strings(*parts: Any, sep: str = "") -> StringColumn:
    """Row-wise ``sep.join(parts)``; a part is a `StringColumn`, an Arrow string array, or a `str` for every row."""
    arrays = [p.to_arrow() if isinstance(p, StringColumn) else pa.scalar(p, pa.large_string()) if isinstance(p, str)
              else p.cast(pa.large_string()) for p in parts]
    return StringColumn.from_arrow(pc.binary_join_element_wise(*arrays, pa.scalar(sep, pa.large_string())))


def release_arrow_memory() -> None:
    """Hand memory Arrow's allocator keeps after large transient gathers back to the OS."""
    pa.default_memory_pool().release_unused()


def as_string_column(values: Any) -> StringColumn:
    """A `StringColumn` as is; an Arrow array without copying; anything else (a list of str) encoded."""
    if isinstance(values, StringColumn):
        return values
    if isinstance(values, (pa.Array, pa.ChunkedArray)):
        return StringColumn.from_arrow(values)
    return StringColumn(values)


def sha1_array(values: Any) -> np.ndarray:
    """Hex SHA-1 digests as a numpy `S40` array (`b""` for an empty or missing digest).

    Accepts an Arrow string array (converted in bulk, no per-row objects), an `S40` array, or any
    sequence of `str` (small inputs, e.g. in tests).
    """
    if isinstance(values, np.ndarray) and values.dtype == SHA1_DTYPE:
        return values
    if isinstance(values, (pa.Array, pa.ChunkedArray)):
        col = StringColumn.from_arrow(values.fill_null(""))
        lengths = np.diff(col._offsets)
        if (lengths > SHA1_HEX).any():
            raise ValueError(f"digests longer than {SHA1_HEX} characters, e.g. {col[int(np.argmax(lengths > SHA1_HEX))]!r}")
        out = np.zeros((len(col), SHA1_HEX), dtype=np.uint8)
        if np.all((lengths == 0) | (lengths == SHA1_HEX)):  # real digests: the buffer is the whole rows
            out[lengths == SHA1_HEX] = col._data.reshape(-1, SHA1_HEX)
        else:  # shorter ids (tests, hand-made indexes)
            out[np.arange(SHA1_HEX) < lengths[:, None]] = col._data
        return out.view(SHA1_DTYPE).reshape(len(col))
    return np.array([("" if v is None else str(v)).encode("ascii") for v in values], dtype=SHA1_DTYPE)


def sha1_to_arrow(digests: np.ndarray) -> pa.LargeStringArray:
    """An `S40` array as an Arrow string array (`""` where empty), built in bulk."""
    digests = sha1_array(digests)
    raw = np.ascontiguousarray(digests).view(np.uint8).reshape(len(digests), SHA1_HEX)
    lengths = np.strings.str_len(digests).astype(np.int64)
    offsets = np.zeros(len(digests) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    if np.all((lengths == 0) | (lengths == SHA1_HEX)):  # real digests: whole rows
        data = raw[lengths == SHA1_HEX].reshape(-1)
    else:  # shorter ids (tests, hand-made indexes)
        data = raw[np.arange(SHA1_HEX) < lengths[:, None]]
    return StringColumn._from_buffers(data, offsets).to_arrow()
