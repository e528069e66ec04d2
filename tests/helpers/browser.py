"""Headless Chromium for tests: a page's screenshot, its console messages and its DOM after rendering.

Debian's `chromium` package, driven by its own command line (no browser download, no Python driver):
`--screenshot` writes the rendered page as PNG; `--enable-logging=stderr` prints every console message and
uncaught exception as an ``INFO:CONSOLE`` line; `--dump-dom` prints the DOM after load. Each call uses its
own profile folder, so calls never share state.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np

INSTALL = "apt-get install -y chromium (Debian's package; .ci/run installs it)"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--no-default-browser-check",
         "--hide-scrollbars", "--disable-extensions", "--disable-background-networking", "--mute-audio"]
CONSOLE = re.compile(r":CONSOLE[:(]")


def chromium() -> str:
    """The chromium executable; an AssertionError saying how to install it when there is none."""
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    raise AssertionError(f"headless Chromium is needed for the report's browser test: {INSTALL}")


def _run(args: list[str], profile: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    profile.mkdir(parents=True, exist_ok=True)
    return subprocess.run([chromium(), *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True,
                          text=True, timeout=timeout)


def screenshot(page: Path, out: Path, profile: Path, width: int = 1200, height: int = 2400) -> tuple[np.ndarray,
                                                                                                      list[str]]:
    """(the rendered page as an HxWx3 uint8 array, its console lines: messages and uncaught errors)."""
    from PIL import Image

    proc = _run(["--enable-logging=stderr", "--v=0", f"--window-size={width},{height}", f"--screenshot={out}",
                 page.resolve().as_uri()], profile)
    if not out.exists():
        raise AssertionError(f"chromium wrote no screenshot (exit {proc.returncode}): {proc.stderr[-2000:]}")
    console = [line for line in proc.stderr.splitlines() if CONSOLE.search(line)]
    return np.asarray(Image.open(out).convert("RGB")), console


def dom(page: Path, profile: Path) -> str:
    """The page's DOM after loading, serialised by the browser."""
    proc = _run(["--dump-dom", page.resolve().as_uri()], profile)
    if proc.returncode != 0 or "<html" not in proc.stdout:
        raise AssertionError(f"chromium --dump-dom failed (exit {proc.returncode}): {proc.stderr[-2000:]}")
    return proc.stdout
