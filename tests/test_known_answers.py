"""Known answers: on single-axis planted data, a transform keeps the planted signal or loses it.

Each preset in `configs/data/planted_*.yaml` says which transforms keep its signal and which
lose it, and why. These runs train the real cpu-recipe ConvNeXt on 3 x 300 images (val
3 x 100) and check the side of the threshold:
  keeps: accuracy > chance + 20 points;  loses: accuracy < chance + 10 points.
With 300 val images the bootstrap 95% interval is about +-5.5 points, so a "keeps" result of
chance + 20 and a "loses" result of chance + 10 are both more than three standard errors from
the measured values (about 93% and 36% for the planted_color pair).
"""

from __future__ import annotations

import pytest

from tests.conftest import read_results, run_cli

CASES = [
    ("planted_color", "mean_rgb", "keeps"),
    ("planted_color", "canny", "loses"),
    ("planted_texture", "hpf", "keeps"),
    ("planted_texture", "mean_rgb", "loses"),
]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("known-answer-cache")


@pytest.mark.slow
@pytest.mark.parametrize("preset, transform, expectation", CASES)
def test_single_axis_preset_known_answer(preset, transform, expectation, cache, tmp_path):
    from omegaconf import OmegaConf

    from tests.conftest import ROOT

    declared = OmegaConf.load(ROOT / "configs" / "data" / f"{preset}.yaml").expected
    assert transform in declared[expectation], f"{preset}.yaml does not declare that {transform} {expectation}"
    run_cli("classify.py", f"data={preset}", f"transform={transform}", "data.per_dataset=300",
            "data.val_per_dataset=100", "data.generator.n_per_dataset=400", "recipe.epochs=8", "seed=0",
            f"out={tmp_path / 'run'}", f"cache_dir={cache}")
    r = read_results(tmp_path / "run")
    margin = r["accuracy"] - r["chance"]
    assert r["n_val"] == 300
    if expectation == "keeps":
        assert margin > 0.20, f"{transform} on {preset}: {r['accuracy']:.3f} should be far above chance"
    else:
        assert margin < 0.10, f"{transform} on {preset}: {r['accuracy']:.3f} should be near chance"
