"""The open patient's record: basic information and dated notes, as Markdown."""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.content import Content
from textual.widgets import Static

from phyassist_tui.widgets.text import patient_markdown

if TYPE_CHECKING:
    from engine.records import Patient


def empty_hint(new_patient_key: str) -> Content:
    """What the Notes tab says before a patient is open (with the key that works here)."""
    return Content.assemble(
        ("No patient open", "bold"),
        "\n\nPick a patient on the left and press ",
        ("Enter", "bold"),
        ", or ",
        (new_patient_key, "bold"),
        " to add one. ",
        ("F1", "bold"),
        " shows how PhyAssist works.",
    )


class NotesView(VerticalScroll):
    """Until a patient is opened a plain hint: the Markdown widget (its parser, and the
    widgets it mounts a frame later) is made on the first open, off the launch path."""

    DEFAULT_CSS = """
    NotesView { height: 1fr; padding: 0 1; }
    NotesView > Markdown { margin: 0; }
    NotesView > #notes-empty { padding: 1 2; }
    """

    def compose(self) -> ComposeResult:
        from phyassist_tui.bindings import key_display

        yield Static(empty_hint(key_display(self.app, "workspace.new_patient")), id="notes-empty")

    async def show_patient(self, patient: Patient | None) -> None:
        empty = self.query_one("#notes-empty", Static)
        found = self.query("#notes-markdown")
        self.scroll_home(animate=False)
        if patient is None:
            empty.display = True
            if found:
                found.first().display = False
            return
        from textual.widgets import Markdown

        if found:
            markdown = found.first(Markdown)
        else:
            markdown = Markdown(id="notes-markdown")
            await self.mount(markdown)
        empty.display = False
        markdown.display = True
        await markdown.update(patient_markdown(patient))
