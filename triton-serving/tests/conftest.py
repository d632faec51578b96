"""Fixtures that start the REAL Triton server (native, from the nvidia-pytriton wheel) or reuse a compose one.

Order, as in every folder of the workspace: a server that ``docker compose up`` started on the compose ports
(8000/8001) is reused, but only if ``/v2/health/ready`` answers AND ``/v2`` says it is Triton AND it serves
the forms we test; otherwise the native server starts on free loopback ports and is stopped at the end.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

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


# ---------------------------------------------------------------------------------- the real CPU repository
def expected_cpu_forms() -> list[str]:
    """The four forms of the CPU repository (names from the export side's in-process mapping)."""
    from tritonserving.forms import TRITON_MODEL

    return sorted(TRITON_MODEL)


@pytest.fixture(scope="session")
def cpu_repository() -> Path:
    """build/repository-cpu, generated (with the export and the forms, all cached) if it is missing."""
    repo = ns.CPU_REPOSITORY
    if not all((repo / form / "config.pbtxt").exists() for form in expected_cpu_forms()):
        from tritonserving.export import ensure_all

        ensure_all(ns.BUILD)
    return repo


def _compose_server(forms: list[str]) -> ServerInfo | None:
    """The compose-started server on 8000/8001, if it really is Triton and serves every form we test."""
    http = f"http://127.0.0.1:{ns.DEFAULT_HTTP_PORT}"
    if not ns.is_triton(http):
        return None
    ready = [f for f in forms if ns.http_get_json(f"{http}/v2/models/{f}/ready")[0] == 200]
    if ready != forms:
        return None
    return ServerInfo(http, f"127.0.0.1:{ns.DEFAULT_GRPC_PORT}", forms)


@pytest.fixture(scope="session")
def triton(cpu_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerInfo]:
    """The real Triton serving the CPU forms: reused from compose if there, else native on free ports."""
    forms = expected_cpu_forms()
    reused = _compose_server(forms)
    if reused is not None:
        yield reused
        return
    log = tmp_path_factory.mktemp("triton-log") / "tritonserver.log"
    server = ns.NativeTriton(cpu_repository, log_file=log)
    server.start(timeout=300)
    try:
        yield ServerInfo(server.http_url, server.grpc_url, forms, native=server)
    finally:
        server.stop()
