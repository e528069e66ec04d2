"""The planted-bias generator: determinism, the cache, the presets and their known answers.

The known answers are checked here without training, on statistics of the rendered images:
on `planted_color` the mean colour separates the datasets and edge maps do not; on
`planted_texture` high-frequency energy separates them and the mean colour does not.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
from omegaconf import OmegaConf

import bias.data.planted as planted
from bias.data.planted import (
    AXES,
    DONE_FILE,
    SHAPES,
    DatasetParams,
    PlantedConfig,
    PlantedConfigError,
    ensure_planted,
    image_name,
    render_image,
)

ROOT = Path(__file__).resolve().parent.parent
PRESETS = ["planted", "planted_color", "planted_texture", "planted_objects", "planted_layout"]
#: Single-axis preset -> the axes its datasets are allowed to differ in.
SINGLE_AXIS = {
    "planted_color": {"color"},
    "planted_texture": {"texture"},
    "planted_objects": {"shapes"},
    "planted_layout": {"layout", "background"},
}
KNOWN_TRANSFORMS = {"reference", "mean_rgb", "lpf", "hpf", "pixel_shuffle", "patch_shuffle", "canny"}


def load_preset(name: str):
    return OmegaConf.load(ROOT / "configs" / "data" / f"{name}.yaml")


def tiny_cfg(n: int = 20, seed: int = 0) -> dict:
    return {
        "seed": seed,
        "size": 96,
        "n_per_dataset": n,
        "datasets": {
            "plain": {},
            "busy": {"layout": {"count": [5, 9]}, "texture": {"kinds": {"noise": 1, "stripes": 1}},
                     "overlays": {"text_prob": 0.8, "graphic_prob": 0.8}},
            "bright": {"color": {"brightness": 30}, "background": {"kinds": {"white": 1}}},
        },
    }


def folder_bytes(folders: dict[str, Path]) -> dict[str, bytes]:
    return {f"{name}/{p.name}": p.read_bytes() for name, folder in folders.items() for p in sorted(folder.glob("*.png"))}


def preset_images(name: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    config = PlantedConfig.from_mapping(load_preset(name).generator)
    images = [config.render(dataset, i) for dataset in config.datasets for i in range(n)]
    labels = np.repeat(np.arange(len(config.datasets)), n)
    return np.stack(images), labels


def nearest_centroid_accuracy(features: np.ndarray, labels: np.ndarray) -> float:
    """Fit class centroids on a random half (standardised features), score on the other half."""
    order = np.random.default_rng(0).permutation(len(labels))
    train, test = order[: len(order) // 2], order[len(order) // 2:]
    mean, std = features[train].mean(0), features[train].std(0) + 1e-9
    z = (features - mean) / std
    centroids = np.stack([z[train][labels[train] == k].mean(0) for k in np.unique(labels)])
    predicted = np.argmin(((z[test][:, None] - centroids[None]) ** 2).sum(-1), axis=1)
    return float((predicted == labels[test]).mean())


def canny_edges(image: np.ndarray) -> np.ndarray:
    """The canny transform's recipe: 3x3 Gaussian blur, then Canny(85, 255) on the RGB image."""
    return cv2.Canny(cv2.GaussianBlur(image, (3, 3), 0), 85, 255)


def high_pass_features(image: np.ndarray) -> tuple[float, float]:
    """Log energy above the hpf cut-off (radius 40 at 224) and the share of it in the strongest frequency."""
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float64)
    n = gray.shape[0]
    power = np.abs(np.fft.fftshift(np.fft.fft2(gray))) ** 2
    y, x = np.mgrid[:n, :n] - n // 2
    power = power * (np.hypot(x, y) > 40 / 224 * n)
    return math.log(power.sum() / n**4 + 1e-9), float(power.max() / (power.sum() + 1e-9))


# --- determinism ------------------------------------------------------------------------------


