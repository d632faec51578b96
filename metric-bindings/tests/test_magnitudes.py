"""Rows of any finite magnitude: each row scaled by 2^e, e drawn across the dtype's whole exponent range
(from rows of subnormals to rows next to the dtype's max), rows of every scale mixed in one matrix. Every
function and every strategy must match a float64 reference computed on rows rescaled by a power of two; only
rows holding inf or NaN give NaN, zero rows give 0."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import reference, tolerance
from hypothesis import given
from hypothesis import strategies as st

import metric_bindings as mb

STRATEGIES = ["auto", "normalize", "scale", "fused", "packed"]


def exponent_range(dtype: type) -> tuple[int, int]:
    """Powers of two e for which 2^e * (values in [-1, 1]) stays finite, down to the smallest subnormal."""
    info = np.finfo(dtype)
    return int(info.minexp) - int(info.nmant), int(info.maxexp) - 1


def any_scale(rng: np.random.Generator, exps: list[int], d: int, dtype: type, specials: bool) -> np.ndarray:
    """One row per exponent: uniform values in [-1, 1] times 2^e; with specials, a zero row and a row holding
    inf (the only rows allowed to give 0 and NaN)."""
    base = rng.uniform(-1.0, 1.0, size=(len(exps), d))
    rows = np.ldexp(base, np.asarray(exps, dtype=np.int64)[:, None]).astype(dtype)
    if specials and len(exps) >= 3:
        rows[1] = 0
        rows[2, d // 2] = np.inf
    return rows


def rescaled(x: np.ndarray) -> np.ndarray:
    """x in float64 with each row's largest magnitude brought into [0.5, 1) by a power of two (exact)."""
    x = x.astype(np.float64)
    with np.errstate(invalid="ignore"):
        top = np.max(np.abs(x), axis=1, keepdims=True) if x.shape[1] else np.zeros((x.shape[0], 1))
    _, e = np.frexp(np.where(np.isfinite(top), top, 1.0))
    return np.ldexp(x, -e)


def rescaled_reference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", over="ignore"):  # rows holding inf: NaN, as expected
        return reference(rescaled(a), rescaled(b))


def exponents(dtype: type, count: int) -> st.SearchStrategy[list[int]]:
    lo, hi = exponent_range(dtype)
    # Half the draws at the extremes, where overflow and underflow happen; the rest anywhere.
    e = st.one_of(st.integers(lo, hi), st.integers(lo, lo + 30), st.integers(hi - 30, hi))
    return st.lists(e, min_size=count, max_size=count)


@st.composite
def cases(draw: st.DrawFn, n_sizes: list[int], m_sizes: list[int]) -> tuple[np.ndarray, np.ndarray]:
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    n, m = draw(st.sampled_from(n_sizes)), draw(st.sampled_from(m_sizes))
    d = draw(st.sampled_from([1, 3, 16, 33, 130]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    specials = draw(st.booleans())
    a = any_scale(rng, draw(exponents(dtype, n)), d, dtype, specials)
    b = any_scale(rng, draw(exponents(dtype, m)), d, dtype, False)
    if draw(st.booleans()):
        a, b = np.asfortranarray(a), np.asfortranarray(b)
    return a, b


@given(ab=cases([1, 5, 9, 40], [1, 7, 33, 70]), strategy=st.sampled_from(STRATEGIES))
def test_matrix_any_magnitude(ab, strategy):
    a, b = ab
    got = mb.cosine_similarity(a, b, strategy=strategy)
    np.testing.assert_allclose(got, rescaled_reference(a, b), atol=tolerance(a.dtype), rtol=0)


@given(ab=cases([1, 9, 40], [40]))
def test_paired_any_magnitude(ab):
    a, b = ab
    b = b[: a.shape[0]]
    got = mb.paired_cosine_similarity(a, b)
    np.testing.assert_allclose(got, np.diagonal(rescaled_reference(a, b)), atol=tolerance(a.dtype), rtol=0)


@given(ab=cases([1, 4, 8, 9, 40], [7, 33, 70]), data=st.data())
def test_topk_any_magnitude(ab, data):
    """<= 8 queries: the fused scorer; more: the CBLAS scorer (the packed one needs large work, below)."""
    a, b = ab
    a = np.where(np.isinf(a), 0, a).astype(a.dtype)  # a NaN score ties with no other: keep rankings checkable
    k = data.draw(st.integers(1, b.shape[0]))
    budget = data.draw(st.sampled_from([mb.MIN_TOPK_BUDGET, mb.DEFAULT_TOPK_BUDGET]))
    vals, idx = mb.topk_cosine(a, b, k, memory_budget=budget)
    full = rescaled_reference(a, b)
    tol = tolerance(a.dtype)
    np.testing.assert_allclose(vals, np.sort(full, axis=1)[:, ::-1][:, :k], atol=tol, rtol=0)
    np.testing.assert_allclose(np.take_along_axis(full, idx, axis=1), vals, atol=2 * tol, rtol=0)


def test_topk_on_the_packed_gemm_any_magnitude(packed_gemm):
    """float32 work above 2^29 multiply-adds: top-k scores its tiles with the packed GEMM where the CPU has
    AVX-512 (elsewhere with CBLAS; the result must be the same)."""
    rng = np.random.default_rng(3)
    lo, hi = exponent_range(np.float32)
    n, m, d = 16, 33_000, 1024
    a = any_scale(rng, rng.integers(lo, hi + 1, n).tolist(), d, np.float32, False)
    b = any_scale(rng, rng.integers(lo, hi + 1, m).tolist(), d, np.float32, False)
    b[::5] = rescaled(b[::5]) * np.float32(2.0**hi)  # every fifth row next to float32's max
    full = rescaled_reference(a, b)
    vals, idx = mb.topk_cosine(a, b, 5)
    np.testing.assert_allclose(vals, np.sort(full, axis=1)[:, ::-1][:, :5], atol=2e-5, rtol=0)
    np.testing.assert_allclose(np.take_along_axis(full, idx, axis=1), vals, atol=4e-5, rtol=0)


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("n, m", [(6, 50), (40, 16)], ids=["few-against-many", "many-against-few"])
def test_the_reported_cases(strategy, n, m):
    """Rows scaled by 1e30 and 1e-30 in float32 (squared norms overflow or underflow float32): cosine does not
    depend on scale. One side scaled and the other not shows that each kernel checks its own rows (for
    "packed", (40, 16) runs the few-columns kernel)."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, 64)).astype(np.float32)
    b = rng.standard_normal((m, 64)).astype(np.float32)
    expected = reference(a, b)
    pairs = min(n, m)
    for sa, sb in [(1e30, 1.0), (1e-30, 1.0), (1.0, 1e30), (1.0, 1e-30), (1e30, 1e-30), (1e-30, 1e-30),
                   (1e30, 1e30)]:
        got = mb.cosine_similarity(a * np.float32(sa), b * np.float32(sb), strategy=strategy)
        np.testing.assert_allclose(got, expected, atol=2e-5, rtol=0)
        np.testing.assert_allclose(
            mb.paired_cosine_similarity(a[:pairs] * np.float32(sa), b[:pairs] * np.float32(sb)),
            np.diagonal(expected),
            atol=2e-5,
            rtol=0,
        )
        vals, _ = mb.topk_cosine(a * np.float32(sa), b * np.float32(sb), 3)
        np.testing.assert_allclose(vals, np.sort(expected, axis=1)[:, ::-1][:, :3], atol=2e-5, rtol=0)
