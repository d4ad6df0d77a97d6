"""A scrolling view for streamed model text that sticks to the bottom.

Textual's anchor keeps the view at the end while text arrives, until the counselor
scrolls up to read; scrolling back to the end re-anchors it.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Static

from phyassist_tui.widgets.text import clean, plain


class StreamView(VerticalScroll):
    """Plain (never markup) streamed text."""

    DEFAULT_CSS = """
    StreamView { height: 1fr; border: round $primary-muted; padding: 0 1; }
    StreamView > Static { width: 1fr; }
    """

    def __init__(self, placeholder: str = "", **kwargs) -> None:
        super().__init__(**kwargs)
        self._placeholder = placeholder
        self._text = ""

    def compose(self) -> ComposeResult:
        yield Static(self._placeholder, classes="stream-text", markup=False)

    def on_mount(self) -> None:
        self.anchor()

    @property
    def text(self) -> str:
        return self._text

    def set_text(self, text: str) -> None:
        self._text = clean(text)
        shown = self._text.lstrip()  # blank lines the model starts with are not worth a screen
        self.query_one(".stream-text", Static).update(plain(shown or self._placeholder))

    def append(self, chunk: str) -> None:
        self.set_text(self._text + chunk)
