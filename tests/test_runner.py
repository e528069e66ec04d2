"""The model-inference engine: the batched runner, the output store and the model-transform contract."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
from PIL import Image

from bias.data.images import file_sha1
from bias.inference.runner import RunTimings, run_batched, split_batch
from bias.inference.store import TEXT, OutputSpec, OutputStore
from transforms.base import ModelTransform, Transform, output_store
from transforms.registry import create_transform


def _images(folder: Path, n: int, size: int = 24, seed: int = 0) -> tuple[list[str], list[str]]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        p = folder / f"{i:03d}.png"
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(p)
        paths.append(str(p))
    return paths, [file_sha1(p) for p in paths]


class MeanColour(ModelTransform):
    """A tiny 'model' with every kind of output: a 1x1 conv (identity weights) and its per-channel mean.

    image: the input as it came out of the model; text: the mean as a sentence; table: one row per
    channel brighter than mid-grey; vector: the mean RGB. Known answers all round.
    """

    name = "mean_colour_test"
    outputs = {"image": OutputSpec("image"), "caption": TEXT,
               "bright": OutputSpec("table", columns={"channel": pa.int64(), "mean": pa.float64()}),
               "rgb": OutputSpec("vector", dim=3)}
    loads = 0

    def __init__(self, oom_above: int | None = None, batch_size: int = 4, device: str = "cpu",
                 dtype: str = "auto", weights=None) -> None:
        super().__init__(weights=weights, batch_size=batch_size, device=device, dtype=dtype)
        self.oom_above = oom_above
        self._sizes: list[int] = []

    def load_model(self, device, dtype):
        type(self).loads += 1
        conv = torch.nn.Conv2d(3, 3, 1, bias=False)
        with torch.no_grad():
            conv.weight.copy_(torch.eye(3)[:, :, None, None])
        return conv

    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float() / 255

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        self._sizes.append(len(batch))
        if self.oom_above is not None and len(batch) > self.oom_above:
            raise torch.OutOfMemoryError("CUDA out of memory (test double)")
        return self.model(batch)

    def postprocess(self, outputs: torch.Tensor, batch: torch.Tensor) -> list[dict]:
        items = []
        for x in outputs:
            mean = x.mean(dim=(1, 2)).double().numpy()
            image = (x.permute(1, 2, 0).clamp(0, 1).numpy() * 255).round().astype(np.uint8)
            bright = [c for c in range(3) if mean[c] > 0.5]
            items.append({"image": image, "caption": f"mean {mean[0]:.4f} {mean[1]:.4f} {mean[2]:.4f}",
                          "bright": {"channel": bright, "mean": [float(mean[c]) for c in bright]},
                          "rgb": mean.astype(np.float32)})
        return items


def _run(t: Transform, paths, shas, cache: Path, **kw):
    return run_batched(t, paths, shas, output_store(t, cache, None), num_workers=0, show_progress=False, **kw)


def test_every_output_kind_is_stored_and_read_back_with_known_values(tmp_path):
    paths, shas = _images(tmp_path / "img", 7)
    t = MeanColour()
    report = _run(t, paths, shas, tmp_path / "c")
    assert (report.computed, report.reused, report.repaired, report.failed) == (7, 0, 0, [])
    store = report.store
    truth = {s: np.asarray(Image.open(p), dtype=np.float64).mean(axis=(0, 1)) / 255 for p, s in zip(paths, shas)}
    text = dict(zip(store.read_text("caption")["sha1"].to_pylist(), store.read_text("caption")["text"].to_pylist()))
    sha_v, vec = store.read_vectors("rgb")
    for s, m in truth.items():
        assert text[s] == f"mean {m[0]:.4f} {m[1]:.4f} {m[2]:.4f}"
        np.testing.assert_allclose(vec[list(sha_v.astype(str)).index(s)], m, atol=1e-5)
        stored = np.asarray(Image.open(store.image_path(s)))
        assert np.array_equal(stored, np.asarray(Image.open(paths[shas.index(s)])))  # identity conv, lossless PNG
    table = store.read_table("bright").to_pylist()
    expected = [(s, c) for s, m in truth.items() for c in range(3) if m[c] > 0.5]
    assert sorted((r["sha1"], r["channel"]) for r in table) == sorted(expected)
    with pytest.raises(KeyError, match="no text output 'rgb'"):
        store.read_text("rgb")


def test_resumes_loads_once_and_only_when_something_is_pending(tmp_path):
    paths, shas = _images(tmp_path / "img", 6)
    MeanColour.loads = 0
    t = MeanColour()
    _run(t, paths[:3], shas[:3], tmp_path / "c")
    assert MeanColour.loads == 1 and t._model is None  # freed after the run
    again = _run(t, paths, shas, tmp_path / "c")
    assert (again.computed, again.reused) == (3, 3) and MeanColour.loads == 2
    done = _run(t, paths, shas, tmp_path / "c")
    assert (done.computed, done.reused) == (0, 6) and MeanColour.loads == 2  # nothing pending: no load


def test_duplicated_content_is_computed_once_and_ranks_split_without_gaps(tmp_path):
    paths, shas = _images(tmp_path / "img", 9)
    t = MeanColour()
    store = output_store(t, tmp_path / "c", None)
    reports = [run_batched(t, paths + paths[:4], shas + shas[:4], store, rank=r, world_size=2, num_workers=0,
                           show_progress=False) for r in (1, 0)]  # rank 0 last: it merges every part
    assert sorted(r.ranks[0]["computed"] for r in reports) == [4, 5]
    assert len(store.entries()) == 9


def test_out_of_memory_halves_the_batch_and_keeps_every_output(tmp_path):
    paths, shas = _images(tmp_path / "img", 10)
    ref = _run(MeanColour(batch_size=2), paths, shas, tmp_path / "ref")
    t = MeanColour(oom_above=3, batch_size=8)
    report = _run(t, paths, shas, tmp_path / "oom")
    assert report.computed == 10 and report.failed == [] and report.ranks[0]["oom_retries"] == 2  # 8 -> 4 -> 2
    assert t._sizes[:3] == [8, 4, 2] and max(t._sizes[3:]) <= 2  # later batches cut to what fitted
    for s in shas:
        assert ref.store.image_path(s).read_bytes() == report.store.image_path(s).read_bytes()
    assert ref.store.read_text("caption").to_pylist() == report.store.read_text("caption").to_pylist()


def test_a_single_item_that_does_not_fit_is_an_error_not_a_skip(tmp_path):
    paths, shas = _images(tmp_path / "img", 2)
    with pytest.raises(torch.OutOfMemoryError):
        _run(MeanColour(oom_above=0, batch_size=2), paths, shas, tmp_path / "c")


def test_corrupt_or_missing_outputs_are_recomputed_and_counted_apart_from_broken_sources(tmp_path):
    paths, shas = _images(tmp_path / "img", 5)
    broken = tmp_path / "img" / "broken.png"
    broken.write_bytes(b"not an image at all")
    paths, shas = paths + [str(broken)], shas + [file_sha1(broken)]
    t = create_transform("canny")
    first = _run(t, paths, shas, tmp_path / "c")
    assert first.computed == 5 and [f["stage"] for f in first.failed] == ["transform"]
    store = first.store
    store.image_path(shas[0]).write_bytes(b"garbage where a PNG was")
    store.image_path(shas[1]).unlink()
    ok, damaged = store.stored(np.array(shas[:5], dtype="S40"))
    assert ok.tolist() == [False, False, True, True, True] and damaged.tolist() == [True, True, False, False, False]
    second = _run(t, paths, shas, tmp_path / "c")
    assert (second.computed, second.repaired, second.reused) == (2, 2, 3)
    assert [f["path"] for f in second.failed] == [str(broken)]  # the broken source, not the repaired entries
    assert np.array_equal(np.asarray(Image.open(store.image_path(shas[0]))),
                          t.apply_image(np.asarray(Image.open(paths[0]).convert("RGB"))))


class _FailsOnDark(MeanColour):
    name = "fails_on_dark_test"

    def preprocess(self, image):
        if image.mean() < 100:
            raise ValueError("too dark for this model")
        return super().preprocess(image)


def test_a_failing_input_is_listed_with_its_stage_and_the_run_goes_on(tmp_path):
    folder = tmp_path / "img"
    folder.mkdir()
    paths = []
    for i, v in enumerate([20, 200, 220]):
        p = folder / f"{i}.png"
        Image.fromarray(np.full((8, 8, 3), v, np.uint8)).save(p)
        paths.append(str(p))
    shas = [file_sha1(p) for p in paths]
    report = _run(_FailsOnDark(), paths, shas, tmp_path / "c")
    assert report.computed == 2
    assert report.failed == [{"path": paths[0], "reason": "ValueError: too dark for this model", "stage": "preprocess"}]


def test_worker_processes_give_the_same_outputs(tmp_path, monkeypatch):
    import bias.inference.runner as runner

    monkeypatch.setattr(runner, "MIN_ITEMS_FOR_WORKERS", 0)  # workers even for these few images
    paths, shas = _images(tmp_path / "img", 12)
    t = create_transform("canny")
    a = run_batched(t, paths, shas, output_store(t, tmp_path / "a", None), num_workers=0, show_progress=False)
    b = run_batched(t, paths, shas, output_store(t, tmp_path / "b", None), num_workers=2, show_progress=False)
    assert a.computed == b.computed == 12
    for s in shas:
        assert a.store.image_path(s).read_bytes() == b.store.image_path(s).read_bytes()


def test_cache_key_covers_weights_and_dtype_but_not_runtime_options(tmp_path):
    w1, w2 = tmp_path / "w1.safetensors", tmp_path / "w2.safetensors"
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, w1)
    save_file({"w": torch.ones(2)}, w2)
    key = lambda **kw: MeanColour(**kw).cache_key()  # noqa: E731
    assert key(weights=str(w1)) != key(weights=str(w2))
    assert key(weights=str(w1), dtype="float16") != key(weights=str(w1), dtype="float32")
    assert key(weights=str(w1), batch_size=2) == key(weights=str(w1), batch_size=64)
    assert MeanColour(weights=str(w1)).get_params()["weights"] == str(w1)
    assert "_model" not in MeanColour().get_params()


def test_parameters_come_from_the_constructor_signature():
    class Forgets(Transform):
        name = "forgets"

        def __init__(self, strength: float = 1.0) -> None:
            self.power = strength

    with pytest.raises(AttributeError, match=r"constructor arguments \['strength'\]"):
        Forgets().get_params()
    assert create_transform("canny", low=50).get_params() == {"low": 50, "high": 255, "blur_kernel": 3,
                                                              "l2_gradient": False}


def test_split_batch_covers_every_kind_in_order():
    t = torch.arange(5)
    assert [x.tolist() for x in split_batch(t, 2)] == [[0, 1, 2], [3, 4]]
    assert split_batch([1, 2, 3], 2) == [[1], [2, 3]]
    parts = split_batch({"x": torch.arange(4), "y": [0, 1, 2, 3]}, 2)
    assert parts[1]["x"].tolist() == [2, 3] and parts[1]["y"] == [2, 3]


def test_store_keeps_the_latest_computation_of_a_source(tmp_path):
    store = OutputStore(tmp_path / "s", {"caption": TEXT})
    w = store.writer()
    w.put("a" * 40, {"caption": "first"})
    w.close()
    store.merge()
    w2 = store.writer()
    w2.put("a" * 40, {"caption": "second"})
    w2.put("b" * 40, {"caption": ""})  # an empty output is kept as empty, not dropped
    w2.close()
    store.merge()
    rows = store.read_text("caption").to_pylist()
    assert rows == [{"sha1": "a" * 40, "text": "second"}, {"sha1": "b" * 40, "text": ""}]


class _SlowPreprocess(MeanColour):
    """Preprocess sleeps 20 ms per item, forward 10 ms per batch: in one process the loop mostly waits for data."""

    name = "slow_preprocess_test"

    def preprocess(self, image):
        time.sleep(0.02)
        return super().preprocess(image)

    def forward(self, batch):
        time.sleep(0.01)
        return super().forward(batch)


def test_timings_record_every_batch_and_where_the_time_went_without_changing_outputs(tmp_path):
    paths, shas = _images(tmp_path / "img", 7)
    seen = []
    timings = RunTimings(on_batch=seen.append)
    timed = _run(_SlowPreprocess(batch_size=3), paths, shas, tmp_path / "a", timings=timings)
    plain = _run(_SlowPreprocess(batch_size=3), paths, shas, tmp_path / "b")
    assert [b.items for b in timings.batches] == [3, 3, 1] and seen == timings.batches and timings.items() == 7
    for b in timings.batches:
        assert b.wait >= 0.02 * b.items * 0.9 and b.forward >= 0.009 and b.postprocess >= 0 and b.submit >= 0
    assert timings.load >= 0 and timings.finish >= 0
    assert 0.5 < timings.wait_share() < 1 and timings.wait_share(skip=1) > 0.5  # 20 ms per item vs 10 ms per batch
    assert timings.loop() == pytest.approx(sum(b.total for b in timings.batches))
    assert timings.items(skip=1) == 4 and RunTimings().wait_share() == 0.0
    for s in shas:  # the same outputs with and without timings
        assert timed.store.image_path(s).read_bytes() == plain.store.image_path(s).read_bytes()
