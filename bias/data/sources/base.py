"""The source registry: a dataset entry `{kind: ..., ...}` in `data.datasets` -> a `Source` object.

A source knows its parameters (dataclass fields, checked when the config is read), how to check
them cheaply (`check`, before any heavy work) and how to build a checked sample index (`index`).
Every index answers the same questions as `bias.data.index.FileIndex` (`ok`, `reason`, `sha1`, `n_ok`,
`usable()`, `broken()`, `sample_ids(positions)`, `read_paths(positions)`; subclassing
`bias.data.index.SampleIndex` gives `n_ok`, `usable()` and `broken()`), so splits, duplicate reports
and skipped-file accounting work the same for every kind, and several kinds mix in one run.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from bias.core.registry import Registry
from bias.data.split import DataConfigError, check_dataset_names

SOURCE_KINDS: Registry[type[Source]] = Registry("source kind", attr="kind")
register_source = SOURCE_KINDS.register  # class decorator: `kind: <kind>` in a dataset entry builds this class


@dataclasses.dataclass
class Source:
    """Base of every source; subclasses are dataclasses whose fields are the entry's parameters."""

    name: str
    kind: ClassVar[str] = ""

    def check(self) -> None:
        """Cheap checks (paths exist, options make sense) that fail before any indexing."""

    def index(self, cache_dir: Path, num_workers: int | None = None) -> Any:
        raise NotImplementedError

    def error(self, message: str) -> DataConfigError:
        return DataConfigError(f"dataset {self.name!r} ({self.kind}): {message}")


def create_source(name: str, spec: Mapping[str, Any], default_kind: str | None = None) -> Source:
    """Build the source for one `data.datasets.<name>` entry; unknown or unset keys are clear errors."""
    if not isinstance(spec, Mapping):
        raise DataConfigError(f"data.datasets.{name} must be a mapping like {{kind: webdataset, shards: ...}}, "
                              f"got {spec!r}")
    params = dict(spec)
    kind = str(params.pop("kind", None) or default_kind or "")
    if kind not in SOURCE_KINDS:
        raise DataConfigError(f"data.datasets.{name}.kind is {kind or 'not set'!r}; choose one of {SOURCE_KINDS.names()}")
    cls = SOURCE_KINDS.get(kind)
    fields = {f.name for f in dataclasses.fields(cls)} - {"name"}
    unknown = sorted(set(params) - fields)
    if unknown:
        raise DataConfigError(f"data.datasets.{name}: unknown keys {unknown} for kind {kind!r}; "
                              f"it takes {sorted(fields)}")
    unset = sorted(k for k, v in params.items() if v == "???")
    required = {f.name for f in dataclasses.fields(cls)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING} - {"name"}
    unset += sorted(required - set(params))
    if unset:
        hint = f" (or drop the dataset with ~data.datasets.{name})"
        raise DataConfigError(f"data.datasets.{name}.{unset[0]} is not set: pass data.datasets.{name}.{unset[0]}=..."
                              + hint)
    return cls(name=name, **params)


def parse_sources(datasets: Any, default_kind: str | None = None) -> dict[str, Source]:
    """`data.datasets` (name -> entry) to sources, in the given order (label = position)."""
    if datasets is None or datasets == "???" or not isinstance(datasets, Mapping):
        raise DataConfigError("data.datasets must map dataset names to entries like "
                              "{cc: {kind: webdataset, shards: '/data/cc/{00000..00999}.tar'}, ...}")
    check_dataset_names([str(k) for k in datasets])
    return {str(name): create_source(str(name), spec, default_kind) for name, spec in datasets.items()}
