"""The neural transforms at full size with random weights, through the real transform code and the runner.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_neural.py [--transforms seg depth object_det sam vae]
        [--batches 1 2] [--images 4] [--device cpu|cuda] [--dtypes float32|bfloat16|float16 ...]
        [--size 500x375] [--workers N] [--threads N] [--max-seconds 120] [--tiny] [--json out.json]

Defaults: on the CPU batches 1 2, 4 images, fp32, a 120 s cap per measurement (full-size models take
25-600 s per image on 2 shared cores: the whole default run is most of an hour); with --device cuda
batches 1 8 32, 256 images, bf16 and fp16, a 60 s cap. Results: benchmarks/RESULTS.md.

No weights are downloaded: each transform builds its real model class (transformers, diffusers,
segment-anything) from `ARCHS`, the published hyper-parameters of its default checkpoint, with
seeded random weights (`weights: null`, `arch: {...}`). Random weights cost the same compute as
trained ones in the networks; what depends on the outputs does not (how many detections OWLv2 keeps
and draws, how many masks SAM's generator keeps and post-processes), so those parts are not
representative. `--tiny` swaps in small architectures, to check the script in seconds.

Each measurement (transform x dtype x batch size) runs in a fresh interpreter (so its peak memory is
its own) and calls `bias.inference.runner.run_batched` on `--images` synthetic 500x375 JPEGs
(`--size WxH`) into an empty cache folder, with DataLoader workers even for these few images
(`MIN_ITEMS_FOR_WORKERS` lowered to 0, as in a real run of millions), and a `RunTimings` that records
per batch how long the main loop waited for the DataLoader, ran the forward (synchronised on CUDA),
post-processed and handed outputs to the writer. Reported:

* images/s: images / wall time of the runner's main loop (load and final drain left out); with
  more than one batch also "steady", leaving out the first batch (warm-up, workers starting);
* forward images/s: images / time inside the forward alone;
* wait share: the share of the loop's wall time the forward waited for data (all batches; and
  leaving out the first, whose wait holds the workers' start-up);
* peak memory: CPU, the measuring process's peak RSS (VmHWM; workers, which hold no weights, are
  not counted) and its RSS before the model was built; CUDA, `torch.cuda.max_memory_allocated`;
* build: `model.load` with random weights (seconds; the model libraries are imported before;
  pretrained weights load differently; object_det's includes encoding the 1,203 LVIS queries);
* decode + preprocess ms/image: one source decoded and `preprocess`ed in the measuring process,
  before the model is built (the best of up to two, after a warm-up): what one DataLoader worker
  spends per image, so images/s x this / 1000 is how many workers a device needs to be fed;
* SAM: the image encoder's share of the forward (hooks on it), the rest being the mask generator;
  SAM and OWLv2: rows of their side tables per image (masks kept, detections kept).

A measurement stops after the batch that takes its loop past `--max-seconds` (the images measured
are reported); a child that runs past twice that plus 10 minutes is killed; on the CPU a batch size
is skipped when one batch would take longer than the cap (by the forward time per image at the
batch size before it; on a GPU a larger batch costs less per image). The projection for 3M images
takes the best images/s (steady where measured) over the batch sizes: on 8 GPUs only from a CUDA
measurement (one process per GPU, linear scaling assumed); on a CPU run it is the projection for
this machine, and says that the GPU number needs a GPU run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

# --- the default architectures at full size -----------------------------------------------------------
#
# Written from the published configurations of the default checkpoints (each model's config.json on
# the Hugging Face hub, or segment-anything's build_sam.py), as we know them; no file was downloaded
# to check them here. Keys that equal the library default are still written out, so the table can
# be read against the source. The parameter count each builds is printed beside its numbers.

#: facebook/mask2former-swin-large-ade-semantic (the `seg` default): Mask2Former (Cheng et al. 2022,
#: ADE20K semantic, 160k iterations at 640) with a Swin-L backbone (ImageNet-22k, 384 px, window 12);
#: 100 queries, 6 pixel-decoder (deformable) layers, 10 transformer-decoder layers, width 256.
MASK2FORMER_SWIN_L_ADE = {
    "model_type": "mask2former", "num_labels": 150, "num_queries": 100, "hidden_dim": 256, "feature_size": 256,
    "mask_feature_size": 256, "encoder_layers": 6, "encoder_feedforward_dim": 1024, "decoder_layers": 10,
    "dim_feedforward": 2048, "num_attention_heads": 8, "common_stride": 4, "feature_strides": [4, 8, 16, 32],
    "backbone_config": {"model_type": "swin", "image_size": 384, "patch_size": 4, "embed_dim": 192,
                        "depths": [2, 2, 18, 2], "num_heads": [6, 12, 24, 48], "window_size": 12, "mlp_ratio": 4.0,
                        "drop_path_rate": 0.3, "out_features": ["stage1", "stage2", "stage3", "stage4"]},
}
#: depth-anything/Depth-Anything-V2-Large-hf (the `depth` default): a DINOv2 ViT-L/14 encoder (1024
#: wide, 24 layers, 16 heads) read at layers 5, 12, 18, 24, and the DPT head of the Large model
#: (features 256, reassembled to 256/512/1024/1024 channels).
DEPTH_ANYTHING_V2_LARGE = {
    "model_type": "depth_anything", "patch_size": 14, "reassemble_hidden_size": 1024,
    "reassemble_factors": [4, 2, 1, 0.5], "neck_hidden_sizes": [256, 512, 1024, 1024], "fusion_hidden_size": 256,
    "head_hidden_size": 32, "head_in_index": -1, "depth_estimation_type": "relative",
    "backbone_config": {"model_type": "dinov2", "image_size": 518, "patch_size": 14, "hidden_size": 1024,
                        "num_hidden_layers": 24, "num_attention_heads": 16, "mlp_ratio": 4, "layerscale_value": 1.0,
                        "out_indices": [5, 12, 18, 24], "apply_layernorm": True, "reshape_hidden_states": False},
}
#: google/owlv2-base-patch16-ensemble (the `object_det` / `object_crops` / `object_context` default):
#: CLIP B/16 towers, the image tower at 960 px (60 x 60 patches), 16-token text queries, 512-d projection.
OWLV2_B16 = {
    "projection_dim": 512,
    "text_config": {"vocab_size": 49408, "hidden_size": 512, "intermediate_size": 2048, "num_hidden_layers": 12,
                    "num_attention_heads": 8, "max_position_embeddings": 16, "bos_token_id": 49406,
                    "eos_token_id": 49407},
    "vision_config": {"image_size": 960, "patch_size": 16, "hidden_size": 768, "intermediate_size": 3072,
                      "num_hidden_layers": 12, "num_attention_heads": 12},
}
#: SAM ViT-L (sam_vit_l_0b3195.pth, the `sam` default): segment-anything's build_sam_vit_l, 1024 px,
#: 24 blocks of width 1024, 16 heads, global attention in blocks 5, 11, 17, 23, window 14 elsewhere.
SAM_VIT_L = {
    "image_size": 1024, "patch_size": 16, "encoder_embed_dim": 1024, "encoder_depth": 24, "encoder_num_heads": 16,
    "encoder_global_attn_indexes": [5, 11, 17, 23], "window_size": 14, "mlp_ratio": 4.0, "prompt_embed_dim": 256,
    "mask_in_chans": 16, "decoder_depth": 2, "decoder_mlp_dim": 2048, "decoder_num_heads": 8, "iou_head_depth": 3,
    "iou_head_hidden_dim": 256,
}
#: stabilityai/sd-vae-ft-ema (the `vae` default): the Stable Diffusion KL-f8 AutoencoderKL (4 latent channels).
SD_VAE_FT_EMA = {
    "in_channels": 3, "out_channels": 3, "latent_channels": 4, "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4,
    "layers_per_block": 2, "act_fn": "silu", "norm_num_groups": 32, "sample_size": 256, "scaling_factor": 0.18215,
}
ARCHS: dict[str, tuple[str, dict[str, Any]]] = {
    "seg": ("Mask2Former Swin-L ADE20K", MASK2FORMER_SWIN_L_ADE),
    "depth": ("Depth Anything V2 Large", DEPTH_ANYTHING_V2_LARGE),
    "object_det": ("OWLv2 B/16", OWLV2_B16),
    "object_crops": ("OWLv2 B/16", OWLV2_B16),
    "object_context": ("OWLv2 B/16", OWLV2_B16),
    "sam": ("SAM ViT-L", SAM_VIT_L),
    "vae": ("AutoencoderKL sd-vae-ft-ema", SD_VAE_FT_EMA),
    # timm's own architecture of the packaged EfficientNet-Lite0 (catalogue entry efficientnet_lite0)
    "imagenet_cls": ("EfficientNet-Lite0 (timm tf_efficientnet_lite0)", {}),
}
DEFAULT_TRANSFORMS = ["seg", "depth", "object_det", "sam", "vae"]

#: `--tiny`: the same classes at a few thousand parameters (to check the script, not to measure)
_TINY_SWIN = {"model_type": "swin", "embed_dim": 8, "depths": [1, 1, 1, 1], "num_heads": [1, 1, 1, 1],
              "window_size": 4, "image_size": 64, "out_features": ["stage1", "stage2", "stage3", "stage4"]}
_TINY_OWL = {"text_config": {"vocab_size": 64, "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                             "num_attention_heads": 2, "bos_token_id": 62, "eos_token_id": 63},
             "vision_config": {"image_size": 32, "patch_size": 8, "hidden_size": 16, "intermediate_size": 32,
                               "num_hidden_layers": 1, "num_attention_heads": 2}, "projection_dim": 16}
TINY: dict[str, dict[str, Any]] = {
    "seg": {"size": 64, "arch": {"model_type": "mask2former", "num_labels": 150, "hidden_dim": 32, "feature_size": 32,
                                 "mask_feature_size": 32, "encoder_feedforward_dim": 32, "dim_feedforward": 32,
                                 "encoder_layers": 1, "decoder_layers": 2, "num_attention_heads": 2, "num_queries": 8,
                                 "backbone_config": _TINY_SWIN}},
    "depth": {"size": 56, "arch": {
        "model_type": "depth_anything", "patch_size": 14, "reassemble_hidden_size": 16, "fusion_hidden_size": 16,
        "neck_hidden_sizes": [8, 8, 16, 16], "head_hidden_size": 8,
        "backbone_config": {"model_type": "dinov2", "image_size": 28, "patch_size": 14, "hidden_size": 16,
                            "num_hidden_layers": 4, "num_attention_heads": 2, "intermediate_size": 32,
                            "out_indices": [1, 2, 3, 4], "apply_layernorm": True, "reshape_hidden_states": False}}},
    "object_det": {"arch": _TINY_OWL},
    "object_crops": {"arch": _TINY_OWL},
    "object_context": {"arch": _TINY_OWL},
    "sam": {"points_per_side": 4, "arch": {
        "image_size": 64, "patch_size": 8, "encoder_embed_dim": 32, "encoder_depth": 2, "encoder_num_heads": 2,
        "encoder_global_attn_indexes": [1], "window_size": 4, "prompt_embed_dim": 32, "mask_in_chans": 4,
        "decoder_depth": 1, "decoder_mlp_dim": 64, "decoder_num_heads": 2, "iou_head_depth": 2,
        "iou_head_hidden_dim": 32}},
    "imagenet_cls": {"model_name": "test_efficientnet", "size": 32, "arch": {}},
    "vae": {"size": 32, "arch": {"block_out_channels": [8, 16], "down_block_types": ["DownEncoderBlock2D"] * 2,
                                 "up_block_types": ["UpDecoderBlock2D"] * 2, "layers_per_block": 1,
                                 "latent_channels": 4, "norm_num_groups": 4, "sample_size": 32}},
}

IMAGES_3M, GPUS = 3_000_000, 8
#: a part of the forward timed apart (forward hooks on this submodule): SAM's image encoder, the rest of
#: its forward being the automatic mask generator (prompt encoder + mask decoder over the point grid, per image)
TIMED_PART = {"sam": "image_encoder"}


class _Stop(Exception):
    """Raised from the timing callback to end a measurement at its time cap."""


# --- one measurement, in a fresh interpreter ------------------------------------------------------------

def child(spec: dict[str, Any]) -> None:
    """Run one (transform, dtype, batch) measurement; one JSON line per batch, then a final one."""
    import torch

    if spec["threads"]:
        torch.set_num_threads(int(spec["threads"]))
    from measure import peak_mb, rss_mb

    import bias.inference.runner as runner
    from bias.inference.runner import RunTimings, run_batched
    from transforms.base import output_store
    from transforms.registry import create_transform

    runner.MIN_ITEMS_FOR_WORKERS = 0  # DataLoader workers for these few images too, as in a real run
    device = torch.device(spec["device"])
    name, batch = spec["transform"], int(spec["batch"])
    params = dict(TINY[name]) if spec["tiny"] else {"arch": ARCHS[name][1]}
    t = create_transform(name, weights=None, batch_size=batch, device=spec["device"], dtype=spec["dtype"], **params)
    paths = json.loads(Path(spec["paths"]).read_text())
    import diffusers  # noqa: F401  (the model libraries, imported before anything is timed)
    import segment_anything  # noqa: F401
    import transformers  # noqa: F401

    from bias.data.sources import load_image

    for i, path in enumerate(paths["paths"][:3]):  # decode + preprocess alone, in this process: the first is a warm-up
        start = time.perf_counter()
        t.preprocess(load_image(path))
        prep = time.perf_counter() - start
        print(json.dumps({"preprocess": prep, "warmup": i == 0}), flush=True)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    base_rss = rss_mb()
    state: dict[str, Any] = {"params": None, "started": time.perf_counter()}

    def gpu_peak() -> float | None:
        return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None

    part = {"seconds": 0.0, "reported": 0.0, "start": 0.0}
    if name in TIMED_PART:  # bench-only: hooks on the built model's submodule, the transform's code unchanged
        build = t.load_model

        def load_model(device_, dtype_):
            model = build(device_, dtype_)
            module = getattr(model, TIMED_PART[name])

            def before(*_):
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                part["start"] = time.perf_counter()

            def after(*_):
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                part["seconds"] += time.perf_counter() - part["start"]

            module.register_forward_pre_hook(before)
            module.register_forward_hook(after)
            return model

        t.load_model = load_model
    timings = RunTimings()

    def on_batch(b) -> None:
        if state["params"] is None and t._model is not None:
            state["params"] = sum(p.numel() for p in t._model.parameters())
        print(json.dumps({"batch": len(timings.batches), "items": b.items, "wait": b.wait, "forward": b.forward,
                          "postprocess": b.postprocess, "submit": b.submit, "load": timings.load,
                          "params": state["params"], "peak_rss_mb": peak_mb(), "gpu_peak_mb": gpu_peak(),
                          "part": part["seconds"] - part["reported"] if name in TIMED_PART else None}), flush=True)
        part["reported"] = part["seconds"]
        if timings.loop() > spec["max_seconds"] and timings.items() < len(paths["paths"]):
            raise _Stop

    timings.on_batch = on_batch
    cache = Path(spec["cache"])
    stopped, failed, computed, side = False, None, None, None
    try:
        report = run_batched(t, paths["paths"], paths["sha1s"], output_store(t, cache, None),
                             num_workers=spec["workers"], show_progress=False, timings=timings)
        failed, computed = len(report.failed), report.computed
        for table in ("masks", "boxes"):  # what the random weights kept: SAM's masks, OWLv2's detections
            if table in t.outputs and computed:
                side = {"table": table, "per_image": report.store.read_table(table).num_rows / computed}
        if report.failed:
            print(f"{name}: {len(report.failed)} failed, first: {report.failed[0]}", file=sys.stderr)
    except _Stop:
        stopped = True
    print(json.dumps({"done": True, "stopped": stopped, "computed": computed, "failed": failed, "side": side,
                      "load": timings.load,
                      "finish": timings.finish, "params": state["params"], "base_rss_mb": base_rss,
                      "peak_rss_mb": peak_mb(), "gpu_peak_mb": gpu_peak(),
                      "threads": torch.get_num_threads(), "wall": time.perf_counter() - state["started"]}), flush=True)


def measure(spec: dict[str, Any], hard_timeout: float) -> dict[str, Any]:
    """Run `child(spec)` in a fresh interpreter and sum its batches (partial if it ran out of time)."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'benchmarks'}", "TQDM_DISABLE": "1",
           "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, __file__, "--child", json.dumps(spec)]
    killed = False
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=hard_timeout)
        out, err, rc = proc.stdout, proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        err = exc.stderr.decode() if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        rc, killed = -9, True
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    batches = [x for x in lines if "batch" in x]
    prep = [x["preprocess"] for x in lines if "preprocess" in x and not x["warmup"]]
    final = next((x for x in lines if x.get("done")), None)
    if rc and not killed:
        raise RuntimeError(f"{spec['transform']} batch {spec['batch']} failed ({rc}):\n{err[-3000:]}")
    last = final or (batches[-1] if batches else {})
    return {"batches": batches, "final": final, "killed": killed, "load": last.get("load"),
            "params": last.get("params"), "peak_rss_mb": last.get("peak_rss_mb"),
            "gpu_peak_mb": last.get("gpu_peak_mb"), "base_rss_mb": (final or {}).get("base_rss_mb"),
            "failed": (final or {}).get("failed"), "side": (final or {}).get("side"), "stopped": bool((final or {}).get("stopped")) or killed,
            "threads": (final or {}).get("threads"), "preprocess_ms": 1000 * min(prep) if prep else None}


