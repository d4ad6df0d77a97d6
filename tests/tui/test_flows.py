"""Pilot tests of each counselor flow, on a real vault (engine.vault.store) and the fake engine."""

from __future__ import annotations

import json

import pytest
from textual.widgets import Input, TabbedContent, TextArea

from engine.records import BasicInfo
from engine.vault.store import Store
from phyassist_tui.bindings import ACTIONS
from phyassist_tui.screens.new_patient import NewPatientScreen
from phyassist_tui.screens.restore import RestoreDraftScreen
from phyassist_tui.screens.unlock import UnlockScreen
from phyassist_tui.screens.workspace import WorkspaceScreen
from phyassist_tui.widgets.chat_pane import ChatBubble
from phyassist_tui.widgets.draft_pane import DraftPane
from phyassist_tui.widgets.patients_pane import PatientList
from tests.tui.fakes import (
    ANALYSIS_TEXT,
    CHAT_REPLY,
    PASSPHRASE,
    FakeAssistant,
    add_seed_case_patient,
    draft_ready,
    draft_under_way,
    generate,
    open_draft,
    open_patient,
    open_workspace,
    open_workspace_empty,
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


# -- analysis, draft, note --------------------------------------------------------------------
async def test_analysis_streams_edit_comment_regenerate_save(make_app, vault, settings, fake):
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_patient(pilot, "Sun")
        await generate(pilot, screen, "Since the exam I cannot focus at all.")
        pane = screen.query_one(DraftPane)
        await wait_for(
            pilot,
            lambda: (
                pane.draft is not None
                and app.focused is not None
                and app.focused.id == "draft-items"
            ),
            what="draft",
        )
        assert screen.analysis.stream.text == ANALYSIS_TEXT
        assert pane.draft.reasons[0].text == "High expectations from the family"
        assert "tok/s" in str(screen.status.render())

        # edit the first reason in place (down, down: past the Reasons header)
        await pilot.press("down", "down", "e")
        editor = app.focused
        assert isinstance(editor, Input) and editor.value == "High expectations from the family"
        editor.value = "Very high expectations from the parents"
        await pilot.press("enter")
        first = pane.draft.reasons[0]
        assert first.text == "Very high expectations from the parents" and first.edited
        assert "Δ" in screen_text(app)  # the diff line shows for the edited item

        # comment, then regenerate the second reason with the comment as guidance
        await pilot.press("down", "c")
        await type_text(pilot, "mention sleep")
        await pilot.press("enter")
        second = pane.draft.reasons[1]
        assert second.comments == ["mention sleep"]
        await pilot.press("r")
        await wait_for(
            pilot,
            lambda: second.text == "Regenerated reasons item" and screen.generating is None,
            what="regenerated item",
        )
        call = fake.calls[-1]
        assert call.name == "stream_regenerate_item" and call.args["comments"] == ["mention sleep"]

        # delete the third reason (kept, marked deleted), add a counselor item
        await pilot.press("down", "d")
        assert pane.draft.reasons[2].deleted
        await pilot.press("a")
        await type_text(pilot, "Perfectionism")
        await pilot.press("enter")
        added = pane.draft.reasons[3]
        assert added.text == "Perfectionism" and added.added_by_counselor

        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: len(screen.patient.notes) == 2, what="note saved")
        assert pane.draft is None
        assert "Very high expectations from the parents" in screen_text(app)
    store = read_only(settings)
    try:
        sun = next(s for s in store.list_patients() if s.name == "Sun")
        note = store.load_patient(sun.id).notes_newest_first()[0]
        assert note.question == "Since the exam I cannot focus at all."
        reasons = note.analysis.reasons
        assert reasons[0].draft == "High expectations from the family"  # original kept
        assert reasons[0].text == "Very high expectations from the parents"
        assert reasons[2].deleted and reasons[3].draft is None
        assert store.read_blob(sun.id, "draft") is None  # autosave cleared on save
    finally:
        store.close()


async def test_regenerate_all_passes_comments_as_guidance(make_app, vault, fake):
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        screen, _pane = await open_draft(pilot, "Sun")
        await pilot.press("c")
        await type_text(pilot, "shorter")
        await pilot.press("enter", "R")
        await wait_for(
            pilot,
            lambda: (
                len(fake.calls) >= 2
                and screen.generating is None
                and fake.calls[-1].name == "stream_analysis"
            ),
        )
        guidance = fake.calls[-1].args["guidance"]
        assert guidance.symptom_type.comments == ["shorter"]


