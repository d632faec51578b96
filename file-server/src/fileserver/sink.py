"""Where verified downloads land: files under one folder, written so that nothing escapes it.

- a path is joined onto ``out`` only after the manifest checked it (no ``..``, absolute paths, ...);
- folders are opened one level at a time from ``out`` with ``O_NOFOLLOW | O_DIRECTORY`` (created when
  missing), and every later call works relative to that descriptor: a symlink planted in ``out`` is refused,
  and swapping a folder for a link after the check changes nothing;
- a file is written to a temporary name opened with ``O_NOFOLLOW | O_EXCL`` and renamed over its final name,
  so a reader (or a resumed run) never sees half a file; anything at the final name that is not a regular
  file (a planted symlink) is refused, neither followed nor replaced.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from fileserver.manifest import RESERVED_NAMES, sha256_file

_TMP_SUFFIX = ".fileserver-part"  # as a dotfile next to its final name: never served, never listed
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_MAX_OPEN_DIRS = 256  # folder descriptors kept open; a manifest with more folders just reopens them


class DirSink:
    """Writes bodies to ``out/<path>``; one writer at a time (the fetcher's verifier thread). Close it."""

    def __init__(self, out: Path) -> None:
        out.mkdir(parents=True, exist_ok=True)
        self._out = str(out)
        self._root = os.open(out, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)  # --out itself may be a link
        self._dirs: dict[str, int] = {"": self._root}
        # nothing to resume in an empty folder: skip the per-file checks
        self._fresh = all(e.name in RESERVED_NAMES for e in os.scandir(out))

    def __enter__(self) -> DirSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for fd in self._dirs.values():
            os.close(fd)
        self._dirs.clear()

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
        folder = self._dirs.get(parent)
        if folder is None:
            folder = self._open_folder(parent)
        if not self._fresh:  # in a folder that was empty, anything there now raced us: rename replaces it
            self._refuse_non_file(folder, name, path)
        tmp = f".{name}{_TMP_SUFFIX}"
        try:
            fd = os.open(tmp, _FILE_FLAGS, 0o644, dir_fd=folder)
        except FileExistsError:  # left by an interrupted run: ours to replace, but never through a link
            os.unlink(tmp, dir_fd=folder)
            fd = os.open(tmp, _FILE_FLAGS, 0o644, dir_fd=folder)
        try:
            view = memoryview(body)
            while view:
                view = view[os.write(fd, view) :]
        except BaseException:
            os.close(fd)
            os.unlink(tmp, dir_fd=folder)
            raise
        os.close(fd)
        os.rename(tmp, name, src_dir_fd=folder, dst_dir_fd=folder)

    @staticmethod
    def _refuse_non_file(folder: int, name: str, path: str) -> None:
        try:
            if not stat.S_ISREG(os.stat(name, dir_fd=folder, follow_symlinks=False).st_mode):
                raise OSError(errno.EEXIST, f"{path} is not a regular file (a symlink?); not replacing it")
        except FileNotFoundError:
            pass

    def _open_folder(self, parent: str) -> int:
        """Descriptor of ``out/<parent>``: each level created if missing, opened without following a link."""
        if len(self._dirs) > _MAX_OPEN_DIRS:
            for key, fd in list(self._dirs.items()):
                if key:
                    os.close(fd)
                    del self._dirs[key]
        cur, done = self._root, ""
        for part in parent.split("/"):
            done = f"{done}/{part}" if done else part
            known = self._dirs.get(done)
            if known is not None:
                cur = known
                continue
            try:
                os.mkdir(part, 0o755, dir_fd=cur)
            except FileExistsError:
                pass
            try:
                cur = os.open(part, _DIR_FLAGS, dir_fd=cur)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise OSError(
                        errno.ENOTDIR, f"{done} is not a real folder (a symlink?); not writing through it"
                    ) from None
                raise
            self._dirs[done] = cur
        return cur
