"""Data sources beside image folders, mixable in one run: each `data.datasets` entry names its `kind`.

    folder      {kind: folder, path: /data/yfcc}
    webdataset  {kind: webdataset, shards: '/data/cc/{00000..00999}.tar'}   (img2dataset output)
    hf          {kind: hf, path: <save_to_disk folder | data file | hub id>, image_column: image, split: train}
    list        {kind: list, file: /data/lists/all.parquet, path_column: path, dataset_column: dataset}
    planted     {kind: planted, generator: {...}}                          (bias.data.planted)

`resolve_sources(data)` turns a whole `data` config into sources: its `datasets` entries, or one of
two shorthands, `paths` (a folder per dataset, `data=folders`) and `generator` (every dataset of a
planted preset, `data=planted`). That is the only dispatch: by the registered kind.

Every source builds a checked index (broken images counted and listed with their reason, never
replaced) that `bias.data.make_split` draws seeded, disjoint train/val splits from; `load_image`
reads any sample the split names, whatever its source.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from bias.data.images import load_rgb
from bias.data.sources import files, hf, planted, webdataset  # noqa: F401  (registers the kinds)
from bias.data.sources.base import SOURCE_KINDS, Source, create_source, parse_sources, register_source
from bias.data.sources.files import FolderSource
from bias.data.sources.planted import planted_sources
from bias.data.sources.webdataset import LOCATOR_PREFIX, load_member
from bias.data.split import DataConfigError, parse_dataset_paths

__all__ = ["SOURCE_KINDS", "Source", "check_distinct_folders", "create_source", "load_image", "parse_sources", "register_source",
           "resolve_sources"]


def resolve_sources(data: Mapping[str, Any]) -> dict[str, Source]:
    """Dataset name -> its source, in label order, for a whole `data` config (see the module docstring)."""
    if data.get("datasets") is not None:
        return check_distinct_folders(parse_sources(data["datasets"]))
    if "paths" in data:
        return check_distinct_folders({name: FolderSource(name=name, path=path)
                                       for name, path in parse_dataset_paths(data["paths"]).items()})
    if data.get("generator") is not None:
        return planted_sources(dict(data["generator"]))
    raise DataConfigError("the data config names no datasets: give data.datasets (one entry per dataset, each with "
                          "its kind), data.paths (one folder per dataset) or data.generator (a planted preset)")


def check_distinct_folders(sources: dict[str, Source]) -> dict[str, Source]:
    """`sources`, if no folder dataset is another's folder or lies inside it (its images would be in both, some as a
    training image of one and a validation image of the other); else one `DataConfigError` naming both."""
    folders = {name: os.path.realpath(s.folder()) for name, s in sources.items() if isinstance(s, FolderSource)
               and str(s.path) != "???"}
    for a, fa in folders.items():
        for b, fb in folders.items():
            if a == b:
                continue
            if fa == fb and a < b:
                raise DataConfigError(f"datasets {a!r} and {b!r} are the same folder {fa}: give each dataset its own "
                                      "folder")
            if fb.startswith(fa.rstrip(os.sep) + os.sep):
                raise DataConfigError(f"dataset {b!r} ({fb}) lies inside the folder of dataset {a!r} ({fa}), which "
                                      f"would hold its images too: give datasets folders that do not contain each other")
    return sources


def load_image(read_path: str | os.PathLike, resize_shorter: int | None = None) -> np.ndarray:
    """Decode one sample to H x W x 3 uint8: a file path, or a shard member locator (`tar:...`).

    Raises `bias.data.images.ImageDecodeError` for unusable data, like `bias.data.images.load_rgb`.
    """
    if isinstance(read_path, str) and read_path.startswith(LOCATOR_PREFIX):
        return load_member(read_path, resize_shorter)
    return load_rgb(read_path, resize_shorter=resize_shorter)
