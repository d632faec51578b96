"""``torch.distributed.checkpoint`` (DCP) storage on the same bucket, layout and commit protocol.

Every rank streams its share of the checkpoint into its own object(s), multipart with a SHA-256 per part
(the same :class:`~s3ckpt.streams.S3Writer` as single-process saves: bounded memory). The coordinator (rank
0) receives every rank's write results (DCP gathers them; a rank that died never reports, so the gather
fails and nothing is committed) and only then writes the one manifest, with ``If-None-Match: *``:
DCP's metadata plus every rank's objects, sizes and part digests::

    <prefix>/<run>/step-000000100/__0_0.3f9a1c2e.distcp     rank 0's tensors and bytes
    <prefix>/<run>/step-000000100/__1_0.3f9a1c2e.distcp     rank 1's ...
    <prefix>/<run>/step-000000100/manifest.json             kind "dcp", written LAST by rank 0

Loading reads each item's byte range through :meth:`~s3ckpt.streams.S3Reader.read_ranges` (whole parts,
checked against their digests, fetched ahead in parallel), so a rank only fetches what its shards need,
with any world size: DCP's planner reshards. ``step="latest"`` is the newest verified DCP step, chosen once
by rank 0 for all ranks.

    from s3ckpt import dcp as s3dcp
    s3dcp.save({"model": model_sd, "optim": optim_sd}, step=100, run="my-run")   # every rank
    step = s3dcp.load(state_dict, run="my-run")                                     # every rank
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import datetime
import io
import re
import struct
import uuid
import zipfile
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed._shard._utils import narrow_tensor_by_index
from torch.distributed.checkpoint import metadata as dcp_md
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.planner import (
    LoadItemType,
    LoadPlan,
    LoadPlanner,
    SavePlan,
    SavePlanner,
    WriteItemType,
)
from torch.distributed.checkpoint.storage import StorageReader, StorageWriter, WriteResult
from torch.futures import Future

from s3ckpt import maintenance
from s3ckpt.catalog import Catalog, EventHook, warn_fallback
from s3ckpt.errors import IntegrityError, S3CkptError
from s3ckpt.s3 import S3Settings, max_call_seconds
from s3ckpt.store import writer_entry
from s3ckpt.streams import MiB, S3Writer, SpanView
from s3ckpt.tensorzip import load_into, save_tensor

KIND = "dcp"
_STEP_ID = re.compile(r"(?:.*/)?step-(\d+)/?|(\d+)")


@dataclasses.dataclass(frozen=True)
class S3Chunk:
    """Where one DCP item lives: an object of the step (by name) and the byte range inside it.

    ``entry`` travels only from a rank to the coordinator (the object's manifest entry, on the first item
    of each object); the metadata stored in the manifest has it stripped.
    """

    file: str
    offset: int
    length: int
    entry: dict[str, Any] | None = None


@dataclasses.dataclass(frozen=True)
class _RankTarget:
    """What the coordinator tells each rank through its plan: the attempt id and the rank's file prefix."""

    attempt: str
    prefix: str


_SAFE_METADATA = [dcp_md.Metadata, dcp_md.TensorStorageMetadata, dcp_md.BytesStorageMetadata,
                  dcp_md.ChunkStorageMetadata, dcp_md.TensorProperties, dcp_md.MetadataIndex,
                  dcp_md.StorageMeta, dcp_md._MEM_FORMAT_ENCODING, S3Chunk]


def encode_metadata(md: dcp_md.Metadata) -> str:
    buf = io.BytesIO()
    torch.save(md, buf)
    return base64.b64encode(buf.getvalue()).decode()


def decode_metadata(blob: str) -> dcp_md.Metadata:
    """DCP's metadata from a manifest, with the safe loader: only DCP's own metadata classes and ours."""
    with torch.serialization.safe_globals(_SAFE_METADATA):
        return torch.load(io.BytesIO(base64.b64decode(blob)), weights_only=True)


