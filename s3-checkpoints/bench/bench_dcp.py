"""DCP save and load of the same checkpoint by 1, 2 and 4 ranks, side by side on one MinIO:

* ``s3ckpt``: s3ckpt.dcp's ``S3StorageWriter``/``S3StorageReader`` (SHA-256 of every byte, the commit);
* ``s3tc``: awslabs' s3torchconnector DCP writer/reader (PyPI ``s3torchconnector``, the ``bench`` extra)
  into the same bucket under another prefix, with its defaults except ``thread_count`` (its README's 8);
* ``fs``: DCP's own ``FileSystemWriter``/``FileSystemReader`` into a local folder (the usual reference).

    make bench-dcp                                        # 256 MiB, 1/2/4 ranks, 2 rounds, native MinIO
    python bench/bench_dcp.py --ranks 1,2 --rounds 3
    python bench/bench_dcp.py --targets s3ckpt,s3tc --ranks 1          # a quicker look at one pair
    python bench/bench_dcp.py --endpoint http://127.0.0.1:9000         # a running server (e.g. compose)

The state is 8 float32 tensors of SIZE/8 each, sharded by rows over the ranks (DTensor, Shard(0)): every
rank saves and loads SIZE/world. One job per (round, ranks, target) runs the ranks as processes: a save,
then a load into freshly allocated DTensors of the same sharding (filled with NaN), then a check that every
loaded shard equals what was saved, bit for bit (a job that loaded anything else fails the bench). "time"
is rank 0's wall clock from a barrier before ``dcp.save``/``dcp.load`` to a barrier after it (the s3ckpt
save includes its commit: manifest written and checked; its load the manifest read and the SHA-256 of
every byte). "extra memory" is the largest peak RSS growth of any rank during the operation (VmHWM reset
just before); "CPU" the CPU seconds all ranks' processes used in it (their threads included, not MinIO's).
Targets alternate inside each round, so that a change of machine load hits all alike.

Prints a line per job, then one table (medians over the rounds, MiB/s, and the ratio s3ckpt /
s3torchconnector per ranks and operation), and writes every job's figures to bench/results/dcp.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

MiB = 1024 * 1024
HERE = Path(__file__).resolve().parent
TENSORS = 8
TARGETS = ("s3ckpt", "s3tc", "fs")
NAMES = {"s3ckpt": "s3ckpt.dcp", "s3tc": "s3torchconnector", "fs": "FileSystem"}
JOB_TIMEOUT = 900  # s: a job that takes longer is stuck, not slow
S3TC_REGION = "us-east-1"


def rss(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(field)


def s3tc_storage(a: argparse.Namespace, world: int) -> tuple[Any, Callable[[], Any]]:
    """s3torchconnector's DCP writer and reader on our MinIO. Its DCP classes take no endpoint: the native
    client reads ``AWS_ENDPOINT_URL`` (and the keys from ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``),
    and MinIO needs path-style addressing."""
    os.environ.update(AWS_ENDPOINT_URL=a.endpoint, AWS_ACCESS_KEY_ID=a.user, AWS_SECRET_ACCESS_KEY=a.password,
                      AWS_REGION=S3TC_REGION)
    from s3torchconnector import S3ClientConfig
    from s3torchconnector.dcp import S3StorageReader, S3StorageWriter

    cfg = S3ClientConfig(force_path_style=True)
    uri = f"s3://{a.bucket}/s3tc/{a.tag}/w{world}-r{a.round}"
    return (S3StorageWriter(S3TC_REGION, uri, s3client_config=cfg, thread_count=a.s3tc_threads),
            lambda: S3StorageReader(S3TC_REGION, uri, s3client_config=cfg))


def storage(a: argparse.Namespace, world: int) -> tuple[Any, Callable[[], Any]]:
    """The job's target: its writer, and how to make its reader (once the save is done)."""
    import torch.distributed.checkpoint as dcp

    if a.target == "s3ckpt":
        from s3ckpt import S3Settings
        from s3ckpt.dcp import S3StorageReader, S3StorageWriter

        s = S3Settings(endpoint=a.endpoint, access_key=a.user, secret_key=a.password, bucket=a.bucket,
                       prefix="s3ckpt")
        run = f"dcp-{a.tag}-{world}"
        return S3StorageWriter(a.round, run, settings=s), \
            lambda: S3StorageReader(a.round, run, settings=s, max_workers=a.s3ckpt_workers)
    if a.target == "s3tc":
        return s3tc_storage(a, world)
    path = os.path.join(a.workdir, f"w{world}-r{a.round}")
    return dcp.FileSystemWriter(path), lambda: dcp.FileSystemReader(path)


def timed(fn: Callable[[], Any]) -> tuple[float, int, float]:
    """(seconds between the barriers around ``fn``, this rank's peak RSS growth during it, the CPU seconds
    this rank's process used in it)."""
    import torch.distributed as dist

    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # VmHWM := current RSS: the peak we read is this operation's own
    base = rss("VmRSS")
    dist.barrier()
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    cpu = time.process_time() - c0
    dist.barrier()
    return time.perf_counter() - t0, rss("VmHWM") - base, cpu


