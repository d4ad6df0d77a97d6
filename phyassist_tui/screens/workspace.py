"""The counselor's workspace: patients on the left; notes, analysis, draft and chat on the right.

This screen owns the open patient, the generation in flight (one at a time, cancellable
with Esc) and the encrypted draft autosave. Every vault or model call runs in a named
thread worker; results come back as typed messages (``phyassist_tui.messages``).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.content import Content
from textual.lazy import Lazy
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import Footer, Header, Input, TabbedContent, TabPane, TextArea

from engine.errors import GenerationCancelled, PhyAssistError
from engine.records import AnalysisDraft, ChatMessage, Note, Patient, PatientSummary
from engine.trust.audit import record as audit_record  # trust: audit hook
from phyassist_tui.bindings import bindings_for
from phyassist_tui.bindings import spec as binding_spec
from phyassist_tui.focus import is_text_field
from phyassist_tui.messages import (
    ChatSubmitted,
    DraftChanged,
    GenerationChunk,
    GenerationFinished,
    GenerationKind,
    GenerationStarted,
    PatientChosen,
    PatientLoaded,
    PatientSaved,
    RegenerateAllRequested,
    RegenerateItemRequested,
    SaveNoteRequested,
)
from phyassist_tui.ports import AssistantLike, stats_dict
from phyassist_tui.screens.confirm import ConfirmScreen
from phyassist_tui.screens.new_patient import NewPatientScreen
from phyassist_tui.widgets.analysis_pane import AnalysisPane
from phyassist_tui.widgets.chat_pane import ChatBubble, ChatPane
from phyassist_tui.widgets.draft_pane import DraftPane
from phyassist_tui.widgets.notes_view import NotesView
from phyassist_tui.widgets.patients_pane import PatientsPane
from phyassist_tui.widgets.status_line import StatusLine
from phyassist_tui.widgets.text import clean

DRAFT_BLOB = "draft"  # encrypted autosave of the unsaved draft, one per patient
CHAT_BLOB = "chat"
AUTOSAVE_DELAY_S = 1.0
STREAM_FLUSH_S = 0.1  # streamed text is shown at most ten times a second
TABS = ("notes", "analysis", "draft", "chat")
PANES_RETRY_S = 0.01  # a call that needs a lazy pane retries this often until it is mounted

Producer = Callable[[AssistantLike, threading.Event], Iterator[str]]


class WorkspaceScreen(Screen):
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
        self.patient: Patient | None = None
        self.draft_question = ""  # the question the current draft answers
        self.history: list[ChatMessage] = []
        self.generating: GenerationKind | None = None
        self._cancel: threading.Event | None = None
        self._regen_backup: tuple[str, str] | None = None  # item id, text before regeneration
        self._autosave_timer: Timer | None = None
        self._gen_started = 0.0
        self._gen_requested_at = 0.0  # monotonic: when the generation in flight was asked for
        self._pending: list[str] = []  # streamed text not shown yet (see _generation_chunk)
        self._pending_kind: GenerationKind | None = None
        self._pending_rate: float | None = None
        self._flush_timer: Timer | None = None
        self._prefill_cancel: threading.Event | None = None  # reading the record ahead

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False, icon="✚")
        with Horizontal(id="body"):
            yield PatientsPane(self._initial_patients, id="patients")
            with TabbedContent(id="tabs", initial="notes"):
                with TabPane(self._tab_title("notes"), id="notes"):
                    yield NotesView(id="notes-view")
                # The hidden panes mount just after the first frame (Lazy): styling and
                # laying out their widgets was a third of the time to the patient list.
                with TabPane(self._tab_title("analysis"), id="analysis"):
                    yield Lazy(AnalysisPane(id="analysis-pane"))
                with TabPane(self._tab_title("draft"), id="draft"):
                    yield Lazy(DraftPane(id="draft-pane"))
                with TabPane(self._tab_title("chat"), id="chat"):
                    yield Lazy(ChatPane(id="chat-pane"))
        yield StatusLine(id="status")
        yield Footer(compact=True)  # compact: the keys that matter fit in 80 columns

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
        typed_at = getattr(self.app, "last_typed_at", 0.0)
        return is_text_field(self.app.focused) and typed_at >= self._gen_requested_at

    def on_mount(self) -> None:
        self.watch(self.app, "model_state", self._model_changed, init=True)
        self.watch(self.app, "model_detail", self._model_changed, init=False)
        self.watch(self.app, "model_label", self._label_changed, init=False)

    def on_unmount(self) -> None:
        if self._cancel is not None:  # a stream must not outlive its screen
            self._cancel.set()
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
        return not self.query(Lazy)

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
        if action in ("generate", "train"):
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
        }[tab]
        self.query_one(focus).focus()

    def action_focus_search(self) -> None:
        self.patients.display = True
        self.query_one("#search", Input).focus()

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
        name, basic = result

        def create() -> None:
            try:
                patient = self.app.store_call(lambda s: s.create_patient(name, basic))
            except PhyAssistError as exc:
                self.app.call_from_thread(self.notify, str(exc), severity="error")
                return
            self.post_message(PatientSaved(patient))
            self.post_message(PatientLoaded(patient, None))

        self.run_worker(create, name="create-patient", thread=True, exit_on_error=False)

    def action_generate(self) -> None:
        if self.patient is None:
            self.notify("Open a patient first.", severity="warning")
            return
        question = self.analysis.question
        limit = self.app.settings.limits.max_statement_chars
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
        patient, observed = self.patient, self.analysis.observed
        self._stop_prefill()  # the risk check and the draft need the model now

        def start() -> None:  # trust: runs after the risk flags (if any) were acknowledged
            self.draft_question = question
            self.analysis.stream.set_text("")
            self.query_one(TabbedContent).active = "analysis"
            self._start(
                "analysis",
                lambda a, cancel: a.stream_analysis(
                    patient, question, cancel=cancel, **({"observed": observed} if observed else {})
                ),
            )

        # trust: risk flags first, rules plus the model where it applies (imported here: its
        # patterns are off the launch path)
        from phyassist_tui.screens.risk import check_risk_then

        def checking(activity: str) -> None:
            self.status.activity = activity
            self.refresh_bindings()  # Esc can stop the check

        def not_checked() -> None:
            self.status.activity = ""
            self.refresh_bindings()

        def checked_then_start() -> None:
            self.status.activity = ""
            start()

        check_risk_then(
            self,
            self.app.store,
            patient.id,
            question,
            checked_then_start,
            cancelled=not_checked,
            checking=checking,
        )

    def _risk_check_running(self) -> bool:
        return any(w.group == "risk-check" and w.is_running for w in self.workers)

    def action_cancel_generation(self) -> None:
        self.workers.cancel_group(self, "risk-check")  # a model risk check still running
        if self._cancel is not None and self.generating is not None:
            self._cancel.set()
            self.status.activity = "stopping…"

    def action_train(self) -> None:
        self.app.start_training(self.patient)

    def action_rollback_adapter(self) -> None:  # learning: one key, as `adapter rollback`
        from phyassist_tui.adapter_actions import rollback_adapter

        rollback_adapter(self.app, self.patient)

    def action_compare(self) -> None:  # learning: domain vs patient-adapter drafts
        from phyassist_tui.adapter_actions import start_compare

        start_compare(self)

    def action_clear_chat(self) -> None:
        if not self._once_panes_mounted(self.action_clear_chat):
            return
        if self.generating == "chat":
            self.notify("Stop the reply first (Esc).", severity="warning")
            return
        self.history = []
        self.run_worker(self.chat.show_history([]), exclusive=False)
        self._save_chat()

    # -- patients ------------------------------------------------------------------------------
    @on(PatientChosen)
    def _patient_chosen(self, message: PatientChosen) -> None:
        if not self._once_panes_mounted(self._patient_chosen, message):
            return
        if self.generating is not None:
            self.notify("Stop the generation first (Esc).", severity="warning")
            return
        self._flush_autosave()
        self._stop_prefill()
        patient_id = message.patient_id

        def load() -> None:
            def read(store: Any) -> tuple[Patient, bytes | None]:
                return store.load_patient(patient_id), store.read_blob(patient_id, DRAFT_BLOB)

            try:
                patient, blob = self.app.store_call(read)
            except PhyAssistError as exc:
                self.app.call_from_thread(self.notify, str(exc), severity="error")
                return
            audit_record(self.app.store, "patient_opened", patient_id, "tui")  # trust
            autosave = None
            if blob:
                try:
                    autosave = json.loads(blob.decode("utf-8"))
                except ValueError:
                    autosave = None
            self.post_message(PatientLoaded(patient, autosave))

        self.run_worker(
            load,
            name="load-patient",
            group="patient",
            thread=True,
            exclusive=True,
            exit_on_error=False,
        )

    @on(PatientLoaded)
    async def _patient_loaded(self, message: PatientLoaded) -> None:
        if not self._once_panes_mounted(self._patient_loaded, message):
            return
        patient = message.patient
        self.sub_title = clean(patient.name)
        self.draft_question = ""
        # reset every view before the patient becomes current, so nothing started in
        # between (a generation, an autosave) can mix two patients
        await self.query_one(NotesView).show_patient(patient)
        self.analysis.set_inputs("", "")
        self.analysis.stream.set_text("")
        await self.draft_pane.load(None)
        self.query_one(TabbedContent).active = "notes"
        if self._autosave_timer is not None:
            self._autosave_timer.stop()
            self._autosave_timer = None
        self.patient = patient
        self.refresh_bindings()
        self._load_chat(patient)
        if self.app.model_state == "ready":
            self._use_patient(patient)
        if message.autosave:
            payload = message.autosave

            async def answer(restore: bool | None) -> None:
                if restore:
                    await self._restore_autosave(payload)
                else:
                    self._delete_autosave(patient.id)

            self.app.push_screen(
                ConfirmScreen(
                    f"An unsaved draft for {clean(patient.name)} was kept from last time. "
                    "Restore it?",
                    yes="Restore",
                    no="Discard",
                ),
                answer,
            )

    @on(PatientSaved)
    def _patient_saved(self, message: PatientSaved) -> None:
        self.patients.refresh_list()

    def _use_patient(self, patient: Patient) -> None:
        self._stop_prefill()
        cancel = self._prefill_cancel = threading.Event()

        def use() -> None:
            label = self.app.use_patient_model(patient)
            if label:
                self.app.call_from_thread(setattr, self.app, "model_label", label)
            # while the counselor types the question, the model reads the record
            self.app.prefill_record(patient, cancel)

        self.run_worker(
            use,
            name="use-patient",
            group="use-patient",
            thread=True,
            exclusive=True,
            exit_on_error=False,
        )

    def _stop_prefill(self) -> None:
        """Stop reading a record ahead (a generation or another patient needs the model)."""
        if self._prefill_cancel is not None:
            self._prefill_cancel.set()
            self._prefill_cancel = None

    # -- generation ----------------------------------------------------------------------------
    def _start(self, kind: GenerationKind, producer: Producer, **meta: Any) -> bool:
        if self.generating is not None:
            self.notify("A generation is already running (Esc stops it).", severity="warning")
            return False
        self._stop_prefill()  # what it read so far is kept and used
        patient = self.patient
        cancel = self._cancel = threading.Event()
        self.generating = kind
        self._gen_requested_at = time.monotonic()
        self.draft_pane.busy = True
        self.status.activity = "waiting for the model…" if self.app.model_state != "ready" else ""
        self.status.tokens_per_s = None
        self.refresh_bindings()
        self.run_worker(
            partial(self._stream_worker, kind, producer, cancel, patient, meta),
            name=f"generate-{kind}",
            group="generation",
            thread=True,
            exit_on_error=False,
        )
        return True

    def _stream_worker(
        self,
        kind: GenerationKind,
        producer: Producer,
        cancel: threading.Event,
        patient: Patient | None,
        meta: dict[str, Any],
    ) -> None:
        """Runs in a thread: wait for the model, stream, post every chunk, then the end."""
        app = self.app
        assistant = app.wait_for_model(cancel)
        if assistant is None:
            error = None if cancel.is_set() else f"The model is not available: {app.model_detail}"
            self.post_message(
                GenerationFinished(kind, "", cancelled=cancel.is_set(), error=error, **meta)
            )
            return
        if patient is not None:
            app.use_patient_model(patient)
        self.post_message(GenerationStarted(kind))
        pieces: list[str] = []
        error: str | None = None
        started = time.perf_counter()
        try:
            for chunk in producer(assistant, cancel):
                if cancel.is_set():
                    # the engine flushes what it held back when stopped: a character cut in
                    # half by the stop decodes as U+FFFD, which is not text the model wrote
                    chunk = chunk.rstrip("\ufffd")
                    if not chunk:
                        break
                pieces.append(chunk)
                elapsed = time.perf_counter() - started
                rate = len(pieces) / elapsed if elapsed > 0 else None
                self.post_message(GenerationChunk(kind, chunk, rate))
                if cancel.is_set():
                    break
        except GenerationCancelled:
            pass
        except PhyAssistError as exc:
            error = str(exc)
        except Exception as exc:  # keep the partial text whatever the engine does
            error = f"Generation failed: {type(exc).__name__}: {exc}"
        text = "".join(pieces)
        draft = None
        if kind in ("analysis", "regenerate_all") and error is None and text.strip():
            try:
                draft = assistant.parse_analysis(text)
            except Exception as exc:
                error = f"The draft could not be parsed: {exc}"
            else:
                draft.raw_output = draft.raw_output or text
                draft.model_name = draft.model_name or app.model_label
        self.post_message(
            GenerationFinished(
                kind,
                text,
                cancelled=cancel.is_set(),
                error=error,
                stats=stats_dict(getattr(assistant, "last_stats", None)),
                draft=draft,
                **meta,
            )
        )

    @on(GenerationStarted)
    def _generation_started(self, message: GenerationStarted) -> None:
        self._gen_started = time.perf_counter()
        self.status.activity = {
            "analysis": "drafting…",
            "regenerate_item": "regenerating item…",
            "regenerate_all": "regenerating draft…",
            "chat": "replying…",
        }[message.kind]

    @on(GenerationChunk)
    def _generation_chunk(self, message: GenerationChunk) -> None:
        """Buffer the chunk; ``_flush_stream`` shows what came at most STREAM_FLUSH_S apart.

        Every update of the streamed text changes its height, which makes Textual lay out
        the whole screen; at one layout per token the keys typed meanwhile wait behind
        them. A few repaints a second read just as live and leave the loop free for keys.
        """
        if self._pending_kind is not None and self._pending_kind != message.kind:
            self._flush_stream()
        self._pending_kind = message.kind
        self._pending.append(message.text)
        self._pending_rate = message.tokens_per_s
        if self._flush_timer is None:
            self._flush_timer = self.set_timer(STREAM_FLUSH_S, self._flush_stream)

    def _flush_stream(self) -> None:
        if self._flush_timer is not None:
            self._flush_timer.stop()
            self._flush_timer = None
        kind, text = self._pending_kind, "".join(self._pending)
        self._pending.clear()
        self._pending_kind = None
        if kind is None:
            return
        self.status.tokens_per_s = self._pending_rate
        if not text:
            return
        if kind in ("analysis", "regenerate_all"):
            self.analysis.stream.append(text)
        elif kind == "regenerate_item":
            row = self.draft_pane.row_for(self._regen_backup[0]) if self._regen_backup else None
            if row is not None:
                row.streaming = (row.streaming or "") + text
                row.refresh_body()
        elif kind == "chat":
            bubble = self.chat.last_bubble
            if bubble is not None and bubble.role == "assistant":
                bubble.set_text(bubble.text + text)

    @on(GenerationFinished)
    async def _generation_finished(self, message: GenerationFinished) -> None:
        self._flush_stream()  # what came before the end, in order
        self.generating = None
        self._cancel = None
        self.draft_pane.busy = False
        self.status.activity = "stopped" if message.cancelled else ""
        rate = message.stats.get("tokens_per_s")
        if isinstance(rate, int | float):
            self.status.tokens_per_s = float(rate)
        self.refresh_bindings()
        if message.error:
            self.notify(message.error, severity="error", timeout=8)
        elif message.stats.get("looped"):
            self.status.activity = "stopped: the model repeated itself"
            self.notify(
                "The model began repeating itself, so it was stopped. Edit what is useful, "
                "or regenerate (a comment can steer it).",
                severity="warning",
                timeout=8,
            )
        handler = {
            "analysis": self._analysis_done,
            "regenerate_all": self._analysis_done,
            "regenerate_item": self._item_done,
            "chat": self._chat_done,
        }[message.kind]
        await handler(message)

    async def _analysis_done(self, message: GenerationFinished) -> None:
        # decided before any await: meanwhile the counselor may start the next generation,
        # and the typing check compares key times with the generation's start
        typing = self._counselor_is_typing()
        if message.draft is None:
            if message.cancelled:
                self.notify("Stopped. The text so far is kept above.")
            self._schedule_autosave()
            return
        if message.kind == "regenerate_all" and message.cancelled:
            self.notify("Regeneration stopped; the previous draft is kept.")
            return
        await self.draft_pane.load(message.draft)
        self._schedule_autosave()
        review = self._key_display("workspace.show_draft")
        if message.cancelled:
            self.notify(f"Stopped. The partial draft is kept ({review} to review).")
        elif self.generating is not None:
            pass  # the next generation started while the draft loaded: its view stays
        elif typing or self._counselor_is_typing():  # the next letters must land in the field
            # said in the status line: a toast could cover the field being typed in
            self.status.activity = f"draft ready ({review} reviews it)"
        else:
            self.action_show_tab("draft")

    async def _item_done(self, message: GenerationFinished) -> None:
        backup, self._regen_backup = self._regen_backup, None
        draft = self.draft_pane.draft
        if backup is None or draft is None:
            return
        item_id, _old = backup
        row = self.draft_pane.row_for(item_id)
        new_text = " ".join(clean(message.text).split())
        cleaner = getattr(self.app.assistant, "clean_item_text", None)
        if callable(cleaner) and new_text:
            new_text = " ".join(clean(cleaner(message.text)).split())
        if row is not None:
            row.streaming = None
            if message.cancelled or message.error or not new_text:
                if message.cancelled:
                    self.notify("Regeneration stopped; the item is unchanged.")
            else:
                row.item.apply_regeneration(new_text)  # learning: keeps comments + old text
            row.refresh_body()
        if not self._counselor_is_typing():
            self.draft_pane.focus_list()
        self._schedule_autosave()

    async def _chat_done(self, message: GenerationFinished) -> None:
        bubble = self.chat.last_bubble
        text = message.text
        if message.cancelled:
            text = (text + " [stopped]").strip()
        if bubble is not None and bubble.role == "assistant":
            bubble.set_text(text)
        if text:
            self.history.append(ChatMessage(role="assistant", content=text))
        self._save_chat()

    @on(RegenerateItemRequested)
    def _regenerate_item(self, message: RegenerateItemRequested) -> None:
        draft, patient = self.draft_pane.draft, self.patient
        if draft is None or patient is None:
            return
        question = self.draft_question or self.analysis.question
        row = self.draft_pane.row_for(message.item_id)
        if row is None:
            return
        snapshot = draft.model_copy(deep=True)
        self._regen_backup = (message.item_id, row.item.text)
        started = self._start(
            "regenerate_item",
            lambda a, cancel: a.stream_regenerate_item(
                patient, question, snapshot, message.section, message.item_id, cancel=cancel
            ),
            section=message.section,
            item_id=message.item_id,
        )
        if started:
            row.streaming = ""
            row.refresh_body()
        else:
            self._regen_backup = None

    @on(RegenerateAllRequested)
    def _regenerate_all(self) -> None:
        draft, patient = self.draft_pane.draft, self.patient
        if draft is None or patient is None:
            return
        question = self.draft_question or self.analysis.question
        observed = self.analysis.observed
        extra = {"observed": observed} if observed else {}
        guidance = draft.model_copy(deep=True)
        if self._start(
            "regenerate_all",
            lambda a, cancel: a.stream_analysis(
                patient, question, cancel=cancel, guidance=guidance, **extra
            ),
        ):
            self.analysis.stream.set_text("")
            self.query_one(TabbedContent).active = "analysis"

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
        patient_id = patient.id

        def save() -> None:
            def write(store: Any) -> Patient:
                updated = store.add_note(patient_id, note)
                audit_record(store, "note_saved", patient_id, "tui")  # trust
                store.delete_blob(patient_id, DRAFT_BLOB)
                return updated

            try:
                updated = self.app.store_call(write)
            except PhyAssistError as exc:
                self.app.call_from_thread(self.notify, f"Not saved: {exc}", severity="error")
                return
            self.post_message(PatientSaved(updated))
            self.app.call_from_thread(self._note_saved, updated)

        self.run_worker(
            save, name="save-note", group="store-write", thread=True, exit_on_error=False
        )

    async def _note_saved(self, patient: Patient) -> None:
        if self.patient is None or self.patient.id != patient.id:
            return
        self.patient = patient
        if self._autosave_timer is not None:
            self._autosave_timer.stop()
        await self.query_one(NotesView).show_patient(patient)
        self.analysis.set_inputs("", "")
        self.analysis.stream.set_text("")
        self.draft_question = ""
        await self.draft_pane.load(None)
        self.action_show_tab("notes")
        self.notify("Note saved.")

    # -- encrypted draft autosave --------------------------------------------------------------
    @on(DraftChanged)
    def _draft_changed(self) -> None:
        self._schedule_autosave()

    @on(TextArea.Changed, "#question")
    @on(Input.Changed, "#observed")
    def _inputs_changed(self) -> None:
        self._schedule_autosave()

    def _schedule_autosave(self) -> None:
        if self._autosave_timer is not None:
            self._autosave_timer.stop()
        self._autosave_timer = self.set_timer(AUTOSAVE_DELAY_S, self._flush_autosave)

    def autosave_payload(self) -> dict[str, Any] | None:
        """What would be lost on a crash right now, or ``None`` if nothing is unsaved."""
        if not self.panes_mounted:
            return None  # nothing can have been typed into panes that are not there yet
        draft = self.draft_pane.draft
        question = self.analysis.question
        observed = self.analysis.observed
        stream = self.analysis.stream.text
        if draft is None and not question and not observed and not stream:
            return None
        return {
            "version": 1,
            "question": question,
            "draft_question": self.draft_question,
            "observed_state": observed,
            "stream_text": stream,
            "draft": draft.model_dump(mode="json") if draft is not None else None,
        }

    def _flush_autosave(self) -> None:
        if self._autosave_timer is not None:
            self._autosave_timer.stop()
            self._autosave_timer = None
        if self.patient is None:
            return
        patient_id, payload = self.patient.id, self.autosave_payload()
        if payload is None:
            # nothing typed yet (e.g. views just reset for a newly opened patient): keep any
            # earlier autosave; only Save and Discard remove it
            return
        self.run_worker(
            partial(self.write_autosave, patient_id, payload),
            name="autosave-draft",
            group="store-write",
            thread=True,
            exit_on_error=False,
        )

    def write_autosave(self, patient_id: str, payload: dict[str, Any] | None) -> None:
        """Blocking (thread) write of the encrypted autosave; also used when locking."""

        def write(store: Any) -> None:
            if payload is None:
                store.delete_blob(patient_id, DRAFT_BLOB)
            else:
                data = json.dumps(payload, ensure_ascii=False).encode("utf-8")
                store.write_blob(patient_id, DRAFT_BLOB, data)

        try:
            self.app.store_call(write)
        except PhyAssistError as exc:
            self.app.call_from_thread(self.notify, f"Autosave failed: {exc}", severity="error")

    def _delete_autosave(self, patient_id: str) -> None:
        self.run_worker(
            partial(self.write_autosave, patient_id, None),
            name="discard-draft",
            group="store-write",
            thread=True,
            exit_on_error=False,
        )

    async def _restore_autosave(self, payload: dict[str, Any]) -> None:
        self.analysis.set_inputs(
            str(payload.get("question", "")), str(payload.get("observed_state", ""))
        )
        self.analysis.stream.set_text(str(payload.get("stream_text", "")))
        self.draft_question = str(payload.get("draft_question", ""))
        draft = payload.get("draft")
        if draft:
            try:
                await self.draft_pane.load(AnalysisDraft.model_validate(draft))
            except ValueError:
                self.notify(
                    "The kept draft could not be read; its text is shown above.", severity="warning"
                )
            else:
                self.action_show_tab("draft")
                return
        self.action_show_tab("analysis")

    async def prepare_lock(self) -> None:
        """Before locking or quitting: stop generation, write the autosave now."""
        if self._cancel is not None:
            self._cancel.set()
        self._stop_prefill()
        if self._autosave_timer is not None:
            self._autosave_timer.stop()
        payload = self.autosave_payload()
        if self.patient is not None and payload is not None:
            import asyncio

            await asyncio.to_thread(self.write_autosave, self.patient.id, payload)

    # -- chat ----------------------------------------------------------------------------------
    def _load_chat(self, patient: Patient) -> None:
        def load() -> None:
            history = self.app.store_call(partial(self.app.load_chat_history, patient.id))
            self.app.call_from_thread(self._chat_loaded, patient.id, history)

        self.run_worker(
            load,
            name="load-chat",
            group="chat-io",
            thread=True,
            exclusive=True,
            exit_on_error=False,
        )

    async def _chat_loaded(self, patient_id: str, history: list[ChatMessage]) -> None:
        if self.patient is not None and self.patient.id == patient_id:
            self.history = history
            await self.chat.show_history(history)

    def _save_chat(self) -> None:
        if self.patient is None:
            return
        patient_id, history = self.patient.id, list(self.history)

        def save() -> None:
            try:
                self.app.store_call(partial(self.app.save_chat_history, patient_id, history))
            except PhyAssistError as exc:
                self.app.call_from_thread(self.notify, f"Chat not saved: {exc}", severity="error")

        self.run_worker(
            save, name="save-chat", group="store-write", thread=True, exit_on_error=False
        )

    @on(ChatSubmitted)
    async def _chat_submitted(self, message: ChatSubmitted) -> None:
        patient = self.patient
        if patient is None:
            self.notify("Open a patient first.", severity="warning")
            return
        if self.generating is not None:
            self.notify("A generation is running (Esc stops it).", severity="warning")
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
        await self.chat.add_bubble("user", text)
        bubble: ChatBubble = await self.chat.add_bubble("assistant", "")
        bubble.set_text("")
        self._start(
            "chat",
            lambda a, cancel: a.stream_chat(patient, history, text, cancel=cancel),
        )
