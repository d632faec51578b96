"""The manifest: ``SHA256SUMS`` (exactly what ``sha256sum -c`` reads) and ``manifest.json``.

Everything that turns a manifest line into a local path goes through :func:`check_relpath`, because the
manifest may come from a server we do not control and a path such as ``../../.bashrc`` must never be written.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

SUMS_NAME = "SHA256SUMS"
JSON_NAME = "manifest.json"
#: files that describe the pool and therefore never appear inside the manifest itself
RESERVED_NAMES = frozenset({SUMS_NAME, JSON_NAME})
_HEX64 = re.compile(r"[0-9a-f]{64}")


class ManifestError(ValueError):
    """A manifest that cannot be trusted or parsed; the message names the line and what is wrong."""


@dataclass(frozen=True, slots=True)
class Entry:
    """One file of the pool: its relative POSIX path, its SHA-256 (lower-case hex) and size when known."""

    path: str
    sha256: str
    size: int | None = None


def check_relpath(path: str) -> str:
    """Return ``path`` if it is a safe relative POSIX path, else raise :class:`ManifestError`.

    Why so strict: the client joins this string onto ``--out``; anything that could escape it (``..``,
    absolute paths, backslashes that Windows tools treat as separators, NUL, control characters) is refused
    instead of being "cleaned", so that a hostile manifest is reported rather than silently rewritten.
    """
    if not path:
        raise ManifestError("empty path")
    if path.startswith("/"):
        raise ManifestError(f"absolute path {path!r}")
    if "\\" in path:
        raise ManifestError(f"backslash in path {path!r}")
    if any(ord(c) < 32 or ord(c) == 127 for c in path):
        raise ManifestError(f"control character in path {path!r}")
    if re.match(r"^[A-Za-z]:", path):
        raise ManifestError(f"drive letter in path {path!r}")
    for part in path.split("/"):
        if part in ("", ".", ".."):
            raise ManifestError(f"path {path!r} has an empty, '.' or '..' component")
    return path


def sha256_file(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file, read in 1 MiB blocks (``hashlib.file_digest`` would need Python 3.11)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def format_sums(entries: Iterable[Entry]) -> str:
    """Render entries in the exact ``sha256sum`` text format: ``<hex>  <path>`` (two spaces), one per line."""
    lines = []
    for e in entries:
        check_relpath(e.path)
        lines.append(f"{e.sha256}  {e.path}\n")
    return "".join(lines)


def parse_sums(text: str, source: str = SUMS_NAME) -> list[Entry]:
    """Parse ``sha256sum`` output (text ``"  "`` or binary ``" *"`` mode, GNU ``\\`` escapes) and validate it.

    Raises :class:`ManifestError` naming the line number for anything malformed, unsafe or duplicated.
    """
    entries: list[Entry] = []
    seen: set[str] = set()
    for lineno, raw in enumerate(text.splitlines(), 1):
        if not raw.strip():
            continue
        line = raw
        escaped = line.startswith("\\")
        if escaped:
            line = line[1:]
        if len(line) < 67 or line[64] != " " or line[65] not in " *":
            raise ManifestError(f"{source}:{lineno}: not a 'sha256  path' line: {raw[:80]!r}")
        digest, path = line[:64].lower(), line[66:]
        if not _HEX64.fullmatch(digest):
            raise ManifestError(f"{source}:{lineno}: not a SHA-256 hex digest: {line[:64]!r}")
        if escaped:
            path = re.sub(r"\\(.)", lambda m: {"n": "\n", "\\": "\\", "r": "\r"}.get(m[1], m[0]), path)
        try:
            check_relpath(path)
        except ManifestError as exc:
            raise ManifestError(f"{source}:{lineno}: unsafe entry refused: {exc}") from None
        if path in seen:
            raise ManifestError(f"{source}:{lineno}: duplicate path {path!r}")
        seen.add(path)
        entries.append(Entry(path, digest))
    return entries


def parse_json(text: str, source: str = JSON_NAME) -> list[Entry]:
    """Parse our ``manifest.json`` (``{"files": [{"path", "size", "sha256"}]}``) with the same path checks."""
    try:
        doc = json.loads(text)
        rows = doc["files"] if isinstance(doc, dict) else doc
        entries = [Entry(str(r["path"]), str(r["sha256"]).lower(), int(r["size"])) for r in rows]
    except (ValueError, KeyError, TypeError) as exc:
        raise ManifestError(f"{source}: not a fileserver manifest.json ({exc})") from None
    seen: set[str] = set()
    for e in entries:
        try:
            check_relpath(e.path)
        except ManifestError as exc:
            raise ManifestError(f"{source}: unsafe entry refused: {exc}") from None
        if not _HEX64.fullmatch(e.sha256):
            raise ManifestError(f"{source}: bad sha256 for {e.path!r}")
        if e.path in seen:
            raise ManifestError(f"{source}: duplicate path {e.path!r}")
        seen.add(e.path)
    return entries


def parse_any(data: bytes, source: str) -> list[Entry]:
    """Parse a manifest given as bytes, JSON or ``SHA256SUMS`` (decided by the first non-blank character)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ManifestError(f"{source}: manifest is not UTF-8 text") from None
    if text.lstrip().startswith(("{", "[")):
        return parse_json(text, source)
    return parse_sums(text, source)


