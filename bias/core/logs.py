"""What a command says while it runs, at the level the user picks.

The library logs; it does not print. Every module writes to ``logging.getLogger(__name__)``: status
and result lines (a run's accuracy and verdict, where its folder is) at INFO, notes about repaired or
skipped files at WARNING, a failed table row at ERROR. Where several processes run one job, the code
keeps its explicit ``is_main_process`` guard, so a line appears once.

A command (`bias.cli`) calls `configure_logging` once, with its config's ``log_level``:

- ``debug | info | warning | error``; ``info`` is the default, ``warning`` is the quiet switch (the
  status lines and the progress bars go, warnings and errors stay);
- lines are the message alone, as the commands printed them before: DEBUG and INFO on stdout,
  WARNING and above on stderr;
- the configs read the default from the environment, ``log_level: ${oc.env:BIAS_LOG_LEVEL,info}``,
  so ``BIAS_LOG_LEVEL=warning`` quiets every command and ``log_level=...`` on the command line wins.

Outside the commands (a notebook, a test) nothing is configured: Python's defaults apply (warnings on
stderr, INFO unseen) until you call ``configure_logging("info")`` or set up logging your own way.
"""

from __future__ import annotations

import logging
import sys

from bias.core.errors import ConfigError

#: the ``log_level`` values, quietest last
LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
#: the project's top-level packages: their loggers get the chosen level
PACKAGES = ("bias", "classifiers", "transforms", "describe", "memorization")


def parse_level(value: object) -> int:
    """The `logging` level of a ``log_level`` value, else a one-line `ConfigError`."""
    level = LEVELS.get(value) if isinstance(value, str) else None
    if level is None:
        raise ConfigError(f"log_level: expected one of {' | '.join(LEVELS)}, got {value!r}")
    return level


class _BelowWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.WARNING


class _ConsoleHandler(logging.StreamHandler):
    """A console handler of `configure_logging` (its stream is looked up at each line, so redirection works)."""

    def __init__(self, stream_name: str) -> None:
        super().__init__()
        self.stream_name = stream_name

    @property
    def stream(self):
        return getattr(sys, self.stream_name)

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler.__init__ assigns it; the property looks it up instead
        pass


def _is_console(handler: logging.Handler) -> bool:
    """A handler that writes to the terminal (Hydra's job_logging console handler, or ours); not a file."""
    return isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler)


def configure_logging(level: object = "info") -> int:
    """Set the project's log level and its console lines (see the module docstring); returns the level.

    Replaces the root logger's console handlers (Hydra's ``job_logging`` one among them; a file handler
    stays) with two plain ones: below WARNING to stdout, WARNING and above to stderr. Other libraries'
    INFO lines follow at ``info`` and quieter; their DEBUG chatter stays off at ``debug``.
    """
    value = parse_level(level)
    root = logging.getLogger()
    for handler in [h for h in root.handlers if _is_console(h)]:
        root.removeHandler(handler)
    formatter = logging.Formatter("%(message)s")
    out, err = _ConsoleHandler("stdout"), _ConsoleHandler("stderr")
    out.addFilter(_BelowWarning())
    err.setLevel(logging.WARNING)
    for handler in (out, err):
        handler.setFormatter(formatter)
        root.addHandler(handler)
    root.setLevel(max(value, logging.INFO))
    for name in PACKAGES:
        logging.getLogger(name).setLevel(value)
    return value


def quiet() -> bool:
    """True when the project's level was set above INFO (``log_level=warning``): progress bars stay off.

    Only an explicit level counts: unconfigured (a notebook, a test), the bars show as before."""
    return logging.getLogger("bias").level > logging.INFO
