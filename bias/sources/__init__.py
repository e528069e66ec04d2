"""Data sources beside image folders, mixable in one run: each `data.datasets` entry names its `kind`.

    folder      {kind: folder, path: /data/yfcc}
    webdataset  {kind: webdataset, shards: '/data/cc/{00000..00999}.tar'}   (img2dataset output)
    hf          {kind: hf, path: <save_to_disk folder | data file | hub id>, image_column: image, split: train}
    list        {kind: list, file: /data/lists/all.parquet, path_column: path, dataset_column: dataset}

Every source builds a checked index (broken images counted and listed with their reason, never
replaced) that `bias.data.make_split` draws seeded, disjoint train/val splits from; `load_image`
reads any sample the split names, whatever its source.
"""

from __future__ import annotations

import os

import numpy as np

from bias.images import load_rgb
from bias.sources import files, hf, webdataset  # noqa: F401  (registers the kinds)
from bias.sources.base import SOURCE_KINDS, Source, create_source, parse_sources, register_source
from bias.sources.webdataset import LOCATOR_PREFIX, load_member

__all__ = ["SOURCE_KINDS", "Source", "create_source", "load_image", "parse_sources", "register_source"]


def load_image(read_path: str | os.PathLike, resize_shorter: int | None = None) -> np.ndarray:
    """Decode one sample to H x W x 3 uint8: a file path, or a shard member locator (`tar:...`).

    Raises `bias.images.ImageDecodeError` for unusable data, like `bias.images.load_rgb`.
    """
    if isinstance(read_path, str) and read_path.startswith(LOCATOR_PREFIX):
        return load_member(read_path, resize_shorter)
    return load_rgb(read_path, resize_shorter=resize_shorter)
