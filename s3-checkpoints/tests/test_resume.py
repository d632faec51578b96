"""Resume equivalence: 2K steps straight == K steps, kill -9, resume, K more (weights and every loss)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from s3ckpt import CheckpointStore

TRAIN = [sys.executable, "-m", "s3ckpt.train", "--no-progress", "--keep-last", "0"]


def run_trainer(env: dict[str, str], args: list[str], kill_on: str | None = None,
                timeout: float = 240) -> tuple[int, str]:
    """Run the trainer; with ``kill_on``, SIGKILL it as soon as a stdout line contains that text."""
    p = subprocess.Popen(TRAIN + args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = []
    deadline = time.monotonic() + timeout
    assert p.stdout is not None
    for line in p.stdout:
        out.append(line)
        if kill_on and kill_on in line:
            os.kill(p.pid, signal.SIGKILL)
            break
        if time.monotonic() > deadline:
            p.kill()
            break
    rc = p.wait(timeout=60)
    return rc, "".join(out)


def losses(path: Path) -> dict[int, float]:
    """step -> loss; a resumed run re-logs steps after its checkpoint and the later line wins."""
    d: dict[int, float] = {}
    for line in path.read_text().splitlines():
        rec = json.loads(line)
        d[rec["step"]] = rec["loss"]
    return d


@pytest.mark.parametrize("mode", ["blocking", "async"])
def test_kill_and_resume_is_bit_exact(minio, bucket, tmp_path: Path, mode: str) -> None:
    env = minio.env(bucket)
    k = 30
    common = ["--steps", str(2 * k), "--ckpt-every", "10"]
    rc, out = run_trainer(env, common + ["--run", "straight", "--loss-log", str(tmp_path / "a.jsonl")])
    assert rc == 0, out

    # same job, SIGKILLed right after its step-K checkpoint (it may get a bit further). With --async-save
    # the kill may land while that save is still uploading: then it resumes from an earlier step.
    extra = ["--async-save"] if mode == "async" else []
    word = "queued" if mode == "async" else "saved"
    rc, out = run_trainer(env, common + extra + ["--run", "crashy", "--loss-log", str(tmp_path / "b.jsonl")],
                          kill_on=f"checkpoint step {k} {word}")
    assert rc == -signal.SIGKILL, out
    rc, out = run_trainer(env, common + extra + ["--run", "crashy", "--loss-log", str(tmp_path / "b.jsonl")])
    assert rc == 0, out
    assert "resumed from step" in out
    resumed_from = int(out.split("resumed from step ")[1].split()[0])
    assert (k if mode == "blocking" else 10) <= resumed_from < 2 * k

    la, lb = losses(tmp_path / "a.jsonl"), losses(tmp_path / "b.jsonl")
    assert sorted(la) == list(range(1, 2 * k + 1)) == sorted(lb)
    assert [la[s] for s in sorted(la)] == [lb[s] for s in sorted(lb)]  # exact float equality, every step

    s = minio.settings(bucket)
    a = CheckpointStore(settings=s, run="straight").load("latest")
    b = CheckpointStore(settings=s, run="crashy").load("latest")
    assert a.step == b.step == 2 * k
    for name in ("model", "optimizer"):
        fa, fb = _flatten(a.state[name]), _flatten(b.state[name])
        assert fa.keys() == fb.keys()
        for key in fa:
            if isinstance(fa[key], torch.Tensor):
                assert torch.equal(fa[key], fb[key]), key
            else:
                assert fa[key] == fb[key], key
    assert torch.equal(a.state["rng"]["torch"], b.state["rng"]["torch"])


def _flatten(obj, prefix: str = "") -> dict:
    out = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}/{k}"))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            out.update(_flatten(v, f"{prefix}/{i}"))
    else:
        out[prefix] = obj
    return out
