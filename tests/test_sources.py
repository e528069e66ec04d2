"""Data sources beside folders: webdataset shards, Hugging Face datasets, path lists, and mixing them."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before `datasets` is imported: a hub id fails fast, no retries

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from PIL import Image

from bias.core.strings import StringColumn
from bias.data.images import ImageDecodeError
from bias.data.index import build_index
from bias.data.sources import load_image, parse_sources
from bias.data.sources import webdataset as wds
from bias.data.sources.webdataset import build_shard_index, expand_braces, index_shard, read_member
from bias.data.split import DataConfigError, make_split

# ----------------------------------------------------------------------------------------------------
# helpers (also used by test_sources_cli.py)


def image_array(colour: tuple[int, int, int], seed: int, size: int = 32) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = np.clip(np.array(colour) + rng.normal(0, 20, (size, size, 3)), 0, 255).astype(np.uint8)
    y, x = rng.integers(0, size - 10, 2)
    img[y:y + 8, x:x + 8] = 255 - img[y:y + 8, x:x + 8]
    return img


def encode(img: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format={"jpg": "JPEG", "png": "PNG", "webp": "WEBP"}[fmt],
                              **({"quality": 95} if fmt == "jpg" else {"lossless": True} if fmt == "webp" else {}))
    return buf.getvalue()


def write_shard(path: Path, samples: list[tuple[str, dict[str, bytes]]]) -> Path:
    """A tar shard member by member, in the given order (as img2dataset: image, caption, json)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for key, members in samples:
            for ext, data in members.items():
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size, info.mtime = len(data), 1_700_000_000
                tar.addfile(info, io.BytesIO(data))
    return path


def img2dataset_sample(key: str, img: np.ndarray, fmt: str = "jpg") -> tuple[str, dict[str, bytes]]:
    meta = {"url": f"https://example.com/{key}.{fmt}", "key": key, "status": "success", "caption": f"image {key}",
            "width": int(img.shape[1]), "height": int(img.shape[0]), "error_message": None}
    return key, {fmt: encode(img, fmt), "txt": f"image {key}".encode(), "json": json.dumps(meta).encode()}


def write_dataset_shards(folder: Path, colour: tuple[int, int, int], n_shards: int, per_shard: int, seed: int,
                         fmt: str = "png") -> list[Path]:
    """img2dataset-style shards 00000.tar ...: keys {shard:05d}{i:04d}, 32-px images of one colour."""
    out = []
    for s in range(n_shards):
        samples = [img2dataset_sample(f"{s:05d}{i:04d}", image_array(colour, seed * 1000 + s * 100 + i), fmt)
                   for i in range(per_shard)]
        out.append(write_shard(folder / f"{s:05d}.tar", samples))
    return out


def cut_inside_member(shard: Path, member: str) -> int:
    """Truncate `shard` halfway through `member`'s data; returns the new size."""
    with tarfile.open(shard) as tar:
        info = tar.getmember(member)
    size = info.offset_data + info.size // 2
    os.truncate(shard, size)
    return size


def decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


# ----------------------------------------------------------------------------------------------------
# brace expansion


@pytest.mark.parametrize(
    "pattern, expected",
    [
        ("/d/{00000..00002}.tar", ["/d/00000.tar", "/d/00001.tar", "/d/00002.tar"]),
        ("/d/{8..10}.tar", ["/d/8.tar", "/d/9.tar", "/d/10.tar"]),
        ("/d/{08..10}.tar", ["/d/08.tar", "/d/09.tar", "/d/10.tar"]),
        ("/d/{0..6..3}.tar", ["/d/0.tar", "/d/3.tar", "/d/6.tar"]),
        ("/d/{2..0}.tar", ["/d/2.tar", "/d/1.tar", "/d/0.tar"]),
        ("/{cc,yfcc}/{0..1}.tar", ["/cc/0.tar", "/cc/1.tar", "/yfcc/0.tar", "/yfcc/1.tar"]),
        ("/d/{a,b{1,2}}.tar", ["/d/a.tar", "/d/b1.tar", "/d/b2.tar"]),
        ("/d/{x}.tar", ["/d/{x}.tar"]),  # no comma, no range: literal, as in bash
        ("/d/plain.tar", ["/d/plain.tar"]),
        ("/d/{0000..0999}.tar", [f"/d/{i:04d}.tar" for i in range(1000)]),
    ],
)
def test_brace_expansion(pattern, expected):
    assert expand_braces(pattern) == expected


