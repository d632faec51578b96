"""A flaky network between the client and the real MinIO never corrupts, loses or silently replaces a
checkpoint. Every fault is injected by ``fault_proxy.FaultProxy`` on one chosen request; after each, what
is committed verifies (read back directly from MinIO, not through the proxy)."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from fault_proxy import FaultProxy, Rule
from test_dcp import Job, _losses, _run
from test_resume import losses, run_trainer

from s3ckpt import CheckpointStore, EndpointUnreachable, NetworkError, WriteConflict

MIB = 1024 * 1024
PART = 5 * MIB
# short enough for the suite, long enough for a loaded 2-core machine to answer a healthy request
FAST = {"connect_timeout": 2.0, "read_timeout": 3.0, "op_timeout": 30.0, "retries": 4}
CLI = [sys.executable, "-m", "s3ckpt.cli"]


@pytest.fixture
def proxy(minio) -> Iterator[FaultProxy]:
    with FaultProxy(minio.endpoint) as p:
        yield p


def _store(minio, bucket: str, endpoint: str | None = None, run: str = "test") -> CheckpointStore:
    s = minio.settings(bucket).with_overrides(endpoint=endpoint, **FAST)
    return CheckpointStore(settings=s, run=run, part_size=PART, max_inflight=2)


@pytest.fixture
def flaky(minio, bucket, proxy) -> Iterator[CheckpointStore]:
    st = _store(minio, bucket, proxy.endpoint)
    yield st
    st.close()


@pytest.fixture
def direct(minio, bucket) -> CheckpointStore:
    return _store(minio, bucket)


def _state(step: int, mib: int = 8) -> dict:
    g = torch.Generator().manual_seed(step)
    return {"model": {"w": torch.randn(mib * MIB // 4, generator=g)}, "optimizer": {"step": step}}


def _assert_intact(direct: CheckpointStore, expect: dict[int, dict]) -> None:
    """Exactly the expected steps are committed, each verifies byte for byte and loads what was saved,
    and no object in the run is outside a manifest (no leftovers, nothing listed is missing)."""
    assert direct.committed_steps() == sorted(expect)
    listed = set()
    for step, state in expect.items():
        info = direct.verify(step, deep=True)
        listed |= {o["key"] for o in info.objects} | {info.prefix + "manifest.json"}
        got = direct.load(step)
        assert torch.equal(got.state["model"]["w"], state["model"]["w"])
    keys = {o["Key"] for o in direct.list_keys(direct.run_prefix)}
    assert keys == listed


# -- saves ------------------------------------------------------------------------------------------------
MANIFEST_PUT = {"method": "PUT", "path": "manifest.json"}


@pytest.mark.parametrize("action", ["reset_response", "stall"])
def test_manifest_written_but_answer_lost_is_committed(flaky, direct, proxy, action) -> None:
    """The manifest PUT lands, its answer does not: the retry gets 412, the store reads the manifest
    back, finds its own attempt id and reports success (it used to delete its objects and raise)."""
    proxy.add(Rule(action, arg=FAST["read_timeout"] + 2, **MANIFEST_PUT))
    state = _state(1)
    info = flaky.save(1, state)
    assert proxy.fired(action) == 1 and info.step == 1
    _assert_intact(direct, {1: state})


def test_complete_multipart_answer_lost_is_checked_not_failed(flaky, direct, proxy) -> None:
    """CompleteMultipartUpload completes, its answer is reset; the retry gets NoSuchUpload, the writer
    checks the object's size and checksum and goes on."""
    proxy.add(Rule("reset_response", method="POST", path="uploadId="))
    state = _state(1)
    flaky.save(1, state)
    assert proxy.fired() == 1
    _assert_intact(direct, {1: state})


