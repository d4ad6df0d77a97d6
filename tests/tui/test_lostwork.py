"""Issue 16: the counselor's work is never lost or misplaced (Pilot, real vault, fake engine)."""

from __future__ import annotations

import pytest
from textual.widgets import Input, TextArea

from phyassist_tui.screens.choose import ChooseScreen
from phyassist_tui.screens.confirm import ConfirmScreen
from phyassist_tui.screens.restore import RestoreDraftScreen
from phyassist_tui.widgets.draft_pane import ItemRow, SectionHeader
from tests.tui.fakes import (
    ANALYSIS_TEXT,
    FakeAssistant,
    draft_ready,
    draft_under_way,
    generate,
    open_draft,
    open_patient,
    patient_id,
    read_only,
    screen_text,
    type_text,
    wait_for,
)

pytestmark = pytest.mark.anyio

NO_ADVICE = "Symptom type: Academic anxiety\nReasons:\n1. Family expectations\n2. See a doctor\n"


# -- 5: e puts the cursor at the end ------------------------------------------------------
async def test_edit_opens_with_the_cursor_at_the_end_not_all_selected(make_app, vault):
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        _screen, pane = await open_draft(pilot, "Sun")
        await pilot.press("e")
        editor = app.focused
        assert isinstance(editor, Input)
        await pilot.press("x")  # the first key typed adds to the text
        assert editor.value == "Academic anxietyx"
        await pilot.press("enter")
        assert pane.draft.symptom_type.text == "Academic anxietyx"


# -- 6: Home/End move the selection -------------------------------------------------------
async def test_home_and_end_move_the_selection_so_edits_go_to_the_shown_row(make_app, vault):
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        _screen, pane = await open_draft(pilot, "Sun")
        await pilot.press("end")
        assert pane.selected_item_id == pane.draft.advice[-1].id
        await pilot.press("e", "!", "enter")
        assert pane.draft.advice[-1].text == "Keep a regular sleep schedule!"
        await pilot.press("home")
        assert isinstance(pane.query_one("#draft-items").highlighted_child, SectionHeader)
        await pilot.press("down", "e", "?", "enter")
        assert pane.draft.symptom_type.text == "Academic anxiety?"


# -- 7: add to an empty section; move an item between sections ----------------------------
async def test_advice_can_be_added_when_the_model_gave_none_and_items_moved(
    make_app, vault, settings
):
    app = make_app(assistant=FakeAssistant(analysis_text=NO_ADVICE))
    async with app.run_test(size=(120, 40)) as pilot:
        screen, pane = await open_draft(pilot, "Sun")
        assert pane.draft.advice == []
        await pilot.press("end")  # the last row: Advice's header (the section is empty)
        header = pane.query_one("#draft-items").highlighted_child
        assert isinstance(header, SectionHeader) and header.section == "advice"
        await pilot.press("a")
        await type_text(pilot, "Regular sleep")
        await pilot.press("enter")
        assert [i.text for i in pane.draft.advice] == ["Regular sleep"]
        assert pane.draft.reasons[-1].text == "See a doctor"  # nothing went to Reasons
        # move the last reason into Advice
        pane.query_one("#draft-items").index = next(
            i
            for i, row in enumerate(pane.query_one("#draft-items").children)
            if isinstance(row, ItemRow) and row.item.text == "See a doctor"
        )
        await pilot.press("m")
        await wait_for(pilot, lambda: isinstance(app.screen, ChooseScreen), what="move menu")
        await pilot.press("enter")  # the only other section: Advice
        await wait_for(pilot, lambda: len(pane.draft.advice) == 2, what="moved")
        assert [i.text for i in pane.draft.reasons] == ["Family expectations"]
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: len(screen.patient.notes) == 2, what="saved")
    store = read_only(settings)
    try:
        note = store.load_patient(patient_id(settings, "Sun")).notes_newest_first()[0]
        assert [i.text for i in note.analysis.advice] == ["Regular sleep", "See a doctor"]
    finally:
        store.close()


