"""Bad input gives a Python exception naming the problem and the shapes, never a crash."""

from __future__ import annotations

import numpy as np
import pytest

import metric_bindings as mb

A = np.ones((3, 4), np.float32)


@pytest.mark.parametrize(
    "a,b,exc,words",
    [
        (np.ones(4), A, ValueError, ["2-D", "(4,)"]),
        (A, np.ones((2, 3, 4)), ValueError, ["2-D", "(2, 3, 4)"]),
        (A, np.ones((5, 6), np.float32), ValueError, ["(3, 4)", "(5, 6)", "D must match"]),
        (A.astype(np.complex64), A, TypeError, ["complex", "(3, 4)"]),
        (A, np.array([["a", "b", "c", "d"]]), TypeError, ["str"]),
        (np.array([[object(), 1]], dtype=object), A, TypeError, ["object"]),
        (A, [[1, 2], [3]], TypeError, ["cannot be read as an array"]),
    ],
)
def test_matrix_errors(a, b, exc, words):
    with pytest.raises(exc) as e:
        mb.cosine_similarity(a, b)
    for w in words:
        assert w in str(e.value), str(e.value)


def test_paired_errors():
    with pytest.raises(ValueError, match=r"\(3, 4\).*\(2, 4\).*same number of rows"):
        mb.paired_cosine_similarity(A, np.ones((2, 4), np.float32))
    with pytest.raises(ValueError, match="D must match"):
        mb.paired_cosine_similarity(A, np.ones((3, 5), np.float32))


@pytest.mark.parametrize("k", [0, -1, 6])
def test_topk_k_out_of_range(k):
    with pytest.raises(ValueError, match=r"k=-?\d+ is out of range.*\(5, 4\)"):
        mb.topk_cosine(A, np.ones((5, 4), np.float32), k)


def test_topk_k_type_and_budget():
    with pytest.raises(TypeError, match="k must be an int"):
        mb.topk_cosine(A, A, 1.5)
    for budget in (0, 1, mb.MIN_TOPK_BUDGET - 1):  # refused, with the minimum named
        with pytest.raises(ValueError, match=r"memory_budget=\d+ bytes is below the minimum of 65536 bytes"):
            mb.topk_cosine(A, A, 1, memory_budget=budget)
    with pytest.raises(ValueError, match="memory_budget must be >= 65536 bytes, got -1"):
        mb.topk_cosine(A, A, 1, memory_budget=-1)
    mb.topk_cosine(A, A, 1, memory_budget=mb.MIN_TOPK_BUDGET)


def test_out_errors():
    b = np.ones((2, 4), np.float32)
    with pytest.raises(ValueError, match=r"out has shape \(2, 3\).*\(3, 2\)"):
        mb.cosine_similarity(A, b, out=np.empty((2, 3), np.float32))
    with pytest.raises(TypeError, match="dtype float64"):
        mb.cosine_similarity(A, b, out=np.empty((3, 2)))
    with pytest.raises(ValueError, match="unit stride"):
        mb.cosine_similarity(A, b, out=np.empty((3, 4), np.float32)[:, ::2])
    ro = np.empty((3, 2), np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        mb.cosine_similarity(A, b, out=ro)
    with pytest.raises(ValueError, match="overlaps"):
        x = np.ones((3, 3), np.float32)
        mb.cosine_similarity(x, x, out=x)
    with pytest.raises(ValueError, match="strategy"):
        mb.cosine_similarity(A, b, strategy="fast")


def test_many_bad_calls_do_not_crash_the_interpreter():
    rng = np.random.default_rng(0)
    for _ in range(200):
        shape_a = tuple(rng.integers(0, 4, size=rng.integers(0, 4)))
        shape_b = tuple(rng.integers(0, 4, size=rng.integers(0, 4)))
        try:
            mb.cosine_similarity(np.ones(shape_a), np.ones(shape_b, np.float32))
            mb.topk_cosine(np.ones(shape_a), np.ones(shape_b), int(rng.integers(-1, 4)))
        except (ValueError, TypeError):
            pass


def test_import_leaves_the_environment_unchanged():
    """The OpenBLAS spin setting is applied to our private OpenBLAS only while it loads (see _api.py)."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
    code = "import os, metric_bindings; print(sorted(k for k in os.environ if k.startswith('OPENBLAS')))"
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(sorted(k for k in env if k.startswith("OPENBLAS")))


@pytest.mark.parametrize(
    "call,exc,message",
    [
        (lambda: mb.topk_cosine(A, np.ones((5, 4), np.float32), 6), ValueError,
         "topk_cosine: k=6 is out of range: B has shape (5, 4), so k must be in [1, 5]"),
        (lambda: mb.topk_cosine(A[:0], A, -1), ValueError,
         "topk_cosine: k=-1 is out of range: k must be >= 1"),
        (lambda: mb.cosine_similarity(A, A[:2], out=np.empty((2, 3), np.float32)), ValueError,
         "cosine_similarity: out has shape (2, 3) but the result has shape (3, 2)"),
        (lambda: mb.paired_cosine_similarity(A, A, out=np.empty(2, np.float32)), ValueError,
         "paired_cosine_similarity: out has shape (2,) but the result has shape (3,)"),
        (lambda: mb.cosine_similarity(A, np.ones((2, 5), np.float32)), ValueError,
         "cosine_similarity: A has shape (3, 4) and B has shape (2, 5): the number of columns D must match "
         "(4 != 5)"),
        (lambda: mb.paired_cosine_similarity(A, A[:2]), ValueError,
         "paired_cosine_similarity: A has shape (3, 4) and B has shape (2, 4): row-wise pairs need the same "
         "number of rows N (3 != 2)"),
    ],
)
def test_messages_are_whole_sentences(call, exc, message):
    """Each check has one owner (the C++ core, or the Python layer for what only numpy knows); the user sees
    one line naming the shapes."""
    with pytest.raises(exc) as e:
        call()
    assert str(e.value) == message