PART_2 = {"method": "PUT", "path": "partNumber=2"}
SAVE_FAULTS = [(a, PART_2) for a in ("reset_request", "reset_mid_request", "reset_response", "cut_response",
                                     "stall")] + [
    ("reset_response", {"method": "POST", "path": "?uploads"}),  # CreateMultipartUpload's answer lost
    ("stall", {"method": "POST", "path": "?uploads"}),
    ("reset_mid_request", {"method": "PUT", "path": "/meta."}),  # a one-PUT object
    ("cut_response", {"method": "PUT", "path": "/meta."}),
    ("reset_request", {"method": "GET", "path": "?uploads"}),  # listing stale uploads first
    ("stall", {"method": "GET", "path": "?uploads"}),
]


@pytest.mark.parametrize(("action", "target"), SAVE_FAULTS, ids=lambda v: v if isinstance(v, str) else
                         f"{v['method']} {v['path']}")
def test_one_fault_during_save_is_retried(flaky, direct, proxy, action, target) -> None:
    direct.save(1, _first := _state(10))
    proxy.add(Rule(action, arg=FAST["read_timeout"] + 2 if action == "stall" else 10, **target))
    state = _state(2)
    flaky.save(2, state)
    assert proxy.fired(action) == 1
    _assert_intact(direct, {1: _first, 2: state})


def test_network_down_during_save_is_one_clear_error(flaky, direct, proxy) -> None:
    direct.save(1, first := _state(1))
    proxy.add(Rule("reset_request", method="PUT", path="partNumber=", times=1000))
    t0 = time.monotonic()
    with pytest.raises(NetworkError, match="network failure while uploading part") as ei:
        flaky.save(2, _state(2))
    assert "\n" not in str(ei.value)
    assert time.monotonic() - t0 < FAST["op_timeout"] + 30
    proxy.rules.clear()
    flaky.abort_stale_uploads()
    _assert_intact(direct, {1: first})
    flaky.save(2, second := _state(2))  # the network is back: the same step saves
    _assert_intact(direct, {1: first, 2: second})


def test_manifest_never_lands_nothing_committed_nothing_left(flaky, direct, proxy) -> None:
    proxy.add(Rule("reset_request", times=1000, **MANIFEST_PUT))
    with pytest.raises(NetworkError, match="network failure while writing"):
        flaky.save(1, _state(1))
    _assert_intact(direct, {})


def test_unknown_outcome_keeps_the_objects(flaky, direct, proxy) -> None:
    """The manifest lands but neither its answer nor a read-back gets through: the save fails with a
    network error, and the committed step keeps every object its manifest lists."""
    proxy.add(Rule("reset_response", times=1000, **MANIFEST_PUT),
              Rule("reset_request", method="GET", path="manifest.json", times=1000))
    state = _state(1)
    with pytest.raises(NetworkError):
        flaky.save(1, state)
    _assert_intact(direct, {1: state})


def test_a_real_second_writer_still_loses(flaky, direct, proxy) -> None:
    """The read-back does not turn a real conflict into a success."""
    direct.save(1, first := _state(1))
    with pytest.raises(WriteConflict, match="already committed by another writer"):
        flaky.save(1, _state(2))
    _assert_intact(direct, {1: first})


def test_refused_connections(minio, bucket, flaky, direct, proxy) -> None:
    with proxy.refusing(), pytest.raises(EndpointUnreachable, match="cannot reach S3 endpoint"):
        flaky.save(1, _state(1))
    _assert_intact(direct, {})
    state = _state(1)
    with proxy.refusing(for_seconds=1.0):  # back within the retries: the save goes through
        flaky.save(1, state)
    _assert_intact(direct, {1: state})


def test_retries_leave_the_training_rngs_alone(flaky, proxy) -> None:
    """A save forced to retry (first part upload and manifest PUT reset) draws nothing from the
    global Python, NumPy or torch generators the training loop uses."""
    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)
    before = (random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state())
    proxy.add(Rule("reset_request", method="PUT", path="partNumber=1"),
              Rule("reset_response", **MANIFEST_PUT))
    flaky.save(1, _state(1))
    flaky.load("latest")
    assert proxy.fired() == 2
    assert random.getstate() == before[0]
    assert (np.random.get_state()[1] == before[1]).all()
    assert torch.equal(torch.get_rng_state(), before[2])


