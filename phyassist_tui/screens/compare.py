"""Compare: the domain model's draft and the patient adapter's, side by side; take either.

Keyboard-first and usable at 80x24: one row per item (symptom type, reasons, advice by
number), the domain draft on the left, the patient adapter's on the right. ←/→ take a side for
the row under the cursor, Enter takes the rows as picked, 1 / 2 take a whole draft, Esc stops
(drafting or choosing) and takes nothing. Every pick is stored (encrypted) as a preference pair
and audited (``engine.inference.compare``); the taken draft goes to the Draft tab to edit.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import ClassVar

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import ListItem, ListView, Static

from engine.inference.compare import DraftPair, Side, take_items, take_whole
from engine.records import AnalysisDraft, PreferenceChoice
from phyassist_tui.widgets.text import clean

SECTION_LABEL = {"symptom_type": "Symptom", "reasons": "Reason", "advice": "Advice"}


class CompareRow(ListItem):
    """One aligned row: the left and the right text; the taken side is marked."""

    def __init__(self, pair: DraftPair, section: str, index: int, side: Side) -> None:
        super().__init__()
        self.pair, self.section, self.index, self.side = pair, section, index, side

    def compose(self) -> ComposeResult:
        with Horizontal(classes="compare-row"):
            for side in ("left", "right"):
                cell = Static(self._cell_text(side), id=side, classes="compare-cell", markup=False)
                cell.set_class(side == self.side, "taken")
                yield cell

    def _cell_text(self, side: str) -> str:
        label = SECTION_LABEL[self.section]
        number = "" if self.section == "symptom_type" else f" {self.index + 1}"
        text = self.pair.text(side, self.section, self.index) or "—"  # type: ignore[arg-type]
        mark = "● " if side == self.side else "○ "
        return f"{mark}{label}{number}: {text}"

    def refresh_cells(self) -> None:
        for side in ("left", "right"):
            for cell in self.query(f"#{side}").results(Static):  # none before compose ran
                cell.update(self._cell_text(side))
                cell.set_class(side == self.side, "taken")


class CompareScreen(ModalScreen[AnalysisDraft | None]):
    """Both drafts of the current statement; returns the taken draft (None: nothing taken)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("left,h", "pick('left')", "Take left", id="compare.left"),
        Binding("right,l", "pick('right')", "Take right", id="compare.right"),
        Binding("enter", "accept", "Take rows", id="compare.accept", priority=True),
        Binding("1", "whole('left')", "All left", id="compare.whole_left"),
        Binding("2", "whole('right')", "All right", id="compare.whole_right"),
        Binding("escape", "stop", "Cancel", id="compare.cancel"),
    ]
    DEFAULT_CSS = """
    CompareScreen { align: center middle; }
    CompareScreen > Vertical {
        width: 100%; height: 100%; border: round $accent; background: $surface; padding: 0 1;
    }
    CompareScreen #compare-title { height: auto; text-style: bold; }
    CompareScreen #compare-heads { height: 1; }
    CompareScreen #compare-heads Static { width: 1fr; color: $text-muted; }
    CompareScreen ListView { height: 1fr; }
    CompareScreen .compare-row { height: auto; }
    CompareScreen .compare-cell { width: 1fr; height: auto; padding: 0 1 0 0; color: $text-muted; }
    CompareScreen .compare-cell.taken { color: $text; text-style: bold; }
    CompareScreen #compare-help { height: auto; color: $text-muted; }
    CompareScreen #compare-caveats { height: auto; color: $warning; display: none; }
    """

    class Chosen(Message):
        """The counselor's picks, to be stored (by the caller) as preference pairs."""

        def __init__(self, choices: list[PreferenceChoice]) -> None:
            super().__init__()
            self.choices = choices

    def __init__(
        self,
        patient_name: str,
        make_pair: Callable[[threading.Event], DraftPair],
        store_choices: Callable[[list[PreferenceChoice]], int],
        cancel: threading.Event | None = None,
    ) -> None:
        super().__init__()
        self.patient_name = patient_name
        self.make_pair = make_pair
        self.store_choices = store_choices
        # from Session.new_cancel(): its set() also wakes a wait for the model at once
        self.cancel = cancel if cancel is not None else threading.Event()
        self.pair: DraftPair | None = None
        self.picks: dict[tuple[str, int], Side] = {}
        self._touched: set[tuple[str, int]] = set()

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(
                f"Compare drafts for {self.patient_name}: drafting twice…",
                id="compare-title",
                markup=False,
            )
            with Horizontal(id="compare-heads"):
                yield Static("", id="head-left", markup=False)
                yield Static("", id="head-right", markup=False)
            yield Static("", id="compare-caveats", markup=False)
            yield ListView(id="compare-rows")
            yield Static(
                "←/→ take a side · Enter take rows · 1/2 take a whole draft · Esc cancel",
                id="compare-help",
                markup=False,
            )

    def on_mount(self) -> None:
        self._draft_both()

    @work(thread=True, exit_on_error=False, name="compare-drafts")
    def _draft_both(self) -> None:
        try:
            pair = self.make_pair(self.cancel)
        except Exception as exc:  # shown, nothing taken
            if not self.cancel.is_set():  # Esc already closed the screen
                self.app.call_from_thread(self._failed, str(exc))
            return
        if self.cancel.is_set():
            return
        self.app.call_from_thread(self._show, pair)

    def _failed(self, message: str) -> None:
        self.app.notify(message, severity="warning")
        self.dismiss(None)

    async def _show(self, pair: DraftPair) -> None:
        self.pair = pair
        self.picks = dict.fromkeys(pair.rows(), "right")  # type: ignore[arg-type]
        self.query_one("#compare-title", Static).update(f"Compare drafts for {self.patient_name}")
        self.query_one("#head-left", Static).update(f"Left: {pair.left_from}")
        self.query_one("#head-right", Static).update(f"Right: {pair.right_from}")
        caveats = [
            f"⚠ {name}: {clean(pair.caveat(side))}"  # type: ignore[arg-type]
            for side, name in (("left", "Left"), ("right", "Right"))
            if pair.caveat(side)  # type: ignore[arg-type]
        ]
        note = self.query_one("#compare-caveats", Static)
        note.update("\n".join(caveats))
        note.display = bool(caveats)
        rows = self.query_one(ListView)
        await rows.extend(CompareRow(pair, s, i, self.picks[(s, i)]) for s, i in pair.rows())
        rows.index = 0
        rows.focus()

    def _row(self) -> CompareRow | None:
        item = self.query_one(ListView).highlighted_child
        return item if isinstance(item, CompareRow) else None

    def action_pick(self, side: Side) -> None:
        row = self._row()
        if row is None:
            return
        row.side = side
        self.picks[(row.section, row.index)] = side
        self._touched.add((row.section, row.index))
        row.refresh_cells()

    def action_accept(self) -> None:
        if self.pair is None:
            return
        if not self._touched:  # nothing picked row by row: the right draft as it is
            self.action_whole("right")
            return
        picks = {row: self.picks[row] for row in self._touched}
        draft, choices = take_items(self.pair, picks, default="right")
        self._finish(draft, choices)

    def action_whole(self, side: Side) -> None:
        if self.pair is None:
            return
        draft, choices = take_whole(self.pair, side)
        self._finish(draft, choices)

    def _finish(self, draft: AnalysisDraft, choices: list[PreferenceChoice]) -> None:
        try:
            stored = self.store_choices(choices)
        except Exception as exc:  # the draft is still taken; the counselor is told
            self.app.notify(f"The choice was not stored: {exc}", severity="error")
        else:
            if stored:
                self.app.notify(f"{stored} preference(s) kept for training.")
        self.dismiss(draft)

    def action_stop(self) -> None:
        self.cancel.set()
        self.dismiss(None)
