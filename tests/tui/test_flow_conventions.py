"""Pilot tests of the conventions (keymap, palette, themes, safe text, 80x24) and Train.

On a real vault (engine.vault.store) and the fake engine.
"""

from __future__ import annotations

import json

import pytest

from engine.records import BasicInfo
from engine.vault.store import Store
from phyassist_tui.bindings import ACTIONS
from phyassist_tui.screens.new_patient import NewPatientScreen
from phyassist_tui.screens.workspace import WorkspaceScreen
from tests.tui.fakes import (
    PASSPHRASE,
    open_patient,
    open_workspace,
    screen_text,
    wait_for,
)

pytestmark = pytest.mark.anyio


# -- conventions ------------------------------------------------------------------------------
async def test_keymap_from_settings_rebinds(make_app, vault, settings):
    settings.keymap = {
        "workspace.new_patient": "ctrl+o",
        "workspace.show_chat": "f6",
        "no.such.binding": "x",
    }
    app = make_app(settings=settings)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_workspace(pilot)
        assert any("no.such.binding" in n.message for n in app._notifications)
        assert "Chat F6" in screen_text(app) and "Notes F2" in screen_text(app)  # tab titles
        await pilot.press("f6")
        assert screen.query_one("#tabs").active == "chat"
        await pilot.press("ctrl+n")
        await pilot.pause(0.1)
        assert not isinstance(app.screen, NewPatientScreen)
        await pilot.press("ctrl+o")
        await wait_for(pilot, lambda: isinstance(app.screen, NewPatientScreen))


async def test_every_action_is_in_the_command_palette(make_app, vault):
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_workspace(pilot)
        titles = " | ".join(c.title for c in app.get_system_commands(screen))
        for spec in ACTIONS:
            if spec.palette:
                assert spec.description in titles, spec.id


async def test_palette_command_runs_action(make_app, vault):
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_workspace(pilot)
        regen = next(c for c in app.get_system_commands(screen) if c.title.startswith("Regen"))
        await regen.callback()  # no draft yet: says so instead of doing nothing
        await pilot.pause(0.05)
        assert any("Not available now" in n.message for n in app._notifications)
        command = next(c for c in app.get_system_commands(screen) if c.title.startswith("New"))
        await command.callback()
        await wait_for(pilot, lambda: isinstance(app.screen, NewPatientScreen))


async def test_theme_is_persisted(make_app, vault, settings):
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await open_workspace(pilot)
        app.theme = "nord"
        from engine.settings import settings_file_path

        await wait_for(pilot, lambda: settings_file_path().is_file())
        assert json.loads(settings_file_path().read_text())["theme"] == "nord"
    app2 = make_app(settings=type(settings)(store=settings.store))
    async with app2.run_test(size=(80, 24)):
        assert app2.theme == "nord"


async def test_control_characters_and_markup_never_reach_terminal(make_app, settings):
    store = Store.create(settings.vault_dir, PASSPHRASE, settings=settings)
    store.create_patient(
        "Evil[b]bold[/b]", BasicInfo(demographics="line\x1b[2Jclear\x9b31m [red]x[/red] # title")
    )
    store.close()
    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await open_workspace(pilot)
        await pilot.press("enter")
        await wait_for(pilot, lambda: screen.patient is not None)
        await pilot.pause(0.2)
        text = screen_text(app)
        assert "\x1b" not in text and "\x9b" not in text and "\x07" not in text
        assert "Evil[b]bold[/b]" in text
        assert "lineclear [red]x[/red] # title" in text


# -- training ---------------------------------------------------------------------------------
async def test_train_needs_a_saved_note(make_app, vault):
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await open_patient(pilot, "Li")  # no note yet
        await pilot.press("ctrl+t")
        await pilot.pause(0.1)
        assert any("Save at least one note" in n.message for n in app._notifications)


