"""The torch side of the data: datasets that never substitute a sample, seeded per item.

Every random choice of the pipeline (crop, flip, RandAugment, per-sample permutations) is
seeded from (run seed, epoch, sample index), so results do not depend on the number of
worker processes, the number of ranks, or on whether training was resumed.

Decoding is deterministic, so a run may keep decoded images in RAM (`DecodeCache`, a byte budget
per process): the probes' pass fills it and every training epoch after it skips the decode.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, Sampler

from bias.core.seeding import item_seed
from bias.core.strings import as_string_column
from bias.data.images import ImageDecodeError
from bias.data.sources import load_image
from transforms.base import Transform

SEED_SALT_TRAIN = 1
SEED_SALT_VAL = 2


class DecodeCache:
    """Decoded images (and decode failures) of one run, in RAM up to `max_bytes` per process.

    Keyed by (read path, resize_shorter); filled first come, first kept, until the budget is spent
    (then the remaining images are decoded every time, as without a cache). Shared by the datasets
    of a run: the baselines' eval-view pass decodes the train and val images once, and training
    reuses them every epoch. Loader workers each hold their own copy (the budget is per process).
    Cached arrays are read-only; callers that change pixels work on a copy.
    """

    def __init__(self, max_bytes: int) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self.max_bytes, self.bytes, self.hits, self.misses = int(max_bytes), 0, 0, 0
        self._items: dict[tuple[str, int | None], np.ndarray | ImageDecodeError] = {}

    def __len__(self) -> int:
        return len(self._items)

    def load(self, read_path: str, resize_shorter: int | None) -> np.ndarray:
        """`bias.data.sources.load_image(read_path, resize_shorter)`, from RAM when it was decoded before."""
        key = (read_path, resize_shorter)
        hit = self._items.get(key)
        if hit is not None:
            self.hits += 1
            if isinstance(hit, ImageDecodeError):
                raise ImageDecodeError(hit.reason, read_path)
            return hit
        self.misses += 1
        try:
            image = load_image(read_path, resize_shorter=resize_shorter)
        except ImageDecodeError as err:
            self._items[key] = err  # a bad file stays bad: reported again without reading it again
            raise
        if self.bytes + image.nbytes <= self.max_bytes:
            image.flags.writeable = False
            self._items[key] = image
            self.bytes += image.nbytes
        return image


def decode_cache_from_recipe(recipe) -> DecodeCache | None:
    """The run's `DecodeCache` from `recipe.decode_cache_mb` (0 or absent: none)."""
    mb = float(recipe.get("decode_cache_mb") or 0)
    return DecodeCache(int(mb * 2**20)) if mb > 0 else None


class EpochSampler(Sampler):
    """Yields `(index, epoch)` pairs: a fresh seeded permutation each epoch (or the plain order).

    Handing the epoch to the dataset with every index keeps augmentation seeds right even with
    persistent workers, which never see `set_epoch` on the dataset.
    """

    def __init__(self, n: int, seed: int, shuffle: bool) -> None:
        self.n, self.seed, self.shuffle, self.epoch = n, seed, shuffle, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        order = np.random.default_rng([self.seed, self.epoch]).permutation(self.n) if self.shuffle else range(self.n)
        for i in order:
            yield int(i), self.epoch


class ImageDataset(Dataset):
    """Reads `read_paths[i]` (a file, a shard member, or its precomputed transform), labels it `labels[i]`.

    Per sample: decode -> image-stage transform -> augmentation to a [0, 1] tensor ->
    tensor-stage transform -> the group's normalisation.

    A file that fails to load comes back as `ok=False` with its reason and a zero image; the
    collate function keeps it out of the loss and the metrics, and the trainer reports it.
    """

    def __init__(
        self,
        read_paths: Sequence[str],
        labels: Sequence[int],
        augment: Callable[[Image.Image], torch.Tensor],
        transform: Transform | None,
        seed: int,
        salt: int,
        image_size: int,
        resize_shorter: int | None = None,
        report_paths: Sequence[str] | None = None,
        normalize: Callable[[torch.Tensor], torch.Tensor] | None = None,
        decode_cache: DecodeCache | None = None,
    ) -> None:
        # packed, not a list of str: forked loader workers would otherwise copy them page by page
        self.read_paths = as_string_column(read_paths)
        self.report_paths = self.read_paths if report_paths is None else as_string_column(report_paths)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.augment, self.transform, self.normalize = augment, transform, normalize
        self.seed, self.salt, self.resize_shorter = seed, salt, resize_shorter
        self.decode_cache = decode_cache
        self.vector = transform is not None and transform.output == "vector"
        self.image_stage = transform is not None and transform.kind == "online" and transform.has_image_stage
        self.placeholder_shape = (transform.vector_size(),) if self.vector else (3, image_size, image_size)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        index, epoch = key if isinstance(key, tuple) else (key, 0)
        s = item_seed(self.seed, self.salt, epoch, index)
        random.seed(s)
        torch.default_generator.manual_seed(s)  # CPU only: torch.manual_seed also queues CUDA seeding (slow)
        generator = torch.Generator().manual_seed(s)
        item = {"label": int(self.labels[index]), "index": index, "ok": True, "reason": "",
                "path": self.report_paths[index]}
        try:
            path = self.read_paths[index]
            if self.decode_cache is None:
                image = load_image(path, resize_shorter=self.resize_shorter)
            else:
                image = self.decode_cache.load(path, self.resize_shorter)
        except ImageDecodeError as err:
            item.update(ok=False, reason=err.reason, image=torch.zeros(self.placeholder_shape))
            return item
        t = self.transform
        if (self.vector or self.image_stage) and not image.flags.writeable:
            image = image.copy()  # a cached decode: the transform may change pixels in place
        if self.vector:
            item["image"] = torch.from_numpy(np.ascontiguousarray(t.apply_image(image), dtype=np.float32))
            return item
        if self.image_stage:
            image = t.apply_image(image)
        x = self.augment(Image.fromarray(image))
        if t is not None and t.has_tensor_stage:
            x = t.apply_tensor(x, generator)
        if self.normalize is not None:
            x = self.normalize(x)
        item["image"] = x
        return item


#: where a sample carries the model's input: images and feature vectors under "image", the token ids and
#: attention mask of a text (`classifiers.text.TextDataset`) under "tokens"
INPUT_KEYS = ("image", "tokens")


def input_key(item: Mapping[str, Any]) -> str:
    """The one key of `INPUT_KEYS` a sample or batch carries its model input under."""
    keys = [k for k in INPUT_KEYS if k in item]
    if len(keys) != 1:
        raise KeyError(f"a sample carries its model input under exactly one of {INPUT_KEYS}, this one under {keys}")
    return keys[0]


def model_input(batch: Mapping[str, Any]) -> torch.Tensor:
    """The model's input tensor of a collated batch (images, feature vectors or token ids)."""
    return batch[input_key(batch)]


def collate(batch: list[dict[str, Any]]) -> dict[str, Any]:
    key = input_key(batch[0])
    return {
        key: torch.stack([b[key] for b in batch]),
        "label": torch.tensor([b["label"] for b in batch], dtype=torch.long),
        "index": torch.tensor([b["index"] for b in batch], dtype=torch.long),
        "ok": torch.tensor([b["ok"] for b in batch], dtype=torch.bool),
        "failed": [{"path": b["path"], "reason": b["reason"]} for b in batch if not b["ok"]],
    }
