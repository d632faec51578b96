"""The whole folder is ruff-clean (part of plain `pytest`, so that one command checks everything)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent


def test_ruff_check_is_clean() -> None:
    r = subprocess.run([sys.executable, "-m", "ruff", "check", "."], cwd=HERE, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, f"ruff check (from `make install`) found problems:\n{r.stdout}{r.stderr}"
