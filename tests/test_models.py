"""Choosing the classifier: every way docs/recipes.md documents, composed by Hydra as a user types it."""

from __future__ import annotations

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from classifiers.models import ModelArgumentError, check_classifier, create_classifier
from tests.conftest import ROOT, TINY, paths_override, read_results, run_cli


def _model(*overrides: str) -> torch.nn.Module:
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base=None):
        cfg = compose("classify", overrides=list(overrides))
    return create_classifier(cfg.model.name, 3, False, OmegaConf.to_container(cfg.model, resolve=True)["kwargs"]).eval()


def _params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_default_cpu_model_is_the_small_batchnorm_resnet():
    model = _model()
    assert type(model).__name__ == "ResNet" and [len(s) for s in (model.layer1, model.layer2, model.layer3,
                                                                   model.layer4)] == [1, 1, 1, 1]
    assert model.fc.in_features == 256 and model.conv1.out_channels == 64  # timm's plain stem is 64 wide
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert model(torch.randn(2, 3, 56, 56)).shape == (2, 3)


@pytest.mark.parametrize("overrides, kind, n_params", [
    (["model=resnet18"], "ResNet", 11.18e6),
    (["model=convnext_tiny"], "ConvNeXt", 27.82e6),
    (["model=convnext_cpu"], "ConvNeXt", 0.59e6),
    (["recipe=paper"], "ConvNeXt", 27.82e6),
    (["model=timm", "model.name=resnet10t"], "ResNet", 4.93e6),
    (["model=timm", "model.name=resnet18", "model.kwargs={channels: [8, 16, 32, 64]}"], "ResNet", 0.19e6),
    (["model=resnet18", "model.kwargs={drop_rate: 0.1}"], "ResNet", 11.18e6),
])
def test_documented_model_choices_build_the_named_network(overrides, kind, n_params):
    model = _model(*overrides)
    assert type(model).__name__ == kind
    assert _params(model) == pytest.approx(n_params, rel=0.02)
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 3)


def test_drop_rate_kwarg_reaches_the_model():
    assert _model("model=resnet18", "model.kwargs={drop_rate: 0.25}").drop_rate == 0.25


def test_kwargs_that_do_not_fit_the_architecture_say_how_to_choose_a_model():
    with pytest.raises(ModelArgumentError, match="model=timm model.name=resnet50"):
        check_classifier("resnet50", 3, {"depths": [1, 1, 2, 1]})
    check_classifier("resnet50", 3, {})  # on the meta device: no memory, no weights


@pytest.mark.slow
def test_a_timm_model_with_its_own_kwargs_trains_end_to_end(two_folders, tmp_path):
    tiny = [o for o in TINY if not o.startswith("model.")]
    run_cli("classify.py", "data=folders", paths_override(two_folders), "data.per_dataset=20", "data.val_per_dataset=8",
            "model=timm", "model.name=resnet18", "model.kwargs={layers: [1, 1, 1, 1], channels: [8, 8, 16, 16]}",
            *tiny, "recipe.epochs=1", f"out={tmp_path / 'run'}", f"cache_dir={tmp_path / 'c'}")
    r = read_results(tmp_path / "run")
    assert r["model"] == "resnet18" and r["n_val"] == 16
    saved = (tmp_path / "run" / "config.yaml").read_text()
    assert "channels:" in saved and "depths" not in saved