def describe_metadata(md: dcp_md.Metadata) -> dict[str, Any]:
    """For people (``s3ckpt show``): every entry of the state dict, its shape, dtype and number of shards."""
    out: dict[str, Any] = {}
    for fqn, m in sorted(md.state_dict_metadata.items()):
        if isinstance(m, dcp_md.TensorStorageMetadata):
            out[fqn] = {"shape": list(m.size), "dtype": str(m.properties.dtype).removeprefix("torch."),
                        "shards": len(m.chunks)}
        else:
            out[fqn] = {"bytes": True}
    return out


def parse_step(checkpoint_id: Any) -> int | None:
    """A step from DCP's ``checkpoint_id``: an int, ``"100"`` or a path ending in ``step-000000100``."""
    if isinstance(checkpoint_id, int):
        return checkpoint_id
    m = _STEP_ID.fullmatch(str(checkpoint_id))
    return int(m.group(1) or m.group(2)) if m else None


def _catalog(run: str, bucket: str | None, prefix: str | None, settings: S3Settings | None,
             on_event: EventHook | None, max_pool: int = 16) -> Catalog:
    return Catalog(bucket, prefix, run, settings=settings, on_event=on_event, max_pool=max_pool)


def _cpu_tensor(t: torch.Tensor) -> torch.Tensor:
    """What ``torch.save`` should see: a CPU tensor that owns exactly its bytes (a view would drag its
    whole storage along)."""
    t = t.detach().cpu()
    if t.untyped_storage().nbytes() != t.numel() * t.element_size() or not t.is_contiguous():
        t = t.contiguous().clone()
    return t


class _ByStep:
    """DCP's ``checkpoint_id`` is a step here (``dcp.save(sd, checkpoint_id=100, storage_writer=w)``)."""

    step: Any

    def reset(self, checkpoint_id: Any = None) -> None:
        if checkpoint_id is not None:
            step = parse_step(checkpoint_id)
            if step is None:
                raise S3CkptError(f"checkpoint_id {checkpoint_id!r} is not a step: pass an int step")
            self.step = step

    @classmethod
    def validate_checkpoint_id(cls, checkpoint_id: Any) -> bool:
        return parse_step(checkpoint_id) is not None


