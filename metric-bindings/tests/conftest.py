"""Shared helpers: the float64 numpy reference every test compares against."""

from __future__ import annotations

import os

import numpy as np
from hypothesis import HealthCheck, settings

# CI is slower and shared: fewer examples there, no deadline (timings are never asserted).
settings.register_profile("ci", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile(
    "dev", max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


def reference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """cos(a_i, b_j) in float64, zero rows giving 0 (scikit-learn's convention)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    na = np.linalg.norm(a, axis=1, keepdims=True)
    nb = np.linalg.norm(b, axis=1, keepdims=True)
    an = np.divide(a, na, out=np.zeros_like(a), where=na > 0)
    bn = np.divide(b, nb, out=np.zeros_like(b), where=nb > 0)
    return an @ bn.T


def tolerance(dtype: np.dtype) -> float:
    return 2e-5 if np.dtype(dtype) == np.float32 else 1e-12
