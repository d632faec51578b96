"""Exception types of s3ckpt.

Every failure a user can cause or fix (wrong credentials, missing bucket, MinIO down, corrupt checkpoint)
is one of these, with a one-line message that names what is wrong and what to do. The CLI prints
``str(exc)`` and exits non-zero instead of showing a botocore traceback.
"""

from __future__ import annotations


class S3CkptError(Exception):
    """Base class: a problem the user can act on; its message is a single line."""


class NetworkError(S3CkptError):
    """The network failed during an S3 operation (reset, timeout, cut response) even after the retries.

    Nothing is concluded about the checkpoint: a step being saved is kept as it is (committed or not, never
    half-deleted), a step being read is not called corrupt. Retrying later is the remedy.
    """


class EndpointUnreachable(NetworkError):
    """The S3 endpoint did not answer (connection refused / timed out) even after retries."""


class CredentialsError(S3CkptError):
    """The server rejected the access key or the signature (wrong key id or secret)."""


class AccessDenied(S3CkptError):
    """The credentials are valid but not allowed to do this on this bucket."""


class BucketNotFound(S3CkptError):
    """The configured bucket does not exist."""


class CheckpointNotFound(S3CkptError):
    """No (valid) checkpoint exists for the requested step or run."""


class IntegrityError(S3CkptError):
    """A checkpoint object does not match its manifest (size or SHA-256): corrupt or truncated."""


class NoVerifiedCheckpoint(IntegrityError):
    """Committed steps exist but none verifies: never a reason to start training from scratch."""


class WriteConflict(S3CkptError):
    """Another writer already committed a manifest for this step (conditional write lost)."""