class S3StorageWriter(_ByStep, StorageWriter):
    """DCP ``StorageWriter``: every rank streams its items into multipart objects; rank 0 commits.

    Args:
        step: the step to commit (or pass ``checkpoint_id=<step>`` to ``dcp.save``).
        run, bucket, prefix, settings: where (as for :class:`~s3ckpt.store.CheckpointStore`).
        metadata: JSON-able dict stored in the manifest (step, epoch, data position...).
        keep_last: after the commit, rank 0 prunes to the newest N verified steps.
        part_size, max_inflight: multipart geometry; extra memory per rank <= (max_inflight + 1) * part_size.
        on_event: hook ``(event, info)``: ``part_uploaded``, ``rank_object_written``, ``rank_done``,
            ``manifest_written``.
    """

    def __init__(self, step: int | None = None, run: str = "default", *, bucket: str | None = None,
                 prefix: str | None = None, settings: S3Settings | None = None,
                 metadata: dict[str, Any] | None = None, keep_last: int | None = None,
                 part_size: int = 8 * MiB, max_inflight: int = 4, on_event: EventHook | None = None) -> None:
        super().__init__()
        self.step = step
        self.catalog = _catalog(run, bucket, prefix, settings, on_event, max_pool=2 * max_inflight + 4)
        self.metadata = dict(metadata or {})
        self.keep_last = keep_last
        self.part_size, self.max_inflight = part_size, max_inflight
        self.is_coordinator = False
        self._attempt: str | None = None

    # -- DCP protocol -----------------------------------------------------------------------------------
    def storage_meta(self) -> dcp_md.StorageMeta | None:
        return dcp_md.StorageMeta(checkpoint_id=self._where())

    def set_up_storage_writer(self, is_coordinator: bool, *args: Any, **kwargs: Any) -> None:
        if self.step is None:
            raise S3CkptError("no step to save: S3StorageWriter(step=N) or dcp.save(..., checkpoint_id=N)")
        self.is_coordinator = is_coordinator

    def prepare_local_plan(self, plan: SavePlan) -> SavePlan:
        return plan

    def prepare_global_plan(self, plans: list[SavePlan]) -> list[SavePlan]:
        self._attempt = uuid.uuid4().hex[:8]
        return [dataclasses.replace(p, storage_data=_RankTarget(self._attempt, f"__{i}_"))
                for i, p in enumerate(plans)]

    def write_data(self, plan: SavePlan, planner: SavePlanner) -> Future[list[WriteResult]]:
        target: _RankTarget = plan.storage_data
        rank = int(target.prefix.strip("_"))
        name = f"{target.prefix}0.{target.attempt}.distcp"
        results: list[WriteResult] = []
        fut: Future[list[WriteResult]] = Future()
        if plan.items:
            results = self._write_object(name, plan, planner, rank)
        self.catalog.emit("rank_done", rank=rank, items=len(results))
        fut.set_result(results)
        return fut

    def finish(self, metadata: dcp_md.Metadata, results: list[list[WriteResult]]) -> None:
        """Rank 0, after DCP gathered every rank's results: the manifest, written last, conditionally."""
        assert self.step is not None and self._attempt is not None
        entries: dict[str, dict[str, Any]] = {}
        storage: dict[dcp_md.MetadataIndex, S3Chunk] = {}
        for rank_results in results:
            for wr in rank_results:
                chunk: S3Chunk = wr.storage_data
                if chunk.entry is not None:
                    entries[chunk.file] = chunk.entry
                storage[wr.index] = dataclasses.replace(chunk, entry=None)
        lost = {c.file for c in storage.values()} - set(entries)
        if lost:  # a rank reported items in an object it never completed: never commit that
            raise IntegrityError(f"step {self.step}: no completed object reported for {sorted(lost)}")
        metadata.storage_data = storage
        objects = sorted(entries.values(), key=lambda e: e["key"])
        meta = {**self.metadata, "step": int(self.step)}
        manifest = self.catalog.new_manifest(self.step, KIND, self._attempt, objects, metadata=meta,
                                             world_size=len(results), dcp_metadata=encode_metadata(metadata))
        try:
            self.catalog.commit(manifest)
        except BaseException:  # this attempt's objects only, and never once its manifest is stored
            self.catalog.discard_attempt(self.step, self._attempt, [e["key"] for e in objects],
                                         maybe_committed=True)
            raise
        if self.keep_last is not None:
            maintenance.prune_after_commit(self.catalog, self.keep_last)

    # -- helpers ----------------------------------------------------------------------------------------
    def _where(self) -> str:
        return f"s3://{self.catalog.bucket}/{self.catalog.step_prefix(self.step or 0)}"

    def _write_object(self, name: str, plan: SavePlan, planner: SavePlanner, rank: int) -> list[WriteResult]:
        """Stream this rank's items, one after the other, into one multipart object."""
        cat = self.catalog
        key = cat.step_prefix(self.step or 0) + name
        spans = []
        with S3Writer(cat.client, cat.bucket, key, part_size=self.part_size, max_inflight=self.max_inflight,
                      call=cat.call,
                      on_part=lambda n, sz: cat.emit("part_uploaded", rank=rank, key=key, part=n,
                                                     size=sz)) as w:
            for item in plan.items:
                data = planner.resolve_data(item)
                offset = w.tell()
                if item.type == WriteItemType.BYTE_IO:
                    w.write(data.getbuffer())
                else:
                    save_tensor(_cpu_tensor(data), w)
                spans.append((item, offset, w.tell() - offset))
        cat.emit("rank_object_written", rank=rank, key=key, size=w.size)
        entry = writer_entry(name, w, KIND)
        return [WriteResult(index=item.index, size_in_bytes=length,
                            storage_data=S3Chunk(name, offset, length, entry if i == 0 else None))
                for i, (item, offset, length) in enumerate(spans)]


