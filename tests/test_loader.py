"""The fast pieces of the data pipeline give what the straightforward torchvision pipeline gives.

Crop boxes follow torchvision's RandomResizedCrop rule (same fallback, same distribution of
area shares), the tensor conversion and normalisation give the same float values, and the
decode cache hands back the same pixels, keeps within its byte budget, reports bad files every
time without reading them again, and cannot be changed through a transform.
"""

import random

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from classifiers.augment import ChannelNormalize, crop_box, to_unit_tensor, train_augment
from classifiers.data import DecodeCache, ImageDataset, decode_cache_from_recipe
from transforms.base import Transform

RECIPE = {"image_size": 24, "crop_scale": [0.35, 1.0], "crop_ratio": [0.75, 4 / 3], "eval_resize": 32,
          "groups": {"a": {"hflip": True, "normalize": True}}}


def test_crop_box_falls_back_to_torchvisions_centre_crop():
    img = Image.new("RGB", (40, 40))
    # no box of the whole area with aspect 2-3 fits a square: both take the clamped centre crop
    want = T.RandomResizedCrop.get_params(img, [1.0, 1.0], [2.0, 3.0])
    assert crop_box(40, 40, (1.0, 1.0), (2.0, 3.0), random.Random(0)) == tuple(want) == (10, 0, 20, 40)
    wide = Image.new("RGB", (90, 30))
    assert crop_box(90, 30, (1.0, 1.0), (0.5, 1.0), random.Random(0)) == tuple(
        T.RandomResizedCrop.get_params(wide, [1.0, 1.0], [0.5, 1.0]))


def test_crop_boxes_have_torchvisions_distribution():
    scale, ratio = (0.35, 1.0), (0.75, 4 / 3)
    rng, img = random.Random(0), Image.new("RGB", (64, 48))
    torch.manual_seed(0)
    ours = np.array([crop_box(64, 48, scale, ratio, rng) for _ in range(4000)], dtype=float)
    theirs = np.array([T.RandomResizedCrop.get_params(img, scale, ratio) for _ in range(4000)], dtype=float)
    for boxes in (ours, theirs):
        top, left, h, w = boxes.T
        assert (top >= 0).all() and (left >= 0).all() and (top + h <= 48).all() and (left + w <= 64).all()
    share = lambda b: b[:, 2] * b[:, 3] / (64 * 48)  # noqa: E731
    assert abs(share(ours).mean() - share(theirs).mean()) < 0.015
    assert abs(np.median(ours[:, 3] / ours[:, 2]) - np.median(theirs[:, 3] / theirs[:, 2])) < 0.03
    assert share(ours).min() > 0.3 and abs(share(ours).max() - 1.0) < 0.05


def test_tensor_conversion_and_normalisation_equal_torchvision():
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (17, 23, 3), dtype=np.uint8))
    for img in (rgb, rgb.convert("L"), rgb.convert("RGBA"), rgb.convert("I;16")):
        assert torch.equal(to_unit_tensor(img), T.ToTensor()(img)), img.mode
    x = T.ToTensor()(rgb)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    assert torch.equal(ChannelNormalize(mean, std)(x), T.Normalize(mean, std)(x))
    assert torch.equal(x, T.ToTensor()(rgb))  # not changed in place


def _files(tmp_path, n=4):
    rng = np.random.default_rng(1)
    paths = []
    for i in range(n):
        path = tmp_path / f"{i}.png"
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    return paths + [str(bad)]


def test_cached_decodes_give_the_same_training_items(tmp_path):
    paths = _files(tmp_path)
    labels = [0, 1, 0, 1, 0]
    plain = ImageDataset(paths, labels, train_augment(RECIPE, "a"), None, 3, 1, 24)
    cache = DecodeCache(2**20)
    cached = ImageDataset(paths, labels, train_augment(RECIPE, "a"), None, 3, 1, 24, decode_cache=cache)
    for epoch in (0, 1, 2):
        for i in range(len(paths)):
            a, b = plain[(i, epoch)], cached[(i, epoch)]
            assert a["ok"] == b["ok"] and a["reason"] == b["reason"]
            assert torch.equal(a["image"], b["image"]), (epoch, i)
    assert not cached[(4, 0)]["ok"] and "bad.png" in cached[(4, 0)]["path"]
    # each file read once: 4 images + 1 bad file, then every later item from RAM
    assert cache.misses == 5 and cache.hits == 3 * 5 - 5 + 2 and len(cache) == 5
    assert cache.bytes == 4 * 32 * 32 * 3


def test_decode_cache_keeps_within_its_budget(tmp_path):
    paths = _files(tmp_path)[:4]
    cache = DecodeCache(2 * 32 * 32 * 3 + 10)  # room for two images
    first = [cache.load(p, None).copy() for p in paths]
    again = [cache.load(p, None) for p in paths]
    assert cache.bytes == 2 * 32 * 32 * 3 and len(cache) == 2
    assert cache.hits == 2 and cache.misses == 6  # the two that did not fit are decoded every time
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert DecodeCache(0).load(paths[0], None).shape == (32, 32, 3)
    with pytest.raises(ValueError, match=">= 0"):
        DecodeCache(-1)
    assert decode_cache_from_recipe({"decode_cache_mb": 0}) is None
    assert decode_cache_from_recipe({}) is None
    assert decode_cache_from_recipe({"decode_cache_mb": 1.5}).max_bytes == int(1.5 * 2**20)


class _ZeroInPlace(Transform):
    """An online transform that writes into the array it is given."""

    name = "zero_in_place"
    has_image_stage = True

    def apply_image(self, image):
        image[:8] = 0
        return image


def test_a_transform_that_writes_in_place_cannot_change_the_cache(tmp_path):
    paths = _files(tmp_path)[:2]
    cache = DecodeCache(2**20)
    view = T.Compose([T.CenterCrop(24), to_unit_tensor])
    ds = ImageDataset(paths, [0, 1], view, _ZeroInPlace(), 0, 2, 24, decode_cache=cache)
    original = np.array(Image.open(paths[0]).convert("RGB"))
    first, second = ds[(0, 0)]["image"], ds[(0, 1)]["image"]
    assert torch.equal(first, second)
    assert np.array_equal(cache.load(paths[0], None), original)
    with pytest.raises(ValueError, match="read-only"):
        cache.load(paths[0], None)[0, 0, 0] = 1
