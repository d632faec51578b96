"""Property tests against the float64 numpy reference: random shapes (1, odd, empty), memory layouts (C, F,
transposed, sliced, reversed, broadcast), dtypes; symmetry, scale invariance, bounds."""

from __future__ import annotations

import os

import numpy as np
import pytest
from conftest import reference, tolerance
from hypothesis import assume, given
from hypothesis import strategies as st

import metric_bindings as mb
from metric_bindings import _core

LAYOUTS = ["C", "F", "transposed", "sliced", "reversed", "padded", "broadcast"]
DTYPES = [np.float32, np.float64, np.int32, np.float16, np.int64, np.uint8]


def make(rng: np.random.Generator, n: int, d: int, layout: str, dtype: type, zero_row: bool) -> np.ndarray:
    """An (n, d) array of small decimal values (no underflow) with the given memory layout."""
    base = (rng.integers(-1000, 1001, size=(n, d)) / 100.0).astype(np.float64)
    if dtype in (np.uint8,):
        base = np.abs(base)
    if zero_row and n:
        base[rng.integers(n)] = 0
    base = base.astype(dtype)
    if layout == "C":
        return np.ascontiguousarray(base)
    if layout == "F":
        return np.asfortranarray(base)
    if layout == "transposed":
        return np.ascontiguousarray(base.T).T
    if layout == "sliced":
        big = np.zeros((2 * n + 1, 3 * d + 2), dtype=dtype)
        big[1::2, 2 : 3 * d + 2 : 3] = base
        return big[1::2, 2 : 3 * d + 2 : 3]
    if layout == "reversed":
        return np.ascontiguousarray(base[::-1, ::-1])[::-1, ::-1]
    if layout == "padded":
        big = np.zeros((n, d + 5), dtype=dtype)
        big[:, :d] = base
        return big[:, :d]
    if layout == "broadcast":
        return np.broadcast_to(base[:1] if n else base, (n, d))
    raise AssertionError(layout)


sizes = st.sampled_from([0, 1, 2, 3, 5, 7, 16, 31, 64, 97])
dims = st.sampled_from([1, 2, 3, 7, 8, 33, 64, 129])


@given(
    n=sizes,
    m=sizes,
    d=dims,
    la=st.sampled_from(LAYOUTS),
    lb=st.sampled_from(LAYOUTS),
    da=st.sampled_from(DTYPES),
    db=st.sampled_from(DTYPES),
    zero=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
    strategy=st.sampled_from(["auto", "normalize", "scale", "fused", "packed"]),
)
def test_matrix_matches_reference(n, m, d, la, lb, da, db, zero, seed, strategy):
    rng = np.random.default_rng(seed)
    a, b = make(rng, n, d, la, da, zero), make(rng, m, d, lb, db, False)
    got = mb.cosine_similarity(a, b, strategy=strategy)
    expected_dtype = np.float64 if np.float64 in (da, db) else np.float32  # ints, float16 -> float32
    assert got.dtype == expected_dtype and got.shape == (n, m)
    assert isinstance(got, np.ndarray) and got.flags.c_contiguous and got.flags.writeable
    np.testing.assert_allclose(
        got, reference(a.astype(got.dtype), b.astype(got.dtype)), atol=tolerance(got.dtype)
    )


@given(
    n=sizes,
    d=dims,
    la=st.sampled_from(LAYOUTS),
    lb=st.sampled_from(LAYOUTS),
    dt=st.sampled_from([np.float32, np.float64]),
    seed=st.integers(0, 2**32 - 1),
)
def test_paired_matches_reference(n, d, la, lb, dt, seed):
    rng = np.random.default_rng(seed)
    a, b = make(rng, n, d, la, dt, True), make(rng, n, d, lb, dt, False)
    got = mb.paired_cosine_similarity(a, b)
    assert got.shape == (n,) and got.dtype == dt
    np.testing.assert_allclose(got, np.diagonal(reference(a, b)), atol=tolerance(dt))


