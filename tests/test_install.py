"""A plain (not editable) install works: the wheel carries the configs and the console commands,
which run from a directory outside the checkout."""

from __future__ import annotations

import os
import site
import subprocess
import sys
import sysconfig
import zipfile

import pytest

from tests.conftest import ROOT, TINY, read_results

COMMANDS = ("bias-classify", "bias-transform", "bias-table", "bias-memorize", "bias-audit", "bias-download")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
                    str(ROOT)], check=True, capture_output=True, text=True, timeout=600)
    return next(out.glob("understand_bias-*.whl"))


def test_the_wheel_holds_the_packages_and_every_config(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    configs = {"bias/" + p.relative_to(ROOT).as_posix() for p in (ROOT / "configs").rglob("*.yaml")}
    assert configs and configs <= names
    assert {"bias/cli.py", "bias/inference/runner.py", "transforms/classical/edges.py", "classifiers/trainer.py",
            "memorization/study.py"} <= names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert all(f"{c} = bias.cli:" in text for c in COMMANDS)


@pytest.mark.slow
def test_a_console_command_runs_outside_the_checkout(wheel, two_folders, tmp_path):
    env_dir = tmp_path / "env"
    subprocess.run([sys.executable, "-m", "venv", str(env_dir)], check=True, timeout=300)
    py = env_dir / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], check=True,
                   timeout=300)
    # dependencies (torch, timm, ...) from this environment; a plain path entry, so the checkout's editable
    # install (activated by a .pth file there) is not: `bias` can only come from the wheel
    target = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                            check=True, capture_output=True, text=True).stdout.strip()
    deps = sysconfig.get_paths()["purelib"]
    with open(os.path.join(target, "zz_test_dependencies.pth"), "w") as f:
        f.write("\n".join([deps, *site.getsitepackages()]) + "\n")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["HF_HUB_OFFLINE"] = "1"
    where = subprocess.run([str(py), "-c", "import bias; print(bias.__file__)"], cwd=outside, env=env,
                           check=True, capture_output=True, text=True).stdout
    assert str(env_dir) in where and str(ROOT) not in where
    mine = tmp_path / "my_configs" / "data"  # a user's own config folder, on Hydra's search path
    mine.mkdir(parents=True)
    (mine / "mine.yaml").write_text("name: mine\npaths: {" + ", ".join(f"{k}: {v}" for k, v in two_folders.items())
                                    + "}\nper_dataset: 12\nval_per_dataset: 6\n")
    proc = subprocess.run([str(env_dir / "bin" / "bias-classify"), f"hydra.searchpath=[file://{mine.parent}]",
                           "data=mine", "transform=canny", *TINY, "recipe.epochs=1", "out=run", "cache_dir=cache"],
                          cwd=outside, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = read_results(outside / "run")
    assert r["n_val"] == 12 and r["transform"] == "canny" and (outside / "cache" / "transforms").is_dir()
    bad = subprocess.run([str(env_dir / "bin" / "bias-classify"), "recipe.epochs=abc"], cwd=outside, env=env,
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 1 and "recipe.epochs: expected an integer, got 'abc'" in bad.stderr
    assert "Traceback" not in bad.stderr
