"""Fixtures that start the REAL Triton server (native, from the nvidia-pytriton wheel) or reuse a compose one.

Order, as in every folder of the workspace: a server that ``docker compose up`` started on the compose ports
(8000/8001) is reused, but only if ``/v2/health/ready`` answers AND ``/v2`` says it is Triton AND it serves
the forms we test; otherwise the native server starts on free loopback ports and is stopped at the end.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tritonserving import native_server as ns


@dataclass
class ServerInfo:
    """Where a running Triton answers, and which models it serves."""

    http_url: str  # http://127.0.0.1:PORT
    grpc_url: str  # 127.0.0.1:PORT
    models: list[str]
    native: ns.NativeTriton | None = None


TINY_CONFIG = textwrap.dedent(
    """\
    backend: "python"
    max_batch_size: 8
    input [ { name: "input_ids" data_type: TYPE_INT64 dims: [ -1 ] },
            { name: "attention_mask" data_type: TYPE_INT64 dims: [ -1 ] } ]
    output [ { name: "sentence_embedding" data_type: TYPE_FP32 dims: [ 384 ] } ]
    dynamic_batching { }
    instance_group [ { kind: KIND_CPU count: 1 } ]
    """
)
TINY_MODEL = textwrap.dedent(
    """\
    import numpy as np
    import triton_python_backend_utils as pb_utils


    class TritonPythonModel:
        # embedding[:, 0] = sum of masked ids: enough to see the numbers cross the server unchanged
        def execute(self, requests):
            out = []
            for r in requests:
                ids = pb_utils.get_input_tensor_by_name(r, "input_ids").as_numpy()
                mask = pb_utils.get_input_tensor_by_name(r, "attention_mask").as_numpy()
                e = np.zeros((ids.shape[0], 384), np.float32)
                e[:, 0] = (ids * mask).sum(1)
                out.append(pb_utils.InferenceResponse([pb_utils.Tensor("sentence_embedding", e)]))
            return out
    """
)


@pytest.fixture(scope="session")
def tiny_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerInfo]:
    """Native tritonserver with a tiny python-backend model of ours: bring-up, independent of export."""
    repo = tmp_path_factory.mktemp("tiny-repo")
    (repo / "tiny" / "1").mkdir(parents=True)
    (repo / "tiny" / "config.pbtxt").write_text(TINY_CONFIG)
    (repo / "tiny" / "1" / "model.py").write_text(TINY_MODEL)
    log = tmp_path_factory.mktemp("tiny-log") / "tritonserver.log"
    server = ns.NativeTriton(repo, log_file=log)
    server.start(timeout=120)
    try:
        yield ServerInfo(server.http_url, server.grpc_url, ["tiny"], native=server)
    finally:
        server.stop()
