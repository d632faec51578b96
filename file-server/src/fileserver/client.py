"""The client's one entry point: :func:`fetch_pool` gets the manifest, checks it, downloads and verifies.

The CLI (``fileserver fetch``) and the demo both call it, so they follow one workflow: the manifest comes
from ``--manifest`` or from the server (through the same fetcher and retry policy as the files), its own
SHA-256 is checked when one was given out of band, a copy is written as ``out/SHA256SUMS`` (so
``sha256sum -c`` and a later resume work in the copy), then every file is fetched, verified and written
under ``out``.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass
from pathlib import Path

from fileserver.fetcher import DEFAULTS, Fetcher, FetchError, Options, Result, Target, Want
from fileserver.manifest import RESERVED_NAMES, SUMS_NAME, Entry, ManifestError, format_sums, parse_any
from fileserver.sink import DirSink

__all__ = ["FetchError", "ManifestError", "PoolResult", "UntrustedManifest", "fetch_pool"]


class UntrustedManifest(FetchError):
    """The manifest's own SHA-256 is not the one given out of band: nothing was downloaded."""


@dataclass
class PoolResult(Result):
    """A :class:`Result` plus where the manifest came from and its SHA-256."""

    manifest_source: str = ""
    manifest_sha256: str = ""

    def summary(self) -> str:
        head = (
            f"manifest: {self.total} files from {self.manifest_source} (sha256 {self.manifest_sha256[:16]})"
        )
        return head + "\n" + super().summary()


class _Memory:
    """A sink that keeps the one body it gets (the manifest); it never has anything beforehand."""

    body: bytes | None = None

    def has(self, path: str, sha256: str, size: int | None) -> bool:
        return False

    def put(self, path: str, body: bytes) -> None:
        self.body = body


def fetch_pool(
    url: str,
    out: Path,
    *,
    manifest: Path | None = None,
    manifest_sha256: str | None = None,
    connections: int = DEFAULTS.connections,
    depth: int = DEFAULTS.depth,
    retries: int = DEFAULTS.retries,
    timeout: float = DEFAULTS.timeout,
    progress: bool = False,
) -> PoolResult:
    """Download every file the manifest lists from ``url`` into ``out``, writing only verified files.

    Raises :class:`FetchError` (bad URL, server unreachable, manifest unavailable), :class:`UntrustedManifest`
    (its SHA-256 differs from ``manifest_sha256``) or :class:`ManifestError` (malformed or unsafe manifest),
    all before anything is written; per-file problems are reported in the result, never raised.
    """
    target = Target.parse(url)
    options = Options(connections, depth, retries, timeout)
    if manifest is not None:
        try:
            data, source = manifest.read_bytes(), str(manifest)
        except OSError as exc:
            raise FetchError(f"cannot read --manifest {manifest}: {exc.strerror}") from None
    else:
        data, source = _download_manifest(target, options), target.url(SUMS_NAME)
    digest = hashlib.sha256(data).hexdigest()
    if manifest_sha256 and digest != manifest_sha256.lower():
        raise UntrustedManifest(
            f"manifest {source} has SHA-256 {digest}, expected {manifest_sha256}: refusing to trust it"
        )
    entries = _checked_entries(data, source)
    with DirSink(out) as sink:
        sink.put(SUMS_NAME, format_sums(entries).encode("utf-8"))
        fetcher = Fetcher(target, sink, options, progress=progress)
        result = asyncio.run(fetcher.run(Want(e.path, e.sha256, e.size) for e in entries))
    return PoolResult(**vars(result), manifest_source=source, manifest_sha256=digest)


def _download_manifest(target: Target, options: Options) -> bytes:
    """``SHA256SUMS`` from the server, through the same fetcher (and retries) as the files."""
    url = target.url(SUMS_NAME)
    memory = _Memory()
    try:
        result = asyncio.run(Fetcher(target, memory, options).run([Want(SUMS_NAME, None)]))
    except FetchError as exc:
        raise FetchError(f"cannot download {url}: {exc}") from None
    if memory.body is not None:
        return memory.body
    if result.missing:
        why = result.missing[SUMS_NAME]
        raise FetchError(f"{url} answered {why}: is this a fileserver pool URL?")
    raise FetchError(f"cannot download {url}: {result.failed.get(SUMS_NAME, 'no answer')}")


def _checked_entries(data: bytes, source: str) -> list[Entry]:
    entries = parse_any(data, source)
    reserved = [e.path for e in entries if e.path in RESERVED_NAMES]
    if reserved:
        raise ManifestError(f"{source}: lists {reserved[0]!r}, a name reserved for the manifest itself")
    if not entries:
        raise ManifestError(f"{source}: the manifest lists no files")
    return entries
