"""``Embedder``: sentences in, unit-length float32 embeddings out, from any MiniLM form Triton serves.

::

    from tritonserving.client import Embedder
    with Embedder("http://127.0.0.1:8000", model="minilm_onnx") as embedder:   # or grpc://127.0.0.1:8001
        vectors = embedder.embed(["a sentence", "another one"])                 # float32 [2, 384]

By default it sends the strings to the form's text-in model (``minilm_onnx_text``): the server tokenises, so
the client needs no ``tokenizer.json`` and no build folder. ``inputs="ids"`` tokenises on the client instead
(with the tokenizer the export saved, ``build/onnx/fp32/tokenizer.json``) and sends ids and masks to the form
itself, for servers without text-in models (the GPU repository on an image without ``tokenizers``).

Chunks hold at most the model's ``max_batch_size`` rows, and every chunk is checked with the rules the
server's python models apply (``input_checks``) before it is sent: so the same bad input gets the same
one-line error from every form, including the GPU repository's onnxruntime and tensorrt_plan models, which
run no code of ours. Server errors come back as one line too (``ClientError``), never as a library traceback.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from tritonserving import EMBED_DIM, INPUT_NAMES, OUTPUT_NAME, TEXT_INPUT, TEXT_SUFFIX, text_model
from tritonserving.data import BUILD, DEFAULT_MAX_LENGTH, DataError, Tokenizer, vocab_size
from tritonserving.input_checks import request_problem, text_problem

#: every served form's name starts with this
FORM_PREFIX = "minilm_"
PROTOCOLS = ("http", "grpc")
#: what ``Embedder`` sends: strings to ``<form>_text`` (server tokenises) or ids to ``<form>``
INPUTS = ("text", "ids")


class ClientError(RuntimeError):
    """A one-line, user-facing reason why a request or a set-up step failed."""


def parse_url(url: str, protocol: str | None = None) -> tuple[str, str]:
    """``(protocol, host:port)`` from ``http://h:p``, ``grpc://h:p`` or ``h:p`` (default: http)."""
    scheme, sep, address = url.partition("://")
    if not sep:
        scheme, address = protocol or "http", url
    elif protocol and protocol != scheme:
        raise ClientError(f"url {url!r} says {scheme} but protocol={protocol!r}")
    if scheme not in PROTOCOLS:
        raise ClientError(f"url {url!r}: protocol must be one of {', '.join(PROTOCOLS)}")
    address = address.rstrip("/")
    if not address or ":" not in address:
        raise ClientError(f"url {url!r}: expected host:port, e.g. 127.0.0.1:8000 (HTTP) or :8001 (gRPC)")
    return scheme, address


def error_line(exc: BaseException) -> str:
    """The message of a tritonclient exception on one line, without the library's stack."""
    msg = getattr(exc, "message", None)
    text = msg() if callable(msg) else str(exc)
    return " ".join(str(text).split())[:400]


def served_forms(http_address: str, timeout_s: float = 30.0) -> list[str]:
    """READY forms (ids in; their ``_text`` models left out), ``minilm_onnx`` (the reference) first."""
    import tritonclient.http as httpclient

    address = parse_url(http_address, "http")[1]
    client = httpclient.InferenceServerClient(url=address, connection_timeout=timeout_s)
    try:
        index = client.get_model_repository_index()
    except Exception as e:  # noqa: BLE001 - any failure is reported as one line
        raise ClientError(f"cannot list models at http://{address}: {error_line(e)}") from None
    finally:
        client.close()
    ready = [m["name"] for m in index if m.get("state") == "READY"]
    names = [n for n in ready if n.startswith(FORM_PREFIX) and not n.endswith(TEXT_SUFFIX)]
    return sorted(names, key=lambda n: (n != "minilm_onnx", n))


