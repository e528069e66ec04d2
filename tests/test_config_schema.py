"""bias.experiment.config: the classify config is checked whole, before any work, by key."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Annotated, Any, Literal

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from pydantic import Field

from bias.core.errors import ConfigError
from bias.core.schema import Pair, Section
from bias.experiment.config import check_schema, schema_problems, to_plain, validate_classify_config

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
DATA = ["planted", "planted_color", "planted_texture", "planted_objects", "planted_layout",
        "folders", "webdataset", "hf", "list", "mixed"]
TRANSFORMS = sorted(p.stem for p in (CONFIG_DIR / "transform").glob("*.yaml"))


def composed(*overrides: str, name: str = "classify"):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        return compose(config_name=name, overrides=list(overrides))


def message(*overrides: str, name: str = "classify") -> str:
    with pytest.raises(ConfigError) as info:
        validate_classify_config(composed(*overrides, name=name))
    return str(info.value)


@pytest.fixture(scope="module")
def default_plain() -> dict[str, Any]:
    plain = to_plain(composed())
    plain.pop("hydra", None)
    return plain


# -- every shipped config validates ----------------------------------------------------------------

@pytest.mark.parametrize("name", ["classify", "table"])
@pytest.mark.parametrize("overrides", [
    [],
    ["recipe=paper"],
    ["recipe=cpu_convnext"],
    ["model=timm", "model.name=resnet50"],
    ["model=resnet18"],
    ["model=mlp", "transform=color_hist_vector"],
], ids=lambda o: " ".join(o) or "default")
def test_shipped_configs_validate(name, overrides):
    validate_classify_config(composed(*overrides, name=name))


def test_table_options_validate():
    validate_classify_config(composed("table=patch_sweep", name="table"))
    validate_classify_config(composed("table_out=runs/t", "examples=0", "seeds=[0,1]", name="table"))
    validate_classify_config(composed("+data.kind=planted"))  # the data source kind, where a config names it


@pytest.mark.parametrize("data", DATA)
def test_every_data_config_validates(data):
    """folders/webdataset/hf/list/mixed leave their paths at ???: those open mappings are the sources' to check."""
    validate_classify_config(composed(f"data={data}"))
    validate_classify_config(composed(f"data={data}", "recipe=paper", name="table"))


@pytest.mark.parametrize("transform", TRANSFORMS)
def test_every_transform_config_validates(transform):
    model = ["model=mlp"] if transform == "color_hist_vector" else []
    validate_classify_config(composed(f"transform={transform}", *model))


def test_every_recipe_model_data_file_is_covered():
    import transforms  # noqa: F401  (registers the built-ins)
    from transforms.registry import get_transform_class, list_transforms

    builtin = sorted(n for n in list_transforms() if get_transform_class(n).__module__.startswith("transforms."))
    assert TRANSFORMS == builtin  # one config per built-in transform, and no config without its class
    assert sorted(p.stem for p in (CONFIG_DIR / "data").glob("*.yaml")) == sorted(DATA)
    for recipe in sorted(p.stem for p in (CONFIG_DIR / "recipe").glob("*.yaml")):
        for model in sorted(p.stem for p in (CONFIG_DIR / "model").glob("*.yaml")):
            extra = ["model.name=resnet50"] if model == "timm" else []
            validate_classify_config(composed(f"recipe={recipe}", f"model={model}", *extra))


def test_plain_dict_and_readme_overrides(default_plain):
    validate_classify_config(default_plain)
    validate_classify_config(composed("seeds=[0,1,2]", "recipe.epochs=5", "out=runs/mine", "print_config=true",
                                      "num_workers=0", "recipe.eval_every=0", "data.near_duplicates.enabled=true",
                                      "data.near_duplicates.max_hamming=4", "data.resize_shorter=500",
                                      "data.per_dataset=null", "model=timm", "model.kwargs={drop_rate: 0.1}",
                                      "model.name=resnet18", "transform=canny", "transform.low=50"))


# -- bad values: exact messages --------------------------------------------------------------------

def test_epochs_not_an_integer():
    assert message("recipe.epochs=abc").startswith("recipe.epochs: expected an integer, got 'abc'")


def test_integral_float_is_not_an_integer():
    assert message("recipe.epochs=10.0").startswith("recipe.epochs: expected an integer, got 10.0")
    assert message("seed=1.5").startswith("seed: expected an integer, got 1.5")


def test_ranges():
    assert message("recipe.lr=-1").startswith("recipe.lr: must be > 0, got -1")
    assert message("recipe.lr=-0.1").startswith("recipe.lr: must be > 0, got -0.1")
    assert message("baselines.holdout=2").startswith("baselines.holdout: must be < 1, got 2")
    assert message("data.per_dataset=0").startswith("data.per_dataset: must be > 0, got 0")
    assert message("recipe.label_smoothing=1.0").startswith("recipe.label_smoothing: must be < 1, got 1.0")
    assert message("recipe.betas=[0.9,1.0]").startswith("recipe.betas[1]: must be < 1, got 1.0")
    assert message("data.near_duplicates.max_hamming=99").startswith(
        "data.near_duplicates.max_hamming: must be <= 63, got 99")
    assert message("baselines.l2_grid=[]").startswith("baselines.l2_grid: must not be empty")
    assert message("num_workers=-1").startswith("num_workers: must be >= 0, got -1")
    assert message("examples=-1", name="table").startswith("examples: must be >= 0, got -1")


