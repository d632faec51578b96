"""``Catalog``: the committed checkpoints of one run, whichever process wrote them.

Layout under the bucket::

    <prefix>/<run>/step-000000100/<data objects>      their names carry this save attempt's id
    <prefix>/<run>/step-000000100/manifest.json       written LAST, with If-None-Match: *

A step exists only once its manifest exists; it is valid only while every object still matches the
manifest's size and SHA-256. Both kinds of checkpoint share this: ``torch`` (one process,
:class:`~s3ckpt.store.CheckpointStore`) and ``dcp`` (every rank of a ``torch.distributed.checkpoint`` save,
:mod:`s3ckpt.dcp`). Listing, verification and the conditional commit live here, once, for both.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from s3ckpt.errors import (
    CheckpointNotFound,
    IntegrityError,
    NetworkError,
    NoVerifiedCheckpoint,
    S3CkptError,
    WriteConflict,
)
from s3ckpt.s3 import S3Settings, check_bucket, make_client, s3_call
from s3ckpt.streams import S3Reader, b64sha256

log = logging.getLogger("s3ckpt")

MANIFEST = "manifest.json"
FORMAT = "s3ckpt/1"
VERSION = "0.2.0"
STEP_RE = re.compile(r"step-(\d+)/")
EventHook = Callable[[str, dict[str, Any]], None]
T = TypeVar("T")


@dataclass
class CheckpointInfo:
    """One committed step, as read from its manifest."""

    step: int
    prefix: str
    created: str
    total_bytes: int
    objects: list[dict[str, Any]]
    kind: str = "torch"
    metadata: dict[str, Any] = field(default_factory=dict)
    manifest: dict[str, Any] = field(default_factory=dict)


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


class Catalog:
    """Naming, listing, verifying and committing the steps of one run in one bucket.

    Args:
        bucket, prefix: override ``settings`` (default: ``S3CKPT_BUCKET``/``S3CKPT_PREFIX`` or
            ``checkpoints``/``ckpt``).
        run: all steps of one run live under ``<prefix>/<run>/``.
        settings / client: endpoint and credentials (default: from the environment, see ``S3Settings``).
        check: probe the endpoint, credentials and bucket now, to fail with one clear line.
        on_event: optional hook ``(event, info)`` called at each protocol step (tests, progress UIs).
    """

    def __init__(self, bucket: str | None = None, prefix: str | None = None, run: str = "default", *,
                 settings: S3Settings | None = None, client: Any = None, max_pool: int = 16,
                 check: bool = True, on_event: EventHook | None = None) -> None:
        self.settings = (settings or S3Settings()).with_overrides(bucket=bucket, prefix=prefix)
        self.bucket = self.settings.bucket
        self.prefix = self.settings.prefix.strip("/")
        if not re.fullmatch(r"[A-Za-z0-9._=-]+", run):
            raise S3CkptError(f"invalid run name {run!r}: use letters, digits, '.', '_', '=', '-'")
        self.run = run
        self.client = client or make_client(self.settings, max_pool=max_pool)
        self.on_event = on_event
        if check:
            check_bucket(self.settings)

    # ------------------------------------------------------------------ naming, events, S3 calls
    @property
    def run_prefix(self) -> str:
        return f"{self.prefix}/{self.run}/" if self.prefix else f"{self.run}/"

    def step_prefix(self, step: int) -> str:
        return f"{self.run_prefix}step-{int(step):09d}/"

    def emit(self, event: str, **info: Any) -> None:
        if self.on_event is not None:
            self.on_event(event, info)

    def call(self, what: str, fn: Callable[[], Any], **kw: Any) -> Any:
        """One S3 operation with the library's error translation (see :func:`s3ckpt.s3.s3_call`)."""
        return s3_call(self.settings, what, fn, **kw)

    def list_keys(self, prefix: str) -> Iterator[dict[str, Any]]:
        """Every object under ``prefix``, page by page; each page request is retried on its own (a
        paginator that raised once is finished: retrying it would end the listing early, silently)."""
        kw: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix}
        while True:
            page = self.call(f"listing {prefix}", lambda kw=dict(kw): self.client.list_objects_v2(**kw))
            yield from page.get("Contents", [])
            if not page.get("IsTruncated"):
                return
            kw["ContinuationToken"] = page["NextContinuationToken"]

    def put_json(self, key: str, doc: Any, name: str) -> dict[str, Any]:
        """A small JSON object, with its SHA-256 checked by the server; returns its manifest entry."""
        data = json.dumps(doc, indent=1, sort_keys=True).encode()
        ck = b64sha256(data)
        self.call(f"uploading {key}", lambda: self.client.put_object(
            Bucket=self.bucket, Key=key, Body=data, ChecksumSHA256=ck, ContentType="application/json"))
        return {"name": name, "key": key, "size": len(data), "sha256": hashlib.sha256(data).hexdigest(),
                "s3_checksum_sha256": ck, "format": "json"}

    def delete_keys(self, keys: list[str]) -> None:
        """Delete every version of the given keys (the bucket is versioned: a plain delete frees nothing).
        Best effort: used for clean-up, where a failure must not hide the error that caused it; once the
        network fails the rest is left to :func:`~s3ckpt.maintenance.recover` (no retry storm)."""
        for key in keys:
            try:
                vs = self.call(f"listing the versions of {key}", lambda key=key: (
                    self.client.list_object_versions(Bucket=self.bucket, Prefix=key)))
                ids = [{"Key": v["Key"], "VersionId": v["VersionId"]}
                       for v in vs.get("Versions", []) + vs.get("DeleteMarkers", []) if v["Key"] == key]
                if ids:
                    self.call(f"deleting {key}", lambda ids=ids: self.client.delete_objects(
                        Bucket=self.bucket, Delete={"Objects": ids, "Quiet": True}))
                else:
                    self.call(f"deleting {key}", lambda key=key: self.client.delete_object(
                        Bucket=self.bucket, Key=key))
            except NetworkError as e:
                log.warning("left %d object(s) for `recover` to delete: %s", len(keys) - keys.index(key), e)
                return
            except Exception as e:  # noqa: BLE001 - best effort cleanup
                log.warning("could not delete %s: %s", key, e)

    # ------------------------------------------------------------------ commit
    def new_manifest(self, step: int, kind: str, attempt: str, objects: list[dict[str, Any]],
                     **extra: Any) -> dict[str, Any]:
        import torch

        return {"format": FORMAT, "kind": kind, "run": self.run, "step": int(step), "attempt": attempt,
                "created": now_iso(), "objects": objects,
                "library": {"torch": torch.__version__, "s3ckpt": VERSION}, **extra}

    def commit(self, manifest: dict[str, Any]) -> CheckpointInfo:
        """Write the manifest of a step whose objects are all complete: the one moment a step comes into
        existence. ``If-None-Match: *`` makes exactly one of two racing writers win; the loser gets
        :class:`WriteConflict`. Then check what the server holds (sizes, stored checksums).

        Idempotent: the PUT is retried after a network failure, and a 412 (or a failure whose outcome is
        unknown) is settled by reading the stored manifest back: if it carries this save's attempt id, an
        earlier try of ours succeeded and its answer was lost."""
        step, attempt = int(manifest["step"]), str(manifest["attempt"])
        key = self.step_prefix(step) + MANIFEST
        body = json.dumps(manifest, indent=1, sort_keys=True).encode()
        taken = WriteConflict(f"step {step} of run {self.run!r} was already committed by another writer; "
                              f"this save (attempt {attempt}) was discarded")
        try:
            self.call(f"writing {key}", lambda: self.client.put_object(
                Bucket=self.bucket, Key=key, Body=body, IfNoneMatch="*", ChecksumSHA256=b64sha256(body),
                ContentType="application/json"), conflict=taken)
        except (WriteConflict, NetworkError):
            stored = self.stored_attempt(step)
            if stored is None:
                raise  # the network failed before the manifest landed: not committed
            if stored != attempt:
                raise taken from None
            log.info("step %s: the manifest was written by an earlier try (its answer was lost)", step)
        self.emit("manifest_written", step=step)
        try:
            return self.verify(step, deep=False, manifest=manifest)
        except NetworkError as e:  # committed: every object's own upload was checked by the server already
            log.warning("step %s committed, but its objects could not be re-checked: %s", step, e)
            return self.info(manifest)

    def stored_attempt(self, step: int) -> str | None:
        """The attempt id in ``step``'s stored manifest, None if it has none (not committed)."""
        try:
            return str(self.manifest(step).get("attempt"))
        except CheckpointNotFound:
            return None

    def discard_attempt(self, step: int, attempt: str, keys: list[str], *, maybe_committed: bool) -> None:
        """After a failed save: delete this attempt's objects, never while a committed manifest lists them.

        Before the commit began no manifest can name them (their names carry the attempt id). After it,
        the stored manifest decides; if it cannot be read, they are kept (`recover` deletes them later if
        they turn out to be orphans)."""
        if maybe_committed:
            try:
                stored = self.stored_attempt(step)
            except S3CkptError as e:
                log.warning("step %s: cannot tell whether attempt %s was committed (%s); its objects "
                            "are kept", step, attempt, e)
                return
            if stored == attempt:
                log.warning("step %s: attempt %s is committed; its objects are kept", step, attempt)
                return
        self.delete_keys(keys)

    # ------------------------------------------------------------------ listing
    def committed_steps(self) -> list[int]:
        """Steps that have a manifest, ascending (not yet verified)."""
        steps = []
        for obj in self.list_keys(self.run_prefix + "step-"):
            if obj["Key"].endswith("/" + MANIFEST):
                m = STEP_RE.search(obj["Key"][len(self.run_prefix):])
                if m:
                    steps.append(int(m.group(1)))
        return sorted(set(steps))

    def manifest(self, step: int) -> dict[str, Any]:
        """The parsed manifest of ``step``; :class:`CheckpointNotFound` if it has none (not committed)."""
        key = self.step_prefix(step) + MANIFEST
        missing = CheckpointNotFound(f"step {step} of run {self.run!r} has no manifest "
                                     f"(s3://{self.bucket}/{key}): not a committed checkpoint")
        body = self.call(f"reading {key}", lambda: self.client.get_object(Bucket=self.bucket, Key=key)[
            "Body"].read(), missing=missing)
        try:
            man = json.loads(body)
            if man.get("format") != FORMAT or int(man["step"]) != int(step) or not isinstance(
                    man["objects"], list):
                raise ValueError("wrong format or step")
        except (ValueError, KeyError, TypeError) as e:
            raise IntegrityError(f"manifest s3://{self.bucket}/{key} is unreadable ({e})") from None
        man.setdefault("kind", "torch")  # manifests written before DCP support
        return man

    def info(self, man: dict[str, Any]) -> CheckpointInfo:
        return CheckpointInfo(step=int(man["step"]), prefix=self.step_prefix(int(man["step"])),
                              created=man.get("created", ""), kind=man.get("kind", "torch"),
                              total_bytes=sum(int(o["size"]) for o in man["objects"]),
                              objects=man["objects"], metadata=man.get("metadata", {}), manifest=man)

    def list(self) -> list[CheckpointInfo]:
        """Every committed step (manifest present), oldest first. Use :meth:`verify` to check one."""
        out = []
        for s in self.committed_steps():
            try:
                out.append(self.info(self.manifest(s)))
            except (CheckpointNotFound, IntegrityError) as e:
                log.warning("skipping step %s: %s", s, e)
        return out

    # ------------------------------------------------------------------ verify
    def verify(self, step: int, *, deep: bool = True,
               manifest: dict[str, Any] | None = None) -> CheckpointInfo:
        """Check that every object of ``step`` matches its manifest; raise :class:`IntegrityError` if not.

        ``deep=False`` compares size and the SHA-256 checksum the server stored (and verified) at upload
        time: cheap, catches missing, truncated or replaced objects. ``deep=True`` also re-reads every byte
        and recomputes its SHA-256 (catches anything, costs a full read).
        """
        man = manifest or self.manifest(step)
        for o in man["objects"]:
            missing = IntegrityError(f"step {step}: object {o['key']} listed in the manifest is missing")
            head = self.call(f"checking {o['key']}", lambda o=o: self.client.head_object(
                Bucket=self.bucket, Key=o["key"], ChecksumMode="ENABLED"), missing=missing)
            if int(head["ContentLength"]) != int(o["size"]):
                raise IntegrityError(f"step {step}: {o['key']} has {head['ContentLength']} bytes, manifest "
                                     f"says {o['size']} (truncated or replaced)")
            stored = head.get("ChecksumSHA256")
            if o.get("s3_checksum_sha256") and stored != o["s3_checksum_sha256"]:
                what = "differs from" if stored else "is missing, unlike"
                raise IntegrityError(f"step {step}: {o['key']} SHA-256 checksum on the server {what} the "
                                     f"manifest's (object replaced or corrupt)")
            if deep:
                with self.reader(o) as r:
                    self.call(f"reading {o['key']}", r.verify, retry=False)
        return self.info(man)

    def reader(self, o: dict[str, Any]) -> S3Reader:
        """A verifying reader for one manifest entry (per-part SHA-256 when the manifest has them)."""
        return S3Reader(self.client, self.bucket, o["key"], int(o["size"]), o.get("sha256"),
                        part_size=o.get("part_size"), part_sha256=o.get("part_sha256"), call=self.call)

    def verified_steps(self, deep: bool = False) -> list[int]:
        out = []
        for s in self.committed_steps():
            try:
                self.verify(s, deep=deep)
                out.append(s)
            except (IntegrityError, CheckpointNotFound):
                pass
        return out

    def newest(self, attempt: Callable[[int], T | None], below: int | None = None) -> T:
        """The verified fallback, once for every loader: ``attempt(step)`` on committed steps, newest
        first (older than ``below``); a step that raises :class:`IntegrityError` is skipped with a warning
        naming it, one for which ``attempt`` returns None is skipped silently (another kind).

        A network failure is not a reason to skip a step: it propagates. Committed steps that all fail
        raise :class:`NoVerifiedCheckpoint`, never :class:`CheckpointNotFound` (which means "start over")."""
        committed = self.committed_steps()
        steps = [s for s in committed if below is None or s < below]
        if not committed:
            raise CheckpointNotFound(f"no committed checkpoint for run {self.run!r} under "
                                     f"s3://{self.bucket}/{self.run_prefix}")
        if not steps:  # the newer ones failed to load: nothing to start over from, it is damage
            raise NoVerifiedCheckpoint(f"no checkpoint of run {self.run!r} older than step {below} is left "
                                       f"to fall back to; not starting over: inspect them with "
                                       f"`s3ckpt verify --run {self.run}`")
        errors = []
        for s in reversed(steps):
            try:
                got = attempt(s)
            except IntegrityError as e:
                warn_fallback(s, e)
                errors.append(str(e))
                continue
            if got is not None:
                return got
            errors.append(f"step {s} is another kind of checkpoint")
        if all(e.endswith("another kind of checkpoint") for e in errors):
            raise CheckpointNotFound(f"no checkpoint of this kind for run {self.run!r} under "
                                     f"s3://{self.bucket}/{self.run_prefix} ({len(steps)} of another kind)")
        raise NoVerifiedCheckpoint(f"no checkpoint of run {self.run!r} verifies ({len(steps)} committed, all "
                                   f"failed: {errors[0]}); not starting over: inspect them with "
                                   f"`s3ckpt verify --run {self.run}`")

    def latest_verified(self, kind: str, below: int | None = None) -> int:
        """Newest step of ``kind`` whose objects pass the quick check (size + server checksum)."""
        return self.newest(lambda s: s if self.verify(s, deep=False).kind == kind else None, below)


def warn_fallback(step: int, err: BaseException) -> None:
    """The one warning a verified fallback gives: which step was skipped, and why."""
    import warnings

    msg = f"checkpoint step {step} failed verification ({err}); falling back to an older step"
    warnings.warn(msg, stacklevel=3)
    log.warning(msg)
