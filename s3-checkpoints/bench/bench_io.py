"""Save/load throughput and peak memory of s3ckpt vs raw boto3 upload_file/download_file.

Same MinIO server, same bytes, same run. Each measurement runs in a fresh child process so that its peak
RSS (VmHWM) is its own. "extra" memory = peak RSS minus what the process needs anyway (the state itself
and the interpreter/libraries, measured just before the operation).

    make bench                       # 1 GiB state (16 x 64 MiB float32 tensors), 3 rounds
    python bench/bench_io.py --size-mib 256 --rounds 1     # quicker

Prints a table with ratios and writes bench/results/latest.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MiB = 1024 * 1024
HERE = Path(__file__).resolve().parent


def rss_bytes(field: str = "VmRSS") -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(field)


def reset_peak() -> None:
    """Reset VmHWM to the current RSS (Linux >= 4.0), so the peak we read is the operation's own."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def make_state(size_mib: int, tensors: int):
    import torch

    g = torch.Generator().manual_seed(0)
    per = size_mib * MiB // tensors // 4
    return {f"layer{i}.weight": torch.randn(per, generator=g) for i in range(tensors)}


def raw_client(endpoint: str, user: str, password: str):
    """The usual way: boto3 with the two settings MinIO needs since boto3 1.36 (otherwise defaults)."""
    import boto3
    from botocore.config import Config

    return boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=user, aws_secret_access_key=password,
                        config=Config(region_name="us-east-1", request_checksum_calculation="when_required",
                                      response_checksum_validation="when_required"))


def child(args: argparse.Namespace) -> None:
    """One measurement; prints a JSON line."""
    import torch

    from s3ckpt import CheckpointStore, S3Settings

    s = S3Settings(endpoint=args.endpoint, access_key=args.user, secret_key=args.password, bucket=args.bucket,
                   prefix="bench")
    tmpfile = os.path.join(args.workdir, "state.pt")
    state = None
    if args.mode in ("ours-save", "raw-upload", "prepare"):
        state = make_state(args.size_mib, args.tensors)
    if args.mode == "prepare":  # the raw baseline's local file: the very bytes torch.save produces
        torch.save(state, tmpfile)
        print(json.dumps({"bytes": os.path.getsize(tmpfile)}))
        return
    store = CheckpointStore(settings=s, run="bench", part_size=args.part_mib * MiB,
                            max_inflight=args.inflight)
    client = raw_client(args.endpoint, args.user, args.password)
    base = rss_bytes()
    reset_peak()
    t0 = time.perf_counter()
    if args.mode == "ours-save":
        info = store.save(args.step, {"model": state})
        nbytes = info.total_bytes
    elif args.mode == "ours-load":
        ck = store.load(args.step)
        nbytes = sum(o["size"] for o in ck.manifest["objects"])
        state = ck.state["model"]
    elif args.mode == "raw-upload":
        client.upload_file(tmpfile, args.bucket, f"raw/{args.step}.pt")
        nbytes = os.path.getsize(tmpfile)
    elif args.mode == "raw-download":
        dst = os.path.join(args.workdir, "down.pt")
        client.download_file(args.bucket, f"raw/{args.step}.pt", dst)
        nbytes = os.path.getsize(dst)
        os.unlink(dst)
    else:
        raise SystemExit(f"unknown mode {args.mode}")
    secs = time.perf_counter() - t0
    peak = rss_bytes("VmHWM")
    state_bytes = sum(t.numel() * t.element_size() for t in state.values()) if state else 0
    # save/upload: the state was already resident in `base`; load: the loaded state is wanted, not extra
    extra = peak - base - (state_bytes if args.mode == "ours-load" else 0)
    print(json.dumps({"mode": args.mode, "seconds": secs, "bytes": nbytes, "peak_extra": extra}))


def run_child(argv: list[str]) -> dict:
    r = subprocess.run([sys.executable, __file__, "--child", *argv], capture_output=True, text=True,
                       timeout=1800)
    if r.returncode != 0:
        raise SystemExit(f"benchmark child failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size-mib", type=int, default=1024)
    p.add_argument("--tensors", type=int, default=16)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--part-mib", type=int, default=8)
    p.add_argument("--inflight", type=int, default=5)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--mode", help=argparse.SUPPRESS)
    p.add_argument("--step", type=int, default=1, help=argparse.SUPPRESS)
    for k in ("endpoint", "user", "password", "bucket", "workdir"):
        p.add_argument(f"--{k}", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args)

    sys.path.insert(0, str(HERE.parent / "src"))
    from s3ckpt import S3Settings, make_client
    from s3ckpt.minio import MinioServer
    from s3ckpt.s3 import ensure_bucket

    with tempfile.TemporaryDirectory(prefix="s3ckpt-bench-") as work, MinioServer() as srv:
        s = S3Settings(endpoint=srv.endpoint, access_key=srv.user, secret_key=srv.password, bucket="bench")
        ensure_bucket(make_client(s), s)
        common = [f"--endpoint={srv.endpoint}", f"--user={srv.user}", f"--password={srv.password}",
                  "--bucket=bench", f"--workdir={work}", f"--size-mib={args.size_mib}",
                  f"--tensors={args.tensors}", f"--part-mib={args.part_mib}", f"--inflight={args.inflight}"]
        print(f"MinIO {srv.endpoint} (native, data in {srv.data_dir}); state {args.size_mib} MiB in "
              f"{args.tensors} tensors; {args.rounds} round(s), alternating ours/raw", flush=True)
        run_child(common + ["--mode=prepare"])
        res: dict[str, list[dict]] = {}
        for rnd in range(args.rounds):
            for mode in ("ours-save", "raw-upload", "ours-load", "raw-download"):
                r = run_child(common + [f"--mode={mode}", f"--step={rnd + 1}"])
                res.setdefault(mode, []).append(r)
                print(f"  round {rnd + 1} {mode:13s} {r['bytes'] / MiB / r['seconds']:8.1f} MiB/s  "
                      f"peak extra {r['peak_extra'] / MiB:7.1f} MiB", flush=True)

    def med(mode: str, key: str) -> float:
        return statistics.median(x[key] for x in res[mode])

    def tput(mode: str) -> float:
        return statistics.median(x["bytes"] / MiB / x["seconds"] for x in res[mode])

    rows = [("save", "ours-save", "raw-upload", "boto3 upload_file"),
            ("load", "ours-load", "raw-download", "boto3 download_file")]
    print()
    print("| operation | s3ckpt MiB/s | raw boto3 MiB/s | ratio | s3ckpt peak extra RSS "
          "| raw peak extra RSS |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    summary = {}
    for name, ours, raw, label in rows:
        ratio = tput(ours) / tput(raw)
        summary[name] = {"ours_mib_s": tput(ours), "raw_mib_s": tput(raw), "ratio": ratio,
                         "ours_peak_extra_mib": med(ours, "peak_extra") / MiB,
                         "raw_peak_extra_mib": med(raw, "peak_extra") / MiB}
        print(f"| {name} vs {label} | {tput(ours):.0f} | {tput(raw):.0f} | {ratio:.2f}x | "
              f"{med(ours, 'peak_extra') / MiB:.0f} MiB | {med(raw, 'peak_extra') / MiB:.0f} MiB |")
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "latest.json").write_text(json.dumps({"args": vars(args), "summary": summary, "runs": res},
                                                indent=1))


if __name__ == "__main__":
    main()