@given(
    n=st.sampled_from([1, 2, 5, 17]),
    m=st.sampled_from([1, 3, 8, 50, 301]),
    d=dims,
    la=st.sampled_from(LAYOUTS),
    lb=st.sampled_from(LAYOUTS),
    dt=st.sampled_from([np.float32, np.float64]),
    budget=st.sampled_from([mb.MIN_TOPK_BUDGET, 1 << 18, mb.DEFAULT_TOPK_BUDGET]),
    data=st.data(),
)
def test_topk_matches_sorted_reference(n, m, d, la, lb, dt, budget, data):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    # continuous values: ties (ordered by index) are unlikely to straddle float rounding
    a = make(rng, n, d, la, dt, False) + rng.standard_normal((n, d)).astype(dt)
    b = make(rng, m, d, lb, dt, False) + rng.standard_normal((m, d)).astype(dt)
    k = data.draw(st.integers(1, m))
    vals, idx = mb.topk_cosine(a, b, k, memory_budget=budget)
    full = reference(a, b)
    assert vals.shape == idx.shape == (n, k) and idx.dtype == np.int64 and vals.dtype == dt
    np.testing.assert_allclose(vals, np.sort(full, axis=1)[:, ::-1][:, :k], atol=tolerance(dt))
    np.testing.assert_allclose(np.take_along_axis(full, idx, axis=1), vals, atol=tolerance(dt))
    assert all(len(set(row)) == k for row in idx.tolist())


@given(n=sizes, m=sizes, d=dims, seed=st.integers(0, 2**32 - 1), dt=st.sampled_from([np.float32, np.float64]))
def test_symmetry_and_bounds(n, m, d, seed, dt):
    rng = np.random.default_rng(seed)
    a, b = make(rng, n, d, "C", dt, True), make(rng, m, d, "F", dt, True)
    ab, ba = mb.cosine_similarity(a, b), mb.cosine_similarity(b, a)
    np.testing.assert_allclose(ab, ba.T, atol=tolerance(dt))
    eps = 8 * np.finfo(dt).eps
    assert np.all(ab <= 1 + eps) and np.all(ab >= -1 - eps)


@given(
    n=st.sampled_from([1, 3, 16]),
    m=st.sampled_from([1, 5, 40]),
    d=dims,
    seed=st.integers(0, 2**32 - 1),
    sa=st.sampled_from([1e-3, 0.5, 7.0, 1e3]),
    sb=st.sampled_from([1e-2, 3.0, 1e4]),
)
def test_scale_invariance(n, m, d, seed, sa, sb):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((n, d))
    b = rng.standard_normal((m, d))
    assume(np.all(np.linalg.norm(a, axis=1) > 1e-3) and np.all(np.linalg.norm(b, axis=1) > 1e-3))
    np.testing.assert_allclose(mb.cosine_similarity(sa * a, sb * b), mb.cosine_similarity(a, b), atol=1e-12)
    np.testing.assert_allclose(mb.paired_cosine_similarity(sa * a, sa * a), np.ones(n), atol=1e-12)


def test_transposed_and_fortran_inputs_need_no_copy():
    x = np.ones((30, 8), dtype=np.float32)
    assert _core.blas_compatible(x)
    assert _core.blas_compatible(np.ascontiguousarray(x.T).T)  # a transposed C array is column-major for BLAS
    assert _core.blas_compatible(np.asfortranarray(x))
    assert _core.blas_compatible(np.zeros((30, 20), np.float32)[:, 3:11])  # padded rows: a leading dimension
    assert not _core.blas_compatible(x[:, ::2])
    assert not _core.blas_compatible(x[::-1])


def test_zero_rows_give_zero_and_nan_propagates():
    a = np.array([[0.0, 0.0], [1.0, np.nan], [3.0, 4.0]], dtype=np.float32)
    b = np.array([[1.0, 0.0], [0.0, 0.0]], dtype=np.float32)
    for strategy in ("normalize", "scale", "fused", "packed"):
        got = mb.cosine_similarity(a, b, strategy=strategy)
        assert got[0, 0] == 0 and got[0, 1] == 0
        assert np.isnan(got[1]).all()
        assert got[2, 0] == pytest.approx(0.6) and got[2, 1] == 0
    p = mb.paired_cosine_similarity(a[:2], b)
    assert p[0] == 0 and np.isnan(p[1])


@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_out_buffer_is_filled_and_returned(dt):
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((6, 9)).astype(dt), rng.standard_normal((4, 9)).astype(dt)
    out = np.full((6, 4), -5, dtype=dt)
    res = mb.cosine_similarity(a, b, out=out)
    assert res is out
    np.testing.assert_allclose(out, reference(a, b), atol=tolerance(dt))
    padded = np.zeros((6, 10), dtype=dt)
    mb.cosine_similarity(a, b, out=padded[:, :4])  # rows padded: written through the leading dimension
    np.testing.assert_allclose(padded[:, :4], reference(a, b), atol=tolerance(dt))
    assert not padded[:, 4:].any()
    pout = np.zeros(4, dtype=dt)
    assert mb.paired_cosine_similarity(a[:4], b, out=pout) is pout
    np.testing.assert_allclose(pout, np.diagonal(reference(a[:4], b)), atol=tolerance(dt))


