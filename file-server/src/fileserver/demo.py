"""``make demo``: serve data/pool with the native nginx, download all of it, verify, show the proof, stop.

Run as ``python -m fileserver.demo [--pool data/pool]``; the Makefile generates the pool first.
"""

from __future__ import annotations

import argparse
import hashlib
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from fileserver.client import FetchError, ManifestError, fetch_pool
from fileserver.manifest import SUMS_NAME, parse_sums
from fileserver.nginx import NativeNginx, NginxError
from fileserver.signals import Stopped, stop_on_signals


def main(argv: list[str] | None = None) -> int:
    with stop_on_signals("demo"):
        try:
            return run(argv)
        except Stopped as stop:  # nginx was already stopped by run()'s finally
            return stop.exit_status


def run(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pool", type=Path, default=Path("data/pool"))
    parser.add_argument(
        "--run", type=Path, default=Path("run"), help="folder for nginx state and the download"
    )
    args = parser.parse_args(argv)
    sums = args.pool / SUMS_NAME
    if not sums.is_file():
        print(f"demo: {sums} missing; run 'fileserver pool --out {args.pool}' first", file=sys.stderr)
        return 2
    entries = parse_sums(sums.read_text())
    pinned = hashlib.sha256(sums.read_bytes()).hexdigest()  # what the project announces out of band
    out = args.run / "demo-download"
    shutil.rmtree(out, ignore_errors=True)
    try:
        server = NativeNginx(root=args.pool, prefix=args.run / "demo-nginx").start()
    except NginxError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 2
    try:
        print(f"[1/4] native nginx serves {args.pool.resolve()} at {server.url}")
        print(f"      command: {shlex.join(server.command())}")
        print(
            f"[2/4] fileserver fetch {server.url} --out {out} --manifest-sha256 {pinned[:16]}...   "
            f"({len(entries)} files, 4 connections)"
        )
        try:
            result = fetch_pool(server.url, out, manifest_sha256=pinned, progress=sys.stderr.isatty())
        except (FetchError, ManifestError) as exc:
            print(f"demo: {exc}", file=sys.stderr)
            return 1
        print("      " + result.summary().replace("\n", "\n      "))
        print("[3/4] what an annotator does with only curl + sha256sum:")
        one = entries[0].path
        tmp = args.run / "demo-curl"
        shutil.rmtree(tmp, ignore_errors=True)
        (tmp / Path(one).parent).mkdir(parents=True)
        cmds = [
            f"curl -fsS -o SHA256SUMS {server.url}SHA256SUMS",
            f"curl -fsS --create-dirs -o {one} {server.url}{one}",
            "sha256sum -c --ignore-missing SHA256SUMS",
        ]
        recipe_ok = True
        for cmd in cmds:
            res = subprocess.run(cmd, shell=True, cwd=tmp, capture_output=True, text=True)
            print(f"      $ {cmd}")
            for line in (res.stdout + res.stderr).strip().splitlines():
                print(f"        {line}")
            recipe_ok = recipe_ok and res.returncode == 0  # e.g. curl missing: the demo did not show it
        print(f"[4/4] last lines of the access log ({server.access_log}):")
        for line in server.access_log.read_text().splitlines()[-3:]:
            print("      " + line)
    finally:
        server.stop()
    ok = result.ok and recipe_ok
    print("nginx stopped.", "DEMO OK: every file verified" if ok else "DEMO FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
