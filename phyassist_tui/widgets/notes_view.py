"""The open patient's record: basic information and dated notes, as Markdown."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Markdown

from engine.records import Patient
from phyassist_tui.widgets.text import patient_markdown

EMPTY = (
    "# No patient open\n\nPick a patient on the left and press **Enter**, or **Ctrl+N** to add one."
)


class NotesView(VerticalScroll):
    DEFAULT_CSS = """
    NotesView { height: 1fr; padding: 0 1; }
    NotesView > Markdown { margin: 0; }
    """

    def compose(self) -> ComposeResult:
        yield Markdown(EMPTY, id="notes-markdown")

    def show_patient(self, patient: Patient | None):
        text = patient_markdown(patient) if patient is not None else EMPTY
        self.scroll_home(animate=False)
        return self.query_one(Markdown).update(text)
