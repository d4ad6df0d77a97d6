"""Pilot tests of unlocking the vault and of creating, finding and opening patients.

On a real vault (engine.vault.store) and the fake engine.
"""

from __future__ import annotations

import pytest
from textual.widgets import Input, TextArea

from engine.vault.store import Store
from phyassist_tui.screens.new_patient import NewPatientScreen
from phyassist_tui.screens.unlock import UnlockScreen
from phyassist_tui.screens.workspace import WorkspaceScreen
from phyassist_tui.widgets.patients_pane import PatientList
from tests.tui.fakes import (
    PASSPHRASE,
    FakeAssistant,
    draft_ready,
    generate,
    open_draft,
    open_patient,
    open_workspace,
    passphrase_field_ready,
    read_only,
    screen_text,
    send_burst,
    type_text,
    unlock,
    wait_for,
)

pytestmark = pytest.mark.anyio


# -- unlock -----------------------------------------------------------------------------------
async def test_first_run_creates_vault_with_confirmation(make_app, settings):
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(
            pilot,
            lambda: isinstance(app.screen, UnlockScreen) and app.screen.creating is True,
            what="create mode",
        )
        error = app.screen.query_one("#unlock-error")
        await type_text(pilot, "short")
        await pilot.press("enter")
        await type_text(pilot, "short")
        await pilot.press("enter")
        assert "at least 8" in str(error.render())
        await type_text(pilot, "long enough 1")
        await pilot.press("enter")
        await type_text(pilot, "long enough 2")
        await pilot.press("enter")
        assert "differ" in str(error.render())
        assert not Store.exists(settings.vault_dir)
        await type_text(pilot, PASSPHRASE)
        await pilot.press("enter")
        await type_text(pilot, PASSPHRASE)
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, WorkspaceScreen), what="workspace")
    assert Store.exists(settings.vault_dir)
    read_only(settings).close()  # the chosen passphrase opens it


async def test_passphrase_typed_twice_in_one_burst_creates_the_vault(make_app, settings):
    """Typed fast (or delivered together over SSH), the second typing follows Enter before
    the focus has moved: it must land in the confirmation field, not the first one."""

    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await passphrase_field_ready(pilot, what="create mode")
        burst = [*((c, c) for c in PASSPHRASE.replace(" ", "_")), ("enter", "\r")]
        send_burst(app, burst * 2)
        await wait_for(pilot, lambda: isinstance(app.screen, WorkspaceScreen), what="workspace")
        await pilot.pause(0.2)
    assert Store.exists(settings.vault_dir)
    Store.open(
        settings.vault_dir, PASSPHRASE.replace(" ", "_"), writer=False, settings=settings
    ).close()  # the passphrase typed (twice) opens it


async def test_wrong_passphrase_says_so_and_keeps_screen(make_app, vault):
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await unlock(pilot, "not the passphrase")
        error = app.screen.query_one("#unlock-error")
        await wait_for(
            pilot,
            lambda: "Wrong passphrase" in str(error.render()),
            what="wrong passphrase message",
        )
        assert isinstance(app.screen, UnlockScreen)
        assert app.screen.query_one("#passphrase", Input).value == ""
        await type_text(pilot, PASSPHRASE)
        await pilot.press("enter")
        screen = await wait_for(
            pilot, lambda: isinstance(app.screen, WorkspaceScreen) and app.screen
        )
        await wait_for(
            pilot, lambda: screen.query_one("#patient-list", PatientList).option_count == 2
        )


# -- patients ---------------------------------------------------------------------------------
async def test_create_patient_validates_then_saves(make_app, vault, settings):
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_workspace(pilot)
        await pilot.press("ctrl+n")
        form = await wait_for(
            pilot, lambda: isinstance(app.screen, NewPatientScreen) and app.screen
        )
        await pilot.press("ctrl+s")
        assert "name" in str(form.query_one("#form-error").render()).lower()
        await type_text(pilot, "Wang")
        form.query_one("#field-demographics", TextArea).load_text("28, teacher")
        form.query_one("#field-mental_state", TextArea).load_text("low mood")
        form.query_one("#field-social_functioning", TextArea).load_text("x" * 10_001)
        await pilot.press("ctrl+s")
        assert "longer than" in str(form.query_one("#form-error").render())
        form.query_one("#field-social_functioning", TextArea).load_text("works full time")
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: screen.patient is not None and screen.patient.name == "Wang")
        await wait_for(
            pilot, lambda: screen.query_one("#patient-list", PatientList).option_count == 3
        )
        assert "28, teacher" in screen_text(app)
    store = read_only(settings)
    try:
        wang = next(s for s in store.list_patients() if s.name == "Wang")
        assert store.load_patient(wang.id).basic.social_functioning == "works full time"
    finally:
        store.close()


