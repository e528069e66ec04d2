"""Every project path named in a config comment, a docstring, a script or the docs exists (paths go stale when
files move: `configs/` moved to the top level, `bias/*.py` into layer packages)."""

from __future__ import annotations

import re

from tests.conftest import ROOT

FOLDERS = ("bias", "transforms", "classifiers", "describe", "memorization", "configs", "benchmarks", "scripts",
           "tests", "docs")
PATH = re.compile(r"(?<![\w./-])((?:" + "|".join(FOLDERS) + r")/[\w./-]*\w\.(?:py|yaml|md|json|sh))")
#: files the docs tell a user to create (docs/transforms.md: a worked example of adding a transform)
EXAMPLES_TO_CREATE = {"configs/transform/invert.yaml"}


def texts():
    for pattern in ("configs/**/*.yaml", "scripts/*.py", "docs/*.md", "benchmarks/*.py", "bias/**/*.py",
                    "transforms/**/*.py", "classifiers/*.py", "describe/*.py", "memorization/**/*.py"):
        yield from ROOT.glob(pattern)
    yield ROOT / "README.md"


def test_every_named_project_path_exists():
    stale = [f"{path.relative_to(ROOT)}: {m}" for path in texts() for m in PATH.findall(path.read_text())
             if m not in EXAMPLES_TO_CREATE and not (ROOT / m).exists()]
    assert not stale, "\n".join(stale)