def test_same_seed_gives_the_same_bytes_and_another_seed_other_images(tmp_path):
    first = folder_bytes(ensure_planted(tiny_cfg(), tmp_path / "a", num_workers=0, progress=False))
    second = folder_bytes(ensure_planted(tiny_cfg(), tmp_path / "b", num_workers=0, progress=False))
    assert len(first) == 60 and first == second
    other = folder_bytes(ensure_planted(tiny_cfg(seed=1), tmp_path / "c", num_workers=0, progress=False))
    assert sum(first[k] != other[k] for k in first) == len(first)


def test_parallel_rendering_writes_the_same_bytes_as_serial(tmp_path):
    serial = ensure_planted(tiny_cfg(), tmp_path / "serial", num_workers=0, progress=False)
    parallel = ensure_planted(tiny_cfg(), tmp_path / "parallel", num_workers=2, progress=False, chunk_size=7)
    assert folder_bytes(serial) == folder_bytes(parallel)


def test_small_jobs_render_in_process_by_default(tmp_path, monkeypatch):
    def no_workers(*args):
        raise AssertionError("a few dozen images should not start worker processes")

    monkeypatch.setattr(planted, "_render_in_workers", no_workers)
    ensure_planted(tiny_cfg(), tmp_path, progress=False)


def test_a_broken_worker_pool_falls_back_to_this_process(tmp_path, monkeypatch):
    class BrokenPool:
        def __init__(self, *args, **kwargs):
            pass

        def __enter__(self):
            raise planted.BrokenProcessPool("workers could not import the main module")

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(planted, "ProcessPoolExecutor", BrokenPool)
    with pytest.warns(RuntimeWarning, match="rendering in this process"):
        folders = ensure_planted(tiny_cfg(), tmp_path / "fallback", num_workers=2, progress=False)
    assert folder_bytes(folders) == folder_bytes(ensure_planted(tiny_cfg(), tmp_path / "serial", num_workers=0,
                                                                progress=False))


def test_an_image_depends_only_on_seed_dataset_name_and_index():
    params = DatasetParams.from_mapping(tiny_cfg()["datasets"]["busy"])
    image = render_image(params, seed=3, dataset="busy", index=5)
    assert image.shape == (96, 96, 3) and image.dtype == np.uint8
    for _ in range(2):  # rendering others in between changes nothing
        render_image(params, seed=3, dataset="busy", index=6)
        assert np.array_equal(render_image(params, seed=3, dataset="busy", index=5), image)
    assert not np.array_equal(render_image(params, seed=3, dataset="other", index=5), image)
    assert not np.array_equal(render_image(params, seed=3, dataset="busy", index=4), image)


def test_other_sizes_render():
    params = DatasetParams.from_mapping(tiny_cfg()["datasets"]["busy"])
    assert render_image(params, seed=0, dataset="busy", index=0, size=40).shape == (40, 40, 3)
    assert render_image(params, seed=0, dataset="busy", index=0, size=160).shape == (160, 160, 3)


# --- the cache ----------------------------------------------------------------------------------


def test_second_call_reuses_the_cache(tmp_path, monkeypatch):
    folders = ensure_planted(tiny_cfg(), tmp_path, num_workers=0, progress=False)
    root = next(iter(folders.values())).parent
    assert (root / DONE_FILE).exists()
    assert sorted(p.name for p in folders["plain"].iterdir()) == [image_name(i) for i in range(20)]
    mtimes = {p: p.stat().st_mtime_ns for f in folders.values() for p in f.iterdir()}

    def must_not_render(chunk):
        raise AssertionError("the cache was complete, nothing should be rendered")

    monkeypatch.setattr(planted, "_render_chunk", must_not_render)
    assert ensure_planted(OmegaConf.create(tiny_cfg()), tmp_path, num_workers=0, progress=False) == folders
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes


