"""The offer of an unsaved draft kept from last time: restore, later, or discard.

Esc (or n) means *later*: the kept draft stays encrypted in the vault and is offered again
the next time the patient is opened. Only the explicit Discard deletes it.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Static

RestoreChoice = Literal["restore", "later", "discard"]


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

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id)  # type: ignore[arg-type]

    def action_answer(self, choice: RestoreChoice) -> None:
        self.dismiss(choice)
