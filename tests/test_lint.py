"""The whole tree is lint-clean, formatted and type-checks: the README's test command checks it, so CI does."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import BIN, ROOT

CHECKS = {
    "ruff check": [str(BIN / "ruff"), "check", "--no-cache", "."],
    "ruff format": [str(BIN / "ruff"), "format", "--check", "--no-cache", "."],
    "mypy": [sys.executable, "-m", "mypy", "--cache-dir", "/dev/null"],
}


@pytest.mark.parametrize(
    "name", [pytest.param(name, marks=[pytest.mark.slow] if name == "mypy" else []) for name in sorted(CHECKS)]
)
def test_tree_is_clean(name: str) -> None:
    result = subprocess.run(CHECKS[name], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{name} found problems:\n{result.stdout[-4000:]}{result.stderr[-2000:]}"
