"""The Session's open vault: create, unlock, lock, one call at a time, the audit entries.

Every vault call of the Session goes through ``_vault`` (one at a time, ``VaultLocked``
once the vault is closed) and every action writes its audit entry with ``_audit``
(``engine.trust.audit.record``). Unlock's entries are written in a thread so the counselor
waits for the patient list, not the log; every later call waits for them first.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from engine.errors import PhyAssistError, WrongPassphrase

if TYPE_CHECKING:
    from engine.records import PatientSummary
    from engine.session.backend import VaultOpener, VaultStore

T = TypeVar("T")


class VaultLocked(PhyAssistError):
    """A vault call after the vault was locked (or before it was opened)."""

    def __init__(self) -> None:
        super().__init__("The vault is locked.")


def _real_opener() -> VaultOpener:
    from engine.vault.store import Store

    return Store  # type: ignore[return-value]


class VaultAccess:
    """The vault side of :class:`~engine.session.Session` (a base of it; the Session
    provides ``settings``, ``origin``, ``_opener``, ``_store``, ``_store_lock``,
    ``_model_lock``, ``_knowledge``)."""

    @property
    def opener(self) -> VaultOpener:
        if self._opener is None:
            self._opener = _real_opener()
        return self._opener

    @property
    def unlocked(self) -> bool:
        return self._store is not None

    def _vault(self, fn: Callable[[VaultStore], T]) -> T:
        """Run ``fn(store)``, one vault call at a time (after unlock's audit entries)."""
        self._join_pending_audit()
        with self._store_lock:
            if self._store is None:
                raise VaultLocked()
            return fn(self._store)

    def integrity_problems(self) -> list[str]:
        """What the vault found rolled back or missing when it opened (empty: nothing)."""
        return self._vault(lambda store: list(store.integrity_problems()))

    def vault_call(self, fn: Callable[[VaultStore], T]) -> T:
        """Run ``fn(store)`` with the open vault held still (one vault call at a time), for
        jobs that work on the vault's files as a whole, e.g. taking a backup snapshot.
        Raises ``VaultLocked`` when no vault is open."""
        return self._vault(fn)

    def _audit(self, store: VaultStore, action: str, patient_id: str | None = None, detail=None):
        from engine.trust.audit import record

        record(store, action, patient_id, self.origin if detail is None else detail)  # type: ignore[arg-type]

    def _audit_soon(self, entries: list[tuple[str, str | None, str | None]]) -> None:
        """Write ``entries`` in a thread: the counselor waits for the patient list after an
        unlock, not for the audit log (an append is ~50 ms, more on a busy disk). Every
        later vault call waits for them first, so the log keeps the order of events."""

        def write() -> None:
            with contextlib.suppress(VaultLocked), self._store_lock:
                if self._store is None:
                    raise VaultLocked()
                for action, patient_id, detail in entries:
                    self._audit(self._store, action, patient_id, detail)

        thread = threading.Thread(target=write, name="audit-unlock", daemon=True)
        self._pending_audit = thread
        thread.start()

    def _join_pending_audit(self) -> None:
        thread = self._pending_audit
        if thread is not None and thread is not threading.current_thread():
            thread.join()
            self._pending_audit = None

    def vault_exists(self) -> bool:
        return bool(self.opener.exists(self.settings.vault_dir))

    def create_vault(self, passphrase: str) -> list[PatientSummary] | None:
        """Create the vault and keep it open; returns its (empty) patient list."""
        store = self.opener.create(self.settings.vault_dir, passphrase, settings=self.settings)
        with self._store_lock:
            self._store = store
        patients = self._list_after_open()
        self._audit_soon([("vault_created", None, None)])
        return patients

    def unlock(self, passphrase: str) -> list[PatientSummary] | None:
        """Open the vault (raises ``WrongPassphrase`` etc.); returns the patient list if it
        could be read. Failed attempts are audited at the next unlock (the log is encrypted,
        so a wrong passphrase cannot write to it)."""
        try:
            store = self.opener.open(
                self.settings.vault_dir, passphrase, writer=True, settings=self.settings
            )
        except WrongPassphrase:
            self._failed_unlocks += 1
            raise
        with self._store_lock:
            self._store = store
            failed, self._failed_unlocks = self._failed_unlocks, 0
        patients = self._list_after_open()
        entries: list[tuple[str, str | None, str | None]] = []
        if failed:
            entries.append(("unlock_failed", None, f"{failed} failed attempt(s)"))
        entries.append(("unlock", None, None))
        self._audit_soon(entries)
        return patients

    def _list_after_open(self) -> list[PatientSummary] | None:
        try:
            return self.list_patients()
        except PhyAssistError:
            return None

    def lock(self) -> None:
        """Close the vault (audited first); the model forgets whose adapter it holds."""
        self._join_pending_audit()
        self._knowledge.drop()  # its decrypted entries go with the vault
        with self._store_lock:
            store, self._store = self._store, None
            if store is not None:
                self._audit(store, "lock")
                store.close()
        with self._model_lock:
            self._patient_in_model = None

    def close(self) -> None:
        """Close the vault at the end of a command-line action (no ``lock`` entry: nothing
        was unlocked for a session)."""
        self._join_pending_audit()
        self._knowledge.drop()
        with self._store_lock:
            store, self._store = self._store, None
            if store is not None:
                store.close()

    def change_passphrase(self, old: str, new: str) -> None:
        """Re-wrap the vault key under ``new`` (audited)."""

        def change(store: Any) -> None:
            store.change_passphrase(old, new)
            self._audit(store, "passphrase_changed", None)

        self._vault(change)