async def test_keys_typed_in_a_burst_after_edit_land_in_the_editor(make_app, vault):
    """Over SSH keys arrive together: 'e' then the text must not hit the list's bindings."""

    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        screen, pane = await open_draft(pilot, "Sun")
        # 'a', 'd', 'c', 'r' are list keys; sent like the driver does, without waiting
        burst = [("e", "e"), ("ctrl+u", None), *((c, c) for c in "add"), ("space", " ")]
        burst += [*((c, c) for c in "care"), ("enter", "\r")]
        send_burst(app, burst)
        await wait_for(
            pilot, lambda: pane.draft.symptom_type.text == "add care", what="edited symptom"
        )
        await pilot.pause(0.1)
        assert len(pane.draft.reasons) == 3 and not any(i.deleted for i in pane.draft.reasons)
        assert screen.generating is None and app.focused.id == "draft-items"


async def test_empty_symptom_type_can_be_filled_but_never_dropped(make_app, vault):
    """A short generation may name no symptom type: editing it must work, emptying it not."""
    fake = FakeAssistant(analysis_text="Reasons:\n1. Poor sleep\n")
    app = make_app(assistant=fake)
    async with app.run_test(size=(80, 24)) as pilot:
        _screen, pane = await open_draft(pilot, "Sun")
        assert pane.draft.symptom_type.text == "" and pane.selected_row.section == "symptom_type"
        await pilot.press("e", "enter")  # empty stays empty, the editor closes, no crash
        assert app.focused.id == "draft-items" and pane.draft.symptom_type.text == ""
        await pilot.press("e", "escape")
        assert app.focused.id == "draft-items" and pane.selected_row.section == "symptom_type"
        await pilot.press("e")
        await type_text(pilot, "Insomnia")
        await pilot.press("enter")
        assert pane.draft.symptom_type.text == "Insomnia"
        await pilot.press("e", "ctrl+u", "enter")  # emptying a filled one keeps it
        assert pane.draft.symptom_type.text == "Insomnia"
        assert any("cannot be empty" in n.message for n in app._notifications)


async def test_escape_cancels_and_keeps_partial_text(make_app, vault, settings):
    fake = FakeAssistant(pause_after=4)
    app = make_app(assistant=fake)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_patient(pilot, "Sun")
        await generate(pilot, screen, "A statement")
        await wait_for(pilot, lambda: fake.paused.is_set(), what="stream paused")
        await wait_for(pilot, lambda: screen.analysis.stream.text.count(" ") >= 3)
        await pilot.press("escape")
        await wait_for(pilot, lambda: screen.generating is None, what="cancel")
        assert screen.analysis.stream.text == "Symptom type: Academic anxiety\n"
        assert "stopped" in str(screen.status.render())
        pane = screen.query_one(DraftPane)
        assert pane.draft is not None and pane.draft.symptom_type.text == "Academic anxiety"
        assert screen.query_one("#question", TextArea).text == "A statement"


async def test_statement_too_long_is_rejected_without_loss(make_app, vault, settings):
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_patient(pilot, "Sun")
        huge = "字" * (settings.limits.max_statement_chars + 1)
        await generate(pilot, screen, huge)
        await pilot.pause(0.1)
        assert screen.generating is None
        assert screen.query_one("#question", TextArea).text == huge
        assert any("limit" in n.message for n in app._notifications)


async def test_model_load_failure_is_reported(make_app, vault):
    app = make_app(assistant=FakeAssistant(fail_load="weights missing"))
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_patient(pilot, "Sun")
        await wait_for(pilot, lambda: app.model_state == "failed")
        assert "weights missing" in str(screen.status.render())
        await generate(pilot, screen, "Question")
        await wait_for(pilot, lambda: screen.generating is None)
        assert any("not available" in n.message for n in app._notifications)
        assert screen.query_one("#question", TextArea).text == "Question"


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


