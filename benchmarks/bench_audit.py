"""Nearest-training-checkpoint distances of the audit: batched and streamed vs the straightforward pairwise loop.

    .venv/bin/python benchmarks/bench_audit.py [--sizes 200 1000] [--params 100000] [--loop-rows 50]
                                               [--big-params 10000000] [--big-n 16 (0: none)] [--threads 2]
                                               [--memory-mb 512]

For each size n, n generated x n training checkpoints of `--params` random parameters (seeded) get
their min L2 to the training set (what the audit computes for every group) by

* ``loop``: for every generated vector, ``(g - t).norm()`` against every training vector in Python,
  the ordinary way; run on the first `--loop-rows` generated rows and extrapolated linearly to n
  rows (its cost per pair does not depend on n), unless `--loop-rows` >= n;
* ``batched``: `memorization.metrics.min_l2` (chunked matrix-product distances + exact refinement),
  the in-memory path of the audit, all vectors in memory;
* ``streamed``: `memorization.metrics.similarity.streamed_min_l2` reading coordinate blocks of
  `CheckpointSet` folders of ``.safetensors`` files (the audit's path when the checkpoints do not fit
  in ``metrics.memory_gb``); the files are written first, outside the timing.

Then `--big-n` x `--big-n` checkpoints of `--big-params` parameters: streamed vs batched in memory.
Streamed blocks hold ``memory_mb / (12 x 2n)`` coordinates (both sets' block, float32, plus the
float64 working copies), as the audit sizes them from ``metrics.memory_gb``. Each measurement runs in a fresh process; its wall time and peak
RSS above the RSS after imports (VmHWM - RSS; inputs included) are printed as a Markdown table with the 1-minute load average.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from measure import peak_mb, reset_peak, rss_mb, run_step  # noqa: E402  (benchmarks/measure.py)


def _data(n: int, p: int, seed: int):
    import torch

    return torch.randn(n, p, generator=torch.Generator().manual_seed(seed))


def _folders(root: Path, n: int, p: int) -> tuple[Path, Path]:
    """n training and n generated checkpoints of one p-vector tensor each (generated = training + noise)."""
    from memorization.audit.checkpoints import export_checkpoints
    from memorization.zoo.spec import ParamSpec

    spec = ParamSpec(["w"], [(p,)])
    folder = root / f"n{n}_p{p}"
    if not (folder / "done").exists():
        train = _data(n, p, 0)
        export_checkpoints(train, spec, folder / "train")
        export_checkpoints(train + 0.1 * _data(n, p, 1), spec, folder / "gen")
        (folder / "done").write_text("")
    return folder / "train", folder / "gen"


def audit_child(args: argparse.Namespace) -> None:
    """A whole streamed audit (scripts/audit.py's run_audit) of digits MLPs with hidden widths `--audit-hidden`:
    `--audit-n` seeded random initialisations as training checkpoints; generated = half of them + 1e-3 noise and
    half fresh initialisations."""
    import torch
    from bias.configs import CONFIG_DIR
    from hydra import compose, initialize_config_dir

    from memorization.audit.checkpoints import export_checkpoints
    from memorization.audit.run import run_audit
    from memorization.zoo.archs import build_arch, init_params
    from memorization.zoo.spec import ParamSpec

    torch.set_num_threads(args.threads)
    hidden = [int(h) for h in args.audit_hidden.split(",")]
    arch = {"name": "mlp", "hidden": hidden}
    root = Path(args.data) / f"audit_{'x'.join(map(str, hidden))}_n{args.audit_n}"
    n = args.audit_n
    if not (root / "done").exists():
        rows = torch.stack([init_params(arch, (1, 8, 8), 10, s) for s in range(n + n // 2)])
        spec = ParamSpec.from_module(build_arch(arch, (1, 8, 8), 10))
        export_checkpoints(rows[:n], spec, root / "train")
        gen = torch.cat([rows[: n // 2] + 1e-3 * torch.randn(n // 2, rows.shape[1]), rows[n:]])
        export_checkpoints(gen, spec, root / "gen")
        (root / "done").write_text("")
    from memorization.report import _plt
    from memorization.zoo.tasks import get_task

    _plt(), get_task("digits", test_fraction=0.5)  # matplotlib and the task's data outside the measured memory
    reset_peak()
    base = rss_mb()
    with initialize_config_dir(str(CONFIG_DIR / "audit"), version_base=None):
        cfg = compose("audit", [f"train={root / 'train'}", f"generated={root / 'gen'}", "task.name=digits",
                                "task.kwargs={test_fraction: 0.5}", "model.arch={name: mlp, hidden: [" + ",".join(map(str, hidden)) + "]}",
                                f"metrics.memory_gb={args.memory_mb / 1024}", f"baselines.num_samples={n}",
                                f"baselines.average_k={max(2, n // 2)}", "progress=false", f"out={root / 'out'}"])
    t0 = time.perf_counter()
    r = run_audit(cfg)
    print(json.dumps({"seconds": time.perf_counter() - t0, "peak_mb": peak_mb() - base, "streamed": r["streamed"],
                      "params": r["model"]["num_params"], "checkpoints": sum(g["n"] for g in r["groups"].values()),
                      "verdict": r["verdict"]["verdict"], "timings": r["timings_s"], "load": os.getloadavg()[0]}))


def child(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    from memorization.audit import checkpoints  # noqa: F401  (imports outside the measured memory)
    from memorization.metrics import similarity  # noqa: F401

    n, p = args.n, args.p
    reset_peak()
    base = rss_mb()
    if args.method == "streamed":
        from memorization.audit.checkpoints import column_blocks, open_checkpoints
        from memorization.metrics.similarity import streamed_min_l2
        from memorization.zoo.spec import ParamSpec

        spec = ParamSpec(["w"], [(p,)])
        train_dir, gen_dir = _folders(Path(args.data), n, p)
        t0 = time.perf_counter()
        train, gen = open_checkpoints(train_dir, spec, "train"), open_checkpoints(gen_dir, spec, "generated")
        blocks = column_blocks(spec, max(1, args.memory_mb * 2 ** 20 // (12 * 2 * n)))
        values, _ = streamed_min_l2(lambda b: gen.columns(blocks[b]), len(blocks), n,
                                    lambda b: train.columns(blocks[b]), n)
        seconds, rows = time.perf_counter() - t0, n
    else:
        train = _data(n, p, 0)
        gen = train + 0.1 * _data(n, p, 1)
        if args.method == "batched":
            from memorization.metrics import min_l2

            t0 = time.perf_counter()
            values, _ = min_l2(gen, train)
            seconds, rows = time.perf_counter() - t0, n
        else:
            rows = min(n, args.loop_rows)
            t0 = time.perf_counter()
            values = torch.empty(rows)
            for i in range(rows):
                best = float("inf")
                for j in range(n):
                    best = min(best, float((gen[i] - train[j]).norm()))
                values[i] = best
            seconds = time.perf_counter() - t0
    print(json.dumps({"seconds": seconds, "rows": rows, "peak_mb": peak_mb() - base, "base_mb": base, "check": float(values[: min(rows, 5)].sum()),
                      "load": os.getloadavg()[0]}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[200, 1000])
    parser.add_argument("--params", type=int, default=100_000)
    parser.add_argument("--loop-rows", type=int, default=50)
    parser.add_argument("--big-params", type=int, default=10_000_000)
    parser.add_argument("--big-n", type=int, default=16)
    parser.add_argument("--memory-mb", type=int, default=512, help="streamed: coordinate blocks sized to this budget")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--data", default=None, help="folder for the checkpoint files (default: a temporary one)")
    parser.add_argument("--audit-hidden", default=None, help="instead: one whole streamed audit of digits MLPs of "
                        "these hidden widths, e.g. 3200,3200 (10.5M parameters)")
    parser.add_argument("--audit-n", type=int, default=6, help="training checkpoints of that audit")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--method", default="batched", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--p", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        (audit_child if args.audit_hidden else child)(args)
        return
    data = Path(args.data or tempfile.mkdtemp(prefix="bench_audit_"))
    if args.audit_hidden:
        r = run_step(__file__, ["--child", "--audit-hidden", args.audit_hidden, "--audit-n", str(args.audit_n),
                                "--memory-mb", str(args.memory_mb), "--threads", str(args.threads), "--data", str(data)])
        print(json.dumps(r, indent=1))
        return
    print(f"checkpoint files in {data}; {args.threads} torch threads\n")
    print("| n x n checkpoints | params | method | rows timed | time (s) | time for n rows (s) | peak RSS above "
          "imports (MB) | load |")
    print("|---|---|---|---|---|---|---|---|")
    runs = [(n, args.params, m) for n in args.sizes for m in ("loop", "batched", "streamed")]
    runs += [(args.big_n, args.big_params, m) for m in ("batched", "streamed") if args.big_n > 0]
    for n, p, method in runs:
        if method == "streamed":
            _folders(data, n, p)  # written before the timed process
        common = ["--child", "--method", method, "--n", str(n), "--p", str(p), "--threads", str(args.threads),
                  "--loop-rows", str(args.loop_rows), "--memory-mb", str(args.memory_mb), "--data", str(data)]
        r = run_step(__file__, common)
        scaled = r["seconds"] * n / r["rows"]
        note = "" if r["rows"] == n else " (extrapolated)"
        print(f"| {n} x {n} | {p:,} | {method} | {r['rows']} | {r['seconds']:.2f} | {scaled:.1f}{note} | "
              f"{r['peak_mb']:.0f} | {r['load']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
