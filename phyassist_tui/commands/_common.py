"""Helpers shared by subcommands: settings and unlocking the vault without the TUI."""

from __future__ import annotations

import getpass
import os
import sys
from typing import TYPE_CHECKING

from engine.settings import Settings, load_settings

if TYPE_CHECKING:
    from engine.vault.store import Store


def settings() -> Settings:
    return load_settings()


def read_passphrase(prompt: str = "Passphrase: ") -> str:
    """The passphrase from PHYASSIST_PASSPHRASE_FD / PHYASSIST_PASSPHRASE, else a prompt.

    Scripts should prefer a file descriptor (``PHYASSIST_PASSPHRASE_FD=3 ... 3<file``) so the
    passphrase never sits in the environment of other processes.
    """
    fd = os.environ.get("PHYASSIST_PASSPHRASE_FD")
    if fd:
        with os.fdopen(int(fd), encoding="utf-8", closefd=False) as stream:
            return stream.readline().rstrip("\n")
    env = os.environ.get("PHYASSIST_PASSPHRASE")
    if env is not None:
        return env
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\n")
    return getpass.getpass(prompt)


def open_store(cfg: Settings | None = None, *, writer: bool = True) -> Store:
    """Unlock the vault for a subcommand; errors carry a message fit for the user."""
    from engine.vault.store import Store

    cfg = cfg or settings()
    store = Store.open(cfg.vault_dir, read_passphrase(), writer=writer, settings=cfg)
    warn_integrity(store)
    return store


def warn_integrity(store: Store) -> None:
    """Say on stderr what the vault found rolled back or missing when it opened."""
    from engine.trust.sanitize import safe_terminal_text

    for problem in store.integrity_problems():
        print(f"WARNING: {safe_terminal_text(problem)}", file=sys.stderr)
    if store.integrity_problems():
        print(
            "WARNING: run `phyassist doctor --unlock` for the full list. If you restored a "
            "backup on purpose, `phyassist doctor --accept-restore` takes the files as they are.",
            file=sys.stderr,
        )