# -- 1: ask before replacing edits; undo the last destructive step ------------------------
async def test_generate_over_an_edited_draft_asks_and_keeps_edits_on_no(make_app, vault, fake):
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        screen, pane = await open_draft(pilot, "Sun")
        await pilot.press("e", "!", "enter")
        await pilot.press("ctrl+g")
        confirm = await wait_for(
            pilot, lambda: isinstance(app.screen, ConfirmScreen) and app.screen
        )
        assert "1 edit" in confirm.question
        calls = len(fake.calls)
        await pilot.press("escape")
        await pilot.pause(0.2)
        assert len(fake.calls) == calls and pane.draft.symptom_type.text == "Academic anxiety!"
        # R asks too; yes regenerates, and u brings the edited draft back
        pane.query_one("#draft-items").focus()
        await pilot.press("R")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="R asks")
        await pilot.press("y")
        await wait_for(
            pilot,
            lambda: (
                screen.generating is None and pane.draft.symptom_type.text == "Academic anxiety"
            ),
            what="regenerated",
        )
        await draft_ready(pilot, screen)
        await pilot.press("u")
        await wait_for(pilot, lambda: pane.draft.symptom_type.text == "Academic anxiety!")


async def test_an_empty_statement_is_said_before_asking_to_replace_edits(make_app, vault, fake):
    """Found in tmux: with the statement cleared, Ctrl+G first asked "Draft anew?" over the
    edited draft and only after "y" said there was nothing to draft."""
    from textual.widgets import TextArea

    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        screen, pane = await open_draft(pilot, "Sun")
        await pilot.press("e", "!", "enter")
        screen.query_one("#question", TextArea).load_text("")
        await pilot.press("ctrl+g")
        await pilot.pause(0.3)
        assert not isinstance(app.screen, ConfirmScreen)
        assert "Write the counseling question first." in [n.message for n in app._notifications]
        assert pane.draft.symptom_type.text == "Academic anxiety!"


async def test_undo_brings_back_a_regenerated_item_and_a_deleted_one(make_app, vault):
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        screen, pane = await open_draft(pilot, "Sun")
        await pilot.press("down", "down")  # Reasons header, then the first reason
        first = pane.draft.reasons[0].id
        await pilot.press("r")
        await wait_for(
            pilot,
            lambda: (
                screen.generating is None
                and pane.draft.reasons[0].text == "Regenerated reasons item"
            ),
            what="item regenerated",
        )
        await pilot.press("u")
        await wait_for(
            pilot, lambda: pane.draft.reasons[0].text == "High expectations from the family"
        )
        assert pane.draft.reasons[0].id == first
        await pilot.press("d")
        assert pane.draft.reasons[0].deleted
        await pilot.press("u")
        await wait_for(pilot, lambda: not pane.draft.reasons[0].deleted)


# -- 2: Esc on the restore offer keeps the autosave ---------------------------------------
async def test_escape_on_the_restore_offer_keeps_it_and_asks_again(make_app, vault, settings):
    secret = "KEPT-QUESTION-5678"
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_patient(pilot, "Sun")
        await pilot.press("f3")
        screen.query_one("#question", TextArea).load_text(secret)
        await pilot.press("ctrl+l")
        screen = await open_patient(pilot, "Sun")
        await wait_for(pilot, lambda: isinstance(app.screen, RestoreDraftScreen), what="offer")
        await pilot.press("escape")
        await wait_for(pilot, lambda: not isinstance(app.screen, RestoreDraftScreen))
        # new work typed now must not overwrite what was put off
        await pilot.press("f3")
        screen.query_one("#question", TextArea).load_text("Something else")
        await pilot.press("ctrl+l")
        screen = await open_patient(pilot, "Sun")
        seen = []
        for _ in range(2):
            offer = await wait_for(
                pilot, lambda: isinstance(app.screen, RestoreDraftScreen) and app.screen
            )
            seen.append(offer.question)
            if secret in offer.question:
                await pilot.press("y")
                break
            await pilot.press("escape")
            await wait_for(pilot, lambda o=offer: app.screen is not o)
        assert any(secret in q for q in seen)
        await wait_for(
            pilot, lambda: screen.query_one("#question", TextArea).text == secret, what="restored"
        )
        await pilot.pause(0.3)
    store = read_only(settings)
    try:
        sun = patient_id(settings, "Sun")
        assert store.read_blob(sun, "draft-kept") is None  # restored: no longer kept apart
    finally:
        store.close()


