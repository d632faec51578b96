"""In-process runners for every form that runs on this machine, for comparisons and tests.

Usage (the tests compare Triton's answers with in-process ones this way)::

    from tritonserving.data import tokenizer
    from tritonserving.runners import load_form
    run = load_form("fp32", build_dir=BUILD)        # or "openvino", "fp16", "int8", "int8_trt"
    ids, mask = tokenizer("build")(["hello world"])
    emb = run(ids, mask)                             # np.float32 [batch, 384], L2-normalised

Each form maps to the Triton model that serves it (``TRITON_MODEL``); the TensorRT plans cannot run
here, so on CPU the ONNX fp16 / int8 graphs stand in for ``minilm_trt_fp16`` / ``minilm_trt_int8``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from tritonserving import OUTPUT_NAME
from tritonserving.data import BUILD

Runner = Callable[[np.ndarray, np.ndarray], np.ndarray]

#: form name -> (engine, path of its model under build/)
FORMS: dict[str, tuple[str, str]] = {
    "fp32": ("onnxruntime", "onnx/fp32/model.onnx"),
    "openvino": ("openvino", "openvino/model.xml"),
    "fp16": ("onnxruntime", "onnx/fp16/model.onnx"),
    "int8": ("onnxruntime", "onnx/int8/model.onnx"),
    "int8_trt": ("onnxruntime", "onnx/int8_trt/model.onnx"),
}

#: Triton model names of the CPU repository -> the in-process form that computes the same thing
TRITON_MODEL: dict[str, str] = {
    "minilm_onnx": "fp32",
    "minilm_openvino": "openvino",
    "minilm_onnx_fp16": "fp16",
    "minilm_onnx_int8": "int8",
}


def form_path(name: str, build_dir: str | os.PathLike = BUILD) -> Path:
    """Path of the model file of form ``name``."""
    if name not in FORMS:
        raise KeyError(f"unknown form {name!r}; known: {', '.join(FORMS)}")
    return Path(build_dir) / FORMS[name][1]


def ort_runner(path: str | os.PathLike, threads: int | None = None) -> Runner:
    """ONNX Runtime CPU session wrapped as ``f(ids, mask) -> embeddings``."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

    def run(ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        feeds = {"input_ids": np.asarray(ids, np.int64), "attention_mask": np.asarray(mask, np.int64)}
        return np.asarray(sess.run([OUTPUT_NAME], feeds)[0], dtype=np.float32)

    return run


def openvino_runner(path: str | os.PathLike, threads: int | None = None) -> Runner:
    """OpenVINO CPU compiled model (IR or ONNX file) wrapped as ``f(ids, mask) -> embeddings``."""
    import openvino as ov

    core = ov.Core()
    config = {"INFERENCE_NUM_THREADS": threads} if threads else {}
    # accuracy first: keep fp32 inference on CPUs that would otherwise pick bf16
    config["INFERENCE_PRECISION_HINT"] = "f32"
    compiled = core.compile_model(str(path), "CPU", config)
    request = compiled.create_infer_request()

    def run(ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        feeds = {"input_ids": np.asarray(ids, np.int64), "attention_mask": np.asarray(mask, np.int64)}
        result = request.infer(feeds)
        return np.array(result[compiled.output(OUTPUT_NAME)], dtype=np.float32)

    return run


def load_form(name: str, build_dir: str | os.PathLike = BUILD, threads: int | None = None) -> Runner:
    """Runner for form ``name`` (see ``FORMS``); the model file must have been built (``make precision``)."""
    path = form_path(name, build_dir)
    if not path.is_file():
        raise FileNotFoundError(f"form {name}: {path} is missing; run `make precision` first")
    engine = FORMS[name][0]
    return openvino_runner(path, threads) if engine == "openvino" else ort_runner(path, threads)


def embed(runner: Runner, batches: list[dict[str, np.ndarray]]) -> np.ndarray:
    """Run ``runner`` over pre-tokenised batches and stack the embeddings."""
    return np.concatenate([runner(b["input_ids"], b["attention_mask"]) for b in batches], axis=0)
