"""Text in, embeddings out: the ``<form>_text`` ensembles (the server tokenises, then the form) on Triton."""

from __future__ import annotations

import json
import re
import urllib.request
from functools import partial
from pathlib import Path

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

from tritonserving import EMBED_DIM, MAX_TEXT_TOKENS, text_model
from tritonserving.client import ClientError, Embedder
from tritonserving.data import BUILD, Tokenizer, read_sentences

FORMS = expected_cpu_forms()
README = Path(__file__).resolve().parents[1] / "README.md"
#: a sentence far beyond MAX_TEXT_TOKENS: the server truncates it, as the client-side tokenizer does
LONG = " ".join(read_sentences("corpus")) * 3


@pytest.fixture(scope="module")
def clients(triton) -> dict[tuple[str, str, str], Embedder]:
    """(form, protocol, inputs) -> Embedder."""
    made = {(f, p, i): Embedder(url(triton, p), model=f, inputs=i)
            for f in FORMS for p in PROTOCOLS for i in ("text", "ids")}  # fmt: skip
    yield made
    for client in made.values():
        client.close()


def test_every_form_has_a_ready_text_model(clients) -> None:
    for form in FORMS:
        embedder = clients[form, "http", "text"]
        assert embedder.target == text_model(form) and embedder.ready()
        meta = embedder._client.get_model_metadata(text_model(form))
        (inp,) = meta["inputs"]
        assert (inp["name"], inp["datatype"], inp["shape"]) == ("text", "BYTES", [-1, 1])
        (out,) = meta["outputs"]
        assert (out["name"], out["datatype"], out["shape"]) == ("sentence_embedding", "FP32", [-1, EMBED_DIM])


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("form", FORMS)
def test_text_in_equals_ids_in(clients, form: str, protocol: str) -> None:
    """The same sentences as text (server tokenises) and as ids (client tokenises): the same embeddings,
    a sentence longer than the model's 256 tokens included (both sides truncate it alike)."""
    sentences = [*read_sentences("eval_sentences")[:12], LONG]
    assert len(Tokenizer(BUILD, max_length=10_000)([LONG])[0][0]) > 4 * MAX_TEXT_TOKENS
    text = clients[form, protocol, "text"].embed(sentences)
    ids = clients[form, protocol, "ids"].embed(sentences)
    assert text.shape == ids.shape == (len(sentences), EMBED_DIM) and text.dtype == np.float32
    assert float(np.max(np.abs(text - ids))) <= TOLERANCE[form]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_text_needs_no_export_on_the_client(triton, clients, tmp_path, protocol: str) -> None:
    """The default Embedder sends strings: it works without any build folder (no tokenizer.json here)."""
    nothing = tmp_path / "no-build"
    with Embedder(url(triton, protocol), model="minilm_onnx", build_dir=nothing) as embedder:
        got = embedder.embed(["a sentence", "another one"])
        with pytest.raises(ClientError, match="make export") as exc:
            embedder.embed_ids(np.array([[101, 102]]), np.array([[1, 1]]))  # ids need the export's files
    assert "\n" not in str(exc.value)
    want = clients["minilm_onnx", protocol, "ids"].embed(["a sentence", "another one"])
    assert float(np.max(np.abs(got - want))) <= TOLERANCE["minilm_onnx"]


def readme_curl() -> tuple[str, bytes]:
    """(path, JSON body) of the README's first ``curl ... /infer`` line: the example a user tries first."""
    lines = README.read_text().splitlines()
    line = next(ln for ln in lines if ln.lstrip().startswith("curl ") and "/infer" in ln)
    path = re.search(r"\s(?:https?://)?[\w.-]+:\d+(/\S+)", line)
    body = re.search(r"-d '([^']+)'", line)
    assert path and body, f"README's first curl line has no URL or -d '<json>': {line}"
    return path.group(1), body.group(1).encode()