class Embedder:
    """One served form, over one protocol: ``embed(sentences)``, ``embed_ids(ids, mask)``, ``infer*``.

    ``inputs``: ``"text"`` (strings to ``<model>_text``) or ``"ids"`` (client-side tokenizer, ids to
    ``<model>``); ``build_dir`` and ``max_length`` only matter for ids (the export's tokenizer and its
    truncation; the server's tokenizer truncates at 256 tokens).
    """

    def __init__(
        self,
        url: str,
        model: str = "minilm_onnx",
        protocol: str | None = None,
        inputs: str = "text",
        build_dir: str | os.PathLike = BUILD,
        max_length: int = DEFAULT_MAX_LENGTH,
        timeout_s: float = 120.0,
    ) -> None:
        self.protocol, self.address = parse_url(url, protocol)
        if inputs not in INPUTS:
            raise ClientError(f"inputs={inputs!r}: choose one of {', '.join(INPUTS)}")
        self.inputs = inputs
        self.model = model.removesuffix(TEXT_SUFFIX)  # the form; its text-in model is ``text_model``
        self.text_model = text_model(self.model)
        self.timeout_s = timeout_s
        self.build_dir, self.max_length = Path(build_dir), max_length
        self._tokenizer: Tokenizer | None = None
        self._vocab_size: int | None = None
        if self.protocol == "grpc":
            import tritonclient.grpc as module

            self._client = module.InferenceServerClient(url=self.address)
        else:
            import tritonclient.http as module

            self._client = module.InferenceServerClient(
                url=self.address, connection_timeout=timeout_s, network_timeout=timeout_s
            )
        self._module = module
        self._max_batch: dict[str, int] = {}

    # ------------------------------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        """Close the connection: a graceful server stop waits for open HTTP connections."""
        try:
            self._client.close()
        except Exception:  # noqa: BLE001, S110 - closing is best effort
            pass

    def __enter__(self) -> Embedder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def target(self) -> str:
        """The model ``embed`` sends to: the text-in model, or the form itself with ``inputs="ids"``."""
        return self.text_model if self.inputs == "text" else self.model

    def ready(self) -> bool:
        """The model ``embed`` sends to is loaded and ready on the server."""
        try:
            return bool(self._client.is_model_ready(self.target))
        except Exception:  # noqa: BLE001 - any failure means "not ready"
            return False

    # ---------------------------------------------------------------- the export's files (ids mode only)
    @property
    def tokenizer(self) -> Tokenizer:
        """The export's tokenizer, loaded on first use (only ``inputs="ids"`` needs it)."""
        if self._tokenizer is None:
            try:
                self._tokenizer = Tokenizer(self.build_dir, max_length=self.max_length)
            except DataError as e:
                raise ClientError(f"{e} (or use the server's tokenizer: inputs='text')") from None
        return self._tokenizer

    @property
    def vocab_size(self) -> int:
        """Rows of the model's embedding table, from the export (checked ids must be below it)."""
        if self._vocab_size is None:
            try:
                self._vocab_size = vocab_size(self.build_dir)
            except DataError as e:
                raise ClientError(str(e)) from None
        return self._vocab_size

    def max_batch_size_of(self, model: str) -> int:
        """``max_batch_size`` of ``model`` (asked once): the most rows one request may carry."""
        if model not in self._max_batch:
            try:
                cfg = self._client.get_model_config(model)
            except Exception as e:  # noqa: BLE001
                raise ClientError(f"{model} ({self.protocol}): {error_line(e)}") from None
            value = cfg.config.max_batch_size if self.protocol == "grpc" else cfg.get("max_batch_size", 0)
            self._max_batch[model] = int(value) or 1_000_000
        return self._max_batch[model]

    @property
    def max_batch_size(self) -> int:
        """``max_batch_size`` of the model ``embed`` sends to."""
        return self.max_batch_size_of(self.target)

    # --------------------------------------------------------------------------------------------- infer
    def _infer(self, model: str, inputs: list) -> np.ndarray:
        outputs = [self._module.InferRequestedOutput(OUTPUT_NAME)]
        extra = {"client_timeout": self.timeout_s} if self.protocol == "grpc" else {}
        try:
            result = self._client.infer(model, inputs, outputs=outputs, **extra)
        except Exception as e:  # noqa: BLE001
            raise ClientError(f"{model} ({self.protocol}): {error_line(e)}") from None
        return result.as_numpy(OUTPUT_NAME)

    def infer(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """One id request to the form exactly as given: no checks, no splitting (tests send bad ones)."""
        datatype = {np.dtype(np.int64): "INT64", np.dtype(np.int32): "INT32", np.dtype(np.float32): "FP32"}
        inputs = []
        for name, arr in zip(INPUT_NAMES, (ids, mask), strict=True):
            inp = self._module.InferInput(name, list(arr.shape), datatype.get(arr.dtype, "INT64"))
            inp.set_data_from_numpy(arr)
            inputs.append(inp)
        return self._infer(self.model, inputs)

    def infer_text(self, items: list[str | bytes]) -> np.ndarray:
        """One text request to the text-in model exactly as given (str or raw bytes rows), unchecked."""
        arr = np.array([s.encode("utf-8") if isinstance(s, str) else s for s in items], dtype=np.object_)
        arr = arr.reshape(-1, 1)
        inp = self._module.InferInput(TEXT_INPUT, list(arr.shape), "BYTES")
        inp.set_data_from_numpy(arr)
        return self._infer(self.text_model, [inp])

    def check(self, ids: np.ndarray, mask: np.ndarray) -> None:
        """Raise ``ClientError`` with the server's one-line rule if the request would be rejected."""
        problem = request_problem(np.asarray(ids), np.asarray(mask), self.vocab_size)
        if problem:
            raise ClientError(f"{self.model}: {problem}")

    def _unit_rows(self, out: np.ndarray | None, rows: int, model: str) -> np.ndarray:
        if out is None or out.shape != (rows, EMBED_DIM):
            shape = None if out is None else out.shape
            raise ClientError(f"{model} returned shape {shape}, expected ({rows}, {EMBED_DIM})")
        out = out.astype(np.float32, copy=False)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.where(norms == 0, 1.0, norms)

    def _embed_chunk(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        self.check(ids, mask)
        return self._unit_rows(self.infer(ids, mask), len(ids), self.model)

    def _embed_text_chunk(self, sentences: list[str]) -> np.ndarray:
        problem = text_problem(sentences)
        if problem:
            raise ClientError(f"{self.text_model}: {problem}")
        return self._unit_rows(self.infer_text(sentences), len(sentences), self.text_model)

    def embed_ids(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Embeddings of pre-tokenised rows, sent in chunks of at most ``max_batch_size`` rows, in order."""
        ids, mask = np.asarray(ids), np.asarray(mask)
        self.check(ids, mask)
        step = self.max_batch_size_of(self.model)
        return np.concatenate([self._embed_chunk(ids[i : i + step], mask[i : i + step])
                               for i in range(0, len(ids), step)])  # fmt: skip

    def embed(self, sentences: list[str]) -> np.ndarray:
        """Unit-length float32 embeddings ``[len(sentences), 384]``, one row per sentence, in order.

        Strings go to the text-in model (server-side tokenizer) unless the embedder was made with
        ``inputs="ids"``; sentences longer than 256 tokens are truncated either way.
        """
        if isinstance(sentences, str):
            raise ClientError("embed() takes a list of sentences, got one string: wrap it in a list")
        sentences = list(sentences)
        if not sentences:
            raise ClientError("no sentences to embed")
        bad = next((i for i, s in enumerate(sentences) if not isinstance(s, str)), None)
        if bad is not None:
            raise ClientError(f"sentence {bad} is a {type(sentences[bad]).__name__}, not a string")
        step = self.max_batch_size
        chunks = [sentences[i : i + step] for i in range(0, len(sentences), step)]
        if self.inputs == "text":
            return np.concatenate([self._embed_text_chunk(chunk) for chunk in chunks])
        return np.concatenate([self._embed_chunk(*self.tokenizer(chunk)) for chunk in chunks])
