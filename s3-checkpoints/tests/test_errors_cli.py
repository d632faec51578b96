"""Wrong credentials, missing bucket, unreachable endpoint: one clear line each, never a traceback.
Plus the CLI (`s3ckpt list|show|verify|prune|download`, `s3ckpt-train`) end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from s3ckpt import BucketNotFound, CheckpointStore, CredentialsError, EndpointUnreachable
from s3ckpt.minio import free_port

CLI = [sys.executable, "-m", "s3ckpt.cli"]
TRAIN = [sys.executable, "-m", "s3ckpt.train"]


def _run(cmd: list[str], env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


def _one_clear_line(r: subprocess.CompletedProcess[str], needle: str) -> None:
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    assert needle in lines[0], lines[0]


def test_wrong_credentials(minio, bucket) -> None:
    s = minio.settings(bucket).with_overrides(secret_key="definitely-wrong")
    with pytest.raises(CredentialsError, match="rejected the credentials"):
        CheckpointStore(settings=s)
    env = minio.env(bucket) | {"S3CKPT_SECRET_KEY": "definitely-wrong"}
    _one_clear_line(_run(CLI + ["list"], env), "rejected the credentials")
    env = minio.env(bucket) | {"S3CKPT_ACCESS_KEY": "nobody"}
    _one_clear_line(_run(TRAIN + ["--steps", "2", "--no-progress"], env), "rejected the credentials")


def test_missing_bucket(minio) -> None:
    with pytest.raises(BucketNotFound, match="does not exist"):
        CheckpointStore(settings=minio.settings("no-such-bucket-here"))
    _one_clear_line(_run(CLI + ["list"], minio.env("no-such-bucket-here")), "does not exist")


def test_unreachable_endpoint(minio, bucket) -> None:
    port = free_port()  # nothing listens there
    s = minio.settings(bucket).with_overrides(endpoint=f"http://127.0.0.1:{port}")
    with pytest.raises(EndpointUnreachable, match="cannot reach S3 endpoint"):
        CheckpointStore(settings=s)
    env = minio.env(bucket) | {"S3CKPT_ENDPOINT": f"http://127.0.0.1:{port}"}
    _one_clear_line(_run(CLI + ["verify"], env), "cannot reach S3 endpoint")
    _one_clear_line(_run(TRAIN + ["--steps", "2", "--no-progress"], env), "cannot reach S3 endpoint")


@pytest.mark.parametrize("args", [[], ["list"], ["show"], ["verify"], ["prune"], ["download"], ["init"]])
def test_cli_help(args: list[str]) -> None:
    r = subprocess.run(CLI + args + ["--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "usage: s3ckpt" in r.stdout


def test_cli_run_follows_s3ckpt_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """The run a trainer was started with (S3CKPT_RUN) is the one the CLI inspects, unless --run says."""
    from s3ckpt.cli import build_parser

    monkeypatch.setenv("S3CKPT_RUN", "killed")
    assert build_parser().parse_args(["list"]).run == "killed"
    assert build_parser().parse_args(["list", "--run", "other"]).run == "other"
    monkeypatch.delenv("S3CKPT_RUN")
    assert build_parser().parse_args(["list"]).run == "digits"


def test_train_help() -> None:
    r = subprocess.run(TRAIN + ["--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "--resume" in r.stdout and "resumes" in r.stdout


def test_cli_end_to_end(minio, bucket, tmp_path: Path) -> None:
    env = minio.env(bucket)
    st = CheckpointStore(settings=minio.settings(bucket), run="digits")
    for s in (10, 20, 30):
        st.save(s, {"model": {"w": torch.full((100,), float(s))}}, {"hparams": {"lr": 0.1}})
    r = _run(CLI + ["list", "--verify"], env)
    assert r.returncode == 0 and all(f" {s} " in r.stdout for s in (10, 20, 30)), r.stdout
    r = _run(CLI + ["show", "20"], env)
    assert json.loads(r.stdout)["step"] == 20
    r = _run(CLI + ["verify"], env)
    assert r.returncode == 0 and r.stdout.count(": OK") == 3
    r = _run(CLI + ["download", "--dest", str(tmp_path)], env)
    assert r.returncode == 0
    files = {p.name.split(".")[0] for p in tmp_path.iterdir()}
    assert {"model", "meta", "hparams", "manifest"} <= files
    model_file = next(tmp_path.glob("model.*.pt"))
    assert torch.equal(torch.load(model_file)["w"], torch.full((100,), 30.0))
    # corrupt 30, verify says so (exit 1), prune keeps the newest verified
    key = next(o["key"] for o in st.manifest(30)["objects"] if o["name"] == "model")
    st.client.put_object(Bucket=bucket, Key=key, Body=b"bad")
    r = _run(CLI + ["verify"], env)
    assert r.returncode == 1 and "step 30: FAILED" in r.stdout
    r = _run(CLI + ["prune", "--keep-last", "1"], env)
    assert r.returncode == 0 and "[10]" in r.stdout
    assert st.committed_steps() == [20, 30]


def test_trainer_never_starts_over_while_a_committed_step_exists(minio, bucket) -> None:
    st = CheckpointStore(settings=minio.settings(bucket), run="digits")
    st.save(10, {"model": {"w": torch.ones(3)}})
    key = next(o["key"] for o in st.manifest(10)["objects"] if o["name"] == "model")
    st.client.put_object(Bucket=bucket, Key=key, Body=b"damaged")
    r = _run(TRAIN + ["--steps", "2", "--no-progress"], minio.env(bucket))
    assert r.returncode == 2 and "Traceback" not in r.stderr, (r.stdout, r.stderr)
    assert "from scratch" not in r.stdout
    assert "not starting over" in r.stderr.strip().splitlines()[-1]