# ----------------------------------------------------------------------------------------------------
# indexing shards


def test_shard_index_records_every_sample_with_offsets_hashes_and_reasons(tmp_path):
    imgs = [image_array((200, 50, 50), i) for i in range(4)]
    good = [img2dataset_sample(f"{i:09d}", img, fmt) for i, (img, fmt) in enumerate(zip(imgs, ["jpg", "png", "webp", "png"]))]
    corrupt = ("000000004", {"jpg": encode(imgs[0], "jpg")[:20] + b"\0" * 400, "json": b"{}"})
    no_image = ("000000005", {"txt": b"caption only", "json": b'{"status": "failed_to_download"}'})
    shard = write_shard(tmp_path / "00000.tar", good + [corrupt, no_image])
    table = index_shard(str(shard)).to_pylist()
    assert [r["member"] for r in table] == ["000000000.jpg", "000000001.png", "000000002.webp", "000000003.png",
                                            "000000004.jpg", "000000005"]
    assert [r["ok"] for r in table] == [True, True, True, True, False, False]
    assert table[4]["reason"] and "no image member" in table[5]["reason"]
    assert table[0]["caption"] == "image 000000000" and table[0]["url"] == "https://example.com/000000000.jpg"
    raw = shard.read_bytes()
    for row, (_, members) in zip(table[:4], good):
        data = next(v for k, v in members.items() if k in ("jpg", "png", "webp"))
        assert raw[row["offset"]:row["offset"] + row["size"]] == data
        assert row["sha1"] == hashlib.sha1(data).hexdigest()
    # lossless members decode to exactly the pixels written
    for i in (1, 2, 3):
        locator = wds.member_locator(str(shard), table[i]["offset"], table[i]["size"])
        assert np.array_equal(load_image(locator), imgs[i])
    with pytest.raises(ImageDecodeError):
        load_image(wds.member_locator(str(shard), table[4]["offset"], table[4]["size"]))


def test_truncated_and_corrupt_shards_list_what_is_lost(tmp_path):
    samples = [img2dataset_sample(f"{i:04d}", image_array((10, 200, 10), i), "png") for i in range(5)]
    cut = write_shard(tmp_path / "cut.tar", samples)
    cut_inside_member(cut, "0002.png")
    rows = index_shard(str(cut)).to_pylist()
    assert [r["member"] for r in rows] == ["0000.png", "0001.png", "0002.png"]
    assert [r["ok"] for r in rows] == [True, True, False]
    assert rows[2]["reason"].startswith("truncated (shard ends inside this member")

    header_cut = write_shard(tmp_path / "header.tar", samples)
    with tarfile.open(header_cut) as tar:
        start = tar.getmember("0003.png").offset  # the header block of sample 3's image
    os.truncate(header_cut, start + 100)
    rows = index_shard(str(header_cut)).to_pylist()
    assert [r["ok"] for r in rows] == [True, True, True, False]
    assert rows[-1]["member"] == f"<byte {start}>" and "ends inside a member header" in rows[-1]["reason"]

    garbage = write_shard(tmp_path / "garbage.tar", samples)
    with open(garbage, "r+b") as f:
        f.seek(start)
        f.write(b"\xff" * 512)
    rows = index_shard(str(garbage)).to_pylist()
    assert [r["ok"] for r in rows] == [True, True, True, False]
    assert "corrupt tar header" in rows[-1]["reason"]

    (tmp_path / "empty.tar").write_bytes(b"")
    (tmp_path / "text.tar").write_bytes(b"hello, not a tar" * 100)
    assert index_shard(str(tmp_path / "empty.tar")).to_pylist()[0]["reason"] == "empty shard (0 bytes)"
    assert index_shard(str(tmp_path / "text.tar")).to_pylist()[0]["reason"].startswith("not a tar archive")


