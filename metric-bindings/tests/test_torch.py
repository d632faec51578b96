"""CPU torch tensors are read through DLPack, without a copy when BLAS can use their layout."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import missing, reference, tolerance

import metric_bindings as mb

# The container image has no torch: its test service deselects these (-m "not torch"), so torch is imported
# by a fixture, not at collection.
pytestmark = pytest.mark.torch


@pytest.fixture
def torch():
    try:
        import torch
    except ImportError:
        missing("torch (the [torch] extra)", "make install, or pip install '.[torch]'")
    return torch


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_torch_tensors_any_layout(torch, dtype):
    dt = getattr(torch, dtype)
    g = torch.Generator().manual_seed(0)
    a = torch.randn(33, 17, generator=g, dtype=dt)
    b = torch.randn(17, 21, generator=g, dtype=dt).T  # transposed view (column-major)
    got = mb.cosine_similarity(a, b)
    assert isinstance(got, np.ndarray) and got.dtype == (np.float32 if dt == torch.float32 else np.float64)
    np.testing.assert_allclose(got, reference(a.numpy(), b.numpy()), atol=tolerance(got.dtype))
    ref_rows = torch.nn.functional.cosine_similarity(a[:21], b, dim=1).numpy()
    np.testing.assert_allclose(mb.paired_cosine_similarity(a[:21], b), ref_rows, atol=tolerance(got.dtype))
    vals, idx = mb.topk_cosine(a, b, 3)
    tv, ti = torch.topk(torch.from_numpy(reference(a.numpy(), b.numpy())), 3, dim=1)
    np.testing.assert_allclose(vals, tv.numpy(), atol=tolerance(got.dtype))
    assert (idx == ti.numpy()).mean() > 0.95  # exact ties aside, same items


def test_torch_strided_requires_grad_and_other_dtypes(torch):
    a = torch.randn(10, 8, requires_grad=True)
    b = torch.randn(6, 16)[:, ::2]  # non-unit stride: copied for BLAS
    np.testing.assert_allclose(
        mb.cosine_similarity(a, b), reference(a.detach().numpy(), b.numpy()), atol=2e-5
    )
    assert mb.cosine_similarity(torch.ones(2, 3, dtype=torch.int64), torch.ones(1, 3)).dtype == np.float32
    assert mb.cosine_similarity(torch.ones(2, 3, dtype=torch.bfloat16), torch.ones(1, 3)).dtype == np.float32
    with pytest.raises(TypeError, match="complex"):
        mb.cosine_similarity(torch.ones(2, 3, dtype=torch.complex64), torch.ones(1, 3))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_torch_tensors_are_read_without_a_copy(torch, dtype):
    """The library's own conversion hands the extension the tensor's memory (DLPack), in C order and as a
    transposed view; the extension takes its arguments without conversion, so what it reads is that memory:
    a change made to the tensor after conversion shows up in the result."""
    from metric_bindings import _api, _core

    dt = getattr(torch, dtype)
    g = torch.Generator().manual_seed(1)
    for t in (torch.randn(6, 5, generator=g, dtype=dt), torch.randn(5, 6, generator=g, dtype=dt).T):
        other = torch.randn(4, 5, generator=g, dtype=dt)
        a, b, _ = _api._prepare(t, other, "cosine_similarity")
        assert np.shares_memory(a, t.numpy()) and np.shares_memory(b, other.numpy())
        before = _core.cosine_similarity(a, b, None, "auto")
        t[0] = -t[0]  # through torch, after the conversion
        after = _core.cosine_similarity(a, b, None, "auto")
        np.testing.assert_allclose(after[0], -before[0], atol=tolerance(after.dtype))
        np.testing.assert_allclose(after, mb.cosine_similarity(t, other), atol=tolerance(after.dtype))
