"""The same checkpoint saved by 1, 2 and 4 ranks with torch.distributed.checkpoint: s3ckpt.dcp into MinIO
beside DCP's own FileSystemWriter into a local folder (the usual reference), in one run.

    make bench-dcp                                       # 256 MiB, 1/2/4 ranks, 2 rounds, native MinIO
    python bench/bench_dcp.py --size-mib 512 --rounds 3
    python bench/bench_dcp.py --endpoint http://127.0.0.1:9000   # a running server instead (e.g. compose)

The state is 8 float32 tensors of SIZE/8 each, sharded by rows over the ranks (DTensor, Shard(0)), so
every rank writes SIZE/world. "time" is rank 0's wall clock from a barrier before ``dcp.save`` to a barrier
after it (the S3 save includes the commit: manifest written and checked); "extra memory" is the largest
peak RSS growth of any rank during the save (VmHWM reset just before). Prints one table with ratios and
writes bench/results/dcp.json.
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
import warnings
from pathlib import Path

MiB = 1024 * 1024
HERE = Path(__file__).resolve().parent
TENSORS = 8


def rss(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(field)


def worker(a: argparse.Namespace) -> None:
    """One rank: build its shards, save once, report (rank 0 prints one JSON line)."""
    import torch
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import DTensor, Shard

    from s3ckpt import S3Settings
    from s3ckpt.dcp import S3StorageWriter

    warnings.filterwarnings("ignore", message="TypedStorage is deprecated")  # inside FileSystemWriter
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    mesh = init_device_mesh("cpu", (world,))
    rows = a.size_mib * MiB // TENSORS // 4 // 1024  # each tensor: rows x 1024 float32
    g = torch.Generator().manual_seed(rank)
    state = {f"layer{i}": DTensor.from_local(torch.randn(rows // world, 1024, generator=g), mesh, [Shard(0)])
             for i in range(TENSORS)}
    if a.target == "s3":
        s = S3Settings(endpoint=a.endpoint, access_key=a.user, secret_key=a.password, bucket=a.bucket,
                       prefix="bench")
        writer = S3StorageWriter(a.round, f"dcp-{world}", settings=s)
    else:
        writer = dcp.FileSystemWriter(os.path.join(a.workdir, f"w{world}-r{a.round}"))
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # VmHWM := current RSS: the peak we read is this save's own
    base = rss("VmRSS")
    dist.barrier()
    t0 = time.perf_counter()
    dcp.save(state, storage_writer=writer)
    dist.barrier()
    seconds = time.perf_counter() - t0
    extra = [0] * world
    dist.all_gather_object(extra, rss("VmHWM") - base)
    if rank == 0:
        print(json.dumps({"target": a.target, "world": world, "round": a.round, "seconds": seconds,
                          "bytes": sum(t.to_local().nbytes for t in state.values()) * world,
                          "extra_max": max(extra)}), flush=True)
    dist.destroy_process_group()


def run_job(a: argparse.Namespace, target: str, world: int, rnd: int, env: dict[str, str]) -> dict:
    from s3ckpt.minio import free_port

    port = str(free_port())
    args = [sys.executable, __file__, "--worker", "--target", target, "--round", str(rnd),
            "--size-mib", str(a.size_mib), "--endpoint", a.endpoint, "--user", a.user, "--password",
            a.password, "--bucket", a.bucket, "--workdir", a.workdir]
    procs = []
    for r in range(world):
        e = env | {"RANK": str(r), "WORLD_SIZE": str(world), "OMP_NUM_THREADS": "1",
                   "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port}
        procs.append(subprocess.Popen(args, env=e, stdout=subprocess.PIPE,
                                      stderr=subprocess.DEVNULL if r else None, text=True))
    outs = [p.communicate(timeout=1800)[0] for p in procs]
    if any(p.returncode for p in procs):
        raise SystemExit(f"{target} x{world} failed: exit codes {[p.returncode for p in procs]}")
    return json.loads(outs[0].strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description="s3ckpt.dcp vs DCP FileSystemWriter, 1/2/4 ranks")
    p.add_argument("--size-mib", type=int, default=256)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--ranks", default="1,2,4")
    p.add_argument("--endpoint", help="use this S3 endpoint instead of starting the native MinIO")
    p.add_argument("--user", default=os.environ.get("MINIO_ROOT_USER", "minioadmin"))
    p.add_argument("--password", default=os.environ.get("MINIO_ROOT_PASSWORD", "minioadmin-change-me"))
    p.add_argument("--bucket", default="bench-dcp")
    p.add_argument("--workdir")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--target", help=argparse.SUPPRESS)
    p.add_argument("--round", type=int, default=1, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker:
        return worker(a)

    from s3ckpt import S3Settings, make_client
    from s3ckpt.minio import MinioServer
    from s3ckpt.s3 import ensure_bucket

    srv = None
    if not a.endpoint:
        srv = MinioServer().start()
        a.endpoint, a.user, a.password = srv.endpoint, srv.user, srv.password
    a.workdir = a.workdir or tempfile.mkdtemp(prefix="bench-dcp-fs-", dir=str(HERE))
    try:
        s = S3Settings(endpoint=a.endpoint, access_key=a.user, secret_key=a.password, bucket=a.bucket)
        ensure_bucket(make_client(s), s, versioning=True)
        env = dict(os.environ, PYTHONPATH=str(HERE.parent / "src"))
        results: list[dict] = []
        for rnd in range(1, a.rounds + 1):
            for world in [int(x) for x in a.ranks.split(",")]:
                for target in ("s3", "fs"):  # alternating, so that load changes hit both alike
                    r = run_job(a, target, world, rnd, env)
                    results.append(r)
                    print(f"  round {rnd} {target:3} x{world}: {r['bytes'] / MiB / r['seconds']:7.1f} MiB/s  "
                          f"extra {r['extra_max'] / MiB:6.1f} MiB/rank", flush=True)
                    shutil.rmtree(a.workdir, ignore_errors=True)
                    os.makedirs(a.workdir, exist_ok=True)
    finally:
        if srv is not None:
            srv.stop()
        shutil.rmtree(a.workdir, ignore_errors=True)
    print(f"\n{a.size_mib} MiB checkpoint, median of {a.rounds} round(s); S3 = s3ckpt.dcp -> MinIO at "
          f"{a.endpoint}, FS = DCP FileSystemWriter -> local disk")
    print("| ranks | s3ckpt.dcp MiB/s | FileSystemWriter MiB/s | ratio | s3ckpt extra MiB/rank "
          "| FS extra MiB/rank |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    for world in [int(x) for x in a.ranks.split(",")]:
        def med(target: str, key: str, world: int = world) -> float:
            rs = [r for r in results if r["target"] == target and r["world"] == world]
            if key == "rate":
                return statistics.median(r["bytes"] / MiB / r["seconds"] for r in rs)
            return statistics.median(r[key] / MiB for r in rs)
        s3, fs = med("s3", "rate"), med("fs", "rate")
        print(f"| {world} | {s3:.0f} | {fs:.0f} | {s3 / fs:.2f}x | {med('s3', 'extra_max'):.0f} | "
              f"{med('fs', 'extra_max'):.0f} |")
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "dcp.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
