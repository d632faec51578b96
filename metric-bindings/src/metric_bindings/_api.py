"""Python face of the C++ kernels: turns whatever the caller passes into float32/float64 arrays, checks what
numpy knows best (dtype kinds, dimensions, the Python type of ``k``, ``out``'s dtype and aliasing) and calls
``metric_bindings._core``.

Why a Python layer at all: dtype promotion (int, float16, bool, torch tensors, lists) is numpy's job and
easy to get wrong in C++; by the time ``_core`` is called, arrays are float32/float64 views with their
original strides (no copy), and everything else -- shapes, D mismatch, k range, ``out``'s shape and strides,
the computation -- is checked and done in C++ (with the GIL released for the computation).
"""

from __future__ import annotations

import ctypes
import os
from typing import Any, Literal

import numpy as np


def _preload_openblas() -> None:
    """Load scipy-openblas32's library before the extension, for two reasons.

    * ``_core`` then finds it even when its rpath does not point at it (editable installs, unusual layouts).
    * OpenBLAS reads ``OPENBLAS_THREAD_TIMEOUT`` when it loads. By default its worker threads spin for
      ~2^28 cycles (~0.1 s) after every call, taking the cores from our own passes (norms, scaling, top-k)
      that follow a GEMM, making whole calls several times slower on 2 busy cores. Unless set by the user,
      this private OpenBLAS (not numpy's, which is a separate library) gets 2^20 cycles (~0.3 ms): enough to
      chain tiled GEMM calls without sleeping, short enough to free the cores. The variable is restored after
      loading, so child processes and other libraries see the environment unchanged.
    """
    try:
        import scipy_openblas32
    except ImportError:  # built against a system BLAS
        return
    from pathlib import Path

    lib = Path(scipy_openblas32.get_lib_dir()) / scipy_openblas32.get_library(fullname=True)
    if not lib.exists():
        return
    key = "OPENBLAS_THREAD_TIMEOUT"
    previous = os.environ.get(key)
    if previous is None:
        os.environ[key] = "20"
    try:
        ctypes.CDLL(str(lib), mode=ctypes.RTLD_GLOBAL)
    finally:
        if previous is None:
            os.environ.pop(key, None)


_preload_openblas()

from metric_bindings import _core  # noqa: E402

DEFAULT_TOPK_BUDGET: int = int(_core.DEFAULT_TOPK_BUDGET)
MIN_TOPK_BUDGET: int = int(_core.MIN_TOPK_BUDGET)
Strategy = Literal["auto", "normalize", "scale", "fused", "packed"]


def _to_numpy(x: Any, name: str, fn: str) -> np.ndarray:
    """Any array-like as a numpy array, sharing memory when possible (torch CPU tensors go through DLPack)."""
    if isinstance(x, np.ndarray):
        return x
    mod = type(x).__module__
    if mod.startswith("torch"):
        t = x.detach() if getattr(x, "requires_grad", False) else x
        if t.device.type != "cpu":
            raise ValueError(
                f"{fn}: {name} is a torch tensor on device '{t.device}'; move it to the CPU (.cpu())"
            )
        if t.is_complex():
            raise TypeError(f"{fn}: {name} has complex dtype {t.dtype}; cosine similarity needs real numbers")
        try:
            return np.from_dlpack(t)
        except (TypeError, RuntimeError, BufferError):  # e.g. bfloat16, which numpy has no type for
            return t.float().numpy()
    try:
        return np.asarray(x)
    except (TypeError, ValueError) as e:
        raise TypeError(f"{fn}: {name} cannot be read as an array ({e})") from None


def _check_kind(x: np.ndarray, name: str, fn: str) -> None:
    if x.dtype.kind not in "biuf":
        what = {
            "c": "complex",
            "O": "object",
            "U": "str",
            "S": "bytes",
            "V": "structured",
            "M": "datetime",
            "m": "timedelta",
        }.get(x.dtype.kind, x.dtype.kind)
        raise TypeError(
            f"{fn}: {name} has {what} dtype {x.dtype} (shape {x.shape}); cosine similarity needs "
            "real numbers "
            "(float32/float64, or ints/bools/float16 which are converted)"
        )
    if x.ndim != 2:
        raise ValueError(
            f"{fn}: {name} must be 2-D (rows, D) but has shape {x.shape}; "
            "reshape a single vector with x.reshape(1, -1)"
        )


def _result_dtype(a: np.ndarray, b: np.ndarray) -> np.dtype:
    """float64 if either input is float64 (or wider), else float32 (numpy's rule for floats)."""
    wide = any(x.dtype.kind == "f" and x.dtype.itemsize >= 8 for x in (a, b))
    return np.dtype(np.float64) if wide else np.dtype(np.float32)


def _prepare(a: Any, b: Any, fn: str) -> tuple[np.ndarray, np.ndarray, np.dtype]:
    a_ = _to_numpy(a, "A", fn)
    b_ = _to_numpy(b, "B", fn)
    _check_kind(a_, "A", fn)
    _check_kind(b_, "B", fn)
    dt = _result_dtype(a_, b_)
    # astype(copy=False) keeps the strides of an array that already has the dtype: no copy for float inputs.
    return a_.astype(dt, copy=False), b_.astype(dt, copy=False), dt