async def test_only_discard_deletes_the_kept_draft(make_app, vault, settings):
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_patient(pilot, "Sun")
        await pilot.press("f3")
        screen.query_one("#question", TextArea).load_text("to be discarded")
        await pilot.press("ctrl+l")
        await open_patient(pilot, "Sun")
        await wait_for(pilot, lambda: isinstance(app.screen, RestoreDraftScreen), what="offer")
        await pilot.press("x")
        await pilot.pause(0.3)
        sun = patient_id(settings, "Sun")
        assert app.session.vault_call(lambda s: s.read_blob(sun, "draft")) is None
        assert app.session.vault_call(lambda s: s.read_blob(sun, "draft-kept")) is None


# -- 3: a chat message sent while a reply streams is kept ---------------------------------
async def test_chat_message_sent_during_a_reply_stays_in_the_box(make_app, vault, settings):
    fake = FakeAssistant(pause_after=2)
    app = make_app(assistant=fake)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_patient(pilot, "Sun")
        await pilot.press("f5")
        await type_text(pilot, "First question")
        await pilot.press("enter")
        await wait_for(pilot, lambda: fake.paused.is_set(), what="reply under way")
        # the question is in the vault before the reply ends (a reload keeps it)
        sun = screen.patient.id
        await wait_for(
            pilot,
            lambda: [m.content for m in app.session.load_chat(sun)] == ["First question"],
            what="question saved",
        )
        await type_text(pilot, "Second question")
        await pilot.press("enter")
        box = screen.query_one("#chat-input", Input)
        assert box.value == "Second question"
        fake.resume.set()
        await wait_for(pilot, lambda: screen.generating is None, what="reply done")
        await pilot.press("enter")
        await wait_for(
            pilot,
            lambda: any(c.args.get("message") == "Second question" for c in fake.calls),
            what="second sent",
        )
        assert box.value == ""


del ANALYSIS_TEXT


# -- 10 / 12: the Footer never hides Generate, Save, Lock; F1 help; no screenshot ---------
@pytest.mark.parametrize("width", [80, 120])
async def test_footer_keeps_generate_save_lock_and_help_in_view(make_app, vault, width):
    app = make_app()
    async with app.run_test(size=(width, 30)) as pilot:
        screen = await open_patient(pilot, "Sun")
        footer = await wait_for(
            pilot, lambda: "^g Generate" in screen_text(app) and screen_text(app).splitlines()[-1]
        )
        for key in ("^g Generate", "^l Lock", "f1 Help"):
            assert key in footer, footer
        await generate(pilot, screen, "Question")
        await draft_ready(pilot, screen)
        await pilot.pause(0.2)
        footer = screen_text(app).splitlines()[-1]
        for key in ("^g Generate", "^s Save", "^l Lock", "e Edit"):
            assert key in footer, footer


async def test_f1_shows_the_flow_and_the_keys(make_app, vault):
    from phyassist_tui.screens.help import HelpScreen

    app = make_app()
    async with app.run_test(size=(100, 40)) as pilot:
        await open_patient(pilot, "Sun")
        await pilot.press("f1")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen), what="help")
        text = screen_text(app)
        for step in ("Patient", "Statement", "Generate", "Edit", "Save", "Train"):
            assert step in text
        assert "ctrl+g" in text.lower() or "^g" in text
        await pilot.press("escape")
        await wait_for(pilot, lambda: not isinstance(app.screen, HelpScreen), what="closed")


