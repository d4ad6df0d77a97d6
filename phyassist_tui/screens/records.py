"""Correcting a saved record: amend a note (earlier versions kept), see its history, delete it.

The screens only collect what the counselor wants; the workspace writes it to the vault
(``Store.amend_note`` / ``Store.delete_note``), which keeps the earlier version, encrypted,
with its time and the optional reason.
"""

from __future__ import annotations

from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Markdown, Static, TextArea

from engine.records import AnalysisDraft, Item, Note, items_from_lines
from phyassist_tui.focus import HandOffInput, TextInput, hand_off_text_area_class
from phyassist_tui.widgets.text import clean, draft_markdown, format_when, md_block

AmendResult = tuple[str, str, AnalysisDraft, str]  # question, observed, analysis, reason


def item_lines(items: list[Item]) -> str:
    return "\n".join(clean(i.text) for i in items if not i.deleted)


class NoteEditScreen(ModalScreen[AmendResult | None]):
    """Amend a saved note: the statement, observation, symptom type, reasons and advice."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+s", "save", "Save amendment", id="amend.save"),
        Binding("escape", "cancel", "Cancel", id="amend.cancel"),
    ]
    AUTO_FOCUS = None  # focused in on_mount without scrolling the first label away
    DEFAULT_CSS = """
    NoteEditScreen { align: center middle; }
    NoteEditScreen > #amend-form {
        width: 100; max-width: 100%; height: 100%; max-height: 44;
        border: round $warning; background: $surface;
    }
    NoteEditScreen #amend-scroll { height: 1fr; padding: 0 1; }
    NoteEditScreen Label { margin-top: 1; color: $text-primary; }
    NoteEditScreen TextArea { height: 5; }
    NoteEditScreen #amend-error { color: $text-error; height: auto; padding: 0 1; }
    NoteEditScreen #amend-buttons { height: auto; align-horizontal: right; padding: 0 1; }
    NoteEditScreen Button { margin-left: 1; }
    """

    def __init__(self, note: Note) -> None:
        super().__init__()
        self.note = note

    def compose(self) -> ComposeResult:
        a = self.note.analysis
        area = hand_off_text_area_class()  # Tab in a fast burst moves on in order
        with Vertical(id="amend-form") as form:
            form.border_title = (
                f"Amend the note of {format_when(self.note.created)} · Ctrl+S saves · Esc cancels"
            )
            with VerticalScroll(id="amend-scroll"):
                yield Label("Counseling question")
                yield area(clean(self.note.question), id="amend-question", soft_wrap=True)
                yield Label("Observed state")
                yield HandOffInput(
                    value=clean(self.note.observed_state),
                    id="amend-observed",
                    hand_off_to="#amend-symptom",
                )
                yield Label("Symptom type")
                yield HandOffInput(
                    value=clean(a.symptom_type.text),
                    id="amend-symptom",
                    hand_off_to="#amend-reasons",
                )
                yield Label("Reasons (one per line)")
                yield area(item_lines(a.reasons), id="amend-reasons", soft_wrap=True)
                yield Label("Advice (one per line)")
                yield area(item_lines(a.advice), id="amend-advice", soft_wrap=True)
                yield Label("Why (optional; kept with the earlier version)")
                yield TextInput(placeholder="e.g. wrong dosage noted", id="amend-reason")
            yield Static("The earlier version is kept (F10 → History).", id="amend-error")
            with Horizontal(id="amend-buttons"):
                yield Button("Cancel", id="cancel")
                yield Button("Save amendment", id="save", variant="warning")

    def result(self) -> AmendResult | str:
        question = clean(self.query_one("#amend-question", TextArea).text).strip()
        if not question:
            return "The counseling question cannot be empty."
        analysis = self.note.analysis.model_copy(deep=True)
        symptom = " ".join(clean(self.query_one("#amend-symptom", Input).value).split())
        analysis.symptom_type.text = symptom
        analysis.reasons = items_from_lines(
            self.note.analysis.reasons, clean(self.query_one("#amend-reasons", TextArea).text)
        )
        analysis.advice = items_from_lines(
            self.note.analysis.advice, clean(self.query_one("#amend-advice", TextArea).text)
        )
        observed = clean(self.query_one("#amend-observed", Input).value).strip()
        reason = " ".join(clean(self.query_one("#amend-reason", Input).value).split())
        return question, observed, analysis, reason

    def on_mount(self) -> None:
        self.query_one("#amend-question").focus(scroll_visible=False)

    @on(Button.Pressed, "#save")
    def action_save(self) -> None:
        result = self.result()
        if isinstance(result, str):
            self.query_one("#amend-error", Static).update(result)
            return
        self.dismiss(result)

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)


def history_markdown(note: Note) -> str:
    """Every version of a note, newest first, each with when it was written and why replaced."""
    parts = [f"# Note of {format_when(note.created)}", ""]
    current = note.amended or note.created
    parts += [f"## Current version (saved {format_when(current)})", ""]
    parts += [md_block(note.question), "", draft_markdown(note.analysis, level=3), ""]
    for number, version in reversed(list(enumerate(note.versions, start=1))):
        why = f" — reason: {md_block(version.reason)}" if version.reason.strip() else ""
        parts += [
            f"## Version {number} (saved {format_when(version.written)}, "
            f"replaced {format_when(version.replaced)}){why}",
            "",
            md_block(version.question),
            "",
        ]
        if version.observed_state.strip():
            parts += [f"**Observed state:** {md_block(version.observed_state)}", ""]
        parts += [draft_markdown(version.analysis, level=3), ""]
    if not note.versions:
        parts += ["*Never amended.*"]
    return "\n".join(parts)


class NoteHistoryScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q", "close", "Close", id="history.close"),
    ]
    DEFAULT_CSS = """
    NoteHistoryScreen { align: center middle; }
    NoteHistoryScreen > VerticalScroll {
        width: 100; max-width: 100%; height: 100%; max-height: 44;
        border: round $accent; background: $surface; padding: 0 1;
    }
    """

    def __init__(self, note: Note) -> None:
        super().__init__()
        self.note = note

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="history-body") as body:
            body.border_title = "Versions of this note (Esc closes)"
            yield Markdown(history_markdown(self.note), id="history-markdown")

    def action_close(self) -> None:
        self.dismiss(None)


class ReasonScreen(ModalScreen[str | None]):
    """A yes/no question with an optional reason; dismisses with the reason, or ``None``."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel", id="reason.cancel"),
    ]
    DEFAULT_CSS = """
    ReasonScreen { align: center middle; }
    ReasonScreen > Vertical {
        width: 70; max-width: 100%; height: auto; border: round $error;
        background: $surface; padding: 1 2;
    }
    ReasonScreen Horizontal { height: auto; align-horizontal: right; margin-top: 1; }
    ReasonScreen Button { margin-left: 1; }
    """

    def __init__(self, question: str, yes: str) -> None:
        super().__init__()
        self.question, self.yes = question, yes

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(self.question, markup=False)
            yield TextInput(placeholder="Reason (optional); Enter confirms", id="reason")
            with Horizontal():
                yield Button("Cancel (Esc)", id="cancel")
                yield Button(self.yes, id="yes", variant="error")

    @on(Input.Submitted, "#reason")
    @on(Button.Pressed, "#yes")
    def _confirm(self) -> None:
        self.dismiss(" ".join(clean(self.query_one("#reason", Input).value).split()))

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)
