"""Process-group state shared by the runner and the precompute step."""

from __future__ import annotations

import os

import torch


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
