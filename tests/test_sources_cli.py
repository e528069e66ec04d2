"""The command line on tar shards and mixed sources: broken members accounted for, two ranks share the work."""

from __future__ import annotations

import csv
import tarfile

import numpy as np
import pyarrow.parquet as pq
import pytest

from tests.conftest import (
    TINY,
    TWO_RANK_ARGS,
    TWO_RANK_ENV,
    precompute_on_two_ranks,
    read_results,
    run_cli,
    torchrun,
    write_colour_dataset,
)
from tests.test_sources import cut_inside_member, saved_hf_dataset, write_dataset_shards


@pytest.fixture(scope="module")
def shard_sets(tmp_path_factory):
    """yfcc: 3 JPEG shards x 12, one member corrupt; cc: 3 PNG shards x 12, the last cut inside sample 6."""
    root = tmp_path_factory.mktemp("shards")
    yfcc = write_dataset_shards(root / "yfcc", (200, 70, 40), n_shards=3, per_shard=12, seed=1, fmt="jpg")
    cc = write_dataset_shards(root / "cc", (40, 70, 200), n_shards=3, per_shard=12, seed=2, fmt="png")
    with tarfile.open(yfcc[1]) as tar:
        info = tar.getmember("000010003.jpg")
    with open(yfcc[1], "r+b") as f:  # keep the JPEG signature, destroy everything after it
        f.seek(info.offset_data + 4)
        f.write(b"\x00" * (info.size - 4))
    cut_inside_member(cc[2], "000020006.png")
    broken = {f"{yfcc[1].resolve()}/000010003.jpg": "corrupt", f"{cc[2].resolve()}/000020006.png": "truncated"}
    return root, broken


def shard_args(root) -> list[str]:
    return ["data=webdataset", "~data.datasets.datacomp",
            f"data.datasets.yfcc.shards='{root}/yfcc/{{00000..00002}}.tar'",
            f"data.datasets.cc.shards='{root}/cc/{{00000..00002}}.tar'"]


def test_classify_on_tar_shards_accounts_for_every_broken_member(shard_sets, tmp_path):
    root, broken = shard_sets
    out = tmp_path / "run"
    run_cli("classify.py", *shard_args(root), "data.per_dataset=20", "data.val_per_dataset=8", f"out={out}",
            f"cache_dir={tmp_path / 'cache'}", *TINY)
    r = read_results(out)
    assert r["datasets"] == ["yfcc", "cc"] and r["n_train"] == 40 and r["n_val"] == 16
    assert np.array(r["confusion"]).sum() == 16
    skipped = {s["path"]: s for s in r["skipped"]}
    assert set(skipped) == set(broken) and r["n_skipped"] == 2
    for path, kind in broken.items():
        assert skipped[path]["stage"] == "index" and skipped[path]["reason"].startswith(kind), skipped[path]
    manifest = pq.read_table(out / "manifest.parquet").to_pylist()
    ids = [m["path"] for m in manifest]
    assert len(ids) == 56 and len(set(ids)) == 56 and not set(broken) & set(ids)
    assert all(p.startswith(str((root / m["dataset"]).resolve())) and ".tar/0000" in p for p, m in zip(ids, manifest))
    with open(out / "predictions.csv") as f:
        preds = list(csv.DictReader(f))
    assert sorted(p["path"] for p in preds) == sorted(m["path"] for m in manifest if m["split"] == "val")


def test_one_run_mixes_a_folder_tar_shards_and_a_hugging_face_dataset(shard_sets, tmp_path):
    root, broken = shard_sets
    write_colour_dataset(tmp_path / "reds", 30, (200, 40, 40), seed=5)
    saved_hf_dataset(tmp_path / "hf", 30, (40, 200, 40), missing=(7,))
    out = tmp_path / "run"
    run_cli("classify.py", "data=mixed", f"data.datasets.yfcc.path={tmp_path / 'reds'}",
            f"data.datasets.cc.shards='{root}/cc/{{00000..00002}}.tar'", f"data.datasets.datacomp.path={tmp_path / 'hf'}",
            "data.datasets.datacomp.image_column=picture", "data.per_dataset=16", "data.val_per_dataset=6",
            f"out={out}", f"cache_dir={tmp_path / 'cache'}", *TINY, "recipe.epochs=1")
    r = read_results(out)
    assert r["datasets"] == ["yfcc", "cc", "datacomp"] and r["n_train"] == 48 and r["n_val"] == 18
    cc_broken, hf_broken = next(p for p in broken if "/cc/" in p), f"hf:{(tmp_path / 'hf').resolve()}/000000007"
    skipped = {s["path"]: s["reason"] for s in r["skipped"]}
    assert set(skipped) == {cc_broken, hf_broken} and skipped[cc_broken].startswith("truncated")
    assert skipped[hf_broken] == "no image in row (None)"
    manifest = pq.read_table(out / "manifest.parquet").to_pylist()
    by_dataset = {name: [m["path"] for m in manifest if m["dataset"] == name] for name in r["datasets"]}
    assert all(p.startswith(str((tmp_path / "reds").resolve())) and p.endswith(".png") for p in by_dataset["yfcc"])
    assert all(".tar/0000" in p for p in by_dataset["cc"])
    assert all(p.startswith("hf:") for p in by_dataset["datacomp"]) and len(set(by_dataset["datacomp"])) == 22


def test_two_ranks_share_precompute_and_evaluation_of_tar_shards_without_gaps(shard_sets, tmp_path):
    root, _ = shard_sets
    args = [*shard_args(root), "data.per_dataset=19", "data.val_per_dataset=11", "transform=canny",
            f"cache_dir={tmp_path / 'c'}", *TWO_RANK_ARGS]
    manifest, parts = precompute_on_two_ranks(args, tmp_path / "c", 29547)
    assert manifest["n_unique"] == 60 and manifest["computed"] == 60 and manifest["reused"] == 0
    assert manifest["failed"] == []
    assert sorted(p["computed"] for p in parts) == [30, 30]  # each rank its own half: 30 + 30 = 60, no overlap
    run_cli("classify.py", *args, f"out={tmp_path / 'r'}", env=TWO_RANK_ENV, launcher=torchrun(29547))
    r = read_results(tmp_path / "r")
    assert r["processes"] == 2 and r["n_val"] == 22 and np.array(r["confusion"]).sum() == 22
    cache = next((tmp_path / "c" / "transforms").iterdir())
    split = pq.read_table(tmp_path / "r" / "manifest.parquet").to_pylist()
    cached = {p.stem for p in cache.rglob("*.png")}
    assert {m["sha1"] for m in split} <= cached and len(cached) == 60  # every sample of the split, nothing more
    with open(tmp_path / "r" / "predictions.csv") as f:
        preds = [row["path"] for row in csv.DictReader(f)]
    assert len(preds) == 22 and set(preds) == {m["path"] for m in split if m["split"] == "val"}


def test_bias_table_draws_its_example_grids_from_tar_shards(shard_sets, tmp_path):
    root, _ = shard_sets
    out = tmp_path / "table"
    run_cli("table.py", *shard_args(root), *TINY, "data.per_dataset=20", "data.val_per_dataset=8", "rows=[mean_rgb]",
            "seeds=[0]", "examples=2",
            f"table_out={out}", f"cache_dir={tmp_path / 'cache'}")
    assert (out / "table.md").exists()
    grid = out / "examples" / "mean_rgb.png"
    from PIL import Image

    assert Image.open(grid).size[0] > 100  # 2 samples x (original, transformed) for yfcc and cc
