"""``s3ckpt``: inspect and maintain the checkpoints of a run from the shell.

Every known failure (unreachable endpoint, wrong credentials, missing bucket, corrupt checkpoint) is printed
as one ``s3ckpt: error: ...`` line with exit code 2, never as a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from s3ckpt.errors import IntegrityError, S3CkptError
from s3ckpt.s3 import add_network_flags, ensure_bucket, make_client, quiet_transport_logs, settings_from_args
from s3ckpt.store import CheckpointStore


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _store(a: argparse.Namespace) -> CheckpointStore:
    s = settings_from_args(a, endpoint=a.endpoint, bucket=a.bucket, prefix=a.prefix)
    return CheckpointStore(settings=s, run=a.run)


def cmd_list(a: argparse.Namespace) -> int:
    st = _store(a)
    infos = st.list()
    if not infos:
        print(f"no committed checkpoints under s3://{st.bucket}/{st.run_prefix}")
        return 0
    print(f"{'step':>9}  {'kind':5}  {'created (UTC)':25}  {'size':>10}  {'objects':>7}  status")
    for i in infos:
        status = "ok"
        if a.verify:
            try:
                st.verify(i.step, deep=a.deep)
            except IntegrityError as e:
                status = f"CORRUPT: {e}"
        print(f"{i.step:>9}  {i.kind:5}  {i.created:25}  {_human(i.total_bytes):>10}  {len(i.objects):>7}  "
              f"{status}")
    return 0


def cmd_show(a: argparse.Namespace) -> int:
    st = _store(a)
    step = a.step if a.step != "latest" else (st.committed_steps() or [None])[-1]
    if step is None:
        raise S3CkptError(f"no committed checkpoints under s3://{st.bucket}/{st.run_prefix}")
    man = st.manifest(int(step))
    if man["kind"] == "dcp":  # the DCP metadata is a torch.save blob: show what it describes instead
        from s3ckpt.dcp import decode_metadata, describe_metadata

        man["dcp_metadata"] = describe_metadata(decode_metadata(man["dcp_metadata"]))
    print(json.dumps(man, indent=2, sort_keys=True))
    return 0


def cmd_verify(a: argparse.Namespace) -> int:
    st = _store(a)
    steps = st.committed_steps() if a.step == "all" else [int(a.step)] if a.step != "latest" \
        else st.committed_steps()[-1:]
    bad = 0
    for s in steps:
        try:
            info = st.verify(s, deep=not a.quick)
            print(f"step {s}: OK ({len(info.objects)} objects, {_human(info.total_bytes)}, "
                  f"{'size+server checksum' if a.quick else 'SHA-256 of every byte'})")
        except IntegrityError as e:
            bad += 1
            print(f"step {s}: FAILED: {e}")
    if not steps:
        print(f"no committed checkpoints under s3://{st.bucket}/{st.run_prefix}")
    return 1 if bad else 0


def cmd_prune(a: argparse.Namespace) -> int:
    st = _store(a)
    deleted = st.prune(keep_last=a.keep_last, deep=a.deep)
    print(f"deleted steps: {deleted}" if deleted else "nothing to delete")
    return 0


def cmd_download(a: argparse.Namespace) -> int:
    st = _store(a)
    # the same "latest" as load("latest"): the newest single-process step that verifies
    step = st.latest_verified(kind="torch") if a.step == "latest" else int(a.step)
    for p in st.download(step, a.dest):
        print(p)
    return 0


def cmd_init(a: argparse.Namespace) -> int:
    s = settings_from_args(a, endpoint=a.endpoint, bucket=a.bucket, prefix=a.prefix)
    ensure_bucket(make_client(s), s, versioning=True)
    print(f"bucket {s.bucket!r} ready at {s.endpoint} (versioning enabled)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="s3ckpt",
        description="Inspect and maintain PyTorch checkpoints stored in S3/MinIO by s3ckpt, single-process "
                    "(CheckpointStore) and multi-process (s3ckpt.dcp) alike. The endpoint "
                    "and credentials come from S3CKPT_ENDPOINT, S3CKPT_ACCESS_KEY, S3CKPT_SECRET_KEY (or the "
                    "AWS_* equivalents); flags override the bucket/prefix/run.")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--endpoint",
                        help="S3 endpoint URL (env S3CKPT_ENDPOINT, default http://127.0.0.1:9000)")
    common.add_argument("--bucket", help="bucket (env S3CKPT_BUCKET, default checkpoints)")
    common.add_argument("--prefix", help="key prefix (env S3CKPT_PREFIX, default ckpt)")
    common.add_argument("--run", default=os.environ.get("S3CKPT_RUN", "digits"),
                        help="run name (env S3CKPT_RUN, as the trainers; default digits)")
    common.add_argument("-v", "--verbose", action="store_true", help="log what s3ckpt does")
    add_network_flags(common)
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    q = sub.add_parser("list", parents=[common], help="list committed checkpoints of a run")
    q.add_argument("--verify", action="store_true", help="also check each one (size + server checksum)")
    q.add_argument("--deep", action="store_true", help="with --verify: re-hash every byte")
    q.set_defaults(fn=cmd_list)
    q = sub.add_parser("show", parents=[common],
                       help="print a step's manifest (objects, hashes, metadata; for DCP, every tensor)")
    q.add_argument("step", nargs="?", default="latest", help="step number or 'latest'")
    q.set_defaults(fn=cmd_show)
    q = sub.add_parser("verify", parents=[common], help="check a step against its manifest (SHA-256)")
    q.add_argument("step", nargs="?", default="all", help="step number, 'latest' or 'all' (default)")
    q.add_argument("--quick", action="store_true", help="sizes + server-stored checksums only, no re-read")
    q.set_defaults(fn=cmd_verify)
    q = sub.add_parser("prune", parents=[common], help="delete old steps, keeping the newest N verified")
    q.add_argument("--keep-last", type=int, required=True, help="how many verified steps to keep (>= 1)")
    q.add_argument("--deep", action="store_true", help="verify by re-hashing every byte")
    q.set_defaults(fn=cmd_prune)
    q = sub.add_parser("download", parents=[common], help="copy a step's objects to a local folder")
    q.add_argument("step", nargs="?", default="latest", help="step number or 'latest' (newest verified)")
    q.add_argument("--dest", default=".", help="destination folder (default .)")
    q.set_defaults(fn=cmd_download)
    q = sub.add_parser("init", parents=[common], help="create the bucket and enable versioning")
    q.set_defaults(fn=cmd_init)
    return p


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if a.verbose:  # ours only: the HTTP stack's INFO/DEBUG lines are noise to a user
        logging.getLogger("s3ckpt").setLevel(logging.INFO)
    quiet_transport_logs()
    try:
        return int(a.fn(a))
    except S3CkptError as e:
        print(f"s3ckpt: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