def _check_out(out: Any, dt: np.dtype, fn: str, *inputs: np.ndarray) -> np.ndarray:
    """What only numpy knows about ``out``: its type, dtype, writeability and aliasing (the core checks its
    shape and strides)."""
    if not isinstance(out, np.ndarray):
        raise TypeError(f"{fn}: out must be a numpy array, not {type(out).__name__}")
    if out.dtype != dt:
        raise TypeError(
            f"{fn}: out has dtype {out.dtype} but the result is {dt} (float64 if an input is float64)"
        )
    if not out.flags.writeable:
        raise ValueError(f"{fn}: out is read-only")
    for x in inputs:
        if np.may_share_memory(out, x):
            raise ValueError(f"{fn}: out overlaps an input; pass a separate buffer")
    return out


def cosine_similarity(
    a: Any, b: Any, *, out: np.ndarray | None = None, strategy: Strategy = "auto"
) -> np.ndarray:
    """Cosine similarities between the rows of ``a`` (N, D) and ``b`` (M, D): an (N, M) array.

    float64 if either input is float64, else float32. Zero rows give 0, NaN propagates. ``out`` (a C-ordered
    (N, M) array of the result dtype, rows may be padded) is filled and returned instead of a new array, so a
    loop can reuse one buffer. ``strategy`` is for benchmarks: ``"normalize"`` copies A and B with unit rows
    then runs one CBLAS GEMM; ``"scale"`` runs the CBLAS GEMM on the raw inputs, then scales the output (no
    copy of B); ``"fused"`` reads the larger side once with a hand-written kernel (for a few rows on the
    other side); ``"packed"`` runs our own AVX-512 GEMM with the norms and the scaling folded in (float32
    only; float64 and builds without AVX-512 run ``"scale"``); ``"auto"`` picks by size and dtype.
    """
    fn = "cosine_similarity"
    a_, b_, dt = _prepare(a, b, fn)
    if out is not None:
        _check_out(out, dt, fn, a_, b_)
        _core.cosine_similarity(a_, b_, out, strategy)
        return out
    return _core.cosine_similarity(a_, b_, None, strategy)


def paired_cosine_similarity(a: Any, b: Any, *, out: np.ndarray | None = None) -> np.ndarray:
    """Row-wise cos(a[i], b[i]) for two (N, D) inputs: an (N,) array, in one fused pass over both inputs."""
    fn = "paired_cosine_similarity"
    a_, b_, dt = _prepare(a, b, fn)
    if out is not None:
        _check_out(out, dt, fn, a_, b_)
        _core.paired_cosine_similarity(a_, b_, out)
        return out
    return _core.paired_cosine_similarity(a_, b_, None)


def topk_cosine(
    a: Any, b: Any, k: int, *, memory_budget: int = DEFAULT_TOPK_BUDGET
) -> tuple[np.ndarray, np.ndarray]:
    """For each row of ``a`` (N, D), the ``k`` rows of ``b`` (M, D) with the highest cosine similarity.

    Returns ``(values, indices)``, both (N, k), best first (ties: smaller index first; NaN ranks first so that
    it is seen). ``b`` is processed in blocks, so the extra memory stays under ``memory_budget`` bytes
    (64 MiB by
    default) whatever M is. Requires 1 <= k <= M; an empty A or B gives empty results.
    """
    fn = "topk_cosine"
    a_, b_, _ = _prepare(a, b, fn)
    if isinstance(k, bool) or not isinstance(k, int | np.integer):
        raise TypeError(f"{fn}: k must be an int, not {type(k).__name__}")
    if memory_budget < 0:  # the core checks the minimum (MIN_TOPK_BUDGET)
        raise ValueError(f"{fn}: memory_budget must be >= {MIN_TOPK_BUDGET} bytes, got {memory_budget}")
    values, indices = _core.topk_cosine(a_, b_, int(k), int(memory_budget))  # the core checks k's range
    return values, indices


def blas_info() -> str:
    """Which BLAS the extension calls (library, build configuration, CPU core type, threads)."""
    return str(_core.blas_info())


def choose_strategy(n: int, m: int, d: int, dtype: Any = np.float32) -> str:
    """The strategy (``"fused"``, ``"packed"``, ``"normalize"`` or ``"scale"``) that ``strategy="auto"``
    uses for (N, M, D) inputs of this dtype with contiguous rows."""
    return str(_core.choose_strategy(n, m, d, np.dtype(dtype) != np.float64))


def num_threads() -> int:
    """Threads our own passes use now: ``METRIC_BINDINGS_NUM_THREADS`` when set (> 0), else the hardware
    threads; read on every call, so a change of the variable (``os.environ``) applies to the next call. BLAS
    follows its own setting (``OPENBLAS_NUM_THREADS``, or threadpoolctl)."""
    return int(_core.num_threads())


def packed_gemm_available() -> bool:
    """True when the packed GEMM can run here: built in (GCC on x86-64) and the CPU has AVX-512."""
    return bool(_core.packed_gemm_available())