# -- chat -------------------------------------------------------------------------------------
async def test_chat_streams_copies_and_persists(make_app, vault, settings, fake):
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_patient(pilot, "Sun")
        await pilot.press("f5")
        await type_text(pilot, "How to start?")
        await pilot.press("enter")
        await wait_for(
            pilot, lambda: screen.generating is None and len(screen.history) == 2, what="chat reply"
        )
        bubbles = list(screen.query(ChatBubble))
        assert [b.role for b in bubbles] == ["user", "assistant"]
        assert bubbles[1].text == CHAT_REPLY
        await pilot.press("ctrl+y")
        assert app.clipboard == CHAT_REPLY
        await pilot.pause(0.3)
    store = read_only(settings)
    try:
        sun = next(s for s in store.list_patients() if s.name == "Sun")
        from engine.vault.chat import load_history

        history = load_history(store, sun.id)
        assert [m.role for m in history] == ["user", "assistant"]
    finally:
        store.close()


async def test_chat_message_over_the_limit_is_given_back(make_app, vault, settings, fake):
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_patient(pilot, "Sun")
        await pilot.press("f5")
        huge = "话" * (settings.limits.max_statement_chars + 1)
        await type_text(pilot, huge)
        await pilot.press("enter")
        await pilot.pause(0.1)
        assert screen.query_one("#chat-input", Input).value == huge  # nothing lost
        assert screen.history == [] and screen.generating is None
        assert not [c for c in fake.calls if c.name == "stream_chat"]
        assert any("limit" in n.message for n in app._notifications)


async def chat_then_stop(pilot, fake: FakeAssistant, message: str):
    """Open Sun, send ``message`` in Chat, press Esc once the reply is under way."""
    screen = await open_patient(pilot, "Sun")
    await pilot.press("f5")
    await type_text(pilot, message)
    await pilot.press("enter")
    await wait_for(pilot, lambda: fake.paused.is_set())
    await pilot.press("escape")
    await wait_for(pilot, lambda: screen.generating is None)
    return screen


async def test_chat_escape_stops_reply(make_app, vault):
    fake = FakeAssistant(pause_after=2)
    app = make_app(assistant=fake)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await chat_then_stop(pilot, fake, "Hi")
        reply = list(screen.query(ChatBubble))[-1].text
        assert reply.startswith("Consider asking") and reply.endswith("[stopped]")


async def test_stop_drops_a_character_cut_in_half(make_app, vault):
    """Stopped mid-character, the engine flushes U+FFFD; it must not reach the chat."""
    import threading

    from engine.inference.stream import TextStream

    class HalfCharAssistant(FakeAssistant):
        def stream_chat(self, patient, history, message, *, cancel: threading.Event):
            def chunks():
                yield "最新"
                self.paused.set()
                cancel.wait(5)
                yield "\ufffd"  # what the streamer flushes when stopped mid-character

            return TextStream(chunks())

    fake = HalfCharAssistant()
    app = make_app(assistant=fake)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await chat_then_stop(pilot, fake, "下次先问什么？")
        assert list(screen.query(ChatBubble))[-1].text == "最新 [stopped]"
        assert screen.history[-1].content == "最新 [stopped]"


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


# -- Chinese ----------------------------------------------------------------------------------
async def test_chinese_seed_case_shows_in_notes(make_app, settings, seed_case_zh, fake):
    add_seed_case_patient(settings, seed_case_zh)
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_patient(pilot, "孙某")
        await pilot.pause(0.2)
        text = screen_text(app)
        assert "孙某" in text and "人口学资料" in text
        notes = screen.query_one("#notes-view")
        notes.scroll_to(y=notes.max_scroll_y * 0.45, animate=False)
        found = False
        for _ in range(40):
            await pilot.pause(0.02)
            if "学业焦虑" in screen_text(app):
                found = True
                break
            notes.scroll_relative(y=5, animate=False)
        assert found, "symptom type in Chinese not visible in the notes"
        # and the Chinese question goes to the model unchanged
        await generate(pilot, screen, seed_case_zh["counseling_question"]["statement"])
        await wait_for(
            pilot,
            lambda: screen.generating is None and screen.query_one(DraftPane).draft is not None,
        )
        assert fake.calls[-1].args["question"].startswith("我是一名复读生")


