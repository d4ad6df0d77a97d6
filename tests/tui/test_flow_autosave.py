"""Pilot tests of unsaved work: autosave, lock, switching patients while a draft is open.

On a real vault (engine.vault.store) and the fake engine.
"""

from __future__ import annotations

import json

import pytest
from textual.widgets import Input, TabbedContent, TextArea

from phyassist_tui.screens.restore import RestoreDraftScreen
from phyassist_tui.screens.unlock import UnlockScreen
from phyassist_tui.screens.workspace import WorkspaceScreen
from phyassist_tui.widgets.draft_pane import DraftPane
from phyassist_tui.widgets.patients_pane import PatientList
from tests.tui.fakes import (
    FakeAssistant,
    draft_ready,
    draft_under_way,
    generate,
    open_draft,
    open_patient,
    read_only,
    screen_text,
    type_text,
    unlock,
    wait_for,
)

pytestmark = pytest.mark.anyio


# -- autosave, lock ---------------------------------------------------------------------------
async def test_lock_keeps_encrypted_draft_and_offers_it_back(make_app, vault, settings):
    app = make_app()
    secret = "UNIQUE-QUESTION-TEXT-1234"
    async with app.run_test(size=(80, 24)) as pilot:
        screen, pane = await open_draft(pilot, "Sun", secret)
        await pilot.press("e")
        app.focused.value = "Edited before the lock"
        await pilot.press("enter")
        await pilot.press("ctrl+l")
        await wait_for(pilot, lambda: isinstance(app.screen, UnlockScreen), what="locked")
        assert not app.session.unlocked
        # nothing readable on disk
        for path in settings.data_dir.rglob("*"):
            if path.is_file():
                assert secret.encode() not in path.read_bytes(), path
        screen = await open_patient(pilot, "Sun")
        confirm = await wait_for(
            pilot, lambda: isinstance(app.screen, RestoreDraftScreen) and app.screen
        )
        assert "unsaved draft" in confirm.question
        await pilot.press("y")
        pane = screen.query_one(DraftPane)
        await wait_for(pilot, lambda: pane.draft is not None)
        assert pane.draft.symptom_type.text == "Edited before the lock"
        assert screen.query_one("#question", TextArea).text == secret


async def test_idle_auto_lock(make_app, vault, settings):
    settings.idle_lock_minutes = 0.05  # 3 s
    app = make_app(settings=settings)
    async with app.run_test(size=(80, 24)) as pilot:
        await unlock(pilot)
        await wait_for(pilot, lambda: isinstance(app.screen, WorkspaceScreen), what="workspace")
        await wait_for(
            pilot,
            lambda: (
                isinstance(app.screen, UnlockScreen)
                and app.screen.query("#unlock-error")  # composed (the screen may be new)
                and "inactivity" in str(app.screen.query_one("#unlock-error").render())
            ),
            timeout=8,
            what="idle lock",
        )
        assert not app.session.unlocked


async def test_switching_patients_keeps_each_draft_apart(make_app, vault, settings):
    """An unsaved draft stays with its patient: the next one starts empty, nothing mixes."""
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        screen, pane = await open_draft(pilot, "Sun", "SUN-ONLY question")
        sun_id = screen.patient.id
        listing = screen.query_one("#patient-list", PatientList)
        listing.highlight_name("Li")
        listing.focus()
        await pilot.press("enter")
        await wait_for(pilot, lambda: screen.patient is not None and screen.patient.name == "Li")
        li_id = screen.patient.id
        assert pane.draft is None and screen.analysis.question == ""
        assert screen.analysis.stream.text == "" and screen.draft_question == ""
        await pilot.pause(1.5)  # past the autosave delay: Li has nothing to keep
        await pilot.press("f3")
        await type_text(pilot, "LI-ONLY question")
        await pilot.pause(1.5)  # Li's autosave is written now
        store = read_only(settings)
        try:
            sun_blob = json.loads(store.read_blob(sun_id, "draft"))
            li_blob = json.loads(store.read_blob(li_id, "draft"))
        finally:
            store.close()
        assert sun_blob["question"] == "SUN-ONLY question" and sun_blob["draft"] is not None
        assert li_blob["question"] == "LI-ONLY question" and li_blob["draft"] is None
        # back to Sun: the kept draft is offered, and it is Sun's
        listing.highlight_name("Sun")
        listing.focus()
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, RestoreDraftScreen), what="offer")
        await pilot.press("y")
        await wait_for(pilot, lambda: pane.draft is not None)
        assert screen.patient.id == sun_id and screen.analysis.question == "SUN-ONLY question"


