"""Unlock the vault, or create it on first run (passphrase typed twice)."""

from __future__ import annotations

from textual import on, work
from textual.app import ComposeResult
from textual.containers import Center, Vertical
from textual.screen import Screen
from textual.widgets import Input, Label, Static

from engine.errors import PhyAssistError
from phyassist_tui.focus import HandOffInput, TextInput
from phyassist_tui.widgets.footer import CoalescedFooter

MIN_PASSPHRASE = 8


class PassphraseField(HandOffInput):
    """The first passphrase field: creating a vault, Enter moves on to the confirmation.

    Typed fast, the second typing of the passphrase used to land here too (see
    ``HandOffInput``); an Enter queued after it submits the confirmation.
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(hand_off_to="#confirm", **kwargs)

    def moves_on(self) -> bool:
        return bool(getattr(self.screen, "creating", False))


class UnlockScreen(Screen):
    """Nothing about any patient is in memory while this screen shows."""

    AUTO_FOCUS = "#passphrase"
    DEFAULT_CSS = """
    UnlockScreen { align: center middle; }
    UnlockScreen #unlock-box {
        width: 64; max-width: 100%; height: auto; border: round $primary; padding: 1 2;
    }
    UnlockScreen #unlock-title { text-style: bold; color: $text-primary; margin-bottom: 1; }
    UnlockScreen #unlock-help { color: $text-muted; margin-bottom: 1; }
    UnlockScreen #unlock-error { color: $text-error; height: auto; }
    UnlockScreen #confirm { display: none; }
    UnlockScreen.-create #confirm { display: block; }
    """

    def __init__(self, reason: str = "") -> None:
        super().__init__()
        self.reason = reason
        self.creating: bool | None = None  # unknown until the vault is probed
        self.busy = False  # the vault is being opened (key derivation, index)

    def compose(self) -> ComposeResult:
        with Center(), Vertical(id="unlock-box"):
            yield Label("PhyAssist", id="unlock-title")
            yield Static("Checking the vault…", id="unlock-help")
            yield PassphraseField(
                password=True, placeholder="Passphrase", id="passphrase", disabled=True
            )
            yield TextInput(password=True, placeholder="Passphrase again", id="confirm")
            yield Static(self.reason, id="unlock-error", markup=False)
        yield CoalescedFooter()

    def on_mount(self) -> None:
        self._probe()

    @work(thread=True, name="probe-vault", exit_on_error=False)
    def _probe(self) -> None:
        app = self.app
        try:
            exists = app.session.vault_exists()
        except PhyAssistError as exc:
            app.call_from_thread(self._show_error, str(exc))
            return
        app.call_from_thread(self._ready, not exists)

    def _ready(self, creating: bool) -> None:
        self.creating = creating
        self.set_class(creating, "-create")
        help_text = (
            f"No vault yet at {self.app.settings.vault_dir}.\n"
            f"Choose a passphrase (at least {MIN_PASSPHRASE} characters) and type it twice. "
            "It cannot be recovered: without it the records cannot be read."
            if creating
            else "Enter the passphrase to unlock the vault."
        )
        self.query_one("#unlock-help", Static).update(help_text)
        field = self.query_one("#passphrase", Input)
        field.disabled = False
        field.focus()

    def _show_error(self, message: str) -> None:
        self.query_one("#unlock-error", Static).update(message)

    def _set_busy(self, busy: bool) -> None:
        self.busy = busy
        for field in self.query(Input):
            field.disabled = busy
        if busy:
            self._show_error("Unlocking…" if not self.creating else "Creating the vault…")

    @on(Input.Submitted, "#passphrase")
    def _passphrase_entered(self) -> None:
        if self.creating:
            self.query_one("#confirm", Input).focus()
        elif self.creating is False:
            self._submit()

    @on(Input.Submitted, "#confirm")
    def _confirm_entered(self) -> None:
        self._submit()

    def _submit(self) -> None:
        passphrase = self.query_one("#passphrase", Input).value
        if self.creating:
            if len(passphrase) < MIN_PASSPHRASE:
                self._show_error(f"The passphrase needs at least {MIN_PASSPHRASE} characters.")
                self.query_one("#passphrase", Input).focus()
                return
            if passphrase != self.query_one("#confirm", Input).value:
                self._show_error("The two passphrases differ. Type them again.")
                self.query_one("#confirm", Input).value = ""
                self.query_one("#passphrase", Input).value = ""
                self.query_one("#passphrase", Input).focus()
                return
        elif not passphrase:
            self._show_error("Type the passphrase first.")
            return
        self._set_busy(True)
        self._open(passphrase, bool(self.creating))

    @work(thread=True, name="unlock-vault", exclusive=True, exit_on_error=False)
    def _open(self, passphrase: str, create: bool) -> None:
        app = self.app
        session = app.session
        try:  # the patient list is read here too: the workspace's first frame shows it
            patients = session.create_vault(passphrase) if create else session.unlock(passphrase)
        except PhyAssistError as exc:
            app.call_from_thread(self._failed, str(exc))
            return
        except Exception as exc:  # an engine bug must not lose the screen
            app.call_from_thread(self._failed, f"Could not open the vault: {exc}")
            return
        app.call_from_thread(app.vault_unlocked, patients)
        problems = session.integrity_problems()
        if problems:  # rolled-back or missing files: say so before anyone relies on them
            app.call_from_thread(
                app.notify,
                "\n".join(problems[:5]) + "\nRun `phyassist doctor --unlock` for the full list.",
                title="The vault is not as it was last written",
                severity="error",
                timeout=60,
                markup=False,
            )

    def _failed(self, message: str) -> None:
        self._set_busy(False)
        self._show_error(message)
        field = self.query_one("#passphrase", Input)
        field.value = ""
        self.query_one("#confirm", Input).value = ""
        field.focus()
