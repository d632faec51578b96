"""The native server is the real Triton 2.51 from the wheel, serving a python-backend model over HTTP/gRPC."""

from __future__ import annotations

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from tritonserving import native_server as ns


def test_staging_has_stub_next_to_python_backend() -> None:
    staging = ns.stage()
    assert (staging / "bin" / "tritonserver").exists()
    assert (staging / "backends" / "python" / "libtriton_python.so").exists()
    assert (staging / "backends" / "python" / "triton_python_backend_stub").exists()
    assert ns.stage() == staging  # second call is the cached copy


def test_tiny_server_metadata_and_infer(tiny_server) -> None:
    assert ns.is_triton(tiny_server.http_url)
    status, meta = ns.http_get_json(f"{tiny_server.http_url}/v2")
    assert status == 200 and meta["version"] == "2.51.0"
    ids = np.array([[101, 2023, 102], [101, 7592, 102]], dtype=np.int64)
    mask = np.ones_like(ids)
    for mod, url in (
        (httpclient, tiny_server.http_url.removeprefix("http://")),
        (grpcclient, tiny_server.grpc_url),
    ):
        client = mod.InferenceServerClient(url=url)
        inputs = [
            mod.InferInput("input_ids", list(ids.shape), "INT64"),
            mod.InferInput("attention_mask", list(mask.shape), "INT64"),
        ]
        inputs[0].set_data_from_numpy(ids)
        inputs[1].set_data_from_numpy(mask)
        out = client.infer("tiny", inputs).as_numpy("sentence_embedding")
        assert out.shape == (2, 384)
        np.testing.assert_array_equal(out[:, 0], ids.sum(1).astype(np.float32))


def test_free_port_is_bindable() -> None:
    assert 0 < ns.free_port() < 65536


def test_is_triton_false_when_nothing_listens() -> None:
    assert not ns.is_triton(f"http://127.0.0.1:{ns.free_port()}")


def test_serve_print_env_names_what_the_binary_needs(tiny_server, capsys) -> None:
    from tritonserving.cli import main

    repo = tiny_server.native.repository
    assert main(["serve", "--repository", str(repo), "--print-env"]) == 0
    out = capsys.readouterr().out
    assert "nvidia_pytriton.libs" in out and str(ns.python_libdir()) in out
    assert "bin/tritonserver" in out and f"--model-repository={repo}" in out and "--http-port=8000" in out


def test_serve_missing_repository_is_one_clear_line(tmp_path, capsys) -> None:
    from tritonserving.cli import main

    assert main(["serve", "--repository", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "make repo" in err and "\n" not in err


def test_tests_use_their_own_server_unless_asked(triton, monkeypatch) -> None:
    import os

    if os.environ.get("TRITON_SERVING_TEST_URL"):
        assert triton.native is None  # the named server, checked by the fixture
    else:
        assert triton.native is not None and triton.native.proc.poll() is None
    assert ns.build_mismatch(triton.http_url, ns.CPU_REPOSITORY) is None


def test_a_server_of_another_build_is_refused(tiny_server, cpu_repository, monkeypatch) -> None:
    from conftest import expected_cpu_forms, requested_server

    stale = ns.build_mismatch(tiny_server.http_url, cpu_repository)
    assert stale is not None and "minilm_" in stale and "\n" not in stale
    monkeypatch.setenv("TRITON_SERVING_TEST_URL", tiny_server.http_url)
    with pytest.raises(pytest.fail.Exception, match="TRITON_SERVING_TEST_URL"):
        requested_server(expected_cpu_forms(), cpu_repository)


def test_a_server_whose_files_changed_is_refused(tiny_server, tmp_path) -> None:
    """The tiny repository, with its config carrying a hash the served one does not: refused."""
    from tritonserving.repository import BUILD_HASH_KEY

    repo = tmp_path / "repo"
    (repo / "tiny").mkdir(parents=True)
    text = (tiny_server.native.repository / "tiny" / "config.pbtxt").read_text()
    extra = f'parameters {{ key: "{BUILD_HASH_KEY}" value {{ string_value: "0123abcd" }} }}\n'
    (repo / "tiny" / "config.pbtxt").write_text(text + extra)
    stale = ns.build_mismatch(tiny_server.http_url, repo)
    assert stale is not None and "0123abcd" in stale
