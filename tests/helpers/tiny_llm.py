"""A tiny random-weight causal LM (transformers' `LlamaForCausalLM`) and a word-level tokenizer, built offline.

The tokenizer is `tests.helpers.tiny_models.word_tokenizer` (the words of the prompts and planted captions)
with a ChatML-style chat template, so `describe.llm.HFCausalLM` takes its chat-template path as it does for
SmolLM2. A few thousand parameters: generating a batch takes milliseconds.
"""

from __future__ import annotations

from typing import Any

import torch

from tests.helpers.tiny_models import word_tokenizer

#: ChatML, as SmolLM2's template writes it (without the default system message), written for these tests
CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|> {{ m['role'] }} {{ m['content'] }} <|im_end|> {% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|> assistant {% endif %}")


def tiny_tokenizer(chat: bool = True) -> Any:
    tokenizer = word_tokenizer(["<pad>", "<s>", "<|im_end|>", "<unk>", "<|im_start|>"], pad_token="<pad>",
                               bos_token="<s>", eos_token="<|im_end|>", unk_token="<unk>")
    if chat:
        tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def tiny_llama(seed: int = 0, width: int = 32, layers: int = 2, chat: bool = True) -> tuple[Any, Any]:
    """(model, tokenizer): a random `LlamaForCausalLM` over the word tokenizer's vocabulary, seeded."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = tiny_tokenizer(chat)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=width, intermediate_size=2 * width,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=256, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config).eval()
    return model, tokenizer
