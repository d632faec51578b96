"""The real Triton (native CPU) serving the four CPU forms: health, metadata, numbers, errors, isolation."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
from conftest import (
    PROTOCOLS,
    TOLERANCE,
    assert_only_the_bad_one_failed,
    co_batched_round,
    expected_cpu_forms,
    url,
)

from tritonserving import EMBED_DIM, MAX_SEQ_LEN
from tritonserving.client import ClientError, Embedder, served_forms
from tritonserving.data import BUILD, Tokenizer, read_sentences, vocab_size
from tritonserving.input_checks import request_problem

FORMS = expected_cpu_forms()
VOCAB = vocab_size(BUILD)


@pytest.fixture(scope="module")
def embedders(triton) -> dict[tuple[str, str], Embedder]:
    clients = {(f, p): Embedder(url(triton, p), model=f) for f in FORMS for p in PROTOCOLS}
    yield clients
    for client in clients.values():
        client.close()


def _ok(n: int = 8) -> tuple[np.ndarray, np.ndarray]:
    ids = np.full((1, n), 2023, dtype=np.int64)
    ids[0, 0], ids[0, -1] = 101, 102
    return ids, np.ones_like(ids)


def test_server_lists_every_cpu_form(triton) -> None:
    assert set(FORMS) <= set(served_forms(triton.http_url))


@pytest.mark.parametrize("form", FORMS)
def test_health_and_metadata(embedders, form: str) -> None:
    assert embedders[form, "http"].ready() and embedders[form, "grpc"].ready()
    client = embedders[form, "http"]._client
    meta = client.get_model_metadata(form)
    inputs = {i["name"]: i for i in meta["inputs"]}
    assert set(inputs) == {"input_ids", "attention_mask"}
    for i in inputs.values():
        assert i["datatype"] == "INT64" and i["shape"] == [-1, -1]
    (out,) = meta["outputs"]
    assert (out["name"], out["datatype"], out["shape"]) == ("sentence_embedding", "FP32", [-1, EMBED_DIM])
    cfg = client.get_model_config(form)
    assert cfg["max_batch_size"] > 0 and "dynamic_batching" in cfg
    assert cfg["parameters"]["vocab_size"]["string_value"] == str(VOCAB)


@pytest.mark.parametrize("form", FORMS)
def test_served_equals_inprocess(embedders, form: str) -> None:
    """Each form's served output equals the same form run in this process on the same ids (same chunks)."""
    from tritonserving.runners import TRITON_MODEL, load_form

    sentences = read_sentences("eval_sentences")[:24]
    served = embedders[form, "grpc"].embed(sentences)
    ids, mask = Tokenizer(BUILD)(sentences)
    local = load_form(TRITON_MODEL[form], build_dir=BUILD)(ids, mask)
    assert served.shape == local.shape == (len(sentences), EMBED_DIM)
    assert served.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(served, axis=1), 1.0, atol=1e-6)
    assert float(np.max(np.abs(served - local))) <= TOLERANCE[form]


@pytest.mark.parametrize("form", FORMS)
def test_grpc_and_http_agree(embedders, form: str) -> None:
    sentences = read_sentences("queries")[:4]
    grpc, http = (embedders[form, p].embed(sentences) for p in PROTOCOLS)
    np.testing.assert_allclose(grpc, http, atol=1e-6)


# ------------------------------------------------------------------------- each bad request, on every form
def _with(ids_or_mask: str, row: int, col: int, value: int) -> tuple[np.ndarray, np.ndarray]:
    ids, mask = _ok()
    (ids if ids_or_mask == "ids" else mask)[row, col] = value
    return ids, mask


#: case -> (request, what the one-line error must name: the input, the rule, the bad value)
BAD_REQUESTS = {
    "negative id": (lambda: _with("ids", 0, 3, -5), ("input_ids", f"[0, {VOCAB})", "-5 at [0, 3]")),
    "id = vocab size": (lambda: _with("ids", 0, 4, VOCAB), ("input_ids", f"[0, {VOCAB})", f"{VOCAB} at [0,")),
    "mask value 2": (lambda: _with("mask", 0, 2, 2), ("attention_mask", "0 or 1", "2 at [0, 2]")),
    "length 0": (lambda: (np.zeros((1, 0), np.int64),) * 2, ("input_ids", f"1..{MAX_SEQ_LEN}", "got 0")),
    "length 513": (lambda: _ok(MAX_SEQ_LEN + 1), ("input_ids", f"1..{MAX_SEQ_LEN}", "got 513")),
    "mismatched shapes": (lambda: (_ok(8)[0], _ok(9)[1]), ("attention_mask", "[1, 8]", "[1, 9]")),
}


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_request_gets_its_own_one_line_error(embedders, case: str, form: str, protocol: str) -> None:
    make, needles = BAD_REQUESTS[case]
    embedder = embedders[form, protocol]
    with pytest.raises(ClientError) as served:
        embedder.infer(*make())  # sent as it is, no client-side check
    message = str(served.value)
    assert "\n" not in message and len(message) < 400, message
    assert all(n in message for n in needles), message
    # the client refuses the same request before sending it, with the same line
    with pytest.raises(ClientError) as local:
        embedder.embed_ids(*make())
    assert request_problem(*make(), VOCAB) in str(local.value) and request_problem(*make(), VOCAB) in message
    assert embedder.infer(*_ok()).shape == (1, EMBED_DIM)  # the model keeps serving