def test_shard_index_is_stored_and_only_changed_shards_are_read_again(tmp_path, monkeypatch):
    shards = write_dataset_shards(tmp_path / "cc", (50, 50, 200), n_shards=3, per_shard=4, seed=1)
    calls: list[str] = []
    real = wds.index_shard
    monkeypatch.setattr(wds, "index_shard", lambda p: calls.append(Path(p).name) or real(p))
    pattern = str(tmp_path / "cc" / "{00000..00002}.tar")
    index = build_shard_index(wds.expand_shards(pattern), tmp_path / "cache", num_workers=1)
    assert calls == ["00000.tar", "00001.tar", "00002.tar"] and len(index) == 12 and index.n_ok == 12
    again = build_shard_index(wds.expand_shards(pattern), tmp_path / "cache", num_workers=1)
    assert calls == ["00000.tar", "00001.tar", "00002.tar"]
    assert np.array_equal(again.sha1, index.sha1) and np.array_equal(again.offset, index.offset)
    write_shard(shards[1], [img2dataset_sample("000019999", image_array((1, 2, 3), 9), "png")])
    changed = build_shard_index(wds.expand_shards(pattern), tmp_path / "cache", num_workers=1)
    assert calls[3:] == ["00001.tar"] and len(changed) == 9
    ids = changed.sample_ids(np.arange(len(changed)))
    assert ids[4] == f"{shards[1]}/000019999.png" and len(set(ids)) == 9
    # the Arrow-built columns equal the scalar definitions, also for a shuffled subset
    pos = np.array([8, 0, 4, 4, 2])
    assert changed.read_paths(pos).tolist() == [
        wds.member_locator(changed.shards[changed.shard[i]], changed.offset[i], changed.size[i]) for i in pos]
    assert changed.sample_ids(pos).tolist() == [f"{changed.labels[changed.shard[i]]}/{changed.member[i]}" for i in pos]
    assert changed.sha1.dtype == np.dtype("S40") and isinstance(changed.member, StringColumn)
    with pytest.raises(FileNotFoundError, match="1 of 4 shards do not exist"):
        build_shard_index(wds.expand_shards(str(tmp_path / "cc" / "{00000..00003}.tar")), tmp_path / "cache")


def test_random_access_reads_keep_few_descriptors_and_survive_a_changed_shard(tmp_path, monkeypatch):
    shards = write_dataset_shards(tmp_path / "d", (120, 120, 0), n_shards=3, per_shard=5, seed=2)
    index = build_shard_index([str(s) for s in shards], tmp_path / "cache", num_workers=1)
    monkeypatch.setattr(wds, "MAX_OPEN_SHARDS", 2)
    order = np.random.default_rng(0).permutation(len(index))
    raw = {str(s): s.read_bytes() for s in shards}
    for i in order:
        shard, offset, size = index.shards[index.shard[i]], index.offset[i], index.size[i]
        assert read_member(shard, offset, size) == raw[shard][offset:offset + size]
        assert len(wds._handles) <= 2
    last = int(np.flatnonzero(index.shard == 2)[-1])
    os.truncate(shards[2], int(index.offset[last]) + 10)
    with pytest.raises(ImageDecodeError, match="changed after indexing"):
        read_member(index.shards[2], int(index.offset[last]), int(index.size[last]))


