"""The uncon_gen config's schema (`bias.core.schema`): unknown keys are errors in every section.

`train` and `sample` take the fields of `TrainOptions` and `SampleOptions` (whose `problem` checks their values);
`data` is classify's data schema. `vae.arch` and `dit.arch` are diffusers model configs (what they hold is for
diffusers, and `bias.generation.uncon_gen` refuses the DiT keys that follow from the VAE).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import Field, create_model

from bias.core.errors import ConfigError
from bias.core.schema import Section, check_config, dataclass_keys, keys_model, to_plain
from bias.generation.options import SampleOptions, TrainOptions

PositiveInt = Annotated[int, Field(gt=0)]


class VaeSection(Section):
    weights: Any = None
    arch: dict[str, Any] | None = None
    batch_size: PositiveInt = 32


class DitSection(Section):
    arch: dict[str, Any] | None = None
    learn_sigma: bool = True


class UnconGenConfig(Section):
    """A composed `uncon_gen` config without its `hydra` key."""

    data: Any
    seed: Annotated[int, Field(ge=0)] = 0
    out: str | None = None
    cache_dir: str
    num_workers: Annotated[int, Field(ge=0)] | None = None
    datasets: list[str] | None = None
    print_config: bool = False
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    image_size: PositiveInt = 256
    vae: VaeSection = VaeSection()
    dit: DitSection = DitSection()
    train: keys_model("train", dict.fromkeys(dataclass_keys(TrainOptions), False)) = None  # type: ignore[valid-type]
    sample: keys_model("sample", dict.fromkeys(dataclass_keys(SampleOptions), False)) = None  # type: ignore[valid-type]


def validate_uncon_gen_config(cfg: Any, data_schema: Any = Any) -> dict[str, Any]:
    """One `ConfigError` naming every wrong key of a composed uncon_gen config (and where it was set); `data_schema`:
    the schema of its `data` section (the command passes classify's)."""
    plain = to_plain(cfg)
    if not isinstance(plain, Mapping):
        raise ConfigError(f"the config: expected a mapping, got {plain!r}")
    return check_config(cfg, create_model("UnconGenConfig", __base__=UnconGenConfig, data=(data_schema, ...)),
                        plain=plain)
