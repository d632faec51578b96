"""The data every step shares: the build folder and its layout, the shipped sentence sets, the one tokenizer.

* Build folder: ``$TRITON_SERVING_BUILD`` if set; else ``build/`` of the source checkout this package runs
  from (an editable install, or ``src/`` on the path); else ``./build`` of the working directory (a regular
  install lives in site-packages, where nothing may be written).
* Build layout: ``LAYOUT`` says where every artefact lives in it; every module asks ``artefact(name)``.
* Sentence sets: ``assets/<name>.txt``, one sentence a line; blank lines and ``#`` comments are skipped.
* Tokenizer: the ``tokenizer.json`` the export saves next to the fp32 model, loaded with the ``tokenizers``
  library (the one ``transformers`` wraps, without its seconds of import time). The export side (drift,
  calibration, tests) and the serving side (``Embedder`` with ``inputs="ids"``, perf) all tokenise through
  it; the server's tokenizer model loads the same file.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path

import numpy as np

from tritonserving.input_checks import INPUT_NAMES

ASSETS = Path(__file__).resolve().parent / "assets"
SENTENCE_SETS = ("calibration", "eval_sentences", "corpus", "queries")
#: sentence-transformers' max_seq_length for all-MiniLM-L6-v2: longer input is truncated
DEFAULT_MAX_LENGTH = 256


class DataError(RuntimeError):
    """A missing or unreadable input; the message says what to run or pass."""


def source_folder() -> Path | None:
    """The ``triton-serving/`` checkout this module runs from, or None when installed into site-packages."""
    folder = Path(__file__).resolve().parents[2]
    pyproject = folder / "pyproject.toml"
    if pyproject.is_file() and 'name = "tritonserving"' in pyproject.read_text(encoding="utf-8"):
        return folder
    return None


def default_build_dir() -> Path:
    """Where generated files go (see the module docstring for the order)."""
    if os.environ.get("TRITON_SERVING_BUILD"):
        return Path(os.environ["TRITON_SERVING_BUILD"])
    folder = source_folder()
    return (folder or Path.cwd()) / "build"


BUILD = default_build_dir()

#: every artefact of a build folder -> its path in it; the one place that says where things live
LAYOUT: dict[str, str] = {
    # the fp32 export (optimum): graph, tokenizer and model config side by side
    "export": "onnx/fp32",
    "fp32": "onnx/fp32/model.onnx",
    "tokenizer": "onnx/fp32/tokenizer.json",
    "model_config": "onnx/fp32/config.json",
    # the reduced-precision forms (``precision``); the runners' form names are these keys
    "fp16": "onnx/fp16/model.onnx",
    "int8": "onnx/int8/model.onnx",
    "int8_trt": "onnx/int8_trt/model.onnx",
    "openvino": "openvino/model.xml",
    "openvino_weights": "openvino/model.bin",
    "int8_study": "int8_study.md",
    # what serves them (``repository``, ``trt_plans``, ``native_server``)
    "repository-cpu": "repository-cpu",
    "repository-gpu": "repository-gpu",
    "plans_script": "trt/build_plans.sh",
    "native_staging": "triton-native",
    # reports
    "drift": "drift",
    "compare": "compare",
    "perf": "perf",
    "bench_batching": "bench-batching",
}


def artefact(name: str, build_dir: str | os.PathLike = BUILD) -> Path:
    """Where artefact ``name`` (a key of ``LAYOUT``) lives under ``build_dir``."""
    if name not in LAYOUT:
        raise KeyError(f"no artefact {name!r} in the build layout; known: {', '.join(LAYOUT)}")
    return Path(build_dir) / LAYOUT[name]


def read_lines(path: str | os.PathLike) -> list[str]:
    """Non-empty, non-comment lines of a text file, stripped."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file (one sentence a line)")
    lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
    return [ln for ln in lines if ln and not ln.startswith("#")]


def read_sentences(name: str) -> list[str]:
    """A shipped sentence set, by name (see ``SENTENCE_SETS``)."""
    if name not in SENTENCE_SETS:
        raise DataError(f"no shipped sentence set {name!r}; choose one of {', '.join(SENTENCE_SETS)}")
    return read_lines(ASSETS / f"{name}.txt")


def vocab_size(build_dir: str | os.PathLike = BUILD) -> int:
    """Rows of the exported model's embedding table (``config.json``): every id must be below it."""
    config = artefact("model_config", build_dir)
    if not config.is_file():
        raise DataError(f"{config} not found: run `make export` first")
    return int(json.loads(config.read_text())["vocab_size"])


