"""ruff is part of the suite: plain `pytest` fails on a lint error, as CI does."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

FOLDER = Path(__file__).resolve().parent.parent


def test_ruff_check_is_clean() -> None:
    ruff = Path(sys.executable).with_name("ruff")  # the venv's pinned ruff, whether or not bin/ is on PATH
    res = subprocess.run(
        [str(ruff), "check", "--no-cache", "."], cwd=FOLDER, capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 0, res.stdout + res.stderr


def test_ruff_format_is_clean() -> None:
    ruff = Path(sys.executable).with_name("ruff")
    res = subprocess.run(
        [str(ruff), "format", "--check", "--no-cache", "."],
        cwd=FOLDER,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stdout + res.stderr