async def test_palette_has_help_and_no_screenshot(make_app, vault, tmp_path, monkeypatch):
    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await open_patient(pilot, "Sun")
        titles = [c.title for c in app.get_system_commands(screen)]
        assert not any("Screenshot" in t for t in titles)
        assert any(t.startswith("Help") for t in titles)
        monkeypatch.chdir(tmp_path)
        monkeypatch.setenv("HOME", str(tmp_path))
        monkeypatch.setenv("XDG_DOWNLOAD_DIR", str(tmp_path))
        app.action_screenshot()
        app.deliver_screenshot()
        await pilot.pause(0.2)
    assert not list(tmp_path.rglob("*.svg"))


# -- 8: correct the record --------------------------------------------------------------
async def test_basic_information_is_edited_in_the_tui(make_app, vault, settings):
    from phyassist_tui.screens.new_patient import NewPatientScreen

    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_patient(pilot, "Sun")
        await pilot.press("alt+i")
        form = await wait_for(
            pilot, lambda: isinstance(app.screen, NewPatientScreen) and app.screen
        )
        assert form.query_one("#name", Input).value == "Sun"
        area = form.query_one("#field-demographics", TextArea)
        assert area.text == "19, student"
        area.load_text("20, student of law")
        await pilot.press("ctrl+s")
        await wait_for(
            pilot,
            lambda: screen.patient.basic.demographics == "20, student of law",
            what="saved",
        )
        await wait_for(pilot, lambda: "20, student of law" in screen_text(app))
        assert len(screen.patient.notes) == 1
    store = read_only(settings)
    try:
        loaded = store.load_patient(patient_id(settings, "Sun"))
        assert loaded.basic.demographics == "20, student of law"
        assert loaded.basic.mental_state == "mild anxiety, insomnia"
        from engine.trust.audit import AuditLog

        assert "patient_updated" in [e.action for e in AuditLog(store).entries()]
    finally:
        store.close()


async def test_the_f10_record_menu_also_edits_basic_information(make_app, vault):
    """F10 offers the basic information too (last), also for a patient with no note yet."""
    from phyassist_tui.screens.new_patient import NewPatientScreen

    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await open_patient(pilot, "Li")  # no saved note
        await pilot.press("f10")
        menu = await wait_for(pilot, lambda: isinstance(app.screen, ChooseScreen) and app.screen)
        assert [key for key, _ in menu.choices] == ["basic"]
        assert "Alt+I" in menu.choices[-1][1]
        await pilot.press("enter")
        form = await wait_for(
            pilot, lambda: isinstance(app.screen, NewPatientScreen) and app.screen
        )
        assert form.query_one("#name", Input).value == "Li"


async def test_a_saved_note_is_amended_with_history_and_deleted(make_app, vault, settings):
    from phyassist_tui.screens.choose import ChooseScreen
    from phyassist_tui.screens.records import NoteEditScreen, NoteHistoryScreen, ReasonScreen

    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_patient(pilot, "Sun")
        await pilot.press("f10")
        await wait_for(pilot, lambda: isinstance(app.screen, ChooseScreen), what="notes")
        await pilot.press("enter")  # the only note
        await wait_for(
            pilot, lambda: isinstance(app.screen, ChooseScreen) and "note" in app.screen.title_text
        )
        await pilot.press("enter")  # Amend
        form = await wait_for(pilot, lambda: isinstance(app.screen, NoteEditScreen) and app.screen)
        form.query_one("#amend-advice", TextArea).load_text("Sleep hygiene\nWeekly exercise")
        form.query_one("#amend-reason", Input).value = "advice from the session was missing"
        await pilot.press("ctrl+s")
        await wait_for(
            pilot, lambda: len(screen.patient.notes[0].analysis.advice) == 2, what="amended"
        )
        await wait_for(pilot, lambda: "Amended" in screen_text(app), what="shown as amended")
        # the history shows the earlier version and the reason
        await pilot.press("f10", "enter")
        await wait_for(
            pilot, lambda: isinstance(app.screen, ChooseScreen) and "note" in app.screen.title_text
        )
        await pilot.press("down", "enter")
        await wait_for(pilot, lambda: isinstance(app.screen, NoteHistoryScreen), what="history")
        await pilot.pause(0.3)
        text = app.screen.query_one("#history-markdown").source
        assert "advice from the session was missing" in text and "Version 1" in text
        assert "Weekly exercise" in text  # the current version, shown first
        assert "Version 1" in screen_text(app) or "Current version" in screen_text(app)
        await pilot.press("escape")
        # delete it, with a reason
        await pilot.press("f10", "enter")
        await wait_for(
            pilot, lambda: isinstance(app.screen, ChooseScreen) and "note" in app.screen.title_text
        )
        await pilot.press("down", "down", "enter")
        await wait_for(pilot, lambda: isinstance(app.screen, ReasonScreen), what="delete asks")
        await type_text(pilot, "wrong client")
        await pilot.press("enter")
        await wait_for(pilot, lambda: not screen.patient.notes, what="deleted")
        await wait_for(pilot, lambda: "was deleted" in screen_text(app), what="tombstone shown")
    store = read_only(settings)
    try:
        loaded = store.load_patient(patient_id(settings, "Sun"))
        assert loaded.notes == [] and loaded.deleted_notes[0].reason == "wrong client"
        from engine.trust.audit import AuditLog

        actions = [e.action for e in AuditLog(store).entries()]
        assert "note_amended" in actions and "note_deleted" in actions
    finally:
        store.close()


