"""Test helper: `scripts/transform.py` whose forward pass sleeps `SLOW_BATCH_SECONDS` per batch and prints
`forwarded N` (items through the forward pass so far) after each batch, so a test can kill it mid-run;
`FLUSH_ITEMS` (optional) sets the runner's flush interval in items, so a short test sees several flushes.

    SLOW_BATCH_SECONDS=0.3 FLUSH_ITEMS=64 python tests/helpers/slow_transform.py transform=canny ...

The delay is injected by wrapping the runner's forward; production code has no test hook.
"""

import os
import time

from bias.cli import transform
from bias.inference import runner


def slow_forward(seconds: float):
    real = runner._Forward.__call__
    done = 0

    def forward(self, batch):
        nonlocal done
        time.sleep(seconds)
        out = real(self, batch)
        done += runner.batch_len(batch)
        print(f"forwarded {done}", flush=True)
        return out

    return forward


if __name__ == "__main__":
    runner._Forward.__call__ = slow_forward(float(os.environ["SLOW_BATCH_SECONDS"]))
    if os.environ.get("FLUSH_ITEMS"):
        runner.FLUSH_ITEMS = int(os.environ["FLUSH_ITEMS"])
    transform()
