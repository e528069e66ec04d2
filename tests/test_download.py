"""URL sampling from CC/DataComp/YFCC-like metadata and the real img2dataset against a local server.

The server (127.0.0.1, a free port, in a thread) serves tiny generated images, a few images whose
shorter side exceeds 500, HTML pages and corrupt bytes under image names, and 404s. Expected
samples are recomputed here from the whole metadata with plain numpy/pyarrow/sqlite3. The
downloaded shards are then classified (tiny model), with the near-duplicate report on: one CC image
has a resized, recompressed copy in DataComp.
"""

from __future__ import annotations

import io
import json
import sqlite3
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from bias.data.download import (
    DownloadConfigError,
    create_reader,
    find_img2dataset,
    rows_digest,
    sample_rows,
    write_url_sample,
)
from tests.conftest import TINY, read_results, run_cli
from tests.test_dedup import natural, recompressed

SEED = 42
N_ROWS = 150  # metadata rows per dataset (YFCC: photos; videos come on top)
N_URLS = 100  # sampled per dataset
LARGE_SIZES = [(700, 520), (540, 900), (1000, 510)]  # (width, height): shorter side > 500
MEDIUM_SIZE = (620, 480)  # shorter side 480: must keep its size


def _jpeg(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def _png(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "PNG")
    return buf.getvalue()


def _smooth(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """A gradient image (compresses well, decodes to its exact size)."""
    y, x = np.mgrid[0:h, 0:w]
    c = rng.integers(0, 255, 3)
    img = np.stack([(x * 255 // max(w - 1, 1) + c[0]) % 256, (y * 255 // max(h - 1, 1) + c[1]) % 256,
                    np.full((h, w), c[2])], axis=-1)
    return img.astype(np.uint8)


class Resources:
    """What each URL path serves: (status, content type, body, original size or None)."""

    def __init__(self) -> None:
        self.items: dict[str, tuple[int, str, bytes, tuple[int, int] | None]] = {}

    def add(self, path: str, status: int, ctype: str, body: bytes, size: tuple[int, int] | None) -> str:
        self.items[path] = (status, ctype, body, size)
        return path


def _make_resources(prefix: str, n: int, rng: np.random.Generator, res: Resources) -> list[tuple[str, str]]:
    """`n` (path, kind) entries: mostly small images, some large ones, 404s, HTML pages and corrupt bytes."""
    kinds = ["ok"] * n
    for i in range(n):
        if i % 11 == 3:
            kinds[i] = "404"
        elif i % 13 == 5:
            kinds[i] = "html"
        elif i % 17 == 7:
            kinds[i] = "corrupt"
    for j, i in enumerate(range(9, n, n // 4)[: len(LARGE_SIZES) + 1]):
        kinds[i] = f"large{j}"
    out = []
    for i, kind in enumerate(kinds):
        path = f"/{prefix}/{i:04d}.jpg"
        if kind == "404":
            pass  # not served
        elif kind == "html":
            res.add(path, 200, "text/html; charset=utf-8", b"<!doctype html><html><body>moved</body></html>", None)
        elif kind == "corrupt":
            res.add(path, 200, "image/jpeg", rng.integers(0, 256, 600, dtype=np.uint8).tobytes(), None)
        elif kind.startswith("large"):
            j = int(kind[5:])
            w, h = LARGE_SIZES[j] if j < len(LARGE_SIZES) else MEDIUM_SIZE
            res.add(path, 200, "image/jpeg", _jpeg(_smooth(rng, w, h)), (w, h))
        else:
            w, h = (int(v) for v in rng.integers(32, 65, 2))
            img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            if i % 2:
                res.add(path, 200, "image/jpeg", _jpeg(img), (w, h))
            else:
                path = path[:-4] + ".png"
                res.add(path, 200, "image/png", _png(img), (w, h))
        out.append((path, kind))
    return out


@pytest.fixture(scope="module")
def server():
    res = Resources()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the http.server API
            item = res.items.get(self.path)
            status, ctype, body = (404, "text/html", b"not found") if item is None else item[:3]
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield res, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def metadata(server, tmp_path_factory):
    """Metadata in the three formats; returns {dataset: (path, [url per population row], {url: kind})}."""
    res, base = server
    rng = np.random.default_rng(7)
    root = tmp_path_factory.mktemp("meta")
    out = {}

    cc = _make_resources("cc", N_ROWS, rng, res)
    cc_urls = [base + p for p, _ in cc]
    lines = [f"{u}\tcaption {i}\n" for i, u in enumerate(cc_urls)]
    lines[-1] = lines[-1].rstrip("\n")  # the last line without a newline is still a row
    (root / "cc12m.tsv").write_text("".join(lines))
    out["cc"] = (root / "cc12m.tsv", cc_urls, {base + p: k for p, k in cc})

    dc = _make_resources("dc", N_ROWS, rng, res)
    dc_urls = [base + p for p, _ in dc]
    # one cross-dataset near duplicate: a sampled CC image and a smaller, recompressed copy in DataComp
    r = next(int(i) for i in expected_urls(cc_urls)[0] if cc[i][1] == "ok")
    scene = natural(99, 200, 150)
    res.add(cc[r][0], 200, "image/jpeg", _jpeg(scene), (200, 150))
    copy = recompressed(scene, 0.875, 75)
    res.add(dc[r][0], 200, "image/jpeg", _jpeg(copy), (copy.shape[1], copy.shape[0]))
    folder = root / "datacomp"
    folder.mkdir()
    # file names sort differently from the order of writing; small row groups
    order = {"a.parquet": (0, 50), "b.parquet": (50, 110), "c.parquet": (110, N_ROWS)}
    for name in ["c.parquet", "a.parquet", "b.parquet"]:
        a, b = order[name]
        table = pa.table({"uid": [f"{i:032x}" for i in range(a, b)], "url": dc_urls[a:b],
                          "text": [f"text {i}" for i in range(a, b)], "clip_score": np.linspace(0, 1, b - a)})
        pq.write_table(table, folder / name, row_group_size=7)
    out["datacomp"] = (folder, dc_urls, {base + p: k for p, k in dc})

    yf = _make_resources("yf", N_ROWS, rng, res)
    videos = _make_resources("yfvideo", 30, rng, res)  # served as images: a leak would download fine
    db = root / "yfcc100m_dataset.sqlite"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE yfcc100m_dataset (photoid INTEGER, uid TEXT, title TEXT, downloadurl TEXT, "
                "marker INTEGER)")
    photo_urls, rows, v = [], [], 0
    for i, (p, _) in enumerate(yf):
        if i % 5 == 2 and v < len(videos):
            rows.append((10_000 + v, "u", "video", base + videos[v][0], 1))
            v += 1
        rows.append((i, "u", f"photo {i}", base + p, 0))
        photo_urls.append(base + p)
    con.executemany("INSERT INTO yfcc100m_dataset VALUES (?, ?, ?, ?, ?)", rows)
    con.commit()
    con.close()
    out["yfcc"] = (db, photo_urls, {base + p: k for p, k in yf}, {base + p for p, _ in videos[:v]})
    return out


def expected_urls(urls: list[str]) -> tuple[np.ndarray, list[str]]:
    rows = np.sort(np.random.default_rng(SEED).choice(len(urls), size=N_URLS, replace=False))
    return rows, [urls[i] for i in rows]


def read_shards(shards: Path) -> dict[str, tuple[dict, bytes]]:
    """url -> (json metadata, image bytes) of every image in the webdataset tars."""
    found = {}
    for tar_path in sorted(shards.glob("*.tar")):
        members: dict[str, dict[str, bytes]] = {}
        with tarfile.open(tar_path) as tar:
            for m in tar.getmembers():
                key, _, ext = m.name.rpartition(".")
                members.setdefault(key, {})[ext] = tar.extractfile(m).read()
        for parts in members.values():
            meta = json.loads(parts["json"])
            found[meta["url"]] = (meta, parts["jpg"])
    return found


# ------------------------------------------------------------------------------------------------
# sampling only


def test_sample_rows_is_the_documented_draw_and_reads_back_exactly(metadata, tmp_path):
    assert np.array_equal(sample_rows(10, 20, SEED), np.arange(10))
    params = {"cc": {"reader": "tsv"}, "datacomp": {"reader": "parquet", "extra_columns": ["uid"]},
              "yfcc": {"reader": "sqlite"}}
    for name, (path, urls, *_rest) in metadata.items():
        p = dict(params[name])
        reader = create_reader(p.pop("reader"), path, **p)
        assert reader.count() == len(urls) == N_ROWS
        sample = write_url_sample(reader, tmp_path / name, N_URLS, SEED, name)
        table = pq.read_table(sample.urls_file)
        rows, want = expected_urls(urls)
        assert table.column("row").to_pylist() == rows.tolist()
        assert table.column("url").to_pylist() == want
        assert sample.info["seed"] == SEED and sample.info["population"] == N_ROWS
        assert sample.info["rows_sha256"] == rows_digest(rows)
        if name == "yfcc":
            assert not set(want) & metadata["yfcc"][3], "a video row was sampled"
            assert table.column("photoid").to_pylist() == rows.tolist()  # photoid = position among photos here
        if name == "datacomp":
            assert table.column("uid").to_pylist() == [f"{i:032x}" for i in rows]
            assert table.column("caption").to_pylist() == [f"text {i}" for i in rows]
        if name == "cc":
            assert table.column("caption").to_pylist() == [f"caption {i}" for i in rows]
        # the same request reuses the sample; another seed into the same folder is refused
        assert write_url_sample(reader, tmp_path / name, N_URLS, SEED, name).reused
        with pytest.raises(DownloadConfigError, match="other settings"):
            write_url_sample(reader, tmp_path / name, N_URLS, SEED + 1, name)


def test_pick_rows_batches_the_wanted_records_and_stops_reading_after_the_last():
    from bias.data.download import pick_rows

    consumed = []

    def records():
        for i in range(1000):
            consumed.append(i)
            yield f"r{i}"

    batches = list(pick_rows(records(), np.array([0, 3, 4, 9, 17]), batch=2))
    assert batches == [[(0, "r0"), (3, "r3")], [(4, "r4"), (9, "r9")], [(17, "r17")]]
    assert consumed[-1] == 17
    assert list(pick_rows(iter(["a"]), np.array([], dtype=np.int64), 5)) == []
    assert list(pick_rows(iter(["a", "b"]), np.array([1, 5]), 5)) == [[(1, "b")]]  # past the end: what exists


def test_reader_errors_name_the_fix(tmp_path):
    db = tmp_path / "x.sqlite"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE yfcc100m_dataset (photoid INTEGER, url TEXT)")
    con.close()
    with pytest.raises(DownloadConfigError, match=r"no column\(s\) \['downloadurl', 'marker'\]"):
        create_reader("sqlite", db).count()
    with pytest.raises(DownloadConfigError, match="does not exist"):
        create_reader("tsv", tmp_path / "missing.tsv")
    with pytest.raises(DownloadConfigError, match="unknown metadata reader"):
        create_reader("csv", db)


# ------------------------------------------------------------------------------------------------
# the real img2dataset


@pytest.fixture(scope="module")
def downloads(metadata, tmp_path_factory):
    find_img2dataset()  # a clear error (run `make img2dataset`) instead of a failing subprocess
    root = tmp_path_factory.mktemp("downloads")
    for name, (path, *_rest) in metadata.items():
        run_cli("download.py", f"dataset={name}", f"metadata={path}", f"out={root / name}", f"num_urls={N_URLS}",
                "min_downloaded=null", "img2dataset.processes_count=1", "img2dataset.thread_count=4",
                "img2dataset.number_sample_per_shard=40", "img2dataset.timeout=5",
                env={"NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"})
    return root


@pytest.mark.parametrize("name", ["cc", "datacomp", "yfcc"])
def test_download_keeps_the_sample_resizes_and_accounts_for_failures(server, metadata, downloads, name):
    res, base = server
    _path, urls, kinds, *videos = metadata[name]
    out = downloads / name
    rows, want = expected_urls(urls)
    sample = json.loads((out / "sample.json").read_text())
    assert sample["seed"] == SEED and sample["rows_sha256"] == rows_digest(rows)

    # every sampled row went to img2dataset exactly once, with our row number
    seen = {}
    for f in sorted((out / "shards").glob("*.parquet")):
        t = pq.read_table(f)
        for url, row, status in zip(t.column("url").to_pylist(), t.column("row").to_pylist(),
                                    t.column("status").to_pylist()):
            seen[url] = (row, status)
    assert sorted(seen) == sorted(want)
    assert {u: r for u, (r, _) in seen.items()} == dict(zip(want, rows.tolist()))
    if videos:
        assert not set(seen) & videos[0]

    sampled_kinds = [kinds[u] for u in want]
    n_404 = sampled_kinds.count("404")
    n_bad = sampled_kinds.count("html") + sampled_kinds.count("corrupt")
    n_ok = len(want) - n_404 - n_bad
    assert n_404 and n_bad, "the sample should include failing URLs"
    report = json.loads((out / "download_report.json").read_text())
    assert report["requested"] == N_URLS and report["downloaded"] == n_ok
    assert report["failed_to_download"] == n_404 and report["failed_to_resize"] == n_bad
    assert report["errors_by_category"] == {
        "failed_to_download: http 404": n_404,
        "failed_to_resize: not decodable (corrupt bytes or not an image)": n_bad,
    }
    assert sum(report["errors_by_message"].values()) == n_404 + n_bad
    assert {e["url"] for e in report["failed_examples"]} <= {u for u, k in zip(want, sampled_kinds) if k != "ok"
                                                            and not k.startswith("large")}

    # images: the shorter side > 500 becomes 500 with the aspect kept; everything else keeps its size
    images = read_shards(out / "shards")
    assert len(images) == n_ok
    large = 0
    for url, (meta, data) in images.items():
        w0, h0 = res.items[url[len(base):]][3]
        img = Image.open(io.BytesIO(data))
        assert (meta["original_width"], meta["original_height"]) == (w0, h0)
        assert img.size == (meta["width"], meta["height"])
        assert meta["row"] == rows[want.index(url)]
        if min(w0, h0) > 500:
            large += 1
            assert min(img.size) == 500
            long0, long1 = max(w0, h0), max(img.size)
            assert abs(long1 - long0 * 500 / min(w0, h0)) <= 1
            assert (img.width > img.height) == (w0 > h0)
        else:
            assert img.size == (w0, h0)
    n_large = sum(k.startswith("large") and min(res.items[u[len(base):]][3]) > 500 for u, k in zip(want, sampled_kinds))
    assert n_large >= 1 and large == n_large == report["resized_to_shorter_side"]


def test_downloaded_shards_classify_end_to_end_with_the_near_duplicate_report(downloads, tmp_path):
    names = ["yfcc", "cc", "datacomp"]
    downloaded = {n: json.loads((downloads / n / "download_report.json").read_text())["downloaded"] for n in names}
    shards = [f"data.datasets.{n}.shards='{downloads / n / 'shards'}/{{00000..00002}}.tar'" for n in names]
    run_cli("classify.py", "data=webdataset", *shards, "data.per_dataset=null", "data.val_per_dataset=15",
            "data.near_duplicates.enabled=true", "data.near_duplicates.exclude_across_datasets=true", *TINY,
            f"out={tmp_path / 'run'}", f"cache_dir={tmp_path / 'cache'}")
    results = read_results(tmp_path / "run")
    assert results["n_skipped"] == 0 and results["n_val"] == 3 * 15
    assert set(results["per_dataset"]) == set(names)
    near = results["duplicates"]["near"]
    assert near["hashed"] == sum(downloaded.values())
    assert near["pairs"] == {"within_dataset": {n: 0 for n in names}, "across_datasets": 1, "train_val": near["pairs"]
                             ["train_val"]}
    pair = near["examples"]["across_datasets"][0]
    assert {pair["a_dataset"], pair["b_dataset"]} == {"cc", "datacomp"}
    manifest = pq.read_table(tmp_path / "run" / "manifest.parquet").to_pylist()
    in_val = sum(m["path"] in (pair["a"], pair["b"]) and m["split"] == "val" for m in manifest)
    assert near["pairs"]["train_val"] == int(in_val == 1)
    assert near["excluded_from_train"] == 2 - in_val
    assert results["n_train"] == sum(downloaded.values()) - 3 * 15 - near["excluded_from_train"]
    assert not any(m["path"] in (pair["a"], pair["b"]) and m["split"] == "train" for m in manifest)
