"""The download config's schema (`bias.core.schema`): unknown keys are errors, each reader's keys come from its class.

`readers.<dataset>` takes ``reader`` (a name in `bias.data.download.METADATA_READERS`) and that reader's constructor
arguments, so a reader you register is checked too. `img2dataset` stays open: any img2dataset command-line option
may be added there (`bias.data.download` refuses the ones the URL sample sets).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import Field, create_model

from bias.core.schema import LogLevel, Section, keys_model, signature_keys, validate_with


class DownloadConfig(Section):
    """A composed `download` config without its `hydra` key; `download_schema` fills in the readers."""

    dataset: str
    metadata: str
    out: str
    seed: Annotated[int, Field(ge=0)] = 42
    num_urls: Annotated[int, Field(gt=0)] = 1_500_000
    min_downloaded: Annotated[int, Field(ge=0)] | None = None
    download: bool = True
    readers: dict[str, Any] = {}
    img2dataset: dict[str, Any] | None = None
    print_config: bool = False
    log_level: LogLevel = "info"


def reader_schema(name: Any) -> Any:
    """``reader`` and the reader class's constructor arguments (Any for a name it does not know: the download says)."""
    from bias.data.download import METADATA_READERS

    if not isinstance(name, str) or name not in METADATA_READERS:
        return Any
    keys = signature_keys(METADATA_READERS[name].__init__, skip=("path",))
    return Any if keys is None else keys_model(f"reader:{name}", keys, reader=(str, ...))


def download_schema(plain: Mapping[str, Any]) -> type[DownloadConfig]:
    readers = plain.get("readers")
    if not isinstance(readers, Mapping):
        return DownloadConfig
    fields = {str(dataset): (reader_schema(spec.get("reader") if isinstance(spec, Mapping) else None), ...)
              for dataset, spec in readers.items()}
    return create_model("DownloadConfig", __base__=DownloadConfig,
                        readers=(create_model("readers", __base__=Section, **fields), ...))


def validate_download_config(cfg: Any) -> dict[str, Any]:
    """One `ConfigError` naming every wrong key of a composed download config (and where it was set)."""
    return validate_with(cfg, download_schema)
