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

import http.client
import logging
import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import (
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    HTTPClientError,
    IncompleteReadError,
    NoCredentialsError,
    ResponseStreamingError,
)
from urllib3.exceptions import HTTPError as Urllib3Error

from s3ckpt.errors import (
    AccessDenied,
    BucketNotFound,
    CredentialsError,
    EndpointUnreachable,
    NetworkError,
    S3CkptError,
)

T = TypeVar("T")

DEFAULT_ENDPOINT = "http://127.0.0.1:9000"
DEFAULT_BUCKET = "checkpoints"
DEFAULT_PREFIX = "ckpt"
# The endpoint itself did not answer: said as "cannot reach", with what to start.
UNREACHABLE_ERRORS = (EndpointConnectionError, ConnectTimeoutError, ConnectionRefusedError)
# The network failed in the middle of a request or of a response body: retried, then "the network failed".
# Raw socket errors and http.client/urllib3 errors come from reading bodies outside botocore's wrappers.
TRANSIENT_ERRORS = (HTTPClientError, ResponseStreamingError, IncompleteReadError, ConnectionError,
                    TimeoutError, http.client.HTTPException, Urllib3Error)
# Server-side trouble that a retry can fix (overload, restart): botocore's own retry list for S3.
TRANSIENT_CODES = ("InternalError", "ServiceUnavailable", "SlowDown", "RequestTimeout",
                   "RequestTimeTooSkewed", "XMinioServerNotInitialized", "500", "502", "503", "504")
CONNECTION_ERRORS = (*UNREACHABLE_ERRORS, *TRANSIENT_ERRORS)  # any network failure, for callers that test
FIRST_DELAY = 0.2  # s, the first backoff; doubled after each failed attempt, with jitter, up to MAX_DELAY
MAX_DELAY = 5.0
# The backoff jitter has its own generator: a retry must never advance the training job's global `random`
# (botocore's own retries draw from it, which is why they are switched off in make_client).
_jitter = random.Random()
_session: Any = None
_session_lock = threading.Lock()


def _env(*names: str, default: str | None = None) -> str | None:
    for n in names:
        v = os.environ.get(n)
        if v:
            return v
    return default


def _env_num(name: str, default: float, cast: type = float) -> Any:
    raw = os.environ.get(name)
    if not raw:
        return cast(default)
    try:
        v = cast(raw)
    except ValueError:
        v = -1
    if v < 0:
        raise S3CkptError(f"{name}={raw!r} is not a valid {'whole ' if cast is int else ''}number of "
                          f"{'retries' if cast is int else 'seconds'}: set it to e.g. {cast(default)}")
    return v


