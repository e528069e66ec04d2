"""Memory measurements for the scale benchmarks: each step in a fresh process, its peak RSS reported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_mb() -> float:
    """High-water RSS of this process image (VmHWM; ru_maxrss would carry the parent's peak over exec)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024


def reset_peak() -> None:
    """Restart the high-water mark at the current RSS (Linux >= 4.0), to measure one step of a process."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def run_step(script: str, args: list[str]) -> dict:
    """Run `script --child ...args` in a fresh interpreter; its last stdout line is a JSON result."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TQDM_DISABLE": "1"}
    proc = subprocess.run([sys.executable, script, *args], capture_output=True, text=True, env=env)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def sync(device) -> None:
    """Wait for queued GPU work before reading a timer (no-op on CPU)."""
    if device.type == "cuda":
        import torch

        torch.cuda.synchronize()
