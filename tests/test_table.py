"""The bias table: row parsing, published numbers, one tiny end-to-end table with reuse."""

from __future__ import annotations

import json

import pytest

from bias.experiment.published import published_accuracy
from bias.experiment.table import parse_row, row_label
from tests.conftest import TINY, paths_override, run_cli


def test_rows_with_parameters():
    assert parse_row("canny") == ("canny", {})
    assert parse_row("patch_shuffle:patch_size=4,mode=fixed") == ("patch_shuffle", {"patch_size": 4, "mode": "fixed"})
    assert parse_row({"transform": "lpf", "radius": 20}) == ("lpf", {"radius": 20})
    assert row_label("patch_shuffle", {"patch_size": 4}) == "patch_shuffle (patch_size=4)"
    with pytest.raises(ValueError, match="name:key=value"):
        parse_row("lpf:radius")


def test_published_numbers_follow_parameters():
    assert published_accuracy("canny", {}) == 71.0
    assert published_accuracy("patch_shuffle", {"patch_size": 4, "mode": "fixed", "reference_size": 224}) == 76.6
    assert published_accuracy("pixel_shuffle", {"mode": "random"}) == 52.2
    assert published_accuracy("lpf", {"filter": "butterworth"}) is None
    assert published_accuracy("color_hist", {}) is None


def test_table_end_to_end_writes_markdown_figure_examples_and_reuses_runs(two_folders, tmp_path):
    args = ["data=folders", paths_override(two_folders), "data.per_dataset=10", "data.val_per_dataset=6",
            f"cache_dir={tmp_path / 'c'}", *TINY, "recipe.epochs=1", "rows=[reference,mean_rgb,\"pixel_shuffle:mode=fixed\"]",
            "seeds=[0,1]", f"table_out={tmp_path / 'table'}", "examples=2"]
    proc = run_cli("table.py", *args)
    table = (tmp_path / "table" / "table.md").read_text()
    assert "| reference | reference |" in table and "| pixel_shuffle (mode=fixed) | spatial |" in table
    assert "58.5" in table  # the paper's fixed pixel-shuffle number beside ours
    rows = json.loads((tmp_path / "table" / "table.json").read_text())
    assert [len(r["accuracies"]) for r in rows] == [2, 2, 2]
    assert (tmp_path / "table" / "table.png").stat().st_size > 1000
    assert len(list((tmp_path / "table" / "examples").glob("*.png"))) == 3
    assert proc.stdout.count("vs chance") == 6
    again = run_cli("table.py", *args)
    assert again.stdout.count("reusing finished run") == 6
