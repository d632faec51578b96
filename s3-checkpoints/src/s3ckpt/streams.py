"""File-like streaming objects between ``torch.save``/``torch.load`` and S3, in the shape of AWS's S3
connector for PyTorch (``S3Writer`` / ``S3Reader``).

Why: a checkpoint can be larger than the RAM left over by training. ``torch.save(obj, S3Writer(...))`` never
builds the serialised bytes in memory: each ``write`` is hashed (SHA-256 of the whole object, for the
manifest) and copied into a part buffer; a full part is handed to a small thread pool that uploads it with
its own ``x-amz-checksum-sha256`` (the server checks it). At most ``max_inflight`` parts exist at once, so the
extra memory is bounded by ``(max_inflight + 1) * part_size`` whatever the checkpoint size.

``S3Reader`` serves ``torch.load``'s reads from one streaming ranged GET, re-opened only on a real seek, and
hashes every byte it delivers in order. ``verify()`` then completes the SHA-256 over whatever was not read
sequentially (usually only the zip's central directory at the end), so a load is also a full integrity check
without reading the object twice.
"""

from __future__ import annotations

import base64
import hashlib
import io
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from s3ckpt.errors import IntegrityError

MiB = 1024 * 1024
MIN_PART = 5 * MiB  # S3's minimum part size (all but the last part)


def b64sha256(data: bytes | memoryview) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


class S3Writer(io.RawIOBase):
    """Write-only stream into one S3 object; multipart once the data exceeds one part.

    Call :meth:`close` to commit (complete the upload) or :meth:`abort` to throw it away. After ``close``,
    ``size``, ``sha256`` (hex, of the whole object) and ``s3_checksum`` (what S3 stores) are set.
    """

    def __init__(self, client: Any, bucket: str, key: str, *, part_size: int = 8 * MiB, max_inflight: int = 4,
                 on_part: Callable[[int, int], None] | None = None) -> None:
        super().__init__()
        if part_size < MIN_PART:
            raise ValueError(f"part_size must be >= {MIN_PART} bytes (S3 minimum), got {part_size}")
        self.client, self.bucket, self.key = client, bucket, key
        self.part_size, self.max_inflight, self.on_part = part_size, max_inflight, on_part
        self._buf = bytearray(part_size)
        self._fill = 0
        self._sha = hashlib.sha256()
        self._size = 0
        self._upload_id: str | None = None
        self._parts: list[Future[dict[str, Any]]] = []
        self._slots = threading.BoundedSemaphore(max_inflight)
        self._pool: ThreadPoolExecutor | None = None
        self._done = False
        self.size = 0
        self.sha256 = ""
        self.s3_checksum = ""
        self.version_id: str | None = None

    # -- io.RawIOBase protocol -------------------------------------------------------------------------
    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:  # type: ignore[override]
        mv = memoryview(b).cast("B")
        n = len(mv)
        self._sha.update(mv)  # releases the GIL for large buffers
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
            resp = self.client.create_multipart_upload(Bucket=self.bucket, Key=self.key,
                                                       ChecksumAlgorithm="SHA256")
            self._upload_id = resp["UploadId"]
            self._pool = ThreadPoolExecutor(self.max_inflight, thread_name_prefix="s3ckpt-part")
        # Bound memory: wait for a free slot before copying out another part.
        self._slots.acquire()
        for f in self._parts:  # surface an upload error early instead of after the whole stream
            if f.done() and f.exception() is not None:
                self._slots.release()
                raise f.exception()  # type: ignore[misc]
        data = bytes(self._buf[:self._fill])
        self._fill = 0
        number = len(self._parts) + 1
        assert self._pool is not None
        self._parts.append(self._pool.submit(self._upload_part, number, data))

    def _upload_part(self, number: int, data: bytes) -> dict[str, Any]:
        try:
            digest = hashlib.sha256(data).digest()
            resp = self.client.upload_part(Bucket=self.bucket, Key=self.key, UploadId=self._upload_id,
                                           PartNumber=number, Body=data,
                                           ChecksumSHA256=base64.b64encode(digest).decode())
            if self.on_part is not None:
                self.on_part(number, len(data))
            return {"PartNumber": number, "ETag": resp["ETag"],
                    "ChecksumSHA256": base64.b64encode(digest).decode(), "_digest": digest}
        finally:
            del data
            self._slots.release()

    def close(self) -> None:
        """Commit: upload the tail, complete the multipart upload (or one PUT for a small object)."""
        if self._done:
            return
        try:
            if self._upload_id is None:
                data = bytes(self._buf[:self._fill])
                self._buf = bytearray()
                ck = b64sha256(data)
                resp = self.client.put_object(Bucket=self.bucket, Key=self.key, Body=data, ChecksumSHA256=ck)
                self.s3_checksum = ck
            else:
                if self._fill or not self._parts:
                    self._submit_part()
                self._buf = bytearray()
                parts = [f.result() for f in self._parts]
                composite = hashlib.sha256(b"".join(p.pop("_digest") for p in parts)).digest()
                resp = self.client.complete_multipart_upload(
                    Bucket=self.bucket, Key=self.key, UploadId=self._upload_id,
                    MultipartUpload={"Parts": parts})
                self.s3_checksum = f"{base64.b64encode(composite).decode()}-{len(parts)}"
            self.version_id = resp.get("VersionId")
            self.size = self._size
            self.sha256 = self._sha.hexdigest()
            self._done = True
        except BaseException:
            self.abort()
            raise
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
            super().close()

    def abort(self) -> None:
        """Throw the upload away (best effort): no orphan multipart upload keeps the parts' storage."""
        self._done = True
        self._buf = bytearray()
        if self._pool is not None:
            for f in self._parts:
                f.cancel()
            self._pool.shutdown(wait=True)
        if self._upload_id is not None:
            try:
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=self._upload_id)
            except Exception:  # noqa: BLE001 - cleanup must not mask the original error
                pass
        if not self.closed:
            super().close()


