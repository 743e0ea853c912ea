"""Debian's Chromium driven by Playwright, for the tests of the kiosk page and of grader.js (the
`browser` fixture itself is in conftest.py).

Outside CI the browser tests skip, saying why, when Playwright or Chromium is missing; with CI set they
fail instead, so CI cannot pass without running them.
"""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path
from typing import NoReturn

import pytest

BROWSER_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def unavailable(reason: str) -> NoReturn:
    """Skip with the reason, or fail under CI, where the browser tests must run."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI is set, so the browser tests must run (.ci/run installs chromium)")
    pytest.skip(reason)


def chromium_path() -> str | None:
    found = Path("/usr/bin/chromium")
    return str(found) if found.is_file() else shutil.which("chromium")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
