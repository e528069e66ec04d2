"""The scripts in scripts/ run as plain files, with no sys.path surgery: none is named like a package it imports."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import ROOT

SCRIPTS = sorted((ROOT / "scripts").glob("*.py"))
PACKAGES = sorted(p.name for p in ROOT.iterdir() if (p / "__init__.py").is_file())


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_no_script_shadows_a_package_or_edits_sys_path(script):
    assert script.stem not in PACKAGES, f"{script.name} would shadow the package {script.stem} (its folder is first on sys.path)"
    assert "sys.path" not in script.read_text()


def test_the_describe_script_runs_from_its_own_folder():
    """Hydra's --cfg job composes the config and prints it without running: the imports (bias, describe) resolve."""
    proc = subprocess.run([sys.executable, "describe_data.py", "--cfg", "job", "images_per_dataset=7"],
                          cwd=ROOT / "scripts", capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "images_per_dataset: 7" in proc.stdout
    assert "stages:" in proc.stdout
