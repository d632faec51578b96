"""Fixtures that start the REAL Triton server (native, from the nvidia-pytriton wheel).

By default the tests run against a server they start themselves (free loopback ports, stopped at the end):
whatever else answers on 8000/8001 (a compose container, ``make serve``) may serve older models, which Triton
does not reload. ``TRITON_SERVING_TEST_URL=http://host:8000`` (gRPC: ``TRITON_SERVING_TEST_GRPC``, default
the HTTP port + 1) asks to test an existing server instead; it must then be Triton and serve this very build
(the ``build_hash`` of every generated config), or the run fails at once.

Before collection the session builds the cached artefacts (export, forms, repositories: minutes the
first time, instant after), since test modules read the export at import. A missing prerequisite of the
native server (a shared libpython, the wheel's stub for this Python) is one line saying what to install:
the tests that need the server are skipped, or fail under ``CI=true``.
"""

from __future__ import annotations

import os
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import numpy as np
import pytest

from tritonserving import native_server as ns
from tritonserving import text_model
from tritonserving.client import ClientError, Embedder

PROTOCOLS = ("grpc", "http")
#: max |served - in-process| per embedding element: same model file, same engine, same ids; only thread
#: scheduling and batch composition differ, so the tolerance is float noise, looser in reduced precision
TOLERANCE = {"minilm_onnx": 1e-5, "minilm_openvino": 1e-4, "minilm_onnx_fp16": 1e-3, "minilm_onnx_int8": 1e-3}


def pytest_sessionstart(session: pytest.Session) -> None:
    """Build the export, the forms and the repositories (cached) before any test module reads them."""
    forms = expected_cpu_forms()
    models = [*forms, "tokenizer", *(text_model(f) for f in forms)]
    if not all((ns.CPU_REPOSITORY / model / "config.pbtxt").exists() for model in models):
        from tritonserving.export import ensure_all

        print(f"\nbuilding the export, its forms and the repositories in {ns.BUILD} (cached; minutes once)")
        ensure_all(ns.BUILD)


def prerequisite_missing(line: str) -> NoReturn:
    """A missing prerequisite: one line naming it and how to install it; skipped, a failure under CI=true."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"missing prerequisite: {line}", pytrace=False)
    pytest.skip(f"missing prerequisite: {line}")


@pytest.fixture(scope="session")
def native_prerequisites() -> None:
    """What the native tritonserver needs besides the venv: the stub for this Python, a shared libpython."""
    try:
        ns.stage()
        ns.python_libdir()
    except ns.NativeServerError as e:
        prerequisite_missing(str(e))


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
def tiny_server(native_prerequisites: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerInfo]:
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
    from tritonserving.runners import TRITON_MODEL

    return sorted(TRITON_MODEL)


@pytest.fixture(scope="session")
def cpu_repository() -> Path:
    """build/repository-cpu, which the session built before collection (pytest_sessionstart)."""
    return ns.CPU_REPOSITORY


def requested_server(forms: list[str], repository: Path) -> ServerInfo | None:
    """The server ``TRITON_SERVING_TEST_URL`` names, checked to serve this build; None if unset."""
    http = os.environ.get("TRITON_SERVING_TEST_URL", "").rstrip("/")
    if not http:
        return None
    if "://" not in http:
        http = f"http://{http}"
    host, port = http.split("://", 1)[1].rsplit(":", 1)
    grpc = os.environ.get("TRITON_SERVING_TEST_GRPC", f"{host}:{int(port) + 1}")
    if not ns.is_triton(http):
        pytest.fail(f"TRITON_SERVING_TEST_URL={http} is not a ready Triton server", pytrace=False)
    stale = ns.build_mismatch(http, repository)
    if stale:
        pytest.fail(f"TRITON_SERVING_TEST_URL: {stale}; restart it on this build or unset it", pytrace=False)
    return ServerInfo(http, grpc, forms)


@pytest.fixture(scope="session")
def triton(
    native_prerequisites: None, cpu_repository: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerInfo]:
    """The real Triton serving the CPU forms: native on free ports, or the one the environment names."""
    forms = expected_cpu_forms()
    reused = requested_server(forms, cpu_repository)
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


# ----------------------------------------------------------------------------- helpers of the served tests
def url(triton: ServerInfo, protocol: str) -> str:
    """The URL ``Embedder`` takes for ``protocol``."""
    return triton.http_url if protocol == "http" else f"grpc://{triton.grpc_url}"


def statistics(embedder: Embedder, form: str) -> tuple[int, dict[int, int]]:
    """(execution count, {batch size: executions}) of ``form`` from the server's statistics."""
    stats = embedder._client.get_inference_statistics(form)["model_stats"][0]
    batches = {int(b["batch_size"]): int(b["compute_infer"]["count"]) for b in stats.get("batch_stats", [])}
    return int(stats["execution_count"]), batches


def co_batched_round(
    calls: list[Callable[[], np.ndarray]], stats: Embedder, model: str, head_start_s: float
) -> tuple[list[np.ndarray | ClientError], int, dict[int, int]]:
    """Fire ``calls[0]`` (a request that keeps ``model`` busy), then all the others at once behind it.

    Returns each call's result (or its ``ClientError``), how many executions ``model`` ran meanwhile and
    {batch size: new executions of that size}, from the server's statistics (read through ``stats``).
    """
    start = threading.Barrier(len(calls) - 1)

    def send(i: int) -> np.ndarray | ClientError:
        if i > 0:
            start.wait(timeout=60)
        try:
            return calls[i]()
        except ClientError as e:
            return e

    executions_before, batches_before = statistics(stats, model)
    with ThreadPoolExecutor(len(calls)) as pool:
        first = pool.submit(send, 0)
        time.sleep(head_start_s)  # lets the blocker reach the model first (no timing is asserted)
        rest = [pool.submit(send, i) for i in range(1, len(calls))]
        results = [first.result(timeout=300)] + [f.result(timeout=300) for f in rest]
    executions_after, batches_after = statistics(stats, model)
    grew = {b: n - batches_before.get(b, 0) for b, n in batches_after.items()}
    return results, executions_after - executions_before, {b: n for b, n in grew.items() if n > 0}


def assert_only_the_bad_one_failed(
    results: list, alone: list[np.ndarray], tolerance: float, needle: str, label: str
) -> None:
    """``results`` of a co-batched round (blocker, valid ones, the bad one last): every valid request got
    the embedding it gets alone, the bad one its own error naming ``needle``."""
    assert isinstance(results[0], np.ndarray), results[0]
    for k, got in enumerate(results[1:-1]):
        assert isinstance(got, np.ndarray), f"{label}: valid request {k} failed: {got}"
        assert float(np.max(np.abs(got - alone[k]))) <= tolerance
    assert isinstance(results[-1], ClientError) and needle in str(results[-1]), results[-1]