class Tokenizer:
    """The model's WordPiece tokenizer: pads to the longest in a batch (or to ``pad_to``), truncates."""

    def __init__(self, build_dir: str | os.PathLike = BUILD, max_length: int = DEFAULT_MAX_LENGTH) -> None:
        from tokenizers import Tokenizer as HFTokenizer

        path = artefact("tokenizer", build_dir)
        if not path.is_file():
            raise DataError(f"{path} not found: run `make export` first (it saves the tokenizer)")
        self.tok = HFTokenizer.from_file(str(path))
        self.max_length = max_length
        self.pad_id = self.tok.token_to_id("[PAD]") or 0
        self.cls_id = self.tok.token_to_id("[CLS]")
        self.sep_id = self.tok.token_to_id("[SEP]")

    @property
    def vocab_size(self) -> int:
        return int(self.tok.get_vocab_size())

    def __call__(self, sentences: list[str], pad_to: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``input_ids`` and ``attention_mask`` (INT64, [batch, longest or pad_to]) for ``sentences``."""
        if not sentences:
            raise DataError("no sentences to tokenise")
        if not all(isinstance(s, str) for s in sentences):
            raise DataError("sentences must be strings")
        self.tok.enable_truncation(pad_to or self.max_length)
        self.tok.enable_padding(pad_id=self.pad_id, pad_token="[PAD]", length=pad_to)
        enc = self.tok.encode_batch(list(sentences))
        ids = np.array([e.ids for e in enc], dtype=np.int64)
        mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
        return ids, mask

    def batch(self, sentences: list[str], pad_to: int | None = None) -> dict[str, np.ndarray]:
        """The same as a dict keyed by the model's input names (what ONNX Runtime and OpenVINO take)."""
        return dict(zip(INPUT_NAMES, self(sentences, pad_to), strict=True))

    def fixed_length(self, text: str, seq_len: int, count: int) -> np.ndarray:
        """``count`` realistic id rows of exactly ``seq_len`` tokens: [CLS] window of real text [SEP].

        Why: perf_analyzer needs fixed shapes per run, and synthetic random ids are not what a model sees.
        Windows slide over the token stream of ``text`` (repeated if it is too short).
        """
        if seq_len < 3:
            raise DataError(f"sequence length {seq_len} too short (minimum 3)")
        self.tok.no_padding()
        self.tok.no_truncation()
        stream = self.tok.encode(text, add_special_tokens=False).ids
        body = seq_len - 2
        while len(stream) < body + count:
            stream = stream + stream
        step = max(1, (len(stream) - body) // max(1, count))
        rows = [[self.cls_id, *stream[i * step : i * step + body], self.sep_id] for i in range(count)]
        return np.array(rows, dtype=np.int64)

    def fixed_length_text(self, text: str, seq_len: int, count: int) -> list[str]:
        """``count`` windows of whole words of ``text`` that tokenise to exactly ``seq_len`` tokens.

        The text-in models' counterpart of ``fixed_length``: the same realistic text, as strings, so that
        perf_analyzer compares server-side tokenisation with ids of the same length. WordPiece splits each
        whitespace-separated word on its own, so a window's length is the sum of its words' lengths.
        """
        if seq_len < 3:
            raise DataError(f"sequence length {seq_len} too short (minimum 3)")
        self.tok.no_padding()
        self.tok.no_truncation()
        words = text.split()
        pieces = [len(e.ids) for e in self.tok.encode_batch(words, add_special_tokens=False)]
        windows: list[str] = []
        while len(windows) < count:
            found = len(windows)
            for start in range(len(words)):
                total, end = 0, start
                while end < len(words) and total < seq_len - 2:
                    total, end = total + pieces[end], end + 1
                if total == seq_len - 2 and len(windows) < count:
                    windows.append(" ".join(words[start:end]))
            if len(windows) == found:
                raise DataError(f"no window of whole words makes exactly {seq_len} tokens")
            words, pieces = words + words, pieces + pieces  # too short: go round the text again
        return windows


@lru_cache(maxsize=4)
def tokenizer(build_dir: str | os.PathLike = BUILD) -> Tokenizer:
    """The shared tokenizer of a build folder (loaded once per process)."""
    return Tokenizer(build_dir)


def batches_of(
    sentences: list[str], build_dir: str | os.PathLike = BUILD, size: int = 16
) -> list[dict[str, np.ndarray]]:
    """Tokenised batches of ``size`` sentences (padded per batch, as a server batch would be)."""
    tok = tokenizer(str(build_dir))
    return [tok.batch(sentences[i : i + size]) for i in range(0, len(sentences), size)]
