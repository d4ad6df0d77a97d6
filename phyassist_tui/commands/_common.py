"""Helpers shared by subcommands: settings with command-line overrides, unlocking the vault
without the TUI, and patient ids typed as a prefix."""

from __future__ import annotations

import getpass
import os
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from engine.errors import InputRejected, PatientNotFound
from engine.settings import Settings, load_settings

if TYPE_CHECKING:
    from engine.vault.store import Store


def settings(**model: Any) -> Settings:
    """The user's settings, with ``model`` fields given on the command line (``--model``,
    ``--device``; None means "not given") on top. The one place commands override them."""
    cfg = load_settings()
    given = {key: value for key, value in model.items() if value is not None}
    if given:
        cfg = cfg.model_copy(update={"model": cfg.model.model_copy(update=given)}, deep=True)
    return cfg


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


def match_patient_id(ids: Iterable[str], text: str) -> str:
    """The one id in ``ids`` that starts with ``text`` (a whole id or a unique prefix)."""
    prefix = text.strip().lower()
    matches = sorted({i for i in ids if i.startswith(prefix)}) if prefix else []
    if not matches:
        raise PatientNotFound(f"No patient id starts with {prefix!r}.")
    if len(matches) > 1:
        raise InputRejected(f"{prefix!r} matches {len(matches)} patients; give more of the id.")
    return matches[0]


def resolve_patient_id(store: Store, text: str) -> str:
    """A full patient id of the vault from the id or a unique prefix of it."""
    return match_patient_id((s.id for s in store.list_patients()), text)


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
