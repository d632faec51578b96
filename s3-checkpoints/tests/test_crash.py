"""kill -9 of a process in the middle of a save, at several points: nothing half-written is ever loaded."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from s3ckpt import CheckpointNotFound, CheckpointStore

SAVER = str(Path(__file__).with_name("_saver.py"))


def _save_and_kill(minio, bucket: str, step: int, kill_at: str) -> str:
    p = subprocess.Popen([sys.executable, SAVER, minio.endpoint, minio.user, minio.password, bucket,
                          str(step), "40", kill_at],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=minio.env(bucket))
    seen = []
    t0 = time.monotonic()
    reached = False
    assert p.stdout is not None
    for line in p.stdout:
        seen.append(f"{time.monotonic() - t0:.2f}s {line.strip()}")
        reached = line.strip() == kill_at
        if reached or time.monotonic() > t0 + 120:
            break
    os.kill(p.pid, signal.SIGKILL)
    p.wait(timeout=30)
    assert reached, f"the saver never reported {kill_at!r}: {seen}"
    assert p.returncode == -signal.SIGKILL, seen
    return "\n".join(seen)


@pytest.mark.parametrize("kill_at", [
    "EVENT save_started",             # save begun (stale uploads checked), nothing written yet
    "EVENT part_uploaded 1",          # multipart upload open, parts in flight
    "EVENT part_uploaded 5",          # most parts uploaded, tail not yet
    "EVENT objects_done",             # every object complete, manifest not written
])
def test_kill9_mid_save_leaves_previous_step_latest(minio, bucket, kill_at: str) -> None:
    st = CheckpointStore(settings=minio.settings(bucket), run="test", part_size=5 * 1024 * 1024)
    good = {"model": {"w": torch.arange(1000.0)}}
    st.save(1, good, {"note": "good"})
    child_log = _save_and_kill(minio, bucket, 2, kill_at)

    assert st.committed_steps() == [1]  # step 2 has no manifest: it does not exist
    ck = st.load("latest")
    assert ck.step == 1 and torch.equal(ck.state["model"]["w"], good["model"]["w"])
    with pytest.raises(CheckpointNotFound):
        st.load(2)

    before = st.client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    if kill_at.startswith("EVENT part_uploaded"):
        assert before, f"a killed multipart save should leave an unfinished upload behind; child: {child_log}"
    cleaned = st.recover()  # what the trainer does on restart
    assert cleaned["aborted_uploads"] == len(before)
    assert st.client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    keys = [o["Key"] for o in st.client.list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert not any("step-000000002" in k for k in keys), keys  # orphans of the dead save are gone
    # and the next save of that step works normally
    st.save(2, good)
    assert st.load("latest").step == 2


def test_stale_uploads_aborted_by_next_save(minio, bucket) -> None:
    st = CheckpointStore(settings=minio.settings(bucket), run="test", part_size=5 * 1024 * 1024)
    _save_and_kill(minio, bucket, 3, "EVENT part_uploaded 1")
    assert st.client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    st.stale_after = 0.0  # (default: one hour) anything older than this counts as left by a crash
    st.save(4, {"model": {"w": torch.zeros(3)}})
    assert st.client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
