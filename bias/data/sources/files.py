"""Image files on disk: a folder searched recursively, or a parquet / CSV list of paths.

Both are checked by `bias.data.index` (every file decoded once, stored, reused while unchanged), so a
listed file that is missing or broken is counted and reported like a broken file in a folder.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from bias.core.strings import StringColumn
from bias.data.index import FileIndex, Listing, build_index, index_listing
from bias.data.sources.base import Source, register_source

_CHUNK = 65536  # rows made absolute at a time


@register_source("folder")
@dataclasses.dataclass
class FolderSource(Source):
    """`{kind: folder, path: /data/yfcc}`: every image file under the folder (as `data=folders` does)."""

    path: str = "???"

    def folder(self) -> Path:
        return Path(os.path.expanduser(str(self.path)))

    def check(self) -> None:
        if not self.folder().is_dir():
            raise self.error(f"folder {self.folder()} does not exist or is not a folder")

    def index(self, cache_dir: Path, num_workers: int | None = None) -> FileIndex:
        self.check()
        return build_index(self.folder(), cache_dir, num_workers, desc=f"indexing {self.name}")


LIST_FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": ",", ".tsv": "\t"}


@register_source("list")
@dataclasses.dataclass
class ListSource(Source):
    """`{kind: list, file: /data/lists/all.parquet, path_column: path}`: the files named by one column.

    Relative paths are resolved against `root` (default: the list file's folder). With
    `dataset_column`, only rows whose value there equals `select` (default: this dataset's name)
    belong to this dataset, so one list can hold several datasets.
    """

    file: str = "???"
    path_column: str = "path"
    root: str | None = None
    dataset_column: str | None = None
    select: Any = None

    def list_file(self) -> Path:
        return Path(os.path.expanduser(str(self.file))).resolve()

    def check(self) -> None:
        f = self.list_file()
        if not f.is_file():
            raise self.error(f"list file {f} does not exist")
        if f.suffix.lower() not in LIST_FORMATS:
            raise self.error(f"list file {f.name} must end in one of {sorted(LIST_FORMATS)}")
        if self.root is not None and not Path(os.path.expanduser(str(self.root))).is_dir():
            raise self.error(f"root {self.root} is not a folder")

    def read_paths_from_list(self) -> StringColumn:
        """The absolute paths of this dataset's rows, sorted, each once (packed; made absolute in chunks)."""
        f = self.list_file()
        fmt = LIST_FORMATS[f.suffix.lower()]
        columns = [self.path_column] + ([self.dataset_column] if self.dataset_column else [])
        if fmt == "parquet":
            names = pq.read_schema(f).names
            self._require(columns, names)
            table = pq.read_table(f, columns=columns)
        else:
            table = pacsv.read_csv(f, parse_options=pacsv.ParseOptions(delimiter=fmt),
                                   convert_options=pacsv.ConvertOptions(
                                       column_types={c: pa.string() for c in columns}))
            self._require(columns, table.column_names)
        paths = table.column(self.path_column).cast(pa.large_string()).combine_chunks()
        if self.dataset_column:
            want = str(self.name if self.select is None else self.select)
            values = table.column(self.dataset_column).cast(pa.string()).combine_chunks()
            paths = paths.filter(pc.fill_null(pc.equal(values, want), False))
            if len(paths) == 0:
                found = sorted(str(v) for v in pc.unique(values).to_pylist())[:10]
                raise self.error(f"no rows of {f.name} have {self.dataset_column} == {want!r}; values there: {found}")
        root = Path(os.path.expanduser(str(self.root))).resolve() if self.root is not None else f.parent
        paths = paths.filter(pc.and_(pc.is_valid(paths), pc.not_equal(paths, "")))
        chunks = [StringColumn(os.path.normpath(os.path.join(root, p)) for p in paths.slice(i, _CHUNK).to_pylist())
                  for i in range(0, len(paths), _CHUNK)]
        unique = pc.unique(StringColumn.concat(chunks).to_arrow())
        return StringColumn.from_arrow(unique.take(pc.sort_indices(unique)))

    def _require(self, columns: list[str], names: list[str]) -> None:
        missing = [c for c in columns if c not in names]
        if missing:
            raise self.error(f"{self.list_file().name} has no column {missing[0]!r}; its columns are {names}")

    def index(self, cache_dir: Path, num_workers: int | None = None) -> FileIndex:
        self.check()
        listing = Listing.from_paths(self.read_paths_from_list())
        spec = repr((str(self.list_file()), self.path_column, self.root, self.dataset_column,
                     self.name if self.select is None else self.select))
        store = Path(cache_dir) / "index" / f"list-{self.name}-{hashlib.sha1(spec.encode()).hexdigest()[:16]}.parquet"
        return index_listing(str(self.list_file()), listing, store, num_workers, desc=f"indexing {self.name}")
