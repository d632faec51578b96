"""Tensors in ``torch.save``'s archive format, written and read the cheap way.

``torch.save`` of one tensor is a zip archive: a pickle (dtype, shape, strides, storage offset) and one
uncompressed record per storage.

Saving (:func:`save_tensor`): the same archive, without the CRC32 of every record, which torch computes in
the saving thread at under 1 GB/s (the largest CPU cost of a DCP save here). ``torch.load`` does not check
those CRCs, and every byte of our objects is SHA-256-checked instead (by the server on upload, by every
read). ``torch.serialization.set_crc32_options(False)`` would do the same for every thread of the process;
this is the body of ``torch.save`` with a writer of our own.

Loading (:func:`load_into`): ``torch.load`` allocates a new storage and reads the record into it; a DCP
loader then copies that into the destination (and frees it). :func:`load_into` reads only the pickle
(``torch.serialization.skip_data``: the storage is allocated but never touched), finds the record's bytes
in the archive, and copies them once, from the verified part buffers into the destination, with torch's
copy (which releases the GIL). Anything it cannot prove simple (several storages, a compressed record,
another byte order, a slice or a destination that is not contiguous, another dtype or shape) it declines,
and the caller uses ``torch.load``.
"""

from __future__ import annotations

import pickle
import re
import struct
import sys
import zipfile
from collections.abc import Sequence
from typing import IO

import torch
from torch.distributed._shard._utils import narrow_tensor_by_index

from s3ckpt.streams import SpanView

_LOCAL_HEADER = struct.Struct("<IHHHHHIIIHH")  # a zip entry's local file header (30 bytes)
_LOCAL_SIGNATURE = 0x04034B50
_STORAGE = re.compile(r"(?:[^/]*/)?data/\d+")  # "<archive>/data/<key>": one record per storage


def save_tensor(t: torch.Tensor, f: IO[bytes]) -> None:
    """``torch.save(t, f)``, byte for byte the same archive but with every record's CRC32 left 0."""
    writer = torch._C.PyTorchFileWriter(f, False, torch.serialization._get_storage_alignment())
    torch.serialization._save(t, writer, pickle, torch.serialization.DEFAULT_PROTOCOL, False)
    writer.write_end_of_file()


def _data_offset(f: SpanView, rec: zipfile.ZipInfo) -> int | None:
    """Where the bytes of an uncompressed record start (read from its local header: no CRC check, which
    an archive of :func:`save_tensor` would fail)."""
    f.seek(rec.header_offset)
    fields = _LOCAL_HEADER.unpack(f.read(_LOCAL_HEADER.size))
    if fields[0] != _LOCAL_SIGNATURE or rec.compress_type != zipfile.ZIP_STORED:
        return None
    return rec.header_offset + _LOCAL_HEADER.size + fields[-2] + fields[-1]


def _storage_record(f: SpanView) -> tuple[int, int] | None:
    """(where the bytes of the archive's only storage start, how many), or None if there is not exactly
    one uncompressed storage record written in this machine's byte order."""
    with zipfile.ZipFile(f) as zf:  # a file object passed in stays open
        records = [i for i in zf.infolist() if _STORAGE.fullmatch(i.filename)]
        order = [i for i in zf.infolist() if i.filename.rsplit("/", 1)[-1] == "byteorder"]
    if len(records) != 1 or len(order) != 1:
        return None
    at, start = _data_offset(f, order[0]), _data_offset(f, records[0])
    if at is None or start is None:
        return None
    f.seek(at)
    if f.read(order[0].file_size).decode(errors="replace") != sys.byteorder:
        return None
    return start, records[0].file_size


def load_into(f: SpanView, offsets: Sequence[int], lengths: Sequence[int], dst: torch.Tensor) -> bool:
    """Copy the block ``offsets``/``lengths`` of the tensor saved in ``f`` into ``dst``; False (nothing
    copied) when that is not one contiguous run of bytes of the same dtype and shape as ``dst``."""
    record = _storage_record(f)
    if record is None:
        return False
    f.seek(0)
    with torch.serialization.skip_data():
        stored = torch.load(f, map_location="cpu", weights_only=True)
    if type(stored) is not torch.Tensor or stored.layout != torch.strided or stored.is_quantized:
        return False
    src = narrow_tensor_by_index(stored, offsets, lengths)
    start, end = (src.storage_offset() * src.element_size(),
                  (src.storage_offset() + src.numel()) * src.element_size())
    if src.dtype != dst.dtype or src.size() != dst.size() or not src.is_contiguous() \
            or not dst.is_contiguous() or end > record[1]:  # (skip_data's storage size is not the record's)
        return False
    out = dst.reshape(-1).view(torch.uint8)
    pos = 0
    for seg in f.segments(record[0] + start, end - start):
        out[pos:pos + len(seg)].copy_(torch.frombuffer(seg, dtype=torch.uint8))
        pos += len(seg)
    return True
