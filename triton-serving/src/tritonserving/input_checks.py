"""The rules every request to a MiniLM form must meet, checked before it reaches an engine.

One owner for the rules, used twice: the ``Embedder`` client checks each chunk before sending it, and
``tritonserving.repository`` copies this very file next to every python-backend ``model.py``, which checks
each request before the dynamic batcher's requests are merged. So it imports nothing but numpy.

Why each rule: ONNX Runtime's embedding ``Gather`` wraps negative ids around (a silent, wrong embedding) and
fails the whole merged batch on an id >= the vocabulary size; a mask value other than 0/1 weights the mean
pooling wrongly without any error; the model has 512 positions.
"""

from __future__ import annotations

import numpy as np

INPUT_NAMES = ("input_ids", "attention_mask")
MAX_SEQ_LEN = 512


def _first_bad(values: np.ndarray, bad: np.ndarray) -> str:
    """``<value> at [row, col]`` of the first offending element."""
    row, col = (int(i) for i in np.argwhere(bad)[0])
    return f"{int(values[row, col])} at [{row}, {col}]"


def request_problem(ids: np.ndarray, mask: np.ndarray, vocab_size: int) -> str | None:
    """One line naming the input, the rule and the bad value; None when the request is valid."""
    for name, arr in zip(INPUT_NAMES, (ids, mask), strict=True):
        if arr.dtype != np.int64:
            return f"{name}: datatype must be INT64, got {arr.dtype}"
        if arr.ndim != 2:
            return f"{name}: must be rank 2 [batch, sequence], got shape {list(arr.shape)}"
    if ids.shape[0] < 1:
        return f"input_ids: batch must hold at least 1 row, got shape {list(ids.shape)}"
    if mask.shape != ids.shape:
        return f"attention_mask: shape must equal input_ids shape {list(ids.shape)}, got {list(mask.shape)}"
    if not 1 <= ids.shape[1] <= MAX_SEQ_LEN:
        return f"input_ids: sequence length must be 1..{MAX_SEQ_LEN}, got {ids.shape[1]}"
    out_of_vocab = (ids < 0) | (ids >= vocab_size)
    if out_of_vocab.any():
        return f"input_ids: ids must be in [0, {vocab_size}), got {_first_bad(ids, out_of_vocab)}"
    not_binary = (mask != 0) & (mask != 1)
    if not_binary.any():
        return f"attention_mask: values must be 0 or 1, got {_first_bad(mask, not_binary)}"
    return None
