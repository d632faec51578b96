"""Cosine similarity over items that do not fit one machine: a ``dask.array`` chunked by rows, on a Dask
cluster.

* :func:`topk_cosine`: each task runs the C++ top-k on one row block of the items (global indices), and the
  partial (N, k) lists are merged in a tree, ``split_every`` at a time, in the single-machine call's order
  (NaN first, then by value, ties to the smaller index). Exact: every item is scored, and an item in the
  global top-k is in the top-k of its own block. The (N, M) matrix is never built; a worker holds one block of
  items (plus its scratch) and a few (N, k) lists at a time.
* :func:`cosine_similarity`: the full (N, M) matrix as a lazy ``dask.array``, one (N, block) chunk per item
  block, for users who want it.

The computation runs on Dask's current scheduler: a ``distributed.Client`` created before the call (pointing
at an existing cluster, ``Client("tcp://scheduler:8786")``, or a ``LocalCluster``), else Dask's default.
Workers need ``metric_bindings`` installed. Needs the ``dask`` extra: ``pip install 'metric_bindings[dask]'``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from metric_bindings import _api

try:
    import dask
    import dask.array as da
except ImportError as e:  # one line, with the fix
    raise ImportError(f"metric_bindings.dask needs Dask ({e}): pip install 'metric_bindings[dask]'") from None

__all__ = ["cosine_similarity", "merge_topk", "topk_cosine"]


def _items_by_rows(items: Any, fn: str) -> da.Array:
    """items as a 2-D dask array whose chunks split rows only (one chunk across all columns)."""
    if not isinstance(items, da.Array):
        items = da.from_array(np.asarray(items))
    if items.ndim != 2:
        raise ValueError(f"{fn}: items must be 2-D (M, D), got shape {items.shape}")
    if len(items.chunks[1]) > 1:  # a row block must hold whole rows
        items = items.rechunk({1: -1})
    return items


def _queries(queries: Any, items: da.Array, fn: str) -> np.ndarray:
    """queries as an in-memory (N, D) array (sent once to the workers), checked against the items."""
    if isinstance(queries, da.Array):
        queries = queries.compute()
    q = _api._to_numpy(queries, "queries", fn)
    if q.ndim != 2:
        raise ValueError(f"{fn}: queries must be 2-D (N, D), got shape {q.shape}")
    if q.shape[1] != items.shape[1]:
        raise ValueError(
            f"{fn}: queries have shape {q.shape} and items {items.shape}: the number of columns D must match "
            f"({q.shape[1]} != {items.shape[1]})"
        )
    return q


def merge_topk(*parts: tuple[np.ndarray, np.ndarray], k: int) -> tuple[np.ndarray, np.ndarray]:
    """The top k of several partial (values, global indices) lists of the same queries, in topk_cosine's
    order: NaN first, then by decreasing value, ties to the smaller index."""
    values = np.concatenate([p[0] for p in parts], axis=1)
    indices = np.concatenate([p[1] for p in parts], axis=1)
    # lexsort: the last key is the primary one. NaN first; then -value ascending; then index ascending.
    order = np.lexsort((indices, -values, ~np.isnan(values)), axis=1)[:, :k]
    return np.take_along_axis(values, order, axis=1), np.take_along_axis(indices, order, axis=1)


def _block_topk(
    queries: np.ndarray, block: np.ndarray, k: int, offset: int, memory_budget: int
) -> tuple[np.ndarray, np.ndarray]:
    values, indices = _api.topk_cosine(queries, block, min(k, block.shape[0]), memory_budget=memory_budget)
    indices += offset
    return values, indices


def topk_cosine(
    queries: Any,
    items: Any,
    k: int,
    *,
    memory_budget: int = _api.DEFAULT_TOPK_BUDGET,
    split_every: int = 8,
) -> tuple[np.ndarray, np.ndarray]:
    """For each query (N, D), the ``k`` items (M, D; a dask array chunked by rows) of highest cosine
    similarity.

    Returns ``(values, indices)`` as numpy arrays (N, k), indices into the whole of ``items``, exactly as
    ``metric_bindings.topk_cosine(queries, items.compute(), k)`` up to rounding (ties aside).
    ``memory_budget`` bounds each task's extra memory as in the single-machine call; each task of the tree
    merges up to ``split_every`` partial lists. Requires 1 <= k <= M.
    """
    fn = "topk_cosine"
    items = _items_by_rows(items, fn)
    q = _queries(queries, items, fn)
    if isinstance(k, bool) or not isinstance(k, int | np.integer):
        raise TypeError(f"{fn}: k must be an int, not {type(k).__name__}")
    m = items.shape[0]
    if not 1 <= k <= m:
        raise ValueError(f"{fn}: k must be in [1, M] = [1, {m}], got {k}")
    if split_every < 2:
        raise ValueError(f"{fn}: split_every must be >= 2, got {split_every}")
    k = int(k)
    if q.shape[0] == 0:  # nothing to score: the single-machine call's empty result
        return _api.topk_cosine(q, np.zeros((k, q.shape[1]), q.dtype), k, memory_budget=memory_budget)

    q_task = dask.delayed(q, pure=True)  # one copy of the queries in the graph, shared by every block
    offsets = np.concatenate([[0], np.cumsum(items.chunks[0])[:-1]])
    level = [
        dask.delayed(_block_topk, pure=True)(q_task, block, k, int(off), int(memory_budget))
        for block, off in zip(items.to_delayed().ravel(), offsets, strict=True)
    ]
    merge = dask.delayed(merge_topk, pure=True)
    while len(level) > 1:  # the tree: each task merges up to split_every partial lists
        level = [merge(*level[i : i + split_every], k=k) for i in range(0, len(level), split_every)]
    values, indices = dask.compute(level[0])[0]
    return values, indices


def cosine_similarity(queries: Any, items: Any) -> da.Array:
    """The full (N, M) matrix cos(queries_i, items_j) as a lazy dask array, chunked (N, items' row blocks):
    one single-machine call per block. Compute (parts of) it, or store it (``to_zarr``): N * M values."""
    fn = "cosine_similarity"
    items = _items_by_rows(items, fn)
    q = _queries(queries, items, fn)
    dtype = _api._result_dtype(q, items)
    qd = da.from_array(q, chunks=q.shape)
    return da.blockwise(_api.cosine_similarity, "ij", qd, "ik", items, "jk", dtype=dtype, concatenate=True)
