"""Corrections of the saved record: basic information, amended notes, deleted notes.

A counselor corrects what was saved rather than living with it: the name and basic
information (Alt+I, or the F10 menu), a note amended (the text it had is kept, encrypted,
as an earlier version with the time and an optional reason, and can be viewed), a note
deleted (its text goes; a dated tombstone with the reason stays until the patient is
deleted). Each change is one ``Session`` call, which writes the audit entry
(patient_updated, note_amended, note_deleted). ``RecordCorrections`` is a base of
``WorkspaceScreen`` (it reads the screen's ``patient``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from textual import work
from textual.screen import Screen

from engine.errors import PhyAssistError
from phyassist_tui.messages import PatientSaved
from phyassist_tui.screens.new_patient import NewPatientScreen
from phyassist_tui.widgets.notes_view import NotesView
from phyassist_tui.widgets.text import clean

if TYPE_CHECKING:
    from engine.records import Patient

BASIC = "basic"  # the F10 menu's choice that is not a note


class RecordCorrections(Screen):
    """Base of ``WorkspaceScreen``: Alt+I (basic information) and the F10 record menu.

    A ``Screen`` subclass (not a plain mixin), like the workspace's other bases."""

    patient: Patient | None

    def action_edit_basic(self) -> None:
        patient = self.patient
        if patient is None:
            self.notify("Open a patient first.", severity="warning")
            return
        limits = self.app.settings.limits
        patient_id = patient.id

        def done(result: tuple[str, Any] | None) -> None:
            if result is not None:
                name, basic = result
                self._correct_record(
                    lambda s: s.update_patient_info(patient_id, name=name, basic=basic),
                    "Basic information saved.",
                )

        self.app.push_screen(
            NewPatientScreen(
                max_name=limits.max_name_chars,
                max_field=limits.max_field_chars,
                initial=(patient.name, patient.basic),
            ),
            done,
        )

    def action_note_actions(self) -> None:
        """Pick a saved note (then amend it, see its versions, or delete it), or the basic
        information."""
        from phyassist_tui.bindings import key_display
        from phyassist_tui.screens.choose import ChooseScreen
        from phyassist_tui.widgets.text import format_when

        patient = self.patient
        if patient is None:
            self.notify("Open a patient first.", severity="warning")
            return
        choices = []
        for number, note in enumerate(patient.notes, start=1):  # oldest = 1, as stored
            words = " ".join(clean(note.question).split())
            words = words[:50] + "…" if len(words) > 50 else words
            amended = " (amended)" if note.amended else ""
            choices.append((note.id, f"{number}. {format_when(note.created)}{amended}: {words}"))
        edit_key = key_display(self.app, "workspace.edit_basic")
        choices.append((BASIC, f"Edit basic information… ({edit_key})"))
        title = "Which note?" if patient.notes else "No saved note yet."

        def picked(choice: str | None) -> None:
            if choice == BASIC:
                self.action_edit_basic()
            elif choice is not None:
                self._note_menu(choice)

        self.app.push_screen(ChooseScreen(title, choices), picked)

    def _note_menu(self, note_id: str) -> None:
        from phyassist_tui.screens.choose import ChooseScreen
        from phyassist_tui.screens.records import NoteEditScreen, NoteHistoryScreen, ReasonScreen

        patient = self.patient
        if patient is None:
            return
        note = patient.note(note_id)
        patient_id = patient.id

        def amended(result: Any) -> None:
            if result is None:
                return
            question, observed, analysis, reason = result
            self._correct_record(
                lambda s: s.amend_note(
                    patient_id,
                    note_id,
                    question=question,
                    observed_state=observed,
                    analysis=analysis,
                    reason=reason,
                ),
                "Note amended; the earlier version is kept.",
            )

        def deleted(reason: str | None) -> None:
            if reason is not None:
                self._correct_record(
                    lambda s: s.delete_note(patient_id, note_id, reason),
                    "Note deleted (a dated tombstone stays in the record).",
                )

        def chosen(what: str | None) -> None:
            if what == "amend":
                self.app.push_screen(NoteEditScreen(note), amended)
            elif what == "history":
                self.app.push_screen(NoteHistoryScreen(note))
            elif what == "delete":
                self.app.push_screen(
                    ReasonScreen(
                        "Delete this note? Its text and earlier versions are erased; a dated "
                        "tombstone with your reason stays until the patient is deleted.",
                        yes="Delete note",
                    ),
                    deleted,
                )

        versions = len(note.versions)
        self.app.push_screen(
            ChooseScreen(
                "This note:",
                [
                    ("amend", "Amend (the current text is kept as an earlier version)"),
                    ("history", f"History ({versions} earlier version{'s' * (versions != 1)})"),
                    ("delete", "Delete…"),
                ],
            ),
            chosen,
        )

    @work(thread=True, name="correct-record", group="store-write", exit_on_error=False)
    def _correct_record(self, change: Callable[[Any], Patient], done: str) -> None:
        """Run ``change(session)`` (the Session audits it); show the updated record."""
        try:
            updated = change(self.app.session)
        except PhyAssistError as exc:
            self.app.call_from_thread(self.notify, f"Not saved: {exc}", severity="error")
            return
        self.post_message(PatientSaved(updated))
        self.app.call_from_thread(self._record_corrected, updated, done)

    async def _record_corrected(self, patient: Patient, done: str) -> None:
        if self.patient is None or self.patient.id != patient.id:
            return
        self.patient = patient
        self.sub_title = clean(patient.name)
        await self.query_one(NotesView).show_patient(patient)
        self.notify(done)


__all__ = ["RecordCorrections"]
