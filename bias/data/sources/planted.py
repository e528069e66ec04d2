"""The planted-bias presets as a source kind: each generated dataset is a folder of PNGs in the cache."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from bias.data.index import FileIndex
from bias.data.planted import PlantedConfig, PlantedConfigError, ensure_planted
from bias.data.sources.base import Source, register_source
from bias.data.sources.files import FolderSource
from bias.data.split import DataConfigError


@register_source("planted")
@dataclasses.dataclass
class PlantedSource(Source):
    """`{kind: planted, generator: {...}}`: dataset `name` of the planted preset `generator`.

    The preset's datasets are rendered together, once, into `<cache_dir>/planted/` (see
    `bias.data.planted.ensure_planted`) and then indexed like any folder.
    """

    generator: dict[str, Any] = dataclasses.field(default_factory=dict)

    def config(self) -> PlantedConfig:
        try:
            return PlantedConfig.from_mapping(self.generator)
        except PlantedConfigError as err:
            raise self.error(str(err)) from err

    def check(self) -> None:
        if self.name not in self.config().datasets:
            raise self.error(f"the planted generator has no dataset {self.name!r}; it draws {list(self.config().datasets)}")

    def index(self, cache_dir: Path, num_workers: int | None = None) -> FileIndex:
        self.check()
        folder = ensure_planted(self.generator, cache_dir)[self.name]
        return FolderSource(name=self.name, path=str(folder)).index(cache_dir, num_workers)


def planted_sources(generator: dict[str, Any]) -> dict[str, PlantedSource]:
    """One source per dataset of a planted preset, in its label order."""
    try:
        names = list(PlantedConfig.from_mapping(generator).datasets)
    except PlantedConfigError as err:
        raise DataConfigError(f"data.generator: {err}") from err
    return {name: PlantedSource(name=name, generator=dict(generator)) for name in names}