def test_interrupted_rendering_resumes_with_only_the_missing_images(tmp_path, monkeypatch):
    folders = ensure_planted(tiny_cfg(), tmp_path, num_workers=0, progress=False)
    before = folder_bytes(folders)
    root = folders["plain"].parent
    removed = [folders["plain"] / image_name(3), folders["busy"] / image_name(0), folders["busy"] / image_name(19)]
    for path in removed + [root / DONE_FILE]:
        path.unlink()
    rendered: list[tuple[str, int]] = []
    real = planted._render_chunk

    def counting(chunk):
        rendered.extend((chunk.dataset, i) for i in chunk.indices)
        return real(chunk)

    monkeypatch.setattr(planted, "_render_chunk", counting)
    assert ensure_planted(tiny_cfg(), tmp_path, num_workers=0, progress=False) == folders
    assert sorted(rendered) == [("busy", 0), ("busy", 19), ("plain", 3)]
    assert folder_bytes(folders) == before and (root / DONE_FILE).exists()


def test_a_complete_folder_without_marker_or_with_missing_files_is_not_trusted(tmp_path):
    folders = ensure_planted(tiny_cfg(), tmp_path, num_workers=0, progress=False)
    (folders["bright"] / image_name(7)).unlink()  # the marker is still there
    ensure_planted(tiny_cfg(), tmp_path, num_workers=0, progress=False)
    assert (folders["bright"] / image_name(7)).exists()


def test_changing_a_parameter_renders_into_a_new_folder(tmp_path):
    cfg = tiny_cfg()
    first = ensure_planted(cfg, tmp_path, num_workers=0, progress=False)
    cfg["datasets"]["bright"]["color"]["brightness"] = 31
    second = ensure_planted(cfg, tmp_path, num_workers=0, progress=False)
    assert first["bright"].parent != second["bright"].parent
    assert first["plain"].parent.exists()


# --- presets ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", PRESETS)
def test_preset_loads_and_renders(name, tmp_path):
    cfg = load_preset(name)
    assert "generator" in cfg and cfg.name == name
    assert cfg.generator.n_per_dataset >= cfg.per_dataset + cfg.val_per_dataset
    config = PlantedConfig.from_mapping(cfg.generator)
    assert list(config.datasets) == ["yfcc_like", "cc_like", "datacomp_like"]
    small = OmegaConf.merge(cfg.generator, {"n_per_dataset": 3})
    folders = ensure_planted(small, tmp_path, num_workers=0, progress=False)
    for folder in folders.values():
        images = [cv2.imread(str(p)) for p in sorted(folder.glob("*.png"))]
        assert len(images) == 3 and all(im.shape == (96, 96, 3) for im in images)
    if name in SINGLE_AXIS:
        expected = OmegaConf.to_container(cfg.expected)
        assert {"keeps", "loses"} <= set(expected) <= {"keeps", "loses", "unreliable"}
        lists = [set(expected.get(key) or []) for key in ("keeps", "loses", "unreliable")]
        assert set.union(*lists) <= KNOWN_TRANSFORMS
        assert sum(map(len, lists)) == len(set.union(*lists)), "a transform is in two lists"


@pytest.mark.parametrize("name", sorted(SINGLE_AXIS))
def test_single_axis_presets_differ_only_along_their_axis(name):
    datasets = list(PlantedConfig.from_mapping(load_preset(name).generator).datasets.values())
    differing = {axis for axis in AXES for d in datasets[1:] if getattr(d, axis) != getattr(datasets[0], axis)}
    assert differing == SINGLE_AXIS[name]


def test_default_preset_mixes_bias_strengths():
    datasets = PlantedConfig.from_mapping(load_preset("planted").generator).datasets
    assert datasets["yfcc_like"].layout.count[0] > datasets["datacomp_like"].layout.count[1]
    assert datasets["cc_like"].overlays.text_prob > 3 * datasets["datacomp_like"].overlays.text_prob
    assert datasets["datacomp_like"].background.kinds["white"] > datasets["yfcc_like"].background.kinds["white"]


# --- known answers, without training ------------------------------------------------------------


