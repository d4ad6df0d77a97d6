"""The patient list: incremental search, adapter markers, Enter opens."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.content import Content
from textual.timer import Timer
from textual.widgets import Input, Label, ListItem, ListView

from engine.records import PatientSummary
from phyassist_tui.messages import PatientChosen, PatientsListed
from phyassist_tui.widgets.text import clean

ADAPTER_MARK = "◆"
MODEL_LOAD_AFTER_LIST_S = 0.5


class PatientRow(ListItem):
    """One patient, drawn by the row itself (no child widgets).

    Every key typed into an ``Input`` makes Textual lay out the whole screen, at a cost that
    grows with the number of widgets; one widget per patient instead of two keeps typing
    and streaming responsive with a long list.
    """

    DEFAULT_CSS = """
    PatientRow { text-wrap: nowrap; text-overflow: ellipsis; }
    """

    def __init__(self, summary: PatientSummary) -> None:
        super().__init__()
        self.summary = summary

    def render(self) -> Content:
        s = self.summary
        mark = ADAPTER_MARK if s.has_adapter else " "
        notes = f"{s.note_count} note" + ("" if s.note_count == 1 else "s")
        return Content.assemble((mark, "$accent"), " ", clean(s.name), ("\n  " + notes, "dim"))


class PatientsPane(Vertical):
    """Search box over the list. Search runs in a worker after a short pause in typing."""

    DEFAULT_CSS = """
    PatientsPane { width: 28; border-right: vkey $primary-muted; }
    PatientsPane > #search { margin: 0; }
    PatientsPane > ListView { height: 1fr; }
    PatientsPane > #patients-hint { color: $text-muted; padding: 0 1; height: auto; }
    """

    SEARCH_DELAY_S = 0.15

    def __init__(self, patients: list[PatientSummary] | None = None, **kwargs) -> None:
        """``patients``: the list read with the unlock, shown in the first frame (no wait)."""
        super().__init__(**kwargs)
        self._search_timer: Timer | None = None
        self._initial = patients
        self.summaries: list[PatientSummary] = list(patients or [])

    def compose(self) -> ComposeResult:
        yield Input(placeholder="Search patients", id="search")
        rows = [PatientRow(s) for s in self._initial or []]
        yield ListView(*rows, id="patient-list", initial_index=0 if rows else None)
        yield Label(f"{ADAPTER_MARK} = own adapter", id="patients-hint")

    def on_mount(self) -> None:
        if self._initial is None:
            self.refresh_list()
        else:
            self._list_shown()

    @property
    def search_text(self) -> str:
        return self.query_one("#search", Input).value.strip()

    def refresh_list(self) -> None:
        """Re-run the current search (or list all) in a worker."""
        query = self.search_text

        def fetch() -> None:
            app = self.app
            patients = app.store_call(
                lambda store: store.search(query) if query else store.list_patients()
            )
            self.post_message(PatientsListed(patients, query))

        self.run_worker(
            fetch,
            name="search-patients",
            group="search",
            thread=True,
            exclusive=True,
            exit_on_error=False,
        )

    @on(Input.Changed, "#search")
    def _search_changed(self) -> None:
        if self._search_timer is not None:
            self._search_timer.stop()
        self._search_timer = self.set_timer(self.SEARCH_DELAY_S, self.refresh_list)

    @on(Input.Submitted, "#search")
    def _search_submitted(self) -> None:
        listing = self.query_one(ListView)
        if listing.children:
            listing.index = listing.index or 0
            listing.focus()

    @on(PatientsListed)
    async def _listed(self, message: PatientsListed) -> None:
        message.stop()
        if message.query != self.search_text:
            return  # a newer search is on its way
        listing = self.query_one(ListView)
        current = self.highlighted_id
        self.summaries = message.patients
        await listing.clear()
        await listing.extend(PatientRow(s) for s in message.patients)
        ids = [s.id for s in message.patients]
        listing.index = ids.index(current) if current in ids else (0 if ids else None)
        self._list_shown()

    def _list_shown(self) -> None:
        shown = getattr(self.app, "patient_list_shown", None)
        if callable(shown):
            self.call_after_refresh(shown)
        start_model_load = getattr(self.app, "start_model_load", None)
        if callable(start_model_load):
            # the list is up; once it is painted and the first keys are answered, the
            # model (importing torch holds the GIL for seconds) may take the CPU
            self.set_timer(MODEL_LOAD_AFTER_LIST_S, start_model_load)

    @property
    def highlighted_id(self) -> str | None:
        item = self.query_one(ListView).highlighted_child
        return item.summary.id if isinstance(item, PatientRow) else None

    @on(ListView.Selected, "#patient-list")
    def _chosen(self, event: ListView.Selected) -> None:
        event.stop()
        if isinstance(event.item, PatientRow):
            self.post_message(PatientChosen(event.item.summary.id))
