"""Progress bars that suit a terminal and a batch log alike.

In a terminal a bar refreshes as usual. When stderr is not a terminal (SLURM, nohup, CI, a file),
every bar writes at most one line per `LOG_INTERVAL_S` seconds, postfix updates included
(`set_postfix` of a plain tqdm bar forces a refresh, which flooded logs with a line per step).
At a quiet log level (``log_level=warning``, `bias.core.logs.quiet`) no bar is drawn.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any

from tqdm.auto import tqdm

from bias.core.logs import quiet

LOG_INTERVAL_S = 30.0


class Progress(tqdm):
    """`tqdm` whose postfix updates never force a refresh (they show at the next regular one)."""

    _interactive = True

    def set_postfix(self, ordered_dict: Any = None, refresh: bool = True, **kwargs: Any) -> None:
        super().set_postfix(ordered_dict, refresh=refresh and self._interactive, **kwargs)

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        super().set_postfix_str(s, refresh=refresh and self._interactive)


def _is_terminal(stream: Any) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def progress_bar(iterable: Iterable[Any] | None = None, **kwargs: Any) -> Progress:
    """A progress bar; in a log (stderr not a terminal) at most one line per `LOG_INTERVAL_S`; none when quiet."""
    if quiet():
        kwargs["disable"] = True
    interactive = _is_terminal(kwargs.get("file") or sys.stderr)
    if not interactive:
        kwargs.setdefault("mininterval", LOG_INTERVAL_S)
        kwargs.setdefault("maxinterval", max(LOG_INTERVAL_S, kwargs["mininterval"]))
    bar = Progress(iterable, **kwargs)
    bar._interactive = interactive
    return bar