async def test_new_patient_name_and_next_field_typed_in_one_burst(make_app, vault):
    """Enter after the name moves on: letters typed right after it (a burst over SSH) belong
    to the next field, not to the name."""

    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await open_workspace(pilot)
        await pilot.press("ctrl+n")
        form = await wait_for(
            pilot, lambda: isinstance(app.screen, NewPatientScreen) and app.screen
        )
        await wait_for(pilot, lambda: app.focused is not None and app.focused.id == "name")
        burst = [*((c, c) for c in "Zhou"), ("enter", "\r"), *((c, c) for c in "22, student")]
        send_burst(app, [(key if key != " " else "space", char) for key, char in burst])
        await pilot.pause(0.3)
        assert form.query_one("#name", Input).value == "Zhou"
        assert form.query_one("#field-demographics", TextArea).text == "22, student"


async def test_keys_typed_before_the_hidden_panes_mount_wait_for_them(make_app, vault, monkeypatch):
    """The Analysis, Draft and Chat panes mount just after the workspace's first frame. Enter
    on the list and F3 typed ahead of that (a burst over SSH) used to crash the app
    (NoMatches AnalysisPane); now they take effect once the panes are there."""
    import asyncio

    from textual.lazy import Lazy

    gate = asyncio.Event()
    original = Lazy.mount_composed_widgets

    async def held(self, widgets):
        async def later():
            await gate.wait()
            await original(self, widgets)

        self.run_worker(later())

    monkeypatch.setattr(Lazy, "mount_composed_widgets", held)
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_workspace(pilot, panes=False)
        assert not screen.panes_mounted and screen.autosave_payload() is None
        listing = screen.query_one("#patient-list", PatientList)
        listing.highlight_name("Sun")
        listing.focus()
        await pilot.press("f3", "enter")
        await pilot.pause(0.2)
        assert screen.patient is None and app.is_running  # waiting for the panes
        gate.set()
        await wait_for(pilot, lambda: screen.panes_mounted, what="panes mounted")
        await wait_for(pilot, lambda: screen.patient is not None and screen.patient.name == "Sun")
        await pilot.press("f3")
        await wait_for(pilot, lambda: app.focused is not None and app.focused.id == "question")


async def test_a_run_stopped_for_repeating_itself_is_said(make_app, vault):
    """The engine stops a model caught in a loop; the counselor is told why the draft ended."""
    app = make_app(assistant=FakeAssistant(looped=True))
    async with app.run_test(size=(80, 24)) as pilot:
        screen, _pane = await open_draft(pilot, "Sun", "我最近总是失眠。")
        await wait_for(
            pilot,
            lambda: any("repeating itself" in n.message for n in app._notifications),
            what="loop notice",
        )
        assert "repeated itself" in str(screen.status.render())


async def test_the_engines_caveat_about_a_draft_is_shown(make_app, vault):
    """A model that cannot write the statement's language: the counselor reads why."""
    app = make_app(assistant=FakeAssistant(caveat="This model knows only 77 Chinese characters"))
    async with app.run_test(size=(80, 24)) as pilot:
        await open_draft(pilot, "Sun", "我最近总是失眠。")
        await wait_for(
            pilot,
            lambda: any("77 Chinese characters" in n.message for n in app._notifications),
            what="caveat notice",
        )


async def test_opening_a_patient_reads_the_record_ahead_until_a_draft_is_asked_for(make_app, vault):
    """The model reads the opened patient's record while the counselor types; Generate stops
    that reading (what was read is kept by the engine) and the draft streams."""
    fake = FakeAssistant(prefill_s=30.0)
    app = make_app(assistant=fake)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_patient(pilot, "Sun")
        await wait_for(pilot, fake.prefill_started.is_set, what="record read ahead")
        await generate(pilot, screen, "Question")
        await draft_ready(pilot, screen)
        assert fake.prefills == [(screen.patient.id, True)]


async def test_notes_hint_until_a_patient_is_opened(make_app, vault):
    """The empty workspace shows a plain hint; the Markdown view is made on the first open
    (off the launch path) and shows the record."""
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_workspace(pilot)
        assert "No patient open" in screen_text(app)
        assert not screen.query("Markdown")
        listing = screen.query_one("#patient-list", PatientList)
        listing.highlight_name("Sun")
        listing.focus()
        await pilot.press("enter")
        await wait_for(pilot, lambda: "Basic Information" in screen_text(app), what="record")
        assert "No patient open" not in screen_text(app)


async def test_incremental_search_filters_list(make_app, vault):
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_workspace(pilot)
        await pilot.press("ctrl+f")
        await type_text(pilot, "Su")
        listing = screen.query_one("#patient-list", PatientList)
        await wait_for(
            pilot,
            lambda: listing.names == ["Sun"],
            what="search result",
        )
        await pilot.press("enter")  # one Enter opens the match
        await wait_for(pilot, lambda: screen.patient is not None and screen.patient.name == "Sun")