def walk_files(root: Path) -> Iterator[str]:
    """Relative POSIX paths of the regular files under ``root``, sorted, skipping dotfiles and symlinks.

    Dotfiles and symlinks are skipped because nginx refuses to serve them: listing them would make every
    download fail.
    """
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(
            d for d in dirnames if not d.startswith(".") and not os.path.islink(os.path.join(dirpath, d))
        )
        rel_dir = os.path.relpath(dirpath, root)
        for name in sorted(filenames):
            full = os.path.join(dirpath, name)
            if name.startswith(".") or os.path.islink(full) or not os.path.isfile(full):
                continue
            rel = name if rel_dir == "." else f"{rel_dir}/{name}".replace(os.sep, "/")
            if rel in RESERVED_NAMES:
                continue
            yield rel


def build_entries(root: Path) -> list[Entry]:
    """Hash every servable file under ``root`` (see :func:`walk_files`)."""
    out = []
    for rel in walk_files(root):
        check_relpath(rel)
        full = root / rel
        out.append(Entry(rel, sha256_file(full), full.stat().st_size))
    return out


def write_manifests(root: Path, entries: list[Entry]) -> None:
    """Write ``SHA256SUMS`` and ``manifest.json`` into ``root``, world-readable for nginx workers."""
    entries = sorted(entries, key=lambda e: e.path)
    (root / SUMS_NAME).write_text(format_sums(entries), encoding="utf-8")
    doc = {
        "version": 1,
        "count": len(entries),
        "total_bytes": sum(e.size or 0 for e in entries),
        "files": [{"path": e.path, "size": e.size, "sha256": e.sha256} for e in entries],
    }
    (root / JSON_NAME).write_text(json.dumps(doc, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    for name in RESERVED_NAMES:
        os.chmod(root / name, 0o644)


@dataclass
class VerifyReport:
    """Outcome of checking a local copy: which files are fine, missing or different from the manifest."""

    ok: list[str]
    missing: list[str]
    mismatched: list[str]

    @property
    def failed(self) -> bool:
        return bool(self.missing or self.mismatched)


def verify_dir(root: Path, entries: list[Entry]) -> VerifyReport:
    """Re-hash every manifest entry under ``root``; symlinks count as missing (we never follow them)."""
    report = VerifyReport([], [], [])
    for e in entries:
        full = root / e.path
        if full.is_symlink() or not full.is_file():
            report.missing.append(e.path)
        elif sha256_file(full) != e.sha256:
            report.mismatched.append(e.path)
        else:
            report.ok.append(e.path)
    return report
