"""Shared test helpers: tiny folder datasets and running the real command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent

#: Overrides that make any run tiny: 32 px, the cpu recipe's ResNet at 8-64 channels, two epochs.
TINY = [
    "recipe.image_size=32",
    "recipe.eval_resize=36",
    "recipe.batch_size=16",
    "recipe.eval_batch_size=16",
    "recipe.effective_batch=16",
    "recipe.epochs=2",
    "recipe.eval_every=0",
    "num_workers=0",
    "model.kwargs.channels=[8,16,32,64]",
]


def write_colour_dataset(folder: Path, n: int, colour: tuple[int, int, int], seed: int, size: int = 40) -> None:
    """Noisy images around one colour with a random square: easy to classify by colour."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        img = np.clip(np.array(colour) + rng.normal(0, 25, (size, size, 3)), 0, 255).astype(np.uint8)
        y, x = rng.integers(0, size - 12, 2)
        img[y:y + 10, x:x + 10] = 255 - img[y:y + 10, x:x + 10]
        Image.fromarray(img).save(folder / f"{i:03d}.png")


@pytest.fixture(scope="session")
def two_folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("folders")
    write_colour_dataset(root / "reds", 40, (200, 60, 60), seed=1)
    write_colour_dataset(root / "blues" / "nested", 40, (60, 60, 200), seed=2)
    return {"reds": root / "reds", "blues": root / "blues"}


def paths_override(folders: dict[str, Path]) -> str:
    return "data.paths={" + ", ".join(f"{k}: {v}" for k, v in folders.items()) + "}"


def run_cli(script: str, *overrides: str, env: dict[str, str] | None = None, launcher: list[str] | None = None,
            check: bool = True, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run a script (its name in scripts/, or a path under the repository) in `cwd` (default: the repository)."""
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), **(env or {})}
    path = ROOT / script if "/" in script else ROOT / "scripts" / script  # tests/helpers/x.py or a script name
    cmd = (launcher or [sys.executable]) + [str(path), *overrides]
    proc = subprocess.run(cmd, cwd=cwd or ROOT, env=full_env, capture_output=True, text=True, timeout=900)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


#: two CPU ranks (gloo) for the sharding tests; one OpenMP thread each on the 2-core machine
TWO_RANK_ENV = {"ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
TWO_RANK_ARGS = [*TINY, "recipe.batch_size=8", "recipe.effective_batch=16", "recipe.eval_batch_size=4", "recipe.epochs=1"]


def torchrun(port: int) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port)]


def precompute_on_two_ranks(args: list[str], cache_root: Path, port: int) -> tuple[dict, list[dict]]:
    """`scripts/transform.py` on two ranks; the cache's merged manifest and its per-rank counts."""
    run_cli("transform.py", *args, env=TWO_RANK_ENV, launcher=torchrun(port))
    cache = next((cache_root / "transforms").iterdir())
    manifest = json.loads((cache / "manifest.json").read_text())
    return manifest, sorted(manifest["ranks"], key=lambda r: r["rank"])


def read_results(run_dir: Path) -> dict:
    return json.loads((run_dir / "results.json").read_text())


@pytest.fixture
def offline_hf(tmp_path, monkeypatch) -> Path:
    """An empty Hugging Face cache as the only place models come from: HF_HOME in tmp_path, HF_HUB_OFFLINE=1.
    Returns the hub folder (``$HF_HOME/hub``), where ``models--org--name/snapshots/<commit>/`` go."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path / "hf" / "hub"
