"""Reduced-precision forms of the fp32 ONNX export: fp16, int8 (CPU), int8 Q/DQ (TensorRT), OpenVINO IR.

* ``fp16``: ``onnxruntime.transformers.float16`` with fp32 inputs/outputs (``keep_io_types``), plain ONNX
  ops only, so both ONNX Runtime on CPU and TensorRT's parser take it.
* ``int8`` / ``int8_trt``: static quantisation with explicit QuantizeLinear/DequantizeLinear pairs around
  the weight MatMuls, calibrated on the shipped ``assets/calibration.txt``. Plain per-tensor int8 wrecks this
  model (min cosine 0.58 to fp32), so the recipe (found by ``triton-serving precision --study``, numbers in
  ``docs/int8.md``) is:

  1. SmoothQuant-like smoothing (alpha 0.65): per input channel ``j`` of every weight MatMul,
     ``s_j = max|x_j|^alpha / max|W_j|^(1-alpha)``; a ``Mul(x, 1/s)`` node is inserted before the MatMuls
     and ``W`` rows are multiplied by ``s``. Exact in fp32; it moves LayerNorm outlier channels into the
     weights, which are quantised per output channel and do not mind.
  2. Sensitive layers stay fp32: the FFN output MatMuls (their GELU input has per-token outliers that no
     per-channel trick fixes) and the FFN input MatMuls of layers 0 and 3 (the two most sensitive ones).
  3. The attention score MatMuls (activation x activation) are not quantised.

  ``int8`` (CPU) uses asymmetric uint8 activations (ORT's fast U8S8 path on x86, more accurate here);
  ``int8_trt`` uses symmetric int8 activations and weights (zero point 0), the only Q/DQ TensorRT accepts.
* ``openvino``: the fp32 ONNX converted to OpenVINO IR (``model.xml``/``model.bin``)
  by ``openvino.convert_model``, used by the CPU repository's OpenVINO model (loads faster than ONNX).

``build_all(build_dir)`` makes all of them, skipping any output newer than its inputs.
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from tritonserving.data import BUILD, artefact

log = logging.getLogger(__name__)

CALIB_BATCH = 8
CALIB_SEQ = 48  # fixed length: histogram calibrators need equal shapes across batches


@dataclass(frozen=True)
class Int8Recipe:
    """What to quantise and how; each field is one of the knobs tried in the study."""

    name: str
    symmetric_activations: bool = True
    per_channel: bool = True
    smooth_alpha: float | None = 0.65
    calibration: str = "MinMax"  # or "Percentile", "Entropy"
    keep_ffn_out_fp32: bool = True
    fp32_intermediate_layers: tuple[int, ...] = (0, 3)
    note: str = ""
    extra: dict = field(default_factory=dict)


CPU_RECIPE = Int8Recipe(
    "int8",
    symmetric_activations=False,
    note="smooth 0.65, FFN-out + FFN-in of layers 0,3 fp32, uint8 asym activations",
)
TRT_RECIPE = Int8Recipe(
    "int8_trt",
    symmetric_activations=True,
    note="same, symmetric int8 activations (zero point 0) for TensorRT",
)


# ---------------------------------------------------------------- calibration and smoothing helpers


def calibration_batches(build_dir: str | os.PathLike) -> list[dict[str, np.ndarray]]:
    """The shipped calibration sentences, tokenised into full batches of one fixed shape."""
    from tritonserving.data import read_sentences, tokenizer

    tok, sents = tokenizer(str(build_dir)), read_sentences("calibration")
    starts = range(0, len(sents) - CALIB_BATCH + 1, CALIB_BATCH)
    return [tok.batch(sents[i : i + CALIB_BATCH], pad_to=CALIB_SEQ) for i in starts]


def _weight_matmuls(model) -> list:
    """MatMul nodes whose second input is an initializer (the Linear layers)."""
    inits = {t.name for t in model.graph.initializer}
    return [n for n in model.graph.node if n.op_type == "MatMul" and n.input[1] in inits]


def activation_absmax(model, tensors: list[str], batches: list[dict]) -> dict[str, np.ndarray]:
    """Per-channel (last axis) max |x| of intermediate ``tensors`` over real (unpadded) tokens."""
    import onnx
    import onnxruntime as ort
    from onnx import helper

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    for name in tensors:
        probe.graph.output.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    sess = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    amax: dict[str, np.ndarray] = {}
    for batch in batches:
        mask = batch["attention_mask"].astype(bool)
        for name, arr in zip(tensors, sess.run(tensors, batch), strict=True):
            vals = arr[mask] if arr.ndim == 3 else arr.reshape(-1, arr.shape[-1])
            cur = np.abs(vals).max(axis=0)
            amax[name] = cur if name not in amax else np.maximum(amax[name], cur)
    return amax


def smooth(model, alpha: float, batches: list[dict]):
    """SmoothQuant-like rescaling (see module docstring); returns a new, numerically equivalent model."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    matmuls = _weight_matmuls(model)
    acts = sorted({n.input[0] for n in matmuls})
    amax = activation_absmax(model, acts, batches)
    for act in acts:
        consumers = [n for n in matmuls if n.input[0] == act]
        weights = [numpy_helper.to_array(inits[n.input[1]]) for n in consumers]
        wmax = np.max([np.abs(w).max(axis=1) for w in weights], axis=0)
        scale = (amax[act] ** alpha / np.maximum(wmax, 1e-5) ** (1 - alpha)).clip(1e-5).astype(np.float32)
        inv = numpy_helper.from_array((1.0 / scale).astype(np.float32), f"{act}_smooth_inv")
        graph.initializer.append(inv)
        smoothed = f"{act}_smoothed"
        first = min(list(graph.node).index(n) for n in consumers)
        graph.node.insert(first, helper.make_node("Mul", [act, inv.name], [smoothed], name=f"{act}_smooth"))
        for node, w in zip(consumers, weights, strict=True):
            node.input[0] = smoothed
            inits[node.input[1]].CopyFrom(
                numpy_helper.from_array((w * scale[:, None]).astype(np.float32), node.input[1])
            )
    return model


