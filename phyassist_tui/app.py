"""PhyAssist's Textual application: unlock, then the counselor's workspace.

The app holds the three long-lived things: the settings, the unlocked vault (``store``)
and the model (``assistant``, loaded in a background thread from the first frame so the
patient list never waits for torch). Screens reach them through the small thread-safe
helpers here (``store_call``, ``wait_for_model``, ``use_patient_model``).
"""

from __future__ import annotations

import asyncio
import gc
import json
import sys
import threading
import time
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from textual import events
from textual.app import App, SystemCommand
from textual.reactive import reactive
from textual.screen import Screen
from textual.timer import Timer

from engine.errors import PhyAssistError
from engine.settings import Settings, load_settings
from phyassist_tui.bindings import bindings_for, keymap_from_settings, specs_for
from phyassist_tui.focus import is_text_field
from phyassist_tui.knowledge import attach_knowledge, drop_knowledge
from phyassist_tui.ports import (
    AssistantLike,
    TrainingRunner,
    VaultOpener,
    VaultStore,
    chat_history_io,
    find_training_runner,
    real_assistant,
    real_store_class,
)
from phyassist_tui.screens.unlock import UnlockScreen
from phyassist_tui.startup import resume_gc
from phyassist_tui.widgets.text import clean

if TYPE_CHECKING:
    from engine.records import ChatMessage, Patient, PatientSummary
    from phyassist_tui.screens.workspace import WorkspaceScreen

T = TypeVar("T")
WORKSPACE_MODULE = "phyassist_tui.screens.workspace"

MODEL_LOAD_GRACE_S = 2.0  # the model starts loading this long after launch at the latest

ACTIVITY_EVENTS = (
    events.Key,
    events.MouseDown,
    events.MouseScrollDown,
    events.MouseScrollUp,
    events.Paste,
)


class VaultLocked(PhyAssistError):
    """Raised inside a worker that touched the vault after it was locked."""

    def __init__(self) -> None:
        super().__init__("The vault is locked.")


