"""Keeping ``index.bin`` (the patient list) in step with the record files.

The index is a cache of the record files, kept decrypted in memory. Creating, deleting
and flagging a patient write it at once; saving a record (the frequent, latency-sensitive
path) updates it in memory and writes it at most ``INDEX_FLUSH_DELAY_S`` later and on
close. Before any record changes, an ``index.pending`` marker is made durable; it is
removed once the index on disk matches again. Opening a vault that has the marker (a
writer died) checks every record's nonce against the index and refreshes what differs,
and a missing or unreadable index is rebuilt from the record files: nothing a save
returned from is ever missing from the list.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from engine.errors import PhyAssistError
from engine.records import PatientSummary
from engine.vault.atomicio import shred_file
from engine.vault.files import KEY_FILE, PENDING_NAME, Stamp, _aad
from engine.vault.index import PatientIndex

logger = logging.getLogger("phyassist.store")


class IndexUpkeep:
    """The index on disk: a base of :class:`~engine.vault.store.Store` (it provides
    ``_index``, ``_pending``, ``_flush_timer``, ``_damaged``, ``_manifest``, ``_mutex``)."""

    INDEX_FLUSH_DELAY_S = 2.0  # how long a saved record may stay ahead of index.bin on disk

    @contextmanager
    def _changing(self, *, defer: bool) -> Iterator[None]:
        """Bracket a change to record files: durable pending marker first, index after."""
        self._require_writer()
        self._mark_pending()
        ok = False
        try:
            with self._index.storage.deferred():
                yield
            ok = True
        finally:
            if ok and defer:
                self._schedule_flush()
            else:
                self._flush_index(raise_errors=False)

    def _mark_pending(self) -> None:
        if self._pending:
            return
        # The manifest says "dirty" on disk before any file changes (see engine/vault/manifest.py).
        self._write_manifest(dirty=True)
        # An encrypted empty payload, so that every vault file but the header and the lock
        # is an authenticated envelope (what `phyassist doctor` checks).
        self._write_encrypted(
            self.vault_dir / PENDING_NAME, self._key(), b"", _aad("", "index-pending")
        )
        self._pending = True

    def _flush_index(self, *, raise_errors: bool = True) -> None:
        """Write the index if it changed, then drop the pending marker."""
        self._cancel_flush_timer()
        try:
            self._index.storage.flush()
            manifest = self._manifest
            if (
                manifest is not None
                and self.writer
                and self._manifest_strict  # not while startup still takes in a crash's files
                and (
                    self._pending
                    or manifest.dirty
                    or manifest.index_stamp != self._index.storage.stamp
                )
            ):
                self._write_manifest(dirty=False)
            if self._pending:
                with suppress(FileNotFoundError):
                    (self.vault_dir / PENDING_NAME).unlink()
                self._pending = False
        except Exception:
            if raise_errors:
                raise
            # The marker stays, so the next open repairs the index from the record files.
            logger.exception("could not write the patient index; it will be repaired on open")

    def _schedule_flush(self) -> None:
        if self._flush_timer is not None:
            return
        timer = threading.Timer(self.INDEX_FLUSH_DELAY_S, self._timed_flush)
        timer.daemon = True
        timer.name = "phyassist-index-flush"
        self._flush_timer = timer
        timer.start()

    def _timed_flush(self) -> None:
        with self._mutex:
            self._flush_timer = None
            if not self.closed:
                self._flush_index(raise_errors=False)

    def _cancel_flush_timer(self) -> None:
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None

    def flush(self) -> None:
        """Write pending index changes now (records are always written at once)."""
        with self._mutex:
            self._require_writer()
            self._flush_index()

    def _clean_leftovers(self, leftovers: list[Path]) -> None:
        if not self.writer:
            return
        for directory in leftovers:
            if self._manifest is not None and directory.name in self._manifest.patients:
                continue  # a patient the vault wrote whose record is gone: reported, kept
            shred_file(directory / KEY_FILE)
            self._remove_patient_dir(directory)

    def _verify_index(self) -> None:
        """After a writer died: refresh every row whose record changed since the index."""
        complete, leftovers = self._scan()
        self._clean_leftovers(leftovers)
        upserts: list[tuple[PatientSummary, Stamp | None]] = []
        removals = [pid for pid in self._index.ids() if pid not in complete]
        for pid, stamp in complete.items():
            if self._index.stamp(pid) == stamp:
                continue
            try:
                patient, has_adapter, fresh = self._read_record(pid)
            except PhyAssistError as exc:
                self._damaged[pid] = str(exc)
                if pid in self._index:
                    removals.append(pid)
                continue
            upserts.append((self._summary_of(patient, has_adapter), fresh))
        with self._index.storage.deferred():
            self._index.apply(upserts, removals)
        self.index_repaired = len(upserts) + len(removals)
        if self.writer:
            self._flush_index()

    def rebuild_index(self) -> int:
        """Recreate the index from the record files; returns the number of patients indexed.

        Unreadable records are left out and reported by :meth:`damaged_patients`.
        """
        with self._mutex:
            self._key()
            self._cancel_flush_timer()
            complete, leftovers = self._scan()
            self._clean_leftovers(leftovers)
            self._damaged.clear()
            rows = []
            for pid in sorted(complete):
                try:
                    patient, has_adapter, stamp = self._read_record(pid)
                except PhyAssistError as exc:
                    self._damaged[pid] = str(exc)
                    continue
                rows.append(PatientIndex.make_row(self._summary_of(patient, has_adapter), stamp))
            self._index.replace_all(rows)
            if self.writer:
                self._pending = self._pending or (self.vault_dir / PENDING_NAME).exists()
                self._flush_index()
            return len(rows)

    def damaged_patients(self) -> dict[str, str]:
        """Patients whose record could not be read at the last index check: id -> reason."""
        with self._mutex:
            return dict(self._damaged)
