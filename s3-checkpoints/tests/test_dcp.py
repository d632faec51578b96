"""Multi-process DCP checkpoints against the real MinIO: real ranks (gloo, CPU), FSDP2-sharded parameters and
Adam moments, saved by 4 and loaded by 2 and 4, a rank SIGKILLed mid-save, and a killed-and-resumed job."""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from s3ckpt import CheckpointStore, IntegrityError, S3CkptError
from s3ckpt import dcp as s3dcp
from s3ckpt.minio import free_port
from s3ckpt.tensorzip import load_into

WORKER = str(Path(__file__).with_name("_dcp_worker.py"))


class Job:
    """WORLD_SIZE worker processes of one torch.distributed job; their stdout lines merged in a queue."""

    def __init__(self, env: dict[str, str], world: int, args: list[str], hold_at: str | None = None,
                 run: str = "dcp") -> None:
        port = str(free_port())
        self.lines: queue.Queue[str] = queue.Queue()
        self.log: list[str] = []
        self.procs = []
        for rank in range(world):
            e = env | {"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port, "DCP_TEST_RUN": run,
                       "OMP_NUM_THREADS": "1", "HOLD_AT": hold_at or ""}
            p = subprocess.Popen([sys.executable, WORKER, *args], env=e, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True)
            threading.Thread(target=self._pump, args=(rank, p), daemon=True).start()
            self.procs.append(p)

    def _pump(self, rank: int, p: subprocess.Popen[str]) -> None:
        assert p.stdout is not None
        for line in p.stdout:
            self.lines.put(f"[{rank}] {line.rstrip()}")

    def wait_for(self, *events: str, timeout: float = 240) -> None:
        """Block until every one of ``events`` (exact ``EVENT ...`` lines) was printed."""
        todo = set(events)
        deadline = time.monotonic() + timeout
        while todo:
            try:
                line = self.lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"never saw {sorted(todo)}; output:\n" + "\n".join(self.log)) from None
            self.log.append(line)
            todo.discard(line.split("] ", 1)[1])

    def finish(self, timeout: float = 240) -> list[int]:
        """Wait for every rank (killing what is left after ``timeout``); return their exit codes."""
        deadline = time.monotonic() + timeout
        for p in self.procs:
            try:
                p.wait(timeout=max(1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        time.sleep(0.2)
        while not self.lines.empty():
            self.log.append(self.lines.get())
        return [p.returncode for p in self.procs]

    def output(self) -> str:
        return "\n".join(self.log)


def _run(env: dict[str, str], world: int, args: list[str], run: str = "dcp") -> Job:
    job = Job(env, world, args, run=run)
    codes = job.finish()
    assert codes == [0] * world, f"exit codes {codes}:\n{job.output()}"
    return job


def _cli(env: dict[str, str], *args: str, run: str = "dcp") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "s3ckpt.cli", *args, "--run", run], env=env,
                          capture_output=True, text=True, timeout=120)


def _assert_same(a, b, path: str = "") -> None:  # noqa: ANN001 - nested state dicts
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            _assert_same(a[k], b[k], f"{path}/{k}")
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b), f"{path} differs"
    else:
        assert a == b, path


@pytest.fixture
def env(minio, bucket) -> dict[str, str]:
    return minio.env(bucket)


def test_save_with_4_load_with_2_and_4_bit_exact(minio, bucket, env, tmp_path: Path) -> None:
    saved = tmp_path / "saved.pt"
    job = _run(env, 4, ["save", str(saved), "10", "--reload"])  # then the same 4 ranks load it back
    assert "[0] EVENT 0 loaded 10" in job.output()
    st = CheckpointStore(settings=minio.settings(bucket), run="dcp")
    man = st.manifest(10)
    assert man["kind"] == "dcp" and man["world_size"] == 4
    assert sorted(o["key"].rsplit("/", 1)[1].split(".")[0] for o in man["objects"]) == [
        "__0_0", "__1_0", "__2_0", "__3_0"]
    assert all(len(o["part_sha256"]) >= 2 for o in man["objects"])  # every rank's object is multipart
    st.verify(10, deep=True)
    with pytest.raises(S3CkptError, match="s3ckpt.dcp.load"):
        st.load(10)  # the single-process loader says which loader to use
    r = _cli(env, "list", "--verify")
    assert r.returncode == 0 and " 10  dcp " in r.stdout and r.stdout.rstrip().endswith("ok"), r.stdout
    r = _cli(env, "verify")
    assert r.returncode == 0 and "step 10: OK (4 objects" in r.stdout, r.stdout
    shown = json.loads(_cli(env, "show", "10").stdout)["dcp_metadata"]
    assert shown["model.0.weight"] == {"shape": [1024, 1024], "dtype": "float32", "shards": 4}
    expected = torch.load(saved)
    _assert_same(expected, torch.load(f"{saved}.reloaded"))
    job = _run(env, 2, ["load", str(tmp_path / "loaded2.pt")])  # resharded: 4 row blocks onto 2 ranks
    assert "[0] EVENT 0 loaded 10" in job.output()
    _assert_same(expected, torch.load(tmp_path / "loaded2.pt"))
    # and a single process without any process group (DCP's no-dist mode) gets the full tensors
    plain = {"model": {k: torch.zeros_like(v) for k, v in expected["model"].items()}}
    assert s3dcp.load(plain, run="dcp", settings=minio.settings(bucket)) == 10
    _assert_same(expected["model"], plain["model"])


