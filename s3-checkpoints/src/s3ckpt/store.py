"""``CheckpointStore``: the commit protocol on top of plain S3 objects.

Layout under the bucket::

    <prefix>/<run>/step-000000100/model.3f9a1c2e.pt      one object per top-level entry of `state`
    <prefix>/<run>/step-000000100/optimizer.3f9a1c2e.pt   (the 8 hex digits: this save attempt's id)
    <prefix>/<run>/step-000000100/hparams.json            readable copy of metadata["hparams"]
    <prefix>/<run>/step-000000100/meta.3f9a1c2e.json
    <prefix>/<run>/step-000000100/manifest.json           written LAST, with If-None-Match: *

A step exists only once its manifest exists; it is valid only while every object still matches the
manifest's size and SHA-256. Data object names carry the attempt id, so two writers racing on one step
never overwrite each other's data: the conditional manifest PUT picks exactly one winner and the loser
deletes its own objects. ``latest`` is found by listing manifests (never a pointer), newest first, and
the first one that verifies is used; a failing one is skipped with a warning.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import re
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, is_dataclass
from typing import Any

from botocore.exceptions import ClientError

from s3ckpt.errors import (
    CheckpointNotFound,
    IntegrityError,
    S3CkptError,
    WriteConflict,
)
from s3ckpt.s3 import S3Settings, check_bucket, error_code, make_client, translate
from s3ckpt.streams import MiB, S3Reader, S3Writer, b64sha256

log = logging.getLogger("s3ckpt")

MANIFEST = "manifest.json"
FORMAT = "s3ckpt/1"
STEP_RE = re.compile(r"step-(\d+)/")
EventHook = Callable[[str, dict[str, Any]], None]


@dataclass
class CheckpointInfo:
    """One committed step, as read from its manifest."""

    step: int
    prefix: str
    created: str
    total_bytes: int
    objects: list[dict[str, Any]]
    metadata: dict[str, Any] = field(default_factory=dict)
    manifest: dict[str, Any] = field(default_factory=dict)


@dataclass
class LoadedCheckpoint:
    """What :meth:`CheckpointStore.load` returns: the state parts, the metadata, and where it came from."""

    step: int
    state: dict[str, Any]
    metadata: dict[str, Any]
    manifest: dict[str, Any]


def _jsonable(obj: Any) -> Any:
    if is_dataclass(obj) and not isinstance(obj, type):
        return asdict(obj)
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return repr(obj)


def _snapshot(obj: Any) -> Any:
    """Deep copy of the tensors in ``obj`` onto the CPU, for a background save (training keeps mutating)."""
    import torch

    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: _snapshot(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_snapshot(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_snapshot(v) for v in obj)
    return obj


class CheckpointStore:
    """Save / load / list / verify / prune checkpoints of one training run in an S3 bucket.

    Args:
        bucket: bucket name (default: ``S3CKPT_BUCKET`` or ``checkpoints``).
        prefix: key prefix shared by runs (default: ``S3CKPT_PREFIX`` or ``ckpt``).
        run: the run name; all steps of one run live under ``<prefix>/<run>/``.
        settings / client: endpoint and credentials (default: from the environment, see ``S3Settings``).
        part_size, max_inflight: multipart geometry; extra RAM while saving is at most
            ``(max_inflight + 1) * part_size``.
        stale_after: seconds after which an unfinished multipart upload of this run counts as left over
            by a crashed save and is aborted at the next save.
        on_event: optional hook ``(event, info)`` called at each protocol step (tests and progress UIs).
    """

    def __init__(self, bucket: str | None = None, prefix: str | None = None, run: str = "default", *,
                 settings: S3Settings | None = None, client: Any = None, part_size: int = 8 * MiB,
                 max_inflight: int = 5, stale_after: float = 3600.0, on_event: EventHook | None = None,
                 whole_object_sha256: bool = False, check: bool = True) -> None:
        self.settings = (settings or S3Settings()).with_overrides(bucket=bucket, prefix=prefix)
        self.bucket = self.settings.bucket
        self.prefix = self.settings.prefix.strip("/")
        if not re.fullmatch(r"[A-Za-z0-9._=-]+", run):
            raise S3CkptError(f"invalid run name {run!r}: use letters, digits, '.', '_', '=', '-'")
        self.run = run
        self.client = client or make_client(self.settings, max_pool=max(16, 2 * max_inflight + 4))
        self.part_size, self.max_inflight, self.stale_after = part_size, max_inflight, stale_after
        self.whole_object_sha256 = whole_object_sha256
        self.on_event = on_event
        self._async: ThreadPoolExecutor | None = None
        self._pending: Future[CheckpointInfo] | None = None
        self._lock = threading.Lock()
        if check:
            check_bucket(self.settings)

    # ------------------------------------------------------------------ naming
    @property
    def run_prefix(self) -> str:
        return f"{self.prefix}/{self.run}/" if self.prefix else f"{self.run}/"

    def step_prefix(self, step: int) -> str:
        return f"{self.run_prefix}step-{int(step):09d}/"

    def _emit(self, event: str, **info: Any) -> None:
        if self.on_event is not None:
            self.on_event(event, info)

    def _s3(self, what: str, fn: Callable[[], Any]) -> Any:
        """Run one S3 call and turn botocore errors into our one-line ones."""
        try:
            return fn()
        except ClientError as e:
            raise translate(e, self.settings, what) from None
        except S3CkptError:
            raise
        except Exception as e:  # connection errors etc.
            t = translate(e, self.settings, what)
            if t is e:
                raise
            raise t from None

    # ------------------------------------------------------------------ save
    def save(self, step: int, state: dict[str, Any], metadata: dict[str, Any] | None = None, *,
             keep_last: int | None = None, blocking: bool = True) -> CheckpointInfo | Future[CheckpointInfo]:
        """Commit ``state`` as step ``step``: every entry streamed to its own object, then the manifest.

        ``state`` maps names to anything ``torch.save`` takes (state_dicts, tensors, RNG states).
        ``metadata`` must be JSON-able (step/epoch/hyperparameters/data position...); ``metadata["hparams"]``
        is also written as ``hparams.json`` for people. With ``keep_last=N`` older steps are pruned, only
        after this one verified. With ``blocking=False`` the state is copied to CPU and saved by a
        background thread; its error (if any) is raised by the next ``save``/``wait``/``close``.
        """
        self.wait()  # one save at a time; re-raises a failed background save
        if not blocking:
            snap = _snapshot(state)
            if self._async is None:
                self._async = ThreadPoolExecutor(1, thread_name_prefix="s3ckpt-async")
            self._pending = self._async.submit(self._save, step, snap, metadata, keep_last)
            return self._pending
        return self._save(step, state, metadata, keep_last)

    def wait(self) -> CheckpointInfo | None:
        """Wait for the background save, if any; raise its error here (not silently lost)."""
        fut, self._pending = self._pending, None
        if fut is None:
            return None
        return fut.result()

    def close(self) -> None:
        """Finish the background save (raising its error) and release the thread."""
        try:
            self.wait()
        finally:
            if self._async is not None:
                self._async.shutdown(wait=True)
                self._async = None

    def __enter__(self) -> CheckpointStore:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _save(self, step: int, state: dict[str, Any], metadata: dict[str, Any] | None,
              keep_last: int | None) -> CheckpointInfo:
        import torch  # here, not at import time: the CLI (list/verify/prune) starts without torch

        if not isinstance(state, dict) or not state:
            raise S3CkptError("state must be a non-empty dict of name -> object (e.g. {'model': sd})")
        self.abort_stale_uploads(older_than=self.stale_after)
        attempt = uuid.uuid4().hex[:8]
        sp = self.step_prefix(step)
        meta = _jsonable(dict(metadata or {}))
        meta.setdefault("step", int(step))
        objects: list[dict[str, Any]] = []
        written: list[str] = []
        t0 = time.perf_counter()
        try:
            for name, obj in state.items():
                if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
                    raise S3CkptError(f"invalid state entry name {name!r}")
                key = f"{sp}{name}.{attempt}.pt"
                written.append(key)
                w = S3Writer(self.client, self.bucket, key, part_size=self.part_size,
                             max_inflight=self.max_inflight, whole_sha256=self.whole_object_sha256,
                             on_part=lambda n, sz, k=key: self._emit("part_uploaded", key=k, part=n, size=sz))
                try:
                    torch.save(obj, w)
                except BaseException:
                    w.abort()
                    raise
                self._s3(f"uploading {key}", w.close)
                entry = {"name": name, "key": key, "size": w.size, "part_size": w.part_size,
                         "part_sha256": w.part_sha256, "s3_checksum_sha256": w.s3_checksum, "format": "torch"}
                if w.sha256:
                    entry["sha256"] = w.sha256
                objects.append(entry)
                self._emit("object_written", key=key, size=w.size)
            json_objs = {f"meta.{attempt}.json": meta}
            if "hparams" in meta:
                json_objs[f"hparams.{attempt}.json"] = meta["hparams"]
            for fname, doc in json_objs.items():
                key = sp + fname
                written.append(key)
                objects.append(self._put_json(key, doc, name=fname.split(".")[0]))
            self._emit("objects_done", step=step, keys=list(written))
            manifest = {
                "format": FORMAT, "run": self.run, "step": int(step), "attempt": attempt,
                "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                "objects": objects, "metadata": meta,
                "library": {"torch": torch.__version__, "s3ckpt": "0.1.0"},
            }
            body = json.dumps(manifest, indent=1, sort_keys=True).encode()
            try:
                self.client.put_object(Bucket=self.bucket, Key=sp + MANIFEST, Body=body, IfNoneMatch="*",
                                       ChecksumSHA256=b64sha256(body), ContentType="application/json")
            except ClientError as e:
                if error_code(e) in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
                    raise WriteConflict(f"step {step} of run {self.run!r} was already committed by another "
                                        f"writer; this save (attempt {attempt}) was discarded") from None
                raise translate(e, self.settings, "writing the manifest") from None
        except BaseException:
            self._delete_keys(written)  # only our own attempt's objects: never someone else's data
            raise
        self._emit("manifest_written", step=step, seconds=time.perf_counter() - t0)
        info = self._info(manifest)
        # Commit done. Check what the server holds before pruning anything older.
        self.verify(step, deep=False, manifest=manifest)
        if keep_last is not None:
            self.prune(keep_last=keep_last)
        return info

    def _put_json(self, key: str, doc: Any, name: str) -> dict[str, Any]:
        data = json.dumps(doc, indent=1, sort_keys=True).encode()
        ck = b64sha256(data)
        self._s3(f"uploading {key}", lambda: self.client.put_object(
            Bucket=self.bucket, Key=key, Body=data, ChecksumSHA256=ck, ContentType="application/json"))
        return {"name": name, "key": key, "size": len(data), "sha256": hashlib.sha256(data).hexdigest(),
                "s3_checksum_sha256": ck, "format": "json"}

    # ------------------------------------------------------------------ listing
    def _list_keys(self, prefix: str) -> Iterator[dict[str, Any]]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        try:
            for page in pages:
                yield from page.get("Contents", [])
        except ClientError as e:
            raise translate(e, self.settings, f"listing {prefix}") from None

    def committed_steps(self) -> list[int]:
        """Steps that have a manifest, ascending (not yet verified)."""
        steps = []
        for obj in self._list_keys(self.run_prefix + "step-"):
            if obj["Key"].endswith("/" + MANIFEST):
                m = STEP_RE.search(obj["Key"][len(self.run_prefix):])
                if m:
                    steps.append(int(m.group(1)))
        return sorted(set(steps))

    def manifest(self, step: int) -> dict[str, Any]:
        """The parsed manifest of ``step``; :class:`CheckpointNotFound` if it has none (not committed)."""
        key = self.step_prefix(step) + MANIFEST
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except ClientError as e:
            if error_code(e) in ("NoSuchKey", "404"):
                raise CheckpointNotFound(f"step {step} of run {self.run!r} has no manifest "
                                         f"(s3://{self.bucket}/{key}): not a committed checkpoint") from None
            raise translate(e, self.settings, f"reading {key}") from None
        try:
            man = json.loads(body)
            if man.get("format") != FORMAT or int(man["step"]) != int(step):
                raise ValueError("wrong format or step")
        except (ValueError, KeyError, TypeError) as e:
            raise IntegrityError(f"manifest s3://{self.bucket}/{key} is unreadable ({e})") from None
        return man

    def _info(self, man: dict[str, Any]) -> CheckpointInfo:
        return CheckpointInfo(step=int(man["step"]), prefix=self.step_prefix(int(man["step"])),
                              created=man.get("created", ""),
                              total_bytes=sum(int(o["size"]) for o in man["objects"]),
                              objects=man["objects"], metadata=man.get("metadata", {}), manifest=man)

    def list(self) -> list[CheckpointInfo]:
        """Every committed step (manifest present), oldest first. Use :meth:`verify` to check one."""
        out = []
        for s in self.committed_steps():
            try:
                out.append(self._info(self.manifest(s)))
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
            try:
                head = self.client.head_object(Bucket=self.bucket, Key=o["key"], ChecksumMode="ENABLED")
            except ClientError as e:
                if error_code(e) in ("NoSuchKey", "404"):
                    raise IntegrityError(f"step {step}: object {o['key']} listed in the manifest is "
                                         f"missing") from None
                raise translate(e, self.settings, f"checking {o['key']}") from None
            if int(head["ContentLength"]) != int(o["size"]):
                raise IntegrityError(f"step {step}: {o['key']} has {head['ContentLength']} bytes, manifest "
                                     f"says {o['size']} (truncated or replaced)")
            stored = head.get("ChecksumSHA256")
            if o.get("s3_checksum_sha256") and stored != o["s3_checksum_sha256"]:
                what = "differs from" if stored else "is missing, unlike"
                raise IntegrityError(f"step {step}: {o['key']} SHA-256 checksum on the server {what} the "
                                     f"manifest's (object replaced or corrupt)")
            if deep:
                r = self._reader(o)
                try:
                    self._s3(f"reading {o['key']}", r.verify)
                finally:
                    r.close()
        return self._info(man)

    def _reader(self, o: dict[str, Any]) -> S3Reader:
        """A verifying reader for one manifest entry (per-part SHA-256 when the manifest has them)."""
        return S3Reader(self.client, self.bucket, o["key"], int(o["size"]), o.get("sha256"),
                        part_size=o.get("part_size"), part_sha256=o.get("part_sha256"))

    def verified_steps(self, deep: bool = False) -> list[int]:
        out = []
        for s in self.committed_steps():
            try:
                self.verify(s, deep=deep)
                out.append(s)
            except (IntegrityError, CheckpointNotFound):
                pass
        return out

    # ------------------------------------------------------------------ load
    def load(self, step: int | str = "latest", *, map_location: Any = "cpu",
             parts: list[str] | None = None, weights_only: bool = True) -> LoadedCheckpoint:
        """Load a committed checkpoint; ``"latest"`` = newest step whose manifest exists and verifies.

        Every byte read is SHA-256-checked against the manifest (the load *is* a deep verify). For
        ``"latest"`` a step that fails is skipped with a warning and the previous one is tried; an
        explicit step raises :class:`IntegrityError`. Steps without a manifest are never considered.
        """
        if step != "latest":
            return self._load_step(int(step), map_location, parts, weights_only)
        steps = self.committed_steps()
        if not steps:
            raise CheckpointNotFound(f"no committed checkpoint for run {self.run!r} under "
                                     f"s3://{self.bucket}/{self.run_prefix}")
        errors = []
        for s in reversed(steps):
            try:
                return self._load_step(s, map_location, parts, weights_only)
            except IntegrityError as e:
                msg = f"checkpoint step {s} failed verification ({e}); falling back to an older step"
                warnings.warn(msg, stacklevel=2)
                log.warning(msg)
                errors.append(str(e))
        raise CheckpointNotFound(f"no checkpoint of run {self.run!r} verifies ({len(steps)} committed, all "
                                 f"failed: {errors[0]})")

    def _load_step(self, step: int, map_location: Any, parts: list[str] | None,
                   weights_only: bool) -> LoadedCheckpoint:
        import torch

        man = self.manifest(step)
        self.verify(step, deep=False, manifest=man)  # cheap: sizes + server checksums, before reading GBs
        state: dict[str, Any] = {}
        for o in man["objects"]:
            if o["format"] != "torch" or (parts is not None and o["name"] not in parts):
                continue
            r = self._reader(o)
            try:
                try:
                    obj = self._s3(f"reading {o['key']}", lambda r=r: torch.load(
                        r, map_location=map_location, weights_only=weights_only))
                except (RuntimeError, EOFError, ValueError) as e:  # garbled zip/pickle: integrity, not a bug
                    if "weights_only" in str(e) or "Unsupported global" in str(e):
                        raise
                    raise IntegrityError(f"step {step}: {o['key']} cannot be deserialised ({e})") from None
                self._s3(f"verifying {o['key']}", r.verify)
            finally:
                r.close()
            state[o["name"]] = obj
            self._emit("object_loaded", key=o["key"], size=o["size"])
        return LoadedCheckpoint(step=step, state=state, metadata=man.get("metadata", {}), manifest=man)

    def download(self, step: int, dest: str) -> list[str]:
        """Copy every object of a committed step to a local folder, SHA-256-checked; returns file paths."""
        import os

        man = self.manifest(step)
        os.makedirs(dest, exist_ok=True)
        paths = []
        for o in man["objects"] + [{"key": self.step_prefix(step) + MANIFEST}]:
            path = os.path.join(dest, o["key"].rsplit("/", 1)[1])
            body = self._s3(f"reading {o['key']}",
                            lambda o=o: self.client.get_object(Bucket=self.bucket, Key=o["key"])["Body"])
            # hash per part (the manifest's part digests) and, if recorded, the whole object
            psize = int(o.get("part_size") or 0) or None
            parts, whole, part = [], hashlib.sha256(), hashlib.sha256()
            in_part = 0
            with open(path, "wb") as f:
                for chunk in iter(lambda body=body: body.read(MiB), b""):
                    f.write(chunk)
                    whole.update(chunk)
                    mv = memoryview(chunk)
                    while psize and len(mv):
                        take = min(len(mv), psize - in_part)
                        part.update(mv[:take])
                        in_part += take
                        mv = mv[take:]
                        if in_part == psize:
                            parts.append(part.hexdigest())
                            part, in_part = hashlib.sha256(), 0
            if in_part:
                parts.append(part.hexdigest())
            bad = ("part_sha256" in o and parts != o["part_sha256"]) or \
                  ("sha256" in o and whole.hexdigest() != o["sha256"])
            if bad:
                raise IntegrityError(f"{o['key']}: SHA-256 mismatch while downloading (corrupt object)")
            paths.append(path)
        return paths

    # ------------------------------------------------------------------ delete / prune / recover
    def _delete_keys(self, keys: list[str]) -> None:
        """Delete every version of the given keys (the bucket is versioned: a plain delete frees nothing)."""
        for key in keys:
            try:
                vs = self.client.list_object_versions(Bucket=self.bucket, Prefix=key)
                ids = [{"Key": v["Key"], "VersionId": v["VersionId"]}
                       for v in vs.get("Versions", []) + vs.get("DeleteMarkers", []) if v["Key"] == key]
                if ids:
                    self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": ids, "Quiet": True})
                else:
                    self.client.delete_object(Bucket=self.bucket, Key=key)
            except Exception as e:  # noqa: BLE001 - best effort cleanup
                log.warning("could not delete %s: %s", key, e)

    def delete(self, step: int) -> int:
        """Delete a step: the manifest FIRST (so it is never seen half-deleted), then its objects."""
        sp = self.step_prefix(step)
        keys = [o["Key"] for o in self._list_keys(sp)]
        if not keys:
            raise CheckpointNotFound(f"step {step} of run {self.run!r} does not exist")
        self._delete_keys([k for k in keys if k.endswith("/" + MANIFEST)])
        self._delete_keys([k for k in keys if not k.endswith("/" + MANIFEST)])
        self._emit("deleted", step=step)
        return len(keys)

    def prune(self, keep_last: int, *, deep: bool = False) -> list[int]:
        """Keep the newest ``keep_last`` VERIFIED steps; delete committed steps older than those.

        Never deletes the newest verified step (``keep_last`` must be >= 1), never deletes anything when
        no step verifies, and leaves steps newer than the newest verified one alone (they may be a
        concurrent save or evidence worth looking at). Returns the deleted steps.
        """
        if keep_last < 1:
            raise S3CkptError("keep_last must be >= 1: pruning must never leave zero checkpoints")
        steps = self.committed_steps()
        verified: list[int] = []
        for s in reversed(steps):
            try:
                self.verify(s, deep=deep)
                verified.append(s)
            except (IntegrityError, CheckpointNotFound) as e:
                log.warning("prune: step %s does not verify (%s); not counted as kept", s, e)
            if len(verified) == keep_last:
                break
        if len(verified) < keep_last:
            return []  # not enough verified checkpoints: delete nothing
        oldest_kept = verified[-1]
        doomed = [s for s in steps if s < oldest_kept]
        for s in doomed:
            self.delete(s)
        return doomed

    def abort_stale_uploads(self, older_than: float = 0.0) -> int:
        """Abort unfinished multipart uploads under this run started more than ``older_than`` s ago.

        Lists the whole bucket's uploads and filters by key here: MinIO's ListMultipartUploads only
        honours a ``Prefix`` that is a complete object key, so a folder prefix would find nothing.
        """
        now = dt.datetime.now(dt.timezone.utc)
        n = 0
        try:
            pages = self.client.get_paginator("list_multipart_uploads").paginate(Bucket=self.bucket)
            for page in pages:
                for u in page.get("Uploads", []):
                    if not u["Key"].startswith(self.run_prefix):
                        continue
                    if (now - u["Initiated"]).total_seconds() >= older_than:
                        self.client.abort_multipart_upload(Bucket=self.bucket, Key=u["Key"],
                                                           UploadId=u["UploadId"])
                        n += 1
        except ClientError as e:
            raise translate(e, self.settings, "listing multipart uploads") from None
        if n:
            log.info("aborted %d stale multipart upload(s) of run %s", n, self.run)
        return n

    def recover(self) -> dict[str, int]:
        """Clean what crashed saves of THIS run left behind; call it once when a run (re)starts.

        Aborts every unfinished multipart upload and deletes data objects that no manifest references
        (a save killed before its manifest). Only call it from the run's single writer, at start-up: it
        would also cancel a save that is running right now in another process.
        """
        aborted = self.abort_stale_uploads(older_than=0.0)
        referenced: set[str] = set()
        by_step: dict[str, list[str]] = {}
        for obj in self._list_keys(self.run_prefix + "step-"):
            k = obj["Key"]
            by_step.setdefault(k.rsplit("/", 1)[0], []).append(k)
        for sp, keys in by_step.items():
            mkey = sp + "/" + MANIFEST
            if mkey in keys:
                try:
                    man = self.manifest(int(STEP_RE.search(mkey).group(1)))  # type: ignore[union-attr]
                    referenced.update(o["key"] for o in man["objects"])
                    referenced.add(mkey)
                except S3CkptError:
                    referenced.update(keys)  # unreadable manifest: leave everything for a human
        orphans = [k for keys in by_step.values() for k in keys if k not in referenced]
        self._delete_keys(orphans)
        return {"aborted_uploads": aborted, "orphan_objects": len(orphans)}