def seed_analysis_text(seed: dict) -> str:
    """The seed case's reference analysis, laid out as the fake engine streams it."""
    ref = seed["reference_analysis"]
    lines = [f"Symptom type: {ref['symptom_type']}", "Reasons:"]
    lines += [f"{i}. {r}" for i, r in enumerate(ref["reasons"], 1)]
    lines += ["Advice:"] + [f"{i}. {a}" for i, a in enumerate(ref["advice"], 1)]
    return "\n".join(lines) + "\n"


async def test_chinese_seed_case_through_form_draft_and_save(make_app, settings, seed_case_zh):
    """The worked Chinese example end to end at 80x24: form, question, draft edits, note."""
    Store.create(settings.vault_dir, PASSPHRASE, settings=settings).close()
    fake = FakeAssistant(analysis_text=seed_analysis_text(seed_case_zh))
    app = make_app(assistant=fake)
    basic, question = seed_case_zh["basic_info"], seed_case_zh["counseling_question"]
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_workspace_empty(pilot)
        await pilot.press("ctrl+n")
        form = await wait_for(
            pilot, lambda: isinstance(app.screen, NewPatientScreen) and app.screen
        )
        await type_text(pilot, "孙某")
        for field, text in basic.items():
            form.query_one(f"#field-{field}", TextArea).load_text(text)
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: screen.patient is not None and screen.patient.name == "孙某")
        assert "孙某" in screen_text(app) and "人口学资料" in screen_text(app)

        await generate(pilot, screen, question["statement"])
        screen.query_one("#observed", Input).value = question["observed_state"]
        pane = await draft_ready(pilot, screen)
        assert fake.calls[-1].args["question"] == question["statement"]
        assert pane.draft.symptom_type.text == "学业焦虑"
        assert "学业压力" in screen_text(app)  # wide characters render in the list

        await pilot.press("down", "down", "e")  # first reason (past its header), in Chinese
        app.focused.value = "学业压力：复读一年，父母期望很高"
        await pilot.press("enter", "c")
        await type_text(pilot, "提到失眠和头痛")
        await pilot.press("enter", "a")
        await type_text(pilot, "完美主义倾向")
        await pilot.press("enter", "ctrl+s")
        await wait_for(pilot, lambda: screen.patient.notes, what="note saved")
        await wait_for(pilot, lambda: "1 note" in screen_text(app), what="list shows the note")
        assert screen.query_one(TabbedContent).active == "notes"
    store = read_only(settings)
    try:
        summary = next(s for s in store.list_patients() if s.name == "孙某")
        patient = store.load_patient(summary.id)
    finally:
        store.close()
    assert patient.basic.mental_state == basic["mental_state"]
    note = patient.notes[0]
    assert note.question == question["statement"]
    assert note.observed_state == question["observed_state"]
    first = note.analysis.reasons[0]
    assert first.draft == seed_case_zh["reference_analysis"]["reasons"][0]
    assert first.text == "学业压力：复读一年，父母期望很高"
    assert first.comments == ["提到失眠和头痛"]
    assert note.analysis.reasons[1].text == "完美主义倾向"
    assert note.analysis.reasons[1].added_by_counselor


async def test_blank_lines_the_model_starts_with_are_not_shown(make_app, vault):
    """A small model often opens with blank lines: they take no room in the stream view, and
    an item's number stays on the line of its text."""
    from engine.records import AnalysisDraft, Item

    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_patient(pilot, "Sun")
        await pilot.press("f3")
        screen.analysis.stream.set_text("\n\n\n来访者的表情")
        await pilot.pause(0.1)
        shown = screen.analysis.stream.query_one(".stream-text")
        assert str(shown.render()) == "来访者的表情"
        assert screen.analysis.stream.text == "\n\n\n来访者的表情"  # kept as the model wrote it
        draft = AnalysisDraft(unplaced=[Item(text="\n\n来访者的表情", draft="\n\n来访者的表情")])
        await screen.draft_pane.load(draft)
        await pilot.press("f4")
        await pilot.pause(0.1)
        assert any("1. 来访者的表情" in line for line in screen_text(app).splitlines())


async def test_every_tab_is_usable_at_80x24(make_app, vault):
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await open_patient(pilot, "Sun")
        for key in ("f2", "f3", "f4", "f5"):
            await pilot.press(key)
            await pilot.pause(0.05)
            region = app.focused.region
            assert region.width > 0 and region.height > 0, key
