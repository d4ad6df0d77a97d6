"""The offer of an unsaved draft kept from last time: restore, later, or discard.

Esc (or n) means *later*: the kept draft stays encrypted in the vault and is offered again
the next time the patient is opened. Only the explicit Discard deletes it.

The offer can appear while the counselor is typing the statement of the patient just opened.
Letters typed on through its appearance are text, not answers (an ``x`` in "relax" would
discard the kept draft): they go to the field being typed in until the typing pauses.
"""

from __future__ import annotations

import time
from typing import ClassVar, Literal

from textual import events, on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Static

from phyassist_tui.focus import is_text_field, type_into

RestoreChoice = Literal["restore", "later", "discard"]

TYPING_PAUSE_S = 0.8  # a key this soon after the last typed one is still typing


class RestoreDraftScreen(ModalScreen[RestoreChoice]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y,r", "answer('restore')", "Restore", id="restore.yes"),
        Binding("n,l,escape", "answer('later')", "Later", id="restore.later"),
        Binding("x", "answer('discard')", "Discard", id="restore.discard"),
    ]
    DEFAULT_CSS = """
    RestoreDraftScreen { align: center middle; }
    RestoreDraftScreen > Vertical {
        width: 66; max-width: 100%; height: auto; border: round $warning;
        background: $surface; padding: 1 2;
    }
    RestoreDraftScreen Horizontal { height: auto; align-horizontal: right; margin-top: 1; }
    RestoreDraftScreen Button { margin-left: 1; }
    RestoreDraftScreen #restore-hint { color: $text-muted; margin-top: 1; }
    """

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question
        self._typing_until = 0.0  # keys before this are typing, not answers

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(self.question, markup=False)
            yield Static(
                "Later (Esc) keeps it encrypted and asks again next time; only Discard deletes it.",
                id="restore-hint",
                markup=False,
            )
            with Horizontal():
                yield Button("Discard (x)", id="discard", variant="error")
                yield Button("Later (Esc)", id="later")
                yield Button("Restore (y)", id="restore", variant="primary")

    def on_mount(self) -> None:
        self.query_one("#restore").focus()
        last_typed = getattr(self.app, "last_typed_at", None)
        typing = last_typed is not None and time.monotonic() - last_typed < TYPING_PAUSE_S
        self._typing_until = time.monotonic() + TYPING_PAUSE_S if typing else 0.0

    def on_key(self, event: events.Key) -> None:
        """While the counselor types on, keys go to the field beneath, not to the buttons."""
        now = time.monotonic()
        if now >= self._typing_until:
            return
        event.stop()
        event.prevent_default()
        self._typing_until = now + TYPING_PAUSE_S
        stack = self.app.screen_stack
        field = stack[-2].focused if len(stack) > 1 else None
        if event.is_printable and event.character and is_text_field(field):
            type_into(field, event.character)  # type: ignore[arg-type]

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id)  # type: ignore[arg-type]

    def action_answer(self, choice: RestoreChoice) -> None:
        self.dismiss(choice)
