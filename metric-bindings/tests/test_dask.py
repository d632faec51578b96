"""metric_bindings.dask on a distributed.LocalCluster of 2 worker processes against the single-machine calls,
including items larger than one worker's memory limit (read from .npy files block by block)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import missing, reference

import metric_bindings as mb

try:
    import dask
    import dask.array as da
    import distributed

    import metric_bindings.dask as mbd
except ImportError:
    dask = None

pytestmark = pytest.mark.dask

# A worker holding all the items of the large test would pass this and be killed by its nanny.
WORKER_MEMORY_LIMIT = 300_000_000


@pytest.fixture(scope="module")
def client():
    if dask is None:
        missing("Dask (the [dask] extra)", "make install, or pip install '.[dask]'")
    with (
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            memory_limit=WORKER_MEMORY_LIMIT,
            dashboard_address=":0",
            host="127.0.0.1",
        ) as cluster,
        distributed.Client(cluster) as c,
    ):
        c.wait_for_workers(2, timeout=120)
        yield c


def assert_same_topk(got, want, tol: float) -> None:
    """Equal to the single-machine top-k up to rounding: the same values, and the same indices except where
    two candidates' values are within rounding of each other (a tie may then go either way)."""
    (gv, gi), (wv, wi) = got, want
    assert gv.shape == wv.shape and gi.shape == wi.shape and gi.dtype == wi.dtype
    np.testing.assert_allclose(gv, wv, atol=tol, rtol=0)
    for row in range(wv.shape[0]):
        for j in np.flatnonzero(gi[row] != wi[row]):
            near = np.abs(wv[row] - wv[row, j]) <= 2 * tol
            assert near.sum() > 1 or abs(wv[row, j] - wv[row, -1]) <= 2 * tol, (
                f"query {row}, rank {j}: item {gi[row, j]}, the single-machine call item {wi[row, j]}"
            )


@pytest.mark.parametrize(
    ("dtype", "rows", "chunks", "k"),
    [
        ("float32", 5000, 700, 10),  # an uneven last block
        ("float32", 60, 3, 10),  # blocks smaller than k, a deep merge tree
        ("float64", 5000, (1000, 1000, 1000, 1000, 1000), 1000),
        ("float32", 5000, 5000, 5000),  # one block, k = M
    ],
)
def test_topk_matches_the_single_machine_call(client, dtype, rows, chunks, k):
    rng = np.random.default_rng(0)
    items = rng.standard_normal((rows, 48)).astype(dtype)
    tie, nan = rows - 2, rows // 2
    items[7] = items[tie]  # exact ties in different blocks: the smaller index first, as in one call
    items[5] = 0.0  # a zero row: cosine 0
    items[nan, 3] = np.nan  # NaN ranks first
    queries = rng.standard_normal((7, 48)).astype(dtype)
    queries[6] = items[tie]
    got = mbd.topk_cosine(queries, da.from_array(items, chunks=(chunks, 48)), k, split_every=3)
    want = mb.topk_cosine(queries, items, k)
    assert_same_topk(got, want, 2e-6 if dtype == "float32" else 1e-12)
    assert got[1][6, 0] == nan and got[1][6, 1:3].tolist() == [7, tie]


def test_items_larger_than_a_worker_memory_limit(client, tmp_path):
    # 400k x 256 float32 = 410 MB in 20 .npy files of 20 MB, against a memory limit of 300 MB per worker.
    rows, d, block = 400_000, 256, 20_000
    items = da.random.default_rng(1).standard_normal((rows, d), chunks=(block, d), dtype=np.float32)
    assert items.nbytes > WORKER_MEMORY_LIMIT
    da.to_npy_stack(tmp_path, items, axis=0)
    stored = da.from_npy_stack(tmp_path)  # each task reads its own file
    queries = np.random.default_rng(2).standard_normal((16, d)).astype(np.float32)
    got = mbd.topk_cosine(queries, stored, 50, memory_budget=8 << 20)
    whole = np.concatenate([np.load(tmp_path / f"{i}.npy") for i in range(rows // block)])
    assert_same_topk(got, mb.topk_cosine(queries, whole, 50), 2e-6)


def test_full_matrix_as_a_dask_array(client):
    rng = np.random.default_rng(3)
    items = rng.standard_normal((3000, 32)).astype(np.float32)
    queries = rng.standard_normal((9, 32)).astype(np.float32)
    lazy = mbd.cosine_similarity(queries, da.from_array(items, chunks=(800, 16)))
    assert isinstance(lazy, da.Array) and lazy.shape == (9, 3000) and lazy.dtype == np.float32
    assert lazy.chunks == ((9,), (800, 800, 800, 600))
    np.testing.assert_allclose(lazy.compute(), reference(queries, items), atol=2e-5, rtol=0)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda q, x: mbd.topk_cosine(q, x, 0), r"k must be in \[1, M\] = \[1, 100\], got 0"),
        (lambda q, x: mbd.topk_cosine(q, x, 101), r"k must be in \[1, M\] = \[1, 100\], got 101"),
        (lambda q, x: mbd.topk_cosine(q[:, :3], x, 1), r"the number of columns D must match \(3 != 8\)"),
        (lambda q, x: mbd.topk_cosine(q[0], x, 1), r"queries must be 2-D"),
        (lambda q, x: mbd.cosine_similarity(q, x[:, 0]), r"items must be 2-D"),
        (lambda q, x: mbd.topk_cosine(q, x, 1, split_every=1), r"split_every must be >= 2"),
    ],
)
def test_bad_arguments_give_one_line_errors(call, message):
    if dask is None:
        missing("Dask (the [dask] extra)", "make install, or pip install '.[dask]'")
    q = np.ones((2, 8), np.float32)
    x = da.ones((100, 8), chunks=(30, 8), dtype=np.float32)
    with pytest.raises(ValueError, match=message):
        call(q, x)
