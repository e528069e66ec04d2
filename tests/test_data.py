"""Dataset naming, seeded balanced splits, duplicate reports, the file index."""

import numpy as np
import pytest

from bias.core.strings import StringColumn, sha1_array
from bias.data.index import FileIndex, build_index
from bias.data.split import (
    DataConfigError,
    check_folders,
    duplicate_keys_in_overrides,
    duplicate_report,
    make_split,
    parse_dataset_paths,
)


def fake_index(name: str, n: int, broken: int = 0, shared: tuple[str, ...] = ()) -> FileIndex:
    paths = StringColumn(f"/{name}/{i:04d}.png" for i in range(n))
    ok = np.ones(n, dtype=bool)
    ok[:broken] = False
    sha = [f"{name}-{i}" for i in range(n)]
    for i, h in enumerate(shared):
        sha[broken + i] = h
    reason = StringColumn("" if good else "truncated image" for good in ok)
    return FileIndex(f"/{name}", paths, ok, reason, sha1_array(sha), np.zeros(n, np.int64), np.zeros(n, np.int64))


def test_parse_paths_accepts_mapping_and_list_and_rejects_mistakes():
    assert parse_dataset_paths({"a": "/x", "b": "/y"}) == {"a": "/x", "b": "/y"}
    assert parse_dataset_paths(["a=/x", "b=/y"]) == {"a": "/x", "b": "/y"}
    with pytest.raises(DataConfigError, match="duplicate dataset names"):
        parse_dataset_paths(["a=/x", "a=/y"])
    with pytest.raises(DataConfigError, match="two or more"):
        parse_dataset_paths({"a": "/x"})
    with pytest.raises(DataConfigError, match="not set"):
        parse_dataset_paths(None)
    with pytest.raises(DataConfigError, match="may only use"):
        parse_dataset_paths({"a b": "/x", "c": "/y"})


def test_duplicate_names_in_command_line_dict_are_caught_before_hydra_merges_them():
    assert duplicate_keys_in_overrides(["data.paths={a: /x, b: /y}"]) == []
    assert duplicate_keys_in_overrides(["transform=canny", "data.paths={a: /x, b: /y, a: /z}"]) == ["a"]


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(DataConfigError, match="does not exist"):
        check_folders({"a": str(tmp_path), "b": str(tmp_path / "nope")})


def test_split_is_balanced_disjoint_seeded_and_avoids_broken_files():
    indexes = {"a": fake_index("a", 50, broken=5), "b": fake_index("b", 40)}
    s1 = make_split(indexes, per_dataset=20, val_per_dataset=10, seed=3)
    s2 = make_split(indexes, per_dataset=20, val_per_dataset=10, seed=3)
    s3 = make_split(indexes, per_dataset=20, val_per_dataset=10, seed=4)
    assert s1.train_paths == s2.train_paths and s1.val_paths == s2.val_paths
    assert s1.val_paths != s3.val_paths
    assert np.bincount(s1.train_labels).tolist() == [20, 20]
    assert np.bincount(s1.val_labels).tolist() == [10, 10]
    assert not set(s1.train_paths) & set(s1.val_paths)
    broken = {f"/a/{i:04d}.png" for i in range(5)}
    assert not broken & (set(s1.train_paths) | set(s1.val_paths))
    # dataset b's draw does not depend on dataset a
    other = make_split({"z": fake_index("z", 70), "b": fake_index("b", 40)}, 20, 10, seed=3)
    assert other.val_paths[other.val_labels == 1] == s1.val_paths[s1.val_labels == 1]


def test_split_errors_name_the_numbers():
    indexes = {"a": fake_index("a", 30), "b": fake_index("b", 30)}
    with pytest.raises(DataConfigError, match="has 30 usable images"):
        make_split(indexes, per_dataset=10, val_per_dataset=25, seed=0)
    with pytest.raises(DataConfigError, match="no usable images"):
        make_split({"a": fake_index("a", 3, broken=3), "b": fake_index("b", 30)}, 1, 1, seed=0)


def test_duplicate_report_counts_train_val_and_cross_dataset_copies():
    indexes = {"a": fake_index("a", 30, shared=("same",) * 30), "b": fake_index("b", 30, shared=("same",))}
    split = make_split(indexes, per_dataset=10, val_per_dataset=5, seed=0)
    report = duplicate_report(split)
    assert report["train_val"] == 5  # every val image of a has a byte-identical copy in train
    assert report["across_datasets"] == 1
    assert report["within_train"] >= 9
    assert report["across_datasets_hashes"] == ["same"]
    for ex in report["train_val_examples"]:  # each example names a real copy
        t = split.train_paths.tolist().index(ex["train"])
        v = split.val_paths.tolist().index(ex["val"])
        assert split.train_sha1[t] == split.val_sha1[v] == b"same"
    without = split.without_train(report["_train_positions_in_val"])
    assert not set(without.train_sha1) & set(without.val_sha1)


def test_index_checks_each_file_once_and_reuses_the_stored_index(tmp_path, monkeypatch):
    from tests.image_factory import write_tricky_images

    folder = tmp_path / "data"
    folder.mkdir()
    expected = write_tricky_images(folder)
    index = build_index(folder, tmp_path / "cache", num_workers=1)
    found = {p.split("/")[-1]: bool(ok) for p, ok in zip(index.paths, index.ok)}
    for name, reason in expected.items():
        assert found[name] == (reason is None), name
    assert {r["path"].split("/")[-1] for r in index.broken()} == {n for n, r in expected.items() if r is not None}

    calls = []
    import bias.data.index

    real = bias.data.index.check_image_with_sha1
    monkeypatch.setattr(bias.data.index, "check_image_with_sha1", lambda p: calls.append(p) or real(p))
    again = build_index(folder, tmp_path / "cache", num_workers=1)
    assert calls == [] and np.array_equal(again.ok, index.ok)
    (folder / "new.png").write_bytes((folder / next(n for n, r in expected.items() if n.endswith(".png") and r is None)).read_bytes())
    build_index(folder, tmp_path / "cache", num_workers=1)
    assert [p.split("/")[-1] for p in calls] == ["new.png"]


def test_duplicate_report_equals_a_brute_force_count_on_random_hashes():
    rng = np.random.default_rng(5)
    for trial in range(5):
        indexes = {name: FileIndex(f"/{name}", StringColumn(f"/{name}/{i}" for i in range(60)), np.ones(60, bool),
                                   StringColumn([""] * 60), sha1_array([f"h{v}" for v in rng.integers(0, 90, 60)]),
                                   np.zeros(60, np.int64), np.zeros(60, np.int64)) for name in ("a", "b", "c")}
        split = make_split(indexes, per_dataset=40, val_per_dataset=15, seed=trial)
        report = duplicate_report(split, examples=1000)
        train = list(zip(split.train_sha1.tolist(), split.train_labels.tolist()))
        val = list(zip(split.val_sha1.tolist(), split.val_labels.tolist()))
        train_hashes = {h for h, _ in train}
        assert report["train_val"] == sum(h in train_hashes for h, _ in val)
        labels: dict[bytes, set[int]] = {}
        for h, lab in train + val:
            labels.setdefault(h, set()).add(lab)
        across = sorted(h.decode() for h, labs in labels.items() if len(labs) > 1)
        assert report["across_datasets"] == len(across) and report["across_datasets_hashes"] == across
        assert report["within_train"] == len(train) - len(train_hashes)
        assert report["_train_positions_in_val"].tolist() == [
            i for i, (h, _) in enumerate(train) if h in {v for v, _ in val}]
