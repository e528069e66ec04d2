"""Captions: each image replaced by a sentence or a paragraph about it; the classifier reads the text.

The published transforms: LLaVA-1.5-7B prompted with "Describe this image in one sentence."
(`caption_short`) or "Describe this image in one paragraph." (`caption_long`), greedy decoding, at most
100 new tokens. What survives is what a captioner says about an image; the pixels are gone.

* Output: the text, one row per image in the cache's ``text/caption.parquet`` (`OutputSpec` TEXT), and
  a side table ``generation`` (one row per image: ``new_tokens`` generated, the end of generation too,
  and ``stop``: ``eos`` or ``length`` for a model, ``planted_scene`` for the ground truth). A caption
  that comes out empty is stored as the empty string, as it came; a generation that fails (the model
  raises on a batch) is recorded as failed with its reason (stage ``forward``) and has no text. Neither
  is ever replaced by another caption. The runner makes the cache resumable and splits it across
  processes (`bias.inference.runner`).
* How the text is classified: the transform's ``output`` is ``"text"``, so a classify run reads the
  captions back from the cache and gives them to a text classifier instead of an image model
  (`bias.experiment.text`): the published recipe fine-tunes sentence-t5-base (``recipe=sentence_t5``),
  the fast probe fits a logistic regression on frozen sentence embeddings (``model=minilm_probe``,
  offline), and the baseline of every text run is a bag-of-words logistic regression.
* `captioner`: ``model`` (default) runs an image-to-text model; ``planted_scene`` writes the ground-truth
  captions of the planted data from the generator's record of what it drew in each image
  (`bias.data.planted_scene`): no model, offline, for the known-answer path. It captions only images of
  the planted generator rendered into the run's cache.

The model (``captioner: model``):

* `weights`: a model folder (a Hugging Face id + revision, or a local folder) holding a processor and
  an image-to-text model of transformers: ``llava`` configs load as `LlavaForConditionalGeneration`,
  every other type through `AutoModelForImageTextToText` (BLIP-2, Florence-2, Qwen2-VL, LLaVA-NeXT,
  PaliGemma, ...), its preprocessing through `AutoProcessor`. With ``weights: null``, `arch` (a model
  config) builds the architecture with seeded random weights and `processor` names a processor
  folder (tests, throughput benchmarks).
* The prompt: with the processor's chat template when it has one (LLaVA-1.5: ``USER: <image>\\n<prompt>
  ASSISTANT:``), else the plain prompt; `template` (a string with ``{prompt}``) overrides both.
* Batches: every image is preprocessed with its prompt on its own (CPU, DataLoader workers); a batch is
  then left-padded to its longest prompt (pad token, attention mask 0), so every sequence ends where
  generation starts; greedy decoding then gives a batch the same tokens as one image at a time
  (`tests/test_captions.py` checks it). Fields whose shape is the prompt's (input ids, attention mask,
  token type ids) are padded, every other tensor (pixel values, image sizes, grid sizes) is
  concatenated along its first axis.
* `quantization`: ``4bit`` or ``8bit`` loads the weights through bitsandbytes on a CUDA device
  (``pip install bitsandbytes``; not a dependency of this package): a 7B model in about 4 or 7 GB
  instead of 14 GB in bf16, slower per token and not the published numerics. Null (default) loads
  bf16 (fp16 without bf16 support) on GPU, fp32 on the CPU.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import torch

from bias.core.errors import ConfigError, MissingModelError
from bias.data.planted import SCENE_VERSION, find_scene_record
from bias.data.planted_scene import scene_caption
from bias.inference.models import weight_source
from bias.inference.runner import resolve_device
from bias.inference.store import TEXT, OutputSpec
from transforms.neural.image_models import ImageModelTransform, hf_config
from transforms.registry import register_transform

PROMPTS = {"short": "Describe this image in one sentence.", "long": "Describe this image in one paragraph."}
DEFAULT_WEIGHTS = "llava_1_5_7b"  #: a catalogue name (bias.inference.models)
MODEL, PLANTED_SCENE = "model", "planted_scene"
CAPTIONERS = (MODEL, PLANTED_SCENE)
QUANTIZATIONS = ("4bit", "8bit")
GENERATION = OutputSpec("table", columns={"new_tokens": pa.int32(), "stop": pa.string()})
#: the leading shape of the fields a processor returns per prompt token (padded on the left in a batch)
TOKEN_FIELDS_LIKE = "input_ids"


def pad_left(items: Sequence[Mapping[str, torch.Tensor]], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Per-image processor outputs (batch axis 1) -> one batch, sequences left-padded to the longest.

    A field shaped like ``input_ids`` ([1, length]) is padded on the left: ``input_ids`` with
    `pad_token_id`, everything else (attention mask, token type ids) with 0. Other tensors are
    concatenated along their first axis (pixel values, image sizes; Qwen2-VL's patch rows and grids).
    """
    longest = max(int(item[TOKEN_FIELDS_LIKE].shape[-1]) for item in items)
    out: dict[str, list[torch.Tensor]] = {}
    for item in items:
        length = int(item[TOKEN_FIELDS_LIKE].shape[-1])
        for key, value in item.items():
            if value.ndim == 2 and value.shape == item[TOKEN_FIELDS_LIKE].shape and length < longest:
                fill = pad_token_id if key == TOKEN_FIELDS_LIKE else 0
                value = torch.cat([value.new_full((value.shape[0], longest - length), fill), value], dim=1)
            out.setdefault(key, []).append(value)
    return {key: torch.cat(values, dim=0) for key, values in out.items()}


