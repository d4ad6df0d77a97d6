"""Encrypted blobs: what a patient file holds besides the record, and vault-level items.

Per-patient blobs (drafts, chat, adapters, training logs) are encrypted under the
patient's data key, vault-level blobs (the audit log, registries) under the master key.
Each is bound to its kind, so a blob copied to another kind or patient fails to decrypt,
and each write is recorded in the manifest so an older copy is noticed.
"""

from __future__ import annotations

from contextlib import suppress

from engine.errors import InputRejected, PatientNotFound
from engine.vault import crypto
from engine.vault.atomicio import ensure_dir, fsync_dir
from engine.vault.files import BLOBS_DIR, KEY_FILE, VAULT_BLOBS_DIR, _aad, _as_bytes, _stamp_of


class BlobStore:
    """Writing, reading, deleting and listing blobs: a base of
    :class:`~engine.vault.store.Store`."""

    def _check_blob_size(self, kind: str, data: bytes) -> None:
        if len(data) > self.limits.max_blob_bytes:
            raise InputRejected(
                f"{kind!r} is {len(data) / 1e6:.1f} MB; the limit for one stored item is "
                f"{self.limits.max_blob_bytes / 1e6:.0f} MB (PHYASSIST_LIMITS__MAX_BLOB_BYTES). "
                "Nothing was saved."
            )

    def write_blob(self, patient_id: str, kind: str, data: bytes) -> None:
        """Encrypt ``data`` under the patient's key as ``kind`` (e.g. "draft", "adapter/v3")."""
        with self._mutex:
            self._require_writer()
            path = self._blob_path(patient_id, kind)
            data = _as_bytes(data)
            self._check_blob_size(kind, data)
            key = self._data_key(patient_id)
            ensure_dir(path.parent)
            with self._changing(defer=True):
                envelope = self._write_encrypted(path, key, data, _aad(patient_id, f"blob:{kind}"))
                entry = self._manifest_entry(patient_id)
                if entry is not None:
                    entry.blobs[kind] = _stamp_of(envelope)

    def read_blob(self, patient_id: str, kind: str) -> bytes | None:
        """The blob's bytes, or None if never written.

        Raises TamperedFile, PatientNotFound, RolledBack (an older copy, or a blob the vault
        wrote that is gone).
        """
        with self._mutex:
            self._key()
            path = self._blob_path(patient_id, kind)
            key = self._data_key(patient_id)
            try:
                blob = self._read_file(path)
            except FileNotFoundError:
                blob = None
            self._verify_stamp(patient_id, kind, None if blob is None else _stamp_of(blob))
            if blob is None:
                return None
            return crypto.decrypt(key, blob, _aad(patient_id, f"blob:{kind}"), label=path)

    def delete_blob(self, patient_id: str, kind: str) -> None:
        with self._mutex:
            self._require_writer()
            path = self._blob_path(patient_id, kind)
            with self._changing(defer=True):
                with suppress(FileNotFoundError):
                    path.unlink()
                    fsync_dir(path.parent)
                entry = self._manifest_entry(patient_id)
                if entry is not None:
                    entry.blobs.pop(kind, None)

    def list_blobs(self, patient_id: str, prefix: str = "") -> list[str]:
        """Kinds of this patient's blobs that start with ``prefix``, sorted."""
        with self._mutex:
            self._key()
            directory = self._patient_dir(patient_id)
            if not (directory / KEY_FILE).is_file():
                raise PatientNotFound(f"No patient with id {patient_id!r}.")
            return self._kinds_in(directory / BLOBS_DIR, prefix)

    def write_vault_blob(self, kind: str, data: bytes) -> None:
        """Encrypt ``data`` under the master key (audit log, domain registry, ...)."""
        with self._mutex:
            self._require_writer()
            path = self._vault_blob_path(kind)
            data = _as_bytes(data)
            self._check_blob_size(kind, data)
            ensure_dir(path.parent)
            with self._changing(defer=True):
                envelope = self._write_encrypted(
                    path, self._key(), data, _aad("", f"vault-blob:{kind}")
                )
                if self._manifest is not None:
                    self._manifest.vault_blobs[kind] = _stamp_of(envelope)

    def read_vault_blob(self, kind: str) -> bytes | None:
        """The blob's bytes or None; RolledBack when it is not what the vault last wrote."""
        with self._mutex:
            path = self._vault_blob_path(kind)
            key = self._key()
            try:
                blob = self._read_file(path)
            except FileNotFoundError:
                blob = None
            self._verify_stamp(None, kind, None if blob is None else _stamp_of(blob))
            if blob is None:
                return None
            return crypto.decrypt(key, blob, _aad("", f"vault-blob:{kind}"), label=path)

    def delete_vault_blob(self, kind: str) -> None:
        with self._mutex:
            self._require_writer()
            path = self._vault_blob_path(kind)
            with self._changing(defer=True):
                with suppress(FileNotFoundError):
                    path.unlink()
                    fsync_dir(path.parent)
                if self._manifest is not None:
                    self._manifest.vault_blobs.pop(kind, None)

    def list_vault_blobs(self, prefix: str = "") -> list[str]:
        with self._mutex:
            self._key()
            return self._kinds_in(self.vault_dir / VAULT_BLOBS_DIR, prefix)
