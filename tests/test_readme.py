"""The README's Python example runs as it stands: on two tiny folders (red and blue images) where it expects
them, with the tiny recipe of the tests appended to the config it composes."""

from __future__ import annotations

import ast
import contextlib
import io
import json
import re

import numpy as np

from tests.conftest import ROOT, TINY, write_colour_dataset


def readme_python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)


def test_the_readme_has_one_short_python_example():
    blocks = readme_python_blocks()
    assert len(blocks) == 1
    lines = [line for line in blocks[0].splitlines() if line.strip()]
    assert len(lines) <= 5, lines


def test_the_readme_python_example_runs(tmp_path, monkeypatch):
    import hydra

    write_colour_dataset(tmp_path / "photos" / "a", 30, (200, 60, 60), seed=1)
    write_colour_dataset(tmp_path / "photos" / "b", 30, (60, 60, 200), seed=2)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BIAS_CACHE_DIR", str(tmp_path / "cache"))
    compose = hydra.compose
    tiny = [*TINY, "data.per_dataset=20", "data.val_per_dataset=10"]
    monkeypatch.setattr(hydra, "compose", lambda name, overrides: compose(name, [*overrides, *tiny]))

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(readme_python_blocks()[0], "README.md", "exec"), {})

    runs = list((tmp_path / "runs" / "folders" / "mean_rgb").glob("*/seed0/results.json"))
    assert len(runs) == 1, "the example should write one run under runs/folders/mean_rgb/"
    results = json.loads(runs[0].read_text())
    assert results["datasets"] == ["a", "b"] and results["transform"] == "mean_rgb"
    assert ast.literal_eval(printed.getvalue().strip().splitlines()[-1]) == results["verdict"]
    # the known answer: red against blue, and mean_rgb keeps the colour, so a colour probe separates them
    assert results["verdict"]["best_baseline"]["accuracy"] == 1.0


def test_the_readme_transform_one_liner_runs():
    import transforms

    rgb_uint8_array = np.zeros((32, 32, 3), np.uint8)
    rgb_uint8_array[:, 16:] = 255
    edges = transforms.create_transform("canny").apply_image(rgb_uint8_array)
    assert "transforms.create_transform(\"canny\").apply_image(rgb_uint8_array)" in (ROOT / "README.md").read_text()
    assert edges.shape == (32, 32) and edges[:, 15:17].max() == 255 and edges[:, :12].max() == 0