def stop_index(ids: Sequence[int], stop_ids: set[int]) -> int | None:
    """Position of the first stop token in the generated ids, None if generation ran to the token limit."""
    return next((i for i, t in enumerate(ids) if t in stop_ids), None)


def generated_part(out: torch.Tensor, prompt: torch.Tensor, encoder_decoder: bool) -> torch.Tensor:
    """The new tokens of `generate`'s output: after the decoder's start token (encoder-decoder models such
    as Florence-2), after the prompt (decoder-only models that return it: LLaVA), else all of it."""
    if encoder_decoder:
        return out[:, 1:]
    n = prompt.shape[1]
    if out.shape[1] >= n and torch.equal(out[:, :n], prompt.to(out.device)):
        return out[:, n:]
    return out


class Caption(ImageModelTransform):
    """A caption of every image by an image-to-text model, or the planted ground truth; see the module docstring."""

    kind = "precomputed"
    family = "semantic"
    output = "text"
    augment_group = "a"  # not used: the classifier reads text
    outputs = {"caption": TEXT, "generation": GENERATION}
    preprocess_takes_sha1 = True  # the planted_scene captioner looks each image's record up by its content
    #: "short" or "long": the published prompt and the planted_scene form
    form: ClassVar[str] = "short"

    def __init__(self, captioner: str = MODEL, weights: Any = DEFAULT_WEIGHTS, arch: Mapping[str, Any] | None = None,
                 processor: Any = None, prompt: str | None = None, template: str | None = None,
                 max_new_tokens: int = 100, quantization: str | None = None, batch_size: int = 16,
                 device: str = "auto", dtype: str = "auto") -> None:
        super().__init__(weights=weights, arch=arch, batch_size=batch_size, device=device, dtype=dtype)
        if captioner not in CAPTIONERS:
            raise ConfigError(f"transform ({self.name}).captioner: expected one of {list(CAPTIONERS)}, got "
                              f"{captioner!r} (planted_scene: the planted generator's ground truth, no model)")
        if quantization is not None and quantization not in QUANTIZATIONS:
            raise ConfigError(f"transform ({self.name}).quantization: expected null, 4bit or 8bit, got {quantization!r}")
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise ConfigError(f"transform ({self.name}).max_new_tokens: expected a positive integer, got "
                              f"{max_new_tokens!r}")
        if template is not None and "{prompt}" not in str(template):
            raise ConfigError(f"transform ({self.name}).template: must contain {{prompt}}, got {template!r}")
        if captioner == MODEL and arch is not None and processor is None:
            raise ConfigError(f"transform ({self.name}): arch (random weights) needs transform.processor=<a processor folder> "
                              "(a local folder or a Hugging Face id with the tokenizer and image processor)")
        self.captioner, self.processor, self.template = captioner, processor, template
        self.prompt = PROMPTS[self.form] if prompt is None else str(prompt)
        self.max_new_tokens, self.quantization = max_new_tokens, quantization
        self._processor: Any = None
        self._processor_folder: Path | None = None
        self._device, self._load_dtype = torch.device("cpu"), torch.float32
        self._stop_ids: set[int] = set()

    @property
    def ground_truth(self) -> bool:
        return self.captioner == PLANTED_SCENE

    # --- identity, readiness ----------------------------------------------------------------------------
    def model_identity(self) -> dict[str, Any] | None:
        if self.ground_truth:
            return {"ground_truth": PLANTED_SCENE, "scene_version": SCENE_VERSION}
        return super().model_identity()

    def cache_dtype(self) -> str | None:
        return None if self.ground_truth else super().cache_dtype()

    def output_params(self) -> dict[str, Any]:
        """The ground truth depends on the scene record and the form only: the model's settings (weights,
        prompt, tokens, ...) it never uses stay out of its cache key."""
        return {"captioner": self.captioner} if self.ground_truth else super().output_params()

    def runtime_device(self) -> str:
        return "cpu" if self.ground_truth else self.device

    def check_sources(self, sources: Mapping[str, Any]) -> None:
        """planted_scene captions only the planted generator's images."""
        other = {name: s.kind for name, s in sources.items() if s.kind != "planted"}
        if self.ground_truth and other:
            raise ConfigError(f"transform ({self.name}).captioner: planted_scene writes the planted generator's "
                              f"ground truth and captions only planted data (data=planted*), but {other} are not "
                              "planted; for other images use transform.captioner=model (scripts/transform.py, classify.py) or, in "
                              "describe, captions.captioner=tags (offline) or captions.captioner=model")

    def check_ready(self, cache_root: str | os.PathLike = "cache") -> None:
        """The model's folder (or say what to download), the processor's, and bitsandbytes when quantizing."""
        self._cache_root = cache_root
        if self.ground_truth:
            return
        super().check_ready(cache_root)
        self._processor_folder = self._resolve_processor()
        if self.quantization:
            if resolve_device(self.device).type != "cuda":
                raise ConfigError(f"transform ({self.name}).quantization: {self.quantization} loading needs a CUDA "
                                  f"device, this run has {resolve_device(self.device)}; set quantization=null")
            if importlib.util.find_spec("bitsandbytes") is None:
                raise MissingModelError(f"transform ({self.name}).quantization: {self.quantization} needs bitsandbytes; "
                                        "pip install bitsandbytes (or set quantization=null)")

    def _resolve_processor(self) -> Path:
        if self.processor is not None:
            return weight_source(self.processor).resolve(self._cache_root)
        path = self.weight_path(self._cache_root)
        if path is None:
            raise ConfigError(f"transform ({self.name}): no processor for random weights; set transform.processor=<folder>")
        return path

    # --- the model and its processor --------------------------------------------------------------------
    def processor_object(self) -> Any:
        """The model's `AutoProcessor`, loaded once per process (DataLoader workers load their own)."""
        if self._processor is None:
            from transformers import AutoProcessor

            folder = self._processor_folder or self._resolve_processor()
            self._processor = AutoProcessor.from_pretrained(folder)
        return self._processor

    def preprocessing(self) -> dict[str, Any] | None:
        """The model's own processor (AutoProcessor of the weights' folder) and the prompt text it is given."""
        if self.ground_truth:
            return None
        from transforms.neural.image_models import processor_settings

        processor = self.processor_object()
        images = getattr(processor, "image_processor", None)
        return {"from": "checkpoint" if self.processor is None else "processor folder",
                **(processor_settings(images) if images is not None else {"processor": type(processor).__name__}),
                "prompt_text": self.prompt_text()}

    def prompt_text(self) -> str:
        """The text the model is prompted with: `template`, else the processor's chat template, else the prompt."""
        if self.template is not None:
            return self.template.format(prompt=self.prompt)
        processor = self.processor_object()
        if getattr(processor, "chat_template", None):
            conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": self.prompt}]}]
            return processor.apply_chat_template(conversation, add_generation_prompt=True)
        return self.prompt

    def pad_token_id(self) -> int:
        tokenizer = self.processor_object().tokenizer
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        if pad is None:
            raise ConfigError(f"transform ({self.name}): the tokenizer has neither a pad nor an eos token")
        return int(pad)

    def _model_class(self, config: Any) -> Any:
        from transformers import AutoModelForImageTextToText, LlavaForConditionalGeneration
        from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

        if config.model_type == "llava":
            return LlavaForConditionalGeneration
        if config.model_type in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES:
            return AutoModelForImageTextToText
        raise ConfigError(f"transform ({self.name}): model type {config.model_type!r} is not an image-to-text model "
                          f"of transformers (known: {', '.join(sorted(MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES))})")

    def pretrained(self, folder: Path) -> torch.nn.Module:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(folder)
        kwargs: dict[str, Any] = {"dtype": self._load_dtype}
        if self.quantization:
            from transformers import BitsAndBytesConfig

            bits = ({"load_in_4bit": True, "bnb_4bit_compute_dtype": self._load_dtype} if self.quantization == "4bit"
                    else {"load_in_8bit": True})
            kwargs |= {"quantization_config": BitsAndBytesConfig(**bits), "device_map": {"": self._device}}
        return self._model_class(config).from_pretrained(folder, config=config, **kwargs)

    def from_arch(self, arch: Mapping[str, Any]) -> torch.nn.Module:
        """Random weights of `arch`, drawn on the CPU (seeded: every process builds the same) in the run's dtype."""
        config = hf_config(arch, self.name)
        cls = self._model_class(config)
        if hasattr(cls, "from_config"):  # an Auto class
            return cls.from_config(config, dtype=self._load_dtype)
        return cls._from_config(config, dtype=self._load_dtype)

    def load_model(self, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
        self._device, self._load_dtype = device, dtype
        model = self.build()
        generation = getattr(model, "generation_config", None)
        eos = getattr(generation, "eos_token_id", None)
        if eos is None:
            eos = self.processor_object().tokenizer.eos_token_id
        self._stop_ids = {int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos]) if e is not None}
        return model

    def load(self, device: torch.device, dtype: torch.dtype) -> None:
        if self.ground_truth or self._model is not None:
            return
        model = self.load_model(device, dtype)
        self._model = (model if self.quantization else model.to(device)).eval()

    # --- the runner's contract ------------------------------------------------------------------------
    def preprocess(self, image: np.ndarray, sha1: str | None = None) -> dict[str, Any]:
        """planted_scene: the caption itself; model: the processor's tensors for this image and prompt."""
        if self.ground_truth:
            if sha1 is None:
                raise ValueError("the planted_scene captioner needs the image's SHA-1 (the runner passes it)")
            try:
                record = find_scene_record(sha1, self._cache_root)
            except KeyError as err:
                raise ValueError(err.args[0]) from None
            return {"caption": scene_caption(record, self.form)}
        encoded = self.processor_object()(images=[image], text=[self.prompt_text()], return_tensors="pt")
        return {k: v for k, v in encoded.items() if isinstance(v, torch.Tensor)}

    def collate(self, items: Sequence[Any]) -> list[Any]:
        """A list of the items: padding happens in `forward`, so the runner may split a batch anywhere."""
        return list(items)

    def forward(self, batch: list[dict[str, Any]]) -> Any:
        """B x max_new_tokens generated ids (after the prompt), or the ground-truth items as they are."""
        if self.ground_truth:
            return batch
        inputs = pad_left(batch, self.pad_token_id())
        dtype = next(self.model.parameters()).dtype
        inputs = {k: v.to(self._device, dtype) if v.is_floating_point() else v.to(self._device) for k, v in inputs.items()}
        out = self.model.generate(**inputs, do_sample=False, num_beams=1, max_new_tokens=self.max_new_tokens,
                                  pad_token_id=self.pad_token_id())
        return generated_part(out, inputs[TOKEN_FIELDS_LIKE], bool(getattr(self.model.config, "is_encoder_decoder",
                                                                           False)))

    def postprocess(self, outputs: Any, batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if self.ground_truth:
            return [{"caption": item["caption"], "generation": {"new_tokens": [0], "stop": [PLANTED_SCENE]}}
                    for item in outputs]
        tokenizer = self.processor_object().tokenizer
        items = []
        for row in outputs.cpu().tolist():
            end = stop_index(row, self._stop_ids)
            kept = row if end is None else row[:end]
            text = tokenizer.decode(kept, skip_special_tokens=True).strip()
            items.append({"caption": text, "generation": {"new_tokens": [len(row) if end is None else end + 1],
                                                          "stop": ["length" if end is None else "eos"]}})
        return items

    def unload(self) -> None:
        self._model = None


@register_transform("caption_short")
class ShortCaption(Caption):
    """One sentence per image ("Describe this image in one sentence.")."""
    keeps = "what a captioner says about the image in one sentence"
    published = (
        'LLaVA-1.5-7B `llava_1_5_7b` = `llava-hf/llava-1.5-7b-hf` (any transformers image-to-text model by '
        'id), "Describe this image in one sentence.", greedy, 100 new tokens; classified as text; '
        "`captioner=planted_scene`: the planted generator's ground truth"
    )

    form = "short"


@register_transform("caption_long")
class LongCaption(Caption):
    """One paragraph per image ("Describe this image in one paragraph.")."""
    keeps = "the same in one paragraph"
    published = 'as `caption_short` (`llava_1_5_7b` = `llava-hf/llava-1.5-7b-hf`), "Describe this image in one paragraph."'

    form = "long"
