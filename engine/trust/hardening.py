"""Process hardening for a process that holds decrypted patient data.

Call :func:`harden_process` first thing in the TUI, the CLI and the training worker:

* no core dumps (``RLIMIT_CORE`` 0): a crash must not write the process memory, with its
  decrypted notes and keys, to disk (``core``, systemd-coredump, apport);
* not dumpable (Linux ``prctl(PR_SET_DUMPABLE, 0)``): other processes of the same user
  cannot ptrace it or read ``/proc/<pid>/mem`` / ``environ`` (root still can);
* umask 077: any file a library writes on our behalf (temp files, caches) is private.

Each step is best effort (a platform without it is skipped); the result says what applied.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import sys

__all__ = ["harden_process", "is_dumpable"]

PR_GET_DUMPABLE = 3
PR_SET_DUMPABLE = 4


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    with contextlib.suppress(OSError):
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    return None


def is_dumpable() -> bool | None:
    """Whether the kernel would let this process dump core / be ptraced (None: unknown)."""
    libc = _libc()
    if libc is None:
        return None
    return bool(libc.prctl(PR_GET_DUMPABLE, 0, 0, 0, 0))


def harden_process(*, umask: bool = True) -> list[str]:
    """Apply what the platform supports; returns the names of the measures in force."""
    applied: list[str] = []
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        applied.append("no-core-dumps")
    except (ImportError, ValueError, OSError):
        pass
    libc = _libc()
    if libc is not None and libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) == 0:
        applied.append("not-dumpable")
    if umask:
        os.umask(0o077)
        applied.append("umask-077")
    return applied