def test_planted_color_shift_leaves_every_edge_map_unchanged():
    """The same scene under each dataset's colour gives the same Canny map, pixel for pixel."""
    config = PlantedConfig.from_mapping(load_preset("planted_color").generator)
    for index in range(12):
        scenes = [render_image(p, seed=0, dataset="same", index=index) for p in config.datasets.values()]
        assert len({s.reshape(-1, 3).mean(0).round(1).tobytes() for s in scenes}) == 3  # colours differ
        edges = [canny_edges(s) for s in scenes]
        assert all(np.array_equal(edges[0], e) for e in edges[1:])


def test_planted_color_mean_colour_separates_and_edge_density_does_not():
    images, labels = preset_images("planted_color", 150)
    mean_rgb = images.reshape(len(images), -1, 3).mean(1)
    assert nearest_centroid_accuracy(mean_rgb, labels) > 0.8
    edge_fraction = np.array([(canny_edges(im) > 0).mean() for im in images])
    pooled_std = edge_fraction.std()
    means = [edge_fraction[labels == k].mean() for k in range(3)]
    assert max(means) - min(means) < 0.3 * pooled_std
    assert nearest_centroid_accuracy(edge_fraction[:, None], labels) < 1 / 3 + 0.15


def test_planted_texture_high_pass_separates_and_mean_colour_does_not():
    images, labels = preset_images("planted_texture", 150)
    mean_rgb = images.reshape(len(images), -1, 3).mean(1)
    assert nearest_centroid_accuracy(mean_rgb, labels) < 1 / 3 + 0.15
    high_pass = np.array([high_pass_features(im) for im in images])
    assert nearest_centroid_accuracy(high_pass, labels) > 0.65
    energy = [np.median(high_pass[labels == k, 0]) for k in range(3)]
    assert min(energy[0], energy[1]) > energy[2] + 0.5  # textured datasets hold more energy than the clean one


def test_planted_texture_leaves_the_mean_colour_of_a_scene_unchanged():
    config = PlantedConfig.from_mapping(load_preset("planted_texture").generator)
    for index in range(12):
        scenes = [render_image(p, seed=0, dataset="same", index=index) for p in config.datasets.values()]
        means = np.stack([s.reshape(-1, 3).mean(0) for s in scenes])
        assert np.abs(means - means[0]).max() < 0.1


def test_shapes_cover_the_same_area():
    rng = np.random.default_rng(0)
    for shape in SHAPES:
        outline = planted._object_outline(shape, rng)
        assert cv2.contourArea(outline.astype(np.float32)) == pytest.approx(math.pi / 4, rel=1e-4)


# --- errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda c: c["datasets"]["plain"].update(texture={"kinds": {"sparkle": 1}}), "unknown value"),
        (lambda c: c["datasets"]["plain"].update(shapes={"vocabulary": {"circle": 1, "blob": 1}}), "blob"),
        (lambda c: c["datasets"]["plain"].update(lighting={"sun": 1}), "unknown axis"),
        (lambda c: c["datasets"]["plain"].update(layout={"counts": [1, 2]}), "unknown parameter"),
        (lambda c: c["datasets"]["plain"].update(layout={"count": [5, 1]}), "layout.count"),
        (lambda c: c["datasets"]["plain"].update(texture={"kinds": {"noise": 0}}), "positive sum"),
        (lambda c: c.update(n_per_dataset=0), "n_per_dataset"),
        (lambda c: c.update(datasets={"only": {}}), "two or more"),
        (lambda c: c.update(colour=1), "unknown key"),
    ],
)
def test_bad_parameters_raise_clear_errors(change, message):
    cfg = tiny_cfg()
    change(cfg)
    with pytest.raises(PlantedConfigError, match=message):
        PlantedConfig.from_mapping(cfg)


def test_defaults_are_documented_dataclasses():
    for axis_cls in AXES.values():
        assert dataclasses.is_dataclass(axis_cls)
        doc = axis_cls.__doc__ or ""
        assert all(f.name in doc for f in dataclasses.fields(axis_cls)), axis_cls.__name__