def test_pairs():
    assert message("recipe.crop_scale=[0.5,0.2]").startswith(
        "recipe.crop_scale: values must not decrease (low <= high), got [0.5, 0.2]")
    assert message("recipe.crop_scale=[0.1,0.5,1.0]").startswith("recipe.crop_scale: expected 2 values, got 3")
    assert message("recipe.crop_scale=[0.0,1.0]").startswith("recipe.crop_scale[0]: must be > 0, got 0.0")
    assert message("recipe.crop_scale=0.5").startswith("recipe.crop_scale: expected a list of 2 numbers, got 0.5")


def test_choices():
    assert message("recipe.precision=fp32").startswith(
        "recipe.precision: expected one of ['no', 'fp16', 'bf16'], got 'fp32'")


def test_unknown_keys_suggest():
    assert message("+recipe.epoch=3").startswith("recipe.epoch: unknown key (did you mean recipe.epochs?)")
    assert message("+seeed=3").startswith("seeed: unknown key (did you mean seed?)")
    assert message("+baselines.holdot=0.1").startswith("baselines.holdot: unknown key (did you mean baselines.holdout?)")
    assert message("+recipe.groups.a.flip=true").startswith(
        "recipe.groups.a.flip: unknown key (did you mean recipe.groups.a.hflip?)")
    assert message("+recipe.mixup.alpha=0.2").startswith("recipe.mixup.alpha: unknown key")


def test_only_model_kwargs_and_the_sources_values_stay_open():
    """model.kwargs is the architecture's (the model builder checks it); a data source's `???` is the source's."""
    validate_classify_config(composed("+model.kwargs.anything=1", "data=folders", "+data.paths.extra=???"))


def test_sections_named_by_a_class_take_that_class_keys():
    assert message("+transform.whatever=[1,2]").startswith(
        "transform.whatever: unknown key (known keys: name)")  # reference takes no parameter
    assert message("transform=canny", "+transform.lowx=1").startswith(
        "transform.lowx: unknown key (did you mean transform.low?)")
    assert message("+data.generator.foo=1").startswith("data.generator.foo: unknown key")
    assert message("+data.generator.datasets.cc_like.color.brightnes=1").startswith(
        "data.generator.datasets.cc_like.color.brightnes: unknown key (did you mean "
        "data.generator.datasets.cc_like.color.brightness?)")
    assert message("+data.expected.more=[x]").startswith("data.expected.more: unknown key")
    assert message("data=mixed", "+data.datasets.cc.shardz=x").startswith(
        "data.datasets.cc.shardz: unknown key (did you mean data.datasets.cc.shards?)")


def test_effective_batch_multiple_of_batch_size():
    msg = message("recipe.effective_batch=100")
    assert msg.startswith("recipe.effective_batch: must be a multiple of recipe.batch_size (64), got 100")


def test_warmup_not_longer_than_training():
    assert message("recipe.warmup_epochs=12").startswith("recipe.warmup_epochs: must be <= recipe.epochs (10), got 12")
    validate_classify_config(composed("recipe.warmup_epochs=0.5"))


def test_min_lr_not_above_lr():
    assert message("recipe.min_lr=0.1").startswith("recipe.min_lr: must be <= recipe.lr (0.003), got 0.1")


def test_unset_marker():
    assert message("model=timm").startswith("model.name is not set: pass model.name=...")
    assert message("recipe.lr=???").startswith("recipe.lr is not set: pass recipe.lr=...")


def test_missing_required_key(default_plain):
    cfg = copy.deepcopy(default_plain)
    del cfg["recipe"]["epochs"]
    with pytest.raises(ConfigError, match=r"^recipe\.epochs: missing required key$"):
        validate_classify_config(cfg)
    cfg = copy.deepcopy(default_plain)
    del cfg["transform"]["name"]
    with pytest.raises(ConfigError, match=r"^transform\.name: missing required key"):
        validate_classify_config(cfg)


def test_optional_keys_may_be_absent(default_plain):
    cfg = copy.deepcopy(default_plain)
    for key in ("seeds", "out", "num_workers", "print_config", "baselines", "verdict"):
        del cfg[key]
    for key in ("eval_resize", "eval_batch_size", "betas", "eps", "label_smoothing", "mixup", "clip_grad",
                "precision", "eval_every", "num_workers"):
        del cfg["recipe"][key]
    for key in ("per_dataset", "split_seed", "resize_shorter", "near_duplicates"):
        cfg["data"].pop(key, None)
    validate_classify_config(cfg)