def test_dataloader_workers_read_shards_like_the_main_process(tmp_path):
    import torch
    from torch.utils.data import DataLoader

    from classifiers.data import SEED_SALT_VAL, EpochSampler, ImageDataset, collate

    shards = write_dataset_shards(tmp_path / "d", (0, 90, 180), n_shards=2, per_shard=6, seed=3, fmt="png")
    index = build_shard_index([str(s) for s in shards], tmp_path / "cache", num_workers=1)
    pos = index.usable()

    def to_tensor(img):
        return torch.from_numpy(np.asarray(img, dtype=np.float32)).permute(2, 0, 1) / 255

    ds = ImageDataset(index.read_paths(pos), np.zeros(len(pos), int), to_tensor, None, 0, SEED_SALT_VAL, 32,
                      report_paths=index.sample_ids(pos))
    batches = {}
    for workers in (0, 2):
        loader = DataLoader(ds, batch_size=4, sampler=EpochSampler(len(ds), 0, shuffle=True), num_workers=workers,
                            collate_fn=collate)
        got = [(b["index"], b["image"], b["ok"]) for b in loader]
        idx = torch.cat([g[0] for g in got])
        assert sorted(idx.tolist()) == list(range(12)) and all(bool(g[2].all()) for g in got)
        batches[workers] = torch.cat([g[1] for g in got])[torch.argsort(idx)]
    assert torch.equal(batches[0], batches[2])
    assert torch.equal(batches[0][7], to_tensor(image_array((0, 90, 180), 3 * 1000 + 100 + 1)))


def test_splits_over_mixed_sources_are_seeded_disjoint_and_skip_broken_samples(tmp_path):
    from tests.conftest import write_colour_dataset

    shards = write_dataset_shards(tmp_path / "cc", (50, 50, 200), n_shards=3, per_shard=10, seed=1)
    cut_inside_member(shards[2], "000020005.png")  # samples 5..9 of the last shard are lost, 5 is listed
    write_colour_dataset(tmp_path / "yfcc", 30, (200, 50, 50), seed=4)
    sources = parse_sources({"yfcc": {"kind": "folder", "path": str(tmp_path / "yfcc")},
                             "cc": {"kind": "webdataset", "shards": str(tmp_path / "cc" / "{00000..00002}.tar")}})
    indexes = {name: src.index(tmp_path / "cache", 1) for name, src in sources.items()}
    assert len(indexes["cc"]) == 26 and indexes["cc"].n_ok == 25
    assert [b["path"] for b in indexes["cc"].broken()] == [f"{shards[2].resolve()}/000020005.png"]
    s1 = make_split(indexes, per_dataset=15, val_per_dataset=8, seed=5)
    s2 = make_split(indexes, per_dataset=15, val_per_dataset=8, seed=5)
    s3 = make_split(indexes, per_dataset=15, val_per_dataset=8, seed=6)
    assert s1.val_paths == s2.val_paths and s1.train_read == s2.train_read
    assert s1.val_paths != s3.val_paths
    assert np.bincount(s1.train_labels).tolist() == [15, 15] and np.bincount(s1.val_labels).tolist() == [8, 8]
    ids = list(s1.train_paths) + list(s1.val_paths)
    assert len(set(ids)) == len(ids) and f"{shards[2].resolve()}/000020005.png" not in ids
    cc_val = s1.val_read[s1.val_labels == 1]
    assert all(r.startswith("tar:") for r in cc_val)
    assert all(r == p for r, p in zip(s1.val_read[s1.val_labels == 0], s1.val_paths[s1.val_labels == 0]))
    # what is read is what was indexed: the content hash of every cc sample's bytes matches
    for read, sha in zip(s1.train_read[s1.train_labels == 1], s1.train_sha1[s1.train_labels == 1]):
        assert hashlib.sha1(read_member(*_unpack(read))).hexdigest().encode() == sha
    manifest = s1.manifest().to_pylist()
    assert len(manifest) == 46 and {m["dataset"] for m in manifest} == {"yfcc", "cc"}


def _unpack(locator: str) -> tuple[str, int, int]:
    return wds.parse_locator(locator)


# ----------------------------------------------------------------------------------------------------
# Hugging Face datasets


