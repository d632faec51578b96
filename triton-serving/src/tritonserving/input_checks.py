"""The rules every request to a MiniLM form must meet, checked before it reaches an engine.

One owner for the rules, used twice: the ``Embedder`` client checks each chunk before sending it, and
``tritonserving.repository`` copies this very file next to every python-backend ``model.py``, which checks
each request before the dynamic batcher's requests are merged. So it imports nothing but numpy.

Why each rule: ONNX Runtime's embedding ``Gather`` wraps negative ids around (a silent, wrong embedding) and
fails the whole merged batch on an id >= the vocabulary size; a mask value other than 0/1 weights the mean
pooling wrongly without any error; the model has 512 positions.

Text-in models (``<form>_text``) take ``text``, a batch of UTF-8 strings, and the tokenizer model checks each
string with ``text_problem``: an empty (or blank) string has no words to embed and a payload that is not UTF-8
cannot be read as text. A string longer than ``MAX_TEXT_TOKENS`` is not an error: it is truncated to its first
``MAX_TEXT_TOKENS`` tokens, as sentence-transformers does (its ``max_seq_length`` for this model).
"""

from __future__ import annotations

import numpy as np

INPUT_NAMES = ("input_ids", "attention_mask")
MAX_SEQ_LEN = 512
#: the text-in models' input name, and the token count (with [CLS] and [SEP]) a longer string is cut to
TEXT_INPUT = "text"
MAX_TEXT_TOKENS = 256


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


def text_problem(items: list) -> str | None:
    """One line naming the first bad string of a text request (by index) and what to send; None if valid.

    ``items`` are what arrived: ``bytes`` on the server (BYTES tensor elements), ``str`` on the client.
    """
    if not items:
        return f"{TEXT_INPUT}: batch must hold at least 1 string, got 0"
    for i, item in enumerate(items):
        if isinstance(item, bytes):
            try:
                item = item.decode("utf-8")
            except UnicodeDecodeError as e:
                return (
                    f"{TEXT_INPUT}[{i}]: not valid UTF-8 (byte 0x{item[e.start]:02x} at offset {e.start}); "
                    "send UTF-8 text"
                )
        if not isinstance(item, str):
            return f"{TEXT_INPUT}[{i}]: must be a string, got {type(item).__name__}"
        if not item.strip():
            return f"{TEXT_INPUT}[{i}]: empty string; send at least one word"
    return None
