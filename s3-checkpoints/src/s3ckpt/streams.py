"""File-like streaming objects between ``torch.save``/``torch.load`` and S3, in the shape of AWS's S3
connector for PyTorch (``S3Writer`` / ``S3Reader``).

Why: a checkpoint can be larger than the RAM left over by training. ``torch.save(obj, S3Writer(...))`` never
builds the serialised bytes in memory: each ``write`` is copied into a part buffer; a full part is handed to
a small thread pool that hashes it (SHA-256, kept for the manifest) and uploads it with that digest as its
``x-amz-checksum-sha256`` (the server checks it and stores the composite). At most ``max_inflight`` parts
exist at once, so the extra memory is bounded by ``(max_inflight + 1) * part_size`` whatever the checkpoint
size. Hashing per part, in the upload threads, costs one SHA-256 pass spread over the cores, the same work
boto3 does to sign a plain upload; the optional whole-object SHA-256 costs a second, sequential pass.

``S3Reader`` serves ``torch.load``'s small reads from a read-ahead window and each tensor's big read with
parallel ranged GETs written straight into the tensor's memory, and hashes every byte it delivers in
order. ``verify()`` then completes the SHA-256 over whatever was not read in order (usually only the zip's
central directory at the end), so a load is also a full integrity check without reading the object twice.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import io
import mmap
import queue
from bisect import bisect_right
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from itertools import accumulate
from typing import Any

from botocore.exceptions import ClientError

from s3ckpt.errors import IntegrityError, NetworkError, S3CkptError

# How the streams run each S3 request: ``call(what, fn, retry=True)`` (``Catalog.call``: retries and the
# one-line errors of s3ckpt.s3.s3_call). The default just calls, for use without a catalog.
Caller = Callable[..., Any]


def direct_call(what: str, fn: Callable[[], Any], retry: bool = True) -> Any:
    return fn()


class CutShort(ConnectionError):
    """A response body ended before its Content-Length: the connection broke (or the server aborted)."""

    def __init__(self, at: int) -> None:
        super().__init__(f"response body ended at byte {at}")
        self.at = at

MiB = 1024 * 1024
MIN_PART = 5 * MiB  # S3's minimum part size (all but the last part)


def b64sha256(data: bytes | memoryview) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


class S3Writer(io.RawIOBase):
    """Write-only stream into one S3 object; multipart once the data exceeds one part.

    Call :meth:`close` to commit (complete the upload) or :meth:`abort` to throw it away; as a context
    manager it commits when the block succeeds and aborts when it raises. Every request goes through
    ``call`` (retries, one-line errors); a retried CompleteMultipartUpload that finds its upload already
    completed checks the object (size, checksum) instead of failing. After ``close``,
    ``size``, ``part_sha256`` (hex digest of each part), ``s3_checksum`` (what S3 stores: base64 SHA-256,
    composite ``...-N`` for multipart) and ``sha256`` (whole object: always for a one-part object, for
    multipart only with ``whole_sha256=True``, else "") are set.
    """

    def __init__(self, client: Any, bucket: str, key: str, *, part_size: int = 8 * MiB, max_inflight: int = 4,
                 on_part: Callable[[int, int], None] | None = None, whole_sha256: bool = False,
                 call: Caller = direct_call) -> None:
        super().__init__()
        self._call = call
        if part_size < MIN_PART:
            raise ValueError(f"part_size must be >= {MIN_PART} bytes (S3 minimum), got {part_size}")
        self.client, self.bucket, self.key = client, bucket, key
        self.part_size, self.max_inflight, self.on_part = part_size, max_inflight, on_part
        # A fixed pool of part buffers, recycled after each upload: bounded memory, no allocation churn.
        self._free: queue.Queue[bytearray] = queue.Queue()
        self._nbufs = 0
        self._buf = self._take_buffer()
        self._fill = 0
        self._sha = hashlib.sha256() if whole_sha256 else None
        self._size = 0
        self._upload_id: str | None = None
        self._parts: list[Future[dict[str, Any]]] = []
        self._pool: ThreadPoolExecutor | None = None
        # The whole-object SHA-256 must see the parts in order: one thread does it, beside the uploads.
        self._hasher: ThreadPoolExecutor | None = None
        self._done = False
        self._error: BaseException | None = None  # the first upload error, raised again by every write
        self.size = 0
        self.sha256 = ""
        self.part_sha256: list[str] = []
        self.s3_checksum = ""

    def _take_buffer(self) -> bytearray:
        try:
            return self._free.get_nowait()
        except queue.Empty:
            pass
        if self._nbufs < self.max_inflight + 1:
            self._nbufs += 1
            return bytearray(self.part_size)
        while True:  # all buffers in flight: wait for an upload to finish (or fail)
            try:
                return self._free.get(timeout=0.5)
            except queue.Empty:
                self._raise_failed()

    def _raise_failed(self) -> None:
        for f in self._parts:
            if f.done() and f.exception() is not None:
                raise f.exception()  # type: ignore[misc]

    def __enter__(self) -> S3Writer:
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if exc_type is None:
            self.close()
            return
        self.abort()
        if self._error is not None and exc is not self._error:
            # torch.save's zip writer, failing to finish after our write raised, hides the real cause
            raise self._error from None

    # -- io.RawIOBase protocol -------------------------------------------------------------------------
    def writable(self) -> bool:
        return True

    def tell(self) -> int:
        """Bytes written so far (the stream is not seekable: this is where the next byte will go)."""
        return self._size

    def write(self, b: Any) -> int:  # type: ignore[override]
        if self._error is not None:
            raise self._error
        try:
            return self._write(b)
        except BaseException as e:
            self._error = e
            raise

    def _write(self, b: Any) -> int:
        mv = memoryview(b).cast("B")
        n = len(mv)
        self._size += n
        pos = 0
        while pos < n:
            take = min(self.part_size - self._fill, n - pos)
            self._buf[self._fill:self._fill + take] = mv[pos:pos + take]
            self._fill += take
            pos += take
            if self._fill == self.part_size:
                self._submit_part()
        return n

    def flush(self) -> None:  # parts go out when full; nothing to do until close
        return None

    # -- multipart machinery -----------------------------------------------------------------------------
    def _submit_part(self) -> None:
        if self._upload_id is None:
            # a retry after a lost answer may leave one empty upload behind: abort_stale_uploads' job
            resp = self._call(f"starting the upload of {self.key}",
                              lambda: self.client.create_multipart_upload(Bucket=self.bucket, Key=self.key,
                                                                          ChecksumAlgorithm="SHA256"))
            self._upload_id = resp["UploadId"]
            self._pool = ThreadPoolExecutor(self.max_inflight, thread_name_prefix="s3ckpt-part")
            if self._sha is not None:
                self._hasher = ThreadPoolExecutor(1, thread_name_prefix="s3ckpt-sha")
        self._raise_failed()  # surface an upload error early instead of after the whole stream
        buf, fill = self._buf, self._fill
        number = len(self._parts) + 1
        assert self._pool is not None
        hashed = self._hasher.submit(self._sha.update, memoryview(buf)[:fill]) if self._hasher and self._sha \
            else None
        self._parts.append(self._pool.submit(self._upload_part, number, buf, fill, hashed))
        self._buf, self._fill = self._take_buffer(), 0

    def _upload_part(self, number: int, buf: bytearray, fill: int,
                     hashed: Future[None] | None) -> dict[str, Any]:
        try:
            body = memoryview(buf)[:fill]
            digest = hashlib.sha256(body).digest()
            ck = base64.b64encode(digest).decode()
            data = bytes(body) if fill < len(buf) else buf
            resp = self._call(f"uploading part {number} of {self.key}", lambda: self.client.upload_part(
                Bucket=self.bucket, Key=self.key, UploadId=self._upload_id, PartNumber=number, Body=data,
                ChecksumSHA256=ck))
            if self.on_part is not None:
                self.on_part(number, fill)
            return {"PartNumber": number, "ETag": resp["ETag"], "ChecksumSHA256": ck, "_digest": digest}
        finally:
            if hashed is not None:
                hashed.result()  # the whole-object hash must be done with this buffer before reuse
            self._free.put(buf)

    def close(self) -> None:
        """Commit: upload the tail, complete the multipart upload (or one PUT for a small object)."""
        if self._done:
            return
        try:
            if self._upload_id is None:
                data = bytes(memoryview(self._buf)[:self._fill])
                self._buf = bytearray()
                digest = hashlib.sha256(data).digest()
                ck = base64.b64encode(digest).decode()
                self._call(f"uploading {self.key}", lambda: self.client.put_object(
                    Bucket=self.bucket, Key=self.key, Body=data, ChecksumSHA256=ck))
                self.s3_checksum = ck
                self._sha = hashlib.sha256(data)
                self.part_sha256 = [digest.hex()]
            else:
                if self._fill or not self._parts:
                    self._submit_part()
                self._buf = bytearray()
                parts = [f.result() for f in self._parts]
                digests = [p.pop("_digest") for p in parts]
                self.part_sha256 = [d.hex() for d in digests]
                composite = hashlib.sha256(b"".join(digests)).digest()
                self.s3_checksum = f"{base64.b64encode(composite).decode()}-{len(parts)}"
                self._complete(parts)
            self.size = self._size
            self.sha256 = self._sha.hexdigest() if self._sha is not None else ""
            self._done = True
        except BaseException:
            self.abort()
            raise
        finally:
            self._release()
            super().close()

    def _complete(self, parts: list[dict[str, Any]]) -> None:
        """CompleteMultipartUpload, retried; ``NoSuchUpload`` means an earlier attempt completed it (its
        answer was lost) or someone aborted it: the object itself says which."""
        try:
            self._call(f"completing the upload of {self.key}", lambda: self.client.complete_multipart_upload(
                Bucket=self.bucket, Key=self.key, UploadId=self._upload_id, MultipartUpload={"Parts": parts}))
            return
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") != "NoSuchUpload":
                raise
        try:
            head = self._call(f"checking {self.key}", lambda: self.client.head_object(
                Bucket=self.bucket, Key=self.key, ChecksumMode="ENABLED"))
        except ClientError:
            head = {}
        if int(head.get("ContentLength", -1)) == self._size and \
                head.get("ChecksumSHA256") == self.s3_checksum:
            self._upload_id = None  # completed: nothing to abort
            return
        raise S3CkptError(f"the multipart upload of s3://{self.bucket}/{self.key} was aborted by someone "
                          f"else (another process's recover?) before it completed; save again")

    def _release(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        if self._hasher is not None:
            self._hasher.shutdown(wait=True)
            self._hasher = None
        self._buf = bytearray()
        while not self._free.empty():
            self._free.get_nowait()

    def abort(self) -> None:
        """Throw the upload away (best effort): no orphan multipart upload keeps the parts' storage."""
        self._done = True
        if self._pool is not None:
            for f in self._parts:
                f.cancel()
        self._release()
        if self._upload_id is not None:
            upload_id, self._upload_id = self._upload_id, None
            try:
                self._call(f"aborting the upload of {self.key}", lambda: self.client.abort_multipart_upload(
                    Bucket=self.bucket, Key=self.key, UploadId=upload_id))
            except Exception:  # noqa: BLE001 - cleanup must not mask the original error
                pass
        if not self.closed:
            super().close()


