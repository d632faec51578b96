"""``CheckpointStore``: single-process checkpoints (``torch.save``/``torch.load``) on the commit protocol.

One object per top-level entry of ``state``, then the manifest (:class:`~s3ckpt.catalog.Catalog`)::

    <prefix>/<run>/step-000000100/model.3f9a1c2e.pt       (the 8 hex digits: this save attempt's id)
    <prefix>/<run>/step-000000100/optimizer.3f9a1c2e.pt
    <prefix>/<run>/step-000000100/meta.3f9a1c2e.json      metadata; hparams.3f9a1c2e.json for people
    <prefix>/<run>/step-000000100/manifest.json           written LAST, with If-None-Match: *

Data object names carry the attempt id, so two writers racing on one step never overwrite each other's
data: the conditional manifest PUT picks exactly one winner and the loser deletes its own objects.
``latest`` is found by listing manifests (never a pointer), newest first, and the first one that
verifies is used; a failing one is skipped with a warning.
"""

from __future__ import annotations

import os
import re
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, is_dataclass
from typing import Any

from s3ckpt import maintenance
from s3ckpt.catalog import MANIFEST, Catalog, CheckpointInfo, EventHook
from s3ckpt.errors import IntegrityError, S3CkptError
from s3ckpt.s3 import S3Settings
from s3ckpt.streams import MiB, S3Writer

NAME_RE = re.compile(r"[A-Za-z0-9_.-]+")


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


def writer_entry(name: str, w: S3Writer, fmt: str) -> dict[str, Any]:
    """The manifest entry of one streamed object (shared with the DCP writer)."""
    entry = {"name": name, "key": w.key, "size": w.size, "part_size": w.part_size,
             "part_sha256": w.part_sha256, "s3_checksum_sha256": w.s3_checksum, "format": fmt}
    if w.sha256:
        entry["sha256"] = w.sha256
    return entry


