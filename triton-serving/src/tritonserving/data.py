"""The data every step shares: the build folder, the shipped sentence sets and the one tokenizer.

* Build folder: ``$TRITON_SERVING_BUILD`` if set; else ``build/`` of the source checkout this package runs
  from (an editable install, or ``src/`` on the path); else ``./build`` of the working directory (a regular
  install lives in site-packages, where nothing may be written).
* Sentence sets: ``assets/<name>.txt``, one sentence a line; blank lines and ``#`` comments are skipped.
* Tokenizer: the ``tokenizer.json`` the export saves next to the fp32 model, loaded with the ``tokenizers``
  library (the one ``transformers`` wraps, without its seconds of import time). The export side (drift,
  calibration, tests) and the serving side (client, perf) all tokenise through it.
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


def export_dir(build_dir: str | os.PathLike = BUILD) -> Path:
    """``build/onnx/fp32``: the fp32 export with its tokenizer and model config."""
    return Path(build_dir) / "onnx" / "fp32"


def vocab_size(build_dir: str | os.PathLike = BUILD) -> int:
    """Rows of the exported model's embedding table (``config.json``): every id must be below it."""
    config = export_dir(build_dir) / "config.json"
    if not config.is_file():
        raise DataError(f"{config} not found: run `make export` first")
    return int(json.loads(config.read_text())["vocab_size"])


class Tokenizer:
    """The model's WordPiece tokenizer: pads to the longest in a batch (or to ``pad_to``), truncates."""

    def __init__(self, build_dir: str | os.PathLike = BUILD, max_length: int = DEFAULT_MAX_LENGTH) -> None:
        from tokenizers import Tokenizer as HFTokenizer

        path = export_dir(build_dir) / "tokenizer.json"
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
