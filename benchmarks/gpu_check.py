"""The GPU check's own parts (`benchmarks/gpu_check.sh` runs them with bench_neural.py and bench_captions.py).

    python benchmarks/gpu_check.py train --device cuda [--seconds 30] [--json out.json]   # recipe=paper steps/s
    python benchmarks/gpu_check.py train --smoke --json out.json                          # tiny, on the CPU
    python benchmarks/gpu_check.py rows OUT_DIR                                           # rows for results/transforms.md

`train`: the training step of ``recipe=paper`` (configs/recipe/paper.yaml, model convnext_tiny: ConvNeXt-T from
scratch at 224, batch 128 per device, AdamW with its betas and weight decay, label smoothing, the precision it
names) on random images held on the device: forward, loss, backward, optimiser step. The data pipeline is not
part of it (bench_pipeline.py measures that). The first step is a warm-up, reported apart; steps/s and
images/s over the rest, peak memory (CUDA: `max_memory_allocated`; CPU: the process's peak RSS). `--smoke`:
ConvNeXt of one block per stage (widths 8, 8, 16, 16), batch 4 at 32 px, to check the script in seconds.

`rows`: reads ``neural.json`` (bench_neural.py --json), ``captions.json`` (bench_captions.py --out) and
``train.json`` from OUT_DIR and prints one Markdown table for benchmarks/results/transforms.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SMOKE_MODEL = {"depths": [1, 1, 1, 1], "dims": [8, 8, 16, 16]}


def paper_recipe() -> tuple[dict[str, Any], dict[str, Any]]:
    """(recipe, model) of ``recipe=paper``, read from the packaged configs (a script may; the library does not)."""
    from omegaconf import OmegaConf

    paper = OmegaConf.to_container(OmegaConf.load(ROOT / "configs" / "recipe" / "paper.yaml"))
    model_name = next(d["/model"] for d in paper["defaults"] if isinstance(d, dict) and "/model" in d)
    model = OmegaConf.to_container(OmegaConf.load(ROOT / "configs" / "model" / f"{model_name}.yaml"))
    return paper["recipe"], model


def peak_memory_mb(device: Any) -> float:
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def train(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from classifiers.models import create_classifier
    from classifiers.optim import build_optimizer

    recipe, model_cfg = paper_recipe()
    device = torch.device(args.device)
    size = 32 if args.smoke else int(recipe["image_size"])
    batch = 4 if args.smoke else int(recipe["batch_size"])
    kwargs = {**(model_cfg.get("kwargs") or {}), **(SMOKE_MODEL if args.smoke else {})}
    torch.manual_seed(0)
    model = create_classifier(model_cfg["name"], num_classes=args.classes, kwargs=kwargs).to(device).train()
    optimiser = build_optimizer(model, float(recipe["lr"]), float(recipe["weight_decay"]), recipe["betas"],
                                float(recipe["eps"]))
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=float(recipe["label_smoothing"]))
    x = torch.randn(batch, 3, size, size, device=device)
    y = torch.randint(0, args.classes, (batch,), device=device)
    precision = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(str(recipe["precision"]))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def step() -> None:
        with torch.autocast(device.type, dtype=precision, enabled=precision is not None):
            loss = loss_fn(model(x), y)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    start = time.perf_counter()
    step()
    sync()
    warmup = time.perf_counter() - start
    steps, start = 0, time.perf_counter()
    while steps < args.min_steps or time.perf_counter() - start < args.seconds:
        step()
        steps += 1
        if steps >= args.max_steps:
            break
    sync()
    seconds = time.perf_counter() - start
    params = sum(p.numel() for p in model.parameters())
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    return {"what": f"recipe=paper training step ({model_cfg['name']}{' SMOKE' if args.smoke else ''}, "
                    f"{params / 1e6:.2f}M params, batch {batch} at {size} px, precision {recipe['precision']})",
            "device": f"{device} ({gpu})", "warmup_s": round(warmup, 3), "steps": steps, "seconds": round(seconds, 3),
            "steps_per_s": round(steps / seconds, 3), "images_per_s": round(steps * batch / seconds, 1),
            "peak_mb": round(peak_memory_mb(device)),
            "peak_kind": "GPU allocated" if device.type == "cuda" else "process RSS"}


def _f(value: Any, fmt: str) -> str:
    return "-" if value is None else fmt.format(value)


def rows(out: Path) -> list[str]:
    """The Markdown rows of one GPU check, from the JSON files its steps wrote (a missing step: one row saying so)."""
    lines = ["| what | architecture | dtype | batch | rate | runner wait share | peak memory MiB |",
             "|---|---|---|---|---|---|---|"]
    neural = out / "neural.json"
    if neural.is_file():
        for r in json.loads(neural.read_text()):
            if r.get("skipped"):
                lines.append(f"| {r['transform']} | {r['arch']} | {r['dtype']} | {r['batch']} | skipped | - | - |")
                continue
            memory = r.get("gpu_peak_mb") if r.get("gpu_peak_mb") is not None else r.get("peak_rss_mb")
            rate = r.get("steady") or r.get("rate")
            lines.append(f"| {r['transform']} | {r['arch']} | {r['dtype']} | {r['batch']} | "
                         f"{_f(rate, '{:.2f}')} images/s | {_f(r.get('wait'), '{:.1%}')} | {_f(memory, '{:,.0f}')} |")
    else:
        lines.append("| model transforms | - | - | - | not measured (no neural.json) | - | - |")
    captions = out / "captions.json"
    if captions.is_file():
        c = json.loads(captions.read_text())
        for r in c["rows"]:
            lines.append(f"| captioning ({c['max_new_tokens']} new tokens) | {c['model']} | {c.get('dtype', 'auto')} | "
                         f"{r['batch_size']} | {r['tokens_per_s']:.1f} tokens/s ({r['images_per_s']:.2f} images/s) | - "
                         f"| {_f(c.get('peak_mb'), '{:,.0f}')} |")
    else:
        lines.append("| captioning | - | - | - | not measured (no captions.json) | - | - |")
    trained = out / "train.json"
    if trained.is_file():
        t = json.loads(trained.read_text())
        lines.append(f"| {t['what']} | - | - | - | {t['steps_per_s']:.2f} steps/s ({t['images_per_s']:.1f} images/s) "
                     f"| - | {t['peak_mb']:,} |")
    else:
        lines.append("| recipe=paper training step | - | - | - | not measured (no train.json) | - | - |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="the recipe=paper training step rate")
    t.add_argument("--device", default="cpu")
    t.add_argument("--smoke", action="store_true", help="a tiny ConvNeXt at 32 px: checks the script, measures nothing")
    t.add_argument("--seconds", type=float, default=20.0, help="time the steps for about this long")
    t.add_argument("--min-steps", type=int, default=3)
    t.add_argument("--max-steps", type=int, default=10_000)
    t.add_argument("--classes", type=int, default=6, help="datasets classified (the head's width)")
    t.add_argument("--json", type=Path)
    r = sub.add_parser("rows", help="Markdown rows for benchmarks/results/transforms.md from a GPU check's output folder")
    r.add_argument("out", type=Path)
    args = ap.parse_args()
    if args.command == "train":
        result = train(args)
        print(json.dumps(result))
        if args.json:
            args.json.write_text(json.dumps(result, indent=1))
    else:
        print("\n".join(rows(args.out)))


if __name__ == "__main__":
    main()
