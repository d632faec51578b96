"""The real Triton (native CPU, or compose) serving the four CPU forms: health, metadata, numbers, errors."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import expected_cpu_forms

from tritonserving import EMBED_DIM, MAX_SEQ_LEN
from tritonserving.client import ClientError, Tokenizer, TritonForms, default_sentences

FORMS = expected_cpu_forms()
#: max |served - in-process| per embedding element: same model file, same engine, same ids; only thread
#: scheduling differs, so the tolerance is float noise, looser where the graph runs in reduced precision
TOLERANCE = {"minilm_onnx": 1e-5, "minilm_openvino": 1e-4, "minilm_onnx_fp16": 1e-3, "minilm_onnx_int8": 1e-3}


@pytest.fixture(scope="module")
def client(triton):
    with TritonForms(triton.http_url, triton.grpc_url) as c:
        yield c


@pytest.fixture(scope="module")
def batch() -> tuple[np.ndarray, np.ndarray]:
    sentences = default_sentences()["eval_sentences"][:24]
    return Tokenizer(max_length=128)(sentences)


def test_server_lists_every_cpu_form(client) -> None:
    assert client.ready()
    assert set(FORMS) <= set(client.forms())


@pytest.mark.parametrize("form", FORMS)
def test_health_and_metadata(client, form: str) -> None:
    assert client.http.is_model_ready(form) and client.grpc.is_model_ready(form)
    meta = client.http.get_model_metadata(form)
    inputs = {i["name"]: i for i in meta["inputs"]}
    assert set(inputs) == {"input_ids", "attention_mask"}
    for i in inputs.values():
        assert i["datatype"] == "INT64" and i["shape"] == [-1, -1]
    (out,) = meta["outputs"]
    assert (out["name"], out["datatype"], out["shape"]) == ("sentence_embedding", "FP32", [-1, EMBED_DIM])
    cfg = client.http.get_model_config(form)
    assert cfg["max_batch_size"] > 0
    assert "dynamic_batching" in cfg


@pytest.mark.parametrize("form", FORMS)
def test_served_equals_inprocess(client, batch, form: str) -> None:
    """Each form's served output equals the same form run in this process on the same ids (same chunks)."""
    from tritonserving.forms import TRITON_MODEL, load_form
    from tritonserving.native_server import BUILD

    ids, mask = batch
    served = client.embed(form, ids, mask, protocol="grpc")
    runner = load_form(TRITON_MODEL[form], build_dir=BUILD)
    step = client.max_batch_size(form)
    local = np.concatenate([runner(ids[i : i + step], mask[i : i + step]) for i in range(0, len(ids), step)])
    assert served.shape == local.shape == (len(ids), EMBED_DIM)
    assert served.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(served, axis=1), 1.0, atol=1e-3)  # L2-normalised
    assert float(np.max(np.abs(served - local))) <= TOLERANCE[form]


@pytest.mark.parametrize("form", FORMS)
def test_grpc_and_http_agree(client, batch, form: str) -> None:
    ids, mask = batch
    a = client.embed(form, ids[:4], mask[:4], protocol="grpc")
    b = client.embed(form, ids[:4], mask[:4], protocol="http")
    np.testing.assert_allclose(a, b, atol=1e-6)


def _ok(n: int = 8) -> tuple[np.ndarray, np.ndarray]:
    ids = np.full((1, n), 2023, dtype=np.int64)
    ids[0, 0], ids[0, -1] = 101, 102
    return ids, np.ones_like(ids)


MALFORMED = {
    "wrong dtype (FP32 ids)": ("minilm_onnx", lambda: (_ok()[0].astype(np.float32), _ok()[1]), "data-type"),
    "wrong dtype (INT32 ids)": ("minilm_onnx", lambda: (_ok()[0].astype(np.int32), _ok()[1]), "INT64"),
    "wrong rank (3-D)": ("minilm_onnx", lambda: (_ok()[0][None], _ok()[1][None]), "shape"),
    "wrong rank (1-D)": ("minilm_onnx", lambda: (_ok()[0][0], _ok()[1][0]), "shape"),
    "longer than 512": ("minilm_onnx", lambda: _ok(MAX_SEQ_LEN + 88), "512"),
    "empty batch": ("minilm_onnx", lambda: (np.zeros((0, 8), np.int64), np.zeros((0, 8), np.int64)), "size"),
    "unknown model": ("minilm_does_not_exist", _ok, "unknown model"),
}


@pytest.mark.parametrize("protocol", ["grpc", "http"])
@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_request_gets_clear_error_and_server_keeps_serving(client, case, protocol) -> None:
    form, make, needle = MALFORMED[case]
    ids, mask = make()
    with pytest.raises(ClientError) as exc:
        client.infer_once(form, ids, mask, protocol=protocol)
    message = str(exc.value)
    assert "\n" not in message and len(message) < 500
    assert needle.lower() in message.lower(), message
    # the server is still healthy and still answers a good request
    assert client.ready()
    good = client.infer_once("minilm_onnx", *_ok(), protocol=protocol)
    assert good.shape == (1, EMBED_DIM)


def test_client_rejects_bad_batches_before_sending(client) -> None:
    with pytest.raises(ClientError, match="512"):
        client.embed("minilm_onnx", *_ok(MAX_SEQ_LEN + 1))
    with pytest.raises(ClientError, match="equal 2-D"):
        client.embed("minilm_onnx", _ok()[0], _ok(9)[1])
    with pytest.raises(ClientError, match="no sentences"):
        Tokenizer()([])


def test_client_splits_batches_larger_than_max_batch_size(client) -> None:
    n = client.max_batch_size("minilm_onnx") + 3
    ids = np.repeat(_ok()[0], n, axis=0)
    out = client.embed("minilm_onnx", ids, np.ones_like(ids))
    assert out.shape == (n, EMBED_DIM)
    np.testing.assert_allclose(out, np.repeat(out[:1], n, axis=0), atol=1e-5)
