"""The client's one entry point: :func:`fetch_pool` gets the manifest, checks it, downloads and verifies.

The CLI (``fileserver fetch``) and the demo both call it, so they follow one workflow: the manifest comes
from ``--manifest`` or from the servers (through the same fetcher and retry policy as the files), its own
SHA-256 is checked when one was given out of band, a copy is written as ``out/SHA256SUMS`` (so
``sha256sum -c`` and a later resume work in the copy), then every file is fetched, verified and written
under ``out``.

With several mirrors the manifest is taken from the first one that serves it (or the first whose manifest
has the pinned SHA-256), and every other mirror must serve a byte-identical one: a mirror with a different
manifest, or none, is refused and named, and the files are spread over the rest.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
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
    url: str | None = None,
    out: Path = Path("download"),
    *,
    urls: Sequence[str] = (),
    manifest: Path | None = None,
    manifest_sha256: str | None = None,
    connections: int = DEFAULTS.connections,
    depth: int = DEFAULTS.depth,
    retries: int = DEFAULTS.retries,
    timeout: float = DEFAULTS.timeout,
    progress: bool = False,
) -> PoolResult:
    """Download every file the manifest lists from ``url`` and/or the mirrors ``urls`` into ``out``, writing
    only verified files (``connections`` per mirror).

    Raises :class:`FetchError` (bad URL, no server reachable, manifest unavailable),
    :class:`UntrustedManifest` (its SHA-256 differs from ``manifest_sha256``) or :class:`ManifestError`
    (malformed or unsafe manifest),
    all before anything is written; per-file and per-mirror problems are reported in the result, never raised.
    """
    given = ([url] if url else []) + list(urls)
    if not given:
        raise FetchError(
            "no URL given: pass the pool's base URL, e.g. http://host:8080/ (several for mirrors)"
        )
    targets = [Target.parse(u) for u in given]
    if len({t.base for t in targets}) != len(targets):
        raise FetchError("the same URL is given twice: list each mirror once")
    options = Options(connections, depth, retries, timeout)
    pinned = manifest_sha256.lower() if manifest_sha256 else None
    refused: dict[str, str] = {}
    if manifest is not None:
        try:
            data, source = manifest.read_bytes(), str(manifest)
        except OSError as exc:
            raise FetchError(f"cannot read --manifest {manifest}: {exc.strerror}") from None
    else:
        data, source, refused = _agreed_manifest(targets, options, pinned)
    digest = hashlib.sha256(data).hexdigest()
    if pinned and digest != pinned:
        raise UntrustedManifest(
            f"manifest {source} has SHA-256 {digest}, expected {manifest_sha256}: refusing to trust it"
        )
    entries = _checked_entries(data, source)
    with DirSink(out) as sink:
        sink.put(SUMS_NAME, format_sums(entries).encode("utf-8"))
        fetcher = Fetcher(targets, sink, options, progress=progress, refused=refused)
        result = asyncio.run(fetcher.run(Want(e.path, e.sha256, e.size) for e in entries))
    return PoolResult(**vars(result), manifest_source=source, manifest_sha256=digest)


def _agreed_manifest(
    targets: list[Target], options: Options, pinned: str | None
) -> tuple[bytes, str, dict[str, str]]:
    """The manifest every usable mirror serves byte for byte, its URL, and the mirrors refused (with why).

    The reference is the pinned SHA-256 if given, else the first mirror (in the order given) that serves one.
    """
    answers = asyncio.run(_download_manifests(targets, options))
    digests = {
        t.base: hashlib.sha256(a).hexdigest()
        for t, a in zip(targets, answers, strict=True)
        if isinstance(a, bytes)
    }
    reference = pinned or next(iter(digests.values()), None)
    chosen = next((t for t in targets if t.base in digests and digests[t.base] == reference), None)
    if chosen is None:
        if not digests:  # nobody served one: the first mirror's reason is the message
            raise answers[0] if isinstance(answers[0], FetchError) else FetchError(str(answers[0]))
        first = next(t for t in targets if t.base in digests)
        data = answers[targets.index(first)]
        assert isinstance(data, bytes)
        return data, first.url(SUMS_NAME), {}  # the caller refuses it against the pinned SHA-256
    refused: dict[str, str] = {}
    for t, answer in zip(targets, answers, strict=True):
        if not isinstance(answer, bytes):
            refused[t.base] = f"no manifest: {answer}"
        elif digests[t.base] != reference:
            refused[t.base] = (
                f"its SHA256SUMS differs (sha256 {digests[t.base][:16]} != {reference[:16]} of {chosen.base})"
            )
    data = answers[targets.index(chosen)]
    assert isinstance(data, bytes)
    return data, chosen.url(SUMS_NAME), refused


async def _download_manifests(targets: list[Target], options: Options) -> list[bytes | FetchError]:
    return list(
        await asyncio.gather(*(_download_manifest(t, options) for t in targets), return_exceptions=False)
    )


async def _download_manifest(target: Target, options: Options) -> bytes | FetchError:
    """``SHA256SUMS`` from one server, through the same fetcher (and retries) as the files; the error
    (one line, what to do) is returned, not raised, so the other mirrors' answers still count."""
    url = target.url(SUMS_NAME)
    memory = _Memory()
    try:
        result = await Fetcher(target, memory, options).run([Want(SUMS_NAME, None)])
    except FetchError as exc:
        return FetchError(f"cannot download {url}: {exc}")
    if memory.body is not None:
        return memory.body
    if result.missing:
        why = result.missing[SUMS_NAME]
        return FetchError(f"{url} answered {why}: is this a fileserver pool URL?")
    return FetchError(f"cannot download {url}: {result.failed.get(SUMS_NAME, 'no answer')}")


def _checked_entries(data: bytes, source: str) -> list[Entry]:
    entries = parse_any(data, source)
    reserved = [e.path for e in entries if e.path in RESERVED_NAMES]
    if reserved:
        raise ManifestError(f"{source}: lists {reserved[0]!r}, a name reserved for the manifest itself")
    if not entries:
        raise ManifestError(f"{source}: the manifest lists no files")
    return entries
