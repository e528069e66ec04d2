"""The describe stages after captioning at scale: objects, language, differences (proposers, sentence embeddings,
1,000 label permutations) and explained, at N images per dataset, 3 datasets, with the captions already made.

    python benchmarks/bench_describe_scale.py                       # N = 1,000 and 10,000
    python benchmarks/bench_describe_scale.py --sizes 1000 --threads 2 --out scale.json

No captioning model runs: the captions are the planted generator's own (`bias.data.planted_scene.short_caption`
of `render_scene` records at 32 px, the same text `make describe` reads), made once and kept in
``--records`` (a JSON file; the N = 1,000 run reads the first 1,000 of each dataset). Each size runs in a fresh
process (`benchmarks.measure.run_step`) that builds the `describe.inputs.DescribeInputs` table directly (the
images themselves are not needed: object presence comes from the scene records, ``objects.sources=
[planted_scene]``; the similarity is caption-text) and calls the stage functions of `describe.stages` in order,
as `describe.run.run_stages` does (results written to disk between stages). The LLM proposer and the themes
stage are left out (``differences.llm_proposer=false``): their cost does not grow with N (a fixed number of
captions per prompt; see bench_describe.py). The sentence-embedding cache starts empty, so every caption is
embedded.

Reported per stage: wall seconds, CPU seconds of the process (all its threads; on a shared machine the wall time
is the CPU time stretched by the other jobs, so the CPU time says what dedicated cores would take) and peak RSS
(VmHWM, reset before each stage); for differences also the wall and CPU time in sentence embedding, in the
permutation test and in the best-cut shares, and the number of hypotheses; the growth factor of each stage's
wall time from the smallest to the largest N.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.measure import peak_mb, reset_peak, run_step  # noqa: E402

STAGES = ("objects", "language", "differences", "explained")
OVERRIDES = ["objects.sources=[planted_scene]", "differences.llm_proposer=false", "images_per_dataset=null"]


def make_records(path: Path, n: int) -> dict[str, list[dict[str, Any]]]:
    """The first `n` scene records of each planted dataset (rendered at 32 px), cached in `path`."""
    import yaml

    from bias.data.planted import PlantedConfig, render_scene

    if path.exists():
        cached = json.loads(path.read_text())
        if all(len(v) >= n for v in cached.values()):
            return {k: v[:n] for k, v in cached.items()}
    generator = yaml.safe_load((ROOT / "configs" / "data" / "planted.yaml").read_text())["generator"]
    planted = PlantedConfig.from_mapping(generator)
    records = {name: [render_scene(params, seed=planted.seed, dataset=name, index=i, size=32)[1] for i in range(n)]
               for name, params in planted.datasets.items()}
    path.write_text(json.dumps(records))
    return records


def build_inputs(records: dict[str, list[dict[str, Any]]], seed: int = 0) -> Any:
    import hashlib

    import numpy as np

    from bias.data.planted_scene import short_caption
    from describe.inputs import DescribeInputs, assign_roles

    datasets = list(records)
    rows = [(d, i, r) for d, name in enumerate(datasets) for i, r in enumerate(records[name])]
    ids = [f"{datasets[d]}/{i:06d}.png" for d, i, _ in rows]
    labels = np.array([d for d, _, _ in rows])
    sha = [hashlib.sha1(s.encode()).hexdigest().encode() for s in ids]
    return DescribeInputs(datasets, ids, labels, ids, np.array(sha, dtype="S40"), [short_caption(r) for _, _, r in rows],
                          assign_roles(labels, 0.5, seed), [r for _, _, r in rows], seed=seed,
                          caption_source={"transform": "caption_short", "captioner": "planted_scene"})


def _timed(owner: Any, name: str, totals: dict[str, float]) -> None:
    """Wrap `owner.name` so the seconds spent in it add up in `totals[name]`."""
    inner = getattr(owner, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start, cpu = time.perf_counter(), time.process_time()
        try:
            return inner(*args, **kwargs)
        finally:
            totals[name] = totals.get(name, 0.0) + time.perf_counter() - start
            totals[f"{name}_cpu"] = totals.get(f"{name}_cpu", 0.0) + time.process_time() - cpu

    setattr(owner, name, wrapper)


def child(n: int, records_path: Path, threads: int) -> dict[str, Any]:
    import torch
    from hydra import compose, initialize_config_dir

    import describe.differences as differences
    from describe.run import STAGES as SLOTS
    from describe.run import StageContext, _write_stage, validate_describe_config
    from describe.similarity import SentenceEncoder

    torch.set_num_threads(threads)
    start = time.perf_counter()
    records = make_records(records_path, n)
    x = build_inputs(records)
    setup = time.perf_counter() - start
    inner: dict[str, float] = {}
    for name in ("permutation_test", "best_cut_shares"):
        _timed(differences, name, inner)
    _timed(SentenceEncoder, "embed_texts", inner)
    with tempfile.TemporaryDirectory() as tmp:
        with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base=None):
            cfg = compose(config_name="describe", overrides=[*OVERRIDES, f"cache_dir={tmp}/cache", f"out={tmp}/out"])
        plain = validate_describe_config(cfg)
        out = Path(tmp) / "out"
        out.mkdir()
        ctx = StageContext(cfg, plain, x, out, {}, {}, 0)
        stages: dict[str, Any] = {}
        for name in STAGES:
            reset_peak()
            mark, cpu = time.perf_counter(), time.process_time()
            ctx.results[name] = _write_stage(SLOTS[name].run(ctx), out, name)
            stages[name] = {"seconds": round(time.perf_counter() - mark, 2),
                            "cpu_seconds": round(time.process_time() - cpu, 2), "peak_mb": round(peak_mb())}
        sim = ctx.results["differences"]["similarity"]
        stages["differences"] |= {k: round(v, 2) for k, v in inner.items()}
        stages["differences"]["hypotheses"] = sim["after_merging"]
        stages["differences"]["scored_images"] = sim["scored"]
    return {"n_per_dataset": n, "images": len(x), "threads": threads, "setup_seconds": round(setup, 1),
            "stages": stages}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--records", type=Path, default=Path(tempfile.gettempdir()) / "describe_scale_records.json")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--child", type=int, default=None)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.child, args.records, args.threads)))
        return
    make_records(args.records, max(args.sizes))  # once, outside the timed children
    results = []
    for n in args.sizes:
        r = run_step(__file__, ["--child", str(n), "--threads", str(args.threads), "--records", str(args.records)])
        results.append(r)
        print(json.dumps(r), flush=True)
    if len(results) > 1:
        first, last = results[0], results[-1]
        scale = last["n_per_dataset"] / first["n_per_dataset"]
        growth = {s: round(last["stages"][s]["seconds"] / max(first["stages"][s]["seconds"], 1e-3), 1) for s in STAGES}
        print(json.dumps({"images_x": scale, "seconds_x": growth}))
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