@dataclass
class S3Settings:
    """Where the checkpoints live, and how long the network may take. Every field can come from an
    argument or from the environment.

    Environment (first match wins): endpoint ``S3CKPT_ENDPOINT`` / ``AWS_ENDPOINT_URL``; key
    ``S3CKPT_ACCESS_KEY`` / ``AWS_ACCESS_KEY_ID``; secret ``S3CKPT_SECRET_KEY`` /
    ``AWS_SECRET_ACCESS_KEY``; bucket ``S3CKPT_BUCKET``; prefix ``S3CKPT_PREFIX``; region
    ``S3CKPT_REGION`` / ``AWS_REGION``. Defaults match ``docker compose up`` (``.env.example``).

    Network (seconds, env ``S3CKPT_CONNECT_TIMEOUT``, ``S3CKPT_READ_TIMEOUT``, ``S3CKPT_OP_TIMEOUT``,
    ``S3CKPT_RETRIES``): ``connect_timeout`` to open a connection; ``read_timeout`` without a byte before a
    request counts as stalled; ``retries`` more attempts after a network failure (exponential backoff from
    0.2 s); ``op_timeout`` no retry starts later than this after the operation began. So one S3 call
    gives up after at most :func:`max_call_seconds`.
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
    connect_timeout: float = field(default_factory=lambda: _env_num("S3CKPT_CONNECT_TIMEOUT", 5.0))
    read_timeout: float = field(default_factory=lambda: _env_num("S3CKPT_READ_TIMEOUT", 60.0))
    op_timeout: float = field(default_factory=lambda: _env_num("S3CKPT_OP_TIMEOUT", 300.0))
    retries: int = field(default_factory=lambda: _env_num("S3CKPT_RETRIES", 5, int))

    def with_overrides(self, **kw: Any) -> S3Settings:
        """A copy where every non-None keyword replaces the field (CLI flags over env)."""
        d = dict(self.__dict__)
        d.update({k: v for k, v in kw.items() if v is not None})
        return S3Settings(**d)


NETWORK_FLAGS = {  # flag -> (field, type, help): the same four settings in every command-line tool
    "--connect-timeout": ("connect_timeout", float,
                          "seconds to open a connection (env S3CKPT_CONNECT_TIMEOUT, default 5)"),
    "--read-timeout": ("read_timeout", float, "seconds without a byte before a request counts as stalled "
                       "(env S3CKPT_READ_TIMEOUT, default 60)"),
    "--op-timeout": ("op_timeout", float, "no retry of an S3 request starts later than this many seconds "
                     "after it began (env S3CKPT_OP_TIMEOUT, default 300)"),
    "--retries": ("retries", int, "retries after a network failure (env S3CKPT_RETRIES, default 5)"),
}


def add_network_flags(parser: Any) -> None:
    """The timeout/retry flags of :data:`NETWORK_FLAGS` on an ``argparse`` parser."""
    for flag, (dest, typ, text) in NETWORK_FLAGS.items():
        parser.add_argument(flag, dest=dest, type=typ, metavar="N", help=text)


def settings_from_args(a: Any, **kw: Any) -> S3Settings:
    """Settings from the environment, overridden by whatever flags were given (``None`` = not given)."""
    flags = {dest: getattr(a, dest, None) for dest, _t, _h in NETWORK_FLAGS.values()}
    bad = [f"{flag} {v}" for flag, (dest, _t, _h) in NETWORK_FLAGS.items() if (v := flags[dest]) is not None
           and v < 0]
    if bad:
        raise S3CkptError(f"{bad[0]}: must be >= 0")
    return S3Settings().with_overrides(**flags, **kw)


def max_call_seconds(s: S3Settings) -> float:
    """The longest one S3 call can take before it raises: retries start until ``op_timeout``, and the
    last one may then wait ``connect_timeout`` + ``read_timeout`` (per stalled read) before it fails."""
    return s.op_timeout + s.connect_timeout + s.read_timeout


def make_client(settings: S3Settings | None = None, *, max_pool: int = 16) -> Any:
    """A boto3 S3 client that works against MinIO with boto3 >= 1.36 (see module docstring).

    botocore's own retries are off: :func:`s3_call` retries (it knows which operations are safe to
    repeat and how to check the ones that are not), and botocore's backoff jitter would draw from the
    global ``random`` that training code seeds and relies on.
    """
    s = settings or S3Settings()
    cfg = Config(
        signature_version="s3v4",
        region_name=s.region,
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        retries={"total_max_attempts": 1, "mode": "standard"},
        connect_timeout=s.connect_timeout,
        read_timeout=s.read_timeout,
        max_pool_connections=max_pool,
        tcp_keepalive=True,
        s3={"addressing_style": "path", "payload_signing_enabled": False},
    )
    with _session_lock:  # one botocore session (its parsed service models) for every client: creating a
        # session per client costs a second of CPU; clients are thread-safe, session creation is not
        global _session
        if _session is None:
            _session = boto3.session.Session()
        return _session.client(
            "s3",
            endpoint_url=s.endpoint,
            aws_access_key_id=s.access_key,
            aws_secret_access_key=s.secret_key,
            config=cfg,
        )


def quiet_transport_logs() -> None:
    """For entry points: urllib3 logs header-parsing quirks of S3 servers as warnings with a traceback
    (the response is fine and used); only its errors are worth a user's screen. Not seen with the MinIO
    release we pin, known from older ones (``Expect: 100-continue``): docs/engineering.md."""
    logging.getLogger("urllib3").setLevel(logging.ERROR)


def error_code(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return ""


NOT_FOUND_CODES = ("NoSuchKey", "404", "NotFound")
CONFLICT_CODES = ("PreconditionFailed", "412", "ConditionalRequestConflict")


def is_transient(exc: BaseException) -> bool:
    """A failure that a retry can fix: the network, or a server that is overloaded or restarting."""
    return isinstance(exc, CONNECTION_ERRORS) or error_code(exc) in TRANSIENT_CODES


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
    if isinstance(exc, UNREACHABLE_ERRORS):
        return EndpointUnreachable(
            f"cannot reach S3 endpoint {where}{ctx} ({type(exc).__name__}); is MinIO running? "
            f"start it with `make minio-up`/`docker compose up`, or set S3CKPT_ENDPOINT")
    if is_transient(exc):
        why = error_code(exc) or type(exc).__name__
        return NetworkError(
            f"network failure{ctx} at {where} ({why}, after {s.retries} retries); nothing was deleted or "
            f"judged corrupt: check the network to the endpoint (or raise S3CKPT_READ_TIMEOUT="
            f"{s.read_timeout:g} / S3CKPT_RETRIES={s.retries}) and run again")
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


def backoff(s: S3Settings, attempt: int, started: float) -> bool:
    """Sleep before retry number ``attempt + 1`` of an operation that began at ``started`` (monotonic);
    False (no sleep) when the retries or the operation's time are used up."""
    if attempt >= s.retries:
        return False
    delay = min(MAX_DELAY, FIRST_DELAY * 2 ** attempt) * (0.5 + _jitter.random() / 2)
    if time.monotonic() + delay - started > s.op_timeout:
        return False
    time.sleep(delay)
    return True


