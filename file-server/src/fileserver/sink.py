"""Where verified downloads land: files under one folder, written so that nothing escapes it.

- a path is joined onto ``out`` only after the manifest checked it (no ``..``, absolute paths, ...);
- folders are created one level at a time and each must be a real folder, not a symlink planted in ``out``;
- a file is written to a temporary name opened with ``O_NOFOLLOW | O_EXCL`` and renamed over its final name,
  so a reader (or a resumed run) never sees half a file, and an existing symlink there is refused, not
  followed or replaced.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from fileserver.manifest import RESERVED_NAMES, sha256_file

_TMP_SUFFIX = ".fileserver-part"  # as a dotfile next to its final name: never served, never listed


class DirSink:
    """Writes bodies to ``out/<path>``; one writer at a time (the fetcher's verifier thread)."""

    def __init__(self, out: Path) -> None:
        out.mkdir(parents=True, exist_ok=True)
        self.out = out
        self._out = str(out)
        self._made_dirs: set[str] = set()
        # nothing to resume in an empty folder: skip the per-file checks
        self._fresh = all(e.name in RESERVED_NAMES for e in os.scandir(out))

    def has(self, path: str, sha256: str, size: int | None) -> bool:
        """True if ``out/<path>`` is already a regular file with this size and SHA-256 (resume)."""
        if self._fresh:
            return False
        dest = os.path.join(self._out, path)
        try:
            st = os.lstat(dest)
        except OSError:
            return False
        if not stat.S_ISREG(st.st_mode) or (size is not None and st.st_size != size):
            return False
        return sha256_file(dest) == sha256

    def put(self, path: str, body: bytes) -> None:
        """Write ``body`` to ``out/<path>`` atomically; raise OSError (with a reason) if it may not be."""
        parent, _, name = path.rpartition("/")
        folder = self._folder(parent)
        dest = os.path.join(folder, name)
        tmp = os.path.join(folder, f".{name}{_TMP_SUFFIX}")
        try:
            if not stat.S_ISREG(os.lstat(dest).st_mode):
                raise OSError(
                    errno.EEXIST, f"{dest} exists and is not a regular file (a symlink?); not replacing it"
                )
        except FileNotFoundError:
            pass
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(tmp, flags, 0o644)
        except FileExistsError:  # left by an interrupted run: ours to replace, but never through a link
            os.unlink(tmp)
            fd = os.open(tmp, flags, 0o644)
        try:
            view = memoryview(body)
            while view:
                view = view[os.write(fd, view) :]
        except BaseException:
            os.close(fd)
            os.unlink(tmp)
            raise
        os.close(fd)
        os.rename(tmp, dest)

    def _folder(self, parent: str) -> str:
        """``out/<parent>``, created one level at a time; mkdir does not follow a final symlink (EEXIST)
        and lstat tells a real folder from a link planted in ``out`` to somewhere else."""
        if not parent:
            return self._out
        full = os.path.join(self._out, parent)
        if full in self._made_dirs:
            return full
        cur = self._out
        for part in parent.split("/"):
            cur = os.path.join(cur, part)
            if cur in self._made_dirs:
                continue
            try:
                os.mkdir(cur, 0o755)
            except FileExistsError:
                if not stat.S_ISDIR(os.lstat(cur).st_mode):
                    raise OSError(
                        errno.ENOTDIR, f"{cur} is not a real folder (a symlink?); not writing through it"
                    ) from None
            self._made_dirs.add(cur)
        return full
