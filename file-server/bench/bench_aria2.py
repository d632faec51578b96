"""aria2c side by side with ``fileserver fetch``: the same pool, the same nginx, 1 vs 2 mirrors.

aria2c (Debian ``aria2``) is what people reach for first for bulk verified downloads: an input list with a
``checksum=sha-256=...`` per file (aria2c verifies each one and fails the run on a mismatch), many
connections, HTTP pipelining. Both clients run as a subprocess (start-up included), both get the checksums
locally (aria2c in its input list, ours with ``--manifest``), both write into a fresh folder on tmpfs.
Reported: verified files/s (wall clock) and the client's CPU seconds (user + sys of the subprocess), on
loopback and through ``delay_proxy.py`` (a 20 ms round trip; one proxy per mirror, same for both clients).
With 2 mirrors both nginx serve the same folder; aria2c gets both URIs for every file, alternating which one
comes first so that its files are spread too. Run: ``make bench`` or
``.venv/bin/python bench/bench_aria2.py [--count 10000] [--repeat 1]``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from fileserver.manifest import SUMS_NAME, Entry, parse_sums
from fileserver.nginx import NativeNginx, free_port
from fileserver.pool import generate

HERE = Path(__file__).resolve().parent
RUN = HERE.parent / "run" / "bench"


def timed(cmd: list[str]) -> tuple[float, float, subprocess.CompletedProcess[str]]:
    """Wall seconds and CPU seconds (user + sys) of one subprocess."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, res


def aria2_input(entries: list[Entry], urls: list[str], path: Path) -> Path:
    """One block per file: its URIs (tab-separated, rotated per file), where to write it, its SHA-256."""
    lines = []
    for i, e in enumerate(entries):
        k = i % len(urls)
        uris = [u + e.path for u in urls[k:] + urls[:k]]
        lines += ["\t".join(uris), f"  out={e.path}", f"  checksum=sha-256={e.sha256}"]
    path.write_text("\n".join(lines) + "\n")
    return path


def run_aria2(entries: list[Entry], urls: list[str], out: Path, jobs: int) -> tuple[float, float]:
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    listing = aria2_input(entries, urls, RUN / "aria2-input.txt")
    cmd = [
        "aria2c",
        f"--input-file={listing}",
        f"--dir={out}",
        f"--max-concurrent-downloads={jobs}",
        "--enable-http-pipelining=true",
        "--enable-http-keep-alive=true",
        "--file-allocation=none",
        "--allow-overwrite=true",
        "--auto-file-renaming=false",
        "--console-log-level=error",
        "--summary-interval=0",
        "--download-result=hide",
        "--max-tries=5",
    ]
    wall, cpu, res = timed(cmd)
    if res.returncode != 0:
        raise SystemExit(f"bench: aria2c exited {res.returncode}: {(res.stdout + res.stderr)[-2000:]}")
    check(out, entries)
    return wall, cpu


def run_ours(
    entries: list[Entry], urls: list[str], manifest: Path, out: Path, jobs: int, depth: int
) -> tuple[float, float]:
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "fileserver", "fetch", *urls, "--out", str(out), "--manifest", str(manifest)]
    cmd += ["-j", str(jobs), "--depth", str(depth), "-q"]
    wall, cpu, res = timed(cmd)
    if res.returncode != 0 or f"verified {len(entries)}/{len(entries)}" not in res.stdout:
        raise SystemExit(f"bench: {' '.join(cmd)} failed: {res.stdout}{res.stderr}")
    check(out, entries)
    return wall, cpu


def check(out: Path, entries: list[Entry]) -> None:
    """Every file is there with its size (the clients themselves checked the SHA-256; not timed)."""
    for e in entries:
        if e.size is not None and (out / e.path).stat().st_size != e.size:
            raise SystemExit(f"bench: {out / e.path} has the wrong size")


