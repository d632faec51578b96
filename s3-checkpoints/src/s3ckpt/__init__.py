"""s3ckpt: crash-safe, bit-exact-resumable PyTorch checkpoints in an S3 bucket (MinIO), boto3 only.

A checkpoint is a set of objects under ``<prefix>/<run>/step-<n>/`` that is valid only once its
``manifest.json`` (every object's key, size and SHA-256) has been written, last, with ``If-None-Match: *``.
"""

from s3ckpt.catalog import CheckpointInfo
from s3ckpt.errors import (
    AccessDenied,
    BucketNotFound,
    CheckpointNotFound,
    CredentialsError,
    EndpointUnreachable,
    IntegrityError,
    NetworkError,
    NoVerifiedCheckpoint,
    S3CkptError,
    WriteConflict,
)
from s3ckpt.s3 import S3Settings, make_client
from s3ckpt.store import CheckpointStore, LoadedCheckpoint


def __getattr__(name: str):  # lazy: importing torch takes seconds, and the CLI mostly does not need it
    if name in ("capture_rng_state", "restore_rng_state"):
        from s3ckpt import state

        return getattr(state, name)
    raise AttributeError(f"module 's3ckpt' has no attribute {name!r}")


__all__ = [
    "AccessDenied",
    "BucketNotFound",
    "CheckpointInfo",
    "CheckpointNotFound",
    "CheckpointStore",
    "CredentialsError",
    "EndpointUnreachable",
    "IntegrityError",
    "LoadedCheckpoint",
    "NetworkError",
    "NoVerifiedCheckpoint",
    "S3CkptError",
    "S3Settings",
    "WriteConflict",
    "capture_rng_state",
    "make_client",
    "restore_rng_state",
]
__version__ = "0.2.0"