# -- 4: the idle lock waits for a training; its outcome is said after unlock -------------
def _slow_runner(seen: dict, steps: int = 60, pause: float = 0.05):
    def runner(*, patient, store, settings, cancel):
        for step in range(1, steps + 1):
            if cancel.is_set():
                seen["cancelled_at"] = step
                return
            yield {"phase": "training", "step": step, "total_steps": steps, "loss": 1.0}
            cancel.wait(pause)
        seen["finished"] = True

    return runner


async def test_idle_lock_waits_for_a_training_and_says_how_it_ended(make_app, vault, settings):
    from phyassist_tui.screens.train import TrainScreen
    from phyassist_tui.screens.unlock import UnlockScreen
    from tests.tui.fakes import unlock

    settings.idle_lock_minutes = 0.02  # 1.2 s idle; the training takes ~4 s
    seen: dict = {}
    app = make_app(settings=settings, training_runner=_slow_runner(seen, steps=80))
    async with app.run_test(size=(100, 30)) as pilot:
        await open_patient(pilot, "Sun")
        await pilot.press("ctrl+t")
        train = await wait_for(pilot, lambda: isinstance(app.screen, TrainScreen) and app.screen)
        await pilot.pause(2.5)  # idle for twice the limit, training still running
        assert app.session.unlocked and not train.finished
        await wait_for(pilot, lambda: train.finished, timeout=10, what="training done")
        assert seen.get("finished") and "cancelled_at" not in seen
        await wait_for(
            pilot, lambda: isinstance(app.screen, UnlockScreen), timeout=8, what="idle lock after"
        )
        await unlock(pilot)
        await wait_for(
            pilot,
            lambda: any("Training for Sun" in n.message for n in app._notifications),
            what="outcome said after unlock",
        )


async def test_explicit_lock_during_training_asks_and_says_it_stopped(make_app, vault):
    from phyassist_tui.screens.train import TrainScreen
    from phyassist_tui.screens.unlock import UnlockScreen
    from tests.tui.fakes import unlock

    seen: dict = {}
    app = make_app(training_runner=_slow_runner(seen, steps=400))
    async with app.run_test(size=(100, 30)) as pilot:
        await open_patient(pilot, "Sun")
        await pilot.press("ctrl+t")
        train = await wait_for(pilot, lambda: isinstance(app.screen, TrainScreen) and app.screen)
        await pilot.press("ctrl+l")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="asks")
        await pilot.press("n")  # keep training
        await pilot.pause(0.2)
        assert app.session.unlocked and not train.cancel.is_set()
        await pilot.press("ctrl+l")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="asks again")
        await pilot.press("y")
        await wait_for(pilot, lambda: isinstance(app.screen, UnlockScreen), what="locked")
        await wait_for(pilot, lambda: "cancelled_at" in seen, what="trainer stopped")
        await unlock(pilot)
        await wait_for(
            pilot,
            lambda: any("stopped by the lock" in n.message for n in app._notifications),
            what="said after unlock",
        )


