"""Test helper: `scripts/uncon_gen.py` that dies like a killed job (exit 137, no cleanup) after a checkpoint.

    KILL_AT=cc_like:4 python tests/helpers/kill_uncon_gen.py <uncon_gen overrides>

dies right after the checkpoint of step 4 of dataset cc_like is written. The fault is injected through
the training loop's checkpoint callbacks; production code has no test hook.
"""

import os

from bias.cli import uncon_gen


def kill_at(dataset: str, step: int):
    def callback(name: str, at: int) -> None:
        if (name, at) == (dataset, step):
            os._exit(137)

    return callback


if __name__ == "__main__":
    name, step = os.environ["KILL_AT"].rsplit(":", 1)
    uncon_gen(callbacks=[kill_at(name, int(step))])
