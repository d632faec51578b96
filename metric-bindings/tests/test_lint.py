"""ruff, with the folder's settings (pyproject.toml), over everything in the folder."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest
from conftest import FOLDER, missing

pytestmark = pytest.mark.host


def test_ruff_check_is_clean():
    if importlib.util.find_spec("ruff") is None:
        missing("ruff (the [test] extra)")
    r = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", "."],
        cwd=FOLDER,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout + r.stderr
