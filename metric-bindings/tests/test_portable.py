"""The default build is portable: the AVX-512 packed GEMM is chosen at run time, and everything is right with
it turned off (as on a CPU without AVX-512). Our own thread count follows its variable when it changes."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
from conftest import reference

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


def test_everything_is_right_with_the_avx512_path_turned_off(tmp_path):
    env = dict(os.environ, METRIC_BINDINGS_DISABLE_PACKED="1")
    r = subprocess.run(
        [sys.executable, "-c", WITHOUT_PACKED],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    rng = np.random.default_rng(0)
    a = rng.standard_normal((300, 64)).astype(np.float32)
    b = rng.standard_normal((2000, 64)).astype(np.float32)
    want = reference(a, b)
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), want, atol=2e-5, rtol=0)
    np.testing.assert_array_equal(
        np.load(tmp_path / "topk.npy"), np.argsort(-want, axis=1, kind="stable")[:, :5]
    )


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
