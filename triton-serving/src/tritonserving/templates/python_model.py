"""Triton python-backend model: one all-MiniLM-L6-v2 form on CPU (ONNX Runtime or OpenVINO).

Generated into ``build/repository-cpu/<model>/1/model.py`` by ``tritonserving.repository``; the model file
sits next to it. Which engine and file are used comes from the ``parameters`` of ``config.pbtxt``:
``engine`` (``onnxruntime`` | ``openvino``), ``model_file``, ``threads`` (0 = engine default).

The stub runs with the venv's python (its ``bin`` is first on PATH), so onnxruntime/openvino/numpy import.
Requests gathered by the dynamic batcher may have different sequence lengths: they are right-padded
(ids 0, mask 0) into one batch, run once and split again; masked positions change nothing in the output.
"""

import json
import os

import numpy as np
import triton_python_backend_utils as pb_utils

MAX_SEQ_LEN = 512
INPUTS = ("input_ids", "attention_mask")
OUTPUT = "sentence_embedding"


def _error(message):
    """A failed response with a one-line message (the request fails, the model keeps serving)."""
    return pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(message))


class TritonPythonModel:
    """Loads the form once per instance; ``execute`` runs one padded batch per call."""

    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        self.engine = params.get("engine", "onnxruntime")
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
            return np.array(result[self._out], dtype=np.float32)
        out = self._session.run([OUTPUT], {"input_ids": ids, "attention_mask": mask})[0]
        return np.asarray(out, np.float32)

    @staticmethod
    def _check(ids, mask):
        """One-line reason why a request is bad, or None."""
        if ids.ndim != 2 or mask.ndim != 2:
            return f"input_ids and attention_mask must be 2-D [batch, seq], got {ids.shape} and {mask.shape}"
        if ids.shape != mask.shape:
            return f"input_ids shape {ids.shape} and attention_mask shape {mask.shape} differ"
        if ids.shape[0] == 0 or ids.shape[1] == 0:
            return f"empty batch: size {ids.shape} (need at least 1 sequence of at least 1 token)"
        if ids.shape[1] > MAX_SEQ_LEN:
            return f"sequence length {ids.shape[1]} exceeds the model's maximum of {MAX_SEQ_LEN} tokens"
        return None

    def execute(self, requests):
        responses = [None] * len(requests)
        good = []
        for i, request in enumerate(requests):
            ids, mask = (pb_utils.get_input_tensor_by_name(request, n).as_numpy() for n in INPUTS)
            problem = self._check(ids, mask)
            if problem:
                responses[i] = _error(problem)
            else:
                good.append((i, ids.astype(np.int64, copy=False), mask.astype(np.int64, copy=False)))
        if good:
            seq = max(ids.shape[1] for _, ids, _ in good)
            rows = sum(ids.shape[0] for _, ids, _ in good)
            all_ids = np.zeros((rows, seq), np.int64)
            all_mask = np.zeros((rows, seq), np.int64)
            at = 0
            for _, ids, mask in good:
                n, s = ids.shape
                all_ids[at : at + n, :s], all_mask[at : at + n, :s] = ids, mask
                at += n
            try:
                emb = self._run(all_ids, all_mask)
            except Exception as exc:  # an engine error becomes a per-request error, the model keeps serving
                message = f"{self.engine} failed: {str(exc).splitlines()[0][:300]}"
                for i, _, _ in good:
                    responses[i] = _error(message)
                return responses
            at = 0
            for i, ids, _ in good:
                n = ids.shape[0]
                out = pb_utils.Tensor(OUTPUT, np.ascontiguousarray(emb[at : at + n]))
                responses[i] = pb_utils.InferenceResponse(output_tensors=[out])
                at += n
        return responses

    def finalize(self):
        self._session = None
        self._request = None
