"""Server benchmark: wrk on one small file, our nginx vs ``python -m http.server`` on the same pool.

Both serve the same folder on loopback; wrk (Debian) runs a fixed, bounded duration against each. Run:
``make bench`` or ``.venv/bin/python bench/bench_wrk.py [--seconds 5 --connections 32]``.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from fileserver.manifest import parse_sums
from fileserver.nginx import NativeNginx, free_port
from fileserver.pool import generate

HERE = Path(__file__).resolve().parent
RUN = HERE.parent / "run" / "bench"


def wrk(url: str, seconds: int, connections: int, threads: int) -> dict[str, float]:
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", url]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors: (.*)", out)
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    scale = {"us": 1e-3, "ms": 1.0, "s": 1e3}
    return {
        "rps": rps,
        "p99_ms": float(p99.group(1)) * scale[p99.group(2)] if p99 else float("nan"),
        "errors": errors.group(0) if errors else "",
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        print("wrk not found: apt-get install -y wrk (make bench does it)", file=sys.stderr)
        return 2
    pool = RUN / "pool-1000"
    if not (pool / "SHA256SUMS").is_file():
        generate(pool, 1000, seed=0)
    small = min(parse_sums((pool / "SHA256SUMS").read_text()), key=lambda e: (pool / e.path).stat().st_size)
    size = (pool / small.path).stat().st_size
    rows = []
    with NativeNginx(root=pool, prefix=RUN / "nginx-wrk") as server:
        r = wrk(server.url + small.path, args.seconds, args.connections, args.threads)
        rows.append(("nginx (fileserver.conf, native)", r))
        print(f"nginx          {r['rps']:10,.0f} req/s  p99 {r['p99_ms']:.2f} ms {r['errors']}", flush=True)
    port = free_port()
    py = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(pool)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}/{small.path}"
        for _ in range(100):
            try:
                urllib.request.urlopen(url, timeout=1).read()
                break
            except OSError:
                time.sleep(0.1)
        r = wrk(url, args.seconds, args.connections, args.threads)
        rows.append(("python -m http.server", r))
        print(f"http.server    {r['rps']:10,.0f} req/s  p99 {r['p99_ms']:.2f} ms {r['errors']}", flush=True)
    finally:
        py.terminate()
        py.wait(10)
    base = rows[1][1]["rps"]
    print(f"\nwrk -t{args.threads} -c{args.connections} -d{args.seconds}s, one {size}-byte file, loopback\n")
    print("| server | requests/s | p99 latency | vs http.server |\n| --- | ---: | ---: | ---: |")
    for name, r in rows:
        print(f"| {name} | {r['rps']:,.0f} | {r['p99_ms']:.1f} ms | {r['rps'] / base:.1f}x |")
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "wrk.json").write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
