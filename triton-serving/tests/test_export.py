"""The fp32 ONNX export: contract of the graph, equality with sentence-transformers, offline model source."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from tritonserving import EMBED_DIM, INPUT_NAMES, OUTPUT_NAME
from tritonserving.model_source import ModelSourceError, packaged_model_dir, resolve_model

FOLDER = Path(__file__).resolve().parents[1]
BUILD = FOLDER / "build"

# varied on purpose: short, long, punctuation only, numbers, code, URLs, several languages and scripts, emoji
VARIED = [
    "Hello world.",
    "a",
    "?!",
    "The quick brown fox jumps over the lazy dog.",
    "Ünïcödé, accents: café, naïve, façade; Grüße aus Köln.",
    "東京は日本の首都で、人口は約1400万人です。",
    "Москва — столица России.",
    "def f(x):\n    return x ** 2  # squares",
    "SELECT * FROM t WHERE id IN (1, 2, 3);",
    "https://example.org/a/b?c=d&e=f#g",
    "3.14159 2.71828 1.41421 6.02214076e23",
    "I love this! 😀🚀🎉",
    "   leading and trailing spaces   ",
    "word " * 300,  # truncated at 256 tokens, like sentence-transformers' max_seq_length
    "In 1969, Apollo 11 landed on the Moon; Neil Armstrong and Buzz Aldrin walked on its surface while "
    "Michael Collins orbited above in the command module Columbia.",
]


@pytest.fixture(scope="module")
def fp32_model() -> Path:
    from tritonserving.export import export_onnx

    return export_onnx(None, BUILD / "onnx" / "fp32")


def test_graph_has_the_contract_inputs_and_output(fp32_model: Path) -> None:
    model = onnx.load(str(fp32_model))
    inputs = {i.name: i.type.tensor_type for i in model.graph.input}
    assert tuple(inputs) == INPUT_NAMES
    for t in inputs.values():
        assert t.elem_type == onnx.TensorProto.INT64
        assert [d.dim_param for d in t.shape.dim] == ["batch_size", "sequence_length"]
    (out,) = model.graph.output
    assert out.name == OUTPUT_NAME
    assert out.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    dims = out.type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch_size" and dims[1].dim_value == EMBED_DIM
    for name in ("tokenizer.json", "vocab.txt", "tokenizer_config.json"):
        assert (fp32_model.parent / name).is_file()


def test_onnx_equals_sentence_transformers(fp32_model: Path) -> None:
    """Max L2 norm of the difference <= 1e-5 per sentence, over the varied set and the held-apart set."""
    from sentence_transformers import SentenceTransformer

    from tritonserving.data import batches_of, read_sentences
    from tritonserving.runners import embed, ort_runner

    sentences = VARIED + read_sentences("eval_sentences")
    st = SentenceTransformer(str(packaged_model_dir()), device="cpu")
    assert st.max_seq_length == 256
    ref = st.encode(sentences, batch_size=16, convert_to_numpy=True, normalize_embeddings=False)
    got = embed(ort_runner(fp32_model), batches_of(sentences, BUILD))
    diff = np.linalg.norm(got - ref, axis=1)
    assert got.shape == (len(sentences), EMBED_DIM)
    assert float(diff.max()) <= 1e-5, f"max L2 diff {diff.max():.2e} on {sentences[int(diff.argmax())]!r}"
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)  # pooled and L2-normalised


def test_dynamic_batch_and_sequence_axes(fp32_model: Path) -> None:
    from tritonserving.runners import ort_runner

    run = ort_runner(fp32_model)
    for batch, seq in ((1, 2), (3, 17), (5, 512)):
        ids = np.full((batch, seq), 1996, np.int64)
        ids[:, 0], ids[:, -1] = 101, 102
        out = run(ids, np.ones_like(ids))
        assert out.shape == (batch, EMBED_DIM) and out.dtype == np.float32


def test_padding_does_not_change_the_embedding(fp32_model: Path) -> None:
    """A sentence alone and padded inside a batch embeds the same (pooling honours the mask)."""
    from tritonserving.data import tokenizer
    from tritonserving.runners import ort_runner

    run = ort_runner(fp32_model)
    alone = tokenizer(BUILD).batch(["short one"])
    batch = tokenizer(BUILD).batch(["short one", "a much longer sentence that forces padding"])
    a = run(alone["input_ids"], alone["attention_mask"])[0]
    b = run(batch["input_ids"], batch["attention_mask"])[0]
    assert np.linalg.norm(a - b) <= 1e-5


def test_packaged_model_is_found_offline() -> None:
    path = resolve_model(None)
    assert path == packaged_model_dir()
    assert (path / "model.safetensors").is_file() and (path / "modules.json").is_file()
    assert resolve_model("sentence-transformers/all-MiniLM-L6-v2") == path
    assert resolve_model(str(path)) == path


def test_bad_model_gets_a_clear_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(ModelSourceError, match="no config.json"):
        resolve_model(tmp_path)
    with pytest.raises(ModelSourceError, match="not in the Hugging Face cache"):
        resolve_model("nobody/no-such-model-here")
    cli = Path(sys.executable).parent / "triton-serving"
    proc = subprocess.run(
        [
            str(cli),
            "export",
            "--model",
            str(tmp_path / "missing-dir-xyz"),
            "--build-dir",
            str(tmp_path / "b"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stdout.strip().startswith("error: --model") and len(proc.stdout.strip().splitlines()) == 1
    assert "Traceback" not in proc.stderr


def test_cli_help_lists_the_subcommands() -> None:
    cli = Path(sys.executable).parent / "triton-serving"
    out = subprocess.run([str(cli), "--help"], capture_output=True, text=True, timeout=60).stdout
    for sub in ("export", "precision", "plans", "repo", "drift", "serve", "perf"):
        assert sub in out


def test_export_another_model_directory(tmp_path: Path, fp32_model: Path) -> None:
    """``--model <dir>``: a copy elsewhere exports to the same embeddings; a non-ST model is refused."""
    import shutil

    from tritonserving.data import tokenizer
    from tritonserving.export import export_onnx
    from tritonserving.runners import ort_runner

    copy = tmp_path / "my-model"
    shutil.copytree(packaged_model_dir(), copy)
    out = export_onnx(str(copy), tmp_path / "out")
    assert (tmp_path / "out" / "tokenizer.json").is_file()
    batch = tokenizer(BUILD).batch(VARIED[:6])
    a = ort_runner(fp32_model)(batch["input_ids"], batch["attention_mask"])
    b = ort_runner(out)(batch["input_ids"], batch["attention_mask"])
    assert float(np.abs(a - b).max()) <= 1e-6

    (copy / "modules.json").unlink()
    with pytest.raises(ModelSourceError, match="not a sentence-transformers model"):
        export_onnx(str(copy), tmp_path / "out2")
