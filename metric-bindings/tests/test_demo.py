"""The demo CLI runs end to end on a small library and retrieves clips of the caption's topic."""

from __future__ import annotations

import subprocess
import sys


def test_demo_runs_small():
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "metric_bindings",
            "--clips",
            "2000",
            "--queries",
            "16",
            "--dim",
            "64",
            "--repeat",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert "top-5 precision" in r.stdout and "faster" in r.stdout
    precision = float(r.stdout.split("precision (retrieved clip has the caption's topic): ")[1].split("%")[0])
    assert precision > 90


def test_demo_help_and_bad_flags():
    r = subprocess.run([sys.executable, "-m", "metric_bindings", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "text-to-video" in r.stdout
    r = subprocess.run([sys.executable, "-m", "metric_bindings", "-k", "0"], capture_output=True, text=True)
    assert r.returncode == 2 and "must be >= 1" in r.stderr
