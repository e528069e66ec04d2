"""Test helper: `scripts/classify.py` that dies like a killed job (exit 137, no cleanup) after one epoch.

    KILL_AFTER_EPOCH=0 python tests/helpers/kill_after_epoch.py <classify overrides>

The fault is injected through the trainer's epoch callbacks; production code has no test hook.
"""

import os

from bias.cli import classify


def kill_after(epoch_to_die: int):
    def callback(epoch: int) -> None:
        if epoch == epoch_to_die:
            os._exit(137)

    return callback


if __name__ == "__main__":
    classify(callbacks=[kill_after(int(os.environ["KILL_AFTER_EPOCH"]))])
