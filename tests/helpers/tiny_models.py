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


# --- the default hub models, laid out as a Hugging Face cache (the rehearsal of the real loading path) ----------

#: The preprocessing each default hub checkpoint publishes in its ``preprocessor_config.json``, written here from
#: the checkpoints' documented settings (the source of each is named); the tiny models below save them so that
#: the transforms read them as they would read the downloaded file.
PUBLISHED_PROCESSORS: dict[str, dict[str, Any]] = {
    # facebook/mask2former-swin-large-ade-semantic: Mask2Former's ADE20K semantic test setting (detectron2 config
    # maskformer2 ade20k: INPUT.MIN_SIZE_TEST 640, MAX_SIZE_TEST 2560, SIZE_DIVISIBILITY 32, ImageNet statistics
    # on the 0-255 scale), as the transformers port's processor file carries it
    "facebook/mask2former-swin-large-ade-semantic": {
        "class": "Mask2FormerImageProcessor", "size": {"shortest_edge": 640, "longest_edge": 2560},
        "size_divisor": 32, "image_mean": [123.675, 116.28, 103.53], "image_std": [58.395, 57.12, 57.375],
        "do_rescale": False, "resample": 2, "ignore_index": 255, "do_reduce_labels": True, "num_labels": 150},
    # depth-anything/Depth-Anything-V2-Large-hf preprocessor_config.json (DPTImageProcessor): keep the aspect ratio,
    # each side at least 518 and a multiple of 14, bicubic, ImageNet mean/std, no padding
    "depth-anything/Depth-Anything-V2-Large-hf": {
        "class": "DPTImageProcessor", "size": {"height": 518, "width": 518}, "keep_aspect_ratio": True,
        "ensure_multiple_of": 14, "resample": 3, "do_pad": False, "image_mean": [0.485, 0.456, 0.406],
        "image_std": [0.229, 0.224, 0.225]},
    # google/owlv2-base-patch16-ensemble preprocessor_config.json (Owlv2ImageProcessor): pad to a square, 960 x 960,
    # bilinear, the CLIP statistics
    "google/owlv2-base-patch16-ensemble": {
        "class": "Owlv2ImageProcessor", "size": {"height": 960, "width": 960}, "resample": 2,
        "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711]},
    # llava-hf/llava-1.5-7b-hf preprocessor_config.json (CLIPImageProcessor of the CLIP ViT-L/14-336 tower):
    # shorter side 336, centre crop 336, bicubic, the CLIP statistics
    "llava-hf/llava-1.5-7b-hf": {
        "class": "CLIPImageProcessor", "size": {"shortest_edge": 336}, "crop_size": {"height": 336, "width": 336},
        "do_center_crop": True, "resample": 3, "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_std": [0.26862954, 0.26130258, 0.27577711]},
}
#: stabilityai/sd-vae-ft-ema config.json: the latent scaling factor of the Stable Diffusion v1 autoencoder
SD_VAE_SCALING_FACTOR = 0.18215


def hub_snapshot(hub: Path, repo_id: str, commit: str, branch: str = "main") -> Path:
    """The snapshot folder of `repo_id` at `commit` in a Hugging Face cache `hub` (``$HF_HOME/hub``), with
    ``refs/<branch>`` pointing at it: ``models--org--name/snapshots/<commit>/``, as ``hf download`` leaves it."""
    repo = Path(hub) / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / branch).write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    return snapshot


def published_processor(repo_id: str, **changes: Any) -> Any:
    """The image processor `repo_id` publishes (`PUBLISHED_PROCESSORS`), with `changes`."""
    import transformers

    settings = {**PUBLISHED_PROCESSORS[repo_id], **changes}
    return getattr(transformers, settings.pop("class"))(**settings)


def ade20k_labels() -> dict[int, str]:
    """ADE20K's 150 class names by id (transforms/neural/data/ade20k.json, the checkpoint's id2label)."""
    from transforms.neural.seg import ade20k

    return dict(enumerate(ade20k()[0]))


def save_tiny_mask2former_ade(folder: Path, seed: int = 0, **processor: Any) -> Path:
    """A random tiny Mask2Former (Swin backbone) with the ADE20K label map and the published processor."""
    from transformers import Mask2FormerConfig, Mask2FormerForUniversalSegmentation

    labels = ade20k_labels()
    swin = {"model_type": "swin", "embed_dim": 8, "depths": [1, 1, 1, 1], "num_heads": [1, 1, 1, 1],
            "window_size": 4, "image_size": 64, "out_features": ["stage1", "stage2", "stage3", "stage4"]}
    config = Mask2FormerConfig(backbone_config=swin, hidden_dim=32, feature_size=32, mask_feature_size=32,
                               encoder_feedforward_dim=32, dim_feedforward=32, encoder_layers=1, decoder_layers=2,
                               num_attention_heads=2, num_queries=8, id2label=labels,
                               label2id={v: k for k, v in labels.items()})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        Mask2FormerForUniversalSegmentation(config).eval().save_pretrained(folder)
    published_processor("facebook/mask2former-swin-large-ade-semantic", **processor).save_pretrained(folder)
    return Path(folder)


def save_tiny_depth_anything(folder: Path, seed: int = 0, **processor: Any) -> Path:
    """A random tiny Depth Anything (DINOv2 backbone, patch 14) with the published processor (or `processor`
    changes: another size, resize rule or statistics)."""
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation

    config = DepthAnythingConfig(
        patch_size=14, reassemble_hidden_size=16, fusion_hidden_size=16, neck_hidden_sizes=[8, 8, 16, 16],
        head_hidden_size=8, depth_estimation_type="relative",
        backbone_config={"model_type": "dinov2", "image_size": 518, "patch_size": 14, "hidden_size": 16,
                         "num_hidden_layers": 4, "num_attention_heads": 2, "intermediate_size": 32,
                         "out_indices": [1, 2, 3, 4], "apply_layernorm": True, "reshape_hidden_states": False})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        DepthAnythingForDepthEstimation(config).eval().save_pretrained(folder)
    published_processor("depth-anything/Depth-Anything-V2-Large-hf", **processor).save_pretrained(folder)
    return Path(folder)


def save_tiny_sd_vae(folder: Path, seed: int = 0) -> Path:
    """A random tiny AutoencoderKL with sd-vae-ft-ema's scaling factor and sample size."""
    from diffusers import AutoencoderKL

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vae = AutoencoderKL(block_out_channels=[8, 16], down_block_types=["DownEncoderBlock2D"] * 2,
                            up_block_types=["UpDecoderBlock2D"] * 2, latent_channels=4, norm_num_groups=4,
                            layers_per_block=1, sample_size=256, scaling_factor=SD_VAE_SCALING_FACTOR)
    vae.save_pretrained(folder)
    return Path(folder)