def summarise(m: dict[str, Any]) -> dict[str, Any]:
    """images/s (all batches, and steady: after the first), forward images/s, wait shares."""
    b = m["batches"]

    def rate(bs: list[dict]) -> float | None:
        loop = sum(x["wait"] + x["forward"] + x["postprocess"] + x["submit"] for x in bs)
        return sum(x["items"] for x in bs) / loop if bs and loop > 0 else None

    def wait(bs: list[dict]) -> float | None:
        loop = sum(x["wait"] + x["forward"] + x["postprocess"] + x["submit"] for x in bs)
        return sum(x["wait"] for x in bs) / loop if bs and loop > 0 else None

    fwd = sum(x["forward"] for x in b)
    parts = [x["part"] for x in b if x.get("part") is not None]
    return {"part_s_per_batch": sum(parts) / len(parts) if parts else None, "images": sum(x["items"] for x in b), "n_batches": len(b), "rate": rate(b),
            "steady": rate(b[1:]) if len(b) > 1 else None, "forward_rate": sum(x["items"] for x in b) / fwd if fwd else None,
            "s_per_batch": fwd / len(b) if b else None, "wait": wait(b), "wait_steady": wait(b[1:]) if len(b) > 1 else None}


# --- the table -------------------------------------------------------------------------------------------

