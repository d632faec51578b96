"""The python-backend model's request isolation, run in process with a stand-in for Triton's pb_utils.

The served tests cover what a real engine does with bad input; here the engine is replaced by one that fails
on a merged batch holding a "poisoned" (valid) id, the case the one-by-one retry exists for.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
import types
from pathlib import Path

import numpy as np
import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "tritonserving"
POISON = 999
VOCAB = 30522


class Response:
    def __init__(self, output_tensors, error=None):
        self.outputs, self.error = output_tensors, error


def fake_pb_utils() -> types.ModuleType:
    pb = types.ModuleType("triton_python_backend_utils")
    pb.InferenceResponse = Response
    pb.TritonError = lambda message: message
    pb.Tensor = lambda name, array: (name, array)
    pb.get_input_tensor_by_name = lambda request, name: types.SimpleNamespace(as_numpy=lambda: request[name])
    return pb


def laid_out(template: str, version: Path, monkeypatch) -> types.ModuleType:
    """``template`` as ``make repo`` lays it out (model.py next to input_checks.py), imported."""
    shutil.copy(SRC / "templates" / template, version / "model.py")
    shutil.copy(SRC / "input_checks.py", version / "input_checks.py")
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", fake_pb_utils())
    monkeypatch.delitem(sys.modules, "input_checks", raising=False)
    spec = importlib.util.spec_from_file_location(f"served_{version.parent.name}", version / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture()
def model(tmp_path, monkeypatch):
    """The form template, its engine replaced."""
    instance = laid_out("python_model.py", tmp_path, monkeypatch).TritonPythonModel()
    instance.engine, instance.vocab_size = "fake-engine", VOCAB
    calls = []

    def run(ids, mask):
        calls.append(len(ids))
        if (ids == POISON).any():
            raise RuntimeError("fake engine: cannot run this batch\nsecond line of a long engine trace")
        return (ids * mask).sum(axis=1, keepdims=True).astype(np.float32) * np.ones((1, 384), np.float32)

    instance._run = run
    instance.calls = calls
    return instance


def request(*row: int) -> dict[str, np.ndarray]:
    ids = np.array([row], dtype=np.int64)
    return {"input_ids": ids, "attention_mask": np.ones_like(ids)}


def test_valid_requests_of_one_execute_are_merged_and_answered(model) -> None:
    responses = model.execute([request(101, 5, 102), request(101, 7, 7, 102)])
    assert model.calls == [2]  # one engine call for both
    assert [r.error for r in responses] == [None, None]
    assert [float(r.outputs[0][1][0, 0]) for r in responses] == [208.0, 217.0]


def test_bad_request_fails_alone_and_engine_failure_is_retried_one_by_one(model) -> None:
    good_a, poisoned, good_b = request(101, 5, 102), request(101, POISON, 102), request(101, 6, 102)
    responses = model.execute([good_a, poisoned, good_b, request(101, VOCAB, 102)])
    assert model.calls == [3, 1, 1, 1]  # the merged batch of the 3 valid ones failed, then one by one
    assert responses[0].error is None and float(responses[0].outputs[0][1][0, 0]) == 208.0
    assert responses[2].error is None and float(responses[2].outputs[0][1][0, 0]) == 209.0
    engine_line = "fake-engine failed on this request: fake engine: cannot run this batch second line"
    assert responses[1].error == engine_line + " of a long engine trace"
    assert responses[3].error == f"input_ids: ids must be in [0, {VOCAB}), got {VOCAB} at [0, 1]"


# ------------------------------------------------------------------------------ the text-in tokenizer step
@pytest.fixture()
def tokenizer_model(tmp_path, monkeypatch):
    """The tokenizer template, with the export's tokenizer.json beside it."""
    from tritonserving.data import artefact
    from tritonserving.export import ensure_all

    if not artefact("tokenizer").is_file():
        ensure_all()
    version = tmp_path / "1"
    version.mkdir()
    shutil.copy(artefact("tokenizer"), version / "tokenizer.json")
    instance = laid_out("tokenizer_model.py", version, monkeypatch).TritonPythonModel()
    config = {"parameters": {"max_length": {"string_value": "256"}}}
    instance.initialize({"model_config": json.dumps(config), "model_repository": str(tmp_path),
                         "model_version": "1"})  # fmt: skip
    return instance


def text_request(*items: str | bytes) -> dict[str, np.ndarray]:
    rows = [s.encode() if isinstance(s, str) else s for s in items]
    return {"text": np.array(rows, dtype=np.object_).reshape(-1, 1)}


def test_tokenizer_fails_each_bad_request_alone_and_answers_the_rest(tokenizer_model) -> None:
    from tritonserving.data import BUILD, Tokenizer

    good = ["a short sentence", "a somewhat longer sentence than the first one"]
    responses = tokenizer_model.execute([
        text_request(*good), text_request(""), text_request("fine", b"caf\xe9 au lait"),
        text_request("   "), text_request("x " * 2000),
    ])  # fmt: skip
    assert responses[1].error == "text[0]: empty string; send at least one word"
    assert responses[2].error == "text[1]: not valid UTF-8 (byte 0xe9 at offset 3); send UTF-8 text"
    assert responses[3].error == "text[0]: empty string; send at least one word"
    # a valid request: padded to its own longest row, the very ids the client-side tokenizer makes
    (ids_name, ids), (mask_name, mask) = responses[0].outputs
    assert (ids_name, mask_name) == ("input_ids", "attention_mask") and responses[0].error is None
    want_ids, want_mask = Tokenizer(BUILD)(good)
    np.testing.assert_array_equal(ids, want_ids)
    np.testing.assert_array_equal(mask, want_mask)
    # longer than 256 tokens: truncated to the first 256 ([CLS] ... [SEP]), not refused
    long_ids = responses[4].outputs[0][1]
    assert long_ids.shape == (1, 256) and long_ids[0, -1] == Tokenizer(BUILD).sep_id