# -- loads ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("action", ["reset_request", "reset_response", "cut_response", "stall", "stall_body"])
def test_one_fault_during_load_is_retried_not_called_corrupt(flaky, direct, proxy, action) -> None:
    direct.save(1, _state(1))
    direct.save(2, second := _state(2))
    model = next(o["key"] for o in direct.manifest(2)["objects"] if o["name"] == "model")
    proxy.add(Rule(action, method="GET", path=model.rsplit("/", 1)[1], times=2,
                   arg=1000 if action == "cut_response" else FAST["read_timeout"] + 2))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a fallback to step 1 would warn
        got = flaky.load("latest")
    assert got.step == 2 and torch.equal(got.state["model"]["w"], second["model"]["w"])
    assert proxy.fired(action) == 2


def test_a_listing_fault_never_hides_a_step(flaky, direct, proxy) -> None:
    """A LIST whose answer is lost is asked again, not taken for the end of the listing (that would
    make `latest` an older step, or "no checkpoint": a trainer starting over)."""
    direct.save(1, _state(1, mib=1))
    direct.save(2, second := _state(2, mib=1))
    proxy.add(Rule("reset_response", method="GET", path="list-type=2"),
              Rule("cut_response", method="GET", path="list-type=2", arg=100))
    got = flaky.load("latest")
    assert got.step == 2 and torch.equal(got.state["model"]["w"], second["model"]["w"])
    assert flaky.committed_steps() == [1, 2]
    assert proxy.fired() == 2


def test_stale_uploads_cleaned_through_faults(minio, bucket, flaky, direct, proxy) -> None:
    for i in range(2):  # two uploads left behind by crashed saves
        direct.client.create_multipart_upload(Bucket=bucket, Key=f"{direct.run_prefix}step-000000001/x{i}")
    proxy.add(Rule("reset_response", method="GET", path="?uploads"),
              Rule("reset_response", method="DELETE", path="uploadId="))  # the abort landed, its answer not
    assert flaky.abort_stale_uploads() == 2
    assert proxy.fired() == 2
    assert not direct.client.list_multipart_uploads(Bucket=bucket).get("Uploads")


def test_network_down_during_load_fails_does_not_fall_back(flaky, direct, proxy) -> None:
    direct.save(1, _state(1))
    direct.save(2, _state(2))
    model = next(o["key"] for o in direct.manifest(2)["objects"] if o["name"] == "model")
    proxy.add(Rule("reset_response", method="GET", path=model.rsplit("/", 1)[1], times=1000))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(NetworkError, match="network failure while reading"):
            flaky.load("latest")


def _dcp_steps(minio, bucket: str) -> tuple[dict, dict]:
    """Two DCP steps of one process (12 MiB: several parts, read in parallel); the settings to load through
    the proxy, and the second step's state."""
    from s3ckpt import dcp as s3dcp

    s = minio.settings(bucket).with_overrides(**FAST)
    for step in (1, 2):
        s3dcp.save(state := _state(step, mib=12)["model"], step, run="solo", settings=s, part_size=PART)
    return s, state


@pytest.mark.parametrize("action", ["reset_response", "cut_response", "stall_body"])
def test_one_fault_during_a_parallel_dcp_load_is_retried_not_called_corrupt(minio, bucket, proxy,
                                                                          action) -> None:
    """Two part GETs of a DCP load (fetched ahead, in parallel) break: each is asked again, the load is
    bit-exact and does not fall back."""
    from s3ckpt import dcp as s3dcp

    s, second = _dcp_steps(minio, bucket)
    proxy.add(Rule(action, method="GET", path=".distcp", times=2,
                   arg=1000 if action == "cut_response" else FAST["read_timeout"] + 2))
    target = {"w": torch.zeros_like(second["w"])}
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*falling back")
        assert s3dcp.load(target, run="solo", settings=s.with_overrides(endpoint=proxy.endpoint)) == 2
    assert torch.equal(target["w"], second["w"])
    assert proxy.fired(action) == 2


