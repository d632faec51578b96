"""Reduced-precision forms: they run on CPU, keep their fp32 I/O, and meet the accuracy targets vs fp32."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from tritonserving import INPUT_NAMES, OUTPUT_NAME
from tritonserving.precision import cosine_to_fp32, trt_qdq_problems

FOLDER = Path(__file__).resolve().parents[1]
BUILD = FOLDER / "build"

# the targets on the held-apart sentence set (assets/eval_sentences.txt, never used for calibration)
INT8_MEAN, INT8_MIN = 0.995, 0.98


@pytest.fixture(scope="module")
def forms() -> dict[str, Path]:
    from tritonserving.export import export_onnx
    from tritonserving.precision import build_all

    export_onnx(None, BUILD / "onnx" / "fp32")
    return build_all(BUILD)


def _io(path: Path) -> tuple[list, list]:
    model = onnx.load(str(path), load_external_data=False)
    ins = [(i.name, i.type.tensor_type.elem_type) for i in model.graph.input]
    outs = [(o.name, o.type.tensor_type.elem_type) for o in model.graph.output]
    return ins, outs


@pytest.mark.parametrize("name", ["fp16", "int8", "int8_trt"])
def test_forms_keep_the_fp32_contract_io(forms, name: str) -> None:
    ins, outs = _io(forms[name])
    assert ins == [(n, onnx.TensorProto.INT64) for n in INPUT_NAMES]
    assert outs == [(OUTPUT_NAME, onnx.TensorProto.FLOAT)]


def test_fp16_graph_computes_in_fp16_and_matches_fp32(forms) -> None:
    model = onnx.load(str(forms["fp16"]))
    fp16_weights = [t for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT16]
    assert len(fp16_weights) > 30
    assert all(n.domain in ("", "ai.onnx") for n in model.graph.node), "standard ops only (for TensorRT)"
    from tritonserving.data import read_sentences

    # ORT's CPU kernels are slow in fp16 (casts around most ops): a subset is enough for a 1e-4 bound
    mean, low = cosine_to_fp32(BUILD, forms["fp16"], read_sentences("eval_sentences")[:24])
    assert mean >= 0.9999 and low >= 0.9995, (mean, low)


def test_int8_cpu_form_meets_the_target(forms) -> None:
    model = onnx.load(str(forms["int8"]))
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("QuantizeLinear") >= 20 and ops.count("DequantizeLinear") >= 40
    mean, low = cosine_to_fp32(BUILD, forms["int8"])
    assert mean >= INT8_MEAN and low >= INT8_MIN, f"int8 mean {mean:.4f} min {low:.4f}"


def test_int8_trt_form_is_symmetric_qdq_and_accurate_on_cpu(forms) -> None:
    """TensorRT takes only int8 Q/DQ with zero point 0: checked, and ORT runs the very same graph here."""
    assert trt_qdq_problems(forms["int8_trt"]) == []
    mean, low = cosine_to_fp32(BUILD, forms["int8_trt"])
    assert mean >= INT8_MEAN and low >= INT8_MIN, f"int8_trt mean {mean:.4f} min {low:.4f}"


def test_qdq_checker_catches_what_tensorrt_refuses(forms) -> None:
    """The CPU form uses uint8 activations with zero points: the checker must say TensorRT would refuse it."""
    problems = trt_qdq_problems(forms["int8"])
    assert problems and any("UINT8" in p for p in problems)
    assert trt_qdq_problems(forms["fp16"]) == ["no QuantizeLinear/DequantizeLinear nodes"]


def test_int8_also_holds_on_unseen_corpus_sentences(forms) -> None:
    """A second held-apart check: the retrieval corpus and queries played no part in choosing the recipe."""
    from tritonserving.data import read_sentences

    other = read_sentences("corpus") + read_sentences("queries")
    for name in ("int8", "int8_trt"):
        mean, low = cosine_to_fp32(BUILD, forms[name], other)
        assert mean >= INT8_MEAN and low >= INT8_MIN, f"{name}: mean {mean:.4f} min {low:.4f}"


def test_openvino_ir_matches_fp32(forms) -> None:
    from tritonserving.data import batches_of, read_sentences
    from tritonserving.runners import embed, load_form

    batches = batches_of(read_sentences("eval_sentences")[:32], BUILD)
    ref = embed(load_form("fp32", BUILD), batches)
    got = embed(load_form("openvino", BUILD), batches)
    assert (forms["openvino"].with_suffix(".bin")).is_file()
    assert float(np.linalg.norm(got - ref, axis=1).max()) <= 1e-4


def test_smoothing_is_exact_in_fp32(forms) -> None:
    """The SmoothQuant-like rescaling alone must not change the fp32 result (it only moves scale around)."""
    import onnxruntime as ort

    from tritonserving.data import batches_of, read_sentences
    from tritonserving.precision import calibration_batches, smooth

    model = onnx.load(str(BUILD / "onnx" / "fp32" / "model.onnx"))
    smoothed = smooth(model, 0.65, calibration_batches(BUILD)[:2])
    assert sum(n.op_type == "Mul" and n.name.endswith("_smooth") for n in smoothed.graph.node) >= 18
    a = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    b = ort.InferenceSession(smoothed.SerializeToString(), providers=["CPUExecutionProvider"])
    (batch,) = batches_of(read_sentences("eval_sentences")[:8], BUILD)
    ea, eb = (s.run([OUTPUT_NAME], batch)[0] for s in (a, b))
    assert float(np.abs(ea - eb).max()) <= 1e-5


def test_missing_fp32_gets_a_clear_error(tmp_path: Path) -> None:
    from tritonserving.precision import build_all

    with pytest.raises(FileNotFoundError, match="make export"):
        build_all(tmp_path)
