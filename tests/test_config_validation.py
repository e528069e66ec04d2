"""Every command's config is checked against a pydantic schema before any work: every shipped config and group
option validates, and a misspelt key in any section is refused with a message naming its full dotted key and where
it was set (the command line, a group option's file, the command's own file). Compose only: nothing runs."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir, initialize_config_module

from bias.cli import check_overrides, validate_config
from bias.core.errors import ConfigError
from bias.core.schema import ConfigSources
from tests.conftest import ROOT

CONFIGS = ROOT / "configs"
AUDIT = CONFIGS / "audit"


def options(folder: Path) -> list[str]:
    return sorted(p.stem for p in folder.glob("*.yaml"))


def composed(name: str, *overrides: str, config_dir: Path | None = None):
    """As the command composes it: the packaged configs (`pkg://bias.configs`), or a folder (audit's)."""
    if name == "memorize":
        from memorization.study import register_resolvers

        register_resolvers()
    init = (initialize_config_dir(config_dir=str(config_dir), version_base=None) if config_dir
            else initialize_config_module("bias.configs", version_base=None))
    with init:
        return compose(name, list(overrides), return_hydra_config=True)


#: what each command needs on the command line before it can run (its `???` keys)
REQUIRED = {"download": ["dataset=cc", "metadata=/data/meta.tsv", "out=/data/out"],
            "audit": ["train=ckpts/train", "generated=ckpts/generated"]}
#: the `???` keys of some group options
FILL = {"model=timm": ["model.name=resnet50"], "audit:model=zoo": ["model.arch={name: mlp}"],
        "audit:model=timm": ["model.name=resnet18"], "audit:model=callable": ["model.target=m:f"],
        "audit:task=callable": ["task.target=m:f"], "audit:task=hf": ["task.path=/data/hf"],
        "audit:task=image_folder": ["task.root=/data/val"]}


def valid(name: str, *overrides: str) -> None:
    config_dir = AUDIT if name == "audit" else None
    if name == "audit" and not any(o.startswith("model=") for o in overrides):
        overrides = (*overrides, "model=zoo")  # the default, whose arch the user gives
    extra = [x for o in overrides for x in FILL.get(f"{name}:{o}" if name == "audit" else o, [])]
    validate_config(name, composed(name, *REQUIRED.get(name, []), *overrides, *extra, config_dir=config_dir))


# -- every shipped config and group option validates ------------------------------------------------

CASES = [(name, ()) for name in ("classify", "table", "transform", "describe", "memorize", "audit", "download",
                                 "uncon_gen")]
CASES += [("classify", (f"transform={o}",)) for o in options(CONFIGS / "transform")]
CASES += [("classify", (f"model={o}",)) for o in options(CONFIGS / "model")]
CASES += [("classify", (f"recipe={o}",)) for o in options(CONFIGS / "recipe")]
CASES += [("classify", (f"data={o}",)) for o in options(CONFIGS / "data")]
CASES += [("table", (f"table={o}",)) for o in options(CONFIGS / "table")]
CASES += [("describe", (f"transform@captions={o}",)) for o in ("caption_short", "caption_long")]
CASES += [("describe", (f"data={o}",)) for o in options(CONFIGS / "data")]
CASES += [("uncon_gen", (f"data={o}",)) for o in ("planted", "folders", "webdataset")]
CASES += [("memorize", (f"{group}={o}",)) for group in ("task", "generator", "study")
          for o in options(CONFIGS / "memorize" / group)]
CASES += [("audit", (f"{group}={o}",)) for group in ("model", "task") for o in options(AUDIT / group)]


@pytest.mark.parametrize("name, overrides", CASES, ids=lambda c: c if isinstance(c, str) else " ".join(c) or "-")
def test_every_shipped_config_and_group_option_validates(name, overrides):
    valid(name, *overrides)


def test_every_config_group_file_is_covered():
    groups = {(name, o.split("=")[0]) for name, overrides in CASES for o in overrides}
    for folder in (*CONFIGS.glob("*/"), *(CONFIGS / "memorize").glob("*/"), *AUDIT.glob("*/")):
        if folder.is_dir() and folder.name not in ("__pycache__", "memorize", "audit"):
            group = "transform@captions" if folder.name == "captions" else folder.name
            assert any(g == group or g.startswith(folder.name) for _, g in groups), folder


# -- a misspelt key is refused, naming the key and where it was set ---------------------------------

MISSPELT = [
    ("classify", ["recipe.epochz=3"], "recipe.epochz: unknown key (did you mean recipe.epochs?)"),
    ("classify", ["data.generator.datasets.cc_like.color.brightnes=1"],
     "data.generator.datasets.cc_like.color.brightnes: unknown key (did you mean "
     "data.generator.datasets.cc_like.color.brightness?)"),
    ("classify", ["data.near_duplicates.enable=true"],
     "data.near_duplicates.enable: unknown key (did you mean data.near_duplicates.enabled?)"),
    ("table", ["recipe.epochz=3"], "recipe.epochz: unknown key (did you mean recipe.epochs?)"),
    ("transform", ["transform=canny", "transform.lowx=1"], "transform.lowx: unknown key (did you mean transform.low?)"),
    ("describe", ["captions.captionerr=x"], "captions.captionerr: unknown key (did you mean captions.captioner?)"),
    ("describe", ["differences.n_prem=10"], "differences.n_prem: unknown key (did you mean differences.n_perm?)"),
    ("describe", ["themes.chunk_sise=3"], "themes.chunk_sise: unknown key (did you mean themes.chunk_size?)"),
    ("describe", ["llm.max_new_token=8"], "llm.max_new_token: unknown key (did you mean llm.max_new_tokens?)"),
    ("describe", ["imagenet.min_prb=0.2"], "imagenet.min_prb: unknown key (did you mean imagenet.min_prob?)"),
    ("memorize", ["zoo.n_model=3"], "zoo.n_model: unknown key (did you mean zoo.n_models?)"),
    ("memorize", ["generator.ae_step=3"], "generator.ae_step: unknown key (did you mean generator.ae_steps?)"),
    ("memorize", ["task.recipe.epoch=3"], "task.recipe.epoch: unknown key (did you mean task.recipe.epochs?)"),
    ("audit", [*REQUIRED["audit"], "model.arch={name: mlp}", "baselines.num_sample=3"],
     "baselines.num_sample: unknown key (did you mean baselines.num_samples?)"),
    ("download", [*REQUIRED["download"], "readers.cc.url_fields=1"],
     "readers.cc.url_fields: unknown key (did you mean readers.cc.url_field?)"),
    ("uncon_gen", ["train.step=3"], "train.step: unknown key (did you mean train.steps?)"),
    ("uncon_gen", ["vae.batch_sise=3"], "vae.batch_sise: unknown key (did you mean vae.batch_size?)"),
]


@pytest.mark.parametrize("name, overrides, expected", MISSPELT, ids=lambda c: c if isinstance(c, str) else None)
def test_a_misspelt_key_on_the_command_line_is_refused_by_name(name, overrides, expected):
    """As the command does it: Hydra would refuse the key with its own advice (add it with +); the schema names it."""
    if name == "memorize":
        from memorization.study import register_resolvers

        register_resolvers()
    config_path = str(AUDIT) if name == "audit" else "pkg://bias.configs"
    with pytest.raises(ConfigError) as info:
        check_overrides(name, overrides, config_path)
    message = str(info.value)
    assert message.startswith(expected), message
    assert f"[set by the command-line override {overrides[-1]}]" in message
    with pytest.raises(ConfigError, match=f"^{expected.split(':')[0]}"):  # with + Hydra adds it; the schema refuses
        valid(name, *overrides[:-1], "+" + overrides[-1])


def test_a_valid_command_line_passes_the_pre_check_and_a_schema_key_missing_from_the_files_says_add_it():
    check_overrides("classify", ["recipe.epochs=1", "transform=canny", "transform.low=40", "--cfg", "job"])
    check_overrides("classify", ["-m", "recipe.epochz=1,2"])  # a sweep: left to Hydra
    with pytest.raises(ConfigError, match=r"^recipe\.grid_holdout: not in the config files; add it with "
                                          r"\+recipe\.grid_holdout=0.2$"):
        check_overrides("classify", ["recipe.grid_holdout=0.2"])


def _user_configs(tmp_path: Path) -> Path:
    (tmp_path / "recipe").mkdir()
    cpu = (CONFIGS / "recipe" / "cpu.yaml").read_text()
    (tmp_path / "recipe" / "typo.yaml").write_text(cpu.replace("\n  epochs: 10", "\n  epochs: 10\n  epochz: 3"))
    (tmp_path / "transform").mkdir()
    (tmp_path / "transform" / "edges.yaml").write_text("name: canny\nlow: 40\nlowx: 1\n")
    return tmp_path


def test_a_misspelt_key_in_a_group_option_file_names_the_option_and_its_file(tmp_path):
    folder = _user_configs(tmp_path)
    search = f"hydra.searchpath=[file://{folder}]"
    with pytest.raises(ConfigError) as info:
        validate_config("classify", composed("classify", search, "recipe=typo"))
    assert str(info.value) == (f"recipe.epochz: unknown key (did you mean recipe.epochs?) "
                               f"[set in recipe=typo ({folder / 'recipe' / 'typo.yaml'})]")
    with pytest.raises(ConfigError) as info:
        validate_config("transform", composed("transform", search, "transform=edges"))
    assert str(info.value).startswith(f"transform.lowx: unknown key (did you mean transform.low?) "
                                      f"[set in transform=edges ({folder / 'transform' / 'edges.yaml'})]")


def test_where_a_key_was_set_in_the_shipped_files():
    classify = ConfigSources.from_hydra(composed("classify", "recipe=paper").hydra)
    assert classify.where("recipe.epochs") == "set in recipe=paper (configs/recipe/paper.yaml)"
    assert classify.where("baselines.l2_grid[1]") == "set in configs/classify.yaml"
    assert classify.where("recipe.nothing") == ""
    table = ConfigSources.from_hydra(composed("table", "table=patch_sweep").hydra)
    assert table.where("rows") == "set in table=patch_sweep (configs/table/patch_sweep.yaml)"  # @package _global_
    assert table.where("examples") == "set in configs/table.yaml"
    assert table.where("seed") == "set in configs/classify.yaml"  # table.yaml's defaults list holds classify
    describe = ConfigSources.from_hydra(composed("describe", "transform@captions=caption_long").hydra)
    assert describe.where("captions.prompt") == "set in transform@captions=caption_long (configs/transform/caption_long.yaml)"
    memorize = ConfigSources.from_hydra(composed("memorize", "study=gpt_cpu").hydra)
    assert memorize.where("generator.d_model") == ("set in study=gpt_cpu (configs/memorize/study/gpt_cpu.yaml) and "
                                                   "generator=gpt (configs/memorize/generator/gpt.yaml)")
    assert memorize.where("task.recipe.epochs") == "set in task=digits_mlp (configs/memorize/task/digits_mlp.yaml)"
    with_override = ConfigSources.from_hydra(composed("classify", "recipe.epochs=2").hydra)
    assert with_override.where("recipe.epochs") == "set by the command-line override recipe.epochs=2"


def test_a_users_registered_transform_is_checked_by_its_own_keys(monkeypatch):
    from transforms.base import Transform
    from transforms.registry import TRANSFORMS

    class Posterize(Transform):
        def __init__(self, levels: int = 4, dither: bool = False) -> None:
            self.levels, self.dither = levels, dither

    monkeypatch.setitem(TRANSFORMS._entries, "test_posterize", Posterize)
    validate_config("classify", composed("classify", "transform.name=test_posterize", "+transform.levels=8"))
    with pytest.raises(ConfigError, match=r"^transform\.levls: unknown key \(did you mean transform\.levels\?\) "
                                          r"\[set by the command-line override \+transform\.levls=8\]$"):
        validate_config("classify", composed("classify", "transform.name=test_posterize", "+transform.levls=8"))


def test_describe_sections_are_closed_and_checked():
    with pytest.raises(ConfigError, match=r"^report\.thumb_size: must be <= 512, got 1000"):
        validate_config("describe", composed("describe", "report.thumb_size=1000"))
    with pytest.raises(ConfigError, match=r"^clip\.foo: unknown key"):
        validate_config("describe", composed("describe", "clip={name: ViT-B-32, foo: 1}"))
    validate_config("describe", composed("describe", "clip={name: ViT-B-32, pretrained: x, model_config: {a: 1}}"))
    with pytest.raises(ConfigError, match=r"^log_level: expected one of \['debug', 'info', 'warning', 'error'\]"):
        validate_config("describe", composed("describe", "log_level=loud"))


def test_the_classify_command_refuses_a_misspelt_key_before_any_work(tmp_path):
    """The whole command line path: one line on stderr, exit status 1, nothing written."""
    from tests.conftest import run_cli

    proc = run_cli("classify.py", f"out={tmp_path / 'run'}", "recipe.epochz=1", check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: recipe.epochz: unknown key (did you mean recipe.epochs?) "
        "[set by the command-line override recipe.epochz=1]")
    assert not (tmp_path / "run").exists()
    shutil.rmtree(tmp_path, ignore_errors=True)