def test_network_down_during_a_parallel_dcp_load_is_a_network_error(minio, bucket, proxy) -> None:
    from s3ckpt import dcp as s3dcp

    s, second = _dcp_steps(minio, bucket)
    proxy.add(Rule("reset_response", method="GET", path=".distcp", times=1000))
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*falling back")
        with pytest.raises(NetworkError, match="network failure while reading"):
            s3dcp.load({"w": torch.zeros_like(second["w"])}, run="solo",
                       settings=s.with_overrides(endpoint=proxy.endpoint))


def test_dcp_load_with_only_damaged_steps_never_says_start_over(minio, bucket) -> None:
    """The only DCP step fails its SHA-256 while loading (the model half written): `latest` has nothing
    older to fall back to, and that is damage (NoVerifiedCheckpoint), not "no checkpoint" (which a
    training job takes for "start from scratch")."""
    import json

    from s3ckpt import CheckpointNotFound, NoVerifiedCheckpoint
    from s3ckpt import dcp as s3dcp

    s = minio.settings(bucket)
    s3dcp.save({"w": torch.ones(3 << 20)}, 1, run="solo", settings=s)
    st = CheckpointStore(settings=s, run="solo")
    man = st.manifest(1)
    man["objects"][0]["part_sha256"][-1] = "0" * 64  # only a full read finds it
    mkey = st.step_prefix(1) + "manifest.json"
    st.delete_keys([mkey])
    st.client.put_object(Bucket=bucket, Key=mkey, Body=json.dumps(man).encode())
    with pytest.warns(UserWarning, match="step 1 failed verification"), \
            pytest.raises(NoVerifiedCheckpoint, match="not starting over") as ei:
        s3dcp.load({"w": torch.zeros(3 << 20)}, run="solo", settings=s)
    assert not isinstance(ei.value, CheckpointNotFound)


