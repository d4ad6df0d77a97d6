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

The Session's methods are grouped by job in bases of :class:`Session`: ``vault_access``
(unlock, lock, one vault call at a time, audit), ``patients`` (patients, notes, autosave,
chat history), ``corrections``, ``risk``, ``generating`` (the runs) and ``adapters``
(training, rollback, export, Compare). This module holds the Session itself: its state,
the model's readiness and which patient it holds, and the knowledge index.

Importing this module imports neither torch nor the pydantic records: the TUI creates its
Session before the first frame. The model stack is imported by the load thread.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from engine.errors import PhyAssistError
from engine.session.adapters import AdapterActions
from engine.session.corrections import RecordCorrections
from engine.session.generating import GenerationRuns
from engine.session.knowledge import KnowledgeHolder, KnowledgeProxy
from engine.session.loading import ModelLoader, ModelState
from engine.session.patients import PatientActions
from engine.session.risk import RiskActions
from engine.session.vault_access import VaultAccess
from engine.trust import risk_probe as _risk_probe

if TYPE_CHECKING:
    from engine.knowledge.entries import Entry
    from engine.knowledge.index import KnowledgeIndex
    from engine.records import Patient
    from engine.session.backend import ModelBackend, TrainingRunner, VaultOpener, VaultStore
    from engine.settings import Settings

__all__ = ["Session"]


class Session(
    VaultAccess,
    PatientActions,
    RecordCorrections,
    RiskActions,
    GenerationRuns,
    AdapterActions,
):
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
        _risk_probe.configure(settings.risk_probe)  # the risk check's statement probe
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
