"""The default build is portable: the AVX-512 packed GEMM is chosen at run time, and everything is right with
it turned off (as on a CPU without AVX-512). Our own thread count follows its variable when it changes."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import numpy as np
import pytest
from conftest import reference, require_apt

import metric_bindings as mb

WITHOUT_PACKED = """
import numpy as np, metric_bindings as mb
assert not mb.packed_gemm_available()
assert mb.choose_strategy(256, 100_000, 512) != "packed"
rng = np.random.default_rng(0)
a = rng.standard_normal((300, 64)).astype(np.float32)
b = rng.standard_normal((2000, 64)).astype(np.float32)
np.save("out.npy", mb.cosine_similarity(a, b, strategy="packed"))  # runs the CBLAS fallback
v, i = mb.topk_cosine(a, b, 5)
np.save("topk.npy", i)
"""


def check_without_packed(tmp_path, prefix: list[str], env: dict[str, str]) -> None:
    """Runs WITHOUT_PACKED (prefix: e.g. an emulator) and checks its results against the float64 reference."""
    r = subprocess.run(
        [*prefix, sys.executable, "-c", WITHOUT_PACKED],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert r.returncode == 0, f"exit {r.returncode} (-4: an illegal instruction): {r.stderr[-3000:]}"
    rng = np.random.default_rng(0)
    a = rng.standard_normal((300, 64)).astype(np.float32)
    b = rng.standard_normal((2000, 64)).astype(np.float32)
    want = reference(a, b)
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), want, atol=2e-5, rtol=0)
    best = np.argsort(-want, axis=1, kind="stable")[:, :5]
    np.testing.assert_array_equal(np.load(tmp_path / "topk.npy"), best)


def test_everything_is_right_with_the_avx512_path_turned_off(tmp_path):
    check_without_packed(tmp_path, [], dict(os.environ, METRIC_BINDINGS_DISABLE_PACKED="1"))


@pytest.mark.host
def test_the_build_runs_on_a_cpu_without_avx512(tmp_path):
    """The installed build on an emulated Haswell (AVX2, no AVX-512): a build tuned for this CPU would stop
    with an illegal instruction; the portable one runs, without the packed GEMM, and gets the same results."""
    if platform.machine() != "x86_64":
        pytest.skip("x86-64 only: the AVX-512 path exists only there")
    require_apt("qemu-user")
    env = {k: v for k, v in os.environ.items() if k != "METRIC_BINDINGS_DISABLE_PACKED"}
    check_without_packed(tmp_path, ["qemu-x86_64", "-cpu", "Haswell"], env)


def test_thread_count_follows_the_variable_when_it_changes(monkeypatch):
    monkeypatch.setenv("METRIC_BINDINGS_NUM_THREADS", "3")
    assert mb.num_threads() == 3
    monkeypatch.setenv("METRIC_BINDINGS_NUM_THREADS", "1")
    assert mb.num_threads() == 1
    a = np.random.default_rng(1).standard_normal((3, 24)).astype(np.float32)
    b = np.random.default_rng(2).standard_normal((120_000, 24)).astype(np.float32)
    np.testing.assert_allclose(mb.cosine_similarity(a, b), reference(a, b), atol=2e-5, rtol=0)
    monkeypatch.delenv("METRIC_BINDINGS_NUM_THREADS")
    assert mb.num_threads() == os.cpu_count()