def test_cli_verify_through_a_stalled_network_is_one_line(minio, bucket, direct, proxy) -> None:
    direct.save(1, _state(1, mib=1))
    proxy.add(Rule("stall", method="GET", path="/model.", times=1000, arg=30))
    env = minio.env(bucket) | {"S3CKPT_ENDPOINT": proxy.endpoint}
    t0 = time.monotonic()
    r = subprocess.run(CLI + ["verify", "--run", "test", "--read-timeout", "1", "--retries", "1"], env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "network failure while reading" in lines[0], r.stderr
    assert "Traceback" not in r.stderr + r.stdout
    assert time.monotonic() - t0 < 60
    proxy.rules.clear()
    r = subprocess.run(CLI + ["verify", "--run", "test"], env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0 and "step 1: OK" in r.stdout, (r.stdout, r.stderr)


# -- whole jobs: the trainer, and a 2-rank DCP job, under random faults --------------------------------------
FAST_ENV = {"S3CKPT_CONNECT_TIMEOUT": "2", "S3CKPT_READ_TIMEOUT": "3", "S3CKPT_OP_TIMEOUT": "30",
            "S3CKPT_RETRIES": "6"}


def test_trainer_under_random_faults_then_resume_is_bit_exact(minio, bucket, tmp_path: Path) -> None:
    """Random resets, cuts and stalls on 1 request in 10 while the trainer checkpoints; killed after step
    30, resumed without faults: every loss equals an unbroken, fault-free run, and every step verifies."""
    env = minio.env(bucket) | FAST_ENV
    common = ["--steps", "40", "--ckpt-every", "10"]
    rc, out = run_trainer(env, common + ["--run", "straight", "--loss-log", str(tmp_path / "a.jsonl")])
    assert rc == 0, out
    with FaultProxy(minio.endpoint, chaos=(1 / 10, 20)) as p:
        rc, out = run_trainer(env | {"S3CKPT_ENDPOINT": p.endpoint},
                              common + ["--run", "flaky", "--loss-log", str(tmp_path / "b.jsonl")],
                              kill_on="checkpoint step 30 saved")
        assert rc == -signal.SIGKILL, out
        assert p.fired() >= 2, p.log
    assert "Traceback" not in out, out
    rc, out = run_trainer(env, common + ["--run", "flaky", "--loss-log", str(tmp_path / "b.jsonl")])
    assert rc == 0 and "resumed from step 30" in out, out
    la, lb = losses(tmp_path / "a.jsonl"), losses(tmp_path / "b.jsonl")
    assert [la[s] for s in sorted(la)] == [lb[s] for s in sorted(lb)] and len(la) == 40
    st = _store(minio, bucket, run="flaky")
    assert st.committed_steps() == [10, 20, 30, 40]
    for s in st.committed_steps():
        st.verify(s, deep=True)


def test_dcp_job_under_random_faults_then_resume_is_bit_exact(minio, bucket, tmp_path: Path) -> None:
    """2 ranks train with a checkpoint every 4 steps through random faults (and the answer to the first
    manifest PUT lost: rank 0 reads it back and finds its own attempt), the job is killed after step 8,
    and resumed without faults: the losses equal an unbroken job's; every step verifies."""
    env = minio.env(bucket) | FAST_ENV
    steps, every = 12, 4
    _run(env, 2, ["train", str(tmp_path / "a.jsonl"), str(steps), str(every)], run="straight")
    with FaultProxy(minio.endpoint, [Rule("reset_response", **MANIFEST_PUT)], chaos=(1 / 10, 3)) as p:
        job = Job(env | {"S3CKPT_ENDPOINT": p.endpoint}, 2,
                  ["train", str(tmp_path / "b.jsonl"), str(steps), str(every)], run="flaky",
                  hold_at="EVENT 1 checkpoint 8")
        job.wait_for("EVENT 1 checkpoint 8")
        for proc in job.procs:
            proc.send_signal(signal.SIGKILL)
        job.finish()
        assert p.fired("reset_response") >= 1 and p.rules[0].fired == 1, p.log
    assert "Traceback" not in job.output(), job.output()
    resumed = _run(env, 2, ["train", str(tmp_path / "b.jsonl"), str(steps), str(every)], run="flaky")
    assert "EVENT 0 resumed 8" in resumed.output()
    la, lb = _losses(tmp_path / "a.jsonl"), _losses(tmp_path / "b.jsonl")
    assert [la[s] for s in sorted(la)] == [lb[s] for s in sorted(lb)] and len(la) == steps
    st = _store(minio, bucket, run="flaky")
    assert st.committed_steps() == [4, 8, 12]
    for s in st.committed_steps():
        st.verify(s, deep=True)


def test_dcp_ranks_stuck_on_the_network_fail_with_one_line_each(minio, bucket, tmp_path: Path) -> None:
    """Every part upload stalls: each rank's S3 call gives up after its retries, well inside the process
    group's timeout (derived from the same settings), and every rank prints the network error, once."""
    stall = Rule("stall", method="PUT", path="partNumber=", times=1000, arg=60)
    with FaultProxy(minio.endpoint, [stall]) as p:
        env = minio.env(bucket) | {"S3CKPT_ENDPOINT": p.endpoint, "S3CKPT_CONNECT_TIMEOUT": "2",
                                   "S3CKPT_READ_TIMEOUT": "1", "S3CKPT_RETRIES": "1",
                                   "S3CKPT_OP_TIMEOUT": "5"}
        job = Job(env, 2, ["save", str(tmp_path / "s.pt"), "3"])
        codes = job.finish(timeout=200)
    out = job.output()
    assert codes == [2, 2] and "Traceback" not in out, out
    for rank in (0, 1):
        mine = [ln for ln in out.splitlines() if ln.startswith(f"[{rank}] rank {rank}: error:")]
        assert len(mine) == 1 and "network failure while uploading part" in mine[0], out
    assert _store(minio, bucket, run="dcp").committed_steps() == []
