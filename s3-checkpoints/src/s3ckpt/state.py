"""RNG capture/restore, so that a resumed run draws exactly the same random numbers as an unbroken one.

All states are converted to plain Python / torch types so that ``torch.load(weights_only=True)`` (the
safe loader: no arbitrary pickled code) can read them back. NumPy is optional: its global RNG is captured
when NumPy is installed.
"""

from __future__ import annotations

import random
from typing import Any

import torch

try:
    import numpy as np
except ImportError:  # not a dependency of the library: only the demo trainer and tests need it
    np = None  # type: ignore[assignment]


def capture_rng_state() -> dict[str, Any]:
    """Python ``random``, NumPy's legacy global RNG, torch CPU and (if present) every CUDA device."""
    py_version, py_state, py_gauss = random.getstate()
    out: dict[str, Any] = {
        "python": {"version": py_version, "state": list(py_state), "gauss": py_gauss},
        "torch": torch.get_rng_state(),
    }
    if np is not None:
        np_state = np.random.get_state(legacy=False)
        assert isinstance(np_state, dict)
        inner = np_state["state"]
        out["numpy"] = {
            "bit_generator": np_state["bit_generator"],
            "key": torch.from_numpy(np.asarray(inner["key"], dtype=np.uint32).astype(np.int64)),
            "pos": int(inner["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        }
    if torch.cuda.is_available():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss"]))
    if np is not None and "numpy" in state:
        n = state["numpy"]
        np.random.set_state({
            "bit_generator": n["bit_generator"],
            "state": {"key": n["key"].numpy().astype(np.uint32), "pos": int(n["pos"])},
            "has_gauss": int(n["has_gauss"]),
            "gauss": float(n["gauss"]),
        })
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
