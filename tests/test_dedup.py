"""Perceptual hash, the multi-index near-duplicate search, and near-duplicate reports over splits."""

from __future__ import annotations

import io
import itertools

import numpy as np
import pytest
import scipy.fft
from omegaconf import OmegaConf
from PIL import Image

from bias.data.dedup import (
    NearDuplicateOptions,
    compute_phashes,
    hamming,
    low_dct,
    near_duplicate_pairs,
    near_duplicate_report,
    phash_gray32,
    phash_image,
    split_near_duplicates,
)
from bias.data.images import file_sha1
from bias.data.split import Split


def natural(seed: int, w: int = 240, h: int = 180) -> np.ndarray:
    """A smooth random scene with a little noise (structure at many scales, like a photo)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (h // 12, w // 12, 3), dtype=np.uint8)
    img = np.asarray(Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC), dtype=float)
    return np.clip(img + rng.normal(0, 6, (h, w, 3)), 0, 255).astype(np.uint8)


def recompressed(img: np.ndarray, scale: float, quality: int) -> np.ndarray:
    pil = Image.fromarray(img)
    pil = pil.resize((round(pil.width * scale), round(pil.height * scale)), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    pil.save(buf, "JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def test_low_dct_is_the_orthonormal_dct_ii():
    x = np.random.default_rng(0).random((3, 32, 32)) * 255
    want = scipy.fft.dctn(x, type=2, norm="ortho", axes=(1, 2))[:, :8, :8]
    np.testing.assert_allclose(low_dct(x), want, atol=1e-9)


def test_phash_bits_follow_the_ac_coefficients_against_their_median():
    """An image built from chosen DCT coefficients has exactly the bits of the positive ones."""
    rng = np.random.default_rng(5)
    chosen = sorted(rng.choice(np.arange(1, 64), size=31, replace=False).tolist())  # 31 of 63 above the median
    low = -20.0 - rng.random(64) * 10
    low[chosen] = 20.0 + rng.random(31) * 10
    low[0] = 4000.0  # DC: never a bit
    coef = np.zeros((32, 32))
    coef[:8, :8] = low.reshape(8, 8)
    coef[8:, 8:] = rng.normal(0, 5, (24, 24))  # higher frequencies play no part
    gray = scipy.fft.idctn(coef, type=2, norm="ortho")
    assert int(phash_gray32(gray)) == sum(1 << k for k in chosen)
    # a batch gives the same hashes as one at a time
    batch = np.stack([gray, gray[::-1], gray.T])
    assert phash_gray32(batch).tolist() == [int(phash_gray32(g)) for g in batch]


def test_resized_recompressed_copies_match_and_unrelated_images_do_not():
    hashes = [phash_image(natural(s)) for s in range(24)]
    for s in range(24):
        img = natural(s)
        assert hamming(hashes[s], phash_image(recompressed(img, 0.8, 75))) <= 4
        assert hamming(hashes[s], phash_image(recompressed(img, 0.5, 50))) <= 4
    unrelated = [int(hamming(a, b)) for a, b in itertools.combinations(hashes, 2)]
    assert min(unrelated) >= 12


def brute_force(hashes: np.ndarray, r: int) -> set[tuple[int, int, int]]:
    i, j = np.triu_indices(len(hashes), 1)
    d = hamming(hashes[i], hashes[j])
    keep = d <= r
    return set(zip(i[keep].tolist(), j[keep].tolist(), d[keep].tolist()))


@pytest.mark.parametrize("r,bands", [(0, None), (3, None), (4, None), (4, 2), (4, 5), (6, 3), (2, 1)])
def test_search_finds_every_pair_exactly_once(r, bands):
    rng = np.random.default_rng(r * 10 + (bands or 0))
    base = rng.integers(0, 2**63, 1500, dtype=np.int64).astype(np.uint64) * np.uint64(2)
    copies = []
    for k in range(300):  # near copies at distances 0..8 of random originals, some in clusters
        flips = rng.choice(64, size=k % 9, replace=False)
        copies.append(int(base[rng.integers(0, len(base))]) ^ sum(1 << int(b) for b in flips))
    hashes = np.concatenate([base, np.array(copies, dtype=np.uint64), base[:5]])  # plus exact duplicates
    got = [(int(a), int(b), int(d)) for i, j, ds in near_duplicate_pairs(hashes, r, bands, chunk_pairs=997)
           for a, b, d in zip(i, j, ds)]
    assert len(got) == len(set(got))
    assert set(got) == brute_force(hashes, r)
    assert len(got) > 5


def constructed():
    """Hashes with a known near-duplicate structure at max_hamming=4 (see the expected counts below)."""
    rng = np.random.default_rng(3)
    base = [int(v) for v in rng.integers(0, 2**63, 40, dtype=np.int64)]
    flip = lambda h, *bits: h ^ sum(1 << b for b in bits)  # noqa: E731
    h1, h2, h3, h4, h5 = base[:5]
    items = [  # (dataset, train?, hash)
        (0, True, h1), (0, True, flip(h1, 3)),  # 0-1 within a, train-train
        (0, False, h2), (0, True, flip(h2, 1, 2)),  # 2-3 within a, val-train
        (1, True, h3), (2, False, flip(h3, 10)), (2, True, flip(h3, 11)),  # 4-5, 4-6 across b-c; 5-6 within c
        (1, False, h4),
        (2, True, h5), (0, True, flip(h5, 0, 1, 2, 3, 4)),  # distance 5: not near at 4
    ]
    items += [(k % 3, k % 4 != 0, h) for k, h in enumerate(base[5:])]
    labels = np.array([d for d, _, _ in items])
    is_train = np.array([t for _, t, _ in items])
    hashes = np.array([h for _, _, h in items], dtype=np.uint64)
    d = hamming(hashes[:, None], hashes[None, :])
    background = d[10:, :][:, 10:][np.triu_indices(len(items) - 10, 1)]
    assert background.min() > 10 and d[:10, 10:].min() > 10
    return labels, is_train, hashes


def test_report_counts_are_exact_on_a_constructed_set():
    labels, is_train, hashes = constructed()
    names = ["a", "b", "c"]
    paths = np.array([f"/{names[lab]}/{k}.jpg" for k, lab in enumerate(labels)], dtype=object)
    valid = np.ones(len(labels), dtype=bool)
    rep = near_duplicate_report(names, paths, labels, is_train, hashes, valid, max_hamming=4)
    assert rep["pairs"] == {"within_dataset": {"a": 2, "b": 0, "c": 1}, "across_datasets": 2, "train_val": 3}
    assert rep["images"] == {"val_with_train_match": 2, "train_with_val_match": 3,
                             "with_other_dataset_match": {"a": 0, "b": 1, "c": 2}}
    train_pos = {k: p for p, k in enumerate(np.flatnonzero(is_train))}
    assert rep["_train_val_positions"].tolist() == sorted(train_pos[k] for k in (3, 4, 6))
    assert rep["_across_positions"].tolist() == sorted(train_pos[k] for k in (4, 6))
    assert {(e["train"], e["val"]) for e in rep["examples"]["train_val"]} == {
        ("/a/3.jpg", "/a/2.jpg"), ("/b/4.jpg", "/c/5.jpg"), ("/c/6.jpg", "/c/5.jpg")}
    assert rep["hashed"] == len(labels)
    # one more bit of tolerance adds the distance-5 pair across a and c (both train)
    rep5 = near_duplicate_report(names, paths, labels, is_train, hashes, valid, max_hamming=5)
    assert rep5["pairs"]["across_datasets"] == 3 and rep5["pairs"]["train_val"] == 3
    # an invalid hash (undecodable file) takes no part
    valid[1] = False
    assert near_duplicate_report(names, paths, labels, is_train, hashes, valid, 4)["pairs"]["within_dataset"]["a"] == 1


@pytest.fixture()
def near_copy_folders(tmp_path):
    """Two datasets; b/0 is a resized, recompressed copy of a/0; a/2 is a copy of a/1."""
    for name, seeds in (("a", [10, 11, 12, 13, 14, 15]), ("b", [20, 21, 22, 23, 24, 25])):
        (tmp_path / name).mkdir()
        for k, s in enumerate(seeds):
            Image.fromarray(natural(s)).save(tmp_path / name / f"{k}.png")
    Image.fromarray(recompressed(natural(10), 0.7, 70)).save(tmp_path / "b" / "0.png")
    Image.fromarray(recompressed(natural(11), 0.9, 80)).save(tmp_path / "a" / "2.png")
    return tmp_path


def test_split_near_duplicates_reports_and_excludes_from_train(near_copy_folders, tmp_path):
    root = near_copy_folders
    arr = lambda *p: np.array([str(root / x) for x in p], dtype=object)  # noqa: E731
    train = arr("a/0.png", "a/1.png", "a/3.png", "b/0.png", "b/1.png", "b/2.png")
    val = arr("a/2.png", "a/4.png", "b/3.png", "b/4.png")
    sha = lambda ps: np.array([file_sha1(p) for p in ps], dtype=object)  # noqa: E731
    split = Split(["a", "b"], train, np.array([0, 0, 0, 1, 1, 1]), sha(train), val, np.array([0, 0, 1, 1]), sha(val))
    cache = tmp_path / "cache"
    opts = NearDuplicateOptions(enabled=True, max_hamming=4, exclude_across_datasets=True)
    rep, drop = split_near_duplicates(split, opts, cache, num_workers=1)
    assert rep["pairs"] == {"within_dataset": {"a": 1, "b": 0}, "across_datasets": 1, "train_val": 1}
    assert rep["examples"]["train_val"][0]["val"].endswith("a/2.png")
    assert drop.tolist() == [0, 3] and rep["excluded_from_train"] == 2  # a/0 and b/0
    _, drop = split_near_duplicates(split, NearDuplicateOptions(enabled=True, exclude_train_val=True), cache, 1)
    assert drop.tolist() == [1]  # a/1, the original of val's a/2
    # hashes are cached by content: the second pass decodes nothing
    (root / "a" / "0.png").rename(root / "a" / "moved.png")
    hashes, failed = compute_phashes(train, split.train_sha1, cache, num_workers=1)
    assert failed == {} and hashes[0] == phash_image(natural(10))


def test_options_reject_unknown_keys():
    with pytest.raises(ValueError, match="unknown data.near_duplicates option"):
        NearDuplicateOptions.from_config({"enabled": True, "max_distance": 3})
    assert not NearDuplicateOptions.from_config(None).enabled


def test_prepare_split_wires_the_option(near_copy_folders, tmp_path):
    from bias.core.distributed import partial_state
    from bias.experiment.run import config_hash, prepare_split

    data = {"kind": "folders", "name": "folders", "paths": {"a": str(near_copy_folders / "a"),
                                                           "b": str(near_copy_folders / "b")},
            "per_dataset": 4, "val_per_dataset": 2, "split_seed": 0, "resize_shorter": None}
    base = {"cache_dir": str(tmp_path / "cache"), "num_workers": 0, "transform": {"name": "reference"},
            "recipe": {"name": "cpu"}}
    cfg = OmegaConf.create({**base, "data": {**data, "near_duplicates": {"enabled": True, "max_hamming": 4,
                                                                         "exclude_across_datasets": True}}})
    split, _, dupes = prepare_split(cfg, partial_state())
    near = dupes["near"]
    assert near["pairs"]["across_datasets"] == 1 and near["pairs"]["within_dataset"]["a"] == 1
    across = {near["examples"]["across_datasets"][0]["a"], near["examples"]["across_datasets"][0]["b"]}
    kept = set(split.train_paths.tolist())
    in_train = {p for p in across if p in set(prepare_split(OmegaConf.create({**base, "data": data}),
                                                            partial_state())[0].train_paths.tolist())}
    assert near["excluded_from_train"] == len(in_train) and not (in_train & kept)
    # disabled (or absent) near-duplicate options do not change the run's config hash
    off = OmegaConf.create({**base, "data": {**data, "near_duplicates": {"enabled": False, "max_hamming": 4}}})
    assert config_hash(off) == config_hash(OmegaConf.create({**base, "data": data})) != config_hash(cfg)
