"""The catalogue of known models (`bias.inference.models`): one place for every model fact, named by configs."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from bias.core.errors import ConfigError
from bias.inference.models import CATALOGUE, entry, on_disk, weight_source, weights_config
from tests.conftest import ROOT
from transforms.registry import create_transform

#: where code, configs and docs live (the catalogue itself is the one place a sha256 may be written)
SOURCES = [p for folder in ("bias", "transforms", "describe", "classifiers", "memorization", "configs", "scripts",
                            "benchmarks")
           for p in (ROOT / folder).rglob("*") if p.suffix in (".py", ".yaml", ".sh")] + [ROOT / "README.md",
                                                                                    *(ROOT / "docs").glob("*.md")]
SHA256 = re.compile(r"\b[0-9a-f]{64}\b")


def configs_naming_weights() -> dict[str, object]:
    """Every packaged config file's `weights` values (nested ones too), by file and key path."""
    found = {}

    def walk(node, where):
        if isinstance(node, dict):
            for k, v in node.items():
                if k == "weights" and v is not None:
                    found[f"{where}{k}"] = v
                walk(v, f"{where}{k}.")

    for path in (ROOT / "configs").rglob("*.yaml"):
        walk(OmegaConf.to_container(OmegaConf.load(path)), f"{path.relative_to(ROOT)}:")
    return found


def test_every_sha256_of_a_model_is_written_once_in_the_catalogue():
    pinned = {e.sha256 for e in CATALOGUE.values() if e.sha256}
    assert len(pinned) == 3  # the three packaged models
    for path in SOURCES:
        if path == ROOT / "bias" / "inference" / "models.py":
            continue
        written = set(SHA256.findall(path.read_text(errors="replace"))) & pinned
        assert not written, f"{path.relative_to(ROOT)} writes the catalogue's sha256 {written}: name the entry instead"


#: library modules that compose a whole Hydra config of another command (as a script does), not model facts:
#: describe's classify=true composes the classify config of the same data
COMPOSES_A_COMMAND_CONFIG = {"describe/reference.py": "bias.configs"}


def test_library_code_reads_no_yaml():
    for folder in ("bias/inference", "transforms", "describe", "classifiers"):
        for path in (ROOT / folder).rglob("*.py"):
            text = path.read_text()
            allowed = COMPOSES_A_COMMAND_CONFIG.get(path.relative_to(ROOT).as_posix())
            for needle in ("yaml.safe_load", "OmegaConf.load", "bias.configs", "CONFIG_DIR"):
                if needle == allowed:
                    assert "initialize_config_module" in text and "OmegaConf.load" not in text
                    continue
                assert needle not in text, f"{path.relative_to(ROOT)} reads packaged YAML ({needle})"


def test_every_config_names_its_model_by_a_catalogue_entry():
    weights = configs_naming_weights()
    assert len(weights) >= 15
    named = {v for v in weights.values() if isinstance(v, str)}
    unnamed = {k: v for k, v in weights.items() if not isinstance(v, str) and "sam.yaml" not in k}
    assert not unnamed, f"configs that spell out weights instead of a catalogue name: {unnamed}"
    assert named <= set(CATALOGUE), named - set(CATALOGUE)
    # every catalogue entry is some config's default, except SAM (its URL config awaits a sha256)
    assert set(CATALOGUE) - named == {"sam_vit_l"}
    assert weights_config("sam_vit_l") == {"sha256": None, **entry("sam_vit_l").source}
    sam = OmegaConf.to_container(OmegaConf.load(ROOT / "configs" / "transform" / "sam.yaml"))["weights"]
    assert sam == weights_config("sam_vit_l")
    from transforms.neural.sam import DEFAULT_WEIGHTS, SAM_CHECKPOINTS

    assert DEFAULT_WEIGHTS == sam and DEFAULT_WEIGHTS["url"] == SAM_CHECKPOINTS["vit_l"]


@pytest.mark.parametrize("name", ["seg", "depth", "vae", "imagenet_cls", "object_det", "object_crops",
                                  "object_context", "caption_short", "caption_long", "text_to_image"])