async def test_train_screen_shows_progress_and_cancels(make_app, vault):
    import threading

    from textual.widgets import ProgressBar

    from phyassist_tui.screens.train import TrainScreen
    from phyassist_tui.widgets.loss_plot import LossPlot

    seen: dict[str, object] = {}

    def runner(*, patient, store, settings, cancel: threading.Event):
        seen["patient"] = patient.name
        for step in range(1, 101):
            if cancel.is_set():
                seen["cancelled_at"] = step
                return
            yield {
                "phase": "training",
                "step": step,
                "total_steps": 100,
                "loss": 2.0 / step,
                "tokens_per_s": 900.0,
                "eta_s": 100 - step,
            }
            cancel.wait(0.05)  # 100 steps take 5 s unless stopped

    app = make_app(training_runner=runner)
    async with app.run_test(size=(80, 24)) as pilot:
        await open_patient(pilot, "Sun")
        await pilot.press("ctrl+t")
        train = await wait_for(pilot, lambda: isinstance(app.screen, TrainScreen) and app.screen)
        await wait_for(pilot, lambda: len(train.query_one(LossPlot).steps) >= 5)
        assert train.query_one(ProgressBar).total == 100
        await pilot.press("escape")
        await wait_for(pilot, lambda: train.finished)
        await pilot.pause(0.1)
        assert app.screen is train, app.screen_stack
        assert "Stopped" in str(train.query_one("#train-result").render())
        assert seen["cancelled_at"] < 100 and seen["patient"] == "Sun"
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, WorkspaceScreen))


async def test_every_tab_is_usable_at_80x24(make_app, vault):
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await open_patient(pilot, "Sun")
        for key in ("f2", "f3", "f4", "f5"):
            await pilot.press(key)
            await pilot.pause(0.05)
            region = app.focused.region
            assert region.width > 0 and region.height > 0, key


async def test_statement_probe_toggle_is_kept(make_app, vault, settings):
    """The palette's "Risk check: statement probe on/off" (Alt+K) switches the probe the
    risk check uses and keeps the choice in settings.json (off by default)."""
    from engine.settings import settings_file_path
    from engine.trust import risk_probe

    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_workspace(pilot)
        assert not risk_probe.enabled()
        command = next(
            c for c in app.get_system_commands(screen) if c.title.startswith("Risk check")
        )
        await command.callback()
        await wait_for(pilot, lambda: settings_file_path().is_file())
        assert risk_probe.enabled() and app.settings.risk_probe
        assert json.loads(settings_file_path().read_text())["risk_probe"] is True
        assert any("statement probe is on" in n.message for n in app._notifications)
        await pilot.press("alt+k")
        await wait_for(
            pilot, lambda: json.loads(settings_file_path().read_text())["risk_probe"] is False
        )
        assert not risk_probe.enabled()


def test_a_lone_letter_key_is_shown_as_typed():
    """The help listed the draft's r (one item) and R (the whole draft) both as "R"."""
    from phyassist_tui.bindings import pretty_key

    assert [pretty_key(k) for k in ("r", "R", "e", "ctrl+n", "f6", "escape", "alt+c")] == [
        "r",
        "Shift+R",
        "e",
        "Ctrl+N",
        "F6",
        "Esc",
        "Alt+C",
    ]


async def test_help_tells_the_two_regenerate_keys_apart(make_app, vault):
    from phyassist_tui.screens.help import HelpScreen
    from tests.tui.fakes import wait_for

    app = make_app()
    async with app.run_test(size=(100, 60)) as pilot:
        await pilot.press("f1")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen), what="help")
        text = "\n".join(str(w.render()) for w in app.screen.query("Static"))
        lines = [" ".join(line.split()) for line in text.splitlines()]
        assert "r Regenerate the selected item using its comments" in lines
        assert "Shift+R Regenerate the whole draft using all comments" in lines


def test_every_key_is_one_a_terminal_can_send():
    """Alt+B (Back up now) never arrived in a terminal: it is sent as ESC b, which Textual's
    input parser reads as Ctrl+Left (ESC f as Ctrl+Right), so only Pilot ever pressed it.
    Each Alt binding's ESC sequence must parse back to that Alt key."""
    import time

    from textual import constants
    from textual._xterm_parser import XTermParser

    from phyassist_tui.bindings import ACTIONS

    for action in ACTIONS:
        for key in action.key.split(","):
            if not key.startswith("alt+") or len(key) != 5:
                continue
            parser = XTermParser()
            events = list(parser.feed("\x1b" + key[-1]))
            time.sleep(constants.ESCAPE_DELAY * 1.5)  # a lone ESC + letter waits this long
            events += list(parser.tick())
            parsed = [e.key for e in events if hasattr(e, "key")]
            assert parsed == [key], f"{action.id}: {key} arrives as {parsed}"
