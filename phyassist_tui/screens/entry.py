"""A read-only view of one knowledge entry or citation: title, source, full text."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Footer, Label, Static


class EntryScreen(ModalScreen[None]):
    DEFAULT_CSS = """
    EntryScreen { align: center middle; }
    EntryScreen > Vertical {
        width: 90%; height: 85%; border: round $primary; background: $surface; padding: 0 1;
    }
    EntryScreen #entry-source { color: $text-muted; }
    EntryScreen #entry-title { text-style: bold; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "dismiss_entry", "Close", id="entry.close"),
    ]

    def __init__(self, source: str, title: str, body: str) -> None:
        super().__init__()
        self._source, self._title, self._body = source, title, body

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(self._source, id="entry-source", markup=False)
            yield Label(self._title, id="entry-title", markup=False)
            with VerticalScroll():
                yield Static(self._body, id="entry-body", markup=False)
        yield Footer(compact=True)

    def action_dismiss_entry(self) -> None:
        self.dismiss(None)