def saved_hf_dataset(folder: Path, n: int, colour: tuple[int, int, int], missing: tuple[int, ...] = ()) -> list:
    import datasets

    imgs = [image_array(colour, 50 + i) for i in range(n)]
    cells = [None if i in missing else {"bytes": encode(img, "png"), "path": None} for i, img in enumerate(imgs)]
    ds = datasets.Dataset.from_dict({"picture": cells, "idx": list(range(n))},
                                    features=datasets.Features({"picture": datasets.Image(),
                                                                "idx": datasets.Value("int64")}))
    ds.save_to_disk(str(folder))
    return imgs


def test_hf_saved_dataset_is_copied_once_indexed_and_every_sample_is_its_own_row(tmp_path, monkeypatch):
    from bias.data.sources.hf import HFSource

    imgs = saved_hf_dataset(tmp_path / "ds", 12, (30, 160, 90), missing=(4,))
    src = parse_sources({"a": {"kind": "hf", "path": str(tmp_path / "ds"), "image_column": "picture"},
                         "b": {"kind": "hf", "path": str(tmp_path / "ds"), "image_column": "picture",
                               "max_items": 5, "seed": 1}})
    index = src["a"].index(tmp_path / "cache", 1)
    assert len(index) == 12 and index.n_ok == 11
    assert index.broken() == [{"path": f"hf:{(tmp_path / 'ds').resolve()}/000000004", "reason": "no image in row (None)",
                               "stage": "index"}]
    pos = index.usable()
    for sid, read in zip(index.sample_ids(pos), index.read_paths(pos)):
        row = int(sid.rsplit("/", 1)[1].split(".")[0])
        assert sid.endswith(".png") and np.array_equal(load_image(read), imgs[row])
    # the copy is reused: nothing is read from the dataset again
    monkeypatch.setattr(HFSource, "rows", lambda self, c: (_ for _ in ()).throw(AssertionError("copied again")))
    again = src["a"].index(tmp_path / "cache", 1)
    assert np.array_equal(again.sha1, index.sha1)
    monkeypatch.undo()
    # a seeded sample of rows: the same seed gives the same rows, another seed others
    def rows_of(source) -> list[int]:
        return sorted(int(i.rsplit("/", 1)[1][:9]) for i in source.index(tmp_path / "cache", 1).sample_ids(np.arange(5)))

    first = rows_of(src["b"])
    assert len(set(first)) == 5 and first == rows_of(src["b"])
    other = parse_sources({"b": {"kind": "hf", "path": str(tmp_path / "ds"), "image_column": "picture",
                                 "max_items": 5, "seed": 2}, "x": {"kind": "folder", "path": str(tmp_path)}})["b"]
    assert rows_of(other) != first