class PhyAssistApp(App):
    """Keyboard-first workspace for counselors; every action has a key and a palette entry."""

    TITLE = "PhyAssist"
    CSS_PATH = Path(__file__).parent / "styles" / "app.tcss"  # absolute: subclasses live elsewhere
    BINDINGS = bindings_for("app")

    model_state: reactive[str] = reactive("loading")
    model_label: reactive[str] = reactive("")
    model_detail: reactive[str] = reactive("")

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        assistant: AssistantLike | None = None,
        vault_class: VaultOpener | None = None,
        training_runner: TrainingRunner | None = None,
        assistant_factory: Callable[[Settings], AssistantLike] | None = None,
    ) -> None:
        super().__init__()
        self.settings = settings or load_settings()
        self.vault_class: VaultOpener = vault_class or real_store_class_lazy()
        self.store: VaultStore | None = None
        self.assistant = assistant
        self._assistant_factory = assistant_factory or real_assistant
        self.training_runner = training_runner
        self.model_ready = threading.Event()
        self.model_failed = threading.Event()
        self._store_lock = threading.Lock()
        self._model_lock = threading.Lock()
        self._patient_in_model: str | None = None
        self._last_activity = time.monotonic()
        self.last_typed_at = 0.0  # monotonic time of the last printable key into a text field
        self._theme_loaded = False
        self._model_load_started = False
        self._model_timer: Timer | None = None
        self.knowledge: Any | None = None  # engine.knowledge.index.KnowledgeIndex (knowledge hook)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "lock":
            return self.store is not None
        return True

    # -- start-up -------------------------------------------------------------------------------
    def on_mount(self) -> None:
        if self.settings.theme in self.available_themes:
            self.theme = self.settings.theme
        self._theme_loaded = True
        known, unknown = keymap_from_settings(self.settings.keymap)
        if known:
            self.set_keymap(known)
        if unknown:
            self.notify(
                "Unknown binding ids in settings keymap: " + ", ".join(sorted(unknown)),
                severity="warning",
            )
        self.push_screen(UnlockScreen())
        self.call_after_refresh(freeze_heap)
        # The workspace's modules (pydantic records, Markdown, the panes) are imported while
        # the passphrase is typed and the key derived, rather than after the vault opens.
        self.run_worker(preload_workspace, name="preload-workspace", thread=True)
        # The model loads in the background from the moment the patient list is up, or
        # after a grace period while the counselor types the passphrase; importing torch
        # holds the GIL for seconds and would otherwise slow the unlock and the first list.
        self._model_timer = self.set_timer(MODEL_LOAD_GRACE_S, self._model_grace_elapsed)
        minutes = self.settings.idle_lock_minutes
        if minutes > 0:
            self.set_interval(min(5.0, max(0.2, minutes * 60 / 4)), self._check_idle)

    def patient_list_shown(self) -> None:
        """The workspace's list is painted: start-up is over (see phyassist_tui.startup)."""
        resume_gc()

    def on_unmount(self) -> None:
        resume_gc()

    def _model_grace_elapsed(self) -> None:
        """Start the model while the passphrase is being typed, not while the vault opens."""
        self._model_timer = None
        if isinstance(self.screen, UnlockScreen) and self.screen.busy:
            self._model_timer = self.set_timer(0.5, self._model_grace_elapsed)
            return
        if self.store is None:
            self.start_model_load()
        else:  # unlocked: the patient list starts it once shown; this is the fallback
            self._model_timer = self.set_timer(2.0, self.start_model_load)

    def start_model_load(self) -> None:
        """Start loading the model in a worker (once; later calls do nothing)."""
        if self._model_load_started:
            return
        self._model_load_started = True
        if self._model_timer is not None:
            self._model_timer.stop()
        self.run_worker(self._load_model, name="load-model", thread=True, exit_on_error=False)

    def _load_model(self) -> None:
        """Background: build and load the assistant; the UI shows progress meanwhile."""

        def progress(*args: Any, **kwargs: Any) -> None:
            detail = " ".join(str(a) for a in args if a is not None)
            detail = detail or " ".join(f"{v}" for v in kwargs.values())
            self.call_from_thread(setattr, self, "model_detail", clean(detail)[:200])

        try:
            if self.assistant is None:
                self.assistant = self._assistant_factory(self.settings)
            if not getattr(self.assistant, "loaded", False):
                self.assistant.load(progress=progress)
        except Exception as exc:
            self.model_failed.set()
            message = (
                str(exc) if isinstance(exc, PhyAssistError) else f"{type(exc).__name__}: {exc}"
            )
            self.call_from_thread(self._model_loaded, "failed", "", clean(message))
            return
        self.model_ready.set()
        self.call_from_thread(self._model_loaded, "ready", self.assistant.model_label, "")

    def _model_loaded(self, state: str, label: str, detail: str) -> None:
        resume_gc()  # if the vault is still locked (see phyassist_tui.startup)
        freeze_heap()  # torch and the weights' Python objects: never scanned again
        self.model_label = label
        self.model_detail = detail
        self.model_state = state
        if state == "ready":
            attach_knowledge(self)  # knowledge hook: grounded drafting
        if state == "failed":
            self.notify(f"The model could not be loaded: {detail}", severity="error", timeout=10)

    # -- vault ----------------------------------------------------------------------------------
    def vault_unlocked(
        self, store: VaultStore, patients: list[PatientSummary] | None = None
    ) -> None:
        """The vault is open: show the workspace (with ``patients`` if already listed)."""
        from phyassist_tui.screens.workspace import WorkspaceScreen

        self.store = store
        self.refresh_bindings()
        self._last_activity = time.monotonic()
        self.switch_screen(WorkspaceScreen(patients))
        self.call_after_refresh(freeze_heap)
        attach_knowledge(self)  # knowledge hook: Similar pane and grounded drafting

    def store_call(self, fn: Callable[[VaultStore], T]) -> T:
        """Run ``fn(store)`` (from a worker thread), one vault call at a time."""
        with self._store_lock:
            if self.store is None:
                raise VaultLocked()
            return fn(self.store)

    def load_chat_history(self, patient_id: str, store: VaultStore) -> list[ChatMessage]:
        from engine.records import ChatMessage
        from phyassist_tui.screens.workspace import CHAT_BLOB

        io = chat_history_io()
        if io is not None:
            return list(io[0](store, patient_id))
        blob = store.read_blob(patient_id, CHAT_BLOB)
        if not blob:
            return []
        return [ChatMessage.model_validate(m) for m in json.loads(blob.decode("utf-8"))]

    def save_chat_history(
        self, patient_id: str, history: list[ChatMessage], store: VaultStore
    ) -> None:
        from phyassist_tui.screens.workspace import CHAT_BLOB

        io = chat_history_io()
        if io is not None:
            io[1](store, patient_id, history)
            return
        data = json.dumps([m.model_dump(mode="json") for m in history], ensure_ascii=False)
        store.write_blob(patient_id, CHAT_BLOB, data.encode("utf-8"))

    # -- model ------------------------------------------------------------------------------------
    def wait_for_model(self, cancel: threading.Event) -> AssistantLike | None:
        """Block (in a worker) until the model is loaded; ``None`` if cancelled or failed."""
        while not cancel.is_set():
            if self.model_ready.wait(0.05):
                return self.assistant
            if self.model_failed.is_set():
                return None
        return None

    def prefill_record(self, patient: Patient, cancel: threading.Event) -> int:
        """Background: read the patient's record into the model's prompt cache, so that the
        first draft starts in about a second instead of after the whole record is read
        (``Assistant.prefill_record``). Stops within a chunk once ``cancel`` is set."""
        prefill = getattr(self.assistant, "prefill_record", None)
        if prefill is None or not self.model_ready.is_set() or cancel.is_set():
            return 0
        with self._model_lock:  # the adapter in use stays the one this patient's cache is for
            if self._patient_in_model != patient.id or cancel.is_set():
                return 0
            try:
                return int(prefill(patient, cancel) or 0)
            except Exception:  # an optimisation only: the generation reads the record itself
                return 0

    def use_patient_model(self, patient: Patient, *, force: bool = False) -> str | None:
        """Make the model use this patient's adapter (or the base); returns its label."""
        if not self.model_ready.is_set() or self.assistant is None:
            return None
        with self._model_lock:
            if self._patient_in_model == patient.id and not force:
                return None
            try:
                label = self.store_call(lambda store: self.assistant.use_patient(patient, store))
            except PhyAssistError as exc:
                self.call_from_thread(self.notify, str(exc), severity="warning")
                return None
            self._patient_in_model = patient.id
            return clean(str(label or ""))

    # -- training ---------------------------------------------------------------------------------
    def start_training(self, patient: Patient | None) -> None:
        if patient is None:
            self.notify("Open a patient first.", severity="warning")
            return
        runner = self.training_runner or find_training_runner()
        if runner is None:
            self.notify("Training is not available in this build.", severity="warning")
            return
        if not patient.notes:
            self.notify("Save at least one note before training an adapter.", severity="warning")
            return
        settings = self.settings

        def start(cancel: threading.Event):
            return runner(patient=patient, store=self.store, settings=settings, cancel=cancel)

        def finished(ok: bool | None) -> None:
            if ok:
                self.run_worker(
                    partial(self._after_training, patient),
                    thread=True,
                    name="use-new-adapter",
                    exit_on_error=False,
                )

        from phyassist_tui.screens.train import TrainScreen  # plotext: off the launch path

        self.push_screen(TrainScreen(patient.name, start), finished)

    def _after_training(self, patient: Patient) -> None:
        label = self.use_patient_model(patient, force=True)
        if label:
            self.call_from_thread(setattr, self, "model_label", label)
        screen = self._workspace()
        if screen is not None:
            self.call_from_thread(screen.patients.refresh_list)

    # -- locking and quitting ---------------------------------------------------------------------
    def _workspace(self) -> WorkspaceScreen | None:
        for screen in self.screen_stack:
            if is_workspace(screen):
                return screen
        return None

    def on_key(self, event: events.Key) -> None:
        """Type-ahead: a printable key aimed at a widget that lost focus before it was handled.

        Keys arrive in bursts over SSH or on a busy machine: after ``e`` opens an editor, the
        next letters may already be queued for the list. A printable key only reaches the app
        unhandled while a text field is focused in that case (fields consume their own keys),
        so it is typed into the field rather than lost.
        """
        from textual.widgets import Input, TextArea

        focused = self.focused
        if not (event.is_forwarded and event.is_printable and event.character):
            return
        if isinstance(focused, Input):
            focused.insert_text_at_cursor(event.character)
        elif isinstance(focused, TextArea) and not focused.read_only:
            focused.insert(event.character)

    async def on_event(self, event: events.Event) -> None:
        if isinstance(event, ACTIVITY_EVENTS):
            self._last_activity = time.monotonic()
            if isinstance(event, events.Key) and event.is_printable and is_text_field(self.focused):
                self.last_typed_at = self._last_activity
        await super().on_event(event)

    def _check_idle(self) -> None:
        if self.store is None:
            return
        idle = time.monotonic() - self._last_activity
        if idle >= self.settings.idle_lock_minutes * 60:
            self.run_worker(
                self.lock(reason="Locked after inactivity."),
                name="idle-lock",
                exclusive=True,
                group="lock",
            )

    async def lock(self, reason: str = "") -> None:
        """Save what is unsaved (encrypted), close the vault, forget the patients."""
        if self.store is None:
            return
        workspace = self._workspace()
        if workspace is not None:
            await workspace.prepare_lock()
        await asyncio.to_thread(self._close_store)
        while len(self.screen_stack) > 1:
            await self.pop_screen()
        self._patient_in_model = None
        await self.push_screen(UnlockScreen(reason))

    def _close_store(self) -> None:
        with self._store_lock:
            drop_knowledge(self)  # knowledge hook
            store, self.store = self.store, None
            if store is not None:
                store.close()

    async def action_lock(self) -> None:
        await self.lock(reason="Locked.")

    async def action_quit(self) -> None:
        workspace = self._workspace()
        if workspace is not None:
            await workspace.prepare_lock()
        await asyncio.to_thread(self._close_store)
        self.exit()

    # -- theme and palette ------------------------------------------------------------------------
    def watch_theme(self, theme: str) -> None:
        if self._theme_loaded and theme != self.settings.theme:
            self.run_worker(
                partial(self.settings.save_preferences, theme=theme),
                name="save-theme",
                thread=True,
                exit_on_error=False,
            )

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        """Every action of the table in ``bindings.py``, for the screen it was opened on."""
        yield from super().get_system_commands(screen)
        scopes = ["app"]
        if is_workspace(screen):
            scopes += ["workspace", "draft", "chat", "similar"]
        builtin = {"quit", "change_theme"}  # the system provider lists these already
        for spec in specs_for(scopes):
            if spec.scope == "app" and spec.action in builtin:
                continue
            key = self._keymap.get(spec.id, spec.key)
            yield SystemCommand(
                f"{spec.description} ({key})",
                spec.help,
                partial(self._run_palette_action, screen, spec.scope, spec.action),
            )

    async def _run_palette_action(self, screen: Screen, scope: str, action: str) -> None:
        if scope == "app":
            await self.run_action(action)
            return
        if scope == "workspace":
            await screen.run_action(action)
            return
        await screen.run_action(f"show_tab('{scope}')")
        pane = screen.query_one(f"#{scope}-pane")
        if not pane.check_action(action, ()):  # say why, rather than do nothing
            self.notify(
                "Not available now: no draft, a generation running, or an item being edited.",
                severity="warning",
            )
            return
        await pane.run_action(action)


