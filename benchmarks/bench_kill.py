"""What a `kill -9` costs a transform job, and what flushing often costs a job that is not killed.

    python benchmarks/bench_kill.py [--images 1200] [--kill-at 0.6]

1. `scripts/transform.py transform=canny all_files=true` on `--images` generated 48 px images is killed
   (SIGKILL) once `--kill-at` of its image outputs are on disk; the rerun's manifest says how many it reused
   and how many it computed again. Lost = outputs written before the kill that the rerun computed again.
2. `run_batched` in this process over the same images, flushing every `FLUSH_ITEMS` items against never
   (only at the end): the wall time flushing adds.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def make_images(folder: Path, n: int, seed: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(folder / f"{i:05d}.png")


def kill_and_rerun(data: Path, cache: Path, n: int, kill_at: float) -> dict[str, float]:
    args = ["data=folders", f"data.paths={{a: {data / 'a'}, b: {data / 'b'}}}", "all_files=true", "transform=canny",
            f"cache_dir={cache}", "num_workers=1"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    script = str(ROOT / "scripts" / "transform.py")
    proc = subprocess.Popen([sys.executable, script, *args], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    start = time.perf_counter()
    written = 0
    while proc.poll() is None:
        written = sum(1 for _ in (cache / "transforms").glob("*/*/*.png")) if (cache / "transforms").exists() else 0
        if written >= kill_at * n:
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_after = time.perf_counter() - start
    start = time.perf_counter()
    subprocess.run([sys.executable, script, *args], cwd=ROOT, env=env, check=True, capture_output=True)
    rerun = time.perf_counter() - start
    manifest = json.loads(next((cache / "transforms").glob("*/manifest.json")).read_text())
    return {"written_before_kill": written, "killed_after_s": round(killed_after, 1), "reused": manifest["reused"],
            "computed_again": manifest["computed"], "lost": written - manifest["reused"], "rerun_s": round(rerun, 1)}


def flush_cost(data: Path, workdir: Path, repeats: int = 2) -> dict[str, float]:
    from bias.data.images import file_sha1
    from bias.inference import runner
    from transforms.base import output_store
    from transforms.registry import create_transform

    paths = sorted(str(p) for p in data.rglob("*.png"))
    shas = [file_sha1(p) for p in paths]
    canny = create_transform("canny")
    times: dict[str, list[float]] = {"every": [], "never": []}
    every = runner.FLUSH_ITEMS
    for r in range(repeats):
        for mode, items in (("every", every), ("never", 10**9)):
            runner.FLUSH_ITEMS = items
            start = time.perf_counter()
            runner.run_batched(canny, paths, shas, output_store(canny, workdir / f"{mode}{r}", None), num_workers=0,
                               show_progress=False)
            times[mode].append(time.perf_counter() - start)
    runner.FLUSH_ITEMS = every
    return {f"{mode}_s": round(min(v), 2) for mode, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=1200)
    parser.add_argument("--kill-at", type=float, default=0.6)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        make_images(tmp / "data" / "a", args.images // 2, 1)
        make_images(tmp / "data" / "b", args.images - args.images // 2, 2)
        print("kill -9 and rerun:", kill_and_rerun(tmp / "data", tmp / "cache", args.images, args.kill_at))
        from bias.inference.runner import FLUSH_ITEMS

        print(f"{args.images} images, flush every {FLUSH_ITEMS} items vs only at the end:",
              flush_cost(tmp / "data", tmp, repeats=3))


if __name__ == "__main__":
    main()
