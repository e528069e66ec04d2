"""benchmarks/gpu_check.sh --smoke: the GPU check's every step on tiny models on the CPU, and its RESULTS.md rows."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT


@pytest.mark.slow
def test_the_smoke_mode_runs_every_step_and_prints_a_row_for_each(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path / "out"), "TRANSFORMS": "imagenet_cls depth",
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--smoke"], env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SMOKE" in proc.stdout and "failed or out of time" not in proc.stdout, proc.stdout
    rows = (tmp_path / "out" / "rows.md").read_text().splitlines()
    assert rows[0].startswith("| what |") and len(rows) == 2 + 2 + 1 + 1  # header, 2 transforms, captions, training
    assert rows[2].startswith("| imagenet_cls | tiny imagenet_cls | float32 | 2 |") and "images/s" in rows[2]
    assert rows[3].startswith("| depth |") and "%" in rows[3]  # the runner's wait share
    assert rows[4].startswith("| captioning (4 new tokens) |") and "tokens/s" in rows[4]
    assert "recipe=paper training step (convnext_tiny SMOKE" in rows[5] and "steps/s" in rows[5]
    neural = json.loads((tmp_path / "out" / "neural.json").read_text())
    assert [r["transform"] for r in neural] == ["imagenet_cls", "depth"] and all(r["images"] == 4 for r in neural)
    train = json.loads((tmp_path / "out" / "train.json").read_text())
    assert train["steps"] >= 3 and train["peak_mb"] > 0


def test_the_full_mode_refuses_to_run_without_a_gpu(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is here: the full mode would run (minutes)")
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path / "out")}
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh")], env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and "no CUDA device: use --smoke" in proc.stderr
