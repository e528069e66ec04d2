"""Seeded URL samples from dataset metadata, downloaded with img2dataset into webdataset shards.

The published study draws random URL samples with seed 42 from each dataset's metadata (CC12M:
rows of ``cc12m.tsv``; DataComp: the ``url`` column of the DataComp-1B parquet metadata; YFCC100M:
photo rows of the metadata database), requests about 1.5M URLs per dataset so that at least 1.01M
downloads succeed, and resizes images whose shorter side exceeds 500 to shorter side 500.

Sampling (exact and reproducible)
    The population is every row of the metadata in a fixed order (defined by each reader below).
    The sample is ``np.sort(np.random.default_rng(seed).choice(population, size=n, replace=False))``
    (all rows when ``n >= population``): row positions, read back in ascending order. Only the row count
    and the sampled rows are ever held in memory; parquet metadata is read per row group, TSV and SQLite
    are streamed. ``sample.json`` beside ``urls.parquet`` records the seed, the population, the number of
    rows, a SHA-256 of the sampled positions, the metadata files (size, modification time) and numpy's
    version, so a later run can tell whether it reproduces the same sample.

Downloading
    img2dataset runs as a separate program (it pins an OpenCV older than ours, so ``make img2dataset``
    installs it into its own virtual environment; see :func:`find_img2dataset`). Our defaults for its
    options, chosen for the published "shorter side > 500 -> 500, bicubic, aspect kept" rule:

    ``resize_mode=keep_ratio`` (scale so the *shorter* side equals ``image_size``; ``keep_ratio_largest``
    would fit the *longer* side, ``border``/``center_crop`` change the aspect), ``image_size=500``,
    ``resize_only_if_bigger=True`` (smaller images keep their size), ``downscale_interpolation=bicubic``
    (OpenCV ``INTER_CUBIC``; unlike PIL it does not low-pass before large reductions, choose ``area`` for
    that), ``skip_reencode=True`` (a JPEG that needs no resize keeps its original bytes; everything else
    is encoded as JPEG quality 95), ``output_format=webdataset`` (``NNNNN.tar`` with ``KEY.jpg``,
    ``KEY.txt`` caption, ``KEY.json`` metadata incl. our ``row``), ``disable_all_reencoding=False``.

    img2dataset does not look at the HTTP content type: HTML error pages and corrupt bytes fail at
    decoding ("failed_to_resize" with "Image decoding error"), dead links at download
    ("failed_to_download" with the HTTP error). Its per-shard ``*_stats.json`` and ``*.parquet`` files
    are summarised in ``download_report.json`` (counts by status, by error message and by coarse
    category). It does not apply EXIF orientation when it re-encodes.
"""

from __future__ import annotations

import abc
import hashlib
import json
import logging
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from bias.core.errors import ConfigError
from bias.core.io import write_json
from bias.core.progress import progress_bar

logger = logging.getLogger(__name__)
SAMPLE_VERSION = 1
URLS_FILE = "urls.parquet"
SAMPLE_FILE = "sample.json"
SHARDS_DIR = "shards"
REPORT_FILE = "download_report.json"
IMG2DATASET_ENV = "IMG2DATASET"
REPO_ROOT = Path(__file__).resolve().parents[2]  # a checkout: where `make img2dataset` puts .venv-img2dataset

#: img2dataset options implementing the published resize rule (module docstring). Overridable.
IMG2DATASET_DEFAULTS: dict[str, Any] = {
    "image_size": 500,
    "resize_mode": "keep_ratio",
    "resize_only_if_bigger": True,
    "downscale_interpolation": "bicubic",
    "encode_format": "jpg",
    "encode_quality": 95,
    "skip_reencode": True,
    "output_format": "webdataset",
    "processes_count": 16,
    "thread_count": 64,
    "number_sample_per_shard": 10000,
    "timeout": 10,
    "retries": 0,
    "extract_exif": False,
    "compute_hash": "sha256",
    "incremental_mode": "incremental",
    "enable_wandb": False,
}
#: Set by us from the URL list; not user options.
_MANAGED_OPTIONS = frozenset({"url_list", "input_format", "url_col", "caption_col", "save_additional_columns",
                              "output_folder"})


