"""In-process runners for every form that runs on this machine, for comparisons and tests.

Usage (the tests compare Triton's answers with in-process ones this way)::

    from tritonserving.data import tokenizer
    from tritonserving.runners import load_form
    run = load_form("fp32", build_dir=BUILD)        # or "openvino", "fp16", "int8", "int8_trt"
    ids, mask = tokenizer("build")(["hello world"])
    emb = run(ids, mask)                             # np.float32 [batch, 384], L2-normalised

``torch_runner()`` is the original sentence-transformers model (PyTorch), the reference of the drift report.
Each form maps to the Triton model that serves it (``TRITON_MODEL``); the TensorRT plans cannot run
here, so on CPU the ONNX fp16 / int8 graphs stand in for ``minilm_trt_fp16`` / ``minilm_trt_int8``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from tritonserving import OUTPUT_NAME
from tritonserving.data import BUILD, artefact

Runner = Callable[[np.ndarray, np.ndarray], np.ndarray]

#: form name (its artefact in ``data.LAYOUT``) -> the engine that runs it
FORMS: dict[str, str] = {
    "fp32": "onnxruntime",
    "openvino": "openvino",
    "fp16": "onnxruntime",
    "int8": "onnxruntime",
    "int8_trt": "onnxruntime",
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
    return artefact(name, build_dir)


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


def torch_runner():
    """The reference: the original sentence-transformers model (PyTorch, fp32) on the same token ids."""
    import torch
    from sentence_transformers import SentenceTransformer

    from tritonserving.model_source import resolve_model

    model = SentenceTransformer(str(resolve_model(None)), device="cpu")
    model.eval()

    def run(ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            feats = {
                "input_ids": torch.from_numpy(np.asarray(ids, np.int64)),
                "attention_mask": torch.from_numpy(np.asarray(mask, np.int64)),
            }
            return model(feats)["sentence_embedding"].numpy().astype(np.float32)

    return run


def load_form(name: str, build_dir: str | os.PathLike = BUILD, threads: int | None = None) -> Runner:
    """Runner for form ``name`` (see ``FORMS``); the model file must have been built (``make precision``)."""
    path = form_path(name, build_dir)
    if not path.is_file():
        raise FileNotFoundError(f"form {name}: {path} is missing; run `make precision` first")
    engine = FORMS[name]
    return openvino_runner(path, threads) if engine == "openvino" else ort_runner(path, threads)


def embed(runner: Runner, batches: list[dict[str, np.ndarray]]) -> np.ndarray:
    """Run ``runner`` over pre-tokenised batches and stack the embeddings."""
    return np.concatenate([runner(b["input_ids"], b["attention_mask"]) for b in batches], axis=0)
