"""The columnar folder listing and the vectorised reuse of a stored index give the same index as before."""

from __future__ import annotations

import os

import numpy as np

import bias.index
from bias.index import Listing, build_index, index_listing, list_image_files


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
    assert isinstance(listing, Listing) and listing.paths.dtype == object
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
    real = bias.index.check_image_with_sha1
    monkeypatch.setattr(bias.index, "check_image_with_sha1", lambda p: calls.append(p) or real(p))
    again = build_index(root, tmp_path / "cache", num_workers=1)
    assert calls == []
    for col in ("paths", "ok", "reason", "sha1", "size", "mtime_ns"):
        assert np.array_equal(getattr(again, col), getattr(first, col)), col
    assert again.reason.dtype == object and isinstance(again.reason[0], str)
    # change one file's content and time, remove another: only the changed one is checked again
    (root / "a" / "10.png").write_bytes((root / "b" / "ok.png").read_bytes())
    os.utime(root / "a" / "10.png", ns=(1, 1))
    (root / "a" / "2.png").unlink()
    third = build_index(root, tmp_path / "cache", num_workers=1)
    assert [os.path.relpath(p, root) for p in calls] == ["a/10.png"]
    assert [os.path.relpath(p, root) for p in third.paths] == ["a/10.png", "b/deep/x.jpg", "b/ok.png", "dir.jpg"]
    assert third.ok.tolist() == [True, False, True, False]
    assert third.sha1[0] == third.sha1[2] != ""
    # a plain list of tuples (other listings, e.g. list files) gives the same index as the columns
    store = tmp_path / "cache2" / "x.parquet"
    from_tuples = index_listing(str(root), list(list_image_files(root)), store, num_workers=1)
    for col in ("paths", "ok", "reason", "sha1"):
        assert np.array_equal(getattr(from_tuples, col), getattr(third, col)), col