class DownloadConfigError(ConfigError):
    """The download cannot run as configured; the message says what to change."""


# ----------------------------------------------------------------------------------------------------
# sampling


def sample_rows(population: int, n: int, seed: int) -> np.ndarray:
    """Sorted int64 row positions: ``n`` distinct rows of ``range(population)`` drawn with ``seed``.

    ``np.random.default_rng(seed).choice(population, n, replace=False)``, sorted; every row when
    ``n >= population``. numpy uses Floyd's algorithm when ``n`` is small against ``population``, so a
    1.5M sample of 1B rows needs memory for the sample only.
    """
    if population < 0 or n < 0:
        raise ValueError(f"population and n must be >= 0, got {population} and {n}")
    if n >= population:
        return np.arange(population, dtype=np.int64)
    return np.sort(np.random.default_rng(seed).choice(population, size=n, replace=False).astype(np.int64))


def rows_digest(rows: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(rows, dtype="<i8").tobytes()).hexdigest()


# ----------------------------------------------------------------------------------------------------
# metadata readers: population order and streaming reads of chosen rows

METADATA_READERS: dict[str, type[MetadataReader]] = {}


def register_reader(cls: type[MetadataReader]) -> type[MetadataReader]:
    METADATA_READERS[cls.name] = cls
    return cls