def test_all_problems_in_config_order_one_error():
    with pytest.raises(ConfigError) as info:
        validate_classify_config(composed("recipe.epochs=abc", "recipe.lr=-1", "seed=1.5"))
    err = info.value
    # the composed config holds recipe (from the defaults list) before seed (_self_); epochs before lr
    assert list(composed()).index("recipe") < list(composed()).index("seed")
    assert err.problems == ["recipe.epochs: expected an integer, got 'abc'", "recipe.lr: must be > 0, got -1",
                            "seed: expected an integer, got 1.5"]
    assert err.key == "recipe.epochs"
    assert str(err) == ("recipe.epochs: expected an integer, got 'abc' (and 2 more: recipe.lr: must be > 0, "
                        "got -1; seed: expected an integer, got 1.5)")
    assert "\n" not in str(err)


def test_interpolations_resolve():
    validate_classify_config(composed("recipe.eval_batch_size=${recipe.batch_size}"))
    msg = message("recipe.eval_batch_size=${recipe.nothing}")
    assert msg.startswith("recipe.eval_batch_size: cannot resolve ${recipe.nothing}")


def test_hydra_key_ignored(default_plain):
    validate_classify_config(dict(default_plain, hydra={"anything": 1}))


# -- the generic validator on hand-built schemas ---------------------------------------------------

class Inner(Section):
    size: Annotated[int, Field(gt=0)] = 1
    flag: bool = False


class Schema(Section):
    count: int
    rate: float = 0.5
    maybe: int | None = None
    inner: Inner = Inner()
    pair: Pair(float) = (0.0, 1.0)
    sizes: Annotated[list[int], Field(min_length=3, max_length=3)] = [0, 0, 0]
    mode: Literal["a", "b"] = "a"
    extra: dict[str, Any] | None = None
    flags: dict[str, bool] = {}


def problems(data: dict[str, Any]) -> list[str]:
    return schema_problems(data, Schema, "s")


def test_bool_is_not_an_int_nor_a_number():
    assert problems({"count": True}) == ["s.count: expected an integer, got True"]
    assert problems({"count": 1, "rate": False}) == ["s.rate: expected a number, got False"]
    assert problems({"count": 1, "inner": {"flag": 1}}) == ["s.inner.flag: expected true or false, got 1"]


def test_int_ok_for_float_not_float_for_int_no_string_coercion():
    assert problems({"count": 3, "rate": 2}) == []
    assert problems({"count": 3.0}) == ["s.count: expected an integer, got 3.0"]
    assert problems({"count": "3"}) == ["s.count: expected an integer, got '3'"]
    assert problems({"count": 1, "rate": "0.5"}) == ["s.rate: expected a number, got '0.5'"]


def test_optional():
    assert problems({"count": 1, "maybe": None}) == []
    assert problems({"count": 1, "maybe": 4}) == []
    assert problems({"count": 1, "maybe": "x"}) == ["s.maybe: expected an integer or null, got 'x'"]
    assert problems({"count": 1, "extra": None}) == []
    assert problems({"count": 1, "extra": {"free": "???", "x": [1]}}) == []
    assert problems({"count": 1, "extra": 3}) == ["s.extra: expected a mapping or null, got 3"]


def test_nested_section():
    assert problems({"count": 1, "inner": {"size": 0}}) == ["s.inner.size: must be > 0, got 0"]
    assert problems({"count": 1, "inner": {"sise": 2}}) == ["s.inner.sise: unknown key (did you mean s.inner.size?)"]
    assert problems({"count": 1, "inner": 5}) == ["s.inner: expected a mapping, got 5"]
    assert problems({"count": 1, "inner": "???"}) == ["s.inner is not set: pass s.inner=..."]


def test_list_length_and_items():
    assert problems({"count": 1, "sizes": [1, 2, 3]}) == []
    assert problems({"count": 1, "sizes": [1, 2]}) == ["s.sizes: expected at least 3 values, got 2"]
    assert problems({"count": 1, "sizes": [1, 2.5, 3]}) == ["s.sizes[1]: expected an integer, got 2.5"]
    assert problems({"count": 1, "pair": [1, 2, 3]}) == ["s.pair: expected 2 values, got 3"]
    assert problems({"count": 1, "pair": [1]}) == ["s.pair: expected 2 values, got 1"]
    assert problems({"count": 1, "pair": "ab"}) == ["s.pair: expected a list of 2 numbers, got 'ab'"]


def test_literal_mapping_values_missing_and_unknown():
    assert problems({"count": 1, "mode": "c"}) == ["s.mode: expected one of ['a', 'b'], got 'c'"]
    assert problems({"count": 1, "flags": {"x": True, "y": "no"}}) == ["s.flags.y: expected true or false, got 'no'"]
    assert problems({}) == ["s.count: missing required key"]
    assert problems({"count": "???"}) == ["s.count is not set: pass s.count=..."]
    assert problems({"count": OmegaConf.to_container(OmegaConf.create({"v": "???"}))["v"]}) == [
        "s.count is not set: pass s.count=..."]
    assert problems({"count": 1, "zzz": 1}) == [
        "s.zzz: unknown key (known keys: count, rate, maybe, inner, pair, sizes, mode, extra, flags)"]


def test_check_schema_raises_one_config_error():
    with pytest.raises(ConfigError, match=r"^count: missing required key$"):
        check_schema({}, Schema)
    check_schema({"count": 2}, Schema)
