"""The code runs on the oldest Python that pyproject.toml promises (no interpreter that old is installed here,
so vermin reads the code: stdlib members, syntax and library features each carry their minimum version)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

FOLDER = Path(__file__).resolve().parent.parent


def test_code_needs_no_newer_python_than_requires_python() -> None:
    pyproject = (FOLDER / "pyproject.toml").read_text()
    floor = re.search(r'requires-python\s*=\s*">=\s*(3\.\d+)"', pyproject)
    assert floor, 'pyproject.toml must state requires-python = ">=3.N"'
    res = subprocess.run(
        [
            str(Path(sys.executable).with_name("vermin")),  # the venv's script: vermin has no __main__
            f"--target={floor[1]}-",
            "--violations",
            "--no-tips",
            "src",
            "bench",
            "tests",
        ],
        cwd=FOLDER,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stdout + res.stderr