class MetadataReader(abc.ABC):
    """Counts the rows of one dataset's metadata and streams chosen rows as ``row, url[, caption], extras``."""

    name: ClassVar[str]

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(os.path.expanduser(os.fspath(path)))
        if not self.path.exists():
            raise DownloadConfigError(f"metadata {self.path} does not exist: pass metadata=PATH to the {self.name} file")

    @abc.abstractmethod
    def count(self) -> int:
        """Number of rows in the population."""

    @abc.abstractmethod
    def take(self, rows: np.ndarray) -> Iterator[pa.Table]:
        """Tables of the rows at the sorted positions `rows`, in that order."""

    @property
    def has_caption(self) -> bool:
        return False

    def files(self) -> list[Path]:
        return [self.path]

    def params(self) -> dict[str, Any]:
        return {}

    def describe(self) -> dict[str, Any]:
        files = []
        for f in self.files():
            st = f.stat()
            files.append({"path": str(f.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns})
        return {"reader": self.name, "params": self.params(), "files": files}


def pick_rows(records: Iterable[Any], rows: np.ndarray, batch: int) -> Iterator[list[tuple[int, Any]]]:
    """Walk `records` once and yield lists of up to `batch` ``(position, record)`` for the positions in
    `rows` (sorted, distinct). Reading stops after the last wanted position; `rows` stays a numpy array."""
    buf: list[tuple[int, Any]] = []
    if len(rows) == 0:
        return
    k, target = 0, int(rows[0])
    for i, record in enumerate(records):
        if i != target:
            continue
        buf.append((i, record))
        if len(buf) >= batch:
            yield buf
            buf = []
        k += 1
        if k == len(rows):
            break
        target = int(rows[k])
    if buf:
        yield buf


def _url_table(rows: Sequence[int], urls: Sequence[str | None], captions: Sequence[str | None] | None,
               extras: Mapping[str, Sequence[Any]] | None = None) -> pa.Table:
    cols: dict[str, Any] = {"row": pa.array(rows, pa.int64()), "url": pa.array(urls, pa.string())}
    if captions is not None:
        cols["caption"] = pa.array(captions, pa.string())
    for name, values in (extras or {}).items():
        cols[name] = values
    return pa.table(cols)


@register_reader
class TsvReader(MetadataReader):
    """Tab-separated lines without a header (``cc12m.tsv``: ``url<TAB>caption``).

    A row is a line (``\\n``-terminated; a last line without newline counts; ``\\r`` before it is dropped).
    Text is decoded as UTF-8 with invalid bytes replaced. A line with fewer fields has empty ones.
    """

    name = "tsv"

    def __init__(self, path: str | os.PathLike, url_field: int = 0, caption_field: int | None = 1,
                 delimiter: str = "\t", chunk_bytes: int = 1 << 24) -> None:
        super().__init__(path)
        self.url_field, self.caption_field, self.delimiter, self.chunk_bytes = url_field, caption_field, delimiter, chunk_bytes

    @property
    def has_caption(self) -> bool:
        return self.caption_field is not None

    def params(self) -> dict[str, Any]:
        return {"url_field": self.url_field, "caption_field": self.caption_field, "delimiter": self.delimiter}

    def count(self) -> int:
        lines, last = 0, b"\n"
        with open(self.path, "rb") as f:
            while chunk := f.read(self.chunk_bytes):
                lines += chunk.count(b"\n")
                last = chunk[-1:]
        return lines + (last != b"\n")

    def take(self, rows: np.ndarray, batch: int = 65536) -> Iterator[pa.Table]:
        with open(self.path, "rb") as f:
            for picked in pick_rows(f, rows, batch):
                urls, caps = [], []
                for _, raw in picked:
                    fields = raw.rstrip(b"\n").rstrip(b"\r").decode("utf-8", "replace").split(self.delimiter)
                    urls.append(fields[self.url_field].strip() if self.url_field < len(fields) else "")
                    if self.caption_field is not None:
                        caps.append(fields[self.caption_field] if self.caption_field < len(fields) else "")
                yield _url_table([i for i, _ in picked], urls, caps if self.has_caption else None)


@register_reader
class ParquetReader(MetadataReader):
    """One parquet file, or every ``*.parquet`` under a folder (DataComp-1B metadata).

    Row order: files sorted by their path relative to the folder, rows in file order. Counting reads
    only footers; taking reads only the needed columns of row groups that hold sampled rows, one at a
    time.
    """

    name = "parquet"

    def __init__(self, path: str | os.PathLike, url_column: str = "url", caption_column: str | None = "text",
                 extra_columns: Sequence[str] = ()) -> None:
        super().__init__(path)
        self.url_column, self.caption_column = url_column, caption_column
        self.extra_columns = list(extra_columns)
        if self.path.is_dir():
            self._files = sorted(self.path.rglob("*.parquet"), key=lambda p: p.relative_to(self.path).as_posix())
            if not self._files:
                raise DownloadConfigError(f"no *.parquet files under {self.path}")
        else:
            self._files = [self.path]

    @property
    def has_caption(self) -> bool:
        return self.caption_column is not None

    def files(self) -> list[Path]:
        return list(self._files)

    def params(self) -> dict[str, Any]:
        return {"url_column": self.url_column, "caption_column": self.caption_column,
                "extra_columns": self.extra_columns}

    def count(self) -> int:
        total = 0
        for f in self._files:
            meta = pq.ParquetFile(f).metadata
            names = set(meta.schema.names)
            missing = [c for c in [self.url_column, self.caption_column, *self.extra_columns] if c and c not in names]
            if missing:
                raise DownloadConfigError(f"{f} has no column(s) {missing}; its columns are {sorted(names)}")
            total += meta.num_rows
        return total

    def take(self, rows: np.ndarray) -> Iterator[pa.Table]:
        columns = [self.url_column] + ([self.caption_column] if self.caption_column else []) + self.extra_columns
        start = 0
        for f in self._files:
            pf = pq.ParquetFile(f)
            group_rows = [pf.metadata.row_group(g).num_rows for g in range(pf.metadata.num_row_groups)]
            bounds = start + np.concatenate([[0], np.cumsum(group_rows, dtype=np.int64)])
            for g in range(len(group_rows)):
                a, b = np.searchsorted(rows, [bounds[g], bounds[g + 1]])
                if a == b:
                    continue
                table = pf.read_row_group(g, columns=columns)
                picked = table.take(pa.array(rows[a:b] - bounds[g]))
                extras = {c: picked.column(c) for c in self.extra_columns}
                yield _url_table(rows[a:b], picked.column(self.url_column).cast(pa.string()),
                                 picked.column(self.caption_column).cast(pa.string()) if self.caption_column else None,
                                 extras)
            start = int(bounds[-1])


@register_reader
class SqliteReader(MetadataReader):
    """A table of an SQLite database (the YFCC100M metadata ``yfcc100m_dataset``), photos only.

    Assumed columns (all configurable): ``downloadurl`` (the image URL), ``photoid`` (kept as an extra
    column), ``marker`` (0 = photo, 1 = video, as in the YFCC100M release). The population is the rows
    with ``media_column = photo_value`` in ``rowid`` order; ``media_column=null`` keeps every row.
    """

    name = "sqlite"

    def __init__(self, path: str | os.PathLike, table: str = "yfcc100m_dataset", url_column: str = "downloadurl",
                 id_column: str | None = "photoid", media_column: str | None = "marker", photo_value: Any = 0,
                 caption_column: str | None = None) -> None:
        super().__init__(path)
        self.table, self.url_column, self.id_column = table, url_column, id_column
        self.media_column, self.photo_value, self.caption_column = media_column, photo_value, caption_column
        for ident in (table, url_column, id_column, media_column, caption_column):
            if ident is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", str(ident)):
                raise DownloadConfigError(f"SQLite table/column name {ident!r} must be a plain identifier")

    @property
    def has_caption(self) -> bool:
        return self.caption_column is not None

    def params(self) -> dict[str, Any]:
        return {"table": self.table, "url_column": self.url_column, "id_column": self.id_column,
                "media_column": self.media_column, "photo_value": self.photo_value,
                "caption_column": self.caption_column}

    def _connect(self) -> sqlite3.Connection:
        con = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
        cols = {r[1] for r in con.execute(f"PRAGMA table_info({self.table})")}
        if not cols:
            con.close()
            raise DownloadConfigError(f"{self.path} has no table {self.table!r}; set the reader's table=NAME")
        missing = [c for c in (self.url_column, self.id_column, self.media_column, self.caption_column)
                   if c is not None and c not in cols]
        if missing:
            con.close()
            raise DownloadConfigError(f"table {self.table!r} in {self.path} has no column(s) {missing}; "
                                      f"its columns are {sorted(cols)}")
        return con

    def _where(self) -> tuple[str, tuple[Any, ...]]:
        if self.media_column is None:
            return "", ()
        return f" WHERE {self.media_column} = ?", (self.photo_value,)

    def count(self) -> int:
        where, args = self._where()
        with closing(self._connect()) as con:
            return int(con.execute(f"SELECT COUNT(*) FROM {self.table}{where}", args).fetchone()[0])

    def take(self, rows: np.ndarray, batch: int = 65536) -> Iterator[pa.Table]:
        where, args = self._where()
        cols = [self.url_column] + [c for c in (self.caption_column, self.id_column) if c is not None]
        query = f"SELECT {', '.join(cols)} FROM {self.table}{where} ORDER BY rowid"
        with closing(self._connect()) as con:
            for picked in pick_rows(con.execute(query, args), rows, batch):
                yield self._table(picked)

    def _table(self, buf: list[tuple[int, tuple[Any, ...]]]) -> pa.Table:
        records = [r for _, r in buf]
        urls = [None if r[0] is None else str(r[0]) for r in records]
        k = 1
        captions = None
        if self.caption_column is not None:
            captions = [None if r[k] is None else str(r[k]) for r in records]
            k += 1
        extras = {self.id_column: pa.array([r[k] for r in records])} if self.id_column is not None else None
        return _url_table([i for i, _ in buf], urls, captions, extras)


def create_reader(name: str, path: str | os.PathLike, **params: Any) -> MetadataReader:
    if name not in METADATA_READERS:
        raise DownloadConfigError(f"unknown metadata reader {name!r}; available: {sorted(METADATA_READERS)}")
    try:
        return METADATA_READERS[name](path, **params)
    except TypeError as err:
        raise DownloadConfigError(f"metadata reader {name!r}: {err}") from err


# ----------------------------------------------------------------------------------------------------
# URL list


@dataclass
class UrlSample:
    urls_file: Path
    info: dict[str, Any]
    reused: bool

    @property
    def has_caption(self) -> bool:
        return bool(self.info["has_caption"])

    @property
    def extra_columns(self) -> list[str]:
        return list(self.info["extra_columns"])


def write_url_sample(reader: MetadataReader, out: str | os.PathLike, num_urls: int, seed: int,
                     dataset: str | None = None) -> UrlSample:
    """Sample `num_urls` rows with `seed` and write ``urls.parquet`` + ``sample.json`` into `out`.

    An existing sample made with the same seed, size, reader and unchanged metadata files is reused; one
    made differently is an error (delete it or choose another folder), never silently replaced.
    """
    out = Path(out)
    urls_file, info_file = out / URLS_FILE, out / SAMPLE_FILE
    source = reader.describe()
    request = {"seed": int(seed), "num_requested": int(num_urls), "metadata": source}
    if info_file.exists() and urls_file.exists():
        old = json.loads(info_file.read_text())
        if {k: old.get(k) for k in request} == request:
            return UrlSample(urls_file, old, reused=True)
        raise DownloadConfigError(
            f"{out} holds a URL sample made with other settings or other metadata files (see {info_file}); "
            "delete that folder or pass another out=DIR"
        )
    start = time.time()
    population = reader.count()
    rows = sample_rows(population, int(num_urls), int(seed))
    out.mkdir(parents=True, exist_ok=True)
    tmp = urls_file.with_suffix(f".tmp{os.getpid()}")
    writer = None
    written = 0
    empty = 0
    extra_columns: list[str] = []
    with progress_bar(total=len(rows), desc=f"sampling {dataset or reader.name} urls", unit="url", leave=False) as bar:
        for table in reader.take(rows):
            if writer is None:
                writer = pq.ParquetWriter(tmp, table.schema)
                extra_columns = [c for c in table.column_names if c not in ("url", "caption")]
            writer.write_table(table.cast(writer.schema))
            urls = table.column("url")
            empty += int(pc.sum(pc.or_kleene(pc.is_null(urls), pc.equal(urls, ""))).as_py() or 0)
            written += table.num_rows
            bar.update(table.num_rows)
    if writer is None:
        raise DownloadConfigError(f"metadata {reader.path} has no rows to sample")
    writer.close()
    if written != len(rows):
        tmp.unlink()
        raise RuntimeError(f"read {written} of {len(rows)} sampled rows from {reader.path}: the metadata changed "
                           "while it was read, or its row count is wrong")
    os.replace(tmp, urls_file)
    info = {
        **request,
        "version": SAMPLE_VERSION,
        "dataset": dataset,
        "population": int(population),
        "num_sampled": int(len(rows)),
        "empty_urls": empty,
        "rows_sha256": rows_digest(rows),
        "algorithm": "np.sort(np.random.default_rng(seed).choice(population, size=num_requested, replace=False)); "
                     "all rows if num_requested >= population; rows in the reader's order",
        "numpy_version": np.__version__,
        "has_caption": reader.has_caption,
        "extra_columns": extra_columns,
        "sampling_time_s": round(time.time() - start, 2),
    }
    write_json(info, info_file)
    return UrlSample(urls_file, info, reused=False)


# ----------------------------------------------------------------------------------------------------
# img2dataset


def find_img2dataset(executable: str | None = None) -> str:
    """The img2dataset program: `executable`, else ``$IMG2DATASET``, else on ``PATH``, else the project's
    tool environment ``.venv-img2dataset`` (``make img2dataset`` creates it)."""
    for cand in (executable, os.environ.get(IMG2DATASET_ENV), "img2dataset",
                 str(REPO_ROOT / ".venv-img2dataset" / "bin" / "img2dataset")):
        found = shutil.which(cand) if cand else None
        if found:
            return found
        if cand and cand in (executable, os.environ.get(IMG2DATASET_ENV)):
            raise DownloadConfigError(f"img2dataset executable {cand!r} not found or not executable")
    raise DownloadConfigError(
        "img2dataset not found: run `make img2dataset` (installs it into .venv-img2dataset), or set "
        f"${IMG2DATASET_ENV} / img2dataset.executable to its path"
    )


def _cli_value(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return json.dumps(list(value))
    return str(value)


def img2dataset_command(executable: str, sample: UrlSample, shards: Path, options: Mapping[str, Any]) -> list[str]:
    """The img2dataset command line for `sample`, with our defaults updated by `options`."""
    bad = sorted(set(options) & _MANAGED_OPTIONS)
    if bad:
        raise DownloadConfigError(f"img2dataset options {bad} are set from the URL sample; remove them")
    opts = {**IMG2DATASET_DEFAULTS, **{k: v for k, v in options.items() if k != "executable"}}
    opts.update(url_list=str(sample.urls_file), input_format="parquet", url_col="url",
                output_folder=str(shards), save_additional_columns=["row", *[c for c in sample.extra_columns if c != "row"]])
    if sample.has_caption:
        opts["caption_col"] = "caption"
    return [executable] + [f"--{k}={_cli_value(v)}" for k, v in opts.items() if v is not None]


def run_img2dataset(cmd: Sequence[str], log_file: Path) -> None:
    """Run img2dataset, its output shown and kept in `log_file`; raise if it fails."""
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "WANDB_MODE": "disabled", "WANDB_SILENT": "true",
           "PYTHONWARNINGS": "ignore"}
    with open(log_file, "w") as log:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            sys.stdout.write(line)
        code = proc.wait()
    if code != 0:
        raise RuntimeError(f"img2dataset failed with exit code {code}; its output is in {log_file}")


# ----------------------------------------------------------------------------------------------------
# report

_HTTP = re.compile(r"HTTP Error (\d+)")


def error_category(message: str) -> str:
    """Coarse class of an img2dataset error message (its messages are free text)."""
    m = _HTTP.search(message)
    if m:
        return f"http {m.group(1)}"
    low = message.lower()
    for needle, category in (
        ("image decoding error", "not decodable (corrupt bytes or not an image)"),
        ("timed out", "timeout"),
        ("x-robots-tag", "opted out (X-Robots-Tag)"),
        ("unknown url type", "invalid url"),
        ("no host given", "invalid url"),
        ("connection refused", "connection refused"),
        ("name or service not known", "dns"),
        ("urlopen error", "connection"),
        ("image too small", "filtered by size"),
        ("aspect ratio", "filtered by size"),
        ("area too large", "filtered by size"),
    ):
        if needle in low:
            return category
    return "other"


def summarize_shards(shards: Path, image_size: int | None = None, examples: int = 20) -> dict[str, Any]:
    """Counts from img2dataset's per-shard stats and parquet files (status, error, size) in `shards`."""
    stats_files = sorted(shards.glob("*_stats.json"))
    totals = Counter()
    for f in stats_files:
        s = json.loads(f.read_text())
        totals.update({k: int(s.get(k, 0)) for k in ("count", "successes", "failed_to_download", "failed_to_resize")})
    errors: Counter[str] = Counter()
    categories: Counter[str] = Counter()
    failed_examples: list[dict[str, Any]] = []
    resized = 0
    for f in sorted(shards.glob("*.parquet")):
        t = pq.read_table(f, columns=None)
        cols = t.column_names
        status = t.column("status").to_pylist()
        message = t.column("error_message").to_pylist()
        urls = t.column("url").to_pylist()
        rows = t.column("row").to_pylist() if "row" in cols else [None] * len(status)
        for st, msg, url, row in zip(status, message, urls, rows):
            if st == "success":
                continue
            msg = msg or st or "unknown"
            errors[msg] += 1
            categories[f"{st}: {error_category(msg)}"] += 1
            if len(failed_examples) < examples:
                failed_examples.append({"row": row, "url": url, "status": st, "error": msg})
        if image_size and "original_width" in cols:
            ow = np.array(t.column("original_width").to_pylist(), dtype=float)
            oh = np.array(t.column("original_height").to_pylist(), dtype=float)
            ok = np.array([s == "success" for s in status])
            resized += int(np.sum(ok & (np.fmin(ow, oh) > image_size)))
    tars = sorted(p.name for p in shards.glob("*.tar"))
    return {
        "requested": totals["count"],
        "downloaded": totals["successes"],
        "failed_to_download": totals["failed_to_download"],
        "failed_to_resize": totals["failed_to_resize"],
        "success_rate": round(totals["successes"] / totals["count"], 4) if totals["count"] else 0.0,
        "resized_to_shorter_side": resized,
        "errors_by_category": dict(categories.most_common()),
        "errors_by_message": dict(errors.most_common(50)),
        "failed_examples": failed_examples,
        "shards": tars,
        "stats_files": len(stats_files),
    }


# ----------------------------------------------------------------------------------------------------
# the whole job


def download_dataset(dataset: str, metadata: str | os.PathLike, out: str | os.PathLike, reader: Mapping[str, Any],
                     num_urls: int = 1_500_000, seed: int = 42, img2dataset: Mapping[str, Any] | None = None,
                     download: bool = True, min_downloaded: int | None = None) -> dict[str, Any]:
    """Sample URLs of `dataset` from `metadata` into `out`, download them, write and return the report.

    `reader` is ``{"reader": NAME, **params}`` (:data:`METADATA_READERS`). With ``download=False`` only
    the URL sample is written.
    """
    params = dict(reader)
    name = params.pop("reader", None)
    if name is None:
        raise DownloadConfigError(f"no metadata reader configured for dataset {dataset!r}")
    meta_reader = create_reader(str(name), metadata, **params)
    out = Path(out)
    sample = write_url_sample(meta_reader, out, num_urls, seed, dataset)
    logger.info(f"{dataset}: {sample.info['num_sampled']} of {sample.info['population']} rows sampled with seed "
                f"{seed}{' (reused)' if sample.reused else ''} -> {sample.urls_file}")
    report: dict[str, Any] = {"dataset": dataset, "seed": int(seed), "sample": str(out / SAMPLE_FILE),
                              "urls": str(sample.urls_file), "num_sampled": sample.info["num_sampled"],
                              "population": sample.info["population"], "empty_urls": sample.info["empty_urls"]}
    if not download:
        return report
    options = dict(img2dataset or {})
    executable = find_img2dataset(options.get("executable"))
    shards = out / SHARDS_DIR
    cmd = img2dataset_command(executable, sample, shards, options)
    start = time.time()
    run_img2dataset(cmd, out / "img2dataset.log")
    image_size = int(options.get("image_size", IMG2DATASET_DEFAULTS["image_size"]))
    report.update(summarize_shards(shards, image_size))
    report.update(shards_dir=str(shards), img2dataset_command=cmd, download_time_s=round(time.time() - start, 1))
    if min_downloaded is not None:
        report["min_downloaded"] = int(min_downloaded)
        report["enough"] = report["downloaded"] >= int(min_downloaded)
    write_json(report, out / REPORT_FILE)
    logger.info(f"{dataset}: {report['downloaded']} of {report['requested']} downloaded "
                f"({100 * report['success_rate']:.1f}%), {report['failed_to_download']} failed to download, "
                f"{report['failed_to_resize']} failed to decode/resize -> {out / REPORT_FILE}")
    if report.get("enough") is False:
        logger.warning(f"warning: {dataset}: fewer than {min_downloaded} images downloaded; raise num_urls and "
                       "rerun into a new folder")
    return report


def download_from_config(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """`scripts/download.py`: the plain `configs/download.yaml` config in, the report out."""
    missing = [k for k in ("dataset", "metadata", "out") if cfg.get(k) in (None, "???")]
    if missing:
        raise DownloadConfigError(f"set {', '.join(f'{k}=...' for k in missing)} (see configs/download.yaml)")
    dataset = str(cfg["dataset"])
    readers = cfg.get("readers") or {}
    if dataset not in readers:
        raise DownloadConfigError(f"no reader for dataset {dataset!r}; configured: {sorted(readers)} "
                                  f"(add one with +readers.{dataset}.reader=tsv|parquet|sqlite ...)")
    min_downloaded = cfg.get("min_downloaded")
    return download_dataset(dataset, str(cfg["metadata"]), str(cfg["out"]), readers[dataset],
                            num_urls=int(cfg.get("num_urls", 1_500_000)), seed=int(cfg.get("seed", 42)),
                            img2dataset=cfg.get("img2dataset"), download=bool(cfg.get("download", True)),
                            min_downloaded=None if min_downloaded is None else int(min_downloaded))
