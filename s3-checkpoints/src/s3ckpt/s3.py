"""boto3 client construction, settings from the environment, and error translation.

Why a custom client config:
* boto3 >= 1.36 computes a CRC checksum on every upload and sends it as an ``aws-chunked`` trailer, and
  validates response checksums. Several S3-compatible servers (older MinIO, Ceph, GCS interop...) reject
  or mishandle those trailers. We set ``request_checksum_calculation="when_required"`` and
  ``response_checksum_validation="when_required"`` so that boto3 only adds checksums where the API
  requires one, and we send our OWN ``x-amz-checksum-sha256`` header on every object and part: the server
  verifies it and stores it, which is both portable and stronger than the default CRC32.
* ``payload_signing_enabled=False``: botocore otherwise SHA-256-hashes every body for the SigV4 signature
  over plain http. The explicit SHA-256 checksum header already protects the body, so hashing it a second
  time only burns CPU.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
)

from s3ckpt.errors import (
    AccessDenied,
    BucketNotFound,
    CredentialsError,
    EndpointUnreachable,
    S3CkptError,
)

T = TypeVar("T")

DEFAULT_ENDPOINT = "http://127.0.0.1:9000"
DEFAULT_BUCKET = "checkpoints"
DEFAULT_PREFIX = "ckpt"
CONNECTION_ERRORS = (EndpointConnectionError, ConnectTimeoutError, ConnectionClosedError, ReadTimeoutError)


def _env(*names: str, default: str | None = None) -> str | None:
    for n in names:
        v = os.environ.get(n)
        if v:
            return v
    return default


@dataclass
class S3Settings:
    """Where the checkpoints live. Every field can come from an argument or from the environment.

    Environment (first match wins): endpoint ``S3CKPT_ENDPOINT`` / ``AWS_ENDPOINT_URL``; key
    ``S3CKPT_ACCESS_KEY`` / ``AWS_ACCESS_KEY_ID``; secret ``S3CKPT_SECRET_KEY`` /
    ``AWS_SECRET_ACCESS_KEY``; bucket ``S3CKPT_BUCKET``; prefix ``S3CKPT_PREFIX``; region
    ``S3CKPT_REGION`` / ``AWS_REGION``. Defaults match ``docker compose up`` (``.env.example``).
    """

    endpoint: str = field(default_factory=lambda: _env("S3CKPT_ENDPOINT", "AWS_ENDPOINT_URL",
                                                       default=DEFAULT_ENDPOINT) or DEFAULT_ENDPOINT)
    access_key: str | None = field(
        default_factory=lambda: _env("S3CKPT_ACCESS_KEY", "AWS_ACCESS_KEY_ID"))
    secret_key: str | None = field(
        default_factory=lambda: _env("S3CKPT_SECRET_KEY", "AWS_SECRET_ACCESS_KEY"))
    bucket: str = field(default_factory=lambda: _env("S3CKPT_BUCKET") or DEFAULT_BUCKET)
    prefix: str = field(default_factory=lambda: _env("S3CKPT_PREFIX") or DEFAULT_PREFIX)
    region: str = field(default_factory=lambda: _env("S3CKPT_REGION", "AWS_REGION", default="us-east-1")
                        or "us-east-1")

    def with_overrides(self, **kw: Any) -> S3Settings:
        """A copy where every non-None keyword replaces the field (CLI flags over env)."""
        d = dict(self.__dict__)
        d.update({k: v for k, v in kw.items() if v is not None})
        return S3Settings(**d)


def make_client(settings: S3Settings | None = None, *, max_pool: int = 16, connect_timeout: float = 3.0,
                max_attempts: int = 4) -> Any:
    """A boto3 S3 client that works against MinIO with boto3 >= 1.36 (see module docstring)."""
    s = settings or S3Settings()
    cfg = Config(
        signature_version="s3v4",
        region_name=s.region,
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        retries={"max_attempts": max_attempts, "mode": "standard"},
        connect_timeout=connect_timeout,
        read_timeout=120,
        max_pool_connections=max_pool,
        tcp_keepalive=True,
        s3={"addressing_style": "path", "payload_signing_enabled": False},
    )
    session = boto3.session.Session()
    return session.client(
        "s3",
        endpoint_url=s.endpoint,
        aws_access_key_id=s.access_key,
        aws_secret_access_key=s.secret_key,
        config=cfg,
    )


def error_code(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return ""


NOT_FOUND_CODES = ("NoSuchKey", "404", "NotFound")
CONFLICT_CODES = ("PreconditionFailed", "412", "ConditionalRequestConflict")


def translate(exc: BaseException, s: S3Settings, what: str = "", *, missing: S3CkptError | None = None,
              conflict: S3CkptError | None = None) -> BaseException:
    """Map a botocore exception to one of our one-line errors (or return it unchanged).

    ``missing`` / ``conflict``: what a missing key or a failed ``If-None-Match`` means to the caller (a step
    that is not committed, an object that vanished, a step someone else committed first).
    """
    where = f"{s.endpoint}"
    ctx = f" while {what}" if what else ""
    if isinstance(exc, S3CkptError):
        return exc
    if isinstance(exc, CONNECTION_ERRORS):
        return EndpointUnreachable(
            f"cannot reach S3 endpoint {where}{ctx} ({type(exc).__name__}); is MinIO running? "
            f"start it with `make minio-up`/`docker compose up`, or set S3CKPT_ENDPOINT")
    if isinstance(exc, NoCredentialsError):
        return CredentialsError(
            "no S3 credentials: set S3CKPT_ACCESS_KEY and S3CKPT_SECRET_KEY (or AWS_ACCESS_KEY_ID/"
            "AWS_SECRET_ACCESS_KEY), e.g. from .env")
    code = error_code(exc)
    if missing is not None and code in NOT_FOUND_CODES:
        return missing
    if conflict is not None and code in CONFLICT_CODES:
        return conflict
    if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken"):
        return CredentialsError(
            f"S3 endpoint {where} rejected the credentials ({code}){ctx}: check S3CKPT_ACCESS_KEY/"
            f"S3CKPT_SECRET_KEY (access key {s.access_key!r})")
    if code in ("NoSuchBucket",) or (code == "404" and "bucket" in what):
        return BucketNotFound(
            f"bucket {s.bucket!r} does not exist at {where}: create it (`s3ckpt init`, or the compose "
            f"`createbuckets` service) or set S3CKPT_BUCKET")
    if code == "InvalidBucketName":
        return BucketNotFound(f"invalid bucket name {s.bucket!r}: 3-63 lowercase letters, digits, '.', '-'")
    if code in ("AccessDenied", "403", "AllAccessDisabled"):
        return AccessDenied(
            f"access denied on bucket {s.bucket!r} at {where}{ctx}: the key {s.access_key!r} lacks "
            f"permission (or the secret is wrong)")
    return exc


def s3_call(s: S3Settings, what: str, fn: Callable[[], T], *, attempts: int = 1, first_delay: float = 0.5,
            missing: S3CkptError | None = None, conflict: S3CkptError | None = None) -> T:
    """Run one S3 operation; every S3 call of the library goes through here, so that every botocore
    error reaches the user as the same one-line error.

    With ``attempts > 1`` connection errors are retried with exponential backoff (a restarting MinIO comes
    back); wrong credentials or a missing bucket will not fix themselves, so they fail at once.
    """
    delay = first_delay
    for i in range(attempts):
        try:
            return fn()
        except CONNECTION_ERRORS as e:
            if i < attempts - 1:
                time.sleep(delay)
                delay *= 2
                continue
            raise translate(e, s, what) from None
        except S3CkptError:
            raise
        except Exception as e:  # noqa: BLE001 - botocore/urllib3 errors: translated or re-raised as is
            t = translate(e, s, what, missing=missing, conflict=conflict)
            if t is e:
                raise
            raise t from None
    raise AssertionError("unreachable")


def check_bucket(s: S3Settings) -> None:
    """Fail fast with a clear message if the endpoint, the credentials or the bucket is wrong.

    ``list_objects_v2`` (not ``head_bucket``) because HEAD responses carry no error code, and we want to
    tell "wrong secret" from "no such bucket". The probe client does not retry by itself, so the backoff
    here (0.5 s, 1 s, 2 s) is the only one and an unreachable endpoint is reported in a few seconds.
    """
    probe = make_client(s, max_attempts=1, max_pool=1)
    s3_call(s, f"opening bucket {s.bucket!r}", lambda: probe.list_objects_v2(Bucket=s.bucket, MaxKeys=1),
            attempts=4)


def ensure_bucket(client: Any, s: S3Settings, versioning: bool = True) -> None:
    """Create the bucket if missing and enable versioning (what compose's `createbuckets` does natively)."""
    def _create() -> None:
        try:
            client.create_bucket(Bucket=s.bucket)
        except ClientError as e:
            if error_code(e) not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise
    s3_call(s, f"creating bucket {s.bucket!r}", _create, attempts=4)
    if versioning:
        s3_call(s, "enabling versioning", lambda: client.put_bucket_versioning(
            Bucket=s.bucket, VersioningConfiguration={"Status": "Enabled"}), attempts=4)