def is_workspace(screen: object) -> bool:
    """Whether ``screen`` is the workspace (without importing it before it is needed)."""
    module = sys.modules.get(WORKSPACE_MODULE)
    return module is not None and isinstance(screen, module.WorkspaceScreen)


def preload_workspace() -> None:
    """Import what the vault and the workspace need (in a worker thread, at start-up)."""
    import engine.vault.store  # noqa: F401
    import phyassist_tui.screens.workspace  # noqa: F401


def freeze_heap() -> None:
    """Move every object alive now out of the cyclic garbage collector's sight.

    A full collection scans every tracked object: with Textual, pydantic's schemas and
    (once loaded) torch, one took 120+ ms on the test box and stalled whatever key was
    pressed meanwhile. The app's long-lived objects are made at start-up, on unlock and
    when the model loads; freezing them after each keeps later collections to the
    objects made since. Memory freed by reference counting is unaffected.
    """
    gc.freeze()


def real_store_class_lazy() -> VaultOpener:
    """``engine.vault.store.Store``, imported on first use (it is cheap, but keep start-up lean)."""

    class _Lazy:
        @staticmethod
        def _store() -> VaultOpener:
            return real_store_class()

        def exists(self, vault_dir):
            return self._store().exists(vault_dir)

        def create(self, vault_dir, passphrase, settings=None):
            return self._store().create(vault_dir, passphrase, settings=settings)

        def open(self, vault_dir, passphrase, writer=True, settings=None):
            return self._store().open(vault_dir, passphrase, writer=writer, settings=settings)

    return _Lazy()
