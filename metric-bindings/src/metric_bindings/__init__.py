"""Fast, safe cosine similarity on CBLAS (C++ core, nanobind bindings).

Three functions, all taking numpy arrays of any strides and order, CPU torch tensors, or anything
``numpy.asarray`` understands, and returning new numpy arrays:

* :func:`cosine_similarity` -- the full (N, M) matrix for A (N, D) and B (M, D);
* :func:`paired_cosine_similarity` -- row-wise cos(A[i], B[i]) as an (N,) vector;
* :func:`topk_cosine` -- for each row of A the k most similar rows of B (values, indices), in bounded memory.
"""

from __future__ import annotations

from metric_bindings._api import (
    DEFAULT_TOPK_BUDGET,
    MIN_TOPK_BUDGET,
    blas_info,
    choose_strategy,
    cosine_similarity,
    num_threads,
    packed_gemm_available,
    paired_cosine_similarity,
    topk_cosine,
)

__all__ = [
    "DEFAULT_TOPK_BUDGET",
    "MIN_TOPK_BUDGET",
    "blas_info",
    "choose_strategy",
    "cosine_similarity",
    "num_threads",
    "packed_gemm_available",
    "paired_cosine_similarity",
    "topk_cosine",
]
__version__ = "0.1.0"