def test_dtype_rules():
    i = np.arange(12, dtype=np.int64).reshape(3, 4)
    f32 = np.ones((2, 4), np.float32)
    assert mb.cosine_similarity(i, f32).dtype == np.float32
    assert mb.cosine_similarity(i, f32.astype(np.float64)).dtype == np.float64
    assert mb.cosine_similarity(i.astype(np.float16), i.astype(bool)).dtype == np.float32
    assert mb.cosine_similarity([[1, 2]], [[2, 4]]).tolist() == [[pytest.approx(1.0)]]


@pytest.mark.parametrize("shape_a,shape_b", [((0, 5), (3, 5)), ((3, 5), (0, 5)), ((0, 5), (0, 5))])
def test_empty_inputs_give_empty_results(shape_a, shape_b):
    a, b = np.ones(shape_a, np.float32), np.ones(shape_b, np.float32)
    assert mb.cosine_similarity(a, b).shape == (shape_a[0], shape_b[0])
    vals, idx = mb.topk_cosine(a, b, 1)
    assert vals.shape[0] == shape_a[0] and vals.size == 0 and idx.size == 0
    if shape_a[0] == shape_b[0]:
        assert mb.paired_cosine_similarity(a, b).shape == (0,)


def test_blas_info_and_strategy_choice():
    assert "openblas" in mb.blas_info().lower() or "blas" in mb.blas_info().lower()
    assert mb.choose_strategy(1, 100000, 512) == "fused"
    # many rows against 8-64: the packed GEMM's few-columns kernel where it runs
    assert mb.choose_strategy(100000, 16, 768) == ("packed" if mb.packed_gemm_available() else "fused")
    assert mb.choose_strategy(100000, 4, 768) == "fused"
    # float64 never takes the float32-only packed GEMM
    assert mb.choose_strategy(4096, 4096, 512, np.float64) == "normalize"
    assert mb.choose_strategy(256, 100000, 512, np.float64) == "scale"
    # float32: the packed GEMM for large work when this build has it; CBLAS below 2^29 multiply-adds and when
    # A is the huge side
    big = "packed" if mb.packed_gemm_available() else None
    assert mb.choose_strategy(4096, 4096, 512) == (big or "normalize")
    assert mb.choose_strategy(256, 100000, 512) == (big or "scale")
    assert mb.choose_strategy(300, 300, 300) == "scale"
    assert mb.choose_strategy(100000, 256, 768) == "scale"


def test_packed_gemm_runs_where_the_cpu_has_avx512():
    """GCC builds carry the packed GEMM whatever -march says and use it where the CPU has AVX-512 (else Auto
    would silently lose its fast path)."""
    flags = set(open("/proc/cpuinfo").read().split()) if os.path.exists("/proc/cpuinfo") else set()
    if {"avx512f", "avx512dq", "avx512bw", "avx512vl"} <= flags and not os.environ.get(
        "METRIC_BINDINGS_DISABLE_PACKED"
    ):
        assert mb.packed_gemm_available()
    if not mb.packed_gemm_available():
        assert mb.choose_strategy(256, 100000, 512) == "scale"


