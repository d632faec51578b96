"""Maintenance of a run's checkpoints: delete, prune (keep the newest N verified), clean up after crashes.

Kept apart from saving and loading: these are the only operations that destroy data, and each one is
careful about what it may touch. They work on both kinds of checkpoint (single-process and DCP), since
both are a manifest listing objects.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from botocore.exceptions import ClientError

from s3ckpt.catalog import MANIFEST, STEP_RE, Catalog
from s3ckpt.errors import CheckpointNotFound, IntegrityError, NetworkError, S3CkptError
from s3ckpt.s3 import error_code

log = logging.getLogger("s3ckpt")


def delete(cat: Catalog, step: int) -> int:
    """Delete a step: the manifest FIRST (so it is never seen half-deleted), then its objects."""
    keys = [o["Key"] for o in cat.list_keys(cat.step_prefix(step))]
    if not keys:
        raise CheckpointNotFound(f"step {step} of run {cat.run!r} does not exist")
    cat.delete_keys([k for k in keys if k.endswith("/" + MANIFEST)])
    cat.delete_keys([k for k in keys if not k.endswith("/" + MANIFEST)])
    cat.emit("deleted", step=step)
    return len(keys)


def prune(cat: Catalog, keep_last: int, *, deep: bool = False) -> list[int]:
    """Keep the newest ``keep_last`` VERIFIED steps; delete committed steps older than those.

    Never deletes the newest verified step (``keep_last`` must be >= 1), never deletes anything when
    no step verifies, and leaves steps newer than the newest verified one alone (they may be a
    concurrent save or evidence worth looking at). Returns the deleted steps.
    """
    if keep_last < 1:
        raise S3CkptError("keep_last must be >= 1: pruning must never leave zero checkpoints")
    steps = cat.committed_steps()
    verified: list[int] = []
    for s in reversed(steps):
        try:
            cat.verify(s, deep=deep)
            verified.append(s)
        except (IntegrityError, CheckpointNotFound) as e:
            log.warning("prune: step %s does not verify (%s); not counted as kept", s, e)
        if len(verified) == keep_last:
            break
    if len(verified) < keep_last:
        return []  # not enough verified checkpoints: delete nothing
    doomed = [s for s in steps if s < verified[-1]]
    for s in doomed:
        delete(cat, s)
    return doomed


def prune_after_commit(cat: Catalog, keep_last: int) -> list[int]:
    """``prune`` right after a save committed: the save succeeded, so a network failure here only
    postpones the clean-up to the next save (a warning), it does not fail the save."""
    try:
        return prune(cat, keep_last)
    except NetworkError as e:
        log.warning("pruning old steps of run %s postponed to the next save: %s", cat.run, e)
        return []


def abort_stale_uploads(cat: Catalog, older_than: float = 0.0) -> int:
    """Abort unfinished multipart uploads under this run started more than ``older_than`` s ago.

    Lists the whole bucket's uploads and filters by key here: MinIO's ListMultipartUploads only
    honours a ``Prefix`` that is a complete object key, so a folder prefix would find nothing.
    """
    now = dt.datetime.now(dt.timezone.utc)
    n = 0
    kw: dict[str, Any] = {"Bucket": cat.bucket}
    while True:  # page by page, each request retried on its own (see Catalog.list_keys)
        page = cat.call("listing multipart uploads",
                        lambda kw=dict(kw): cat.client.list_multipart_uploads(**kw))
        for u in page.get("Uploads", []):
            if u["Key"].startswith(cat.run_prefix) and (now - u["Initiated"]).total_seconds() >= older_than:
                upload = {"Bucket": cat.bucket, "Key": u["Key"], "UploadId": u["UploadId"]}
                try:
                    cat.call(f"aborting the upload of {u['Key']}",
                             lambda upload=upload: cat.client.abort_multipart_upload(**upload))
                except ClientError as e:  # a retry whose first try's answer was lost: already gone
                    if error_code(e) != "NoSuchUpload":
                        raise
                n += 1
        if not page.get("IsTruncated"):
            break
        kw.update(KeyMarker=page.get("NextKeyMarker", ""), UploadIdMarker=page.get("NextUploadIdMarker", ""))
    if n:
        log.info("aborted %d stale multipart upload(s) of run %s", n, cat.run)
    return n


def recover(cat: Catalog) -> dict[str, int]:
    """Clean what crashed saves of THIS run left behind; call it once when a run (re)starts.

    Aborts every unfinished multipart upload and deletes data objects that no manifest references
    (a save killed before its manifest). Only call it from the run's single writer (rank 0 of a
    distributed job), at start-up: it would also cancel a save that is running right now elsewhere.
    """
    aborted = abort_stale_uploads(cat, older_than=0.0)
    referenced: set[str] = set()
    by_step: dict[str, list[str]] = {}
    for obj in cat.list_keys(cat.run_prefix + "step-"):
        k = obj["Key"]
        by_step.setdefault(k.rsplit("/", 1)[0], []).append(k)
    for sp, keys in by_step.items():
        mkey = sp + "/" + MANIFEST
        if mkey in keys:
            try:
                man = cat.manifest(int(STEP_RE.search(mkey).group(1)))  # type: ignore[union-attr]
                referenced.update(o["key"] for o in man["objects"])
                referenced.add(mkey)
            except S3CkptError:
                referenced.update(keys)  # unreadable manifest: leave everything for a human
    orphans = [k for keys in by_step.values() for k in keys if k not in referenced]
    cat.delete_keys(orphans)
    return {"aborted_uploads": aborted, "orphan_objects": len(orphans)}
