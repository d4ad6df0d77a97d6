"""Deleting a patient: cryptographic erase as a transaction a later open finishes.

A durable tombstone in the manifest comes first, then the wrapped data key is shredded
(from then on nothing of the patient can be decrypted), then the folder and the index row
go, then the tombstone. Each step after the tombstone can be repeated, so an open that
finds a tombstone (the writer died) completes the deletion.
"""

from __future__ import annotations

from engine.errors import PatientNotFound
from engine.vault.atomicio import shred_file
from engine.vault.files import KEY_FILE

# Test hook: called with a step name at each durable step of a multi-step change (deletion),
# so tests can kill the process exactly there. None in the product.
fault_hook = None


def _step(name: str) -> None:
    if fault_hook is not None:
        fault_hook(name)


class PatientDeletion:
    """:meth:`delete_patient`: a base of :class:`~engine.vault.store.Store` (it provides
    the manifest, the index and the data-key cache)."""

    def delete_patient(self, patient_id: str) -> None:
        """Cryptographic erase, as a transaction a later open finishes if this one dies.

        A durable tombstone in the manifest first, then the wrapped data key is shredded,
        then the folder and the index row are removed, then the tombstone.
        """
        with self._mutex:
            self._require_writer()
            directory = self._patient_dir(patient_id)
            if not directory.is_dir() and patient_id not in self._index:
                raise PatientNotFound(f"No patient with id {patient_id!r}.")
            with self._changing(defer=False):
                if self._manifest is not None:
                    self._manifest.deleting.add(patient_id)
                    self._write_manifest(dirty=True)
                _step("delete:tombstoned")
                self._complete_delete(patient_id)

    def _complete_delete(self, patient_id: str) -> None:
        """The steps after the tombstone; each can be repeated after a kill."""
        directory = self._patient_dir(patient_id)
        shred_file(directory / KEY_FILE)
        self._data_keys.pop(patient_id, None)
        _step("delete:key_shredded")
        self._remove_patient_dir(directory)
        _step("delete:folder_removed")
        self._damaged.pop(patient_id, None)
        self._index.remove(patient_id)
        if self._manifest is not None:
            self._manifest.patients.pop(patient_id, None)
            self._manifest.deleting.discard(patient_id)