def s3_call(s: S3Settings, what: str, fn: Callable[[], T], *, retry: bool = True,
            missing: S3CkptError | None = None, conflict: S3CkptError | None = None) -> T:
    """Run one S3 operation; every S3 call of the library goes through here, so that every botocore
    error reaches the user as the same one-line error.

    With ``retry`` (for operations that may run twice: reads, plain PUTs of the same bytes, part uploads)
    network failures and overloaded-server answers are retried with exponential backoff, within
    ``S3Settings.retries`` and ``op_timeout``; then :class:`NetworkError`. Wrong credentials or a missing
    bucket will not fix themselves, so they fail at once. Composite operations (a whole ``torch.load``)
    pass ``retry=False``: their S3 requests retry one by one inside.
    """
    started = time.monotonic()
    for i in range(s.retries + 1):
        try:
            return fn()
        except S3CkptError:
            raise
        except Exception as e:  # noqa: BLE001 - botocore/urllib3 errors: translated or re-raised as is
            if retry and is_transient(e) and backoff(s, i, started):
                continue
            t = translate(e, s, what, missing=missing, conflict=conflict)
            if t is e:
                raise
            raise t from None
    raise AssertionError("unreachable")


def check_bucket(s: S3Settings) -> None:
    """Fail fast with a clear message if the endpoint, the credentials or the bucket is wrong.

    ``list_objects_v2`` (not ``head_bucket``) because HEAD responses carry no error code, and we want to
    tell "wrong secret" from "no such bucket". At most 4 retries here, so that an unreachable endpoint is
    reported in a few seconds.
    """
    probe = make_client(s, max_pool=1)
    s3_call(s.with_overrides(retries=min(s.retries, 4)), f"opening bucket {s.bucket!r}",
            lambda: probe.list_objects_v2(Bucket=s.bucket, MaxKeys=1))


def ensure_bucket(client: Any, s: S3Settings, versioning: bool = True) -> None:
    """Create the bucket if missing and enable versioning (what compose's `createbuckets` does natively)."""
    def _create() -> None:
        try:
            client.create_bucket(Bucket=s.bucket)
        except ClientError as e:
            if error_code(e) not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise
    s3_call(s, f"creating bucket {s.bucket!r}", _create)
    if versioning:
        s3_call(s, "enabling versioning", lambda: client.put_bucket_versioning(
            Bucket=s.bucket, VersioningConfiguration={"Status": "Enabled"}))
