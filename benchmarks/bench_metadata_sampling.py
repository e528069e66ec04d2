"""Seeded sampling of 1.5M URLs from 1B rows of parquet metadata: time and peak memory.

    python benchmarks/bench_metadata_sampling.py [--rows-per-file 1000000] [--files 1000] [--take-files 20]

The synthetic metadata is one real parquet file (``url`` = a URL made from the row number, ``text`` a
caption, row groups of 100k rows) linked ``--files`` times (DataComp's metadata is many files too): 1B
rows at ~30 MiB on disk. Row ``g`` of the whole set holds the URL of local row ``g % rows_per_file``, so
every sampled URL is checked. Each measurement runs in a fresh process (peak RSS above the size after
imports):

* ``count``: :meth:`bias.data.download.ParquetReader.count` (footers only) over every file;
* ``sample_rows``: the seed-42 draw of 1.5M positions out of 1B;
* ``take``: reading the sampled rows of the first ``--take-files`` files (only the url/text columns of
  row groups holding a sampled row, one at a time), extrapolated linearly to all files;
* ``naive``: the straightforward way, ``pq.read_table`` of every file's url/text columns into memory,
  then ``take`` of the sampled rows, on ``--naive-files`` files, extrapolated linearly (at 1B rows it
  would need tens of GiB).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from measure import peak_mb, rss_mb, run_step  # benchmarks/measure.py

SEED = 42


def make_metadata(folder: Path, rows_per_file: int, files: int) -> float:
    folder.mkdir(parents=True)
    rows = np.arange(rows_per_file)
    table = pa.table({"url": [f"https://img.example.com/{i:010d}.jpg" for i in rows],
                      "text": [f"a photo, number {i % 977}" for i in rows]})
    real = folder / "part-000000.parquet"
    pq.write_table(table, real, row_group_size=100_000, compression="zstd")
    for k in range(1, files):
        os.symlink(real.name, folder / f"part-{k:06d}.parquet")
    return real.stat().st_size / 2**20


def child(mode: str, folder: str, n: int, files: int, take_files: int) -> dict:
    from bias.data.download import ParquetReader, sample_rows

    base = rss_mb()
    start = time.perf_counter()
    reader = ParquetReader(folder, url_column="url", caption_column="text")
    result: dict = {"mode": mode}
    if mode == "count":
        result["rows"] = reader.count()
    elif mode == "sample_rows":
        rows = sample_rows(reader.count(), n, SEED)
        result["rows"] = len(rows)
    elif mode == "take":
        population = reader.count()
        per_file = population // files
        rows = sample_rows(population, n, SEED)
        t0 = time.perf_counter()
        subset = rows[rows < take_files * per_file]
        reader._files = reader._files[:take_files]
        got = 0
        for table in reader.take(subset):
            want = [f"https://img.example.com/{g % per_file:010d}.jpg" for g in table.column("row").to_pylist()]
            assert table.column("url").to_pylist() == want
            got += table.num_rows
        assert got == len(subset)
        result.update(taken=got, take_seconds=round(time.perf_counter() - t0, 2),
                      extrapolated_seconds=round((time.perf_counter() - t0) * files / take_files, 1))
    elif mode == "naive":
        population = reader.count()
        per_file = population // files
        rows = sample_rows(population, n, SEED)
        subset = rows[rows < take_files * per_file]
        t0 = time.perf_counter()
        table = pa.concat_tables(pq.read_table(f, columns=["url", "text"]) for f in reader.files()[:take_files])
        picked = table.take(pa.array(subset))
        assert picked.column("url")[0].as_py() == f"https://img.example.com/{subset[0] % per_file:010d}.jpg"
        result.update(taken=picked.num_rows, take_seconds=round(time.perf_counter() - t0, 2),
                      extrapolated_seconds=round((time.perf_counter() - t0) * files / take_files, 1))
    result.update(seconds=round(time.perf_counter() - start, 2), peak_mb=round(peak_mb() - base, 1),
                  load=round(os.getloadavg()[0], 2))
    return result


def run_child(mode: str, folder: Path, args) -> dict:
    return run_step(__file__, ["--child", mode, "--folder", str(folder), "--n", str(args.n), "--files", str(args.files),
                               "--take-files", str(args.naive_files if mode == "naive" else args.take_files)])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows-per-file", type=int, default=1_000_000)
    ap.add_argument("--files", type=int, default=1000)
    ap.add_argument("--n", type=int, default=1_500_000)
    ap.add_argument("--take-files", type=int, default=20)
    ap.add_argument("--naive-files", type=int, default=10)
    ap.add_argument("--child", default=None)
    ap.add_argument("--folder")
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.folder, args.n, args.files, args.take_files)))
        return
    tmp = Path(tempfile.mkdtemp(prefix="bench_meta_"))
    try:
        size = make_metadata(tmp / "meta", args.rows_per_file, args.files)
        total = args.rows_per_file * args.files
        print(f"{total:,} rows in {args.files} links to one {size:.1f} MiB parquet file; sampling {args.n:,} "
              f"with seed {SEED} (load {os.getloadavg()[0]:.2f})")
        print("| step | seconds (measured) | seconds, all files (extrapolated) | peak RSS above start (MiB) | load |")
        print("|---|---|---|---|---|")
        for mode in ("count", "sample_rows", "take", "naive"):
            r = run_child(mode, tmp / "meta", args)
            label = {"count": "count rows (footers)", "sample_rows": "count + sample_rows",
                     "take": f"take, {args.take_files} files ({r.get('taken', 0):,} rows)",
                     "naive": f"naive read_table + take, {args.naive_files} files ({r.get('taken', 0):,} rows)"}[mode]
            print(f"| {label} | {r.get('take_seconds', r['seconds'])} | {r.get('extrapolated_seconds', '-')} | "
                  f"{r['peak_mb']} | {r['load']} |", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
