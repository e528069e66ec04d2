"""Tiny real models with random weights, built here and saved as local folders (no hub, no download).

* `save_tiny_llava(folder)`: LLaVA (a CLIP vision tower, a projector, a Llama language model) with a
  word-level tokenizer, a CLIP image processor and a LLaVA-style chat template, saved with
  `save_pretrained`: the caption transform loads it like llava-hf/llava-1.5-7b-hf.
* `save_tiny_t5(folder)`: a T5 encoder (what sentence-t5-base is) and a word-level tokenizer.

The tokenizers are built from a word list with the `tokenizers` library; the configs follow the real
models' structure at a few thousand parameters. `benchmarks/bench_captions.py` uses them too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

#: words of the prompts and of the planted captions, and some more, so random models emit words
WORDS = ("a an the image of in on at with and or is are this one sentence paragraph describe user assistant "
         "shape shapes circle square star triangle cross ellipse rectangle diamond pentagon hexagon red blue "
         "green yellow orange purple pink teal white black grey dark light small medium large background plain "
         "cluttered fading from to text banner bar logo frame top bottom left right centre there two three four "
         "five six seven eight nine ten objects object written words kinds including outline").split()
PUNCTUATION = (".", ",", ":", "(", ")", '"', "$", "%")
#: a chat template in LLaVA-1.5's layout ("USER: <image>\n<prompt> ASSISTANT:"), written for these tests
CHAT_TEMPLATE = ("{% for m in messages %}{{ m['role'].upper() }}: {% for c in m['content'] %}"
                 "{% if c['type'] == 'image' %}<image>\n{% else %}{{ c['text'] }} {% endif %}{% endfor %}{% endfor %}"
                 "{% if add_generation_prompt %}ASSISTANT:{% endif %}")


def word_tokenizer(special: list[str], **tokens: str) -> Any:
    """A lower-casing word-level fast tokenizer over `WORDS`, `special` first (ids 0, 1, ...)."""
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate([*special, *WORDS, *PUNCTUATION])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token=tokens["unk_token"]))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Split(Regex(r"[.,:()\"$%]"), behavior="isolated")])
    tok.add_special_tokens(special)  # matched whole, before splitting ("<image><image>" is two tokens)
    return PreTrainedTokenizerFast(tokenizer_object=tok, **tokens)


def llava_config(vocab_size: int, image_token: int, width: int = 16, layers: int = 2, image: int = 28,
                 vision_width: int = 16) -> Any:
    from transformers import LlavaConfig

    patches = (image // 14) ** 2
    return LlavaConfig(
        vision_config={"model_type": "clip_vision_model", "hidden_size": vision_width,
                       "intermediate_size": 2 * vision_width, "num_hidden_layers": 2, "num_attention_heads": 2,
                       "image_size": image, "patch_size": 14, "projection_dim": vision_width},
        text_config={"model_type": "llama", "hidden_size": width, "intermediate_size": 2 * width,
                     "num_hidden_layers": layers, "num_attention_heads": 2, "num_key_value_heads": 1,
                     "vocab_size": vocab_size, "max_position_embeddings": 512, "pad_token_id": 0,
                     "bos_token_id": 1, "eos_token_id": 2},
        image_token_index=image_token, image_seq_length=patches, vision_feature_select_strategy="default",
        vision_feature_layer=-1)


def llava_processor(image: int = 28) -> Any:
    from transformers import CLIPImageProcessor, LlavaProcessor

    tokenizer = word_tokenizer(["<pad>", "<s>", "</s>", "<unk>", "<image>"], pad_token="<pad>", bos_token="<s>",
                               eos_token="</s>", unk_token="<unk>", extra_special_tokens={"image_token": "<image>"})
    images = CLIPImageProcessor(size={"shortest_edge": image}, crop_size={"height": image, "width": image})
    # the CLS token of the vision tower counts as one more and "default" drops it: (image / 14)^2 image tokens
    return LlavaProcessor(image_processor=images, tokenizer=tokenizer, patch_size=14,
                          vision_feature_select_strategy="default", num_additional_image_tokens=1,
                          chat_template=CHAT_TEMPLATE)


def save_tiny_llava(folder: Path, seed: int = 0, **config: Any) -> Path:
    """A random tiny LLaVA and its processor in `folder` (config: `llava_config` sizes)."""
    from transformers import LlavaForConditionalGeneration

    processor = llava_processor(config.get("image", 28))
    tokenizer = processor.tokenizer
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlavaForConditionalGeneration(llava_config(len(tokenizer), tokenizer.convert_tokens_to_ids("<image>"),
                                                           **config)).eval()
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return Path(folder)


def save_tiny_t5(folder: Path, seed: int = 0) -> Path:
    """A random tiny T5 encoder (`T5EncoderModel`, as sentence-t5 ships it) and its tokenizer in `folder`."""
    from tokenizers import processors
    from transformers import T5Config, T5EncoderModel

    tokenizer = word_tokenizer(["<pad>", "</s>", "<unk>"], pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(single="$A </s>",
                                                                               special_tokens=[("</s>", 1)])
    config = T5Config(vocab_size=len(tokenizer), d_model=16, d_kv=8, d_ff=32, num_layers=2, num_heads=2,
                      dropout_rate=0.0, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = T5EncoderModel(config).eval()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return Path(folder)
