"""Captioning throughput: generated tokens/s and images/s against batch size, through the caption transform.

    python benchmarks/bench_captions.py                      # tiny LLaVA (tests/helpers/tiny_models.py), CPU
    python benchmarks/bench_captions.py --size real --device cuda --batch-sizes 1 8 32 64
                                                             # the LLaVA-1.5-7B architecture, random bf16 weights

What is timed: the transform's `forward` (left padding of the batch, then greedy `generate` of
`--max-new-tokens`), after a warm-up batch, with the model loaded once; the processor's preprocessing
(resize, normalise, tokenise: CPU work that the runner's DataLoader workers do in parallel) is timed
apart, per image. Random weights rarely emit an end-of-sequence token, so every sequence runs to the
token limit: the numbers are per generated token, and a real model's captions that stop earlier cost
proportionally fewer steps per image. `--size real` checks the architecture's parameter count on the
meta device (LLaVA-1.5-7B: 7,063,427,072) before building it on the device.

The projection to 3M images on 8 GPUs is printed only from a CUDA measurement (images/s of the best
batch size x 8, one process per GPU, linear scaling assumed); on the CPU it says it is not measured.
Results go to stdout and, with --out, to a JSON file (benchmarks/RESULTS.md records them).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.helpers.tiny_models import llava_processor, save_tiny_llava  # noqa: E402
from transforms.neural.caption import stop_index  # noqa: E402
from transforms.registry import create_transform  # noqa: E402

#: llava-hf/llava-1.5-7b-hf: CLIP ViT-L/14 at 336 px, a 2-layer GELU projector, Llama-2-7B (vocab 32064)
REAL_VISION = {"model_type": "clip_vision_model", "hidden_size": 1024, "intermediate_size": 4096,
               "num_hidden_layers": 24, "num_attention_heads": 16, "image_size": 336, "patch_size": 14,
               "projection_dim": 768, "vocab_size": 32000}
REAL_TEXT = {"model_type": "llama", "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
             "num_attention_heads": 32, "num_key_value_heads": 32, "vocab_size": 32064, "max_position_embeddings": 4096,
             "rms_norm_eps": 1e-5, "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2}
REAL_PARAMETERS = 7_063_427_072


def real_arch(image_token: int) -> dict:
    """The LLaVA-1.5-7B config; the image token's id is the benchmark tokenizer's (an index: same compute)."""
    return {"model_type": "llava", "vision_config": REAL_VISION, "text_config": REAL_TEXT,
            "image_token_index": image_token, "image_seq_length": 576, "vision_feature_layer": -2,
            "vision_feature_select_strategy": "default", "projector_hidden_act": "gelu"}


def build(size: str, folder: Path, device: str, max_new_tokens: int):
    if size == "tiny":
        model = save_tiny_llava(folder / "model")
        return create_transform("caption_short", weights={"local": str(model)}, device=device,
                                max_new_tokens=max_new_tokens), "tiny LLaVA (CLIP 2x16, Llama 2x16, 28 px)"
    processor = llava_processor(336)
    processor.save_pretrained(folder / "processor")
    arch = real_arch(processor.tokenizer.convert_tokens_to_ids("<image>"))
    from transformers import AutoConfig, LlavaForConditionalGeneration

    config = AutoConfig.for_model(**arch)
    with torch.device("meta"):
        count = sum(p.numel() for p in LlavaForConditionalGeneration(config).parameters())
    if count != REAL_PARAMETERS:
        raise SystemExit(f"the real-size config has {count:,} parameters, not LLaVA-1.5-7B's {REAL_PARAMETERS:,}")
    return create_transform("caption_short", weights=None, arch=arch, processor={"local": str(folder / "processor")},
                            device=device, max_new_tokens=max_new_tokens), f"LLaVA-1.5-7B architecture ({count:,} params)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=["tiny", "real"], default="tiny")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--images", type=int, default=16, help="images per batch size (rounded up to whole batches)")
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        t, what = build(args.size, Path(tmp), args.device, args.max_new_tokens)
        t.check_ready(tmp)
        device = torch.device(args.device)
        start = time.perf_counter()
        t.load(device, t.runtime_dtype(device))
        load_s = time.perf_counter() - start
        rng = np.random.default_rng(0)
        images = [rng.integers(0, 256, (64, 48, 3), dtype=np.uint8) for _ in range(max(args.images, 8))]
        start = time.perf_counter()
        items = [t.preprocess(im) for im in images]
        preprocess_ms = 1000 * (time.perf_counter() - start) / len(images)
        rows = []
        for bs in args.batch_sizes:
            batches = [items[i:i + bs] for i in range(0, len(items), bs)]
            while len(batches) * bs < args.images:
                batches += batches
            batches = batches[: -(-args.images // bs)]
            with torch.inference_mode():
                t.forward(batches[0])  # warm-up
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                start = time.perf_counter()
                tokens = n = 0
                for batch in batches:
                    out = t.forward(batch)
                    for row in out.cpu().tolist():
                        end = stop_index(row, t._stop_ids)
                        tokens += len(row) if end is None else end + 1
                    n += len(batch)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                seconds = time.perf_counter() - start
            rows.append({"batch_size": bs, "images": n, "tokens": tokens, "seconds": round(seconds, 3),
                         "images_per_s": round(n / seconds, 2), "tokens_per_s": round(tokens / seconds, 1)})
            print(f"batch {bs:>3}: {rows[-1]['images_per_s']:8.2f} images/s  {rows[-1]['tokens_per_s']:9.1f} tokens/s "
                  f"({n} images, {tokens} tokens, {seconds:.2f} s)", flush=True)
    best = max(rows, key=lambda r: r["images_per_s"])
    if device.type == "cuda":
        hours = 3_000_000 / (8 * best["images_per_s"]) / 3600
        projection = (f"3M images on 8 GPUs: {hours:.1f} h at {best['images_per_s']} images/s per GPU "
                      f"(batch {best['batch_size']}, {args.max_new_tokens} new tokens each; linear scaling assumed)")
    else:
        projection = "3M images on 8 GPUs: not measured (this is a CPU run; the projection needs a CUDA measurement)"
    print(projection)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    result = {"model": what, "device": str(device), "threads": torch.get_num_threads(), "load_s": round(load_s, 2),
              "peak_mb": round(peak), "peak_kind": "GPU allocated" if device.type == "cuda" else "process RSS",
              "preprocess_ms_per_image": round(preprocess_ms, 2), "max_new_tokens": args.max_new_tokens,
              "rows": rows, "projection": projection}
    print(json.dumps({k: v for k, v in result.items() if k != "rows"}))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
