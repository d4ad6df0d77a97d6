"""PhyAssist's Textual application: unlock, then the counselor's workspace.

The app keeps only app concerns: start-up (when the model starts loading), locking and
quitting, the theme and the command palette. Everything about the vault and the model is
the engine's ``Session`` (``engine.session``), reached through ``self.session`` (typed as
``phyassist_tui.ports.SessionPort``): it loads the model in the background, knows whose
adapter the model holds, makes one vault call at a time and writes the audit log.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import sys
import time
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from textual import events
from textual.app import App, SystemCommand
from textual.reactive import reactive
from textual.screen import Screen
from textual.timer import Timer

from engine.settings import Settings, load_settings
from phyassist_tui.bindings import bindings_for, keymap_from_settings, specs_for, web_keymap
from phyassist_tui.focus import is_command_key, is_text_field
from phyassist_tui.knowledge import schedule_warm_up
from phyassist_tui.ports import SessionPort, real_session
from phyassist_tui.screens.unlock import UnlockScreen
from phyassist_tui.startup import resume_gc
from phyassist_tui.widgets.text import clean

if TYPE_CHECKING:
    from engine.records import Patient, PatientSummary
    from engine.session import ModelBackend, ModelState, TrainingRunner, VaultOpener
    from phyassist_tui.screens.workspace import WorkspaceScreen

WORKSPACE_MODULE = "phyassist_tui.screens.workspace"

MODEL_LOAD_GRACE_S = 2.0  # the model starts loading this long after launch at the latest

ACTIVITY_EVENTS = (
    events.Key,
    events.MouseDown,
    events.MouseScrollDown,
    events.MouseScrollUp,
    events.Paste,
)


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
        session: SessionPort | None = None,
        assistant: ModelBackend | None = None,
        vault_class: VaultOpener | None = None,
        training_runner: TrainingRunner | None = None,
        assistant_factory: Callable[[Settings], ModelBackend] | None = None,
    ) -> None:
        """``session`` or the parts to build one (a test passes a fake ``assistant``)."""
        super().__init__()
        self.settings = settings or load_settings()
        self.session: SessionPort = session or real_session(
            self.settings,
            assistant=assistant,
            assistant_factory=assistant_factory,
            vault_opener=vault_class,
            training_runner=training_runner,
        )
        self._last_activity = time.monotonic()
        self.last_typed_at = 0.0  # monotonic time of the last printable key into a text field
        self._theme_loaded = False
        self._model_timer: Timer | None = None
        self._after_unlock: list[str] = []  # said once the vault is open again

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "lock":
            return self.session.unlocked
        return True

    # -- start-up -------------------------------------------------------------------------------
    def on_mount(self) -> None:
        if self.settings.theme in self.available_themes:
            self.theme = self.settings.theme
        self._theme_loaded = True
        known, unknown = keymap_from_settings(self.settings.keymap)
        if self.is_web:  # keys a browser keeps for itself (Ctrl+N, Ctrl+T) get F-keys first
            known = {**web_keymap(known), **known}
        if known:
            self.set_keymap(known)
        if unknown:
            self.notify(
                "Unknown binding ids in settings keymap: " + ", ".join(sorted(unknown)),
                severity="warning",
            )
        self.session.subscribe(self._model_state_changed)
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
        # An app torn down without Quit (a closed terminal, a crash, a test) still writes what
        # the vault owes and stops its timers now: no write may land after the app is gone.
        # (Quit and Lock have locked it already, with their audit entry.)
        if self.session.unlocked:
            with contextlib.suppress(Exception):
                self.session.close()

    def _model_grace_elapsed(self) -> None:
        """Start the model while the passphrase is being typed, not while the vault opens."""
        self._model_timer = None
        if not self.screen_stack:  # the app is closing (Ctrl+Q within the grace period)
            return
        if isinstance(self.screen, UnlockScreen) and self.screen.busy:
            self._model_timer = self.set_timer(0.5, self._model_grace_elapsed)
            return
        if not self.session.unlocked:
            if self.settings.model_load_before_unlock:  # serve: only after unlock
                self.start_model_load()
        else:  # unlocked: the patient list starts it once shown; this is the fallback
            self._model_timer = self.set_timer(2.0, self.start_model_load)

    def start_model_load(self) -> None:
        """Start loading the model in the Session's thread (once; later calls do nothing)."""
        if self._model_timer is not None:
            self._model_timer.stop()
            self._model_timer = None
        self.session.start_model_load()

    def _model_state_changed(self, state: ModelState) -> None:
        """From the Session's loading thread: hand the state to the event loop."""
        # AttributeError/RuntimeError: the app is not running (yet, or any more)
        with contextlib.suppress(AttributeError, RuntimeError):
            self._loop.call_soon_threadsafe(self._show_model_state, state)

    def _show_model_state(self, state: ModelState) -> None:
        if state.state in ("idle", "loading"):
            if state.detail:
                self.model_detail = clean(state.detail)[:200]
            return
        resume_gc()  # if the vault is still locked (see phyassist_tui.startup)
        freeze_heap()  # torch and the weights' Python objects: never scanned again
        self.model_label = state.label
        self.model_detail = clean(state.detail)
        self.model_state = state.state
        if state.state == "failed":
            self.notify(
                f"The model could not be loaded: {self.model_detail}", severity="error", timeout=10
            )

    # -- vault ----------------------------------------------------------------------------------
    def vault_unlocked(self, patients: list[PatientSummary] | None = None) -> None:
        """The vault is open: show the workspace (with ``patients`` if already listed)."""
        from phyassist_tui.screens.workspace import WorkspaceScreen

        self.refresh_bindings()
        self._last_activity = time.monotonic()
        self.switch_screen(WorkspaceScreen(patients))
        for message in self._after_unlock:  # e.g. how a training ended while locked
            self.notify(message, timeout=15)
        self._after_unlock.clear()
        self.call_after_refresh(freeze_heap)
        schedule_warm_up(self)  # knowledge: Similar pane and grounded drafting

    # -- training ---------------------------------------------------------------------------------
    def start_training(self, patient: Patient | None) -> None:
        if patient is None:
            self.notify("Open a patient first.", severity="warning")
            return
        if not patient.notes:
            self.notify("Save at least one note before training an adapter.", severity="warning")
            return

        def finished(ok: bool | None) -> None:
            if ok:
                self.run_worker(
                    partial(self._after_training, patient),
                    thread=True,
                    name="use-new-adapter",
                    exit_on_error=False,
                )

        from phyassist_tui.screens.train import TrainScreen  # plotext: off the launch path

        self.push_screen(TrainScreen(patient.name, partial(self.session.train, patient)), finished)

    def _after_training(self, patient: Patient) -> None:
        label = self.session.after_training(patient)
        if label:
            self.call_from_thread(setattr, self, "model_label", clean(label))
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
        if isinstance(event, events.Key) and event.character and is_command_key(event.key):
            # Alt+C arrives as "alt+c" with the character "c": a command, never text, so no
            # text field may type it (and swallow the binding)
            event = events.Key(event.key, None)
        if isinstance(event, ACTIVITY_EVENTS):
            self._last_activity = time.monotonic()
            if isinstance(event, events.Key) and event.is_printable and is_text_field(self.focused):
                self.last_typed_at = self._last_activity
        await super().on_event(event)

    def training_screen(self) -> Any:
        """The training screen if one is open (running or showing its outcome), else None."""
        module = sys.modules.get("phyassist_tui.screens.train")
        if module is None:
            return None
        return next((s for s in self.screen_stack if isinstance(s, module.TrainScreen)), None)

    def _training_running(self) -> bool:
        train = self.training_screen()
        return train is not None and not train.finished

    def _keep_training_outcome(self) -> None:
        """Before a lock closes the training screen: remember what to say after unlock."""
        train = self.training_screen()
        if train is None:
            return
        name = clean(train.patient_name)
        if not train.finished:
            train.cancel.set()
            self._after_unlock.append(
                f"The training for {name} was stopped by the lock; "
                "the previous adapter stays active."
            )
        else:
            self._after_unlock.append(f"Training for {name}: {train.outcome}")

    def _check_idle(self) -> None:
        if not self.session.unlocked:
            return
        if self._training_running():
            return  # the idle lock waits for the training (locking would stop it)
        workspace = self._workspace()
        if workspace is not None and workspace.generating is not None:
            return  # nor does it cut a draft the counselor is waiting for (it ends by itself)
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
        if not self.session.unlocked:
            return
        workspace = self._workspace()
        if workspace is not None:
            await workspace.prepare_lock()
        self._keep_training_outcome()  # stops a running training; said after unlock
        await self._backup_in_background(automatic=True)  # backup: setting backup.on_lock_and_quit
        await asyncio.to_thread(self.session.lock)
        while len(self.screen_stack) > 1:
            await self.pop_screen()
        self.run_worker(self._forget_patient_model, name="forget-patient-model", thread=True)
        await self.push_screen(UnlockScreen(reason))

    def _forget_patient_model(self) -> None:
        """After a lock: no patient's adapter stays active, nor named in the status line."""
        label = self.session.forget_patient()
        if label is not None:
            self.call_from_thread(setattr, self, "model_label", clean(label))

    async def action_lock(self) -> None:
        train = self.training_screen()
        if train is None or train.finished:
            await self.lock(reason="Locked.")
            return
        from phyassist_tui.screens.confirm import ConfirmScreen

        async def answer(yes: bool | None) -> None:
            if yes:
                await self.lock(reason="Locked.")

        self.push_screen(
            ConfirmScreen(
                f"The adapter for {clean(train.patient_name)} is training. Locking now stops "
                "it (the previous adapter stays active). Lock anyway? (The idle lock waits "
                "for the training instead.)",
                yes="Lock and stop",
                no="Keep training",
            ),
            answer,
        )

    def action_help(self) -> None:
        from phyassist_tui.screens.help import HelpScreen

        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    def action_screenshot(self, *args: object, **kwargs: object) -> None:
        """Off: a screenshot is an unencrypted file of what is on screen (patient data)."""
        self.deliver_screenshot()

    def deliver_screenshot(self, *args: object, **kwargs: object) -> None:
        """Off, like ``action_screenshot`` (Textual's palette entry and key call this)."""
        self.notify(
            "Screenshots are off: they would write patient data to disk unencrypted.",
            severity="warning",
        )

    async def action_quit(self) -> None:
        workspace = self._workspace()
        if workspace is not None:
            await workspace.prepare_lock()
        await self._backup_in_background(automatic=True)  # backup: setting backup.on_lock_and_quit
        await asyncio.to_thread(self.session.lock)
        self.exit()

    async def action_backup_now(self) -> None:
        await self._backup_in_background(automatic=False)

    async def _backup_in_background(self, *, automatic: bool) -> None:
        """Snapshot the open vault and send it from a detached process (phyassist_tui.backup)."""
        from phyassist_tui.backup import start_background_backup

        message, started = await asyncio.to_thread(
            start_background_backup, self, automatic=automatic
        )
        if message:
            self.notify(message, severity="information" if started else "warning")

    def action_toggle_risk_probe(self) -> None:
        """Turn the risk check's statement probe on or off, and keep the choice."""
        from engine.trust import risk_probe
        from phyassist_tui.screens.risk import warm_up_risk_classifier

        on = not self.settings.risk_probe
        risk_probe.configure(on)
        self.run_worker(
            partial(self.settings.save_preferences, risk_probe=on),
            name="save-risk-probe",
            thread=True,
            exit_on_error=False,
        )
        if on:
            warm_up_risk_classifier(self)  # the model copy loads off the UI thread
        message = (
            "Risk check: the statement probe is on (more indirect risk found, more false flags)."
            if on
            else "Risk check: the statement probe is off (rules and the sentence classifier)."
        )
        if risk_probe.env_override() is not None:
            message += " PHYASSIST_RISK_PROBE is set and decides until it is unset."
        self.notify(message)

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
        for command in super().get_system_commands(screen):
            if command.title != "Screenshot":  # an unencrypted SVG of patient data: never
                yield command
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
