"""Packed per-image columns (`bias.core.strings`) and the bounded process-pool map (`bias.core.parallel`)."""

from __future__ import annotations

import hashlib
import os
import pickle

import numpy as np
import pyarrow as pa
import pytest

from bias.core.parallel import parallel_map
from bias.core.strings import SHA1_DTYPE, StringColumn, as_string_column, sha1_array, sha1_to_arrow

WORDS = ["/data/a/0001.jpg", "", "tar:12:345:/d/é 00000.tar", "x" * 300, "b", "/data/a/0001.jpg"]


def test_take_concat_sort_and_arrow_round_trip_match_python_lists():
    col = StringColumn(WORDS)
    rng = np.random.default_rng(0)
    for _ in range(20):
        pos = rng.integers(-len(WORDS), len(WORDS), rng.integers(0, 12))
        assert col[pos].tolist() == [WORDS[i] for i in pos]
    mask = np.array([True, False, True, False, False, True])
    assert col[mask].tolist() == [w for w, m in zip(WORDS, mask) if m]
    assert col[1:5:2].tolist() == WORDS[1:5:2]
    assert StringColumn.concat([col[[3]], col, StringColumn()]).tolist() == [WORDS[3]] + WORDS
    assert [WORDS[i] for i in col.argsort()] == sorted(WORDS)  # UTF-8 byte order == code point order
    back = StringColumn.from_arrow(col.to_arrow())
    assert back == col and back == WORDS and back != WORDS[:-1]
    sliced = pa.chunked_array([pa.array(WORDS[:2]), pa.array(WORDS[2:])]).slice(1)  # offset, several chunks
    assert StringColumn.from_arrow(sliced).tolist() == WORDS[1:]
    assert pickle.loads(pickle.dumps(col)) == col
    with pytest.raises(IndexError):
        col[[len(WORDS)]]
    with pytest.raises(ValueError, match="null"):
        StringColumn.from_arrow(pa.array(["a", None]))


def test_from_arrow_shares_the_arrow_buffers_and_holds_no_objects():
    arr = pa.array([f"/data/{i:07d}.jpg" for i in range(1000)], pa.large_string())
    col = StringColumn.from_arrow(arr)
    assert np.shares_memory(col._data, np.frombuffer(arr.buffers()[2], np.uint8))
    assert col._data.dtype == np.uint8 and col._offsets.dtype == np.int64
    assert as_string_column(col) is col


def test_non_utf8_file_names_round_trip(tmp_path):
    name = os.fsdecode(b"caf\xe9.png")  # Latin-1 bytes: not UTF-8, a surrogate-escaped str in Python
    col = StringColumn([str(tmp_path / name)])
    assert col[0] == str(tmp_path / name) and col[[0]][0] == col[0]


def test_sha1_arrays_are_fixed_width_and_convert_in_bulk():
    digests = [hashlib.sha1(bytes([i])).hexdigest() for i in range(5)] + [""]
    arr = sha1_array(pa.array(digests))
    assert arr.dtype == SHA1_DTYPE and arr.tolist() == [d.encode() for d in digests]
    assert np.array_equal(sha1_array(digests), arr) and sha1_to_arrow(arr).to_pylist() == digests
    assert sha1_to_arrow(sha1_array(["short", ""])).to_pylist() == ["short", ""]
    with pytest.raises(ValueError, match="longer than 40"):
        sha1_array(pa.array(["y" * 41]))


def _square_or_fail(x: int) -> int:
    if x == 13:
        raise ValueError("thirteen")
    return x * x


def test_parallel_map_keeps_order_in_a_pool_and_serially():
    items = list(range(1000))
    assert list(parallel_map(_square_or_fail, [i for i in items if i != 13], 2, chunksize=7)) == \
        [i * i for i in items if i != 13]
    with pytest.raises(ValueError, match="thirteen"):
        list(parallel_map(_square_or_fail, items[:20], 1))
    assert list(parallel_map(_square_or_fail, items[:13], 1)) == [i * i for i in range(13)]
    col = StringColumn(str(i) for i in range(300))
    assert list(parallel_map(len, col, 2, chunksize=16)) == [len(str(i)) for i in range(300)]
    with pytest.raises(ValueError, match="thirteen"):
        list(parallel_map(_square_or_fail, items, 2, chunksize=5))


def _pid(_: object) -> int:
    return os.getpid()


def test_parallel_map_runs_in_worker_processes_only_when_asked():
    assert set(parallel_map(_pid, range(200), 2, chunksize=10)) - {os.getpid()}
    assert set(parallel_map(_pid, range(200), 1)) == {os.getpid()}
    assert set(parallel_map(_pid, range(10), 2)) == {os.getpid()}  # below min_items: not worth a pool


def test_one_registry_serves_transforms_sources_generators_archs_and_tasks():
    from bias.core.registry import Registry, UnknownNameError
    from bias.data.sources import SOURCE_KINDS
    from memorization.generators import list_generators
    from memorization.zoo.archs import ARCHS
    from memorization.zoo.tasks import TASKS
    from transforms.registry import TRANSFORMS, UnknownTransformError

    reg: Registry = Registry("widget", hint="Add one with @WIDGETS.register.")

    @reg.register("knob")
    class Knob:
        def __init__(self, size: int = 1) -> None:
            self.size = size

    assert Knob.name == "knob" and reg.create("knob", size=3).size == 3 and "knob" in reg and reg.names() == ["knob"]
    reg.register("knob")(Knob)  # the same class again is fine
    with pytest.raises(ValueError, match="already registered by"):
        reg.register("knob")(type("Other", (), {}))
    with pytest.raises(UnknownNameError, match=r"unknown widget 'dial'; available: knob\. Add one"):
        reg.get("dial")
    with pytest.raises(TypeError, match="bad parameters for widget 'knob'"):
        reg.create("knob", colour="red")
    assert {"canny", "reference"} <= set(TRANSFORMS.names()) and TRANSFORMS.get("canny").name == "canny"
    with pytest.raises(UnknownTransformError):
        TRANSFORMS.get("nope")
    assert SOURCE_KINDS.names() == ["folder", "hf", "list", "planted", "webdataset"]
    assert SOURCE_KINDS.get("webdataset").kind == "webdataset"
    assert {"copy", "pdiff"} <= set(list_generators())
    assert "mlp" in ARCHS and "mnist1d" in TASKS.names()
