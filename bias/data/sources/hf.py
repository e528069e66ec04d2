"""Hugging Face `datasets` as a source: a local `save_to_disk` folder, data files, or a hub id.

The rows used (all, or a seeded sample of `max_items`) are copied once into webdataset shards in
the cache (`<cache>/sources/hf/<name>-<hash>/`, one member `<row>.<ext>` per image) and then read
like any other shards. The copy pins the exact bytes a run used (hub datasets change between
revisions), lets every DataLoader worker read by random access without reopening the dataset, and
makes re-runs and other ranks reuse it (`done.json` records what it holds).

Sampling, recorded in the config and so in the run's hash:
- map-style (default): `max_items` rows drawn without replacement by `numpy.random.default_rng(seed)`
  over the row numbers, kept in row order; the sample id is the row number.
- `streaming: true` (for sets too large to download): `IterableDataset.shuffle(seed, buffer_size)`
  then `take(max_items)`. This shuffles the order of the dataset's files with the seed and then
  draws from a buffer of `buffer_size` rows, so it is an approximately uniform sample (exact when
  the buffer holds the whole set) and the same seed and files give the same sample. The sample id
  is the position in that stream.

Rows whose image is missing (None, no bytes and no path, an unreadable path) are stored as a
sample without an image and reported as broken with the reason; they are never replaced.
The image column may be a `datasets.Image` feature, raw bytes, or a path (relative paths are
resolved against `image_root`, default: the dataset's folder when it is local).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from bias.core.progress import progress_bar
from bias.data.images import sniff_format
from bias.data.sources.base import Source, register_source
from bias.data.sources.webdataset import ShardIndex, build_shard_index, write_shards
from bias.data.split import DataConfigError

HF_MATERIALISE_VERSION = 1
DATA_FILE_BUILDERS = {".parquet": "parquet", ".csv": "csv", ".json": "json", ".jsonl": "json", ".arrow": "arrow"}
_EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "GIF": "gif", "TIFF": "tif", "WEBP": "webp", "BMP": "bmp"}


def _require_datasets():
    try:
        import datasets
    except ImportError:
        raise DataConfigError("data kind 'hf' needs the Hugging Face `datasets` package: "
                              "pip install 'understand-bias[hf]'") from None
    return datasets


@register_source("hf")
@dataclasses.dataclass
class HFSource(Source):
    """`{kind: hf, path: <save_to_disk folder | data file | hub id>, image_column: image, split: train}`."""

    path: str = "???"
    image_column: str = "image"
    split: str | None = None
    data_files: Any = None
    revision: str | None = None
    streaming: bool = False
    max_items: int | None = None
    seed: int = 0
    buffer_size: int = 10_000
    image_root: str | None = None
    per_shard: int = 10_000

    def local_path(self) -> Path | None:
        p = Path(os.path.expanduser(str(self.path)))
        return p.resolve() if p.exists() else None

    def looks_local(self) -> bool:
        s = str(self.path)
        return s.startswith(("/", ".", "~")) or Path(s).suffix.lower() in DATA_FILE_BUILDERS

    def check(self) -> None:
        _require_datasets()
        if self.local_path() is None and self.looks_local():
            raise self.error(f"{self.path} does not exist (a local dataset folder or data file was expected)")
        if self.streaming and not self.max_items:
            raise self.error("streaming needs max_items: the number of items to sample and keep")
        if self.max_items is not None and int(self.max_items) < 1:
            raise self.error(f"max_items must be at least 1, got {self.max_items}")

    def label(self) -> str:
        where = str(self.local_path() or self.path)
        return f"hf:{where}[{self.split}]" if self.split else f"hf:{where}"

    def spec(self) -> dict[str, Any]:
        """Everything that decides the copied rows, including a fingerprint of a local dataset's files."""
        spec = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("name", "per_shard")}
        local = self.local_path()
        spec.update(path=str(local or self.path), version=HF_MATERIALISE_VERSION)
        if local is not None:
            files = [local] if local.is_file() else sorted(p for p in local.rglob("*") if p.is_file())
            stats = [(p, p.stat()) for p in files]
            spec["files"] = [(str(p.relative_to(local.parent)), st.st_size, st.st_mtime_ns) for p, st in stats]
        return json.loads(json.dumps(spec, default=str))

    # ------------------------------------------------------------------------------------------------

    def open(self, cache_dir: Path | None = None):
        """The `datasets.Dataset` or `IterableDataset` the config names (one split).

        Local data files are converted by `datasets` into `<cache_dir>/sources/hf/datasets-cache`; hub ids
        use the Hugging Face cache (HF_HOME), where copies downloaded earlier are found.
        """
        datasets = _require_datasets()
        local = self.local_path()
        converted = str(Path(cache_dir) / "sources" / "hf" / "datasets-cache") if cache_dir and local else None
        try:
            if local is not None and local.is_dir() and ((local / "state.json").exists()
                                                         or (local / "dataset_dict.json").exists()):
                ds = datasets.load_from_disk(str(local))
                if self.streaming:
                    ds = _pick_split(ds, self) if isinstance(ds, datasets.DatasetDict) else ds
                    return ds.to_iterable_dataset()
            elif local is not None and local.is_file():
                builder = DATA_FILE_BUILDERS.get(local.suffix.lower())
                if builder is None:
                    raise self.error(f"cannot read {local.name}: data files must end in {sorted(DATA_FILE_BUILDERS)}")
                ds = datasets.load_dataset(builder, data_files=str(local), split=self.split or "train",
                                           streaming=self.streaming, cache_dir=converted)
            else:
                ds = datasets.load_dataset(str(local or self.path), data_files=self.data_files, split=self.split,
                                           revision=self.revision, streaming=self.streaming, cache_dir=converted)
        except DataConfigError:
            raise
        except (ConnectionError, OSError, ValueError) as err:
            offline = os.environ.get("HF_HUB_OFFLINE", "0")
            raise self.error(
                f"could not load Hugging Face dataset {self.path!r} ({type(err).__name__}: {err}). A local dataset "
                f"must be a save_to_disk folder, a folder of data files or a data file; a hub id needs network "
                f"access (HF_HUB_OFFLINE={offline}) or a copy in the Hugging Face cache: download it once where "
                "there is network, or pass the local path"
            ) from None
        if isinstance(ds, (datasets.DatasetDict, datasets.IterableDatasetDict)):
            ds = _pick_split(ds, self)
        return ds

    def rows(self, cache_dir: Path | None = None) -> Iterator[tuple[str, Any, dict[str, Any]]]:
        """(key, image value, metadata) of the rows to copy, in a seeded, reproducible order."""
        datasets = _require_datasets()
        ds = self.open(cache_dir)
        features = getattr(ds, "features", None) or {}
        if features and self.image_column not in features:
            raise self.error(f"no column {self.image_column!r}; columns: {sorted(features)} (set image_column)")
        if isinstance(features.get(self.image_column), datasets.Image):
            ds = ds.cast_column(self.image_column, datasets.Image(decode=False))
        if self.streaming:
            stream = ds.shuffle(seed=int(self.seed), buffer_size=int(self.buffer_size)).take(int(self.max_items))
            for i, row in enumerate(stream):
                yield f"{i:09d}", _column(row, self.image_column, self), {"position": i, "seed": int(self.seed)}
            return
        n = len(ds)
        rows = np.arange(n)
        if self.max_items is not None and int(self.max_items) < n:
            rows = np.sort(np.random.default_rng(int(self.seed)).choice(n, int(self.max_items), replace=False))
        column = ds.select_columns([self.image_column])
        for start in range(0, len(rows), 256):
            chunk = rows[start:start + 256]
            values = column[[int(r) for r in chunk]][self.image_column]
            for r, value in zip(chunk, values):
                yield f"{int(r):09d}", value, {"row": int(r)}

    def materialise(self, cache_dir: Path) -> list[str]:
        """Copy the rows into shards once; later calls (and other ranks) reuse the copy."""
        spec = self.spec()
        key = hashlib.sha1(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
        folder = Path(cache_dir) / "sources" / "hf" / f"{self.name}-{key}"
        done = folder / "done.json"
        if done.exists():
            record = json.loads(done.read_text())
            if record.get("spec") == spec and all((folder / s).exists() for s in record["shards"]):
                return [str(folder / s) for s in record["shards"]]
        if folder.exists():
            shutil.rmtree(folder)
        local = self.local_path()
        base = self.image_root or (None if local is None else str(local.parent if local.is_file() else local))
        bar = progress_bar(desc=f"copying {self.name} from {self.path}", unit="img", leave=False)

        def samples():
            for key_, value, meta in self.rows(cache_dir):
                data, reason = image_bytes(value, base)
                members = {}
                if data is not None:
                    members[_EXTENSIONS.get(sniff_format(data) or "", "jpg")] = data
                else:
                    meta = {**meta, "error": reason}
                members["json"] = json.dumps(meta).encode()
                bar.update()
                yield key_, members

        shards = write_shards(samples(), folder, int(self.per_shard))
        bar.close()
        tmp = folder / "done.json.tmp"
        tmp.write_text(json.dumps({"spec": spec, "shards": [Path(s).name for s in shards], "items": bar.n}, indent=1))
        os.replace(tmp, done)
        return shards

    def index(self, cache_dir: Path, num_workers: int | None = None) -> ShardIndex:
        self.check()
        shards = self.materialise(Path(cache_dir))
        if not shards:
            raise self.error("the dataset has no rows")
        return build_shard_index(shards, cache_dir, num_workers, desc=f"indexing {self.name}",
                                 labels=[self.label()] * len(shards), root=self.label())


def _pick_split(ds, source: HFSource):
    splits = list(ds.keys())
    if source.split is not None:
        if source.split not in ds:
            raise source.error(f"no split {source.split!r}; splits: {splits}")
        return ds[source.split]
    if len(splits) == 1:
        return ds[splits[0]]
    raise source.error(f"the dataset has splits {splits}: choose one with data.datasets.{source.name}.split=NAME")


def _column(row: dict[str, Any], column: str, source: HFSource) -> Any:
    if column not in row:
        raise source.error(f"no column {column!r}; columns: {sorted(row)} (set image_column)")
    return row[column]


def image_bytes(value: Any, base: str | None) -> tuple[bytes | None, str]:
    """The encoded image of one cell (Image feature dict, bytes, or a path) or (None, why not)."""
    if value is None:
        return None, "no image in row (None)"
    if isinstance(value, dict):
        if value.get("bytes") is not None:
            return bytes(value["bytes"]), ""
        if not value.get("path"):
            return None, "no image in row (neither bytes nor path)"
        value = value["path"]
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value), ""
    if isinstance(value, str):
        path = value if os.path.isabs(value) or base is None else os.path.join(base, value)
        try:
            with open(path, "rb") as f:
                return f.read(), ""
        except OSError as exc:
            return None, f"unreadable image path {value!r} ({exc.strerror or type(exc).__name__})"
    return None, f"image column holds {type(value).__name__}, not encoded bytes or a path"