# -- 10: smaller items ----------------------------------------------------------------------
async def test_search_opens_the_match_with_one_enter_even_typed_fast(make_app, vault):
    from tests.tui.fakes import open_workspace

    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_workspace(pilot)
        await pilot.press("ctrl+f")
        await type_text(pilot, "Li")
        await pilot.press("enter")  # before the search's pause has even passed
        await wait_for(
            pilot, lambda: screen.patient is not None and screen.patient.name == "Li", what="Li"
        )


async def test_a_long_name_is_one_line_with_an_ellipsis(make_app, settings):
    from engine.vault.store import Store
    from tests.tui.fakes import PASSPHRASE, open_workspace

    store = Store.create(settings.vault_dir, PASSPHRASE, settings=settings)
    store.create_patient("Maximiliane " * 10)
    store.close()
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await open_workspace(pilot)
        lines = [line for line in screen_text(app).splitlines() if "Maximiliane" in line]
        assert len(lines) == 1 and "…" in lines[0]


async def test_after_unlock_no_adapter_of_the_last_patient_is_shown(make_app, vault):
    from tests.tui.fakes import open_workspace

    fake = FakeAssistant()
    fake.adapter_for = "Sun"
    app = make_app(assistant=fake)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_patient(pilot, "Sun")
        await wait_for(pilot, lambda: "adapter v1" in str(screen.status.render()), what="label")
        await pilot.press("ctrl+l")
        screen = await open_workspace(pilot)
        await pilot.pause(0.3)
        assert screen.patient is None
        assert "adapter v1" not in str(screen.status.render())
        assert "Sun" not in str(screen.status.render())


async def test_name_tab_details_typed_in_one_burst_land_in_their_fields(make_app, vault):
    from phyassist_tui.screens.new_patient import NewPatientScreen
    from tests.tui.fakes import open_workspace, send_burst

    app = make_app()
    async with app.run_test(size=(100, 36)) as pilot:
        await open_workspace(pilot)
        await pilot.press("ctrl+n")
        form = await wait_for(
            pilot, lambda: isinstance(app.screen, NewPatientScreen) and app.screen
        )
        await wait_for(pilot, lambda: app.focused is form.query_one("#name"))
        send_burst(
            app,
            [
                *((c, c) for c in "Wang"),
                ("tab", None),
                *((c, c) for c in "28"),
                ("tab", None),
                *((c, c) for c in "eldest"),
            ],
        )
        await wait_for(pilot, lambda: form.query_one("#field-developmental_history", TextArea).text)
        await pilot.pause(0.2)
        await pilot.pause(0.2)
        assert form.query_one("#name", Input).value == "Wang"
        assert form.query_one("#field-demographics", TextArea).text == "28"
        assert form.query_one("#field-developmental_history", TextArea).text == "eldest"


@pytest.mark.parametrize("size", [(142, 36), (142, 39), (80, 24)])
async def test_new_patient_form_opens_at_the_top(make_app, vault, size):
    from phyassist_tui.screens.new_patient import NewPatientScreen
    from tests.tui.fakes import open_workspace

    app = make_app()
    async with app.run_test(size=size) as pilot:
        await open_workspace(pilot)
        await pilot.press("ctrl+n")
        form = await wait_for(
            pilot, lambda: isinstance(app.screen, NewPatientScreen) and app.screen
        )
        await pilot.pause(0.3)
        assert form.query_one("#form-scroll").scroll_y == 0
        assert "Name (required)" in screen_text(app)


