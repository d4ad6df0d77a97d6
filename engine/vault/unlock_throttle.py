"""Back-off after wrong passphrases, shared by every process that unlocks a vault.

The TUI, `phyassist serve` (one TUI process per browser connection) and the CLI all go
through :meth:`engine.vault.store.Store.open`, which asks this throttle before deriving a
key. After ``FREE_FAILURES`` wrong passphrases in a row, each further attempt must wait
``2 ** (failures - FREE_FAILURES)`` seconds (at most ``MAX_WAIT_S``) after the last failure.
The count lives in a small 0600 file beside the vault (``<vault>.unlock-failures``: two
numbers, nothing about patients), so opening a new connection or process does not reset it;
a correct passphrase does. It slows guessing through the product; it does nothing against
an attacker who copies the vault (scrypt is the defence there, see SECURITY.md).
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

from engine.errors import PhyAssistError
from engine.vault.atomicio import atomic_write

FREE_FAILURES = 3
MAX_WAIT_S = 300.0


class UnlockThrottled(PhyAssistError):
    """Too many wrong passphrases: the next attempt must wait."""

    def __init__(self, wait_s: float, failures: int) -> None:
        self.wait_s = wait_s
        super().__init__(
            f"{failures} wrong passphrases in a row: wait {wait_s:.0f} s before the next try."
        )


def throttle_path(vault_dir: Path) -> Path:
    return vault_dir.with_name(vault_dir.name + ".unlock-failures")


def _read(path: Path) -> tuple[int, float]:
    try:
        failures, last = path.read_text(encoding="ascii").split()
        return max(0, int(failures)), float(last)
    except (FileNotFoundError, ValueError, UnicodeDecodeError):
        return 0, 0.0


def wait_needed(vault_dir: Path, now: float | None = None) -> tuple[float, int]:
    """Seconds to wait before the next attempt (0: go ahead) and the failures so far."""
    failures, last = _read(throttle_path(vault_dir))
    if failures < FREE_FAILURES:
        return 0.0, failures
    delay = min(MAX_WAIT_S, 2.0 ** (failures - FREE_FAILURES))
    remaining = last + delay - (time.time() if now is None else now)
    return max(0.0, remaining), failures


def check(vault_dir: Path) -> None:
    """Raise :class:`UnlockThrottled` if an attempt now is too soon."""
    wait, failures = wait_needed(vault_dir)
    if wait > 0:
        raise UnlockThrottled(wait, failures)


def failed(vault_dir: Path) -> None:
    path = throttle_path(vault_dir)
    failures, _last = _read(path)
    with contextlib.suppress(OSError):
        atomic_write(path, f"{failures + 1} {time.time():.3f}\n".encode("ascii"), sync=False)


def succeeded(vault_dir: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(throttle_path(vault_dir))
