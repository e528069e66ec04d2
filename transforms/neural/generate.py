"""Text to image: each image replaced by a new one generated from its short caption.

The published transform: SDXL-Turbo, 1 denoising step, guidance 0, 256x256, prompted with the image's
short caption (the `caption_short` transform's text output), classified with augmentation group "a".
What survives is what the caption says about the image, rendered by a generator that knows nothing
else about it.

* The captions are read from the caption transform's cache (`bias.inference.store.OutputStore.read_text`),
  never computed here: run ``scripts/transform.py transform=caption_short`` on the same data first. An
  image whose caption is missing, empty or recorded as failed is a failure of this transform too (stage
  ``preprocess``, with the reason): it is never prompted with another text.
* Seeds: image ``sha1`` is generated from the noise of `generation_seed(seed, sha1)`
  (`bias.core.seeding.derive_seed`), one CPU generator per image, so its output depends on its content and
  `seed` alone, not on the batch it lands in, the process that computes it or the device. `seed` is the
  generation seed, part of the cache key: the images are generated once and classified with any number of
  training seeds.
* The model: any diffusers text-to-image pipeline folder that `AutoPipelineForText2Image` loads (a Hugging
  Face id + revision or a local folder). Tests and benchmarks save a small randomly initialised SDXL
  pipeline (UNet, VAE, two CLIP text encoders and tokenizers) to a folder and pass it as a local path.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.compute as pc
import torch

from bias.core.errors import ConfigError, MissingModelError
from bias.core.seeding import derive_seed
from bias.core.strings import sha1_array
from bias.inference.store import IMAGE, TEXT, OutputStore
from transforms.base import ModelTransform, output_store
from transforms.registry import create_transform, register_transform

DEFAULT_WEIGHTS = "sdxl_turbo"  #: a catalogue name (bias.inference.models)
#: where the prompts come from: the published caption_short transform's text cache (see `CaptionSource`)
DEFAULT_CAPTIONS = {"transform": "caption_short", "params": None, "resize_shorter": None, "folder": None, "output": None}


def generation_seed(seed: int, sha1: str) -> int:
    """The seed of the noise image `sha1` is generated from (31 bits, stable across versions and platforms)."""
    return derive_seed(int(seed), f"text_to_image:{sha1}")


class CaptionError(ValueError):
    """An image has no usable caption (missing, empty, or its captioning failed)."""


class CaptionLookup:
    """The texts of one text output of a store, by source SHA-1, with the reasons of recorded failures.

    Held as a sorted S40 digest array and an Arrow string column (no Python object per image), so the
    DataLoader workers that fork from the process holding it share its memory.
    """

    def __init__(self, store: OutputStore, output: str) -> None:
        self.folder, self.output = store.folder, output
        table = store.read_text(output).sort_by("sha1")
        self._sha1 = sha1_array(table["sha1"])
        self._text = table["text"].combine_chunks()
        entries = store.entries()
        failed = entries.filter(pc.equal(entries["status"], "failed"))
        self._failed = dict(zip(failed["sha1"].to_pylist(), failed["reason"].to_pylist()))

    def __len__(self) -> int:
        return len(self._sha1)

    def text(self, sha1: str) -> str:
        """The caption of source `sha1`; `CaptionError` (saying why) when there is none to prompt with."""
        if sha1 in self._failed:
            raise CaptionError(f"its caption failed ({self._failed[sha1]}); an image without a caption is not "
                               "generated from another text")
        key = np.bytes_(sha1.encode("ascii"))
        i = int(np.searchsorted(self._sha1, key))
        if i == len(self._sha1) or self._sha1[i] != key:
            raise CaptionError(f"no {self.output!r} caption of this image in {self.folder}: caption these images "
                               "first (scripts/transform.py transform=caption_short, same data)")
        text = self._text[i].as_py() or ""
        if not text.strip():
            raise CaptionError("its caption is empty; an image without a caption is not generated from another text")
        return text


def _text_outputs(outputs: Mapping[str, Any]) -> list[str]:
    return [k for k, v in outputs.items() if getattr(v, "kind", v) == "text"]


def _choose_output(available: Sequence[str], wanted: str | None, where: str) -> str:
    if wanted is not None:
        if wanted not in available:
            raise ConfigError(f"transform (text_to_image).captions.output: {where} has no text output {wanted!r}; "
                              f"it has {list(available)}")
        return wanted
    if len(available) != 1:
        raise ConfigError(f"transform (text_to_image).captions.output: {where} has the text outputs {list(available)}; "
                          "name the one that holds the captions")
    return available[0]


def check_captions(captions: Any) -> dict[str, Any]:
    """`captions` with every key of `DEFAULT_CAPTIONS` (unknown keys and wrong types are a `ConfigError`)."""
    if not isinstance(captions, Mapping):
        raise ConfigError(f"transform (text_to_image).captions: expected a mapping like {DEFAULT_CAPTIONS}, "
                          f"got {captions!r}")
    unknown = sorted(set(captions) - set(DEFAULT_CAPTIONS))
    if unknown:
        raise ConfigError(f"transform (text_to_image).captions: unknown keys {unknown}; it takes "
                          f"{sorted(DEFAULT_CAPTIONS)}")
    out = {**DEFAULT_CAPTIONS, **{str(k): v for k, v in captions.items()}}
    if out["params"] is not None and not isinstance(out["params"], Mapping):
        raise ConfigError(f"transform (text_to_image).captions.params: expected null or a mapping of the caption "
                          f"transform's parameters, got {out['params']!r}")
    out["params"] = None if out["params"] is None else dict(out["params"])
    if out["folder"] is None and not out["transform"]:
        raise ConfigError("transform (text_to_image).captions: set transform (a caption transform, e.g. "
                          "caption_short) or folder (a caption store folder)")
    rs = out["resize_shorter"]
    if rs is not None and (isinstance(rs, bool) or not isinstance(rs, int) or rs < 1):
        raise ConfigError(f"transform (text_to_image).captions.resize_shorter: expected null or a positive integer "
                          f"(the data.resize_shorter the captions were computed at), got {rs!r}")
    return out


class CaptionSource:
    """Where text_to_image's prompts are stored.

    Either the text cache of a caption transform (`transform`, its packaged config updated by `params`),
    at the size tag of `resize_shorter` (the ``data.resize_shorter`` the captions were computed at: the
    cache folder is ``<cache>/transforms/<caption key>-<s500 | orig>/``), or a store folder given directly
    (`folder`). `output` names the text output (default: the store's only one).
    """

    def __init__(self, captions: Mapping[str, Any]) -> None:
        self.options = check_captions(captions)
        self._transform: Any = None

    def caption_transform(self) -> Any:
        if self._transform is None:
            name = str(self.options["transform"])
            try:
                self._transform = create_transform(name, **(self.options["params"] or {}))
            except KeyError as err:
                raise ConfigError(f"transform (text_to_image).captions.transform: {err.args[0]}") from err
        return self._transform

    def identity(self) -> dict[str, Any]:
        """What names the captions in text_to_image's cache key: the caption cache's folder name, or the folder."""
        if self.options["folder"] is not None:
            return {"folder": str(Path(self.options["folder"]).expanduser().resolve()), "output": self.options["output"]}
        store = output_store(self.caption_transform(), "cache", self.options["resize_shorter"])
        return {"store": store.folder.name, "output": self.options["output"]}

    def store(self, cache_root: str | os.PathLike) -> tuple[OutputStore, str]:
        """The caption store and its text output; a `MissingModelError` when the captions are not computed."""
        if self.options["folder"] is not None:
            folder = Path(self.options["folder"]).expanduser()
            manifest = folder / "manifest.json"
            if not manifest.is_file():
                raise MissingModelError(f"transform (text_to_image).captions.folder: {folder} holds no computed "
                                        "transform outputs (no manifest.json)")
            kinds = json.loads(manifest.read_text()).get("outputs", {})
            output = _choose_output(_text_outputs(kinds), self.options["output"], str(folder))
            return OutputStore(folder, {output: TEXT}), output
        caption = self.caption_transform()
        store = output_store(caption, cache_root, self.options["resize_shorter"])
        output = _choose_output(_text_outputs(caption.outputs), self.options["output"], f"transform {caption.name}")
        if not (store.folder / "manifest.json").is_file():
            others = sorted(p.name for p in (Path(cache_root) / "transforms").glob(f"{caption.name}-*"))
            found = f"; caption caches there: {others} (another resize tag: set transform.captions.resize_shorter)" \
                if others else ""
            raise MissingModelError(f"text_to_image: the {caption.name} captions are not computed ({store.folder} does "
                                    f"not exist); run `scripts/transform.py transform={caption.name}` with the same "
                                    f"data first{found}")
        return store, output

    def lookup(self, cache_root: str | os.PathLike) -> CaptionLookup:
        store, output = self.store(cache_root)
        return CaptionLookup(store, output)


def _check_positive_int(name: str, value: Any, multiple: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1 or value % multiple:
        what = "a positive integer" if multiple == 1 else f"a positive multiple of {multiple}"
        raise ValueError(f"text_to_image: {name} must be {what}, got {value!r}")
    return value


@register_transform("text_to_image")
class TextToImage(ModelTransform):
    """A new ``size x size`` image generated from each image's short caption; see the module docstring.

    Side output `prompt`: the caption each image was generated from.
    """
    keeps = (
        "what the short caption says, redrawn: a new 256x256 image generated from each image's `caption_short` "
        "caption"
    )
    published = (
        'SDXL-Turbo `sdxl_turbo` = `stabilityai/sdxl-turbo` (any diffusers `AutoPipelineForText2Image` '
        'pipeline by id or folder), 1 step, guidance 0, 256x256, prompted with the caption from the '
        '`caption_short` cache, seeded per image'
    )

    kind = "precomputed"
    augment_group = "a"
    family = "semantic"
    outputs = {"image": IMAGE, "prompt": TEXT}
    preprocess_takes_sha1 = True

    def __init__(self, weights: Any = DEFAULT_WEIGHTS, captions: Mapping[str, Any] = DEFAULT_CAPTIONS, seed: int = 0,
                 size: int = 256, steps: int = 1, guidance_scale: float = 0.0, variant: str | None = None,
                 batch_size: int = 8, device: str = "auto", dtype: str = "auto") -> None:
        super().__init__(weights=weights, batch_size=batch_size, device=device, dtype=dtype)
        if weights is None:
            raise ConfigError("transform (text_to_image).weights: a diffusers text-to-image pipeline (a Hugging Face "
                              "id or a local pipeline folder); random weights: save a small pipeline and pass its folder")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"text_to_image: seed must be an integer, got {seed!r}")
        if isinstance(guidance_scale, bool) or not isinstance(guidance_scale, (int, float)) or guidance_scale < 0:
            raise ValueError(f"text_to_image: guidance_scale must be a number >= 0, got {guidance_scale!r}")
        if variant is not None and not isinstance(variant, str):
            raise ValueError(f"text_to_image: variant must be null or a weight variant such as fp16, got {variant!r}")
        self.size = _check_positive_int("size", size, 8)
        self.steps = _check_positive_int("steps", steps)
        self.captions = check_captions(captions)
        self.seed, self.guidance_scale, self.variant = seed, float(guidance_scale), variant
        self._captions = CaptionSource(self.captions)
        self._lookup: CaptionLookup | None = None
        self._cache_root: str | os.PathLike = "cache"

    # --- weights and captions ---------------------------------------------------------------------------
    def model_identity(self) -> dict[str, Any]:
        return {"pipeline": super().model_identity(), "captions": self._captions.identity()}

    def _pipeline_folder(self, cache_root: str | os.PathLike) -> Path:
        path = self.weight_path(cache_root)
        if not (path.is_dir() and (path / "model_index.json").is_file()):
            source = self.weight_source()
            fix = (f"download it again: `hf download {source.hf} --revision {source.revision}`" if source.kind == "hf"
                   else "point weights at a diffusers pipeline folder (save_pretrained of a pipeline)")
            raise MissingModelError(f"weights: {path} is not a diffusers pipeline folder (no model_index.json); {fix}")
        return path

    def check_ready(self, cache_root: str | os.PathLike = "cache") -> None:
        """The pipeline folder is there, and so are the captions (loaded here, before the workers start)."""
        self._cache_root = cache_root
        self._pipeline_folder(cache_root)
        self._lookup = self._captions.lookup(cache_root)

    def caption_lookup(self) -> CaptionLookup:
        if self._lookup is None:
            self._lookup = self._captions.lookup(self._cache_root)
        return self._lookup

    # --- the runner's contract ------------------------------------------------------------------------------
    def load(self, device: torch.device, dtype: torch.dtype) -> None:
        if self._model is not None:
            return
        from diffusers import AutoPipelineForText2Image

        kwargs = {"torch_dtype": dtype} | ({"variant": self.variant} if self.variant else {})
        pipe = AutoPipelineForText2Image.from_pretrained(self._pipeline_folder(self._cache_root), **kwargs)
        pipe.set_progress_bar_config(disable=True)
        self._model = pipe.to(device)

    def preprocess(self, image: np.ndarray, sha1: str) -> dict[str, Any]:
        return {"prompt": self.caption_lookup().text(sha1), "seed": generation_seed(self.seed, sha1)}

    def collate(self, items: Sequence[Mapping[str, Any]]) -> dict[str, list[Any]]:
        return {"prompt": [it["prompt"] for it in items], "seed": [int(it["seed"]) for it in items]}

    def forward(self, batch: Mapping[str, Any]) -> np.ndarray:
        """B x size x size x 3 uint8 images, each from its own seeded CPU generator."""
        generators = [torch.Generator("cpu").manual_seed(s) for s in batch["seed"]]
        pipe = self.model
        with torch.autocast(pipe.device.type, enabled=False):  # the pipeline runs in its own dtype (it upcasts the VAE)
            images = pipe(prompt=list(batch["prompt"]), num_inference_steps=self.steps,
                          guidance_scale=self.guidance_scale, height=self.size, width=self.size,
                          generator=generators, output_type="np").images
        return (np.clip(np.asarray(images, dtype=np.float32), 0, 1) * 255).round().astype(np.uint8)

    def postprocess(self, outputs: np.ndarray, batch: Mapping[str, Any]) -> list[dict[str, Any]]:
        return [{"image": np.ascontiguousarray(img), "prompt": prompt} for img, prompt in zip(outputs, batch["prompt"])]