def nodes_to_quantize(model, recipe: Int8Recipe) -> list[str]:
    """Names of the weight MatMuls the recipe quantises (attention score MatMuls are never in the list)."""
    chosen = []
    for node in _weight_matmuls(model):
        name = node.name
        is_ffn_out = "/output/dense/" in name and "attention" not in name
        if recipe.keep_ffn_out_fp32 and is_ffn_out:
            continue
        if "intermediate" in name and any(f"layer.{i}/" in name for i in recipe.fp32_intermediate_layers):
            continue
        chosen.append(name)
    return chosen


def quantize_int8(
    fp32: str | os.PathLike, out: str | os.PathLike, recipe: Int8Recipe, batches: list[dict]
) -> Path:
    """Static Q/DQ quantisation of ``fp32`` following ``recipe``; writes ``out``."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(batches)

        def get_next(self):
            return next(self._it, None)

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ts-int8-") as tmp:
        pre = Path(tmp) / "pre.onnx"
        # symbolic shape inference cannot finish on this graph (pooling's dynamic shapes): ONNX's is enough
        quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
        model = onnx.load(str(pre))
        if recipe.smooth_alpha is not None:
            model = smooth(model, recipe.smooth_alpha, batches)
            onnx.save(model, str(pre))
        extra = {"WeightSymmetric": True, "QDQOpTypePerChannelSupportToAxis": {"MatMul": 1}}
        if recipe.symmetric_activations:
            extra["ActivationSymmetric"] = True
        extra.update(recipe.extra)
        quantize_static(
            str(pre),
            str(out),
            Reader(),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=["MatMul"],
            nodes_to_quantize=nodes_to_quantize(model, recipe),
            per_channel=recipe.per_channel,
            activation_type=QuantType.QInt8 if recipe.symmetric_activations else QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=getattr(CalibrationMethod, recipe.calibration),
            extra_options=extra,
        )
    return out


def trt_qdq_problems(path: str | os.PathLike) -> list[str]:
    """Why TensorRT would refuse this Q/DQ model: non-int8 or non-zero zero points (empty list = fine)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    inits = {t.name: t for t in model.graph.initializer}
    problems = []
    qdq = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    if not qdq:
        problems.append("no QuantizeLinear/DequantizeLinear nodes")
    for node in qdq:
        if len(node.input) < 3 or node.input[2] not in inits:
            problems.append(f"{node.name}: no constant zero point")
            continue
        zp = inits[node.input[2]]
        if zp.data_type != onnx.TensorProto.INT8:
            problems.append(f"{node.name}: zero point type {onnx.TensorProto.DataType.Name(zp.data_type)}")
        elif np.any(numpy_helper.to_array(zp) != 0):
            problems.append(f"{node.name}: non-zero zero point")
    return problems


