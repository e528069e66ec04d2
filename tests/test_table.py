"""The bias table: row parsing, published numbers, one tiny end-to-end table with reuse."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from bias.experiment.published import published_accuracy
from bias.experiment.table import (
    Row,
    accuracy_text,
    failed_row,
    make_row,
    parse_row,
    row_label,
    table_figure,
    table_header,
    write_table,
)
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
            f"cache_dir={tmp_path / 'c'}", *TINY, "recipe.epochs=1", "recipe.epochs_scale.pixel_shuffle=1",
            "rows=[reference,mean_rgb,\"pixel_shuffle:mode=fixed\"]",
            "seeds=[0,1]", f"table_out={tmp_path / 'table'}", "examples=2"]
    proc = run_cli("table.py", *args)
    table = (tmp_path / "table" / "table.md").read_text()
    assert "| reference | reference |" in table and "| pixel_shuffle (mode=fixed) | spatial |" in table
    assert "58.5" in table  # the paper's fixed pixel-shuffle number beside ours
    assert "- seeds: 0, 1 (n=2)" in table and "- data: `folders`" in table and "- recipe: `" in table
    assert re.search(r"\| \d+\.\d \+- \d+\.\d \(n=2\)", table)
    rows = json.loads((tmp_path / "table" / "table.json").read_text())
    assert [len(r["accuracies"]) for r in rows] == [2, 2, 2]
    assert_links_resolve(tmp_path / "table" / "table.md")
    assert (tmp_path / "table" / "table.png").stat().st_size > 1000
    assert len(list((tmp_path / "table" / "examples").glob("*.png"))) == 3
    assert len(re.findall(r"^folders / \S+ / seed \d: accuracy", proc.stdout, re.M)) == 6  # one result line per run
    again = run_cli("table.py", *args)
    assert again.stdout.count("reusing finished run") == 6


def _row(label: str, accuracies: list[float], verdicts: list[str] | None = None, family: str = "frequency",
         published: float | None = None, run_dirs: list[str] | None = None) -> Row:
    return Row(label, label, family, {}, accuracies, 0.5, (min(accuracies) - 0.02, max(accuracies) + 0.02), published,
               run_dirs or [], {"pixels": [0.9] * len(accuracies)}, verdicts or ["learned"] * len(accuracies))


def assert_links_resolve(md: Path) -> None:
    links = re.findall(r"\]\(([^)]+)\)", md.read_text())
    assert links
    for link in links:
        assert not Path(link).is_absolute() and (md.parent / link).exists(), link


def test_one_seed_reads_as_one_seed_and_two_as_mean_and_std():
    assert accuracy_text(_row("canny", [0.882])) == "88.2 (n=1)"
    assert accuracy_text(_row("canny", [0.80, 0.90])) == "85.0 +- 7.1 (n=2)"
    assert accuracy_text(failed_row("canny", "canny", ["seed 0: loss nan"], [])) == "failed"


def test_the_table_file_has_a_header_links_from_its_own_folder_names_markers_and_shows_failures(tmp_path):
    runs = tmp_path / "runs" / "folders" / "canny" / "seed0"
    runs.mkdir(parents=True)
    (runs / "confusion.png").write_bytes(b"png")
    failed_dir = tmp_path / "runs" / "folders" / "hpf" / "seed0"
    rows = [_row("reference", [0.9], family="reference", run_dirs=[str(runs)]),
            _row("canny", [0.6], ["under-fit"], family="structural", run_dirs=[str(runs)]),
            make_row("hpf", [{"status": "failed", "failure": {"what": "loss", "epoch": 2, "step": 17, "reason": "x"},
                              "seed": 0, "transform": "hpf", "family": "frequency"}], [failed_dir])]
    out = tmp_path / "tables" / "deep"
    md, _ = write_table(rows, out, "t", 2, table_header("folders", "cpu", [0]))
    text = md.read_text()
    assert "- data: `folders`" in text and "- recipe: `cpu`" in text and "- seeds: 0 (n=1)" in text
    assert "- written: " in text
    assert "90.0 (n=1)" in text and "+- 0.0" not in text
    canny = next(line for line in text.splitlines() if line.startswith("| canny"))
    assert "| under-fit |" in canny and "**[under-fit]**" in canny
    assert "**canny**: under-fit" in text
    hpf = next(line for line in text.splitlines() if line.startswith("| hpf"))
    assert "**failed**" in hpf and "non-finite loss" in hpf and "epoch 2" in hpf
    assert not re.search(r"\d+\.\d", hpf.split("|")[3]) and "| failed |" in hpf
    failed_dir.mkdir(parents=True)  # the failed run's folder is linked; it exists once the run made it
    assert_links_resolve(md)
    saved = json.loads((out / "table.json").read_text())
    assert saved[-1]["mean"] is None and saved[-1]["marker"] == "failed"


def test_the_legend_covers_no_bar_and_no_marker():
    rows = [_row("reference", [0.9, 0.92], family="reference"),
            _row("canny", [0.6, 0.62], ["under-fit", "under-fit"], family="structural", published=71.0),
            _row("lpf", [0.7, 0.72], family="frequency", published=70.4),
            _row("hpf", [0.95, 0.97], family="frequency", published=79.2)]  # a marker high up at the right
    fig = table_figure(rows, "t")
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    ax = fig.axes[0]
    legend = ax.get_legend().get_window_extent(renderer)
    data = [p.get_window_extent(renderer) for p in ax.patches]
    for coll in ax.collections:  # scatter markers (paper, probe) and error bars
        offsets = coll.get_offsets()
        if len(offsets):
            pts = ax.transData.transform(offsets)
            data += [type(legend).from_bounds(x - 4, y - 4, 8, 8) for x, y in pts]
    assert len(data) >= len(rows) + 3
    assert not any(legend.overlaps(box) for box in data)