# -- 11: keys that a browser keeps for itself have F-keys, and the hints say so ------------
async def test_new_patient_and_train_have_f_keys_and_browser_hints(make_app, vault, monkeypatch):
    from phyassist_tui.app import PhyAssistApp
    from phyassist_tui.bindings import web_keymap
    from phyassist_tui.screens.new_patient import NewPatientScreen
    from tests.tui.fakes import open_workspace

    assert web_keymap({}) == {"workspace.new_patient": "f6,ctrl+n", "workspace.train": "f7,ctrl+t"}
    assert web_keymap({"workspace.train": "f12"}) == {"workspace.new_patient": "f6,ctrl+n"}
    monkeypatch.setattr(PhyAssistApp, "is_web", property(lambda self: True))
    app = make_app()
    async with app.run_test(size=(120, 30)) as pilot:
        await open_workspace(pilot)
        text = screen_text(app)
        assert "F6 to add one" in text and "Ctrl+N" not in text
        assert "f6 New patient" in text.splitlines()[-1]
        await pilot.press("f6")
        await wait_for(pilot, lambda: isinstance(app.screen, NewPatientScreen), what="form")


def test_app_and_workspace_keys_are_each_bound_once():
    """The key plan of the merged branches: one action per key where app and workspace keys
    are live together; F8 is the workspace's Similar tab."""
    from phyassist_tui.bindings import ACTIONS

    seen: dict[str, str] = {}
    for action in ACTIONS:
        if action.scope not in ("app", "workspace"):
            continue
        for key in action.key.split(","):
            assert key not in seen, f"{key} is bound to {seen.get(key)} and {action.id}"
            seen[key] = action.id
    assert seen["f8"] == "workspace.show_similar"
    assert seen["alt+s"] == "app.backup" and seen["alt+i"] == "workspace.edit_basic"
    assert seen["f1"] == "app.help" and seen["f10"] == "workspace.notes_menu"


def test_serve_page_focuses_the_terminal_and_loads_nothing_from_the_internet():
    from phyassist_tui.serve import SERVE_TEMPLATES

    page = (SERVE_TEMPLATES / "app_index.html").read_text(encoding="utf-8")
    assert "focusTerminal" in page and "https://" not in page
    from phyassist_tui.serve import GuardedServer, tui_command

    server = GuardedServer(tui_command(), port=8765)  # the guarded server serves this page
    assert server.templates_path == SERVE_TEMPLATES


async def test_idle_lock_waits_for_a_running_draft(make_app, vault, settings):
    from phyassist_tui.screens.unlock import UnlockScreen

    settings.idle_lock_minutes = 0.02  # 1.2 s
    fake = FakeAssistant(pause_after=3)
    app = make_app(settings=settings, assistant=fake)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await draft_under_way(pilot, fake)
        await pilot.pause(2.5)
        assert app.session.unlocked and screen.generating == "analysis"
        fake.resume.set()
        await wait_for(pilot, lambda: screen.draft_pane.draft is not None, what="draft")
        await wait_for(
            pilot, lambda: isinstance(app.screen, UnlockScreen), timeout=8, what="lock after"
        )


async def test_amend_form_keeps_a_fast_burst_in_order(make_app, vault):
    from phyassist_tui.screens.choose import ChooseScreen
    from phyassist_tui.screens.records import NoteEditScreen
    from tests.tui.fakes import send_burst

    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await open_patient(pilot, "Sun")
        await pilot.press("f10")
        await wait_for(pilot, lambda: isinstance(app.screen, ChooseScreen), what="notes")
        await pilot.press("enter")
        await wait_for(
            pilot, lambda: isinstance(app.screen, ChooseScreen) and "note" in app.screen.title_text
        )
        await pilot.press("enter")
        form = await wait_for(pilot, lambda: isinstance(app.screen, NoteEditScreen) and app.screen)
        assert form.query_one("#amend-scroll").scroll_y == 0  # the first label in view
        form.query_one("#amend-symptom").focus()
        await pilot.pause()
        send_burst(
            app,
            [
                *((c, c) for c in "X"),
                ("tab", None),
                *((c, c) for c in "Y "),
                ("tab", None),
                *((c, c) for c in "Z "),
            ],
        )
        await wait_for(pilot, lambda: "Z" in form.query_one("#amend-advice", TextArea).text)
        await pilot.pause(0.2)
        assert "X" in form.query_one("#amend-symptom", Input).value
        assert form.query_one("#amend-reasons", TextArea).text.startswith("Y Family")
        assert form.query_one("#amend-advice", TextArea).text.startswith("Z Sleep")
