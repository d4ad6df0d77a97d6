"""A scrolling view for streamed model text that sticks to the bottom, and the buffer that
feeds it.

Textual's anchor keeps the view at the end while text arrives, until the counselor
scrolls up to read; scrolling back to the end re-anchors it.

Streamed text is shown at most ten times a second (:class:`StreamBuffer`): every update of
the text changes its height, which makes Textual lay out the whole screen; at one layout per
token the keys typed meanwhile wait behind them. A few repaints a second read just as live
and leave the loop free for keys. ``StreamView.feed`` buffers; ``flush`` shows what is held.
"""

from __future__ import annotations

from collections.abc import Callable

from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.dom import DOMNode
from textual.timer import Timer
from textual.widgets import Static

from phyassist_tui.widgets.text import clean, plain

STREAM_FLUSH_S = 0.1  # streamed text is shown at most ten times a second


class StreamBuffer:
    """Joins chunks and hands them to ``sink`` at most every ``interval`` seconds, on a timer
    of ``owner`` (so a chunk never waits longer than that to be shown)."""

    def __init__(
        self, owner: DOMNode, sink: Callable[[str], object], interval: float = STREAM_FLUSH_S
    ) -> None:
        self._owner = owner
        self._sink = sink
        self._interval = interval
        self._pending: list[str] = []
        self._timer: Timer | None = None

    def feed(self, chunk: str) -> None:
        self._pending.append(chunk)
        if self._timer is None:
            self._timer = self._owner.set_timer(self._interval, self.flush)

    def flush(self) -> None:
        """Show what is held now (before the stream's end is handled, in order)."""
        if self._timer is not None:
            self._timer.stop()
            self._timer = None
        text = "".join(self._pending)
        self._pending.clear()
        if text:
            self._sink(text)

    def discard(self) -> None:
        """Drop what is held (the view is being reset)."""
        if self._timer is not None:
            self._timer.stop()
            self._timer = None
        self._pending.clear()


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
        self._buffer = StreamBuffer(self, self.append)

    def compose(self) -> ComposeResult:
        yield Static(self._placeholder, classes="stream-text", markup=False)

    def on_mount(self) -> None:
        self.anchor()

    @property
    def text(self) -> str:
        """What is shown (``flush`` first to include the chunks still held)."""
        return self._text

    def set_text(self, text: str) -> None:
        self._buffer.discard()  # held chunks belonged to the text being replaced
        self._text = clean(text)
        shown = self._text.lstrip()  # blank lines the model starts with are not worth a screen
        self.query_one(".stream-text", Static).update(plain(shown or self._placeholder))

    def append(self, chunk: str) -> None:
        """Show ``chunk`` now (see ``feed`` for streamed text)."""
        self._text = clean(self._text + chunk)
        shown = self._text.lstrip()
        self.query_one(".stream-text", Static).update(plain(shown or self._placeholder))

    def feed(self, chunk: str) -> None:
        """Streamed text: shown with the next flush (at most STREAM_FLUSH_S later)."""
        self._buffer.feed(chunk)

    def flush(self) -> None:
        self._buffer.flush()
