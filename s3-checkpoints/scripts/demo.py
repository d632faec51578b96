"""`make demo`: the native main job, end to end, with a real crash in the middle.

1. starts the real MinIO server (the `go install` build) on a free loopback port, creates the bucket;
2. trains the digits MLP with a checkpoint every 50 steps, and SIGKILLs it mid-run (no clean-up at all);
3. lists what the bucket holds: only committed, verified steps;
4. runs the very same command again: it resumes from the newest verified checkpoint and finishes;
5. verifies every checkpoint byte by byte and plots the loss across the crash (.demo/loss.png).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(HERE / "src"))

from s3ckpt import S3Settings, make_client  # noqa: E402
from s3ckpt.minio import MinioServer  # noqa: E402
from s3ckpt.s3 import ensure_bucket  # noqa: E402

DEMO = HERE / ".demo"
STEPS, EVERY, KILL_AFTER = 400, 50, 200


def banner(text: str) -> None:
    print(f"\n\033[1m=== {text} ===\033[0m", flush=True)


def run_train(env: dict[str, str], kill_after_ckpt: int | None = None) -> int:
    cmd = [sys.executable, "-m", "s3ckpt.train", "--run", "digits", "--steps", str(STEPS),
           "--ckpt-every", str(EVERY), "--loss-log", str(DEMO / "loss.jsonl"), "--throttle", "0.01"]
    print("$ s3ckpt-train " + " ".join(cmd[3:]), flush=True)
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True)  # progress bar: stderr, live
    assert p.stdout is not None
    for line in p.stdout:
        print("  " + line.rstrip(), flush=True)
        if kill_after_ckpt and f"checkpoint step {kill_after_ckpt} saved" in line:
            time.sleep(0.3)  # let it train on a little, past the checkpoint: that work will be lost
            os.kill(p.pid, signal.SIGKILL)
            p.wait()
            print(f"\n  *** SIGKILL sent to the trainer (pid {p.pid}) in the middle of training ***",
                  flush=True)
            return p.returncode
    return p.wait()


def plot(kill_step: int, resumed_from: int) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    runs: list[list[tuple[int, float]]] = [[]]
    last = 0
    for line in (DEMO / "loss.jsonl").read_text().splitlines():
        r = json.loads(line)
        if r["step"] <= last:
            runs.append([])
        runs[-1].append((r["step"], r["loss"]))
        last = r["step"]
    fig, ax = plt.subplots(figsize=(8, 4))
    for i, pts in enumerate(runs):
        ax.plot(*zip(*pts, strict=True), lw=1, label="first run (killed)" if i == 0 else "after resume")
    ax.axvline(resumed_from, color="k", ls="--", lw=0.8, label=f"resumed from checkpoint {resumed_from}")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_title("digits MLP: SIGKILL mid-run, resume from MinIO (identical losses on the overlap)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(DEMO / "loss.png", dpi=110)
    print(f"  loss plot: {DEMO / 'loss.png'}")


def main() -> int:
    shutil.rmtree(DEMO, ignore_errors=True)
    DEMO.mkdir()
    banner("starting MinIO natively (the same server as the compose image)")
    with MinioServer(data_dir=str(DEMO / "minio-data")) as srv:
        print(f"  {srv.binary} server {srv.data_dir} --address 127.0.0.1:{srv.port}")
        s = S3Settings(endpoint=srv.endpoint, access_key=srv.user, secret_key=srv.password,
                       bucket="checkpoints")
        ensure_bucket(make_client(s), s)
        print(f"  bucket 'checkpoints' ready at {srv.endpoint} (versioning on)")
        env = dict(os.environ, S3CKPT_ENDPOINT=srv.endpoint, S3CKPT_ACCESS_KEY=srv.user,
                   S3CKPT_SECRET_KEY=srv.password, S3CKPT_BUCKET="checkpoints", PYTHONUNBUFFERED="1")

        banner(f"training {STEPS} steps, checkpoint every {EVERY}; we kill it after step {KILL_AFTER}")
        rc = run_train(env, kill_after_ckpt=KILL_AFTER)
        assert rc == -signal.SIGKILL, f"trainer should have been killed, exit code {rc}"

        banner("what the bucket holds now (only committed, verified steps count)")
        subprocess.run([sys.executable, "-m", "s3ckpt.cli", "list", "--verify"], env=env, check=True)

        banner("same command again: resumes from the bucket")
        rc = run_train(env)
        if rc != 0:
            return rc
        banner("every checkpoint, SHA-256 of every byte")
        subprocess.run([sys.executable, "-m", "s3ckpt.cli", "verify"], env=env, check=True)
        steps = [json.loads(x)["step"] for x in (DEMO / "loss.jsonl").read_text().splitlines()]
        resumed_from = next(steps[i] - 1 for i in range(1, len(steps)) if steps[i] <= steps[i - 1])
        plot(KILL_AFTER, resumed_from)
        print(f"\n  killed after step >= {KILL_AFTER}, resumed from step {resumed_from}, "
              f"finished {STEPS} steps.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
