"""The C++ unit tests of the core (GoogleTest, tests/cpp/), built with CMake into build/cpp (kept between
runs, so only what changed is rebuilt) and run with ctest: once as built, once with the AVX-512 packed GEMM
turned off at run time (METRIC_BINDINGS_DISABLE_PACKED=1), so that both paths of the portable build are
tested."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import FOLDER, require_apt

pytestmark = pytest.mark.host

BUILD = FOLDER / "build" / "cpp"
APT_PACKAGES = ["g++", "cmake", "ninja-build", "libgtest-dev"]


def run(cmd: list[str], env: dict[str, str] | None = None, timeout: int = 1800) -> str:
    r = subprocess.run(cmd, cwd=FOLDER, capture_output=True, text=True, timeout=timeout, env=env)
    tail = f"{r.stdout[-6000:]}\n{r.stderr[-3000:]}"
    assert r.returncode == 0, f"{' '.join(cmd)} exited {r.returncode}:\n{tail}"
    return r.stdout


@pytest.fixture(scope="module")
def ctest() -> Path:
    """Configure and build the C++ tests (incremental); the ctest binary to run them with."""
    require_apt(*APT_PACKAGES)
    run(
        [
            "cmake", "-S", ".", "-B", str(BUILD), "-G", "Ninja",
            "-DMETRIC_BINDINGS_PYTHON=OFF", "-DMETRIC_BINDINGS_TESTS=ON",
            # Only to find scipy-openblas32, the BLAS the tests link (installed with the package).
            f"-DPython_EXECUTABLE={sys.executable}",
        ]
    )  # fmt: skip
    cache = (BUILD / "CMakeCache.txt").read_text()
    assert "METRIC_BINDINGS_NATIVE:BOOL=OFF" in cache, "the default build is not portable (-march=native)"
    run(["cmake", "--build", str(BUILD), "-j", str(min(os.cpu_count() or 1, 4))])
    binary = shutil.which("ctest")
    assert binary, "ctest not found next to cmake"
    return Path(binary)


@pytest.mark.parametrize("packed", ["as built", "packed GEMM disabled"])
def test_cpp_unit_tests(ctest: Path, packed: str):
    env = dict(os.environ)
    env.pop("METRIC_BINDINGS_DISABLE_PACKED", None)
    if packed == "packed GEMM disabled":
        env["METRIC_BINDINGS_DISABLE_PACKED"] = "1"
    out = run([str(ctest), "--test-dir", str(BUILD), "--output-on-failure", "-j", "2"], env=env)
    assert "100% tests passed" in out, out[-3000:]
