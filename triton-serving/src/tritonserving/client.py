"""A thin Triton client for the MiniLM forms: tokenise, list the loaded forms, infer over gRPC or HTTP.

Why a module of its own: ``triton-compare``, ``perf`` and the tests all need the same three things (token ids
made as the model's own tokenizer makes them, the forms a server really has loaded, and an infer call
that splits a batch to the model's ``max_batch_size`` and turns server errors into one readable line).

The tokenizer is loaded with the ``tokenizers`` library straight from ``build/onnx/fp32/tokenizer.json``
(written by the export): importing ``transformers`` would cost seconds for nothing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tritonserving import EMBED_DIM, INPUT_NAMES, MAX_SEQ_LEN, OUTPUT_NAME

FOLDER = Path(__file__).resolve().parents[2]
BUILD = Path(os.environ.get("TRITON_SERVING_BUILD", FOLDER / "build"))
ASSETS = Path(__file__).resolve().parent / "assets"
#: every served form's name starts with this (see ../shared/DESIGN.md)
FORM_PREFIX = "minilm_"


class ClientError(RuntimeError):
    """A one-line, user-facing reason why a request or a set-up step failed."""


def read_lines(path: Path) -> list[str]:
    """Non-empty, non-comment lines of a text file (the shipped sentence sets)."""
    lines = [ln.strip() for ln in Path(path).read_text(encoding="utf-8").splitlines()]
    return [ln for ln in lines if ln and not ln.startswith("#")]


def tokenizer_path(build_dir: Path = BUILD) -> Path:
    """``tokenizer.json`` saved next to the exported fp32 model."""
    p = Path(build_dir) / "onnx" / "fp32" / "tokenizer.json"
    if not p.exists():
        raise ClientError(
            f"{p} not found: run `make export` first (it saves the tokenizer next to the model)"
        )
    return p


class Tokenizer:
    """The model's WordPiece tokenizer: pads to the longest in a batch, truncates at ``max_length``."""

    def __init__(self, path: Path | None = None, max_length: int = 128) -> None:
        from tokenizers import Tokenizer as HFTokenizer

        self.tok = HFTokenizer.from_file(str(path or tokenizer_path()))
        self.tok.no_padding()
        self.tok.no_truncation()
        self.max_length = max_length
        self.pad_id = self.tok.token_to_id("[PAD]") or 0
        self.cls_id = self.tok.token_to_id("[CLS]")
        self.sep_id = self.tok.token_to_id("[SEP]")

    def __call__(self, sentences: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """``input_ids`` and ``attention_mask`` (INT64, [batch, longest]) for ``sentences``."""
        if not sentences:
            raise ClientError("no sentences to tokenise")
        self.tok.enable_truncation(self.max_length)
        self.tok.enable_padding(pad_id=self.pad_id, pad_token="[PAD]")
        enc = self.tok.encode_batch(list(sentences))
        ids = np.array([e.ids for e in enc], dtype=np.int64)
        mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
        return ids, mask

    def fixed_length(self, text: str, seq_len: int, count: int) -> np.ndarray:
        """``count`` realistic id rows of exactly ``seq_len`` tokens: [CLS] window of real text [SEP].

        Why: perf_analyzer needs fixed shapes per run, and synthetic random ids are not what a model sees.
        Windows slide over the token stream of ``text`` (repeated if it is too short).
        """
        self.tok.no_padding()
        self.tok.no_truncation()
        stream = self.tok.encode(text, add_special_tokens=False).ids
        body = seq_len - 2
        if body < 1:
            raise ClientError(f"sequence length {seq_len} too short (minimum 3)")
        while len(stream) < body + count:
            stream = stream + stream
        step = max(1, (len(stream) - body) // max(1, count))
        rows = [[self.cls_id, *stream[i * step : i * step + body], self.sep_id] for i in range(count)]
        return np.array(rows, dtype=np.int64)


def default_sentences() -> dict[str, list[str]]:
    """The shipped sentence sets: held-apart evaluation sentences, retrieval queries and corpus."""
    return {name: read_lines(ASSETS / f"{name}.txt") for name in ("eval_sentences", "queries", "corpus")}


def save_figure(fig, title: str, png: Path) -> Path:
    """Title, tight layout, write ``png`` (parents created), close: the common tail of every plot here."""
    import matplotlib.pyplot as plt

    fig.suptitle(title)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png


# ------------------------------------------------------------------------------------------------- Triton
def _split_url(url: str) -> str:
    """tritonclient wants host:port, people type http://host:port."""
    return url.split("://", 1)[-1].rstrip("/")


def _error_line(exc: BaseException) -> str:
    """First line of a tritonclient exception, without the stack of the library."""
    msg = getattr(exc, "message", None)
    text = msg() if callable(msg) else str(exc)
    return " ".join(str(text).split())[:400]


@dataclass
class TritonForms:
    """The MiniLM forms one Triton server serves, reachable over HTTP and gRPC."""

    http_url: str = "127.0.0.1:8000"
    grpc_url: str = "127.0.0.1:8001"
    timeout_s: float = 120.0

    def __post_init__(self) -> None:
        import tritonclient.grpc as grpcclient
        import tritonclient.http as httpclient

        self.http_url, self.grpc_url = _split_url(self.http_url), _split_url(self.grpc_url)
        self.http = httpclient.InferenceServerClient(
            url=self.http_url, connection_timeout=self.timeout_s, network_timeout=self.timeout_s
        )
        self.grpc = grpcclient.InferenceServerClient(url=self.grpc_url)
        self._max_batch: dict[str, int] = {}

    def close(self) -> None:
        """Close both connections: a graceful stop waits (up to its exit timeout) for open HTTP ones."""
        for c in (self.http, self.grpc):
            try:
                c.close()
            except Exception:  # noqa: BLE001, S110 - closing is best effort
                pass

    def __enter__(self) -> TritonForms:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def ready(self) -> bool:
        """Server live and ready (all models loaded)."""
        try:
            return bool(self.http.is_server_ready())
        except Exception:  # noqa: BLE001 - any failure means "not ready", reported by the caller
            return False

    def forms(self) -> list[str]:
        """Names of the READY models whose name says they are a MiniLM form, sorted with fp32 onnx first."""
        try:
            index = self.http.get_model_repository_index()
        except Exception as e:  # noqa: BLE001
            raise ClientError(f"cannot list models at http://{self.http_url}: {_error_line(e)}") from None
        names = sorted(
            m["name"] for m in index if m.get("state") == "READY" and m["name"].startswith(FORM_PREFIX)
        )
        return sorted(names, key=lambda n: (n != "minilm_onnx", n))

    def max_batch_size(self, model: str) -> int:
        """``max_batch_size`` from the model's config (cached); requests are split to fit it."""
        if model not in self._max_batch:
            try:
                cfg = self.http.get_model_config(model)
            except Exception as e:  # noqa: BLE001
                raise ClientError(f"model {model!r}: {_error_line(e)}") from None
            self._max_batch[model] = int(cfg.get("max_batch_size", 0)) or 1_000_000
        return self._max_batch[model]

    def infer_once(self, model: str, ids: np.ndarray, mask: np.ndarray, protocol: str = "grpc") -> np.ndarray:
        """One request, exactly as given (no splitting, no checks: tests send malformed ones on purpose)."""
        import tritonclient.grpc as grpcclient
        import tritonclient.http as httpclient

        mod, client = (grpcclient, self.grpc) if protocol == "grpc" else (httpclient, self.http)
        inputs = []
        for name, arr in zip(INPUT_NAMES, (ids, mask), strict=True):
            dtype = {np.dtype(np.int64): "INT64", np.dtype(np.int32): "INT32", np.dtype(np.float32): "FP32"}
            inp = mod.InferInput(name, list(arr.shape), dtype.get(arr.dtype, "INT64"))
            inp.set_data_from_numpy(arr)
            inputs.append(inp)
        outputs = [mod.InferRequestedOutput(OUTPUT_NAME)]
        try:
            if protocol == "grpc":
                result = client.infer(model, inputs, outputs=outputs, client_timeout=self.timeout_s)
            else:
                result = client.infer(model, inputs, outputs=outputs)
        except Exception as e:  # noqa: BLE001
            raise ClientError(f"{model} ({protocol}): {_error_line(e)}") from None
        return result.as_numpy(OUTPUT_NAME)

    def embed(self, model: str, ids: np.ndarray, mask: np.ndarray, protocol: str = "grpc") -> np.ndarray:
        """Embeddings for a whole batch, split into requests of at most the model's ``max_batch_size``."""
        if ids.ndim != 2 or ids.shape != mask.shape:
            raise ClientError(
                f"input_ids {ids.shape} and attention_mask {mask.shape} must be equal 2-D shapes"
            )
        if ids.shape[1] > MAX_SEQ_LEN:
            raise ClientError(
                f"sequence length {ids.shape[1]} > {MAX_SEQ_LEN}, the model's maximum; truncate"
            )
        step = self.max_batch_size(model)
        parts = [
            self.infer_once(model, ids[i : i + step], mask[i : i + step], protocol)
            for i in range(0, len(ids), step)
        ]
        out = np.concatenate(parts, axis=0)
        if out.shape != (len(ids), EMBED_DIM):
            raise ClientError(f"{model} returned shape {out.shape}, expected ({len(ids)}, {EMBED_DIM})")
        return out