class CheckpointStore:
    """Save / load / list / verify checkpoints of one training run in an S3 bucket (one process).

    It holds a :class:`~s3ckpt.catalog.Catalog` (``self.catalog``: naming, listing, verification, the commit),
    as the DCP writer and reader do, and offers the catalog's read-only queries for convenience.

    Args (besides :class:`~s3ckpt.catalog.Catalog`'s bucket, prefix, run, settings, client, on_event):
        part_size, max_inflight: multipart geometry; extra RAM while saving is at most
            ``(max_inflight + 1) * part_size``.
        stale_after: seconds after which an unfinished multipart upload of this run counts as left over
            by a crashed save and is aborted at the next save.
        whole_object_sha256: also record each object's plain SHA-256 (``sha256sum``-able downloads).
    """

    def __init__(self, bucket: str | None = None, prefix: str | None = None, run: str = "default", *,
                 settings: S3Settings | None = None, client: Any = None, part_size: int = 8 * MiB,
                 max_inflight: int = 5, stale_after: float = 3600.0, on_event: EventHook | None = None,
                 whole_object_sha256: bool = False, check: bool = True) -> None:
        self.catalog = Catalog(bucket, prefix, run, settings=settings, client=client,
                               max_pool=max(16, 2 * max_inflight + 4), check=check, on_event=on_event)
        self.part_size, self.max_inflight, self.stale_after = part_size, max_inflight, stale_after
        self.whole_object_sha256 = whole_object_sha256
        self._async: ThreadPoolExecutor | None = None
        self._pending: Future[CheckpointInfo] | None = None

    # ------------------------------------------------------------------ the catalog's naming and queries
    @property
    def settings(self) -> S3Settings:
        return self.catalog.settings

    @property
    def client(self) -> Any:
        return self.catalog.client

    @property
    def bucket(self) -> str:
        return self.catalog.bucket

    @property
    def run(self) -> str:
        return self.catalog.run

    @property
    def run_prefix(self) -> str:
        return self.catalog.run_prefix

    @property
    def on_event(self) -> EventHook | None:
        return self.catalog.on_event

    @on_event.setter
    def on_event(self, hook: EventHook | None) -> None:
        self.catalog.on_event = hook

    def step_prefix(self, step: int) -> str:
        return self.catalog.step_prefix(step)

    def committed_steps(self) -> list[int]:
        return self.catalog.committed_steps()

    def manifest(self, step: int) -> dict[str, Any]:
        return self.catalog.manifest(step)

    def list(self) -> list[CheckpointInfo]:
        return self.catalog.list()

    def verify(self, step: int, *, deep: bool = True) -> CheckpointInfo:
        return self.catalog.verify(step, deep=deep)

    def verified_steps(self, deep: bool = False) -> list[int]:
        return self.catalog.verified_steps(deep)

    def latest_verified(self, kind: str = "torch") -> int:
        return self.catalog.latest_verified(kind)

    def list_keys(self, prefix: str) -> Iterator[dict[str, Any]]:
        return self.catalog.list_keys(prefix)

    def delete_keys(self, keys: list[str]) -> None:
        self.catalog.delete_keys(keys)

    # ------------------------------------------------------------------ save
    def save(self, step: int, state: dict[str, Any], metadata: dict[str, Any] | None = None, *,
             keep_last: int | None = None, blocking: bool = True) -> CheckpointInfo | Future[CheckpointInfo]:
        """Commit ``state`` as step ``step``: every entry streamed to its own object, then the manifest.

        ``state`` maps names to anything ``torch.save`` takes (state_dicts, tensors, RNG states).
        ``metadata`` must be JSON-able (step/epoch/hyperparameters/data position...); ``metadata["hparams"]``
        is also written as ``hparams.<id>.json`` for people. With ``keep_last=N`` older steps are pruned,
        only after this one verified. With ``blocking=False`` the state is copied to CPU and saved by a
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
        bad = [n for n in state if not NAME_RE.fullmatch(str(n))]
        if bad:
            raise S3CkptError(f"invalid state entry name {bad[0]!r}: use letters, digits, '_', '.', '-'")
        self.abort_stale_uploads(older_than=self.stale_after)
        attempt = uuid.uuid4().hex[:8]
        sp = self.step_prefix(step)
        meta = _jsonable(dict(metadata or {}))
        meta.setdefault("step", int(step))
        objects: list[dict[str, Any]] = []
        written: list[str] = []
        committing = False
        t0 = time.perf_counter()
        self.catalog.emit("save_started", step=step, attempt=attempt)
        try:
            for name, obj in state.items():
                key = f"{sp}{name}.{attempt}.pt"
                written.append(key)
                with self.writer(key) as w:
                    torch.save(obj, w)
                objects.append(writer_entry(name, w, "torch"))
                self.catalog.emit("object_written", key=key, size=w.size)
            json_objs = {f"meta.{attempt}.json": meta}
            if "hparams" in meta:
                json_objs[f"hparams.{attempt}.json"] = meta["hparams"]
            for fname, doc in json_objs.items():
                written.append(sp + fname)
                objects.append(self.catalog.put_json(sp + fname, doc, name=fname.split(".")[0]))
            self.catalog.emit("objects_done", step=step, keys=list(written))
            committing = True
            man = self.catalog.new_manifest(step, "torch", attempt, objects, metadata=meta)
            info = self.catalog.commit(man)
        except BaseException:
            # only our own attempt's objects (never someone else's data), and never once committed
            self.catalog.discard_attempt(step, attempt, written, maybe_committed=committing)
            raise
        self.catalog.emit("saved", step=step, seconds=time.perf_counter() - t0)
        if keep_last is not None:
            maintenance.prune_after_commit(self.catalog, keep_last)
        return info

    def writer(self, key: str, on_part: Callable[[int, int], None] | None = None) -> S3Writer:
        """A streaming writer into ``key`` with this store's geometry; every request through :meth:`call`."""
        emit = self.catalog.emit
        return S3Writer(self.client, self.bucket, key, part_size=self.part_size,
                        max_inflight=self.max_inflight, whole_sha256=self.whole_object_sha256,
                        call=self.catalog.call,
                        on_part=on_part or (lambda n, sz: emit("part_uploaded", key=key, part=n, size=sz)))

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
        return self.catalog.newest(lambda s: self._load_step(s, map_location, parts, weights_only))

    def _load_step(self, step: int, map_location: Any, parts: list[str] | None,
                   weights_only: bool) -> LoadedCheckpoint:
        import torch

        man = self.manifest(step)
        if man["kind"] != "torch":
            raise S3CkptError(f"step {step} of run {self.run!r} is a {man['kind']!r} checkpoint: load it "
                              f"with s3ckpt.dcp.load (every rank), not CheckpointStore.load")
        # cheap: sizes + server checksums, before reading GBs
        self.catalog.verify(step, deep=False, manifest=man)
        state: dict[str, Any] = {}
        for o in man["objects"]:
            if o["format"] != "torch" or (parts is not None and o["name"] not in parts):
                continue
            with self.catalog.reader(o) as r:
                try:
                    obj = self.catalog.call(f"reading {o['key']}", lambda r=r: torch.load(
                        r, map_location=map_location, weights_only=weights_only), retry=False)
                except (RuntimeError, EOFError, ValueError) as e:  # garbled zip/pickle: integrity, not a bug
                    if "weights_only" in str(e) or "Unsupported global" in str(e):
                        raise
                    raise IntegrityError(f"step {step}: {o['key']} cannot be deserialised ({e})") from None
                self.catalog.call(f"verifying {o['key']}", r.verify, retry=False)
            state[o["name"]] = obj
            self.catalog.emit("object_loaded", key=o["key"], size=o["size"])
        return LoadedCheckpoint(step=step, state=state, metadata=man.get("metadata", {}), manifest=man)

    def download(self, step: int, dest: str) -> list[str]:
        """Copy every object of a committed step (and its manifest) to a local folder; every byte is checked
        by the same verifying reader as :meth:`load`. Returns the file paths."""
        man = self.manifest(step)
        os.makedirs(dest, exist_ok=True)
        paths = []
        for o in man["objects"]:
            path = os.path.join(dest, o["key"].rsplit("/", 1)[1])
            with self.catalog.reader(o) as r, open(path, "wb") as f:
                def copy(r=r, f=f) -> None:
                    buf = bytearray(self.part_size)
                    while n := r.readinto(buf):
                        f.write(memoryview(buf)[:n])
                    r.verify()
                self.catalog.call(f"downloading {o['key']}", copy, retry=False)
            paths.append(path)
        mkey = self.step_prefix(step) + MANIFEST
        path = os.path.join(dest, MANIFEST)
        self.catalog.call(f"downloading {mkey}", lambda: self.client.download_file(self.bucket, mkey, path))
        paths.append(path)
        return paths

    # ------------------------------------------------------------------ maintenance (see s3ckpt.maintenance)
    def delete(self, step: int) -> int:
        return maintenance.delete(self.catalog, step)

    def prune(self, keep_last: int, *, deep: bool = False) -> list[int]:
        return maintenance.prune(self.catalog, keep_last, deep=deep)

    def abort_stale_uploads(self, older_than: float = 0.0) -> int:
        return maintenance.abort_stale_uploads(self.catalog, older_than)

    def recover(self) -> dict[str, int]:
        return maintenance.recover(self.catalog)