def worker(a: argparse.Namespace) -> None:
    """One rank: build its shards, save them, load them into new DTensors, check them, report (rank 0
    prints one JSON line)."""
    import torch
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import DTensor, Shard

    warnings.filterwarnings("ignore", message="TypedStorage is deprecated")  # inside FileSystemWriter
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    mesh = init_device_mesh("cpu", (world,))
    rows = a.size_mib * MiB // TENSORS // 4 // 1024  # each tensor: rows x 1024 float32
    g = torch.Generator().manual_seed(rank)
    state = {f"layer{i}": DTensor.from_local(torch.randn(rows // world, 1024, generator=g), mesh, [Shard(0)])
             for i in range(TENSORS)}
    writer, make_reader = storage(a, world)
    save_s, save_extra, save_cpu = timed(lambda: dcp.save(state, storage_writer=writer))
    fresh = {k: DTensor.from_local(torch.full_like(v.to_local(), float("nan")), mesh, [Shard(0)])
             for k, v in state.items()}
    reader = make_reader()  # after the save: s3ckpt's reader checks the step exists when it is made
    load_s, load_extra, load_cpu = timed(lambda: dcp.load(fresh, storage_reader=reader))
    wrong = [k for k in state if not torch.equal(fresh[k].to_local(), state[k].to_local())]
    report: list[Any] = [None] * world
    dist.all_gather_object(report, ((save_extra, save_cpu), (load_extra, load_cpu), wrong))
    if rank == 0:
        bad = sorted({f"rank {r}: {k}" for r, (_s, _l, ks) in enumerate(report) for k in ks})
        nbytes = sum(t.to_local().nbytes for t in state.values()) * world
        for op, seconds, i in (("save", save_s, 0), ("load", load_s, 1)):
            print(json.dumps({"target": a.target, "world": world, "round": a.round, "op": op,
                              "seconds": seconds, "bytes": nbytes,
                              "extra_max": max(r[i][0] for r in report),
                              "cpu": sum(r[i][1] for r in report), "wrong": bad}), flush=True)
    dist.destroy_process_group()


def run_job(a: argparse.Namespace, target: str, world: int, rnd: int, env: dict[str, str]) -> list[dict]:
    from s3ckpt.minio import free_port

    port = str(free_port())
    args = [sys.executable, __file__, "--worker", "--target", target, "--round", str(rnd),
            "--size-mib", str(a.size_mib), "--endpoint", a.endpoint, "--user", a.user, "--password",
            a.password, "--bucket", a.bucket, "--workdir", a.workdir, "--s3tc-threads", str(a.s3tc_threads),
            "--s3ckpt-workers", str(a.s3ckpt_workers), "--tag", a.tag]
    procs = []
    for r in range(world):
        e = env | {"RANK": str(r), "WORLD_SIZE": str(world), "OMP_NUM_THREADS": "1",
                   "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port}
        procs.append(subprocess.Popen(args, env=e, stdout=subprocess.PIPE,
                                      stderr=subprocess.DEVNULL if r else None, text=True))
    try:
        outs = [p.communicate(timeout=JOB_TIMEOUT)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    if any(p.returncode for p in procs):
        raise SystemExit(f"{target} x{world} failed: exit codes {[p.returncode for p in procs]}")
    rows = [json.loads(line) for line in outs[0].splitlines() if line.startswith("{")]
    wrong = [w for r in rows for w in r["wrong"]]
    if wrong:
        raise SystemExit(f"{target} x{world}: the loaded tensors differ from the saved ones: {wrong}")
    return rows


def rate(r: dict) -> float:
    return r["bytes"] / MiB / r["seconds"]


def table(results: list[dict], worlds: list[int], targets: list[str]) -> list[str]:
    """One markdown table: medians per (ranks, op, target); the ratio s3ckpt / s3torchconnector."""
    def med(target: str, world: int, op: str, key: str) -> float | None:
        rs = [r for r in results if (r["target"], r["world"], r["op"]) == (target, world, op)]
        if not rs:
            return None
        return statistics.median(rate(r) if key == "rate" else r[key] / MiB for r in rs)

    pair = "s3ckpt" in targets and "s3tc" in targets
    cols = [f"{NAMES[t]} MiB/s" for t in targets]
    if pair:  # the ratio right after the two columns it compares
        cols.insert(targets.index("s3tc") + 1, "s3ckpt / s3torchconnector")
    head = ["ranks", "op", *cols, *[f"{NAMES[t]} extra MiB/rank" for t in targets if t != "fs"],
            *[f"{NAMES[t]} CPU s" for t in targets if t != "fs"]]
    lines = ["| " + " | ".join(head) + " |",
             "| " + " | ".join("---" if h == "op" else "---:" for h in head) + " |"]
    for world in worlds:
        for op in ("save", "load"):
            rates = {t: med(t, world, op, "rate") for t in targets}
            row = [str(world), op]
            for t in targets:
                row.append(f"{rates[t]:.0f}")
                if pair and t == "s3tc":
                    row.append(f"{rates['s3ckpt'] / rates['s3tc']:.2f}x")
            row += [f"{med(t, world, op, 'extra_max'):.0f}" for t in targets if t != "fs"]
            row += [f"{med(t, world, op, 'cpu') * MiB:.2f}" for t in targets if t != "fs"]
            lines.append("| " + " | ".join(row) + " |")
    return lines


def main() -> None:
    p = argparse.ArgumentParser(
        description="DCP save and load, 1/2/4 ranks: s3ckpt.dcp vs s3torchconnector's DCP writer/reader on "
                    "the same MinIO, with DCP's FileSystemWriter/Reader into a local folder as reference. "
                    "Every load is checked bit for bit against what was saved.",
        epilog="Starts the native MinIO (make install) unless --endpoint is given; prints one line per job "
               "and a markdown table of medians; writes bench/results/dcp.json. One job per round, rank "
               f"count and target; a job that runs longer than {JOB_TIMEOUT} s fails the bench.")
    p.add_argument("--size-mib", type=int, default=256, help="checkpoint size (all ranks together), MiB")
    p.add_argument("--rounds", type=int, default=2, help="rounds; the table shows each figure's median")
    p.add_argument("--ranks", default="1,2,4", help="comma-separated world sizes (default 1,2,4)")
    p.add_argument("--targets", default=",".join(TARGETS),
                   help="comma-separated subset of s3ckpt,s3tc,fs (default all three)")
    p.add_argument("--s3tc-threads", type=int, default=8,
                   help="s3torchconnector S3StorageWriter thread_count (default 8, as in its README)")
    p.add_argument("--s3ckpt-workers", type=int, default=8,
                   help="s3ckpt S3StorageReader max_workers: part GETs at once per rank (default 8, its own)")
    p.add_argument("--endpoint", help="use this S3 endpoint instead of starting the native MinIO")
    p.add_argument("--user", default=os.environ.get("MINIO_ROOT_USER", "minioadmin"))
    p.add_argument("--password", default=os.environ.get("MINIO_ROOT_PASSWORD", "minioadmin-change-me"))
    p.add_argument("--bucket", default="bench-dcp")
    p.add_argument("--workdir", help="folder for the FileSystemWriter target (default: a temporary one)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--target", help=argparse.SUPPRESS)
    p.add_argument("--round", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--tag", default=uuid.uuid4().hex[:6], help=argparse.SUPPRESS)  # this run's names
    a = p.parse_args()
    if a.worker:
        return worker(a)
    targets = [t for t in TARGETS if t in a.targets.split(",")]
    worlds = [int(x) for x in a.ranks.split(",")]
    if not targets or any(t not in TARGETS for t in a.targets.split(",")):
        p.error(f"--targets: a comma-separated subset of {','.join(TARGETS)}")
    if "s3tc" in targets:
        try:
            import s3torchconnector  # noqa: F401
        except ImportError:
            p.error("s3torchconnector is not installed: make install (the bench extra), or --targets "
                    "s3ckpt,fs")

    from s3ckpt import S3Settings, make_client
    from s3ckpt.minio import MinioServer
    from s3ckpt.s3 import ensure_bucket

    srv = None
    if not a.endpoint:
        srv = MinioServer().start()
        a.endpoint, a.user, a.password = srv.endpoint, srv.user, srv.password
    a.workdir = a.workdir or tempfile.mkdtemp(prefix="bench-dcp-fs-", dir=str(HERE))
    jobs = a.rounds * len(worlds) * len(targets)
    print(f"{a.size_mib} MiB checkpoint, ranks {worlds}, targets {targets}, {a.rounds} round(s): {jobs} jobs "
          f"(save + load each), MinIO at {a.endpoint}", flush=True)
    results: list[dict] = []
    started = time.monotonic()
    try:
        s = S3Settings(endpoint=a.endpoint, access_key=a.user, secret_key=a.password, bucket=a.bucket)
        ensure_bucket(make_client(s), s, versioning=True)
        env = dict(os.environ, PYTHONPATH=str(HERE.parent / "src"))
        for rnd in range(1, a.rounds + 1):
            for world in worlds:
                for target in targets:
                    rows = run_job(a, target, world, rnd, env)
                    results += rows
                    print(f"  [{len(results) // 2:2}/{jobs} {time.monotonic() - started:5.0f} s] round {rnd} "
                          f"x{world} {NAMES[target]:16} " + "  ".join(
                              f"{r['op']} {rate(r):6.1f} MiB/s (extra {r['extra_max'] / MiB:5.1f} MiB, "
                              f"cpu {r['cpu']:4.2f} s)"
                              for r in rows) + "  loaded = saved", flush=True)
                    shutil.rmtree(a.workdir, ignore_errors=True)
                    os.makedirs(a.workdir, exist_ok=True)
    finally:
        if srv is not None:
            srv.stop()
        shutil.rmtree(a.workdir, ignore_errors=True)
    print(f"\n{a.size_mib} MiB checkpoint, median of {a.rounds} round(s), MiB/s; extra = peak RSS growth of "
          f"the largest rank; s3torchconnector writer thread_count={a.s3tc_threads}")
    print("\n".join(table(results, worlds, targets)))
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "dcp.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
