"""The columnar folder listing and the vectorised reuse of a stored index give the same index as before."""

from __future__ import annotations

import os

import numpy as np

import bias.data.index
from bias.core.strings import SHA1_DTYPE, StringColumn
from bias.data.index import FileIndex, Listing, build_index, index_listing, list_image_files


def _folder(tmp_path):
    root = tmp_path / "data"
    (root / "b" / "deep").mkdir(parents=True)
    (root / "a").mkdir()
    (root / "dir.jpg").mkdir()  # a folder named like an image is listed (and reported)
    files = {"a/2.png": b"", "a/10.png": b"not an image", "b/deep/x.jpg": b"\xff\xd8\xff" + b"\x00" * 40,
             "z.txt": b"ignored", "._a.jpg": b"apple double"}
    from PIL import Image

    Image.new("RGB", (8, 6), (200, 10, 10)).save(root / "b" / "ok.png")
    for name, data in files.items():
        (root / name).write_bytes(data)
    return root


def test_listing_is_sorted_columns_with_the_tuple_semantics(tmp_path):
    root = _folder(tmp_path)
    listing = list_image_files(root)
    assert isinstance(listing, Listing) and isinstance(listing.paths, StringColumn)
    names = [os.path.relpath(p, root) for p, _, _ in listing]
    assert names == ["a/10.png", "a/2.png", "b/deep/x.jpg", "b/ok.png", "dir.jpg"]
    sizes = dict(zip(names, listing.size.tolist()))
    assert sizes["a/10.png"] == 12 and sizes["dir.jpg"] == 0
    assert listing.mtime_ns[names.index("b/ok.png")] == (root / "b" / "ok.png").stat().st_mtime_ns


def test_reused_index_equals_a_fresh_one_and_rechecks_only_changed_files(tmp_path, monkeypatch):
    root = _folder(tmp_path)
    first = build_index(root, tmp_path / "cache", num_workers=1)
    assert first.ok.tolist() == [False, False, False, True, False]
    calls = []
    real = bias.data.index.check_image_with_sha1
    monkeypatch.setattr(bias.data.index, "check_image_with_sha1", lambda p: calls.append(p) or real(p))
    again = build_index(root, tmp_path / "cache", num_workers=1)
    assert calls == []
    for col in ("ok", "sha1", "size", "mtime_ns"):
        assert np.array_equal(getattr(again, col), getattr(first, col)), col
    assert again.paths == first.paths and again.reason == first.reason
    _assert_packed(again)
    # change one file's content and time, remove another: only the changed one is checked again
    (root / "a" / "10.png").write_bytes((root / "b" / "ok.png").read_bytes())
    os.utime(root / "a" / "10.png", ns=(1, 1))
    (root / "a" / "2.png").unlink()
    third = build_index(root, tmp_path / "cache", num_workers=1)
    assert [os.path.relpath(p, root) for p in calls] == ["a/10.png"]
    assert [os.path.relpath(p, root) for p in third.paths] == ["a/10.png", "b/deep/x.jpg", "b/ok.png", "dir.jpg"]
    assert third.ok.tolist() == [True, False, True, False]
    assert third.sha1[0] == third.sha1[2] != b""
    assert third.reason[0] == "" and third.reason[1] != ""
    _assert_packed(third)
    # stat-ing a list of paths (list files) gives the same index as the folder scan
    store = tmp_path / "cache2" / "x.parquet"
    from_paths = index_listing(str(root), Listing.from_paths(list_image_files(root).paths), store, num_workers=1)
    assert from_paths.paths == third.paths and from_paths.reason == third.reason
    assert np.array_equal(from_paths.ok, third.ok) and np.array_equal(from_paths.sha1, third.sha1)
    # the stored table reads back to the same columns
    back = FileIndex.from_table(from_paths.to_table(), str(root))
    assert back.paths == third.paths and back.reason == third.reason and np.array_equal(back.sha1, third.sha1)


def _assert_packed(index):
    """No per-file Python objects: packed text columns and a fixed-width digest array."""
    assert isinstance(index.paths, StringColumn) and isinstance(index.reason, StringColumn)
    assert index.sha1.dtype == SHA1_DTYPE
    for col in (index.ok, index.size, index.mtime_ns):
        assert col.dtype != object


def test_checking_in_worker_processes_gives_the_serial_index(tmp_path):
    from PIL import Image

    root = tmp_path / "many"
    root.mkdir()
    for i in range(90):
        if i % 9 == 4:
            (root / f"{i:03d}.png").write_bytes(b"broken" * i)
        else:
            Image.new("RGB", (4, 4), (i, 2 * i, 0)).save(root / f"{i:03d}.png")
    serial = build_index(root, tmp_path / "c1", num_workers=1)
    pooled = build_index(root, tmp_path / "c2", num_workers=2)
    assert pooled.paths == serial.paths and pooled.reason == serial.reason
    assert np.array_equal(pooled.ok, serial.ok) and np.array_equal(pooled.sha1, serial.sha1)
    assert serial.n_ok == 80 and len(serial.broken()) == 10
