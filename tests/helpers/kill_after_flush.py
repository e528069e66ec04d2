"""Test helper: `scripts/transform.py` whose rank 1 dies like a killed job (exit 137, no cleanup) right after
its second flush of stored outputs; every job of the writer thread is flushed at once.

    KILL_AFTER_FLUSHES=2 python -m torch.distributed.run --nproc_per_node 2 tests/helpers/kill_after_flush.py ...

The fault is injected by wrapping the store writer's flush; production code has no test hook.
"""

import os

from bias.cli import transform
from bias.inference import runner, store


def dying_flush(after: int):
    real = store.StoreWriter.flush
    done = 0

    def flush(self) -> None:
        nonlocal done
        had_rows = bool(self._entries)
        real(self)
        if had_rows and os.environ.get("RANK") == "1":
            done += 1
            if done == after:
                os._exit(137)

    return flush


if __name__ == "__main__":
    runner.FLUSH_SECONDS = 0.0
    store.StoreWriter.flush = dying_flush(int(os.environ["KILL_AFTER_FLUSHES"]))
    transform()