def delay_proxy(server: NativeNginx, rtt_ms: float) -> tuple[subprocess.Popen[str], str]:
    port = free_port()
    cmd = [sys.executable, str(HERE / "delay_proxy.py"), str(port), server.host, str(server.port)]
    proxy = subprocess.Popen([*cmd, str(rtt_ms), "1800"], stdout=subprocess.PIPE, text=True)
    assert proxy.stdout is not None and proxy.stdout.readline().strip() == "ready"
    return proxy, f"http://127.0.0.1:{port}/"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=10_000)
    ap.add_argument("--rtt-ms", type=float, default=20.0)
    ap.add_argument("--repeat", type=int, default=1, help="runs per row (the median is shown)")
    ap.add_argument("--aria2-jobs", type=int, default=16, help="aria2c --max-concurrent-downloads")
    ap.add_argument("-j", "--jobs", type=int, default=4, help="ours: connections per mirror")
    ap.add_argument("--depth", type=int, default=32)
    ap.add_argument(
        "--out-dir",
        type=Path,
        default=Path("/dev/shm/fileserver-bench-aria2") if Path("/dev/shm").is_dir() else RUN / "out-aria2",
    )
    args = ap.parse_args()
    if shutil.which("aria2c") is None:
        print("aria2c not found: apt-get install -y aria2 (make bench does it as root)", file=sys.stderr)
        return 2

    pool = RUN / f"pool-{args.count}"
    if not (pool / SUMS_NAME).is_file():
        generate(pool, args.count, seed=0)
    manifest = pool / SUMS_NAME
    entries = parse_sums(manifest.read_text())
    aria2 = subprocess.run(["aria2c", "--version"], capture_output=True, text=True).stdout.split("\n")[0]
    load0 = os.getloadavg()
    print(f"pool {pool} ({len(entries)} files), {aria2}, load average {load0[0]:.1f}", flush=True)
    rows: list[dict] = []
    with (
        NativeNginx(root=pool, prefix=RUN / "nginx-a") as a,
        NativeNginx(root=pool, prefix=RUN / "nginx-b") as b,
    ):
        run_ours(entries, [a.url, b.url], manifest, args.out_dir, args.jobs, args.depth)  # warm caches
        proxies = [delay_proxy(s, args.rtt_ms) for s in (a, b)]
        try:
            networks = {
                "loopback": [a.url, b.url],
                f"{args.rtt_ms:.0f} ms RTT": [url for _, url in proxies],
            }
            for where, urls in networks.items():
                for n in (1, 2):
                    clients = {
                        f"fileserver fetch -j {args.jobs} --depth {args.depth}": lambda u=urls[:n]: run_ours(
                            entries, u, manifest, args.out_dir, args.jobs, args.depth
                        ),
                        f"aria2c -j {args.aria2_jobs} (pipelining)": lambda u=urls[:n]: run_aria2(
                            entries, u, args.out_dir, args.aria2_jobs
                        ),
                    }
                    for label, fn in clients.items():
                        runs = [fn() for _ in range(args.repeat)]
                        wall = statistics.median(w for w, _ in runs)
                        cpu = statistics.median(c for _, c in runs)
                        row = {"network": where, "mirrors": n, "client": label, "files": len(entries)}
                        row |= {"seconds": wall, "files_per_s": len(entries) / wall, "cpu_s": cpu}
                        rows.append(row)
                        print(
                            f"{where:10s} {n} mirror(s)  {label:34s} {row['files_per_s']:8,.0f} files/s  "
                            f"{wall:6.2f} s  CPU {cpu:6.2f} s",
                            flush=True,
                        )
        finally:
            for proxy, _ in proxies:
                proxy.terminate()
                proxy.wait(10)
    shutil.rmtree(args.out_dir, ignore_errors=True)
    load1 = os.getloadavg()
    print(
        f"\nload average {load0[0]:.1f} at the start, {load1[0]:.1f} at the end (2 cores, shared machine)\n"
    )
    print("| network | mirrors | client | verified files/s | seconds | client CPU s |")
    print("| --- | ---: | --- | ---: | ---: | ---: |")
    for r in rows:
        print(
            f"| {r['network']} | {r['mirrors']} | {r['client']} | {r['files_per_s']:,.0f} | "
            f"{r['seconds']:.2f} | {r['cpu_s']:.2f} |"
        )
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "aria2.json").write_text(json.dumps({"load": [load0, load1], "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
