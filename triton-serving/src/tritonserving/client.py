"""``Embedder``: sentences in, unit-length float32 embeddings out, from any MiniLM form Triton serves.

::

    from tritonserving.client import Embedder
    with Embedder("http://127.0.0.1:8000", model="minilm_onnx") as embedder:   # or grpc://127.0.0.1:8001
        vectors = embedder.embed(["a sentence", "another one"])                 # float32 [2, 384]

It tokenises on the client with the tokenizer the export saved (``build/onnx/fp32/tokenizer.json``), sends
chunks of at most the model's ``max_batch_size`` rows, and checks every chunk with the rules the
python-backend models apply (``input_checks``) before sending it: so the same bad input gets the same one-line
error from every form, including the GPU repository's onnxruntime and tensorrt_plan models, which run no code
of ours. Server errors come back as one line too (``ClientError``), never as a library traceback.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from tritonserving import EMBED_DIM, INPUT_NAMES, OUTPUT_NAME
from tritonserving.data import BUILD, DEFAULT_MAX_LENGTH, DataError, Tokenizer, vocab_size
from tritonserving.input_checks import request_problem

#: every served form's name starts with this
FORM_PREFIX = "minilm_"
PROTOCOLS = ("http", "grpc")


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
    """READY models whose name says they are a MiniLM form, ``minilm_onnx`` (the reference) first."""
    import tritonclient.http as httpclient

    address = parse_url(http_address, "http")[1]
    client = httpclient.InferenceServerClient(url=address, connection_timeout=timeout_s)
    try:
        index = client.get_model_repository_index()
    except Exception as e:  # noqa: BLE001 - any failure is reported as one line
        raise ClientError(f"cannot list models at http://{address}: {error_line(e)}") from None
    finally:
        client.close()
    names = [m["name"] for m in index if m.get("state") == "READY" and m["name"].startswith(FORM_PREFIX)]
    return sorted(names, key=lambda n: (n != "minilm_onnx", n))


class Embedder:
    """One served form, over one protocol: ``embed(sentences)`` and ``embed_ids(ids, mask)``."""

    def __init__(
        self,
        url: str,
        model: str = "minilm_onnx",
        protocol: str | None = None,
        build_dir: str | os.PathLike = BUILD,
        max_length: int = DEFAULT_MAX_LENGTH,
        timeout_s: float = 120.0,
    ) -> None:
        self.protocol, self.address = parse_url(url, protocol)
        self.model = model
        self.timeout_s = timeout_s
        try:
            self.tokenizer = Tokenizer(Path(build_dir), max_length=max_length)
            self.vocab_size = vocab_size(build_dir)
        except DataError as e:
            raise ClientError(str(e)) from None
        if self.protocol == "grpc":
            import tritonclient.grpc as module

            self._client = module.InferenceServerClient(url=self.address)
        else:
            import tritonclient.http as module

            self._client = module.InferenceServerClient(
                url=self.address, connection_timeout=timeout_s, network_timeout=timeout_s
            )
        self._module = module
        self._max_batch: int | None = None

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

    def ready(self) -> bool:
        """The model is loaded and ready on the server."""
        try:
            return bool(self._client.is_model_ready(self.model))
        except Exception:  # noqa: BLE001 - any failure means "not ready"
            return False

    @property
    def max_batch_size(self) -> int:
        """The model's ``max_batch_size`` (asked once): the most rows one request may carry."""
        if self._max_batch is None:
            try:
                cfg = self._client.get_model_config(self.model)
            except Exception as e:  # noqa: BLE001
                raise ClientError(f"{self.model} ({self.protocol}): {error_line(e)}") from None
            if self.protocol == "grpc":
                value = cfg.config.max_batch_size
            else:
                value = cfg.get("max_batch_size", 0)
            self._max_batch = int(value) or 1_000_000
        return self._max_batch

    # --------------------------------------------------------------------------------------------- infer
    def infer(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """One request exactly as given: no checks, no splitting (tests send malformed ones on purpose)."""
        datatype = {np.dtype(np.int64): "INT64", np.dtype(np.int32): "INT32", np.dtype(np.float32): "FP32"}
        inputs = []
        for name, arr in zip(INPUT_NAMES, (ids, mask), strict=True):
            inp = self._module.InferInput(name, list(arr.shape), datatype.get(arr.dtype, "INT64"))
            inp.set_data_from_numpy(arr)
            inputs.append(inp)
        outputs = [self._module.InferRequestedOutput(OUTPUT_NAME)]
        extra = {"client_timeout": self.timeout_s} if self.protocol == "grpc" else {}
        try:
            result = self._client.infer(self.model, inputs, outputs=outputs, **extra)
        except Exception as e:  # noqa: BLE001
            raise ClientError(f"{self.model} ({self.protocol}): {error_line(e)}") from None
        return result.as_numpy(OUTPUT_NAME)

    def check(self, ids: np.ndarray, mask: np.ndarray) -> None:
        """Raise ``ClientError`` with the server's one-line rule if the request would be rejected."""
        problem = request_problem(np.asarray(ids), np.asarray(mask), self.vocab_size)
        if problem:
            raise ClientError(f"{self.model}: {problem}")

    def _embed_chunk(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        self.check(ids, mask)
        out = self.infer(ids, mask)
        if out is None or out.shape != (len(ids), EMBED_DIM):
            shape = None if out is None else out.shape
            raise ClientError(f"{self.model} returned shape {shape}, expected ({len(ids)}, {EMBED_DIM})")
        out = out.astype(np.float32, copy=False)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.where(norms == 0, 1.0, norms)

    def embed_ids(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Embeddings of pre-tokenised rows, sent in chunks of at most ``max_batch_size`` rows, in order."""
        ids, mask = np.asarray(ids), np.asarray(mask)
        self.check(ids, mask)
        step = self.max_batch_size
        return np.concatenate([self._embed_chunk(ids[i : i + step], mask[i : i + step])
                               for i in range(0, len(ids), step)])  # fmt: skip

    def embed(self, sentences: list[str]) -> np.ndarray:
        """Unit-length float32 embeddings ``[len(sentences), 384]``, one row per sentence, in order."""
        if isinstance(sentences, str):
            raise ClientError("embed() takes a list of sentences, got one string: wrap it in a list")
        sentences = list(sentences)
        if not sentences:
            raise ClientError("no sentences to embed")
        bad = next((i for i, s in enumerate(sentences) if not isinstance(s, str)), None)
        if bad is not None:
            raise ClientError(f"sentence {bad} is a {type(sentences[bad]).__name__}, not a string")
        step = self.max_batch_size
        return np.concatenate([self._embed_chunk(*self.tokenizer(sentences[i : i + step]))
                               for i in range(0, len(sentences), step)])  # fmt: skip
