"""Process-group state shared by the runner and the precompute step."""

from __future__ import annotations

import logging
import os

import torch

logger = logging.getLogger(__name__)


def use_cpu() -> bool:
    """CPU when asked (`ACCELERATE_USE_CPU=1`) or when there is no GPU.

    accelerate's `PartialState` only looks for a CPU process group when told it runs on CPU, so
    without this, `torchrun --nproc_per_node 2` on a CPU-only machine would start two
    independent single-process runs that duplicate each other's work.
    """
    return os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes") or not torch.cuda.is_available()


def partial_state():
    from accelerate import PartialState

    return PartialState(cpu=use_cpu())


def shutdown_distributed() -> None:
    """End a multi-process run cleanly: wait for every rank, then destroy the process group.

    Called only after a command succeeded. A process that exits with its gloo process group still
    alive can abort at interpreter shutdown ("terminate called without an active exception",
    pytorch/pytorch#190489), which turns a finished run into a failed one. After an error the
    group is left alone: a barrier or a collective destroy there can hang on a rank that died.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        if dist.get_world_size() > 1:
            dist.barrier()
        dist.destroy_process_group()


def cpu_cores() -> int:
    """The cores this process may run on (its CPU affinity), not the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def configure_threads(requested: int | None = None) -> int:
    """Set torch's intra-op threads for this process; returns the number used.

    `requested` (the `threads` key of a command's config) wins when given. Otherwise one case is
    changed: `accelerate launch` without `--cpu` on a machine without a GPU exports
    OMP_NUM_THREADS=1, so every run of the main command used one core of a CPU-only machine (a
    10,000-image run on 2 cores took 470 s of wall and 463 s of CPU time). When launched by
    accelerate on CPU with OMP_NUM_THREADS=1, each process gets its share of the cores instead
    (cores / processes on this machine) and the command says so. Anywhere else OMP_NUM_THREADS and
    torch's own default stand (the test suite sets OMP_NUM_THREADS=1 for its two workers).
    """
    if requested:
        torch.set_num_threads(int(requested))
        return int(requested)
    launched_by_accelerate = "ACCELERATE_DYNAMO_BACKEND" in os.environ
    if launched_by_accelerate and use_cpu() and os.environ.get("OMP_NUM_THREADS") == "1":
        local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
        share = max(1, cpu_cores() // local)
        if share > 1:
            torch.set_num_threads(share)
            if int(os.environ.get("LOCAL_RANK", "0")) == 0:
                logger.info("accelerate launch set OMP_NUM_THREADS=1 on a CPU-only run: using %d torch threads per "
                            "process (%d cores, %d process(es) here; threads=N sets it)", share, cpu_cores(), local)
            return share
    return torch.get_num_threads()
