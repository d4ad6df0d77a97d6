"""The counseling question (multi-line), the optional observation, and the live draft."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Input, Label, TextArea

from phyassist_tui.focus import TextInput, text_area_class
from phyassist_tui.widgets.stream_view import StreamView
from phyassist_tui.widgets.text import clean


class AnalysisPane(Vertical):
    DEFAULT_CSS = """
    AnalysisPane { height: 1fr; }
    AnalysisPane > Label { color: $text-muted; padding: 0 1; }
    AnalysisPane > #question { height: 6; min-height: 3; }
    AnalysisPane > #observed { margin: 0; }
    """

    def compose(self) -> ComposeResult:
        yield Label("Counseling question (the client's statement)")
        yield text_area_class()(id="question", soft_wrap=True, show_line_numbers=False)
        yield TextInput(placeholder="Observed state (optional)", id="observed")
        yield StreamView("The draft streams here.", id="stream")

    @property
    def question(self) -> str:
        return clean(self.query_one("#question", TextArea).text).strip()

    @property
    def observed(self) -> str:
        return clean(self.query_one("#observed", Input).value).strip()

    def set_inputs(self, question: str, observed: str) -> None:
        self.query_one("#question", TextArea).load_text(question)
        self.query_one("#observed", Input).value = observed

    @property
    def stream(self) -> StreamView:
        return self.query_one(StreamView)