class S3StorageReader(_ByStep, StorageReader):
    """DCP ``StorageReader`` for a committed DCP step (any world size: DCP reshards).

    ``step="latest"`` is resolved when the reader is made: by rank 0, broadcast to every rank when a
    process group is up (so all ranks load the same step), as the newest DCP step that verifies.
    """

    def __init__(self, step: int | str = "latest", run: str = "default", *, bucket: str | None = None,
                 prefix: str | None = None, settings: S3Settings | None = None, max_workers: int = 8,
                 on_event: EventHook | None = None, _below: int | None = None) -> None:
        super().__init__()
        self.catalog = _catalog(run, bucket, prefix, settings, on_event, max_pool=max(16, max_workers + 4))
        self.max_workers = max_workers
        self.step = resolve_step(self.catalog, step, below=_below)
        self._objects: dict[str, dict[str, Any]] = {}
        self._storage: dict[dcp_md.MetadataIndex, S3Chunk] = {}

    def read_metadata(self) -> dcp_md.Metadata:
        man = self.catalog.manifest(self.step)
        if man["kind"] != KIND:
            raise S3CkptError(f"step {self.step} of run {self.catalog.run!r} is a {man['kind']!r} "
                              f"checkpoint: load it with CheckpointStore.load, not s3ckpt.dcp")
        self.catalog.verify(self.step, deep=False, manifest=man)  # sizes + server checksums first
        self._objects = {o["key"].rsplit("/", 1)[1]: o for o in man["objects"]}
        try:
            return decode_metadata(man["dcp_metadata"])
        except Exception as e:  # noqa: BLE001 - whatever a garbled blob raises: the step is damaged
            raise IntegrityError(f"step {self.step}: DCP metadata in the manifest is unreadable "
                                 f"({e})") from None

    def set_up_storage_reader(self, metadata: dcp_md.Metadata, is_coordinator: bool, *args: Any,
                              **kwargs: Any) -> None:
        self._storage = metadata.storage_data

    def prepare_local_plan(self, plan: LoadPlan) -> LoadPlan:
        return plan

    def prepare_global_plan(self, plans: list[LoadPlan]) -> list[LoadPlan]:
        return plans

    def read_data(self, plan: LoadPlan, planner: LoadPlanner) -> Future[None]:
        per_object: dict[str, list[Any]] = {}
        for req in plan.items:
            per_object.setdefault(self._storage[req.storage_index].file, []).append(req)
        for name, reqs in per_object.items():
            reqs.sort(key=lambda r: self._storage[r.storage_index].offset)  # neighbours share a part
            self.catalog.call(f"reading {name}", lambda n=name, rs=reqs: self._read_object(n, rs, planner),
                              retry=False)
        fut: Future[None] = Future()
        fut.set_result(None)
        return fut

    def _read_object(self, name: str, reqs: list[Any], planner: LoadPlanner) -> None:
        """Every item this rank needs from one object, in offset order: the reader fetches the parts
        ahead in parallel (each checked against its digest) while the items already there are
        deserialised."""
        chunks = [self._storage[req.storage_index] for req in reqs]
        with self.catalog.reader(self._objects[name]) as r:
            r.max_workers = self.max_workers
            with contextlib.closing(r.read_ranges([(c.offset, c.length) for c in chunks])) as views:
                for req, view in zip(reqs, views, strict=True):
                    self._deliver(req, planner, view)

    def _deliver(self, req: Any, planner: LoadPlanner, data: SpanView) -> None:
        if req.type == LoadItemType.BYTE_IO:
            planner.load_bytes(req, io.BytesIO(data.read()))
            return
        target = planner.resolve_tensor(req).detach()
        try:
            if not load_into(data, req.storage_offsets, req.lengths, target):  # the usual case: one copy
                data.seek(0)
                tensor = torch.load(data, map_location="cpu", weights_only=True)
                tensor = narrow_tensor_by_index(tensor, req.storage_offsets, req.lengths)
                if target.size() != tensor.size():
                    raise IntegrityError(f"step {self.step}: {req.storage_index.fqn} has shape "
                                         f"{tuple(tensor.size())}, expected {tuple(target.size())}")
                target.copy_(tensor)
        except (RuntimeError, EOFError, ValueError, zipfile.BadZipFile, struct.error) as e:
            raise IntegrityError(f"step {self.step}: item {req.storage_index.fqn} cannot be deserialised "
                                 f"({e})") from None
        planner.commit_tensor(req, target)


