"""The counselor's workspace: patients on the left; notes, analysis, draft and chat on the right.

This screen owns the open patient and what the counselor sees of it. Its jobs live in
four modules: this one (panes, actions, patients, notes, chat), ``generation`` (the one
run in flight, streamed into its pane, cancellable with Esc), ``autosave`` (the
encrypted draft autosave and the offer to restore it) and ``corrections`` (basic
information, amended and deleted notes). Every vault or model call goes to the engine's ``Session``
(``self.app.session``) from a named thread worker; results come back as typed messages
(``phyassist_tui.messages``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from functools import partial
from typing import Any

from textual import events, on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.content import Content
from textual.screen import Screen
from textual.widgets import Header, Input, TabbedContent, TabPane

from engine.errors import PhyAssistError
from engine.records import ChatMessage, Note, Patient, PatientSummary
from phyassist_tui.bindings import bindings_for
from phyassist_tui.bindings import spec as binding_spec
from phyassist_tui.focus import is_text_field
from phyassist_tui.messages import (  # knowledge hook
    ChatSubmitted,
    CitedPointRequested,
    PatientChosen,
    PatientLoaded,
    PatientSaved,
    SaveNoteRequested,
    SimilarRequested,
)
from phyassist_tui.screens.autosave import DraftAutosave
from phyassist_tui.screens.corrections import RecordCorrections
from phyassist_tui.screens.generation import GenerationHandling
from phyassist_tui.screens.new_patient import NewPatientScreen
from phyassist_tui.screens.similar_flow import insert_cited_point, lookup_similar
from phyassist_tui.widgets.analysis_pane import AnalysisPane
from phyassist_tui.widgets.chat_pane import ChatBubble, ChatPane
from phyassist_tui.widgets.deferred import AfterFirstFrame
from phyassist_tui.widgets.draft_pane import DraftPane
from phyassist_tui.widgets.footer import RankedFooter
from phyassist_tui.widgets.notes_view import NotesView
from phyassist_tui.widgets.patients_pane import PatientsPane
from phyassist_tui.widgets.similar_pane import SimilarPane
from phyassist_tui.widgets.status_line import StatusLine
from phyassist_tui.widgets.text import clean

TABS = ("notes", "analysis", "draft", "chat", "similar")
PANES_RETRY_S = 0.01  # a call that needs a lazy pane retries this often until it is mounted


class WorkspaceScreen(GenerationHandling, DraftAutosave, RecordCorrections, Screen):
    BINDINGS = bindings_for("workspace")
    AUTO_FOCUS = "#patient-list"
    # Class-level, not set in on_mount: a title change there wakes the Header's watcher, which
    # raised NoMatches (HeaderTitle) when the app quit right after the workspace appeared.
    TITLE = "PhyAssist"
    SUB_TITLE = "no patient open"

    def __init__(self, patients: list[PatientSummary] | None = None) -> None:
        """``patients``: the list as read when the vault opened (else it is read on mount)."""
        super().__init__()
        self._initial_patients = patients
        self._resumed = False
        self.patient: Patient | None = None
        self.draft_question = ""  # the question the current draft answers
        self._views_reset_for: str | None = None  # chosen, its record still being read
        self.history: list[ChatMessage] = []
        self._prefill_cancel: threading.Event | None = None  # reading the record ahead
        # chat saves run in threads: a later one (question + reply) must never be
        # overwritten by an earlier one (the question alone) that happened to run after it
        self._chat_save_lock = threading.Lock()
        self._chat_save_seq = 0
        self._chat_saved_seq = 0

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False, icon="✚")
        with Horizontal(id="body"):
            yield PatientsPane(self._initial_patients, id="patients")
            with TabbedContent(id="tabs", initial="notes"):
                with TabPane(self._tab_title("notes"), id="notes"):
                    yield NotesView(id="notes-view")
                # The hidden panes mount a moment after the first frame (AfterFirstFrame):
                # styling and laying out their widgets was a third of the time to the list.
                with TabPane(self._tab_title("analysis"), id="analysis"):
                    yield AfterFirstFrame(AnalysisPane(id="analysis-pane"))
                with TabPane(self._tab_title("draft"), id="draft"):
                    yield AfterFirstFrame(DraftPane(id="draft-pane"))
                with TabPane(self._tab_title("chat"), id="chat"):
                    yield AfterFirstFrame(ChatPane(id="chat-pane"))
                with TabPane(self._tab_title("similar"), id="similar"):  # knowledge hook
                    yield AfterFirstFrame(SimilarPane(id="similar-pane"))
        yield StatusLine(id="status")
        yield RankedFooter(compact=True)  # Generate, Save, Lock first: they fit in 80 columns

    def _tab_title(self, tab: str) -> Content:
        """The tab's name with its key (as remapped in settings), e.g. ``Notes F2``.

        The tab keys are shown here rather than in the Footer, which at 80 columns has
        room only for the keys of the pane in use.
        """
        spec = binding_spec(f"workspace.show_{tab}")
        return Content.assemble(spec.description, " ", (self._key_display(spec.id), "dim"))

    def _key_display(self, binding_id: str) -> str:
        """The key of a binding as the counselor sees it (remapped in settings or not)."""
        key = self.app._keymap.get(binding_id, binding_spec(binding_id).key).split(",")[0]
        display = self.app.get_key_display(Binding(key.strip(), ""))
        if display[:1] == "f" and display[1:].isdigit():
            display = display.upper()  # F2, as printed on the keyboard
        return display

    def _counselor_is_typing(self) -> bool:
        """A text field has the focus and took keys since the generation was asked for.

        Then a finished generation leaves the focus where it is (see ``phyassist_tui.focus``).
        """
        typed_at = self.app.last_typed_at
        return is_text_field(self.app.focused) and typed_at >= self._gen_requested_at

    def on_screen_resume(self, event: events.ScreenResume) -> None:
        """Shown for the first time: Textual's resume restyles every widget, which were
        styled as they mounted a moment ago (a full pass before the list is painted)."""
        if not self._resumed:
            self._resumed = True
            event.refresh_styles = False  # later resumes (after a dialog) still restyle

    def on_mount(self) -> None:
        self.watch(self.app, "model_state", self._model_changed, init=True)
        self.watch(self.app, "model_detail", self._model_changed, init=False)
        self.watch(self.app, "model_label", self._label_changed, init=False)

    def on_unmount(self) -> None:
        if self._run is not None:  # a stream must not outlive its screen
            self._run.cancel()
        self._stop_prefill()

    # -- handy handles -------------------------------------------------------------------------
    @property
    def patients(self) -> PatientsPane:
        return self.query_one(PatientsPane)

    @property
    def panes_mounted(self) -> bool:
        """Whether the Analysis, Draft and Chat panes are there yet.

        They mount just after the workspace's first frame (``Lazy`` removes itself once its
        pane is mounted and composed). Keys typed ahead (Enter on the list, F3) can arrive
        in between; what needs a pane waits for it with ``_once_panes_mounted``.
        """
        return not self.query(AfterFirstFrame)

    def _once_panes_mounted(self, callback: Callable[..., Any], *args: Any) -> bool:
        """``True`` if the panes are mounted; else run ``callback(*args)`` once they are."""
        if self.panes_mounted:
            return True
        self.set_timer(PANES_RETRY_S, partial(callback, *args))
        return False

    @property
    def analysis(self) -> AnalysisPane:
        return self.query_one(AnalysisPane)

    @property
    def draft_pane(self) -> DraftPane:
        return self.query_one(DraftPane)

    @property
    def chat(self) -> ChatPane:
        return self.query_one(ChatPane)

    @property
    def status(self) -> StatusLine:
        return self.query_one(StatusLine)

    def _label_changed(self, label: str) -> None:
        self.status.model_label = label

    def _model_changed(self, _value: object = None) -> None:
        app = self.app
        status = self.status
        status.model_state = app.model_state
        status.model_label = app.model_label
        status.model_detail = app.model_detail
        if app.model_state == "ready" and self.patient is not None:
            self._use_patient(self.patient)

    # -- actions -------------------------------------------------------------------------------
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "cancel_generation":
            return self.generating is not None or self._risk_check_running()
        if action in ("generate", "train", "edit_basic", "note_actions"):
            return self.patient is not None
        return True

    def action_show_tab(self, tab: str) -> None:
        if tab not in TABS or not self._once_panes_mounted(self.action_show_tab, tab):
            return
        self.query_one(TabbedContent).active = tab
        if tab == "draft" and self.status.activity.startswith("draft ready"):
            self.status.activity = ""
        if tab == "draft" and self.draft_pane.draft is None:
            self.query_one("#tabs Tabs").focus()
            return
        focus = {
            "notes": "#notes-view",
            "analysis": "#question",
            "draft": "#draft-items",
            "chat": "#chat-input",
            "similar": "#similar-list",
        }[tab]
        # at once, not after a refresh as ``focus()`` does: letters typed right behind the
        # function key (one burst) must find the field already focused
        self.set_focus(self.query_one(focus))
        if tab == "similar":  # knowledge hook
            lookup_similar(self)

    @on(SimilarRequested)
    def _similar_requested(self) -> None:  # knowledge hook
        lookup_similar(self)

    @on(CitedPointRequested)
    async def _cited_point(self, message: CitedPointRequested) -> None:  # knowledge hook
        await insert_cited_point(self, message.text, message.citation)

    def action_focus_search(self) -> None:
        # set_focus at once (``focus()`` waits for a refresh): a name typed right behind
        # Ctrl+F goes to the search box, not to the list that had focus.
        self.patients.display = True
        self.set_focus(self.query_one("#search", Input))

    def action_toggle_patients(self) -> None:
        self.patients.display = not self.patients.display

    def action_new_patient(self) -> None:
        limits = self.app.settings.limits
        self.app.push_screen(
            NewPatientScreen(max_name=limits.max_name_chars, max_field=limits.max_field_chars),
            self._create_patient,
        )

    def _create_patient(self, result: tuple[str, Any] | None) -> None:
        if result is None:
            return
        self._create(*result)

    @work(thread=True, name="create-patient", exit_on_error=False)
    def _create(self, name: str, basic: Any) -> None:
        try:
            patient = self.app.session.create_patient(name, basic)
        except PhyAssistError as exc:
            self.app.call_from_thread(self.notify, str(exc), severity="error")
            return
        self.post_message(PatientSaved(patient))
        self.post_message(PatientLoaded(patient, None))

    def action_generate(self, confirmed: bool = False) -> None:
        if self.patient is None:
            self.notify("Open a patient first.", severity="warning")
            return
        question = self.analysis.question
        limit = self.app.settings.limits.max_statement_chars
        # what cannot be drafted is said before asking whether to replace the edited draft
        if not question:
            self.action_show_tab("analysis")
            self.notify("Write the counseling question first.", severity="warning")
            return
        if len(question) > limit:
            self.notify(
                f"The question is {len(question):,} characters; the limit is {limit:,}. "
                "Shorten it; nothing was lost.",
                severity="error",
            )
            return
        if not confirmed and self._ask_before_replacing_edits():
            return
        patient, observed = self.patient, self.analysis.observed
        self._stop_prefill()  # the risk check and the draft need the model now
        # risk flags first, rules plus the model where it applies (imported here: the
        # screen's styles are off the launch path); the Session audits shown/ack/cancel
        from phyassist_tui.screens.risk import check_risk_then

        check_risk_then(
            self,
            patient.id,
            question,
            partial(self._risk_checked, question, observed),
            cancelled=self._risk_not_checked,
            checking=self._risk_checking,
        )

    def _risk_checking(self, activity: str) -> None:
        self.status.activity = activity
        self.refresh_bindings()  # Esc can stop the check

    def _risk_not_checked(self) -> None:
        self.status.activity = ""
        self.refresh_bindings()

    def _risk_checked(self, question: str, observed: str) -> None:
        """No flags, or the counselor acknowledged them: draft the Analysis."""
        self.status.activity = ""
        self._start_analysis(question, observed)

    def _risk_check_running(self) -> bool:
        return any(w.group == "risk-check" and w.is_running for w in self.workers)

    def action_cancel_generation(self) -> None:
        self.workers.cancel_group(self, "risk-check")  # a model risk check still running
        self.cancel_generation()

    def action_train(self) -> None:
        self.app.start_training(self.patient)

    def action_rollback_adapter(self) -> None:  # learning: one key, as `adapter rollback`
        from phyassist_tui.adapter_actions import rollback_adapter

        rollback_adapter(self.app, self.patient)

    def action_compare(self) -> None:  # learning: domain vs patient-adapter drafts
        from phyassist_tui.adapter_actions import start_compare

        start_compare(self)

    def action_clear_chat(self, confirmed: bool = False) -> None:
        """Start a new conversation; the current one is deleted, so ask first."""
        if not self._once_panes_mounted(self.action_clear_chat):
            return
        if self.generating == "chat":
            self.notify("Stop the reply first (Esc).", severity="warning")
            return
        said = sum(1 for m in self.history if m.role in ("user", "assistant"))
        if said and not confirmed:
            from phyassist_tui.screens.confirm import ConfirmScreen

            def answer(yes: bool | None) -> None:
                if yes:
                    self.action_clear_chat(confirmed=True)

            self.app.push_screen(
                ConfirmScreen(
                    f"Start a new conversation? This one ({said} message"
                    f"{'s' if said != 1 else ''}) is deleted.",
                    yes="New conversation",
                    no="Keep",
                ),
                answer,
            )
            return
        self.history = []
        self.run_worker(self.chat.show_history([]), exclusive=False)
        self._save_chat()

    # -- patients ------------------------------------------------------------------------------
    @on(PatientChosen)
    async def choose_patient(self, message: PatientChosen) -> None:
        """Switch to the chosen patient: views reset now, its record read in a worker."""
        if not self._once_panes_mounted(self.choose_patient, message):
            return
        if self.generating is not None:
            self.notify("Stop the generation first (Esc).", severity="warning")
            return
        self._flush_autosave()  # the open patient's unsaved text is kept, then the views reset
        self._stop_prefill()
        await self._reset_views()
        self.sub_title = "opening…"
        self._views_reset_for = message.patient_id
        self._open_patient(message.patient_id)

    async def _reset_views(self) -> None:
        """Empty every patient view and close the open patient, before another one opens.

        Done when the patient is chosen, not when its record has been read: keys typed in
        between (Enter, F3 and the statement in one burst) belong to the new patient and are
        kept; nothing started in between (a generation, an autosave) can mix two patients.
        """
        self._stop_autosave_timer()
        self.patient = None
        self.refresh_bindings()
        self.draft_question = ""
        await self.query_one(NotesView).show_patient(None)
        self.analysis.set_inputs("", "")
        self.analysis.stream.set_text("")
        await self.draft_pane.load(None)
        self.query_one(TabbedContent).active = "notes"

    @work(thread=True, name="load-patient", group="patient", exclusive=True, exit_on_error=False)
    def _open_patient(self, patient_id: str) -> None:
        try:
            opened = self.app.session.open_patient(patient_id)  # audited as opened
        except PhyAssistError as exc:
            self.app.call_from_thread(self.notify, str(exc), severity="error")
            self.app.call_from_thread(setattr, self, "sub_title", self.SUB_TITLE)
            return
        self.post_message(PatientLoaded(opened.patient, opened.autosave, opened.kept_autosave))

    @on(PatientLoaded)
    async def _patient_loaded(self, message: PatientLoaded) -> None:
        if not self._once_panes_mounted(self._patient_loaded, message):
            return
        patient = message.patient
        self.sub_title = clean(patient.name)
        if self._views_reset_for != patient.id:
            await self._reset_views()  # a patient created here: nothing typed for it yet
        self._views_reset_for = None
        # what was typed since the patient was chosen stays (typed ahead for this patient)
        await self.query_one(NotesView).show_patient(patient)
        self._stop_autosave_timer()
        self.patient = patient
        self.refresh_bindings()
        self._load_chat(patient)
        if self.app.model_state == "ready":
            self._use_patient(patient)
        self.offer_autosaves(patient, message.autosave, message.kept_autosave)

    @on(PatientSaved)
    def _patient_saved(self, message: PatientSaved) -> None:
        self.patients.refresh_list()

    def _use_patient(self, patient: Patient) -> None:
        self._stop_prefill()
        self._prefill_cancel = self.app.session.new_cancel()
        self._put_patient_in_model(patient, self._prefill_cancel)

    @work(thread=True, name="use-patient", group="use-patient", exclusive=True, exit_on_error=False)
    def _put_patient_in_model(self, patient: Patient, cancel: threading.Event) -> None:
        session = self.app.session
        try:
            label = session.use_patient(patient)
        except PhyAssistError as exc:
            self.app.call_from_thread(self.notify, str(exc), severity="warning")
            return
        if label:
            self.app.call_from_thread(setattr, self.app, "model_label", clean(label))
        # while the counselor types the question, the model reads the record
        session.prefill_record(patient, cancel)

    def _stop_prefill(self) -> None:
        """Stop reading a record ahead (a generation or another patient needs the model)."""
        if self._prefill_cancel is not None:
            self._prefill_cancel.set()
            self._prefill_cancel = None

    # -- saving --------------------------------------------------------------------------------
    @on(SaveNoteRequested)
    def _save_note(self, message: SaveNoteRequested) -> None:
        patient = self.patient
        if patient is None:
            return
        question = self.analysis.question or self.draft_question
        if not question:
            self.notify("The note needs the counseling question (F3).", severity="warning")
            return
        note = Note(
            question=question,
            observed_state=self.analysis.observed,
            analysis=message.draft.model_copy(deep=True),
        )
        self._save(patient.id, note)

    @work(thread=True, name="save-note", group="store-write", exit_on_error=False)
    def _save(self, patient_id: str, note: Note) -> None:
        try:
            updated = self.app.session.save_note(patient_id, note)  # audited, autosave dropped
        except PhyAssistError as exc:
            self.app.call_from_thread(self.notify, f"Not saved: {exc}", severity="error")
            return
        self.post_message(PatientSaved(updated))
        self.app.call_from_thread(self._note_saved, updated)

    async def _note_saved(self, patient: Patient) -> None:
        if self.patient is None or self.patient.id != patient.id:
            return
        self.patient = patient
        self._stop_autosave_timer()
        await self.query_one(NotesView).show_patient(patient)
        self.analysis.set_inputs("", "")
        self.analysis.stream.set_text("")
        self.draft_question = ""
        await self.draft_pane.load(None)
        self.action_show_tab("notes")
        self.notify("Note saved.")

    async def prepare_lock(self) -> None:
        """Before locking or quitting: stop generation, write the autosave now."""
        if self._run is not None:
            self._run.cancel()
        self._stop_prefill()
        self._stop_autosave_timer()
        payload = self.autosave_payload()
        if self.patient is not None and payload is not None:
            import asyncio

            await asyncio.to_thread(self.write_autosave, self.patient.id, payload)

    # -- chat ----------------------------------------------------------------------------------
    @work(thread=True, name="load-chat", group="chat-io", exclusive=True, exit_on_error=False)
    def _load_chat(self, patient: Patient) -> None:
        try:
            history = self.app.session.load_chat(patient.id)
        except PhyAssistError as exc:
            self.app.call_from_thread(self.notify, f"Chat not read: {exc}", severity="error")
            return
        self.app.call_from_thread(self._chat_loaded, patient.id, history)

    async def _chat_loaded(self, patient_id: str, history: list[ChatMessage]) -> None:
        if self.patient is not None and self.patient.id == patient_id:
            self.history = history
            await self.chat.show_history(history)

    def _save_chat(self) -> None:
        if self.patient is None:
            return
        self._chat_save_seq += 1
        self._write_chat(self.patient.id, list(self.history), self._chat_save_seq)

    @work(thread=True, name="save-chat", group="store-write", exit_on_error=False)
    def _write_chat(self, patient_id: str, history: list[ChatMessage], seq: int) -> None:
        try:
            with self._chat_save_lock:  # saves in the order they were asked for
                if self._chat_saved_seq > seq:
                    return  # a newer history is already saved
                self.app.session.save_chat(patient_id, history)
                self._chat_saved_seq = seq
        except PhyAssistError as exc:
            self.app.call_from_thread(self.notify, f"Chat not saved: {exc}", severity="error")

    @on(ChatSubmitted)
    async def _chat_submitted(self, message: ChatSubmitted) -> None:
        patient = self.patient
        if patient is None:
            self.notify("Open a patient first.", severity="warning")
            return
        if self.generating is not None:
            self.chat.give_back(message.text)  # kept in the box, nothing lost
            self.notify(
                "A generation is running; your message is kept in the box. "
                "Press Enter again when it ends (Esc stops it).",
                severity="warning",
            )
            return
        history = list(self.history)
        text = message.text
        limit = self.app.settings.limits.max_statement_chars
        if len(text) > limit:
            self.query_one("#chat-input", Input).value = text  # give it back, nothing lost
            self.notify(
                f"The message is {len(text):,} characters; the limit is {limit:,}.",
                severity="error",
            )
            return
        self.history.append(ChatMessage(role="user", content=text))
        self._save_chat()  # the question survives a reply cut off (reload, crash, lock)
        await self.chat.add_bubble("user", text)
        bubble: ChatBubble = await self.chat.add_bubble("assistant", "")
        bubble.set_text("")
        self._begin(self.app.session.chat(patient, history, text))
