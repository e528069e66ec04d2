"""The documentation: the README stays short and points to every docs page, the mkdocs site builds with
`--strict` (no broken link or anchor, no page left out of the nav), and its transform table is the registry."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT

README = ROOT / "README.md"


def load_hooks():
    spec = importlib.util.spec_from_file_location("docs_hooks", ROOT / "docs" / "hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "WARNING" not in proc.stderr, proc.stderr
    return out


def test_the_site_builds_strictly_with_every_page(site):
    pages = [p.relative_to(ROOT / "docs").with_suffix("") for p in (ROOT / "docs").glob("*.md")]
    benchmarks = [p.relative_to(ROOT).with_suffix("") for p in (ROOT / "benchmarks" / "results").glob("*.md")]
    for page in [*pages, *benchmarks, "benchmarks/RESULTS"]:
        target = site / "index.html" if str(page) == "index" else site / page / "index.html"
        assert target.exists(), f"{page} is not a page of the site"


def test_every_registered_transform_is_documented(site):
    import transforms

    names = transforms.list_transforms()
    rows = load_hooks().transform_rows()
    assert sorted(r["name"] for r in rows) == sorted(names)
    undocumented = [r["name"] for r in rows if not r["doc"].strip() or not r["keeps"].strip()]
    assert not undocumented, f"give these a class docstring and `keeps`: {undocumented}"
    html = (site / "transforms" / "index.html").read_text()
    for name in names:
        assert f'href="#{name}"' in html, f"{name} has no row in the transform table"
        assert f'id="{name}"' in html, f"{name} has no section in the transform reference"
    assert "transforms-table" not in html and "transforms-reference" not in html


def test_generated_markdown_escapes_outside_code_only():
    hooks = load_hooks()
    assert hooks._cell("a|b `x|y`\n  c") == "a\\|b `x|y` c"
    assert hooks._cell("") == "-"
    assert hooks._prose("see :func:`f`, H*W, `x*y`") == "see `f`, H\\*W, `x*y`"


def test_readme_is_short_and_links_every_docs_page():
    text = README.read_text()
    assert len(text.splitlines()) <= 200
    linked = set(re.findall(r"\]\((docs/[\w/]+\.md|benchmarks/RESULTS\.md)\)", text))
    pages = {p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").glob("*.md")} - {"docs/index.md"}
    assert pages <= linked, f"the README links no {sorted(pages - linked)}"
    assert "benchmarks/RESULTS.md" in linked
    for command in ("make demo", "make test"):
        assert f"\n{command}   #" in text, f"the README's two commands must keep `{command}`"


def test_results_index_links_every_area():
    index = (ROOT / "benchmarks" / "RESULTS.md").read_text()
    for area in (ROOT / "benchmarks" / "results").glob("*.md"):
        assert f"](results/{area.name})" in index, f"benchmarks/RESULTS.md does not link {area.name}"
