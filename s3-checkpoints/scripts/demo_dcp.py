"""`make demo-dcp`: the multi-process path end to end, with a real crash in the middle.

1. starts the real MinIO server on a free loopback port, creates the bucket;
2. `torchrun --nproc-per-node 2 scripts/train_dcp.py`: an FSDP2-sharded MLP on 2 CPU ranks (gloo) that
   checkpoints through s3ckpt.dcp every 10 steps; the whole job is SIGKILLed after its step-20 commit;
3. lists what the bucket holds (only committed, verified steps);
4. runs the same command again: every rank resumes from the newest verified step;
5. resumes once more on 1 rank (DCP reshards the 2 ranks' shards), and verifies every byte.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(HERE / "src"))

from s3ckpt import S3Settings, make_client  # noqa: E402
from s3ckpt.minio import MinioServer  # noqa: E402
from s3ckpt.s3 import ensure_bucket  # noqa: E402

DEMO = HERE / ".demo-dcp"
RUN, STEPS, EVERY, KILL_AFTER = "mlp-dcp", 40, 10, 20


def banner(text: str) -> None:
    print(f"\n\033[1m=== {text} ===\033[0m", flush=True)


def torchrun(env: dict[str, str], ranks: int, steps: int, kill_after: int | None = None) -> int:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={ranks}",
           str(HERE / "scripts" / "train_dcp.py"), "--run-name", RUN, "--steps", str(steps),
           "--ckpt-every", str(EVERY), "--loss-log", ".demo-dcp/loss.jsonl"]
    print(f"$ torchrun --standalone --nproc-per-node={ranks} scripts/train_dcp.py " + " ".join(cmd[6:]),
          flush=True)
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         start_new_session=True, cwd=HERE)
    assert p.stdout is not None
    for line in p.stdout:
        if "Gloo" in line or "OMP_NUM_THREADS" in line or line.startswith(("W1", "*")):
            continue  # launcher chatter
        print("  " + line.rstrip(), flush=True)
        if kill_after and f"checkpoint step {kill_after} committed" in line:
            for pid in [p.pid, *descendants(p.pid)]:  # the ranks run in sessions of their own
                os.kill(pid, signal.SIGKILL)
            p.wait()
            print(f"\n  *** SIGKILL sent to the whole job (launcher + {ranks} ranks) ***", flush=True)
            return p.returncode
    return p.wait()


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (from /proc), so that a kill reaches the launcher and all its ranks at
    once, like a lost node."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        kids = children.get(todo.pop(), [])
        out += kids
        todo += kids
    return out


def cli(env: dict[str, str], *args: str) -> None:
    subprocess.run([sys.executable, "-m", "s3ckpt.cli", *args, "--run", RUN], env=env, check=True)


def main() -> int:
    DEMO.mkdir(exist_ok=True)
    (DEMO / "loss.jsonl").unlink(missing_ok=True)
    banner("starting MinIO natively")
    with MinioServer() as srv:
        s = S3Settings(endpoint=srv.endpoint, access_key=srv.user, secret_key=srv.password,
                       bucket="checkpoints")
        ensure_bucket(make_client(s), s)
        print(f"  bucket 'checkpoints' ready at {srv.endpoint}")
        env = dict(os.environ, S3CKPT_ENDPOINT=srv.endpoint, S3CKPT_ACCESS_KEY=srv.user,
                   S3CKPT_SECRET_KEY=srv.password, S3CKPT_BUCKET="checkpoints", PYTHONUNBUFFERED="1",
                   OMP_NUM_THREADS="1")

        banner(f"2 ranks, {STEPS} steps, a DCP checkpoint every {EVERY}; the job is killed after step "
               f"{KILL_AFTER}")
        rc = torchrun(env, 2, STEPS, kill_after=KILL_AFTER)
        assert rc == -signal.SIGKILL, f"the job should have been killed, exit code {rc}"
        banner("what the bucket holds (only committed steps count; every rank's object is in the manifest)")
        cli(env, "list", "--verify")

        banner("the same command again: every rank resumes from the newest verified step")
        if torchrun(env, 2, STEPS) != 0:
            return 1
        banner("10 more steps on 1 rank: DCP reshards the 2-rank checkpoint")
        if torchrun(env, 1, STEPS + EVERY) != 0:
            return 1
        banner("every checkpoint, SHA-256 of every byte")
        cli(env, "verify")
    return 0


if __name__ == "__main__":
    sys.exit(main())