# ---------------------------------------------------------------- fp16 and OpenVINO


def build_fp16(fp32: str | os.PathLike, out: str | os.PathLike) -> Path:
    """fp16 weights and compute, fp32 inputs/outputs, standard ops only."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    model = convert_float_to_float16(onnx.load(str(fp32)), keep_io_types=True)
    onnx.save(model, str(out))
    return out


def build_openvino(fp32: str | os.PathLike, out: str | os.PathLike) -> Path:
    """OpenVINO IR (fp32 weights: no fp16 compression, so it matches the fp32 form)."""
    import openvino as ov

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    model = ov.convert_model(str(fp32))
    ov.save_model(model, str(out), compress_to_fp16=False)
    return out


# ---------------------------------------------------------------- accuracy and orchestration


def cosine_to_fp32(
    build_dir: str | os.PathLike, candidate: str | os.PathLike, sentences: list[str] | None = None
) -> tuple[float, float]:
    """(mean, min) cosine between ``candidate`` (an ONNX file) and the fp32 form on a sentence set."""
    from tritonserving.comparison import pair_stats
    from tritonserving.data import batches_of, read_sentences
    from tritonserving.runners import embed, form_path, ort_runner

    sentences = sentences if sentences is not None else read_sentences("eval_sentences")
    batches = batches_of(sentences, build_dir)
    reference = embed(ort_runner(form_path("fp32", build_dir)), batches)
    stats = pair_stats(reference, embed(ort_runner(candidate), batches))
    return stats["mean_cos"], stats["min_cos"]


def _stale(target: Path, *inputs: Path) -> bool:
    if not target.is_file():
        return True
    return any(target.stat().st_mtime < p.stat().st_mtime for p in inputs if p.exists())


def build_all(build_dir: str | os.PathLike = BUILD, force: bool = False) -> dict[str, Path]:
    """Build fp16, int8, int8_trt and OpenVINO forms from ``build/onnx/fp32``; cached per output."""
    from tqdm import tqdm

    from tritonserving.runners import form_path

    build_dir = Path(build_dir)
    fp32 = form_path("fp32", build_dir)
    if not fp32.is_file():
        raise FileNotFoundError(f"{fp32} is missing: run `triton-serving export` (make export) first")
    me = Path(__file__)
    todo = {
        "fp16": lambda out: build_fp16(fp32, out),
        "int8": lambda out: quantize_int8(fp32, out, CPU_RECIPE, calibration_batches(build_dir)),
        "int8_trt": lambda out: quantize_int8(fp32, out, TRT_RECIPE, calibration_batches(build_dir)),
        "openvino": lambda out: build_openvino(fp32, out),
    }
    paths = {}
    bar = tqdm(todo.items(), desc="reduced-precision forms", unit="form")
    for name, make in bar:
        out = form_path(name, build_dir)
        paths[name] = out
        if force or _stale(out, fp32, me):
            bar.set_postfix_str(f"building {name}")
            t0 = time.perf_counter()
            make(out)
            log.info("built %s (%s) in %.1fs", name, out, time.perf_counter() - t0)
        else:
            bar.set_postfix_str(f"{name} up to date")
    problems = trt_qdq_problems(paths["int8_trt"])
    if problems:
        raise RuntimeError(f"int8_trt is not TensorRT-compatible: {problems[:3]}")
    return paths


# ---------------------------------------------------------------- the int8 study (docs/int8.md)

STUDY: list[Int8Recipe] = [
    Int8Recipe(
        "A per-tensor, minmax, all weight MatMuls",
        per_channel=False,
        smooth_alpha=None,
        keep_ffn_out_fp32=False,
        fp32_intermediate_layers=(),
    ),
    Int8Recipe(
        "B per-channel, minmax, all weight MatMuls",
        smooth_alpha=None,
        keep_ffn_out_fp32=False,
        fp32_intermediate_layers=(),
    ),
    Int8Recipe(
        "C per-channel, percentile, all weight MatMuls",
        smooth_alpha=None,
        calibration="Percentile",
        keep_ffn_out_fp32=False,
        fp32_intermediate_layers=(),
    ),
    Int8Recipe("D B + FFN-out MatMuls fp32", smooth_alpha=None, fp32_intermediate_layers=()),
    Int8Recipe("E D + percentile", smooth_alpha=None, calibration="Percentile", fp32_intermediate_layers=()),
    Int8Recipe("F D + smoothing 0.5", smooth_alpha=0.5, fp32_intermediate_layers=()),
    Int8Recipe("G D + smoothing 0.65", smooth_alpha=0.65, fp32_intermediate_layers=()),
    Int8Recipe("H D + smoothing 0.8", smooth_alpha=0.8, fp32_intermediate_layers=()),
    Int8Recipe(
        "I smoothing 0.5, all weight MatMuls",
        smooth_alpha=0.5,
        keep_ffn_out_fp32=False,
        fp32_intermediate_layers=(),
    ),
    Int8Recipe("J G + FFN-in of layers 0,3 fp32 = int8_trt", fp32_intermediate_layers=(0, 3)),
    Int8Recipe("K J + uint8 asym activations = int8 (CPU)", symmetric_activations=False),
    Int8Recipe("L G + all FFN-in fp32", fp32_intermediate_layers=tuple(range(6))),
]


def int8_study(build_dir: str | os.PathLike = BUILD) -> str:
    """Run every recipe of ``STUDY`` and return a markdown table (eval set and corpus+queries)."""
    from tqdm import tqdm

    from tritonserving.data import read_sentences
    from tritonserving.runners import form_path

    build_dir = Path(build_dir)
    fp32 = form_path("fp32", build_dir)
    batches = calibration_batches(build_dir)
    other = read_sentences("corpus") + read_sentences("queries")
    rows = [
        "| recipe | quantised MatMuls | eval mean cos | eval min cos | corpus+queries mean "
        "| corpus+queries min |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    import onnx

    n_weight = len(_weight_matmuls(onnx.load(str(fp32))))
    with tempfile.TemporaryDirectory(prefix="ts-study-") as tmp:
        for recipe in tqdm(STUDY, desc="int8 study", unit="recipe"):
            out = quantize_int8(fp32, Path(tmp) / "m.onnx", recipe, batches)
            n_q = len(nodes_to_quantize(onnx.load(str(fp32)), replace(recipe)))
            mean, low = cosine_to_fp32(build_dir, out)
            mean2, low2 = cosine_to_fp32(build_dir, out, other)
            rows.append(
                f"| {recipe.name} | {n_q}/{n_weight} | {mean:.4f} | {low:.4f} | {mean2:.4f} | {low2:.4f} |"
            )
    return "\n".join(rows)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """CLI arguments of ``triton-serving precision``."""
    parser.add_argument("--build-dir", type=Path, default=BUILD, help=f"output root (default: {BUILD})")
    parser.add_argument("--force", action="store_true", help="rebuild even if up to date")
    parser.add_argument(
        "--study",
        action="store_true",
        help="also run the int8 recipe study (~6 min) and write build/int8_study.md",
    )


def run(args: argparse.Namespace) -> int:
    """``triton-serving precision``: build the reduced-precision forms, print their cosine to fp32."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        paths = build_all(args.build_dir, force=args.force)
    except FileNotFoundError as exc:
        print(f"error: {exc}")
        return 2
    for name in ("fp16", "int8", "int8_trt"):
        mean, low = cosine_to_fp32(args.build_dir, paths[name])
        print(f"{name:9s} {paths[name]}  cosine to fp32 (held-apart set): mean {mean:.4f}  min {low:.4f}")
    print(f"openvino  {paths['openvino']}")
    if args.study:
        table = int8_study(args.build_dir)
        artefact("int8_study", args.build_dir).write_text(table + "\n")
        print(table)
    return 0


__all__ = ["CPU_RECIPE", "TRT_RECIPE", "Int8Recipe", "build_all", "cosine_to_fp32", "trt_qdq_problems"]
