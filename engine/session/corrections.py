"""Corrections of a saved record, as Session methods: basic information, amended notes,
deleted notes (issue 16). Each is one vault call that writes its own audit entry
(patient_updated; note_amended and note_deleted with the note id), so that no front end
writes to the vault or the audit log directly. A base of :class:`~engine.session.Session`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine.records import AnalysisDraft, BasicInfo, Patient
    from engine.session.backend import VaultStore


class RecordCorrections:
    """The record-correction methods of the Session (it provides ``_vault``/``_audit``)."""

    _vault: Callable[..., Any]
    _audit: Callable[..., None]

    def update_patient_info(
        self, patient_id: str, *, name: str | None = None, basic: BasicInfo | None = None
    ) -> Patient:
        """Correct the name and/or the basic information (audited as patient_updated)."""

        def save(store: VaultStore) -> Patient:
            updated = store.update_patient_info(patient_id, name=name, basic=basic)
            self._audit(store, "patient_updated", patient_id)
            return updated

        return self._vault(save)

    def amend_note(
        self,
        patient_id: str,
        note_id: str,
        *,
        question: str | None = None,
        observed_state: str | None = None,
        analysis: AnalysisDraft | None = None,
        reason: str = "",
    ) -> Patient:
        """Replace a note's content; the store keeps the content it had as an earlier,
        encrypted version with ``reason``. Audited as note_amended (detail: the note id)."""

        def amend(store: VaultStore) -> Patient:
            updated = store.amend_note(
                patient_id,
                note_id,
                question=question,
                observed_state=observed_state,
                analysis=analysis,
                reason=reason,
            )
            self._audit(store, "note_amended", patient_id, note_id)
            return updated

        return self._vault(amend)

    def delete_note(self, patient_id: str, note_id: str, reason: str = "") -> Patient:
        """Delete a note: its text and versions go, a dated tombstone with ``reason`` stays
        until the patient is deleted. Audited as note_deleted (detail: the note id)."""

        def delete(store: VaultStore) -> Patient:
            updated = store.delete_note(patient_id, note_id, reason)
            self._audit(store, "note_deleted", patient_id, note_id)
            return updated

        return self._vault(delete)
