"""Client benchmark: verified files/s for a 10,000-file pool, ours vs a naive ``requests.get`` loop.

Both sides download from the same native nginx, check SHA-256 against the manifest and write the file.
Measured on loopback and through ``delay_proxy.py`` (20 ms round trip). Every loop is bounded in count and
time. Run: ``make bench`` or ``.venv/bin/python bench/bench_client.py [--count 10000]``.

``--baseline GITREF`` also times the client of an older commit against this tree's, both through the same
``fileserver fetch`` command line in a subprocess, interleaved run by run (old, new, new, old, ...) so that
the load of a shared machine falls on both alike; it prints each one's median and the ratio.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import requests

from fileserver.client import fetch_pool
from fileserver.manifest import SUMS_NAME, Entry, parse_sums
from fileserver.nginx import NativeNginx, free_port
from fileserver.pool import generate

HERE = Path(__file__).resolve().parent
RUN = HERE.parent / "run" / "bench"


def ours(url: str, manifest: Path, out: Path, jobs: int, depth: int) -> float:
    shutil.rmtree(out, ignore_errors=True)
    result = fetch_pool(url, out, manifest=manifest, connections=jobs, depth=depth)
    assert result.ok and result.downloaded == result.total, result.summary()
    return result.downloaded / result.seconds


def checkout(ref: str) -> Path:
    """``src/`` of commit ``ref`` (git archive), to put first on PYTHONPATH."""
    dest = RUN / f"baseline-{ref}"
    if not (dest / "src" / "fileserver").is_dir():
        dest.mkdir(parents=True, exist_ok=True)
        tar = subprocess.run(
            ["git", "archive", "--format=tar", ref, "src/fileserver"], cwd=HERE.parent, capture_output=True
        )
        if tar.returncode != 0:
            raise SystemExit(f"bench: git archive {ref} failed: {tar.stderr.decode().strip()}")
        subprocess.run(["tar", "-x", "-C", str(dest)], input=tar.stdout, check=True)
    return dest / "src"


def cli_rate(src: Path, url: str, manifest: Path, out: Path, jobs: int, depth: int) -> float:
    """Verified files/s as ``fileserver fetch`` from ``src`` reports it (one summary line in all versions)."""
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "fileserver", "fetch", url, "--out", str(out), "--manifest", str(manifest)]
    cmd += ["-j", str(jobs), "--depth", str(depth), "-q"]
    env = {**os.environ, "PYTHONPATH": str(src)}
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    rate = re.search(r"= ([\d,]+) files/s", res.stdout)
    if res.returncode != 0 or rate is None:
        raise SystemExit(f"bench: {' '.join(cmd)} failed: {res.stdout}{res.stderr}")
    return float(rate.group(1).replace(",", ""))


def old_vs_new(
    ref: str, url: str, manifest: Path, out: Path, jobs: int, depth: int, repeat: int
) -> tuple[float, float]:
    """Medians of the old and the new client, interleaved so that both see the same machine load."""
    old_src, new_src = checkout(ref), HERE.parent / "src"
    old, new = [], []
    for i in range(repeat):
        order = [(old_src, old), (new_src, new)] if i % 2 == 0 else [(new_src, new), (old_src, old)]
        for src, runs in order:
            runs.append(cli_rate(src, url, manifest, out, jobs, depth))
    return statistics.median(old), statistics.median(new)


def one_at_a_time(
    get, url: str, entries: list[Entry], out: Path, max_files: int, max_seconds: float
) -> float:  # noqa: ANN001
    """GET, hash, check, write, one file after the other, bounded in count and time."""
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    done = 0
    for e in entries[:max_files]:
        r = get(url + e.path, timeout=30)
        r.raise_for_status()
        assert hashlib.sha256(r.content).hexdigest() == e.sha256
        dest = out / e.path
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(r.content)
        done += 1
        if time.perf_counter() - start > max_seconds:
            break
    return done / (time.perf_counter() - start)


def naive(url: str, entries: list[Entry], out: Path, max_files: int, max_seconds: float) -> float:
    """What people write first: requests.get per file (a new connection each time)."""
    return one_at_a_time(requests.get, url, entries, out, max_files, max_seconds)


def session_loop(url: str, entries: list[Entry], out: Path, max_files: int, max_seconds: float) -> float:
    """The better-known fix: one requests.Session (keep-alive), still one request at a time."""
    with requests.Session() as s:
        return one_at_a_time(s.get, url, entries, out, max_files, max_seconds)


def best_of(n: int, fn, *args) -> tuple[float, list[float]]:  # noqa: ANN001
    runs = [fn(*args) for _ in range(n)]
    return statistics.median(runs), runs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=10_000)
    ap.add_argument("--rtt-ms", type=float, default=20.0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("-j", "--jobs", type=int, default=4)
    ap.add_argument("--depth", type=int, default=32)
    ap.add_argument("--baseline", metavar="GITREF", help="also time the client of this commit, interleaved")
    ap.add_argument("--baseline-only", action="store_true", help="with --baseline: skip the other clients")
    ap.add_argument(
        "--out-dir",
        type=Path,
        default=Path("/dev/shm/fileserver-bench") if Path("/dev/shm").is_dir() else RUN / "out",
        help="where downloads land (default tmpfs /dev/shm: measures network + verify, not the disk)",
    )
    args = ap.parse_args()

    pool = RUN / f"pool-{args.count}"
    if not (pool / "SHA256SUMS").is_file():
        generate(pool, args.count, seed=0)
    manifest = pool / SUMS_NAME
    entries = parse_sums(manifest.read_text())
    out = args.out_dir
    print(f"pool {pool} ({len(entries)} files), downloads to {out}", flush=True)
    rows = []
    ab_rows: list[tuple[str, float, float]] = []
    others = not (args.baseline and args.baseline_only)

    def ab(where: str, url: str) -> None:
        if args.baseline:
            old, new = old_vs_new(args.baseline, url, manifest, out, args.jobs, args.depth, 2 * args.repeat)
            ab_rows.append((where, old, new))
            print(f"{where}  {args.baseline} {old:,.0f} files/s, this tree {new:,.0f} files/s", flush=True)

    with NativeNginx(root=pool, prefix=RUN / "nginx") as server:
        url = server.url
        ours(url, manifest, out, args.jobs, args.depth)  # warm the page cache and nginx's open_file_cache
        ab("loopback", url)
        for j, d in ((args.jobs, args.depth), (1, 1), (16, 1)) if others else ():
            ours(url, manifest, out, j, d)  # warm the page cache and nginx's open_file_cache
            med, runs = best_of(args.repeat, ours, url, manifest, out, j, d)
            label = f"fileserver fetch -j {j} --depth {d}"
            rows.append(("loopback", label, len(entries), med, runs))
            print(f"loopback  {label:38s} {med:9,.0f} files/s  runs={[round(r) for r in runs]}", flush=True)
        if others:
            med, runs = best_of(1, naive, url, entries, out, len(entries), 60.0)
            rows.append(("loopback", "naive requests.get loop", len(entries), med, runs))
            print(f"loopback  {'naive requests.get loop':38s} {med:9,.0f} files/s", flush=True)
            med, runs = best_of(1, session_loop, url, entries, out, len(entries), 60.0)
            rows.append(("loopback", "requests.Session loop", len(entries), med, runs))
            print(f"loopback  {'requests.Session loop':38s} {med:9,.0f} files/s", flush=True)

        port = free_port()
        proxy = subprocess.Popen(
            [
                sys.executable,
                str(HERE / "delay_proxy.py"),
                str(port),
                server.host,
                str(server.port),
                str(args.rtt_ms),
                "900",
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert proxy.stdout is not None and proxy.stdout.readline().strip() == "ready"
            purl = f"http://127.0.0.1:{port}/"
            where = f"{args.rtt_ms:.0f} ms RTT"
            ab(where, purl)
            if not others:
                shutil.rmtree(out, ignore_errors=True)
                return report_ab(args.baseline, ab_rows)
            for j, d in ((args.jobs, args.depth), (16, 1)):
                med, runs = best_of(args.repeat, ours, purl, manifest, out, j, d)
                label = f"fileserver fetch -j {j} --depth {d}"
                rows.append((where, label, len(entries), med, runs))
                print(
                    f"{where}  {label:38s} {med:9,.0f} files/s  runs={[round(r) for r in runs]}", flush=True
                )
            n = 300
            med, _ = best_of(1, naive, purl, entries, out, n, 30.0)
            rows.append((where, "naive requests.get loop", n, med, [med]))
            print(
                f"{where}  {'naive requests.get loop':38s} {med:9,.0f} files/s (first {n} files)", flush=True
            )
            med, _ = best_of(1, session_loop, purl, entries, out, n, 30.0)
            rows.append((where, "requests.Session loop", n, med, [med]))
            print(f"{where}  {'requests.Session loop':38s} {med:9,.0f} files/s (first {n} files)", flush=True)
        finally:
            proxy.terminate()
            proxy.wait(10)
    shutil.rmtree(out, ignore_errors=True)
    if ab_rows:
        report_ab(args.baseline, ab_rows)

    print("\n| network | client | files | verified files/s | vs naive |\n| --- | --- | ---: | ---: | ---: |")
    for where in dict.fromkeys(r[0] for r in rows):
        base = next(r[3] for r in rows if r[0] == where and r[1].startswith("naive"))
        for w, label, n, med, _ in rows:
            if w == where:
                print(f"| {w} | {label} | {n:,} | {med:,.0f} | {med / base:.1f}x |")
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "client.json").write_text(json.dumps(rows, indent=1))
    print(f"\nplot: {plot(rows, HERE / 'results' / 'client.png')}")
    return 0


def report_ab(ref: str, ab_rows: list[tuple[str, float, float]]) -> int:
    print(f"\n| network | client at {ref} | this tree | this tree / {ref} |\n| --- | ---: | ---: | ---: |")
    for where, old, new in ab_rows:
        print(f"| {where} | {old:,.0f} | {new:,.0f} | {new / old:.3f} |")
    return 0


def plot(rows: list, path: Path) -> Path:
    """Bar chart, log scale: the gaps are 10x-200x, a linear axis would hide the slow clients."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    networks = list(dict.fromkeys(r[0] for r in rows))
    fig, axes = plt.subplots(1, len(networks), figsize=(6 * len(networks), 4.2), squeeze=False)
    for ax, where in zip(axes[0], networks, strict=True):
        sel = [r for r in rows if r[0] == where]
        labels = [r[1].replace("fileserver fetch ", "ours ") for r in sel]
        colors = ["tab:green" if r[1].startswith("fileserver") else "tab:gray" for r in sel]
        bars = ax.barh(labels, [r[3] for r in sel], color=colors)
        ax.bar_label(bars, labels=[f"{r[3]:,.0f}" for r in sel], padding=3, fontsize=8)
        ax.set_xscale("log")
        ax.invert_yaxis()
        ax.set_title(f"{where}: verified files/s (higher is better)")
        ax.set_xlim(left=10, right=max(r[3] for r in sel) * 5)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


if __name__ == "__main__":
    raise SystemExit(main())
