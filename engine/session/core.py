"""The Session: the one object a front end (TUI, CLI, a later server client) talks to.

It holds the two long-lived things, the open vault and the model, and does every action on
them so that no front end has to remember the rules:

* the model loads in a background thread (``start_model_load``, ``engine.session.loading``);
  readiness is a state that listeners hear about and that ``wait_ready`` / ``ready()`` wait
  on, woken (not polled) by the load or by a run's ``cancel``;
* which patient's adapter the model holds (``use_patient``) and the record read-ahead
  (``prefill_record``) share one lock, so the read-ahead always fills the cache of the
  adapter in use;
* one vault call at a time (``_vault``), raising ``VaultLocked`` once the vault is closed;
* every action writes its audit entry here (``engine.trust.audit.record``): vault created,
  unlocked (with the failed attempts before it), locked; patient created, edited, deleted,
  opened; note saved, amended, deleted (``engine.session.corrections``); risk flags shown,
  acknowledged, cancelled; training started, finished, failed, killed; adapter rolled back,
  exported;
* generations are :class:`~engine.session.runs.Run` objects whose ``result()`` is typed and
  parsed here (``engine.inference.analysis``), never by the front end.

Importing this module imports neither torch nor the pydantic records: the TUI creates its
Session before the first frame. The model stack is imported by the load thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from engine.errors import PhyAssistError, WrongPassphrase
from engine.session.corrections import RecordCorrections
from engine.session.knowledge import KnowledgeHolder, KnowledgeProxy
from engine.session.loading import ModelLoader, ModelState
from engine.session.runs import AnalysisOutcome, ChatOutcome, ItemOutcome, Outcome, Run
from engine.session.training import cancellable, run_training

if TYPE_CHECKING:
    from pathlib import Path

    from engine.inference.compare import DraftPair
    from engine.knowledge.entries import Entry
    from engine.knowledge.index import KnowledgeIndex
    from engine.records import (
        AnalysisDraft,
        BasicInfo,
        ChatMessage,
        Note,
        Patient,
        PatientSummary,
        PreferenceChoice,
    )
    from engine.session.backend import ModelBackend, TrainingRunner, VaultOpener, VaultStore
    from engine.settings import Settings
    from engine.training.runner import TrainingEvent
    from engine.training.versions import AdapterVersion
    from engine.trust.risk import RiskFlag

__all__ = [
    "DRAFT_BLOB",
    "KEPT_DRAFT_BLOB",
    "ModelState",
    "OpenedPatient",
    "RiskCheck",
    "Session",
    "VaultLocked",
]

T = TypeVar("T")
DRAFT_BLOB = "draft"  # encrypted autosave of the unsaved draft, one per patient
KEPT_DRAFT_BLOB = "draft-kept"  # an autosave the counselor put off ("Later"), until decided


class VaultLocked(PhyAssistError):
    """A vault call after the vault was locked (or before it was opened)."""

    def __init__(self) -> None:
        super().__init__("The vault is locked.")


@dataclass(frozen=True)
class OpenedPatient:
    """A patient as opened: the record and any unsaved draft kept from last time.

    ``kept_autosave`` is a draft the counselor put off earlier ("Later" on the restore
    prompt): it is kept apart so that new autosaves cannot overwrite it."""

    patient: Patient
    autosave: dict[str, Any] | None = None
    kept_autosave: dict[str, Any] | None = None


@dataclass(frozen=True)
class RiskCheck:
    """Risk flags of one statement and a line saying how they were found."""

    flags: list[RiskFlag]
    found_by: str


def _real_opener() -> VaultOpener:
    from engine.vault.store import Store

    return Store  # type: ignore[return-value]


class Session(RecordCorrections):
    """Vault, model, runs and audit for one counselor's session (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        *,
        assistant: ModelBackend | None = None,
        assistant_factory: Callable[[Settings], ModelBackend] | None = None,
        vault_opener: VaultOpener | None = None,
        training_runner: TrainingRunner | None = None,
        origin: str = "tui",
    ) -> None:
        self.settings = settings
        self.origin = origin  # the audit entries' detail: which front end acted
        self._loader = ModelLoader(settings, assistant, assistant_factory)
        self._opener = vault_opener
        self._training_runner = training_runner
        self._store: VaultStore | None = None
        self._store_lock = threading.RLock()
        self._model_lock = threading.Lock()
        self._patient_in_model: str | None = None
        self._failed_unlocks = 0
        self._pending_audit: threading.Thread | None = None  # unlock's entries, being written
        self._knowledge = KnowledgeHolder(settings)
        self._loader.subscribe(self._give_model_knowledge)

    @classmethod
    def over(
        cls,
        store: VaultStore,
        settings: Settings,
        *,
        origin: str = "cli",
        assistant: ModelBackend | None = None,
    ) -> Session:
        """A Session over a vault the caller opened (the CLI asks for the passphrase)."""
        session = cls(settings, origin=origin, assistant=assistant)
        session._store = store
        return session

    # -- the model: background load and readiness -----------------------------------------
    @property
    def model_state(self) -> ModelState:
        return self._loader.state

    def subscribe(self, listener: Callable[[ModelState], None]) -> None:
        """Call ``listener(state)`` now and on every change (from the loading thread)."""
        self._loader.subscribe(listener)

    def start_model_load(self) -> bool:
        """Start loading the model in a background thread (once); ``False`` if already started."""
        return self._loader.start()

    def new_cancel(self) -> threading.Event:
        """A cancel flag whose ``set()`` wakes ``wait_ready`` at once."""
        return self._loader.new_cancel()

    def wait_ready(
        self, cancel: threading.Event | None = None, timeout: float | None = None
    ) -> bool:
        """Block until the model is ready (``True``), failed, cancelled or timed out.

        ``cancel`` should come from :meth:`new_cancel` (a plain Event is seen at the next
        state change only)."""
        return self._loader.wait_ready(cancel, timeout)

    async def ready(self, cancel: threading.Event | None = None) -> bool:
        """:meth:`wait_ready` for a coroutine."""
        return await asyncio.to_thread(self.wait_ready, cancel)

    @property
    def model(self) -> ModelBackend:
        backend = self._loader.ready_backend
        if backend is None:
            raise PhyAssistError("The model is not loaded yet.")
        return backend

    def use_patient(self, patient: Patient, *, force: bool = False) -> str | None:
        """Put this patient's adapter (else the domain adapter or base) in the model.

        Returns the model's new label, or ``None`` when nothing changed (already this
        patient's, or the model is not ready)."""
        assistant = self._loader.ready_backend
        if assistant is None:
            return None
        with self._model_lock:
            if self._patient_in_model == patient.id and not force:
                return None
            label = self._vault(lambda store: assistant.use_patient(patient, store))
            self._patient_in_model = patient.id
            return str(label or "")

    def forget_patient(self) -> str | None:
        """After a lock: no patient's adapter stays active in the model (the domain adapter
        or the base is used). Returns the model's new label, ``None`` if it is not ready."""
        assistant = self._loader.ready_backend
        with self._model_lock:
            self._patient_in_model = None
            if assistant is None:
                return None
            try:
                return str(assistant.use_patient(None) or "")
            except Exception:  # the caller still drops the patient's adapter from the label
                return ""

    def prefill_record(self, patient: Patient, cancel: threading.Event) -> int:
        """Read the patient's record into the model's prompt cache while the counselor types
        (the first draft then starts in about a second). An optimisation only: any failure
        returns 0, and ``cancel`` stops it within a chunk."""
        assistant = self._loader.ready_backend
        if assistant is None or cancel.is_set():
            return 0
        with self._model_lock:  # the adapter in use stays the one this patient's cache is for
            if self._patient_in_model != patient.id or cancel.is_set():
                return 0
            try:
                return int(assistant.prefill_record(patient, cancel) or 0)
            except Exception:
                return 0

    # -- the knowledge index (similar cases, references; grounded drafting) -------------------
    def _give_model_knowledge(self, state: ModelState) -> None:
        """Once the model is ready it drafts with the open vault's index (read on first use)."""
        backend = self._loader.ready_backend
        if state.state == "ready" and backend is not None:
            backend.knowledge = KnowledgeProxy(self.knowledge)

    def _open_store(self) -> VaultStore | None:
        with self._store_lock:
            return self._store

    def knowledge(self, *, load: bool = True) -> KnowledgeIndex | None:
        """The open vault's knowledge index, read (synced with the vault) on first use when
        ``load``: blocking, call it from a worker. ``None`` while the vault is locked or
        when the index cannot be read (the log says why)."""
        store = self._open_store()
        if store is None:
            return None
        return self._knowledge.get(store, load=load)

    def knowledge_entry(self, key: str) -> Entry | None:
        """A knowledge entry by key if the index was read already (never blocks): what a
        draft's ``[n]`` citation points to."""
        store = self._open_store()
        return self._knowledge.entry(store, key) if store is not None else None

    # -- the vault ---------------------------------------------------------------------------
    @property
    def opener(self) -> VaultOpener:
        if self._opener is None:
            self._opener = _real_opener()
        return self._opener

    @property
    def unlocked(self) -> bool:
        return self._store is not None

    def _vault(self, fn: Callable[[VaultStore], T]) -> T:
        """Run ``fn(store)``, one vault call at a time (after unlock's audit entries)."""
        self._join_pending_audit()
        with self._store_lock:
            if self._store is None:
                raise VaultLocked()
            return fn(self._store)

    def integrity_problems(self) -> list[str]:
        """What the vault found rolled back or missing when it opened (empty: nothing)."""
        return self._vault(lambda store: list(store.integrity_problems()))

    def vault_call(self, fn: Callable[[VaultStore], T]) -> T:
        """Run ``fn(store)`` with the open vault held still (one vault call at a time), for
        jobs that work on the vault's files as a whole, e.g. taking a backup snapshot.
        Raises ``VaultLocked`` when no vault is open."""
        return self._vault(fn)

    def _audit(self, store: VaultStore, action: str, patient_id: str | None = None, detail=None):
        from engine.trust.audit import record

        record(store, action, patient_id, self.origin if detail is None else detail)  # type: ignore[arg-type]

    def _audit_soon(self, entries: list[tuple[str, str | None, str | None]]) -> None:
        """Write ``entries`` in a thread: the counselor waits for the patient list after an
        unlock, not for the audit log (an append is ~50 ms, more on a busy disk). Every
        later vault call waits for them first, so the log keeps the order of events."""

        def write() -> None:
            with contextlib.suppress(VaultLocked), self._store_lock:
                if self._store is None:
                    raise VaultLocked()
                for action, patient_id, detail in entries:
                    self._audit(self._store, action, patient_id, detail)

        thread = threading.Thread(target=write, name="audit-unlock", daemon=True)
        self._pending_audit = thread
        thread.start()

    def _join_pending_audit(self) -> None:
        thread = self._pending_audit
        if thread is not None and thread is not threading.current_thread():
            thread.join()
            self._pending_audit = None

    def vault_exists(self) -> bool:
        return bool(self.opener.exists(self.settings.vault_dir))

    def create_vault(self, passphrase: str) -> list[PatientSummary] | None:
        """Create the vault and keep it open; returns its (empty) patient list."""
        store = self.opener.create(self.settings.vault_dir, passphrase, settings=self.settings)
        with self._store_lock:
            self._store = store
        patients = self._list_after_open()
        self._audit_soon([("vault_created", None, None)])
        return patients

    def unlock(self, passphrase: str) -> list[PatientSummary] | None:
        """Open the vault (raises ``WrongPassphrase`` etc.); returns the patient list if it
        could be read. Failed attempts are audited at the next unlock (the log is encrypted,
        so a wrong passphrase cannot write to it)."""
        try:
            store = self.opener.open(
                self.settings.vault_dir, passphrase, writer=True, settings=self.settings
            )
        except WrongPassphrase:
            self._failed_unlocks += 1
            raise
        with self._store_lock:
            self._store = store
            failed, self._failed_unlocks = self._failed_unlocks, 0
        patients = self._list_after_open()
        entries: list[tuple[str, str | None, str | None]] = []
        if failed:
            entries.append(("unlock_failed", None, f"{failed} failed attempt(s)"))
        entries.append(("unlock", None, None))
        self._audit_soon(entries)
        return patients

    def _list_after_open(self) -> list[PatientSummary] | None:
        try:
            return self.list_patients()
        except PhyAssistError:
            return None

    def lock(self) -> None:
        """Close the vault (audited first); the model forgets whose adapter it holds."""
        self._join_pending_audit()
        self._knowledge.drop()  # its decrypted entries go with the vault
        with self._store_lock:
            store, self._store = self._store, None
            if store is not None:
                self._audit(store, "lock")
                store.close()
        with self._model_lock:
            self._patient_in_model = None

    def close(self) -> None:
        """Close the vault at the end of a command-line action (no ``lock`` entry: nothing
        was unlocked for a session)."""
        self._join_pending_audit()
        self._knowledge.drop()
        with self._store_lock:
            store, self._store = self._store, None
            if store is not None:
                store.close()

    def change_passphrase(self, old: str, new: str) -> None:
        """Re-wrap the vault key under ``new`` (audited)."""

        def change(store: Any) -> None:
            store.change_passphrase(old, new)
            self._audit(store, "passphrase_changed", None)

        self._vault(change)

    # -- patients and notes ------------------------------------------------------------------
    def list_patients(self, query: str = "") -> list[PatientSummary]:
        return self._vault(lambda store: store.search(query) if query else store.list_patients())

    def create_patient(self, name: str, basic: BasicInfo | None = None) -> Patient:
        def create(store: VaultStore) -> Patient:
            patient = store.create_patient(name, basic)
            self._audit(store, "patient_created", patient.id)
            return patient

        return self._vault(create)

    def open_patient(self, patient_id: str, *, detail: str | None = None) -> OpenedPatient:
        """Read a patient (audited as opened) with any draft autosaved last time."""

        def read(store: VaultStore) -> OpenedPatient:
            patient = store.load_patient(patient_id)
            blob = store.read_blob(patient_id, DRAFT_BLOB)
            kept = store.read_blob(patient_id, KEPT_DRAFT_BLOB)
            self._audit(store, "patient_opened", patient_id, detail)
            return OpenedPatient(patient, _decode_autosave(blob), _decode_autosave(kept))

        return self._vault(read)

    def update_patient(self, patient: Patient) -> None:
        def save(store: VaultStore) -> None:
            store.save_patient(patient)
            self._audit(store, "patient_updated", patient.id)

        self._vault(save)

    def delete_patient(self, patient_id: str) -> None:
        def delete(store: VaultStore) -> None:
            store.delete_patient(patient_id)
            self._audit(store, "patient_deleted", patient_id)
            self._knowledge.patient_deleted(store, patient_id)  # none of their notes shown again

        self._vault(delete)

    def save_note(self, patient_id: str, note: Note) -> Patient:
        """Add the note (audited), drop the draft's autosave it came from, and index the
        patient's notes in the knowledge index if it was read (blocking: from a worker)."""

        def write(store: VaultStore) -> tuple[VaultStore, Patient]:
            updated = store.add_note(patient_id, note)
            self._audit(store, "note_saved", patient_id)
            store.delete_blob(patient_id, DRAFT_BLOB)
            return store, updated

        store, updated = self._vault(write)
        self._knowledge.note_saved(store, updated)  # outside the vault turn: it embeds
        return updated

    # -- draft autosave and chat history (encrypted blobs of the patient) ---------------------
    def write_autosave(self, patient_id: str, payload: dict[str, Any] | None) -> None:
        """Keep what would be lost on a crash (``None`` removes it)."""

        def write(store: VaultStore) -> None:
            if payload is None:
                store.delete_blob(patient_id, DRAFT_BLOB)
            else:
                data = json.dumps(payload, ensure_ascii=False).encode("utf-8")
                store.write_blob(patient_id, DRAFT_BLOB, data)

        self._vault(write)

    def write_kept_autosave(self, patient_id: str, payload: dict[str, Any] | None) -> None:
        """Keep a draft the counselor put off ("Later") apart from the autosave, which new
        work overwrites; ``None`` removes it (restored or discarded)."""

        def write(store: VaultStore) -> None:
            if payload is None:
                store.delete_blob(patient_id, KEPT_DRAFT_BLOB)
            else:
                data = json.dumps(payload, ensure_ascii=False).encode("utf-8")
                store.write_blob(patient_id, KEPT_DRAFT_BLOB, data)

        self._vault(write)

    def load_chat(self, patient_id: str) -> list[ChatMessage]:
        from engine.vault.chat import load_history

        return self._vault(lambda store: load_history(store, patient_id))

    def save_chat(self, patient_id: str, history: list[ChatMessage]) -> None:
        from engine.vault.chat import save_history

        self._vault(lambda store: save_history(store, patient_id, history))

    # -- risk ----------------------------------------------------------------------------------
    def risk_model_refusal(self) -> str | None:
        """Why the model is not asked in the risk check (``None``: it is). Cheap."""
        assistant = self._loader.ready_backend
        if assistant is None:
            return "the model is still loading"
        return assistant.risk_model_refusal()

    def check_risk(self, text: str) -> RiskCheck:
        """Rules always; the model too where :meth:`risk_model_refusal` allows (blocking:
        call it from a worker then). The model never silences a rule flag."""
        from engine.trust.risk import assess, found_by

        why = self.risk_model_refusal()
        if why is not None:
            flags = assess(text)
            return RiskCheck(flags, found_by(model_not_asked=why))
        flags, found_by = self.model.risk_flags(text)
        return RiskCheck(list(flags), found_by)

    def risk_shown(self, patient_id: str | None, flags: list[RiskFlag]) -> None:
        self._risk_audit("risk_flagged", patient_id, flags)

    def risk_acknowledged(self, patient_id: str | None, flags: list[RiskFlag]) -> None:
        self._risk_audit("risk_acknowledged", patient_id, flags)

    def risk_cancelled(self, patient_id: str | None, flags: list[RiskFlag]) -> None:
        self._risk_audit("risk_cancelled", patient_id, flags)

    def _risk_audit(self, action: str, patient_id: str | None, flags: list[RiskFlag]) -> None:
        """Categories, severities and rule ids only: never the quoted words."""
        from engine.trust.risk import risk_audit_detail

        with contextlib.suppress(VaultLocked):
            self._vault(
                lambda store: self._audit(store, action, patient_id, risk_audit_detail(flags))
            )

    # -- generation runs -------------------------------------------------------------------------
    def analysis(
        self,
        patient: Patient,
        question: str,
        *,
        observed: str = "",
        guidance: AnalysisDraft | None = None,
    ) -> Run[AnalysisOutcome]:
        """A draft Analysis of ``question`` (with ``guidance``: regenerate the whole draft)."""
        kind = "analysis" if guidance is None else "regenerate_all"
        extra: dict[str, Any] = {"observed": observed} if observed else {}
        if guidance is not None:
            extra["guidance"] = guidance
        return Run(
            self,
            kind,
            patient,
            lambda model, cancel: model.stream_analysis(patient, question, cancel=cancel, **extra),
            self._parse_draft,
        )

    def _parse_draft(self, base: Outcome) -> AnalysisOutcome:
        from engine.inference.analysis import parse_analysis

        fields = vars(base)
        if base.error is not None or not base.text.strip():
            return AnalysisOutcome(**fields)
        label = self._loader.label
        try:
            if base.draft_of is not None:  # the engine's own draft, with its risk items
                draft = base.draft_of(base.text)
            else:
                draft = parse_analysis(base.text, model_name=label)
        except Exception as exc:
            return AnalysisOutcome(**{**fields, "error": f"The draft could not be parsed: {exc}"})
        draft.raw_output = draft.raw_output or base.text
        draft.model_name = draft.model_name or label
        return AnalysisOutcome(**fields, draft=draft)

    def regenerate_item(
        self, patient: Patient, question: str, draft: AnalysisDraft, section: str, item_id: str
    ) -> Run[ItemOutcome]:
        """A new text for one item of ``draft``, guided by its comments and the rest."""
        snapshot = draft.model_copy(deep=True)

        def finish(base: Outcome) -> ItemOutcome:
            from engine.inference.analysis import parse_item_text

            text = " ".join(parse_item_text(base.text).split()) if base.text.strip() else ""
            return ItemOutcome(**vars(base), section=section, item_id=item_id, item_text=text)

        return Run(
            self,
            "regenerate_item",
            patient,
            lambda model, cancel: model.stream_regenerate_item(
                patient, question, snapshot, section, item_id, cancel=cancel
            ),
            finish,
        )

    def chat(
        self, patient: Patient | None, history: list[ChatMessage], message: str
    ) -> Run[ChatOutcome]:
        """The model's reply in a chat about ``patient`` (``history`` before ``message``)."""
        past = list(history)

        def finish(base: Outcome) -> ChatOutcome:
            reply = (base.text + " [stopped]").strip() if base.cancelled else base.text
            return ChatOutcome(**vars(base), reply=reply)

        return Run(
            self,
            "chat",
            patient,
            lambda model, cancel: model.stream_chat(patient, past, message, cancel=cancel),
            finish,
        )

    # -- training and adapters -------------------------------------------------------------------
    def train(self, patient: Patient, cancel: threading.Event) -> Iterator[dict[str, Any]]:
        """Train this patient's adapter in a subprocess; yields progress dicts (phase, step,
        total_steps, loss, tokens_per_s, eta_s, message). Audited as started, then finished,
        killed (``cancel``, Ctrl-C) or failed. Raises like the runner does."""
        runner = self._training_runner or run_training
        store = self._vault(lambda s: s)  # the runner takes its own turns on the vault
        events = runner(patient=patient, store=store, settings=self.settings, cancel=cancel)
        return self._audited_training(patient.id, events, cancel)

    def training_events(
        self,
        patient_id: str,
        cancel: threading.Event,
        *,
        overrides: dict[str, Any] | None = None,
    ) -> Iterator[TrainingEvent]:
        """:meth:`train` for the command line: the runner's own ``TrainingEvent`` objects,
        with training overrides (epochs, steps, preference method)."""
        from engine.training.runner import TrainingRun

        store = self._vault(lambda s: s)
        run = TrainingRun(store, patient_id, self.settings, overrides=overrides)
        return self._audited_training(patient_id, cancellable(run, cancel), cancel)

    def _audited_training(
        self, patient_id: str, events: Iterator[T], cancel: threading.Event
    ) -> Iterator[T]:
        self._vault(lambda s: self._audit(s, "training_started", patient_id))
        outcome, detail = "training_failed", ""
        try:
            for event in events:
                yield event
                if cancel.is_set():
                    break
            outcome = "training_killed" if cancel.is_set() else "training_finished"
        except BaseException as exc:
            stopped = cancel.is_set() or isinstance(exc, KeyboardInterrupt)
            outcome = "training_killed" if stopped else "training_failed"
            detail = type(exc).__name__
            raise
        finally:
            with contextlib.suppress(VaultLocked):  # locked meanwhile: nothing to write to
                self._vault(lambda s: self._audit(s, outcome, patient_id, detail or self.origin))

    def after_training(self, patient: Patient) -> str | None:
        """Use the adapter just trained (returns the model's new label)."""
        return self.use_patient(patient, force=True)

    def rollback_adapter(self, patient_id: str, version: int | None = None) -> tuple[int, int]:
        """Make an earlier adapter version active; returns (previous, now active)."""
        from engine.model.adapters import AdapterRegistry
        from engine.training.versions import rollback

        def roll(store: VaultStore) -> tuple[int, int]:
            current = AdapterRegistry(store).active(patient_id)
            now = rollback(store, patient_id, version)
            self._audit(store, "adapter_activated", patient_id, f"rollback v{current}->v{now}")
            return current, now

        return self._vault(roll)

    def adapter_versions(self, patient_id: str) -> list[AdapterVersion]:
        """The patient's adapter versions, oldest first, with their cards and which is active."""
        from engine.training.versions import list_versions

        return self._vault(lambda store: list_versions(store, patient_id))

    def compare(
        self, patient: Patient, question: str, cancel: threading.Event, *, observed: str = ""
    ) -> DraftPair:
        """Draft ``question`` with the domain model (left) and the patient's adapter (right),
        for the counselor to pick from (blocking: call it from a worker). Waits for the model;
        nothing else switches adapters meanwhile, and the patient's adapter is in use after.
        Raises ``AdapterNotFound`` (nothing to compare), ``GenerationCancelled`` or
        ``PhyAssistError`` (the model is not available)."""
        from engine.errors import GenerationCancelled
        from engine.inference.compare import compare_drafts

        if not self.wait_ready(cancel):
            if cancel.is_set():
                raise GenerationCancelled()
            raise PhyAssistError(f"The model is not available: {self.model_state.detail}")
        assistant = self.model
        store = self._vault(lambda s: s)  # compare_drafts takes its own turns on the vault
        with self._model_lock:
            try:
                return compare_drafts(
                    assistant, patient, store, question, cancel=cancel, observed=observed
                )
            finally:
                self._patient_in_model = patient.id  # compare_drafts leaves this patient's

    def record_preferences(self, patient_id: str, choices: list[PreferenceChoice]) -> int:
        """Keep the counselor's Compare picks (encrypted, in the patient file) as training
        signal; audited with counts only. Returns how many were kept."""
        from engine.inference.compare import choice_audit_detail, record_choice

        def keep(store: VaultStore) -> int:
            kept = record_choice(store, patient_id, choices)
            if kept:
                self._audit(store, "preference_recorded", patient_id, choice_audit_detail(choices))
            return kept

        return self._vault(keep)

    def export_adapter(self, patient_id: str, out: Path, version: int | None = None) -> Path:
        """Write an adapter UNENCRYPTED to ``out`` (audited)."""
        from engine.training.versions import export_adapter

        def export(store: VaultStore) -> Path:
            path = export_adapter(store, patient_id, out, version)
            self._audit(store, "export", patient_id, f"adapter v{version or 'active'}")
            return path

        return self._vault(export)


def _decode_autosave(blob: bytes | None) -> dict[str, Any] | None:
    if not blob:
        return None
    try:
        payload = json.loads(blob.decode("utf-8"))
    except ValueError:
        return None
    return payload if isinstance(payload, dict) else None