def test_each_model_transform_config_is_its_constructor_defaults(name):
    """The library builds side-output and helper transforms from their constructors, not from YAML: so the
    packaged config must say what the constructor says."""
    config = OmegaConf.to_container(OmegaConf.load(ROOT / "configs" / "transform" / f"{name}.yaml"))
    config.pop("name")
    defaults = json.loads(json.dumps(create_transform(name).get_params()))
    differ = {k: (v, defaults.get(k)) for k, v in config.items() if defaults.get(k, object()) != v}
    assert not differ, f"{name}: config vs constructor default: {differ}"


def test_a_config_value_names_an_entry_a_path_or_a_hub_id(tmp_path, monkeypatch):
    assert weight_source("efficientnet_lite0") == entry("efficientnet_lite0").weight_source
    assert weight_source("efficientnet_lite0").sha256 == entry("efficientnet_lite0").sha256
    assert weight_source("org/some-model").hf == "org/some-model"
    monkeypatch.chdir(tmp_path)
    (tmp_path / "efficientnet_lite0").mkdir()  # an existing path wins over a catalogue name
    assert weight_source("efficientnet_lite0").kind == "local"
    with pytest.raises(ConfigError, match="not in the catalogue"):
        entry("no_such_model")


def test_entries_are_complete():
    for e in CATALOGUE.values():
        assert e.licence and e.task and e.inputs and e.use and e.reference, e.name
        assert sum(k in e.source for k in ("hf", "url", "package")) == 1
        if "package" in e.source:
            assert re.fullmatch(r"[0-9a-f]{64}", e.sha256) and "==" in e.source["distribution"]


def test_listing_says_which_entries_are_on_disk(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    found, where = on_disk(entry("efficientnet_lite0"), tmp_path)
    assert found and where.endswith("efficientnet-lite0-57934424.pth")
    found, where = on_disk(entry("depth_anything_v2_large"), tmp_path)
    assert not found and "depth-anything/Depth-Anything-V2-Large-hf" in where
    assert on_disk(entry("sam_vit_l"), tmp_path)[0] is False
    out = subprocess.run([sys.executable, "-m", "bias.inference.models", "--cache", str(tmp_path)], check=True,
                         capture_output=True, text=True, env={"HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1",
                                                              "PATH": "/usr/bin:/bin"}).stdout
    for e in CATALOGUE.values():
        assert e.name in out
    assert "[x] efficientnet_lite0" in out and "[ ] llava_1_5_7b" in out and "[ ] sam_vit_l" in out


def test_the_docs_transform_table_and_the_catalogue_agree():
    """Each model transform's row of the docs' transform table (generated from the registry by docs/hooks.py)
    names the hub id (or package) of the catalogue entry its config names, and the models page lists every
    catalogue entry."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("docs_hooks", ROOT / "docs" / "hooks.py")
    hooks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hooks)
    rows = {row["name"]: row["published"] for row in hooks.transform_rows()}
    checked = 0
    for path in sorted((ROOT / "configs" / "transform").glob("*.yaml")):
        weights = OmegaConf.to_container(OmegaConf.load(path)).get("weights")
        if not isinstance(weights, str):
            continue
        e = entry(weights)
        row = rows.get(path.stem)
        assert row is not None, f"the docs' transform table has no row for {path.stem}"
        source = e.source.get("hf") or e.source.get("distribution", "").split("==")[0]
        assert source in row, f"docs row {path.stem} does not name {source} (catalogue entry {e.name})"
        assert f"`{e.name}`" in row, f"docs row {path.stem} does not name the catalogue entry `{e.name}`"
        checked += 1
    assert checked >= 9
    models_page = (ROOT / "docs" / "models.md").read_text()
    for name in CATALOGUE:
        assert f"`{name}`" in models_page, f"docs/models.md does not list the catalogue entry {name}"


def test_a_transform_built_by_name_is_keyed_like_the_spelled_out_source():
    by_name = create_transform("imagenet_cls", device="cpu")
    spelled = create_transform("imagenet_cls", weights=weights_config("efficientnet_lite0"), device="cpu")
    assert by_name.cache_key() == spelled.cache_key()
    assert by_name.model_identity() == {"kind": "package", "sha256": entry("efficientnet_lite0").sha256}