def test_hf_bytes_and_path_columns_streaming_and_clear_errors(tmp_path, monkeypatch):
    import datasets

    # `datasets` waits 5 s after each stream (an arrow thread-shutdown workaround); tiny files need far less
    monkeypatch.setattr(datasets.config, "SLEEP_TIME_ON_THREADS_SHUTDOWN", 0.2)

    imgs = [image_array((90, 20, 160), 70 + i) for i in range(10)]
    (tmp_path / "files").mkdir()
    for i, img in enumerate(imgs):
        (tmp_path / "files" / f"{i}.png").write_bytes(encode(img, "png"))
    table = pa.table({"raw": [encode(img, "png") for img in imgs], "file": [f"{i}.png" for i in range(10)]})
    table = table.set_column(1, "file", pa.array([f"{i}.png" if i != 3 else "gone.png" for i in range(10)]))
    pq.write_table(table, tmp_path / "rows.parquet")
    src = parse_sources({
        "raw": {"kind": "hf", "path": str(tmp_path / "rows.parquet"), "image_column": "raw"},
        "files": {"kind": "hf", "path": str(tmp_path / "rows.parquet"), "image_column": "file",
                  "image_root": str(tmp_path / "files")},
        "stream": {"kind": "hf", "path": str(tmp_path / "rows.parquet"), "image_column": "raw", "streaming": True,
                   "max_items": 6, "seed": 3, "buffer_size": 4},
    })
    cache = tmp_path / "cache"
    raw = src["raw"].index(cache, 1)
    assert raw.n_ok == 10
    files = src["files"].index(cache, 1)
    assert files.n_ok == 9 and "unreadable image path 'gone.png'" in files.broken()[0]["reason"]
    stream = src["stream"].index(cache, 1)
    ids = list(stream.sample_ids(np.arange(len(stream))))
    assert len(stream) == 6 and ids == [f"hf:{(tmp_path / 'rows.parquet').resolve()}/{i:09d}.png" for i in range(6)]
    originals = {hashlib.sha1(encode(img, "png")).hexdigest() for img in imgs}
    assert {h.decode() for h in stream.sha1} <= originals and len(set(stream.sha1)) == 6
    import shutil

    shutil.rmtree(cache / "sources")  # the same seed draws the same stream sample again
    assert np.array_equal(src["stream"].index(cache, 1).sha1, stream.sha1)

    with pytest.raises(DataConfigError, match="streaming needs max_items"):
        parse_sources({"s": {"kind": "hf", "path": str(tmp_path / "rows.parquet"), "streaming": True},
                       "t": {"kind": "hf", "path": "x/y"}})["s"].check()
    with pytest.raises(DataConfigError, match="no column 'image'"):
        parse_sources({"s": {"kind": "hf", "path": str(tmp_path / "rows.parquet")},
                       "t": {"kind": "hf", "path": "x/y"}})["s"].index(cache, 1)
    assert datasets.config.HF_HUB_OFFLINE
    with pytest.raises(DataConfigError, match="could not load Hugging Face dataset 'nobody/no-such-set'.*network"):
        parse_sources({"s": {"kind": "hf", "path": "nobody/no-such-set"},
                       "t": {"kind": "hf", "path": "x/y"}})["s"].index(cache, 1)


# ----------------------------------------------------------------------------------------------------
# lists of paths