class S3Reader(io.RawIOBase):
    """Seekable read-only stream over one S3 object, for ``torch.load``.

    Sequential reads come from one open GET; a short forward seek reads through (cheaper than a new
    request, and keeps the running hash going); a real jump opens a new ranged GET. ``verify()`` finishes
    the SHA-256 and compares it with the manifest.
    """

    SKIP_THROUGH = 4 * MiB
    CHUNK = 1 * MiB

    def __init__(self, client: Any, bucket: str, key: str, size: int, expected_sha256: str | None = None,
                 version_id: str | None = None) -> None:
        super().__init__()
        self.client, self.bucket, self.key, self._size = client, bucket, key, size
        self.expected_sha256 = expected_sha256
        self.version_id = version_id
        self._pos = 0
        self._body: Any = None
        self._body_pos = -1
        self._sha = hashlib.sha256()
        self._hashed = 0  # bytes [0, _hashed) have gone through _sha, in order

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            pos = offset
        elif whence == io.SEEK_CUR:
            pos = self._pos + offset
        elif whence == io.SEEK_END:
            pos = self._size + offset
        else:
            raise ValueError(f"bad whence {whence}")
        if pos < 0:
            raise ValueError("negative seek position")
        self._pos = pos
        return pos

    def _open(self, pos: int) -> None:
        self._close_body()
        kw: dict[str, Any] = {"Bucket": self.bucket, "Key": self.key, "Range": f"bytes={pos}-"}
        if self.version_id:
            kw["VersionId"] = self.version_id
        self._body = self.client.get_object(**kw)["Body"]
        self._body_pos = pos

    def _close_body(self) -> None:
        if self._body is not None:
            try:
                self._body.close()
            except Exception:  # noqa: BLE001
                pass
        self._body = None
        self._body_pos = -1

    def _account(self, start: int, mv: memoryview) -> None:
        if start == self._hashed:
            self._sha.update(mv)
            self._hashed += len(mv)

    def _read_body_into(self, mv: memoryview) -> int:
        """Fill ``mv`` from the open body at ``_body_pos``; returns bytes read (0 = EOF)."""
        got = 0
        n = len(mv)
        while got < n:
            chunk = self._body.read(min(self.CHUNK, n - got))
            if not chunk:
                break
            mv[got:got + len(chunk)] = chunk
            got += len(chunk)
        return got

    def readinto(self, b: Any) -> int:  # type: ignore[override]
        mv = memoryview(b).cast("B")
        want = min(len(mv), max(0, self._size - self._pos))
        if want == 0:
            return 0
        if self._body is None or self._body_pos != self._pos:
            gap = self._pos - self._body_pos
            if self._body is not None and 0 < gap <= self.SKIP_THROUGH:
                skip = bytearray(gap)
                start = self._body_pos
                n = self._read_body_into(memoryview(skip))
                self._account(start, memoryview(skip)[:n])
                self._body_pos += n
            if self._body is None or self._body_pos != self._pos:
                self._open(self._pos)
        n = self._read_body_into(mv[:want])
        if n < want:
            raise IntegrityError(f"s3://{self.bucket}/{self.key}: object ended at byte {self._pos + n}, "
                                 f"manifest says {self._size} bytes (truncated)")
        self._account(self._pos, mv[:n])
        self._pos += n
        self._body_pos += n
        return n

    def read(self, size: int = -1) -> bytes:  # type: ignore[override]
        if size is None or size < 0:
            size = self._size - self._pos
        buf = bytearray(max(0, min(size, self._size - self._pos)))
        n = self.readinto(buf)
        return bytes(buf[:n])

    def verify(self) -> str:
        """Hash the bytes not yet hashed in order and compare with the manifest; returns the hex digest."""
        if self._hashed < self._size:
            if self._body is None or self._body_pos != self._hashed:
                self._open(self._hashed)
            buf = bytearray(self.CHUNK)
            while self._hashed < self._size:
                n = self._read_body_into(memoryview(buf)[:min(self.CHUNK, self._size - self._hashed)])
                if n == 0:
                    raise IntegrityError(f"s3://{self.bucket}/{self.key}: object is shorter than the "
                                         f"{self._size} bytes in its manifest (truncated)")
                self._account(self._hashed, memoryview(buf)[:n])
                self._body_pos += n
        # one extra byte would mean the object is LONGER than the manifest says
        extra = self._body.read(1) if self._body is not None else b""
        self._close_body()
        digest = self._sha.hexdigest()
        if extra:
            raise IntegrityError(f"s3://{self.bucket}/{self.key}: object is longer than the {self._size} "
                                 f"bytes in its manifest")
        if self.expected_sha256 is not None and digest != self.expected_sha256:
            raise IntegrityError(f"s3://{self.bucket}/{self.key}: SHA-256 mismatch (manifest "
                                 f"{self.expected_sha256[:16]}..., object {digest[:16]}...): corrupt object")
        return digest

    def close(self) -> None:
        self._close_body()
        super().close()
