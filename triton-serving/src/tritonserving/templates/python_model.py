"""Triton python-backend model: one all-MiniLM-L6-v2 form on CPU (ONNX Runtime or OpenVINO).

Generated into ``build/repository-cpu/<model>/1/model.py`` by ``tritonserving.repository``, next to the model
file and ``input_checks.py`` (the request rules, shared with the client). ``config.pbtxt`` ``parameters`` say
which engine and file to use: ``engine`` (``onnxruntime`` | ``openvino``), ``model_file``, ``threads``
(0 = engine default) and ``vocab_size`` (from the exported model: ids at or above it are rejected).

Every request stands on its own: each is checked before the dynamic batcher's requests are merged, a bad one
gets its own one-line error and the valid ones of the same ``execute`` are answered; if the engine still
raises on the merged batch, the requests run one by one so that only the culprit fails.
Valid requests of different sequence lengths are right-padded (ids 0, mask 0) into one batch, run once and
split again; masked positions change nothing in the output.

The stub runs with the venv's python (its ``bin`` is first on PATH), so onnxruntime/openvino/numpy import.
"""

import json
import os
import sys

import numpy as np
import triton_python_backend_utils as pb_utils

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from input_checks import INPUT_NAMES, request_problem  # noqa: E402 - copied next to this file

OUTPUT = "sentence_embedding"


def _error(message):
    """A failed response with a one-line message (the request fails, the model keeps serving)."""
    return pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(message))


def _answer(embeddings):
    return pb_utils.InferenceResponse(
        output_tensors=[pb_utils.Tensor(OUTPUT, np.ascontiguousarray(embeddings))]
    )


def _engine_error(engine, exc):
    return f"{engine} failed on this request: {' '.join(str(exc).split())[:300]}"


def merge(batch):
    """Right-pad ``[(ids, mask), ...]`` into one ``(ids, mask)`` pair, in order."""
    seq = max(ids.shape[1] for ids, _ in batch)
    rows = sum(ids.shape[0] for ids, _ in batch)
    all_ids = np.zeros((rows, seq), np.int64)
    all_mask = np.zeros((rows, seq), np.int64)
    at = 0
    for ids, mask in batch:
        n, s = ids.shape
        all_ids[at : at + n, :s], all_mask[at : at + n, :s] = ids, mask
        at += n
    return all_ids, all_mask


class TritonPythonModel:
    """Loads the form once per instance; ``execute`` runs one padded batch per call."""

    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        self.engine = params.get("engine", "onnxruntime")
        self.vocab_size = int(params["vocab_size"])
        threads = int(params.get("threads", "0") or 0)
        path = os.path.join(args["model_repository"], args["model_version"], params["model_file"])
        if self.engine == "openvino":
            import openvino as ov

            cfg = {"INFERENCE_PRECISION_HINT": "f32"}
            if threads:
                cfg["INFERENCE_NUM_THREADS"] = threads
            compiled = ov.Core().compile_model(path, "CPU", cfg)
            self._request = compiled.create_infer_request()
            self._out = compiled.output(OUTPUT)
        else:
            import onnxruntime as ort

            opts = ort.SessionOptions()
            if threads:
                opts.intra_op_num_threads = threads
            self._session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])

    def _run(self, ids, mask):
        if self.engine == "openvino":
            result = self._request.infer({"input_ids": ids, "attention_mask": mask})
            out = np.array(result[self._out], dtype=np.float32)
        else:
            out = np.asarray(
                self._session.run([OUTPUT], {"input_ids": ids, "attention_mask": mask})[0], np.float32
            )
        if out.shape[0] != ids.shape[0]:
            raise RuntimeError(f"engine returned {out.shape[0]} rows for {ids.shape[0]}")
        return out

    def _run_each(self, good, responses):
        """Isolation fallback: one engine call per request, so an error fails only its own request."""
        for i, (ids, mask) in good:
            try:
                responses[i] = _answer(self._run(ids, mask))
            except Exception as exc:  # noqa: BLE001 - becomes this request's error, the model keeps serving
                responses[i] = _error(_engine_error(self.engine, exc))

    def execute(self, requests):
        responses = [None] * len(requests)
        good = []
        for i, request in enumerate(requests):
            ids, mask = (pb_utils.get_input_tensor_by_name(request, n).as_numpy() for n in INPUT_NAMES)
            problem = request_problem(ids, mask, self.vocab_size)
            if problem:
                responses[i] = _error(problem)
            else:
                good.append((i, (ids, mask)))
        if not good:
            return responses
        try:
            emb = self._run(*merge([pair for _, pair in good]))
        except Exception:  # noqa: BLE001 - retried request by request below
            self._run_each(good, responses)
            return responses
        at = 0
        for i, (ids, _) in good:
            n = ids.shape[0]
            responses[i] = _answer(emb[at : at + n])
            at += n
        return responses

    def finalize(self):
        self._session = None
        self._request = None
