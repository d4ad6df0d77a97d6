"""Crash-safe file primitives: atomic replace, private directories, a writer lock.

A reader (or a process restarted after ``kill -9``) always sees either the previous or the
new content of a file, never a mix: data goes to a temp file in the same directory, is
fsynced, renamed over the target, and the directory is fsynced so the rename itself
survives a power loss.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import secrets
from pathlib import Path

from engine.errors import VaultBusy

FILE_MODE = 0o600
DIR_MODE = 0o700
TEMP_SUFFIX = ".tmp"


def fsync_dir(path: Path) -> None:
    """Persist a directory's entries (renames, creations, deletions)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def ensure_dir(path: Path) -> None:
    """Create ``path`` (and parents) private to the user; tighten an existing one."""
    if not path.is_dir():
        missing = [path, *(p for p in path.parents if not p.exists())]
        for directory in reversed(missing):
            with contextlib.suppress(FileExistsError):
                directory.mkdir(mode=DIR_MODE)
        with contextlib.suppress(OSError):
            fsync_dir(path.parent)
    if (path.stat().st_mode & 0o777) != DIR_MODE:
        path.chmod(DIR_MODE)


def atomic_write(
    path: Path, data: bytes, *, sync: bool = True, temp_dir: Path | None = None
) -> None:
    """Replace ``path`` with ``data`` atomically (temp file, fsync, rename, fsync dir).

    ``temp_dir`` (same filesystem) collects temp files in one place so that a restarted
    writer can sweep what a killed one left without visiting every directory.
    """
    directory = path.parent
    temp = (temp_dir or directory) / f".{path.name}.{secrets.token_hex(6)}{TEMP_SUFFIX}"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
    try:
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            if sync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise
    if sync:
        fsync_dir(directory)


def remove_stale_temps(directory: Path) -> int:
    """Delete temp files left by a writer that died mid-write; returns how many."""
    removed = 0
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(directory):
            if entry.name.startswith(".") and entry.name.endswith(TEMP_SUFFIX):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
                    removed += 1
    return removed


def shred_file(path: Path) -> None:
    """Overwrite a small file with random bytes, fsync, then unlink it and fsync the dir.

    Used for wrapped keys: once the wrapped key is gone, the patient's other files are
    undecryptable (cryptographic erase), whatever copies the filesystem keeps.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        size = os.fstat(fd).st_size
        os.write(fd, os.urandom(max(size, 1)))
        os.fsync(fd)
    finally:
        os.close(fd)
    path.unlink()
    fsync_dir(path.parent)


class WriterLock:
    """An exclusive, non-blocking ``flock`` held by the one writer process of a vault.

    The lock is taken on the vault *directory* itself (which cannot be deleted from under
    the holder while the vault is in it) and on the lock file (which holds the pid, and
    which older PhyAssist versions lock). Deleting the lock file therefore does not let a
    second writer in. The locks die with the process (kill -9 included): no stale locks.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        self._dir_fd: int | None = None

    def _busy(self) -> VaultBusy:
        return VaultBusy(
            f"The vault at {self.path.parent} is open for writing in another "
            "PhyAssist process. Close it there first; meanwhile `phyassist patients "
            "list/show` and `phyassist doctor` can read it without writing."
        )

    @staticmethod
    def _flock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                return False
            raise
        return True

    def acquire(self) -> None:
        dir_fd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            if not self._flock(dir_fd):
                raise self._busy()
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
            try:
                if not self._flock(fd):
                    raise self._busy()
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
            except BaseException:
                os.close(fd)
                raise
        except BaseException:
            os.close(dir_fd)
            raise
        self._fd = fd
        self._dir_fd = dir_fd

    def release(self) -> None:
        for fd in (self._fd, self._dir_fd):
            if fd is not None:
                with contextlib.suppress(OSError):
                    fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)
        self._fd = None
        self._dir_fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None