@pytest.mark.parametrize(
    "n,m,d,layout",
    [
        (37, 1001, 1030, "C"),  # rows not a multiple of 8, columns not of 32, two depth blocks
        (8, 32, 2100, "C"),  # exact panels, three depth blocks
        (130, 40_000, 40, "C"),  # 20 MB output: streaming stores
        (61, 3000, 17, "padded_out"),  # out= with padded rows: no streaming stores, masked edges
        (50, 700, 96, "F"),  # Fortran-ordered inputs are copied to rows first
    ],
)
def test_packed_gemm_matches_reference(n, m, d, layout, packed_gemm):
    rng = np.random.default_rng(n * m + d)
    a = rng.standard_normal((n, d), dtype=np.float32)
    b = rng.standard_normal((m, d), dtype=np.float32)
    a[n // 2] = 0  # zero row -> 0
    b[m - 1] = 0
    ref = reference(a, b)
    b[m // 3, 5 % d] = np.nan  # NaN propagates down its column
    ref[:, m // 3] = np.nan
    if layout == "F":
        a, b = np.asfortranarray(a), np.asfortranarray(b)
    if layout == "padded_out":
        buf = np.full((n, m + 3), 7.0, np.float32)
        got = mb.cosine_similarity(a, b, out=buf[:, :m], strategy="packed")
        assert (buf[:, m:] == 7.0).all()  # the padding is never written
    else:
        got = mb.cosine_similarity(a, b, strategy="packed")
    np.testing.assert_allclose(got, ref, atol=tolerance(np.float32))  # NaN where ref has NaN, nowhere else
    zero_row = np.delete(got[n // 2], m // 3)  # (0 x NaN is NaN: the NaN column stays NaN)
    assert (zero_row == 0).all() and (got[:, m - 1] == 0).all()


@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_threaded_paths_match_reference(dt):
    """Sizes above the per-thread grain, so that norms, scaling, the fused kernel, row-wise and top-k all run
    on several threads (the hypothesis shapes above are too small to)."""
    rng = np.random.default_rng(7)
    a = rng.standard_normal((4, 16)).astype(dt)
    b = rng.standard_normal((200_000, 16)).astype(dt)
    ref = reference(a, b)
    np.testing.assert_allclose(mb.cosine_similarity(a, b), ref, atol=tolerance(dt))  # fused, B is big
    np.testing.assert_allclose(mb.cosine_similarity(b, a), ref.T, atol=tolerance(dt))  # fused, A is big
    vals, idx = mb.topk_cosine(a, b, 7)
    np.testing.assert_allclose(vals, np.sort(ref, axis=1)[:, ::-1][:, :7], atol=tolerance(dt))
    c = rng.standard_normal((300, 64)).astype(dt)
    e = np.asfortranarray(rng.standard_normal((9000, 64)).astype(dt))
    ref2 = reference(c, e)
    for strategy in ("scale", "normalize", "packed"):
        np.testing.assert_allclose(mb.cosine_similarity(c, e, strategy=strategy), ref2, atol=tolerance(dt))
    v2, i2 = mb.topk_cosine(c, e, 3, memory_budget=1 << 20)
    np.testing.assert_allclose(v2, np.take_along_axis(ref2, i2, axis=1), atol=tolerance(dt))
    x, y = rng.standard_normal((2, 50_000, 32)).astype(dt)
    unit_x = x / np.linalg.norm(x, axis=1, keepdims=True)
    unit_y = y / np.linalg.norm(y, axis=1, keepdims=True)
    np.testing.assert_allclose(
        mb.paired_cosine_similarity(x, y), np.einsum("ij,ij->i", unit_x, unit_y), atol=tolerance(dt)
    )
    np.testing.assert_allclose(mb.paired_cosine_similarity(np.asfortranarray(x), y),
                               mb.paired_cosine_similarity(x, y), atol=tolerance(dt))


def test_concurrent_callers_get_their_own_results(packed_gemm):
    """The GIL is released while computing: callers in several Python threads share the packed GEMM's scratch
    pool and the strategies' per-thread buffers, and each must still get exactly its own result."""
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(11)
    cases = [
        (rng.standard_normal((n, d), dtype=np.float32), rng.standard_normal((m, d), dtype=np.float32), s)
        for (n, m, d), s in zip(
            [(40, 3000, 200), (64, 2048, 96), (9, 5000, 1100), (300, 700, 64)] * 2,
            ["packed", "packed", "packed", "normalize", "scale", "packed", "auto", "packed"],
            strict=True,
        )
    ]
    expected = [reference(a, b) for a, b, _ in cases]
    with ThreadPoolExecutor(max_workers=4) as pool:
        for _ in range(3):
            results = list(pool.map(lambda c: mb.cosine_similarity(c[0], c[1], strategy=c[2]), cases))
            for got, ref in zip(results, expected, strict=True):
                np.testing.assert_allclose(got, ref, atol=tolerance(np.float32))


@pytest.mark.parametrize("budget", [mb.DEFAULT_TOPK_BUDGET, 16 << 20])
def test_topk_on_the_packed_gemm_matches_the_full_matrix(budget, packed_gemm):
    """float32 top-k large enough for the packed GEMM (>= 2^29 multiply-adds): each B tile's cosines come
    from it and the selection runs on several threads; 16 MiB forces many B tiles and several A tiles."""
    rng = np.random.default_rng(5)
    a = rng.standard_normal((70, 20_000), dtype=np.float32)[:, :512]  # rows with a leading dimension
    b = rng.standard_normal((20_000, 512), dtype=np.float32)
    b[123] = 0  # a zero row scores 0 everywhere
    full = reference(a, b)
    vals, idx = mb.topk_cosine(a, b, 7, memory_budget=budget)
    order = np.argsort(-full, axis=1, kind="stable")[:, :7]
    np.testing.assert_array_equal(idx, order)
    np.testing.assert_allclose(vals, np.take_along_axis(full, order, 1), atol=tolerance(np.float32))


@pytest.mark.parametrize("dt", [np.float32, np.float64])
@pytest.mark.parametrize(
    "n,m,d,budget",
    [
        (40, 20_000, 700, mb.DEFAULT_TOPK_BUDGET),  # float32 on AVX-512: selected inside the packed GEMM
        (33, 16_000, 1100, mb.DEFAULT_TOPK_BUDGET),  # two depth blocks: per-worker partial sums
        (300, 6000, 512, 16 << 20),  # k = 1000 there: the budget cuts A into tiles of rows
        (5, 30_000, 64, mb.DEFAULT_TOPK_BUDGET),  # few queries: fused scorer, tiles then heaps
    ],
)
@pytest.mark.parametrize("workers", ["all", "1"])
def test_topk_every_k_with_nan_rows_zero_rows_and_ties(n, m, d, budget, dt, workers, monkeypatch):
    """k = 1, 10, 1000 and M on shapes that take each top-k path (float64 and a CPU without AVX-512: CBLAS
    tiles): exact against the float64 reference up to rounding, a NaN row of A all NaN (ties by index), a
    NaN row of B first everywhere, a zero row of B at 0, repeated rows of B (equal values: smaller index
    first). On one worker too: its bar is then the row's own k-th best. Where the packed GEMM selects, the
    order must equal its own full matrix's (the same float32 values) exactly."""
    if workers == "1":
        monkeypatch.setenv("METRIC_BINDINGS_NUM_THREADS", "1")
    rng = np.random.default_rng(n + m + d)
    a = rng.standard_normal((n, d)).astype(dt)
    b = rng.standard_normal((m, d)).astype(dt)
    b[78] = 0
    for t in (100, 2500, 4900):
        b[t + 1000] = b[t]
    ref = reference(a, b)
    a[3] = np.nan
    b[77, 5] = np.nan
    ref[3], ref[:, 77] = np.nan, np.nan
    rest = np.delete(np.arange(n), 3)
    same_kernel = None
    if dt == np.float32 and n > 8 and mb.choose_strategy(n, m, d) == "packed":
        full = mb.cosine_similarity(a, b, strategy="packed")
        order_key = -np.nan_to_num(full, nan=np.inf)  # NaN first, then larger values, then smaller indices
        same_kernel = np.lexsort((np.broadcast_to(np.arange(m), full.shape), order_key))
    for k in (1, 10, 1000, m):
        vals, idx = mb.topk_cosine(a, b, k, memory_budget=budget)
        assert vals.shape == idx.shape == (n, k) and vals.dtype == dt
        assert np.isnan(vals[3]).all() and (idx[3] == np.arange(k)).all()  # all NaN: ties by index
        assert (idx[rest, 0] == 77).all() and np.isnan(vals[rest, 0]).all()  # the NaN column first
        got, pos, r = vals[rest, 1:], idx[rest, 1:], ref[rest]
        expected = np.sort(np.delete(r, 77, axis=1), axis=1)[:, ::-1][:, : k - 1]
        np.testing.assert_allclose(got, expected, atol=tolerance(dt))
        np.testing.assert_allclose(np.take_along_axis(r, pos, 1), got, atol=tolerance(dt))
        assert all(len(set(row)) == k for row in idx.tolist())
        tied = got[:, 1:] == got[:, :-1]
        assert (pos[:, 1:][tied] > pos[:, :-1][tied]).all()  # equal values: the smaller index first
        if same_kernel is not None:
            np.testing.assert_array_equal(idx, same_kernel[:, :k])
        if k == m:  # every row of B, the zero row at 0
            np.testing.assert_allclose(np.take_along_axis(vals[rest], np.argsort(idx[rest], 1), 1)[:, 78], 0)
