"""``fileserver`` command line: pool, manifest, fetch, verify, serve.

Heavy imports (asyncio client, tqdm) happen inside the subcommands so ``python -m fileserver pool`` runs on a
bare Python with only the standard library (the compose one-shot service relies on that).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from fileserver import __version__

EPILOG = """\
examples:
  fileserver pool --count 1000 --out data/pool         # deterministic pool + SHA256SUMS + manifest.json
  fileserver serve --root data/pool --port 8080        # native nginx in the foreground (Ctrl-C/SIGTERM stop)
  fileserver fetch http://127.0.0.1:8080/ --out copy   # download everything, verify every SHA-256
  fileserver fetch http://a:8080/ http://b:8080/       # the same pool from two mirrors at once
  fileserver verify copy                               # re-check a local copy against copy/SHA256SUMS

exit codes: 0 everything verified, 1 some file missing or different (each one is named), 2 bad input.
"""


def _die(msg: str, code: int = 2) -> int:
    print(f"fileserver: error: {msg}", file=sys.stderr)
    return code


def cmd_pool(args: argparse.Namespace) -> int:
    from fileserver.pool import generate

    t0 = time.perf_counter()
    try:
        entries = generate(args.out, args.count, seed=args.seed, progress=sys.stderr.isatty())
    except ValueError as exc:
        return _die(str(exc))
    total = sum(e.size or 0 for e in entries)
    print(
        f"wrote {len(entries)} files ({total / 1e6:.1f} MB) + SHA256SUMS + manifest.json to {args.out} "
        f"in {time.perf_counter() - t0:.2f} s (seed {args.seed})"
    )
    return 0


def cmd_manifest(args: argparse.Namespace) -> int:
    from fileserver.manifest import ManifestError, build_entries, write_manifests

    if not args.dir.is_dir():
        return _die(f"{args.dir} is not a folder")
    try:
        entries = build_entries(args.dir)
    except ManifestError as exc:
        return _die(f"cannot list this file in a sha256sum manifest: {exc}; rename it")
    write_manifests(args.dir, entries)
    print(f"wrote SHA256SUMS and manifest.json for {len(entries)} files in {args.dir}")
    return 0


def cmd_fetch(args: argparse.Namespace) -> int:
    from fileserver.client import FetchError, ManifestError, UntrustedManifest, fetch_pool

    try:
        result = fetch_pool(
            urls=args.urls,
            out=args.out,
            manifest=args.manifest,
            manifest_sha256=args.manifest_sha256,
            connections=args.jobs,
            depth=args.depth,
            retries=args.retries,
            timeout=args.timeout,
            progress=not args.quiet and sys.stderr.isatty(),
        )
    except UntrustedManifest as exc:
        return _die(str(exc), 1)
    except (FetchError, ManifestError) as exc:
        return _die(str(exc))
    except OSError as exc:
        return _die(f"cannot write to --out {args.out}: {exc.strerror or exc}")
    print(result.summary())
    if not result.ok:
        bad = len(result.missing) + len(result.mismatched) + len(result.failed)
        print(f"fileserver: {bad} file(s) did not verify (listed above)", file=sys.stderr)
        return 1
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from fileserver.manifest import SUMS_NAME, ManifestError, parse_any, verify_dir

    path = args.manifest or args.dir / SUMS_NAME
    try:
        entries = parse_any(path.read_bytes(), str(path))
    except OSError as exc:
        return _die(f"cannot read manifest {path}: {exc.strerror}; pass --manifest FILE")
    except ManifestError as exc:
        return _die(str(exc))
    report = verify_dir(args.dir, entries)
    for p in report.missing:
        print(f"MISSING  {p}")
    for p in report.mismatched:
        print(f"MISMATCH {p}")
    print(f"verified {len(report.ok)}/{len(entries)} files in {args.dir}")
    return 1 if report.failed else 0


def cmd_serve(args: argparse.Namespace) -> int:
    from fileserver.nginx import NativeNginx, NginxError
    from fileserver.signals import Stopped, stop_on_signals

    if not (args.root / "SHA256SUMS").is_file():
        return _die(
            f"{args.root} has no SHA256SUMS; run 'fileserver pool --out {args.root}' or "
            f"'fileserver manifest {args.root}' first"
        )
    server = NativeNginx(root=args.root, prefix=args.prefix, host=args.host, port=args.port)
    with stop_on_signals("fileserver serve"):
        try:
            server.start()
            print(
                f"serving {args.root.resolve()} at {server.url} (access log {server.access_log}); "
                "Ctrl-C or SIGTERM stops",
                flush=True,
            )
            assert server.proc is not None
            code = server.proc.wait()
            return _die(f"nginx exited by itself with status {code}; see {server.error_log}", 1)
        except NginxError as exc:
            return _die(str(exc))
        except Stopped as stop:
            return stop.exit_status
        finally:
            server.stop()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fileserver",
        description="Publish a pool of text files with nginx; download them fast and verify every SHA-256.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"fileserver {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("pool", help="generate a deterministic pool of UTF-8 text files with SHA256SUMS")
    p.add_argument("--count", type=int, default=1000, help="number of files (default 1000)")
    p.add_argument("--out", type=Path, default=Path("data/pool"), help="folder to write (default data/pool)")
    p.add_argument("--seed", type=int, default=0, help="random seed; same seed, same bytes (default 0)")
    p.set_defaults(func=cmd_pool)

    p = sub.add_parser("manifest", help="write SHA256SUMS + manifest.json for an existing folder of files")
    p.add_argument("dir", type=Path)
    p.set_defaults(func=cmd_manifest)

    p = sub.add_parser("fetch", help="download every file of a pool and verify it against the manifest")
    p.add_argument(
        "urls",
        nargs="+",
        metavar="URL",
        help="base URL of the pool, e.g. http://host:8080/; several URLs: mirrors of one pool, used together",
    )
    p.add_argument("--out", type=Path, default=Path("download"), help="destination folder (default download)")
    from fileserver.fetcher import DEFAULTS  # stdlib-only module: `pool` still runs on a bare Python

    p.add_argument(
        "-j",
        "--jobs",
        type=int,
        default=DEFAULTS.connections,
        help="keep-alive connections per mirror (%(default)s)",
    )
    p.add_argument(
        "--depth",
        type=int,
        default=DEFAULTS.depth,
        help="pipelined requests in flight per connection (%(default)s; 1 disables pipelining)",
    )
    p.add_argument(
        "--retries", type=int, default=DEFAULTS.retries, help="retries per file on 5xx / broken connections"
    )
    p.add_argument(
        "--timeout", type=float, default=DEFAULTS.timeout, help="seconds without data before a retry"
    )
    p.add_argument(
        "--manifest", type=Path, help="trust this local SHA256SUMS/manifest.json instead of the server's"
    )
    p.add_argument("--manifest-sha256", metavar="HEX", help="refuse the manifest unless its SHA-256 is HEX")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_fetch)

    p = sub.add_parser("verify", help="re-check a local copy against its SHA256SUMS")
    p.add_argument("dir", type=Path)
    p.add_argument("--manifest", type=Path, help="manifest to check against (default DIR/SHA256SUMS)")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("serve", help="run the native nginx in the foreground on a pool folder")
    p.add_argument("--root", type=Path, default=Path("data/pool"), help="pool folder (default data/pool)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="port (default 8080; 0 picks a free one)")
    p.add_argument(
        "--prefix",
        type=Path,
        default=Path("run/nginx"),
        help="nginx prefix for conf, pid, temp and logs (default run/nginx)",
    )
    p.set_defaults(func=cmd_serve)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "manifest_sha256", None) and len(args.manifest_sha256) != 64:
        return _die("--manifest-sha256 wants 64 hex characters (the output of sha256sum SHA256SUMS)")
    return int(args.func(args))
