"""The Similar pane: own cases and reference entries that resemble the current statement.

Each row shows the source (own case with pseudonym and date, or the reference corpus and
its topic/label) and the passage that matched. Enter opens the whole entry; ``i`` inserts
the entry's point into the draft's advice as an item carrying a ``[n]`` citation. The
screen does the lookup (it knows the statement and the vault) and hands matches back.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.content import Content
from textual.widgets import Label, OptionList
from textual.widgets.option_list import Option

from phyassist_tui.bindings import bindings_for
from phyassist_tui.messages import CitedPointRequested, SimilarRequested
from phyassist_tui.screens.entry import EntryScreen
from phyassist_tui.widgets.text import clean

POINT_CHARS = 240


def cited_point(entry, passage: str) -> str:
    """The text of an inserted advice item: the entry's advice (its first lines or
    sentences, up to ``POINT_CHARS``), else the passage that matched."""
    from engine.inference.prompts import detect_language
    from engine.knowledge.text import sentences

    source = entry.advice.strip() or passage
    joiner = "；" if detect_language(source) == "zh" else "; "
    pieces = [p for line in source.splitlines() for p in sentences(" ".join(line.split()))]
    point = ""
    for piece in pieces:
        candidate = f"{point}{joiner}{piece}" if point else piece
        if point and len(candidate) > POINT_CHARS:
            break
        point = candidate
    if len(point) > POINT_CHARS:
        point = point[: POINT_CHARS - 1].rstrip() + "…"
    return point or passage


class SimilarPane(Vertical):
    BINDINGS = bindings_for("similar")
    DEFAULT_CSS = """
    SimilarPane { height: 1fr; }
    SimilarPane > #similar-status { color: $text-muted; padding: 0 1; width: 100%; }
    SimilarPane > OptionList { height: 1fr; }
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.matches: list = []  # engine.knowledge.entries.Match

    def compose(self) -> ComposeResult:
        yield Label("Similar cases and references for the current statement.", id="similar-status")
        yield OptionList(id="similar-list")

    def set_status(self, text: str) -> None:
        self.query_one("#similar-status", Label).update(Content(clean(text)))

    def show_matches(self, matches: list, status: str) -> None:
        self.matches = list(matches)
        listing = self.query_one(OptionList)
        listing.clear_options()
        for n, match in enumerate(self.matches, 1):
            source = Content.styled(f"[{n}] {match.entry.citation_label}", "bold")
            passage = Content(clean(" ".join(match.passage.split())))
            listing.add_option(Option(Content.assemble(source, "\n    ", passage)))
        if self.matches:
            listing.highlighted = 0
        self.set_status(status)

    @property
    def selected(self):
        index = self.query_one(OptionList).highlighted
        if index is None or not 0 <= index < len(self.matches):
            return None
        return self.matches[index]

    def focus_list(self) -> None:
        self.query_one(OptionList).focus()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("open_entry", "insert_point"):
            return self.selected is not None
        return True

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        self.action_open_entry()

    def action_open_entry(self) -> None:
        match = self.selected
        if match is not None:
            entry = match.entry
            self.app.push_screen(EntryScreen(entry.citation_label, entry.title, entry.text))

    def action_insert_point(self) -> None:
        match = self.selected
        if match is None:
            return
        from engine.knowledge.grounding import citation_for  # not at import: it pulls scipy

        passage = " ".join(match.passage.split())
        citation = citation_for(match, "", passage)  # the draft numbers it
        self.post_message(CitedPointRequested(cited_point(match.entry, match.passage), citation))

    def action_refresh_similar(self) -> None:
        self.post_message(SimilarRequested())