async def test_draft_finishing_while_typing_does_not_take_the_focus(make_app, vault):
    """Letters are commands in the draft list (d deletes): a draft that finishes while the
    counselor types in a field must leave the focus there, so no key turns into a command."""
    fake = FakeAssistant(pause_after=2)
    app = make_app(assistant=fake)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await draft_under_way(pilot, fake)
        observed = screen.query_one("#observed", Input)
        observed.focus()
        await pilot.press("t", "i", "r")  # typed while the draft streams
        fake.resume.set()
        pane = screen.query_one(DraftPane)
        await wait_for(pilot, lambda: pane.draft is not None and screen.generating is None)
        await pilot.pause(0.1)
        await pilot.press("e", "d", "a")  # after the end: text, never edit/delete/add
        assert observed.value == "tireda" and app.focused is observed
        assert screen.query_one(TabbedContent).active == "analysis"
        assert len(pane.draft.reasons) == 3 and not any(i.deleted for i in pane.draft.reasons)
        assert "draft ready (F4 reviews it)" in str(screen.status.render())
        await pilot.press("f4")  # the draft is a key away
        assert app.focused.id == "draft-items"
        assert "draft ready" not in str(screen.status.render())


async def test_next_generation_started_while_the_draft_loads_keeps_its_view(make_app, vault):
    """The draft's rows mount across an await. An action run from outside the screen's
    message queue meanwhile (an app timer, the command palette) may start the next
    generation; it must keep the Analysis tab and the focus, not lose them to the old draft."""
    import asyncio
    import time

    async def until(predicate, what: str) -> None:
        """Like wait_for, without Pilot (it waits for the screen, busy loading the draft)."""
        deadline = time.monotonic() + 5
        while not predicate():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            await asyncio.sleep(0.02)

    fake = FakeAssistant(pause_after=2)
    app = make_app(assistant=fake)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_patient(pilot, "Sun")
        pane = screen.query_one(DraftPane)
        loading, release = asyncio.Event(), asyncio.Event()
        original_load = pane.load

        async def slow_load(draft, focus_item=None):
            if draft is not None and not release.is_set():
                loading.set()
                await release.wait()
            await original_load(draft, focus_item)

        pane.load = slow_load
        await generate(pilot, screen, "Question")
        await wait_for(pilot, fake.paused.is_set, what="first generation")
        fake.paused.clear()
        fake.resume.set()
        try:
            await until(loading.is_set, "draft loading")
            fake.resume.clear()
            fake.paused.clear()  # the first stream set it again on its way to the end
            screen.action_generate()  # the next draft, while the first one's rows mount
            await until(fake.paused.is_set, "second generation")
        finally:
            release.set()  # never leave the screen stuck (the app could not exit)
        await wait_for(pilot, lambda: pane.draft is not None)
        await pilot.pause(0.1)
        assert screen.generating == "analysis"
        assert screen.query_one(TabbedContent).active == "analysis"
        assert app.focused.id == "question"
        fake.resume.set()
        await draft_ready(pilot, screen)  # the second draft, when it ends, is shown as usual


async def test_patient_switch_refused_while_generating(make_app, vault):
    fake = FakeAssistant(pause_after=2)
    app = make_app(assistant=fake)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await draft_under_way(pilot, fake)
        listing = screen.query_one("#patient-list", PatientList)
        listing.highlight_name("Li")
        listing.focus()
        await pilot.press("enter")
        await pilot.pause(0.2)
        assert screen.patient.name == "Sun"
        assert any("Stop the generation first" in n.message for n in app._notifications)
        fake.resume.set()


async def test_stop_key_is_in_the_footer_at_80x24_while_generating(make_app, vault):
    """At 80 columns the Footer must still show Esc (Stop) while a generation runs."""
    fake = FakeAssistant(pause_after=2)
    app = make_app(assistant=fake)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_patient(pilot, "Sun")
        assert "^g Generate" in screen_text(app) and "^q Quit" in screen_text(app)
        await generate(pilot, screen, "Question")
        await wait_for(pilot, lambda: fake.paused.is_set())
        await pilot.pause(0.1)
        assert "esc Stop" in screen_text(app)
        fake.resume.set()
        await draft_ready(pilot, screen)
        await pilot.pause(0.2)
        footer = screen_text(app).splitlines()[-1]
        assert "e Edit" in footer and "^s Save" in footer
        fake.resume.clear()
        fake.paused.clear()
        await pilot.press("down", "down", "r")  # regenerate one item: its keys give way to Stop
        await wait_for(pilot, lambda: fake.paused.is_set())
        await pilot.pause(0.1)
        footer = screen_text(app).splitlines()[-1]
        assert "esc Stop" in footer and "e Edit" not in footer
        fake.resume.set()