def test_readme_curl_example_gets_embeddings(triton, clients) -> None:
    """The README's curl line (a JSON body of strings, nothing binary) answered by the server as it is."""
    path, body = readme_curl()
    request = urllib.request.Request(f"{triton.http_url}{path}", data=body, method="POST")
    with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310 - loopback
        answer = json.loads(response.read())
    sent = json.loads(body)["inputs"][0]
    (out,) = answer["outputs"]
    assert out["name"] == "sentence_embedding" and out["shape"] == [len(sent["data"]), EMBED_DIM]
    got = np.array(out["data"], np.float32).reshape(out["shape"])
    want = clients[answer["model_name"].removesuffix("_text"), "grpc", "text"].embed(sent["data"])
    np.testing.assert_allclose(got, want, atol=1e-6)


#: case -> (the rows sent in one request, what its one-line error must say)
BAD_TEXT = {
    "empty string": ([""], "text[0]: empty string"),
    "blank string": (["  \t "], "text[0]: empty string"),
    "not UTF-8": ([b"caf\xe9"], "text[0]: not valid UTF-8 (byte 0xe9 at offset 3)"),
    "bad row among good ones": (["good", "also good", b"\xff"], "text[2]: not valid UTF-8 (byte 0xff"),
}


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("case", list(BAD_TEXT))
def test_bad_text_gets_its_own_one_line_error(clients, case: str, protocol: str) -> None:
    rows, needle = BAD_TEXT[case]
    embedder = clients["minilm_onnx", protocol, "text"]
    with pytest.raises(ClientError) as served:
        embedder.infer_text(rows)  # sent as it is, no client-side check
    message = str(served.value)
    assert "\n" not in message and len(message) < 400 and needle in message, message
    assert embedder.infer_text(["the model keeps serving"]).shape == (1, EMBED_DIM)


def test_client_refuses_bad_text_before_sending(clients) -> None:
    embedder = clients["minilm_onnx", "grpc", "text"]
    with pytest.raises(ClientError, match=r"text\[1\]: empty string") as exc:
        embedder.embed(["fine", ""])
    assert "\n" not in str(exc.value)


# --------------------------------------------------------------------- one bad request among valid ones
ROUNDS = 3
VALID = 6


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_one_bad_text_request_never_fails_its_neighbours(triton, clients, protocol: str) -> None:
    """A non-UTF-8 request fired with 6 valid ones at once, 3 rounds: the tokenizer's batcher merges them
    (its statistics show it), the bad one fails alone and every valid one gets the embedding it gets alone.

    A request of 32 long strings goes first and keeps the tokenizer busy, so the seven queue up behind it.
    """
    form = "minilm_onnx"
    sentences = read_sentences("eval_sentences")[: ROUNDS * VALID]
    alone = [clients[form, protocol, "text"].infer_text([s]) for s in sentences]
    blocker = [LONG * 3] * 32  # 1.5 s of tokenising here under load: the others queue behind it
    stats = clients[form, "http", "text"]
    merged_rounds = 0
    for r in range(ROUNDS):
        rows = [blocker, *([s] for s in sentences[r * VALID : (r + 1) * VALID]), [b"caf\xe9"]]
        own = [Embedder(url(triton, protocol), model=form) for _ in rows]
        calls = [partial(c.infer_text, x) for c, x in zip(own, rows, strict=True)]
        results, executions, grew = co_batched_round(calls, stats, "tokenizer", head_start_s=0.2)
        for c in own:
            c.close()

        own_alone, needle = alone[r * VALID : (r + 1) * VALID], "text[0]: not valid UTF-8"
        assert_only_the_bad_one_failed(results, own_alone, TOLERANCE[form], needle, f"round {r}")
        assert executions < len(rows), f"round {r}: nothing merged: {grew}"
        merged_rounds += any(1 < b < len(blocker) for b in grew)  # the blocker runs alone (a full batch)
    assert merged_rounds == ROUNDS
