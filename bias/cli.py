"""Shared pieces of the command-line entry points in `scripts/`."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

if not sys.stderr.isatty():
    # Logs of batch jobs (SLURM, nohup, CI) would get a progress-bar line every 0.1 s: one every 30 s
    # is enough. tqdm reads TQDM_* variables when it is first imported, hence before bias.data.
    os.environ.setdefault("TQDM_MININTERVAL", "30")

from bias.data import DataConfigError, duplicate_keys_in_overrides  # noqa: E402

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
USER_ERRORS = (DataConfigError, FileNotFoundError, KeyError, ValueError, TypeError)


def check_command_line(argv: Sequence[str]) -> None:
    """Mistakes Hydra would silently merge away: repeated dataset names, a model renamed without its group."""
    dupes = duplicate_keys_in_overrides(argv)
    if dupes:
        sys.exit(f"error: duplicate dataset names {dupes} in data.paths: every dataset needs its own name")
    names = [a.split("=", 1)[1] for a in argv if a.lstrip("+").startswith("model.name=")]
    if names and not any(a.startswith("model=") for a in argv):
        sys.exit(f"error: model.name={names[-1]} alone keeps the architecture arguments (model.kwargs) of the "
                 f"recipe's model, which belong to another network. Choose the model as a group: "
                 f"model=timm model.name={names[-1]} (timm's defaults; add model.kwargs={{...}}), or one of "
                 "model=resnet18, model=convnext_tiny, model=resnet_cpu, model=convnext_cpu")


@contextlib.contextmanager
def fail_cleanly() -> Iterator[None]:
    """Configuration mistakes end with one readable line (BIAS_TRACEBACK=1 shows the traceback)."""
    try:
        yield
    except USER_ERRORS as err:
        if os.environ.get("BIAS_TRACEBACK"):
            raise
        sys.exit(f"error: {err}")
