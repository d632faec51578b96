"""Shared helpers: the float64 numpy reference every test compares against, and how a missing prerequisite
is reported."""

from __future__ import annotations

import os
import subprocess
import warnings
from pathlib import Path
from typing import NoReturn

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

import metric_bindings as mb

# CI is slower and shared: fewer examples there, no deadline (timings are never asserted).
settings.register_profile("ci", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile(
    "dev", max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


FOLDER = Path(__file__).resolve().parent.parent


def missing(what: str, install: str = "make install") -> NoReturn:
    """A prerequisite is missing: one line naming it and the command that installs it. A skip on a
    developer's machine, a failure under CI=true (where a skip would hide a suite that never ran)."""
    line = f"{what} is missing (install it with: {install})"
    if os.environ.get("CI") == "true":
        pytest.fail(line, pytrace=False)
    pytest.skip(line)


def require_apt(*packages: str) -> None:
    """The Debian packages a test uses, probed as scripts/apt-deps.sh (their one owner) probes them."""
    check = subprocess.run(
        [str(FOLDER / "scripts" / "apt-deps.sh"), "--check", *packages], capture_output=True, text=True
    )
    if check.returncode != 0:
        missing(check.stderr.strip().removeprefix("metric-bindings: missing "), "make install")


def reference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """cos(a_i, b_j) in float64, zero rows giving 0 (scikit-learn's convention)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    na = np.linalg.norm(a, axis=1, keepdims=True)
    nb = np.linalg.norm(b, axis=1, keepdims=True)
    an = np.divide(a, na, out=np.zeros_like(a), where=na > 0)
    bn = np.divide(b, nb, out=np.zeros_like(b), where=nb > 0)
    return an @ bn.T


def tolerance(dtype: np.dtype) -> float:
    return 2e-5 if np.dtype(dtype) == np.float32 else 1e-12


FALLBACK = (
    "the packed GEMM is not available here (no AVX-512 in this CPU or build, or "
    "METRIC_BINDINGS_DISABLE_PACKED set): strategy 'packed' ran its CBLAS fallback 'scale'"
)


class PackedFallbackWarning(UserWarning):
    """A test of the packed GEMM ran the fallback instead (shown in the warnings summary)."""


@pytest.fixture
def packed_gemm() -> bool:
    """For tests of the packed GEMM: True when it runs here; otherwise the test runs the fallback and says
    so."""
    if mb.packed_gemm_available():
        return True
    warnings.warn(FALLBACK, PackedFallbackWarning, stacklevel=2)
    return False


def pytest_terminal_summary(terminalreporter) -> None:
    ran = FALLBACK
    if mb.packed_gemm_available():
        ran = "tests with strategy 'packed' ran the packed GEMM (AVX-512)"
    terminalreporter.write_line(f"metric_bindings: {ran}")