def _f(x: float | None, fmt: str = "{:.2f}") -> str:
    return "-" if x is None else fmt.format(x)


def _duration(seconds: float) -> str:
    if seconds < 2 * 3600:
        return f"{seconds / 60:,.0f} min"
    if seconds < 3 * 86400:
        return f"{seconds / 3600:,.1f} h"
    days = seconds / 86400
    return f"{days:,.0f} days" if days < 365 else f"{days:,.0f} days ({days / 365.25:,.0f} years)"


def make_images(folder: Path, n: int, width: int, height: int) -> dict[str, list[str]]:
    from bench_hog_sift import natural_image
    from PIL import Image

    from bias.data.images import file_sha1

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        p = folder / f"{i:05d}.jpg"
        Image.fromarray(natural_image(height, width, i)).save(p, quality=90)
        paths.append(str(p))
    return {"paths": paths, "sha1s": [file_sha1(p) for p in paths]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--transforms", nargs="+", default=DEFAULT_TRANSFORMS, choices=sorted(ARCHS))
    ap.add_argument("--batches", type=int, nargs="+", help="batch sizes (default: 1 2 on CPU, 1 8 32 on CUDA)")
    ap.add_argument("--images", type=int, help="images per measurement (default: 4 on CPU, 256 on CUDA)")
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    ap.add_argument("--dtypes", nargs="+", choices=["float32", "float16", "bfloat16"],
                    help="default: float32 on CPU; bfloat16 and float16 (autocast) on CUDA")
    ap.add_argument("--size", default="500x375", help="source JPEGs, WIDTHxHEIGHT (default 500x375)")
    ap.add_argument("--workers", type=int, default=None, help="DataLoader workers (default: the runner's)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's, i.e. OMP_NUM_THREADS)")
    ap.add_argument("--max-seconds", type=float, default=None,
                    help="stop a measurement after the batch that takes its loop past this (default 120 CPU, 60 CUDA)")
    ap.add_argument("--tiny", action="store_true", help="small architectures: checks the script, measures nothing")
    ap.add_argument("--json", type=Path, help="also write every measurement here")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(json.loads(args.child))
        return
    cuda = args.device.startswith("cuda")
    if cuda:
        import torch

        if not torch.cuda.is_available():
            sys.exit("--device cuda: no CUDA device here")
        gpu = torch.cuda.get_device_name(torch.device(args.device))
    batches = args.batches or ([1, 8, 32] if cuda else [1, 2])
    n_images = args.images or (256 if cuda else 4)
    dtypes = args.dtypes or (["bfloat16", "float16"] if cuda else ["float32"])
    cap = args.max_seconds or (60.0 if cuda else 120.0)
    width, height = (int(v) for v in args.size.lower().split("x"))
    tmp = Path(tempfile.mkdtemp(prefix="bench_neural_"))
    where = f"CUDA ({gpu})" if cuda else f"CPU ({os.cpu_count()} cores)"
    print(f"{n_images} JPEGs {width}x{height}; {where}; torch threads {args.threads or os.environ.get('OMP_NUM_THREADS', 'default')}; "
          f"workers {args.workers if args.workers is not None else 'runner default'}; batches {batches}; dtypes {dtypes}; "
          f"cap {cap:.0f} s per measurement{'; TINY architectures (nothing measured)' if args.tiny else ''}", flush=True)
    results = []
    try:
        (tmp / "paths.json").write_text(json.dumps(make_images(tmp / "images", n_images, width, height)))
        for name in args.transforms:
            for dtype in dtypes:
                per_image = None  # forward seconds per image, from the last measurement of this transform and dtype
                for b in batches:
                    arch = f"tiny {name}" if args.tiny else ARCHS[name][0]
                    if not cuda and per_image is not None and per_image * b > cap:  # one batch alone passes the cap
                        print(f"  {name} {dtype} batch {b}: skipped, one batch would take ~{per_image * b:.0f} s "
                              f"(over the {cap:.0f} s cap)", flush=True)
                        results.append({"transform": name, "arch": arch, "dtype": dtype, "batch": b,
                                        "skipped": per_image * b})
                        continue
                    spec = {"transform": name, "batch": b, "device": args.device, "dtype": dtype, "tiny": args.tiny,
                            "workers": args.workers, "threads": args.threads, "max_seconds": cap,
                            "paths": str(tmp / "paths.json"), "cache": str(tmp / f"cache-{name}-{dtype}-{b}")}
                    start = time.perf_counter()
                    m = measure(spec, hard_timeout=2 * cap + 600)
                    shutil.rmtree(spec["cache"], ignore_errors=True)
                    s = summarise(m)
                    if s["s_per_batch"] is not None:
                        per_image = s["s_per_batch"] / b
                    row = {"transform": name, "arch": arch, "dtype": dtype, "batch": b, **s,
                           **{k: m[k] for k in ("load", "params", "peak_rss_mb", "base_rss_mb", "gpu_peak_mb",
                                                "failed", "side", "stopped", "killed", "threads",
                                                "preprocess_ms")},
                           "wall": time.perf_counter() - start}
                    results.append(row)
                    print(f"  {name} {dtype} batch {b}: {s['images']} images, {_f(s['rate'], '{:.3f}')} img/s, "
                          f"wait {_f(s['wait'], '{:.1%}')}, peak RSS {_f(m['peak_rss_mb'], '{:,.0f}')} MiB, "
                          f"{row['wall']:.0f} s in all{' (stopped at the cap)' if row['stopped'] else ''}", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    print_table(results, cuda, where)


def print_table(results: list[dict[str, Any]], cuda: bool, where: str) -> None:
    mem = "peak GPU MiB (allocated)" if cuda else "peak RSS MiB (before build)"
    print(f"\n| transform | architecture (params) | dtype | batch | images | build s | forward s/batch | images/s "
          f"| steady images/s | forward images/s | wait share | wait share after 1st batch | decode + preprocess ms/image | {mem} | measure s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        if r.get("skipped"):
            print(f"| {r['transform']} | {r['arch']} | {r['dtype']} | {r['batch']} | skipped: one batch ~{r['skipped']:.0f} s, "
                  "over the cap |" + " - |" * 10)
            continue
        params = (f"{r['params'] / 1e6:.1f}M" if r["params"] >= 1e5 else f"{r['params']:,}") if r["params"] else "?"
        memory = (_f(r["gpu_peak_mb"], "{:,.0f}") if cuda else
                  f"{_f(r['peak_rss_mb'], '{:,.0f}')} ({_f(r['base_rss_mb'], '{:,.0f}')})")
        note = " (stopped at the cap)" if r["stopped"] else ""
        note += f" ({r['failed']} failed)" if r["failed"] else ""
        print(f"| {r['transform']} | {r['arch']} ({params}) | {r['dtype']} | {r['batch']} | {r['images']}{note} "
              f"| {_f(r['load'], '{:.1f}')} | {_f(r['s_per_batch'], '{:.2f}')} | {_f(r['rate'], '{:.3f}')} "
              f"| {_f(r['steady'], '{:.3f}')} | {_f(r['forward_rate'], '{:.3f}')} | {_f(r['wait'], '{:.2%}')} "
              f"| {_f(r['wait_steady'], '{:.2%}')} | {_f(r['preprocess_ms'], '{:.0f}')} | {memory} | {r['wall']:.0f} |")
    print()
    for r in results:
        if r.get("part_s_per_batch") is not None:
            print(f"{r['transform']} {r['dtype']} batch {r['batch']}: {TIMED_PART[r['transform']]} "
                  f"{r['part_s_per_batch']:.2f} s of the forward's {r['s_per_batch']:.2f} s per batch; the rest is the "
                  "automatic mask generator")
        if r.get("side"):
            print(f"{r['transform']} {r['dtype']} batch {r['batch']}: {r['side']['per_image']:.1f} rows of "
                  f"`{r['side']['table']}` per image (random weights)")
    print(f"\nProjection for {IMAGES_3M:,} distinct images (best images/s over batch sizes, steady where measured):\n")
    one = "3M images on one GPU" if cuda else "3M images on this machine"
    print(f"| transform | dtype | best images/s (batch) | {one} | 3M images on {GPUS} GPUs |")
    print("|---|---|---|---|---|")
    total, counted = 0.0, set()
    for name, dtype in dict.fromkeys((r["transform"], r["dtype"]) for r in results):
        rows = [r for r in results if (r["transform"], r["dtype"]) == (name, dtype) and not r.get("skipped")
                and (r["steady"] or r["rate"])]
        if not rows:
            print(f"| {name} | {dtype} | - | - | - |")
            continue
        best = max(rows, key=lambda r: r["steady"] or r["rate"])
        rate = best["steady"] or best["rate"]
        seconds = IMAGES_3M / rate
        if name not in counted:  # the first dtype of each transform goes into the total
            counted.add(name)
            total += seconds
        gpus = _duration(seconds / GPUS) if cuda else "needs a GPU run (`--device cuda`)"
        print(f"| {name} | {dtype} | {rate:.3f} ({best['batch']}) | {_duration(seconds)} | {gpus} |")
    if cuda:
        print(f"\nAll transforms above (first dtype each), one after another: {_duration(total)} on one GPU, "
              f"{_duration(total / GPUS)} on {GPUS} (one process per GPU, linear scaling assumed).")
    else:
        print(f"\nAll transforms above, one after another on this machine: {_duration(total)}. The {GPUS}-GPU "
              "projection needs a measured GPU number: run with --device cuda on a GPU machine.")
    print(f"Measured on {where}.")


if __name__ == "__main__":
    main()
