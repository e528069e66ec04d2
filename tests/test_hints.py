"""Every hint an error message of classify, transform or table prints is a command that works.

A hint is an override in the message (`pass data.paths=...`, `add model=mlp`, `choose another out=DIR`). For each
mistake below the test reads the message, takes out every override it suggests, fills its placeholder (`...`,
`DIR`, `<folder>`, `{...}`) with a real value, and runs the command again with the hint applied: Hydra must
accept it (the key or the group option exists) and the check that failed must now pass.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from bias.cli import check_command_line
from bias.core.errors import BiasError, TrainingDiverged
from bias.experiment.run import validate
from tests.conftest import ROOT, write_colour_dataset

CONFIG_DIR = ROOT / "configs"

#: an override in a message: a dotted key (or a `+`/`~` one), `=`, and a value up to a space, comma or bracket
HINT = re.compile(r"(?<![\w./-])([+~]?[a-z_][\w]*(?:\.[\w]+)*=(?:'[^']*'|\{[^}]*\}|[^\s,;)'\"`]+))")
PLACEHOLDERS = ("...", "DIR", "PATH", "<", "VALUE")


def hints(message: str) -> list[str]:
    """The overrides a message suggests, in order (trailing sentence punctuation removed)."""
    return [h if h.endswith("...") else h.rstrip(".:") for h in HINT.findall(message)]


def composed(config_name: str, overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        return compose(config_name=config_name, overrides=overrides)


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hint_data")
    write_colour_dataset(root / "a", 12, (200, 60, 60), seed=1, size=16)
    write_colour_dataset(root / "b", 12, (60, 60, 200), seed=2, size=16)
    return {"a": root / "a", "b": root / "b"}


def _fill(hint: str, values: dict[str, str]) -> str:
    key, value = hint.split("=", 1)
    if any(p in value for p in PLACEHOLDERS):
        assert key in values, f"the test has no value for the placeholder of {hint!r}"
        return f"{key}={values[key]}"
    return hint


def _validate_error(config_name: str, overrides: list[str], tmp: Path) -> str | None:
    cfg = composed(config_name, [*overrides, f"cache_dir={tmp / 'cache'}"])
    try:
        validate(cfg, classifier=config_name != "transform")
    except BiasError as err:
        return str(err)
    return None


CASES: dict[str, tuple[str, Callable[[dict[str, Path]], list[str]], Callable[[dict[str, Path], Path], dict]]] = {
    # name: (config, failing overrides, placeholder values)
    "folders without paths": ("classify", lambda f: ["data=folders"],
                              lambda f, t: {"data.paths": f"{{a: {f['a']}, b: {f['b']}}}"}),
    "list without its file": ("transform", lambda f: ["data=list", "transform=canny"],
                              lambda f, t: {"data.list_file": str(t / "list.csv")}),
    "a vector transform with an image model": (
        "classify", lambda f: ["data=folders", f"data.paths={{a: {f['a']}, b: {f['b']}}}",
                               "transform=color_hist_vector"], lambda f, t: {}),
    "a caption transform with an image model": (
        "classify", lambda f: ["data=planted", "transform=caption_short"], lambda f, t: {}),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_hint_of_a_config_error_is_accepted_and_clears_it(case, folders, tmp_path):
    config_name, failing, placeholder_values = CASES[case]
    if case == "list without its file":
        (tmp_path / "list.csv").write_text("path,dataset\n" + "".join(
            f"{p},{name}\n" for name, folder in folders.items() for p in sorted(folder.iterdir())))
    overrides = failing(folders)
    message = _validate_error(config_name, overrides, tmp_path)
    assert message, f"{overrides} should fail its check"
    suggested = hints(message)
    assert suggested, f"no hint in {message!r}"
    values = placeholder_values(folders, tmp_path)
    for hint in suggested:
        applied = [o for o in overrides if o.split("=")[0] != hint.split("=")[0]] + [_fill(hint, values)]
        after = _validate_error(config_name, applied, tmp_path)  # Hydra rejects a key or option that is not there
        assert after is None or hint.split("=")[0] not in after.split(":")[0], f"{hint!r} did not clear {message!r}"


def test_the_model_name_hint_of_the_command_line_check_composes():
    with pytest.raises(SystemExit) as info:
        check_command_line(["model.name=resnet50"])
    suggested = hints(str(info.value.code))
    assert "model=timm" in suggested and "model=resnet_cpu" in suggested
    for hint in suggested:
        value = _fill(hint, {"model.kwargs": "{drop_rate: 0.1}"})
        composed("classify", [value] if hint.startswith("model=") else ["model=timm", value])


def test_the_hints_of_run_time_errors_compose():
    diverged = str(TrainingDiverged("loss", float("nan"), 1, 3))
    other_folder = str(ROOT / "runs-elsewhere")
    messages = [diverged, "choose another out=DIR"]
    suggested = [h for m in messages for h in hints(m)]
    assert {h.split("=")[0] for h in suggested} >= {"recipe.lr", "recipe.clip_grad", "out"}
    for hint in suggested:
        filled = _fill(hint, {"recipe.lr": "0.0001", "out": other_folder})
        cfg = composed("classify", [filled])
        key, value = filled.split("=", 1)
        assert str(OmegaConf.select(cfg, key)) == value