class _SeekableRaw(io.RawIOBase):
    """A read-only raw stream of ``_size`` bytes at ``_pos``: the seek and tell both readers share."""

    _pos: int
    _size: int

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        starts = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}
        if whence not in starts:
            raise ValueError(f"bad whence {whence}")
        pos = starts[whence] + offset
        if pos < 0:
            raise ValueError("negative seek position")
        self._pos = pos
        return pos


class S3Reader(_SeekableRaw):
    """Seekable read-only stream over one S3 object, for ``torch.load``, that verifies what it reads.

    ``torch.load`` does a few small reads (zip headers, the pickle) and one big ``readinto`` per tensor,
    straight into the tensor's memory. Small reads are served from a 256 KiB read-ahead window (one ranged
    GET); a big read is split at the object's part boundaries and fetched by ``max_workers`` threads in
    parallel, each writing directly into the destination buffer (no intermediate copy of the tensor).

    Integrity: the manifest holds the SHA-256 of every part (the digests S3 itself checked at upload). A
    worker that fetched a whole part hashes it right away, in parallel with the others; the partial parts
    at the edges of a read are hashed in order by the reader. :meth:`verify` re-fetches the few parts not
    covered yet (typically the zip's central directory) and raises :class:`IntegrityError` on any mismatch.
    Without part digests it checks the whole-object SHA-256 the same way (one part = the object).

    Network versus damage: a ranged GET whose connection breaks, stalls or whose body ends before its own
    Content-Length is retried (``call``) and, if that persists, raises :class:`NetworkError`: nothing is
    concluded about the object. :class:`IntegrityError` (damaged) is only a complete answer that is wrong:
    a digest mismatch, a server that says the object is shorter or longer than the manifest, or a server
    that cuts its answer at the very same byte on every attempt (MinIO aborting a read whose bitrot check
    failed: a network fault does not repeat itself to the byte).
    """

    WINDOW = 256 * 1024
    READ_CHUNK = 1 * MiB

    def __init__(self, client: Any, bucket: str, key: str, size: int, expected_sha256: str | None = None,
                 *, part_size: int | None = None,
                 part_sha256: list[str] | None = None, max_workers: int = 8,
                 call: Caller = direct_call) -> None:
        super().__init__()
        self._call = call
        self.client, self.bucket, self.key, self._size = client, bucket, key, size
        if part_sha256 and part_size:
            self._psize, self._digests = part_size, list(part_sha256)
        else:  # whole object as one "part"
            self._psize, self._digests = max(size, 1), [expected_sha256] if expected_sha256 else []
        self._check = bool(self._digests)
        nparts = max(1, -(-size // self._psize))
        if self._check and len(self._digests) != nparts:
            raise IntegrityError(f"s3://{bucket}/{key}: manifest lists {len(self._digests)} part digests for "
                                 f"{nparts} parts")
        self._ok = [False] * nparts
        self._cur_part = 0  # the part the in-order hasher is inside
        self._cur_sha = hashlib.sha256()
        self._hashed = 0  # bytes [0, _hashed) were hashed in order (or verified as whole parts)
        self.max_workers = max_workers
        self._pos = 0
        self._win = b""
        self._win_start = 0
        self._pool: ThreadPoolExecutor | None = None

    # -- verification bookkeeping ------------------------------------------------------------------------
    def _part_end(self, i: int) -> int:
        return min(self._size, (i + 1) * self._psize)

    def _mismatch(self, i: int) -> IntegrityError:
        return IntegrityError(f"s3://{self.bucket}/{self.key}: SHA-256 mismatch in bytes "
                              f"{i * self._psize}-{self._part_end(i)} (part {i + 1}): corrupt object")

    def _check_part(self, i: int, digest: str) -> None:
        if self._check and digest != self._digests[i]:
            raise self._mismatch(i)
        self._ok[i] = True

    def _feed(self, mv: memoryview) -> None:
        """In-order hashing of bytes starting at ``_hashed``, part by part."""
        while len(mv):
            i = self._cur_part
            take = min(len(mv), self._part_end(i) - self._hashed)
            self._cur_sha.update(mv[:take])
            self._hashed += take
            mv = mv[take:]
            if self._hashed == self._part_end(i):
                self._check_part(i, self._cur_sha.hexdigest())
                self._cur_part, self._cur_sha = i + 1, hashlib.sha256()

    def _account(self, start: int, mv: memoryview) -> None:
        """Bytes delivered at ``start``: continue the in-order hash if they follow it (overlaps trimmed,
        small skipped gaps such as zip padding taken from the read-ahead window)."""
        end = start + len(mv)
        if end <= self._hashed:
            return
        if start > self._hashed:
            w0, w1 = self._win_start, self._win_start + len(self._win)
            if not (w0 <= self._hashed and start <= w1):
                return  # a real jump: verify() fetches the parts not covered
            self._feed(memoryview(self._win)[self._hashed - w0:start - w0])
        self._feed(mv[self._hashed - start:])

    def _whole_part_done(self, i: int) -> None:
        """A worker verified part ``i`` completely: let the in-order hasher jump over it."""
        if self._hashed == i * self._psize and self._cur_part == i:
            self._hashed = self._part_end(i)
            self._cur_part, self._cur_sha = i + 1, hashlib.sha256()

    # -- fetching -----------------------------------------------------------------------------------------
    def _truncated(self, at: int) -> IntegrityError:
        return IntegrityError(f"s3://{self.bucket}/{self.key}: object ended at byte {at}, manifest says "
                              f"{self._size} bytes (truncated or replaced)")

    def _fetch_into(self, start: int, mv: memoryview, part: int | None) -> None:
        """Ranged GET of ``[start, start+len(mv))`` written directly into ``mv`` (worker thread), retried
        on network failures; if it is the whole part ``part``, hash and check it here, in parallel with the
        other workers."""
        cuts: list[int | None] = []

        def attempt() -> None:
            try:
                self._fetch_once(start, mv)
            except CutShort as e:
                cuts.append(e.at)
                raise
            except Exception:
                cuts.append(None)
                raise

        what = f"reading s3://{self.bucket}/{self.key} bytes {start}-{start + len(mv)}"
        try:
            self._call(what, attempt)
        except NetworkError:
            if len(cuts) > 1 and cuts[0] is not None and cuts.count(cuts[0]) == len(cuts):
                raise IntegrityError(f"s3://{self.bucket}/{self.key}: the server stops sending at byte "
                                     f"{cuts[0]} on every attempt ({len(cuts)}): stored object damaged "
                                     f"(its bitrot check fails)") from None
            raise
        if part is not None:
            self._check_part(part, hashlib.sha256(mv).hexdigest())

    def _fetch_once(self, start: int, mv: memoryview) -> None:
        try:
            resp = self.client.get_object(Bucket=self.bucket, Key=self.key,
                                          Range=f"bytes={start}-{start + len(mv) - 1}")
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") == "InvalidRange":  # the object ends before start
                raise self._truncated(start) from None
            raise
        body = resp["Body"]
        try:
            if int(resp.get("ContentLength", len(mv))) < len(mv):  # a complete answer: the object is short
                raise self._truncated(start + int(resp["ContentLength"]))
            # Straight from the socket into the destination when the stack allows it (http.client's
            # readinto under urllib3); otherwise 1 MiB reads and a copy.
            fp = getattr(getattr(body, "_raw_stream", None), "_fp", None)
            readinto = getattr(fp, "readinto", None)
            got = 0
            while got < len(mv):
                if readinto is not None:
                    try:
                        n = readinto(mv[got:got + min(4 * self.READ_CHUNK, len(mv) - got)])
                    except http.client.IncompleteRead:
                        n = 0
                else:
                    chunk = body.read(min(self.READ_CHUNK, len(mv) - got))
                    n = len(chunk)
                    mv[got:got + n] = chunk
                if not n:
                    raise CutShort(start + got)
                got += n
        finally:
            body.close()

    def _parallel(self, start: int, mv: memoryview) -> None:
        """Fill ``mv`` from ``start``: pieces split at part boundaries, fetched in parallel; whole parts
        are verified by the workers, edge pieces by the in-order hasher."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.max_workers, thread_name_prefix="s3ckpt-get")
        spans = []
        o = 0
        while o < len(mv):
            a = start + o
            i = a // self._psize
            n = min(len(mv) - o, self._part_end(i) - a)
            whole = a == i * self._psize and n == self._part_end(i) - a and not self._ok[i]
            spans.append((o, n, i if whole else None))
            o += n
        futs = [self._pool.submit(self._fetch_into, start + o, mv[o:o + n], part) for o, n, part in spans]
        try:
            for (o, n, part), f in zip(spans, futs, strict=True):
                f.result()
                if part is not None:
                    self._whole_part_done(part)
                else:
                    self._account(start + o, mv[o:o + n])
        except BaseException:
            for f in futs:
                f.cancel()
            for f in futs:  # no worker may still write into mv once we return
                if not f.cancelled():
                    try:
                        f.result()
                    except BaseException:  # noqa: BLE001, S110
                        pass
            raise

    # -- reading ------------------------------------------------------------------------------------------
    def readinto(self, b: Any) -> int:  # type: ignore[override]
        mv = memoryview(b).cast("B")
        want = min(len(mv), max(0, self._size - self._pos))
        if want == 0:
            return 0
        mv = mv[:want]
        done = 0
        # 1) whatever the read-ahead window already holds
        off = self._pos - self._win_start
        if 0 <= off < len(self._win):
            n = min(want, len(self._win) - off)
            mv[:n] = self._win[off:off + n]
            done = n
        if done:
            self._account(self._pos, mv[:done])
        rest = want - done
        start = self._pos + done
        if rest >= 2 * self.WINDOW:
            # 2a) big read (a tensor): parallel ranged GETs straight into the caller's buffer
            self._parallel(start, mv[done:])
        elif rest > 0:
            # 2b) small read: refill the window. zip data descriptors leave a few unread bytes after
            # each tensor: start the window at the hash position when it is close, to step over them.
            fetch = self._hashed if 0 < start - self._hashed <= self.WINDOW // 2 else start
            end = min(self._size, start + max(self.WINDOW, rest))
            data = bytearray(end - fetch)
            self._fetch_into(fetch, memoryview(data), None)
            self._win, self._win_start = bytes(data), fetch
            mv[done:] = data[start - fetch:start - fetch + rest]
            self._account(start, mv[done:])
        self._pos += want
        return want

    def read_ranges(self, ranges: Sequence[tuple[int, int]], ahead: int | None = None) -> Iterator[SpanView]:
        """For each ``(start, length)`` of ``ranges`` (sorted by start), a :class:`SpanView` of those bytes,
        yielded only once every part they touch was fetched whole and checked against its digest: random
        access (a rank reading only its shards) without giving up verification.

        Each part is fetched once, by the worker threads straight into a part buffer, in the order the
        ranges need them and up to ``ahead`` parts (default ``max_workers``) beyond the ones the current
        range spans, so the next ranges download while the caller works on this one. A view is valid until
        the caller asks for the next one: it is closed then, and the buffers of the parts no later range
        needs are reused. Memory: ``ahead`` parts plus the parts of the range being read."""
        spans = []
        for start, length in ranges:
            if start < 0 or length < 0 or start + length > self._size:
                raise self._truncated(self._size)
            first = start // self._psize
            spans.append((first, (start + length - 1) // self._psize if length else first - 1))
        last_use = {i: k for k, (first, last) in enumerate(spans) for i in range(first, last + 1)}
        order = sorted(last_use)
        ahead = self.max_workers if ahead is None else max(1, ahead)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.max_workers, thread_name_prefix="s3ckpt-get")
        held: dict[int, tuple[memoryview, Future[None]]] = {}
        free: list[mmap.mmap] = []  # buffers of dropped parts: no new page faults
        nxt = 0  # order[nxt] is the next part to fetch

        def fetch(i: int) -> None:
            # anonymous memory: its pages are zeroed by the kernel as the worker first writes them, not
            # memset by this thread first (as a bytearray would be)
            buf = free.pop() if free else mmap.mmap(-1, self._psize)
            part = memoryview(buf)[:self._part_end(i) - i * self._psize]
            held[i] = part, self._pool.submit(self._fetch_into, i * self._psize, part, i)

        try:
            for k, ((start, length), (first, last)) in enumerate(zip(ranges, spans, strict=True)):
                while nxt < len(order) and (order[nxt] <= last or len(held) < ahead + last - first + 1):
                    fetch(order[nxt])
                    nxt += 1
                segments = []
                for i in range(first, last + 1):
                    part, fut = held[i]
                    fut.result()
                    lo = start - i * self._psize if i == first else 0
                    hi = start + length - i * self._psize if i == last else len(part)
                    segments.append(part[lo:hi])
                view = SpanView(segments)
                yield view
                view.close()  # raises if the caller still holds a buffer of it: never reuse that one
                for i in [i for i in held if last_use[i] <= k]:
                    part = held.pop(i)[0]
                    free.append(part.obj)
                    part.release()
        finally:
            for _part, fut in held.values():
                fut.cancel()
            for _part, fut in held.values():  # no worker outlives the read (its error, if any, was raised)
                if not fut.cancelled():
                    try:
                        fut.result()
                    except BaseException:  # noqa: BLE001, S110
                        pass

    def read(self, size: int = -1) -> bytes:  # type: ignore[override]
        if size is None or size < 0:
            size = self._size - self._pos
        buf = bytearray(max(0, min(size, self._size - self._pos)))
        n = self.readinto(buf)
        return bytes(buf[:n])

    def verify(self) -> None:
        """Fetch and check every part not verified yet; then make sure the object is not LONGER than the
        manifest says. Memory: at most ``max_workers`` parts at a time."""
        if self._check:
            todo = [i for i, ok in enumerate(self._ok) if not ok]
            for k in range(0, len(todo), self.max_workers):
                batch = todo[k:k + self.max_workers]
                bufs = [bytearray(self._part_end(i) - i * self._psize) for i in batch]
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(self.max_workers, thread_name_prefix="s3ckpt-get")
                futs = [self._pool.submit(self._fetch_into, i * self._psize, memoryview(b), i)
                        for i, b in zip(batch, bufs, strict=True)]
                for f in futs:
                    f.result()
                del bufs
        if self._size > 0:
            def probe() -> bytes:
                resp = self.client.get_object(Bucket=self.bucket, Key=self.key, Range=f"bytes={self._size}-")
                try:
                    return bytes(resp["Body"].read(1))
                finally:
                    resp["Body"].close()

            try:
                extra = self._call(f"checking the size of s3://{self.bucket}/{self.key}", probe)
            except ClientError as e:  # 416 InvalidRange is the good answer
                if "InvalidRange" not in str(e) and "416" not in str(e):
                    raise
                extra = b""
            if extra:
                raise IntegrityError(f"s3://{self.bucket}/{self.key}: object is longer than the {self._size} "
                                     f"bytes in its manifest")

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        self._win = b""
        super().close()


class SpanView(_SeekableRaw):
    """Read-only, seekable stream over consecutive buffers (the verified parts one range spans), without
    joining them: ``torch.load`` reads straight from the parts, and :meth:`segments` hands them out for
    copies into a tensor. Closing it releases the buffers (a read after that raises)."""

    def __init__(self, segments: list[memoryview]) -> None:
        super().__init__()
        self._segs = segments
        self._starts = [0, *accumulate(len(m) for m in segments)]
        self._size = self._starts[-1]
        self._pos = 0

    def segments(self, start: int, length: int) -> Iterator[memoryview]:
        """Bytes ``[start, start+length)`` of the view as slices of its buffers, in order (no copy)."""
        if self.closed:
            raise ValueError("I/O operation on a closed SpanView (its parts were released)")
        if start < 0 or start + length > self._size:
            raise ValueError(f"bytes {start}-{start + length} are outside this view of {self._size} bytes")
        end = start + length
        k = bisect_right(self._starts, start) - 1
        while start < end:
            off = start - self._starts[k]
            take = min(end - start, len(self._segs[k]) - off)
            yield self._segs[k][off:off + take]
            start += take
            k += 1

    def readinto(self, b: Any) -> int:  # type: ignore[override]
        mv = memoryview(b).cast("B")
        n = max(0, min(len(mv), self._size - self._pos))
        done = 0
        for seg in self.segments(self._pos, n):
            mv[done:done + len(seg)] = seg
            done += len(seg)
        self._pos += n
        return n

    def close(self) -> None:
        for m in self._segs:
            m.release()
        self._segs = []
        super().close()
