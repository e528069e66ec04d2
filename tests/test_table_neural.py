"""The bias table with model transforms: `table=perception` lists every neural row under its family, and a
tiny table of two random-weight model rows (seg: semantic, depth: structural) on planted data groups them
by family and draws their example grids from the precomputed store."""

from __future__ import annotations

import json

from hydra import compose, initialize_config_module

from bias.experiment.table import example_file_name, override_value, parse_row, row_label
from tests.conftest import TINY, run_cli
from transforms.registry import get_transform_class

#: SegFormer with two stages of width 8 and 16 (150 ADE20K classes), and a 4-layer DINOv2 Depth Anything of width 16
SEG_ARCH = {"model_type": "segformer", "num_labels": 150, "num_encoder_blocks": 2, "depths": [1, 1],
            "sr_ratios": [2, 1], "hidden_sizes": [8, 16], "patch_sizes": [3, 3], "strides": [2, 2],
            "num_attention_heads": [1, 1], "mlp_ratios": [2, 2], "decoder_hidden_size": 16}
DEPTH_ARCH = {"model_type": "depth_anything", "patch_size": 14, "reassemble_hidden_size": 16, "fusion_hidden_size": 16,
              "neck_hidden_sizes": [8, 8, 16, 16], "head_hidden_size": 8,
              "backbone_config": {"model_type": "dinov2", "image_size": 28, "patch_size": 14, "hidden_size": 16,
                                  "num_hidden_layers": 4, "num_attention_heads": 2, "intermediate_size": 32,
                                  "out_indices": [1, 2, 3, 4], "apply_layernorm": True, "reshape_hidden_states": False}}
PERCEPTION = {"seg": "semantic", "sam": "structural", "depth": "structural", "object_det": "semantic",
              "object_crops": "semantic", "object_context": "semantic", "vae": "semantic"}


def test_the_perception_table_lists_every_neural_row_with_its_family():
    with initialize_config_module(config_module="bias.configs", version_base=None):
        cfg = compose(config_name="table", overrides=["table=perception"])
    names = [parse_row(r)[0] for r in cfg.rows]
    assert names == ["reference", *PERCEPTION]
    assert {n: get_transform_class(n).family for n in PERCEPTION} == PERCEPTION
    assert all(get_transform_class(n).kind == "precomputed" for n in PERCEPTION)


def test_a_table_of_tiny_model_rows_groups_them_by_family_and_draws_examples_from_the_store(tmp_path):
    # depth first: the table orders rows by family (semantic before structural), not as given
    rows = [{"transform": "depth", "weights": None, "arch": DEPTH_ARCH, "size": 56, "device": "cpu"},
            {"transform": "seg", "weights": None, "arch": SEG_ARCH, "size": 32, "device": "cpu"}]
    out, cache = tmp_path / "table", tmp_path / "cache"
    args = ["data=planted", "data.per_dataset=8", "data.val_per_dataset=4", "data.generator.n_per_dataset=12",
            "data.generator.size=40", f"rows={override_value(rows)}", "seeds=[0]", f"table_out={out}", "examples=2",
            "baselines.enabled=false", f"cache_dir={cache}", *TINY, "recipe.epochs=1"]
    run_cli("table.py", *args, cwd=tmp_path)  # the rows' run directories go to <cwd>/runs/: here, not the repository's
    labels = {r["transform"]: row_label(*parse_row(r)) for r in rows}
    table = (out / "table.md").read_text()
    assert f"| {labels['seg']} | semantic |" in table and f"| {labels['depth']} | structural |" in table
    assert table.index(f"| {labels['seg']} |") < table.index(f"| {labels['depth']} |")
    written = json.loads((out / "table.json").read_text())
    assert [(r["transform"], r["family"]) for r in written] == [("seg", "semantic"), ("depth", "structural")]
    assert all(r["params"]["weights"] is None and r["params"]["arch"]["model_type"] for r in written)
    for name in ("seg", "depth"):  # the grid of each row, read from the row's own store
        grid = out / "examples" / example_file_name(labels[name])
        assert grid.stat().st_size > 1000, grid
    stores = sorted(p.name.split("-")[0] for p in (cache / "transforms").iterdir())
    assert stores == ["depth", "seg"]  # one store per row: training and the example grids share it
    for folder in (cache / "transforms").iterdir():
        manifest = json.loads((folder / "manifest.json").read_text())
        assert manifest["failed"] == [] and manifest["model"] == {"random_init": True}
    assert len(list((tmp_path / "runs" / "planted").glob("*/*/seed0/results.json"))) == 2  # both rows trained here
