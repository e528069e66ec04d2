"""The describe demo, cold: `python scripts/describe_data.py` (plus any overrides) in a fresh temporary folder.

    python benchmarks/bench_describe.py                       # the demo command (docs/describe.md), cold cache
    python benchmarks/bench_describe.py images_per_dataset=100 --out describe_bench.json

What is timed: the whole command in a subprocess (interpreter start and imports included, install excluded), with
a fresh ``cache_dir``, ``out`` and ``runs_root`` in a temporary folder, so the planted data is rendered, the
ground-truth captions written, the packaged models loaded and every model call made (nothing is reused). Printed:
the wall time, the run's own per-stage wall times (``stage_times.json``), the token ledgers of the LLM stages
(themes, differences) and the projected cost of the same procedure over 10,000 captions per dataset with a 7B LLM
on one GPU.

The projection is arithmetic on measured token counts and an ASSUMED throughput, not a measurement:
* tokens per caption: the themes stage's slots procedure asks one title per one-caption chunk (stage
  ``themes.title``), so its measured prompt and completion tokens per chunk scale with the captions read; the
  group titles and sentences (a few per dataset) and the LLM proposer (one prompt per dataset) are fixed costs,
  added as measured.
* throughput: ``--prefill-tps`` and ``--decode-tps`` (prompt tokens/s and generated tokens/s of a 7B model in
  16-bit on one data-centre GPU, batched serving). Their defaults (5,000 and 1,000 tokens/s) are round figures
  chosen as an assumption for the order of magnitude; they were not measured here and no source is claimed: pass
  your own measured numbers. Short prompts like these batch well, so the real figure can be several times higher.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
LLM_STAGES = ("themes", "differences")
TITLE_STAGE = "themes.title"
#: the projection's dataset size
PROJECTED_CAPTIONS = 10_000


def run_cold(overrides: list[str], folder: Path) -> dict[str, Any]:
    """The demo command with a fresh cache and output under `folder`; its wall time and what it wrote."""
    out = folder / "out"
    cmd = [sys.executable, str(ROOT / "scripts" / "describe_data.py"), f"cache_dir={folder / 'cache'}", f"out={out}",
           f"runs_root={folder / 'runs'}", *overrides]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    env.pop("BIAS_CACHE_DIR", None)
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=folder, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-8000:])
        raise SystemExit(f"describe failed (exit {proc.returncode}): {' '.join(cmd)}")
    times = json.loads((out / "stage_times.json").read_text())
    ledgers = {}
    for stage in LLM_STAGES:
        path = out / f"{stage}.json"
        if path.exists():
            ledger = json.loads(path.read_text()).get("ledger")
            if ledger:
                ledgers[stage] = ledger
    inputs = json.loads((out / "inputs.json").read_text())
    themes = json.loads((out / "themes.json").read_text()) if (out / "themes.json").exists() else {}
    diff = json.loads((out / "differences.json").read_text()) if (out / "differences.json").exists() else {}
    status = json.loads((out / "stages.json").read_text())
    return {"command": cmd, "wall_s": round(wall, 1), "stage_times": times, "ledgers": ledgers,
            "images": inputs["n_images"], "datasets": inputs["datasets"],
            "status": {name: s["status"] for name, s in status.items()},
            "themes_per_dataset": themes.get("per_dataset", {}),
            "themes": {d: [t["title"] for t in ts] for d, ts in (themes.get("themes") or {}).items()},
            "themes_failed_steps": len(themes.get("failed") or []),
            "significant": {d: [h["text"] for h in diff.get("hypotheses", []) if h["dataset"] == d and h["significant"]]
                            for d in inputs["datasets"]},
            "last_line": proc.stdout.strip().splitlines()[-1:]}


def projection(result: dict[str, Any], prefill_tps: float, decode_tps: float,
               captions: int = PROJECTED_CAPTIONS) -> dict[str, Any]:
    """Tokens and GPU time for `captions` captions per dataset, from the measured ledgers (module docstring)."""
    themes = result["ledgers"].get("themes", {})
    title = (themes.get("stages") or {}).get(TITLE_STAGE)
    chunks = sum(int(d.get("chunks", 0)) for d in result["themes_per_dataset"].values())
    if not title or not chunks:
        return {"status": "not computed: the run has no themes.title calls to scale"}
    per_caption = {"prompt": title["prompt_tokens"] / chunks, "completion": title["completion_tokens"] / chunks}
    fixed = {"prompt": 0, "completion": 0}
    for stage, ledger in result["ledgers"].items():
        for name, row in (ledger.get("stages") or {}).items():
            if stage == "themes" and name == TITLE_STAGE:
                continue
            fixed["prompt"] += row["prompt_tokens"]
            fixed["completion"] += row["completion_tokens"]
    n = captions * len(result["datasets"])
    prompt = per_caption["prompt"] * n + fixed["prompt"]
    completion = per_caption["completion"] * n + fixed["completion"]
    seconds = prompt / prefill_tps + completion / decode_tps
    return {"captions_per_dataset": captions, "datasets": len(result["datasets"]),
            "measured_tokens_per_caption": {k: round(v, 1) for k, v in per_caption.items()},
            "measured_fixed_tokens": fixed, "prompt_tokens": int(prompt), "completion_tokens": int(completion),
            "assumed_prefill_tokens_per_s": prefill_tps, "assumed_decode_tokens_per_s": decode_tps,
            "gpu_hours": round(seconds / 3600, 2),
            "note": "ASSUMED throughput (not measured); the token counts are SmolLM2's tokenizer's, a 7B model's "
                    "differ by its tokenizer (same order)"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for scripts/describe_data.py (none: the demo)")
    parser.add_argument("--prefill-tps", type=float, default=5000.0, help="ASSUMED prompt tokens/s of a 7B LLM")
    parser.add_argument("--decode-tps", type=float, default=1000.0, help="ASSUMED generated tokens/s of a 7B LLM")
    parser.add_argument("--out", type=Path, default=None, help="also write the results as JSON here")
    parser.add_argument("--keep", type=Path, default=None,
                        help="run in this (new, empty) folder and keep it (report.html under out/)")
    args = parser.parse_args()
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=False)
        result = run_cold(args.overrides, args.keep.resolve())
    else:
        with tempfile.TemporaryDirectory(prefix="bench_describe_") as tmp:
            result = run_cold(args.overrides, Path(tmp))
    result["projection"] = projection(result, args.prefill_tps, args.decode_tps)
    print(f"cold describe run: {result['wall_s']} s wall for {result['images']} images "
          f"({os.cpu_count()} cores visible), overrides {args.overrides or 'none (the demo)'}")
    print("stage times (s, the run's stage_times.json):")
    for name, seconds in result["stage_times"].items():
        print(f"  {name:12s} {seconds:8.1f}")
    print(f"stage status: {result['status']}")
    print(f"themes: {result['themes']} ({result['themes_failed_steps']} failed steps, listed in the report)")
    for name, texts in result["significant"].items():
        print(f"significant differences {name}: {len(texts)} {texts[:4]}")
    for stage, ledger in result["ledgers"].items():
        print(f"tokens {stage}: {ledger['calls']} calls, {ledger['prompt_tokens']} prompt + "
              f"{ledger['completion_tokens']} completion tokens ({ledger['model_calls']} model calls)")
    p = result["projection"]
    if "gpu_hours" in p:
        print(f"projection, {p['captions_per_dataset']} captions x {p['datasets']} datasets, 7B LLM on one GPU: "
              f"{p['prompt_tokens']:,} prompt + {p['completion_tokens']:,} completion tokens "
              f"({p['measured_tokens_per_caption']} per caption, measured) -> {p['gpu_hours']} GPU hours at the "
              f"ASSUMED {p['assumed_prefill_tokens_per_s']:.0f} prompt / {p['assumed_decode_tokens_per_s']:.0f} "
              "generated tokens/s (an assumption, not a measurement)")
    else:
        print(f"projection: {p['status']}")
    if args.out:
        args.out.write_text(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main()
