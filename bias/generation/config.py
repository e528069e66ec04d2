"""The uncon_gen config's schema (`bias.core.schema`): unknown keys are errors in every section.

`train` and `sample` take the fields of `TrainOptions` and `SampleOptions` (whose `problem` checks their values);
`data` is classify's data schema. `vae.arch` and `dit.arch` are diffusers model configs (what they hold is for
diffusers, and `bias.generation.uncon_gen` refuses the DiT keys that follow from the VAE).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, create_model

from bias.core.schema import LogLevel, PositiveInt, Section, dataclass_keys, keys_model, validate_with
from bias.generation.options import SampleOptions, TrainOptions


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
    log_level: LogLevel = "info"
    image_size: PositiveInt = 256
    vae: VaeSection = VaeSection()
    dit: DitSection = DitSection()
    train: keys_model("train", dict.fromkeys(dataclass_keys(TrainOptions), False)) = None  # type: ignore[valid-type]
    sample: keys_model("sample", dict.fromkeys(dataclass_keys(SampleOptions), False)) = None  # type: ignore[valid-type]


def validate_uncon_gen_config(cfg: Any, data_schema: Any = Any) -> dict[str, Any]:
    """One `ConfigError` naming every wrong key of a composed uncon_gen config (and where it was set); `data_schema`:
    the schema of its `data` section (the command passes classify's)."""
    return validate_with(cfg, create_model("UnconGenConfig", __base__=UnconGenConfig, data=(data_schema, ...)))
