"""Patients and notes as Session actions, with the draft autosave and chat history.

Each is one vault call that writes its own audit entry (patient created, opened, updated,
deleted; note saved). The unsaved draft and the chat history are encrypted blobs of the
patient; opening a patient returns any draft autosaved last time with the record.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine.records import BasicInfo, ChatMessage, Note, Patient, PatientSummary
    from engine.session.backend import VaultStore

DRAFT_BLOB = "draft"  # encrypted autosave of the unsaved draft, one per patient
KEPT_DRAFT_BLOB = "draft-kept"  # an autosave the counselor put off ("Later"), until decided


@dataclass(frozen=True)
class OpenedPatient:
    """A patient as opened: the record and any unsaved draft kept from last time.

    ``kept_autosave`` is a draft the counselor put off earlier ("Later" on the restore
    prompt): it is kept apart so that new autosaves cannot overwrite it."""

    patient: Patient
    autosave: dict[str, Any] | None = None
    kept_autosave: dict[str, Any] | None = None


class PatientActions:
    """Patient and note methods of :class:`~engine.session.Session` (a base of it; the
    Session provides ``_vault``, ``_audit`` and ``_knowledge``)."""

    _vault: Callable[..., Any]
    _audit: Callable[..., None]

    def list_patients(self, query: str = "") -> list[PatientSummary]:
        return self._vault(lambda store: store.search(query) if query else store.list_patients())

    def create_patient(self, name: str, basic: BasicInfo | None = None) -> Patient:
        def create(store: VaultStore) -> Patient:
            patient = store.create_patient(name, basic)
            self._audit(store, "patient_created", patient.id)
            return patient

        return self._vault(create)

    def open_patient(self, patient_id: str, *, detail: str | None = None) -> OpenedPatient:
        """Read a patient (audited as opened) with any draft autosaved last time."""

        def read(store: VaultStore) -> OpenedPatient:
            patient = store.load_patient(patient_id)
            blob = store.read_blob(patient_id, DRAFT_BLOB)
            kept = store.read_blob(patient_id, KEPT_DRAFT_BLOB)
            self._audit(store, "patient_opened", patient_id, detail)
            return OpenedPatient(patient, _decode_autosave(blob), _decode_autosave(kept))

        return self._vault(read)

    def update_patient(self, patient: Patient) -> None:
        def save(store: VaultStore) -> None:
            store.save_patient(patient)
            self._audit(store, "patient_updated", patient.id)

        self._vault(save)

    def delete_patient(self, patient_id: str) -> None:
        def delete(store: VaultStore) -> None:
            store.delete_patient(patient_id)
            self._audit(store, "patient_deleted", patient_id)
            self._knowledge.patient_deleted(store, patient_id)  # none of their notes shown again

        self._vault(delete)

    def save_note(self, patient_id: str, note: Note) -> Patient:
        """Add the note (audited), drop the draft's autosave it came from, and index the
        patient's notes in the knowledge index if it was read (blocking: from a worker)."""

        def write(store: VaultStore) -> tuple[VaultStore, Patient]:
            updated = store.add_note(patient_id, note)
            self._audit(store, "note_saved", patient_id)
            store.delete_blob(patient_id, DRAFT_BLOB)
            return store, updated

        store, updated = self._vault(write)
        self._knowledge.note_saved(store, updated)  # outside the vault turn: it embeds
        return updated

    # -- draft autosave and chat history (encrypted blobs of the patient) ---------------------
    def write_autosave(self, patient_id: str, payload: dict[str, Any] | None) -> None:
        """Keep what would be lost on a crash (``None`` removes it)."""

        def write(store: VaultStore) -> None:
            if payload is None:
                store.delete_blob(patient_id, DRAFT_BLOB)
            else:
                data = json.dumps(payload, ensure_ascii=False).encode("utf-8")
                store.write_blob(patient_id, DRAFT_BLOB, data)

        self._vault(write)

    def write_kept_autosave(self, patient_id: str, payload: dict[str, Any] | None) -> None:
        """Keep a draft the counselor put off ("Later") apart from the autosave, which new
        work overwrites; ``None`` removes it (restored or discarded)."""

        def write(store: VaultStore) -> None:
            if payload is None:
                store.delete_blob(patient_id, KEPT_DRAFT_BLOB)
            else:
                data = json.dumps(payload, ensure_ascii=False).encode("utf-8")
                store.write_blob(patient_id, KEPT_DRAFT_BLOB, data)

        self._vault(write)

    def load_chat(self, patient_id: str) -> list[ChatMessage]:
        from engine.vault.chat import load_history

        return self._vault(lambda store: load_history(store, patient_id))

    def save_chat(self, patient_id: str, history: list[ChatMessage]) -> None:
        from engine.vault.chat import save_history

        self._vault(lambda store: save_history(store, patient_id, history))


def _decode_autosave(blob: bytes | None) -> dict[str, Any] | None:
    if not blob:
        return None
    try:
        payload = json.loads(blob.decode("utf-8"))
    except ValueError:
        return None
    return payload if isinstance(payload, dict) else None
