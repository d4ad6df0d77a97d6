"""Pilot tests of the Analysis flow: statement, streamed draft, editing, regenerating, saving.

On a real vault (engine.vault.store) and the fake engine.
"""

from __future__ import annotations

import pytest
from textual.widgets import Input, TextArea

from phyassist_tui.widgets.draft_pane import DraftPane
from tests.tui.fakes import (
    ANALYSIS_TEXT,
    FakeAssistant,
    generate,
    open_draft,
    open_patient,
    read_only,
    screen_text,
    send_burst,
    type_text,
    wait_for,
)

pytestmark = pytest.mark.anyio


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


async def test_item_keys_on_a_heading_act_on_its_item_or_say_why_not(make_app, vault, settings):
    """Home selects the Symptom Type heading: ``e`` there edits the symptom type (it did
    nothing, silently, and the text typed next was lost); on another heading the counselor is
    told to select an item."""
    fake = FakeAssistant(analysis_text="Symptom Type: Stress\nReasons:\n1. Poor sleep\n")
    app = make_app(assistant=fake)
    async with app.run_test(size=(80, 24)) as pilot:
        _screen, pane = await open_draft(pilot, "Sun")
        await pilot.press("down", "home")
        assert pane.selected_row is None and pane.selected_section == "symptom_type"
        await pilot.press("e", "ctrl+u")
        await type_text(pilot, "Insomnia")
        await pilot.press("enter")
        assert pane.draft.symptom_type.text == "Insomnia"
        await pilot.press("home", "down", "down")  # the Reasons heading
        assert pane.selected_row is None and pane.selected_section == "reasons"
        for key in ("e", "c", "d", "r"):
            await pilot.press(key)
        await pilot.pause()
        assert [i.text for i in pane.draft.reasons] == ["Poor sleep"]
        assert not pane.editing and not pane.draft.reasons[0].deleted
        said = [n.message for n in app._notifications]
        assert "Select an item to edit (↑/↓); on a heading, a adds one." in said
        assert any(m.startswith("Select an item to delete") for m in said)