def test_rank_killed_mid_save_never_commits(minio, bucket, env, tmp_path: Path) -> None:
    _run(env, 2, ["save", str(tmp_path / "s1.pt"), "1"])
    # Rank 1 stops after its first part went out; rank 0 finishes all its objects and waits for rank 1's
    # results. Then rank 1 is SIGKILLed: its results never reach rank 0, so step 2 must not commit.
    job = Job(env, 2, ["save", str(tmp_path / "s2.pt"), "2"], hold_at="EVENT 1 part_uploaded 1")
    job.wait_for("EVENT 1 part_uploaded 1", "EVENT 0 rank_done")
    time.sleep(1.0)  # a coordinator that commits without rank 1 has now had time to do it
    job.procs[1].send_signal(signal.SIGKILL)
    codes = job.finish(timeout=120)
    assert codes[1] == -signal.SIGKILL, job.output()
    assert codes[0] != 0, f"rank 0 cannot have succeeded without rank 1:\n{job.output()}"

    st = CheckpointStore(settings=minio.settings(bucket), run="dcp")
    assert st.committed_steps() == [1], job.output()
    with pytest.raises(S3CkptError):
        s3dcp.S3StorageReader(2, "dcp", settings=minio.settings(bucket)).read_metadata()
    expected = torch.load(tmp_path / "s1.pt")
    plain = {"model": {k: torch.zeros_like(v) for k, v in expected["model"].items()}}
    assert s3dcp.load(plain, run="dcp", settings=minio.settings(bucket)) == 1
    _assert_same(expected["model"], plain["model"])
    cleaned = st.recover()  # rank 0's complete object of step 2, rank 1's unfinished upload
    assert cleaned["orphan_objects"] >= 1 and cleaned["aborted_uploads"] >= 1, cleaned
    keys = [o["Key"] for o in st.client.list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert not any("step-000000002" in k for k in keys), keys


def _losses(path: Path) -> dict[int, float]:
    d: dict[int, float] = {}
    for line in path.read_text().splitlines():
        rec = json.loads(line)
        d[rec["step"]] = rec["loss"]  # a resumed run re-logs steps after its checkpoint: the later wins
    return d


def test_two_process_training_killed_and_resumed_matches_unbroken(env, tmp_path: Path) -> None:
    steps, every = 12, 4
    _run(env, 2, ["train", str(tmp_path / "a.jsonl"), str(steps), str(every)], run="straight")

    job = Job(env, 2, ["train", str(tmp_path / "b.jsonl"), str(steps), str(every)], run="crashy",
              hold_at="EVENT 1 checkpoint 8")
    job.wait_for("EVENT 1 checkpoint 8")
    for p in job.procs:  # the whole job dies, as when a node is lost and the launcher tears the rest down
        p.send_signal(signal.SIGKILL)
    job.finish()
    resumed = _run(env, 2, ["train", str(tmp_path / "b.jsonl"), str(steps), str(every)], run="crashy")
    assert "EVENT 0 resumed 8" in resumed.output()

    la, lb = _losses(tmp_path / "a.jsonl"), _losses(tmp_path / "b.jsonl")
    assert sorted(la) == sorted(lb) == list(range(1, steps + 1))
    assert [la[s] for s in sorted(la)] == [lb[s] for s in sorted(lb)]  # exact float equality
    r = _cli(env, "prune", "--keep-last", "1", run="crashy")  # maintenance knows DCP steps too
    assert r.returncode == 0 and "deleted steps: [4, 8]" in r.stdout, (r.stdout, r.stderr)


def test_step_ids_and_kind_mismatch(minio, bucket) -> None:
    assert s3dcp.parse_step(7) == 7 and s3dcp.parse_step("ckpt/run/step-000000042/") == 42
    assert s3dcp.parse_step("s3://elsewhere") is None
    st = CheckpointStore(settings=minio.settings(bucket), run="dcp")
    st.save(3, {"model": {"w": torch.ones(2)}})
    with pytest.raises(S3CkptError, match="not s3ckpt.dcp"):
        s3dcp.S3StorageReader(3, "dcp", settings=minio.settings(bucket)).read_metadata()


def test_latest_falls_back_past_damaged_dcp_steps(minio, bucket) -> None:
    """One process, no process group (DCP's no-dist mode): the same writer, reader and fallback."""
    s = minio.settings(bucket)
    states = {step: {"w": torch.full((3 << 20,), float(step)), "b": torch.arange(5.0) + step}
              for step in (1, 2, 3)}  # 12 MiB: 2 parts of 8 MiB
    for step, sd in states.items():
        s3dcp.save(sd, step, run="solo", settings=s)
    st = CheckpointStore(settings=s, run="solo")
    # step 3: a part digest in the manifest no longer matches the bytes; size and the server's checksum
    # still do, so only reading finds it (as with bitrot on a disk)
    man = st.manifest(3)
    man["objects"][0]["part_sha256"][0] = "0" * 64
    mkey = st.step_prefix(3) + "manifest.json"
    st.delete_keys([mkey])
    st.client.put_object(Bucket=bucket, Key=mkey, Body=json.dumps(man).encode())
    # step 2: one byte flipped in place (the server's stored checksum is gone with the rewrite)
    key = st.manifest(2)["objects"][0]["key"]
    data = bytearray(st.client.get_object(Bucket=bucket, Key=key)["Body"].read())
    data[len(data) // 2] ^= 0xFF
    st.client.put_object(Bucket=bucket, Key=key, Body=bytes(data))

    target = {"w": torch.zeros(3 << 20), "b": torch.zeros(5)}
    with pytest.warns(UserWarning) as caught:
        assert s3dcp.load(target, run="solo", settings=s) == 1
    ours = [str(w.message).split(" failed")[0] for w in caught if "falling back" in str(w.message)]
    assert ours == ["checkpoint step 3", "checkpoint step 2"]
    _assert_same(states[1], target)
    with pytest.raises(IntegrityError):
        s3dcp.load(target, 3, run="solo", settings=s)  # an explicit step never silently becomes another


def _mixed_state() -> dict:
    """Items of every shape the reader meets: several parts wide, inside one part, straddling a part
    boundary, empty, 0-dim, other dtypes, and a non-tensor (DCP's bytes item)."""
    g = torch.Generator().manual_seed(5)
    return {"big": torch.randn(3 << 20, generator=g),                        # 12 MiB: three 5 MiB parts
            "rows": torch.randn(700, 1024, generator=g),                      # 2.7 MiB
            "half": torch.randn(1 << 20, generator=g).to(torch.bfloat16),
            "ids": torch.randint(0, 1 << 40, (300_000,), generator=g),
            "mask": torch.rand(1000, generator=g) > 0.5,
            "scalar": torch.tensor(2.5), "empty": torch.zeros(0, 4),
            "meta": {"epoch": 3, "name": "run-a"}}


def _blank(state: dict) -> dict:
    out = {k: torch.full_like(v, 7) for k, v in state.items() if isinstance(v, torch.Tensor)}
    return out | {"meta": {"epoch": 0, "name": ""}}


@pytest.mark.parametrize("max_workers", [1, 2, 8])
def test_load_reads_ahead_in_parallel_bit_exact(minio, bucket, monkeypatch, max_workers: int) -> None:
    """Items are delivered while later parts download (read-ahead smaller and larger than an item), each
    part fetched once and checked; every tensor arrives bit for bit, whatever the dtype or shape: copied
    straight from the parts into its destination, or (a destination that is not contiguous) through
    torch.load."""
    s = minio.settings(bucket)
    saved = _mixed_state()
    s3dcp.save(saved, 1, run="mixed", settings=s, part_size=5 * 1024 * 1024)
    target = _blank(saved)
    target["rows"] = torch.zeros(1024, 700).t()  # same shape, transposed memory
    direct: dict[str, bool] = {}

    def spy(f, offsets, lengths, dst):  # noqa: ANN001, ANN202
        done = load_into(f, offsets, lengths, dst)
        direct[next(k for k, v in target.items() if v.numel() and v.data_ptr() == dst.data_ptr())] = done
        return done

    monkeypatch.setattr(s3dcp, "load_into", spy)
    assert s3dcp.load(target, 1, run="mixed", settings=s, max_workers=max_workers) == 1
    _assert_same(saved, target)
    assert not target["rows"].is_contiguous()
    assert direct == {k: k != "rows" for k, v in saved.items() if isinstance(v, torch.Tensor) and v.numel()}


def test_corrupt_part_mid_load_is_damage_and_stops_every_worker(minio, bucket) -> None:
    """A part in the middle of a parallel read fails its SHA-256: the load raises IntegrityError (the
    damage that makes `latest` fall back), not a network error, and leaves no download thread behind."""
    s = minio.settings(bucket)
    saved = _mixed_state()
    s3dcp.save(saved, 1, run="mixed", settings=s, part_size=5 * 1024 * 1024)
    st = CheckpointStore(settings=s, run="mixed")
    man = st.manifest(1)
    assert len(man["objects"][0]["part_sha256"]) >= 4
    man["objects"][0]["part_sha256"][1] = "0" * 64
    mkey = st.step_prefix(1) + "manifest.json"
    st.delete_keys([mkey])
    st.client.put_object(Bucket=bucket, Key=mkey, Body=json.dumps(man).encode())
    with pytest.raises(IntegrityError, match=r"SHA-256 mismatch .*\(part 2\)"):
        s3dcp.load(_blank(saved), 1, run="mixed", settings=s, max_workers=2)
    assert not [t for t in threading.enumerate() if t.name.startswith("s3ckpt-get")]
