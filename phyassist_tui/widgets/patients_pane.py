"""The patient list: incremental search, adapter markers, Enter opens."""

from __future__ import annotations

import asyncio

from textual import on
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.content import Content
from textual.timer import Timer
from textual.widgets import Input, Label, OptionList
from textual.widgets.option_list import Option

from engine.records import PatientSummary
from phyassist_tui.bindings import bindings_for
from phyassist_tui.focus import TextInput
from phyassist_tui.messages import PatientChosen, PatientsListed
from phyassist_tui.widgets.text import clean, ellipsize

ADAPTER_MARK = "◆"
MODEL_LOAD_AFTER_LIST_S = 0.5
NAME_CELLS = 24  # the pane is 28 wide: mark, space, name, scrollbar


def patient_prompt(summary: PatientSummary) -> Content:
    """Two lines: adapter mark and name, then the number of notes (dim)."""
    mark = ADAPTER_MARK if summary.has_adapter else " "
    notes = f"{summary.note_count} note" + ("" if summary.note_count == 1 else "s")
    name = ellipsize(clean(summary.name), NAME_CELLS)  # one line, however long the name
    return Content.assemble((mark, "$accent"), " ", name, ("\n  " + notes, "dim"))


class PatientList(OptionList):
    """The patients as options of one widget, drawn line by line as they scroll into view.

    A widget per patient cost ~2 ms each to mount and style (a 50-patient list was a tenth
    of a second of the launch) and made every layout pass longer; an ``OptionList`` costs the
    same for 5 patients or 500. Option ids are patient ids.
    """

    DEFAULT_CSS = """
    PatientList { height: 1fr; max-height: 100%; border: none; padding: 0; }
    PatientList:focus { border: none; }
    PatientList > .option-list--option { text-wrap: nowrap; text-overflow: ellipsis; }
    """

    BINDINGS = bindings_for("patients")

    def __init__(self, summaries: list[PatientSummary], **kwargs) -> None:
        super().__init__(*(Option(patient_prompt(s), id=s.id) for s in summaries), **kwargs)
        self.summaries = list(summaries)

    def show(self, summaries: list[PatientSummary], keep: str | None = None) -> None:
        """Replace the rows; the highlight stays on patient ``keep`` if still listed."""
        self.summaries = list(summaries)
        self.set_options(Option(patient_prompt(s), id=s.id) for s in summaries)
        ids = [s.id for s in summaries]
        self.highlighted = ids.index(keep) if keep in ids else (0 if ids else None)

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.summaries]

    async def action_open_patient(self) -> None:
        """Enter opens the highlighted patient, before the keys typed behind it are handled.

        Textual runs a binding when its key reaches the app, and the keys queued behind
        Enter (F3 and the statement, typed in one burst) run right after it. A posted
        ``PatientChosen`` would reach the screen only after them, and switching patients
        would then empty the statement they typed: so the switch is awaited here.
        """
        summary = self.highlighted_summary
        if summary is None:
            return
        chosen = PatientChosen(summary.id)
        choose = getattr(self.screen, "choose_patient", None)
        if choose is None:
            self.post_message(chosen)
        else:
            await choose(chosen)

    @property
    def highlighted_summary(self) -> PatientSummary | None:
        index = self.highlighted
        return self.summaries[index] if index is not None else None

    def highlight_name(self, name: str) -> None:
        """Move the highlight to the first patient called ``name`` (tests, palette)."""
        self.highlighted = self.names.index(name)


class PatientSearch(TextInput):
    """The search box. Enter opens the first (or highlighted) match before the keys typed
    behind it are handled (see ``PatientsPane.open_search_result``)."""

    async def action_submit(self) -> None:
        pane = next((a for a in self.ancestors if isinstance(a, PatientsPane)), None)
        if pane is None:
            await super().action_submit()
        else:
            await pane.open_search_result()


class PatientsPane(Vertical):
    """Search box over the list. Search runs in a worker after a short pause in typing."""

    DEFAULT_CSS = """
    PatientsPane { width: 28; border-right: vkey $primary-muted; }
    PatientsPane > #search { margin: 0; }
    PatientsPane > #patients-hint { color: $text-muted; padding: 0 1; height: auto; }
    """

    SEARCH_DELAY_S = 0.15

    def __init__(self, patients: list[PatientSummary] | None = None, **kwargs) -> None:
        """``patients``: the list read with the unlock, shown in the first frame (no wait)."""
        super().__init__(**kwargs)
        self._search_timer: Timer | None = None
        self._initial = patients
        self._shown_query = ""  # the search whose result the list shows

    def compose(self) -> ComposeResult:
        yield PatientSearch(placeholder="Search patients", id="search")
        yield PatientList(self._initial or [], id="patient-list")
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
            patients = app.session.list_patients(query)
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

    async def open_search_result(self) -> None:
        """Enter in the search opens the first (or highlighted) match: one Enter, not two.

        Awaited in key order, like Enter on the list (``PatientList.action_open_patient``):
        F3 and a statement typed right behind Enter (one burst over SSH) reach the new
        patient's statement, not a view the later switch empties. A search whose result
        the list does not show yet runs now rather than after the typing pause.
        """
        if self._search_timer is not None:
            self._search_timer.stop()
            self._search_timer = None
        query = self.search_text
        if self._shown_query != query:
            patients = await asyncio.to_thread(self.app.session.list_patients, query)
            if query != self.search_text:
                return
            self._show_result(patients, query)
        listing = self.query_one(PatientList)
        if not listing.option_count:
            self.notify("No patient matches the search.", severity="warning")
            return
        listing.highlighted = listing.highlighted or 0
        self.screen.set_focus(listing)
        await listing.action_open_patient()

    @on(PatientsListed)
    def _listed(self, message: PatientsListed) -> None:
        message.stop()
        if message.query != self.search_text:
            return  # a newer search is on its way
        self._show_result(message.patients, message.query)
        self._list_shown()

    def _show_result(self, patients: list[PatientSummary], query: str) -> None:
        self.query_one(PatientList).show(patients, keep=self.highlighted_id)
        self._shown_query = query

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
        summary = self.query_one(PatientList).highlighted_summary
        return summary.id if summary is not None else None

    @on(OptionList.OptionSelected, "#patient-list")
    def _chosen(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        if event.option_id is not None:
            self.post_message(PatientChosen(event.option_id))
