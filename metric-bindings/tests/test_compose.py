"""Offline validation of docker-compose.yaml with the real compose binary (no Docker engine needed)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import compose

HERE = Path(__file__).resolve().parent.parent
BINARY = Path(compose.__file__).parent / "docker-compose"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BINARY), "-f", "docker-compose.yaml", "--env-file", ".env.example", *args],
        cwd=HERE,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_compose_file_is_valid():
    r = run("config", "-q")
    assert r.returncode == 0, r.stderr


def test_compose_images_are_pinned_and_have_healthchecks():
    r = run("config", "--format", "json")
    assert r.returncode == 0, r.stderr
    services = json.loads(r.stdout)["services"]
    assert {"demo", "test"} <= set(services)
    for name, svc in services.items():
        image = svc.get("image")
        if image is None:
            assert "build" in svc, name
            continue
        ref = image.rsplit("/", 1)[-1]
        assert ":" in ref, f"{name}: image {image} has no tag"
        assert not ref.endswith(":latest"), f"{name}: image {image} uses latest"
        assert "healthcheck" in svc, name


def test_dockerfile_base_image_is_pinned():
    lines = [ln for ln in (HERE / "Dockerfile").read_text().splitlines() if ln.startswith("FROM ")]
    assert lines and all(":" in ln and ":latest" not in ln for ln in lines)