#: requests Triton itself refuses before they reach a model (its own one-line errors)
REFUSED_BY_TRITON = {
    "wrong dtype (FP32 ids)": (lambda: (_ok()[0].astype(np.float32), _ok()[1]), "data-type"),
    "wrong dtype (INT32 ids)": (lambda: (_ok()[0].astype(np.int32), _ok()[1]), "INT64"),
    "wrong rank (3-D)": (lambda: (_ok()[0][None], _ok()[1][None]), "shape"),
    "wrong rank (1-D)": (lambda: (_ok()[0][0], _ok()[1][0]), "shape"),
    "empty batch": (lambda: (np.zeros((0, 8), np.int64), np.zeros((0, 8), np.int64)), "size"),
}


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("case", list(REFUSED_BY_TRITON))
def test_malformed_request_is_refused_in_one_line(embedders, case: str, protocol: str) -> None:
    make, needle = REFUSED_BY_TRITON[case]
    embedder = embedders["minilm_onnx", protocol]
    with pytest.raises(ClientError) as exc:
        embedder.infer(*make())
    message = str(exc.value)
    assert "\n" not in message and len(message) < 500 and needle.lower() in message.lower(), message
    with pytest.raises(ClientError):
        embedder.embed_ids(*make())  # refused by the client as well
    assert embedder.infer(*_ok()).shape == (1, EMBED_DIM)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_unknown_model_is_one_line(triton, protocol: str) -> None:
    with Embedder(url(triton, protocol), model="minilm_does_not_exist") as embedder:
        with pytest.raises(ClientError, match="(?i)unknown model|not found") as exc:
            embedder.embed(["hello"])
    assert "\n" not in str(exc.value)


# --------------------------------------------------------------------- one bad request among valid ones
ROUNDS = 3
VALID = 6
SEQ = 16


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("form", FORMS)
def test_one_bad_request_never_fails_its_neighbours(triton, embedders, form: str, protocol: str) -> None:
    """A bad request fired with 6 valid ones at once, 3 rounds: the batcher merges them (the server's
    statistics show it), the bad one fails alone and every valid one gets the embedding it gets alone.

    A long valid request goes first, so the seven queue up behind it and reach the model in one execute.
    """
    tok = Tokenizer(BUILD)
    sentences = read_sentences("eval_sentences")[: ROUNDS * VALID]
    valid = [tok([s], pad_to=SEQ) for s in sentences]
    alone = [embedders[form, protocol].infer(ids, mask) for ids, mask in valid]
    bad_ids, bad_mask = valid[0][0].copy(), valid[0][1].copy()
    bad_ids[0, 5] = VOCAB
    blocker = tok(read_sentences("corpus")[:8], pad_to=512)  # ~0.9 s even for OpenVINO on an idle machine
    stats = embedders[form, "http"]
    merged_rounds = 0
    for r in range(ROUNDS):
        requests = [blocker, *valid[r * VALID : (r + 1) * VALID], (bad_ids, bad_mask)]
        clients = [Embedder(url(triton, protocol), model=form) for _ in requests]
        calls = [partial(c.infer, *req) for c, req in zip(clients, requests, strict=True)]
        results, executions, grew = co_batched_round(calls, stats, form, head_start_s=0.3)
        for c in clients:
            c.close()

        own_alone, needle = alone[r * VALID : (r + 1) * VALID], f"{VOCAB} at [0, 5]"
        assert_only_the_bad_one_failed(results, own_alone, TOLERANCE[form], needle, f"round {r}")
        assert executions < len(requests), f"round {r}: nothing merged: {grew}"
        merged_rounds += any(b > 1 for b in grew)
    assert merged_rounds == ROUNDS


# ------------------------------------------------------------------------------------- the client API
def test_embedder_batches_more_rows_than_max_batch_size_in_order(embedders) -> None:
    """Distinct sentences, more than two chunks: row i is sentence i's own embedding (chunk order kept)."""
    from tritonserving.runners import load_form

    embedder = embedders["minilm_onnx", "http"]
    sentences = read_sentences("eval_sentences")[: 2 * embedder.max_batch_size + 5]
    served = embedder.embed(sentences)
    assert served.shape == (len(sentences), EMBED_DIM) and served.dtype == np.float32
    run, tok = load_form("fp32", BUILD), Tokenizer(BUILD)
    alone = np.concatenate([run(*tok([s])) for s in sentences])
    assert float(np.max(np.abs(served - alone))) <= 1e-5
    # rows are distinct, so a swapped chunk could not pass the check above
    assert min(np.linalg.norm(alone[i] - alone[j]) for i in range(len(alone)) for j in range(i)) > 0.05


@pytest.mark.parametrize(
    "call,needle",
    [
        (lambda e: e.embed("one string"), "list of sentences"),
        (lambda e: e.embed([]), "no sentences"),
        (lambda e: e.embed(["ok", 3]), "sentence 1 is a int"),
        (lambda e: e.embed_ids(*_with("ids", 0, 1, VOCAB)), f"[0, {VOCAB})"),
    ],
)
def test_embedder_refuses_bad_input_in_one_line(embedders, call, needle: str) -> None:
    with pytest.raises(ClientError) as exc:
        call(embedders["minilm_onnx", "grpc"])
    assert needle in str(exc.value) and "\n" not in str(exc.value)


@pytest.mark.parametrize("bad_url", ["ftp://127.0.0.1:8000", "127.0.0.1", "http://"])
def test_embedder_refuses_bad_urls(bad_url: str) -> None:
    with pytest.raises(ClientError, match="url"):
        Embedder(bad_url)