def test_one_list_holds_several_datasets_with_relative_paths_and_reports_missing_files(tmp_path):
    from tests.conftest import write_colour_dataset

    write_colour_dataset(tmp_path / "imgs" / "r", 6, (200, 0, 0), seed=1)
    write_colour_dataset(tmp_path / "imgs" / "b", 6, (0, 0, 200), seed=2)
    (tmp_path / "imgs" / "b" / "005.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    rows = [{"path": f"imgs/r/{i:03d}.png", "dataset": "reds"} for i in range(6)]
    rows += [{"path": f"imgs/b/{i:03d}.png", "dataset": "blues"} for i in range(6)]
    rows += [{"path": "imgs/b/missing.png", "dataset": "blues"}, {"path": str(tmp_path / "imgs/r/000.png"),
                                                                 "dataset": "reds"}]
    table = pa.Table.from_pylist(rows)
    pq.write_table(table, tmp_path / "all.parquet")
    pacsv.write_csv(table, tmp_path / "all.csv")
    for f in ("all.parquet", "all.csv"):
        spec = {"kind": "list", "file": str(tmp_path / f), "dataset_column": "dataset"}
        src = parse_sources({"reds": spec, "blues": spec})
        reds, blues = (src[n].index(tmp_path / f"cache-{f}", 1) for n in ("reds", "blues"))
        assert len(reds) == 6 and reds.n_ok == 6  # the absolute and the relative path of 000.png are one file
        assert len(blues) == 7 and blues.n_ok == 5
        broken = {b["path"].rsplit("/", 1)[1]: b["reason"] for b in blues.broken()}
        assert set(broken) == {"005.png", "missing.png"} and broken["005.png"]
        assert broken["missing.png"] == "unreadable (file not found or broken link)"
        assert all(p.startswith(str(tmp_path / "imgs" / "b")) for p in blues.paths)
    with pytest.raises(DataConfigError, match="has no column 'file'"):
        parse_sources({"a": {"kind": "list", "file": str(tmp_path / "all.csv"), "path_column": "file"},
                       "b": {"kind": "list", "file": str(tmp_path / "all.csv")}})["a"].index(tmp_path / "c", 1)
    with pytest.raises(DataConfigError, match=r"no rows of all.csv have dataset == 'greens'.*\['blues', 'reds'\]"):
        parse_sources({"greens": {"kind": "list", "file": str(tmp_path / "all.csv"), "dataset_column": "dataset"},
                       "b": {"kind": "list", "file": str(tmp_path / "all.csv")}})["greens"].index(tmp_path / "c", 1)


# ----------------------------------------------------------------------------------------------------
# configuration


def test_dataset_entries_are_checked_before_any_work(tmp_path):
    with pytest.raises(DataConfigError, match="kind is 'nope'"):
        parse_sources({"a": {"kind": "nope"}, "b": {"kind": "folder", "path": "/x"}})
    with pytest.raises(DataConfigError, match=r"unknown keys \['shard'\].*\['shards'\]"):
        parse_sources({"a": {"kind": "webdataset", "shard": "/x"}, "b": {"kind": "folder", "path": "/x"}})
    with pytest.raises(DataConfigError, match=r"data.datasets.a.shards is not set.*~data.datasets.a"):
        parse_sources({"a": {"kind": "webdataset", "shards": "???"}, "b": {"kind": "folder", "path": "/x"}})
    with pytest.raises(DataConfigError, match="two or more"):
        parse_sources({"a": {"kind": "folder", "path": "/x"}})
    src = parse_sources({"a": {"kind": "webdataset", "shards": str(tmp_path / "{0..2}.tar")},
                         "b": {"kind": "folder", "path": str(tmp_path)}})
    (tmp_path / "0.tar").write_bytes(b"")
    with pytest.raises(DataConfigError, match="2 of 3 shards do not exist"):
        src["a"].check()


def compose(overrides: list[str]):
    from bias.configs import CONFIG_DIR
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        return hydra_compose(config_name="classify", overrides=overrides)


def test_configs_name_what_is_missing(tmp_path):
    from bias.experiment.run import validate

    write_dataset_shards(tmp_path / "cc", (1, 2, 3), 2, 2, seed=0)
    cfg = compose(["data=webdataset", f"data.datasets.cc.shards='{tmp_path}/cc/{{00000..00001}}.tar'"])
    with pytest.raises(DataConfigError, match=r"data.datasets.yfcc.shards is not set.*~data.datasets.yfcc"):
        validate(cfg)
    cfg = compose(["data=webdataset", f"data.datasets.cc.shards='{tmp_path}/cc/{{00000..00002}}.tar'",
                   f"data.datasets.yfcc.shards='{tmp_path}/cc/00000.tar'", "~data.datasets.datacomp"])
    with pytest.raises(DataConfigError, match="1 of 3 shards do not exist"):
        validate(cfg)
    with pytest.raises(DataConfigError, match="data.list_file is not set"):
        validate(compose(["data=list"]))
    with pytest.raises(DataConfigError, match="data.datasets.yfcc.path is not set"):
        validate(compose(["data=mixed"]))


def test_folder_index_and_folder_source_agree(tmp_path):
    from tests.conftest import write_colour_dataset

    write_colour_dataset(tmp_path / "f", 5, (1, 2, 3), seed=0)
    a = build_index(tmp_path / "f", tmp_path / "c1", num_workers=1)
    b = parse_sources({"f": {"kind": "folder", "path": str(tmp_path / "f")},
                       "g": {"kind": "folder", "path": str(tmp_path)}})["f"].index(tmp_path / "c2", 1)
    assert a.paths == b.paths and np.array_equal(a.sha1, b.sha1)
    assert b.read_paths(np.arange(5)) == b.sample_ids(np.arange(5))
