"""describe's ``classify=true``: the reference classification on the same data first, so the explained share has
an image accuracy; without it, the report names the command that gives one."""

from __future__ import annotations

import json
from pathlib import Path

from omegaconf import OmegaConf

from describe.reference import reference_config
from describe.report import check_summary, comparable_data, find_classify_runs
from describe.run import run_describe
from tests.test_describe_report import TINY, composed

FAST = "classify_overrides=['recipe.epochs=1','baselines.enabled=false']"


def test_the_reference_config_has_the_same_data_and_lands_under_runs_root(tmp_path):
    cfg = composed(*TINY, f"cache_dir={tmp_path / 'c'}", f"runs_root={tmp_path / 'runs'}", FAST)
    ccfg = reference_config(cfg)
    assert ccfg.transform.name == "reference" and ccfg.recipe.epochs == 1 and ccfg.baselines.enabled is False
    assert comparable_data(OmegaConf.to_container(ccfg.data, resolve=True)) == \
        comparable_data(OmegaConf.to_container(cfg.data, resolve=True))
    out = Path(ccfg.out)
    assert out.parent.parent == tmp_path / "runs" / "planted" / "reference" and out.name == "seed0"
    assert out.parent.name.startswith("cpu-") and ccfg.cache_dir == str(tmp_path / "c")


def test_classify_true_runs_the_reference_first_and_the_report_uses_it(tmp_path):
    runs, out = tmp_path / "runs", tmp_path / "describe"
    summary = run_describe(composed(*TINY, f"cache_dir={tmp_path / 'c'}", f"runs_root={runs}", f"out={out}",
                                    "stages=[]", "classify=true", FAST))
    assert "classify" in summary["times"]
    data = OmegaConf.to_container(composed(*TINY).data, resolve=True)
    found, why = find_classify_runs(runs, data, 5, 1)
    assert why == "" and len(found) == 1 and found[0]["transform"] == "reference"
    page = (out / "report.html").read_text()
    assert "No confusion matrices" not in page and "reference / resnet18 / cpu / seed 0" in page
    result = json.loads((out / "summary.json").read_text())
    check_summary(result)
    assert result["explained"]["command"] is None  # a classify run exists: no command to suggest
    # without classify=true, a describe run on other data has none, and says how to get one
    other = run_describe(composed(*TINY, "data.val_per_dataset=1", f"cache_dir={tmp_path / 'c'}", f"runs_root={runs}",
                                  f"out={tmp_path / 'other'}", "stages=[]"))
    assert "classify" not in other["times"]
    result = json.loads((tmp_path / "other" / "summary.json").read_text())
    assert result["explained"]["command"] == "python scripts/classify.py data=planted transform=reference"


def test_the_suggested_command_carries_the_data_overrides_of_the_command_line():
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig

    from describe.report import classify_command, data_overrides
    from tests.test_describe_report import CONFIG_DIR

    assert data_overrides() == []  # outside a Hydra app
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        cfg = compose(config_name="describe", return_hydra_config=True,
                      overrides=["data=folders", "data.paths={a: /x/a b, b: /y}", "seed=3", "+data.extra=1"])
    HydraConfig.instance().set_config(cfg)
    try:
        found = data_overrides()
    finally:
        HydraConfig.instance().cfg = None
    assert found == ["data=folders", "data.paths={a: /x/a b, b: /y}", "+data.extra=1"]
    assert classify_command({"name": "folders"}, found) == \
        "python scripts/classify.py data=folders 'data.paths={a: /x/a b, b: /y}' +data.extra=1 transform=reference"
