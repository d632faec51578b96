"""tritonserving: all-MiniLM-L6-v2 from PyPI to ONNX, fp16/int8 ONNX, TensorRT plans and Triton repositories.

Two halves share this package:

* export side (issue 6): ``model_source`` (find the model offline), ``export`` (ONNX fp32 with pooling and
  L2 norm), ``precision`` (fp16, int8 CPU form, symmetric int8 Q/DQ form for TensorRT), ``trt_plans``
  (trtexec commands), ``repository`` (GPU and CPU model repositories), ``forms`` (in-process runners),
  ``drift`` (offline forms x forms report);
* serving side (issue 7): native Triton server, perf_analyzer, the ``triton-compare`` client.

Everything generated lands under ``build/`` (git-ignored).
"""

__version__ = "0.1.0"

#: The contract every form follows (see ../shared/DESIGN.md).
INPUT_NAMES = ("input_ids", "attention_mask")
OUTPUT_NAME = "sentence_embedding"
EMBED_DIM = 384
MAX_SEQ_LEN = 512
