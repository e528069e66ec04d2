"""The README's Python example runs as it stands: on two tiny folders (red and blue images) where it expects
them, with the tiny recipe of the tests appended to the config it composes."""

from __future__ import annotations

import ast
import contextlib
import io
import json
import re
import shlex
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ROOT, TINY, write_colour_dataset


def readme_python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)


#: the config each script composes, where its name differs from the script's
CONFIG_OF_SCRIPT = {"describe_data": "describe"}


def readme_commands() -> list[list[str]]:
    """The README's three example commands, each as its script's name and its overrides."""
    block = re.search(r"## Three commands\n\n```bash\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S).group(1)
    commands = []
    for line in block.splitlines():
        if line.strip() and not line.startswith("#"):
            words = shlex.split(line)
            script = next(i for i, w in enumerate(words) if w.startswith("scripts/"))
            commands.append([Path(words[script]).stem, *words[script + 1:]])
    return commands


def test_the_readme_shows_three_commands():
    assert [c[0] for c in readme_commands()] == ["classify", "table", "describe_data"]


@pytest.mark.parametrize("command", readme_commands(), ids=lambda c: c[0])
def test_each_readme_command_composes_a_valid_config(command):
    """Hydra rejects a key that does not exist; the schema check rejects a value of the wrong kind."""
    from hydra import compose, initialize_config_module

    from bias.experiment.config import validate_classify_config
    from describe.run import validate_describe_config

    name = CONFIG_OF_SCRIPT.get(command[0], command[0])
    with initialize_config_module("bias.configs", version_base=None):
        cfg = compose(name, command[1:])
    (validate_describe_config if name == "describe" else validate_classify_config)(cfg)
    if command[0] == "classify":
        import transforms

        transforms.create_transform(cfg.transform.name)


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