def resolve_step(cat: Catalog, step: int | str, *, below: int | None = None) -> int:
    """An explicit step as is; ``"latest"`` = newest verified DCP step (below ``below``), decided by rank 0
    and broadcast, so that every rank loads the same one even while another save commits."""
    if step != "latest":
        return int(step)
    found: list[Any] = [None]
    if not _distributed() or dist.get_rank() == 0:
        try:
            found[0] = cat.latest_verified(kind=KIND, below=below)
        except S3CkptError as e:
            found[0] = e
    if _distributed():
        dist.broadcast_object_list(found, src=0)
    if isinstance(found[0], BaseException):
        raise found[0]
    return int(found[0])


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _unwrap(e: CheckpointException) -> BaseException:
    """DCP wraps every rank's failure; when they are ours, give the user our one-line error instead."""
    ours = [exc for exc, _tb in e.failures.values() if isinstance(exc, S3CkptError)]
    return ours[0] if ours else e


def collective_timeout(settings: S3Settings | None = None,
                       transfer_seconds: float = 120.0) -> datetime.timedelta:
    """The process group's timeout for a job that checkpoints with s3ckpt.dcp (``init_process_group(...,
    timeout=collective_timeout())``): longer than the slowest failing S3 call (``max_call_seconds``) plus
    ``transfer_seconds`` of healthy transfer by one rank between two collectives (raise it for checkpoints
    of many GB). So a rank stuck on the network fails its S3 call first, and DCP hands that one-line error
    to every rank, instead of a peer's collective timing out with a gloo traceback."""
    return datetime.timedelta(seconds=max_call_seconds(settings or S3Settings()) + transfer_seconds)


# -- the two calls most users need ----------------------------------------------------------------------
def save(state_dict: dict[str, Any], step: int, *, run: str = "default", bucket: str | None = None,
         prefix: str | None = None, settings: S3Settings | None = None,
         metadata: dict[str, Any] | None = None, keep_last: int | None = None,
         planner: SavePlanner | None = None, **writer_kw: Any) -> None:
    """``dcp.save`` into the bucket on every rank; the step exists once rank 0 committed its manifest."""
    w = S3StorageWriter(step, run, bucket=bucket, prefix=prefix, settings=settings, metadata=metadata,
                        keep_last=keep_last, **writer_kw)
    try:
        dcp.save(state_dict, storage_writer=w, planner=planner)
    except CheckpointException as e:
        raise _unwrap(e) from None


def load(state_dict: dict[str, Any], step: int | str = "latest", *, run: str = "default",
         bucket: str | None = None, prefix: str | None = None, settings: S3Settings | None = None,
         planner: LoadPlanner | None = None, **reader_kw: Any) -> int:
    """``dcp.load`` in place on every rank; returns the step loaded.

    ``"latest"``: the newest DCP step that verifies; if reading it then fails its SHA-256 (on any rank),
    every rank warns and falls back to the previous one. An explicit step raises instead.
    """
    below: int | None = None
    while True:
        reader = S3StorageReader(step, run, bucket=bucket, prefix=prefix, settings=settings, _below=below,
                                 **reader_kw)
        try:
            dcp.load(state_dict, storage_reader=reader, planner=planner)
            return reader.step
        except CheckpointException as e:
            err = _unwrap(e)
            if step != "latest" or not isinstance(err, IntegrityError):
                raise err from None
            warn_fallback(reader.step, err)
            below = reader.step

