"""The Similar pane: another client's saved note found for the current statement, opened in
full, and inserted into the draft as a cited point that the counselor can open."""

from __future__ import annotations

import pytest
from textual.widgets import TextArea

from phyassist_tui.screens.entry import EntryScreen
from phyassist_tui.widgets.draft_pane import DraftPane
from phyassist_tui.widgets.similar_pane import SimilarPane
from tests.tui.fakes import draft_ready, generate, open_patient, screen_text, wait_for

pytestmark = pytest.mark.anyio


async def test_similar_pane_finds_another_clients_note_and_inserts_a_cited_point(make_app, vault):
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_patient(pilot, "Li")  # Sun's note is about focusing after an exam
        await pilot.press("f3")
        screen.query_one("#question", TextArea).load_text(
            "Since the exam I cannot focus on studying and I sleep badly."
        )
        await pilot.press("f8")
        pane = screen.query_one(SimilarPane)
        await wait_for(pilot, lambda: bool(pane.matches), what="similar matches", timeout=30)
        sun_id = next(s.id for s in app.session.list_patients() if s.name == "Sun")
        top = pane.matches[0].entry
        assert top.key.startswith(f"note:{sun_id}:")
        shown = screen_text(app)
        assert f"Case {sun_id[:6]}" in shown and "2026-03-14" in shown
        listing = pane.query_one("#similar-list")
        rows = [str(listing.get_option_at_index(i).prompt) for i in range(listing.option_count)]
        assert rows and not any("Sun" in row for row in rows)  # a pseudonym, never the name

        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, EntryScreen), what="entry")
        assert "Sleep hygiene" in screen_text(app)  # the full note, advice included
        await pilot.press("escape")

        await generate(pilot, screen, "Since the exam I cannot focus on studying.")
        await draft_ready(pilot, screen)
        await pilot.press("f8")
        await wait_for(pilot, lambda: bool(pane.matches) and app.focused.id == "similar-list")
        await pilot.press("i")
        draft = screen.query_one(DraftPane).draft
        await wait_for(pilot, lambda: draft.advice[-1].text.endswith("[1]"), what="cited item")
        item = draft.advice[-1]
        assert item.text == "Sleep hygiene [1]" and item.added_by_counselor
        assert draft.citations[0].key == top.key and "Case" in draft.citations[0].label

        await pilot.press("f4")
        draft_pane = screen.query_one(DraftPane)
        draft_pane.query_one("#draft-items").index = len(draft_pane.query("ItemRow")) + 2
        await pilot.pause()
        assert draft_pane.selected_item_id == item.id
        await pilot.press("o")
        await wait_for(pilot, lambda: isinstance(app.screen, EntryScreen), what="sources")
        assert "I cannot focus on studying since the exam" in screen_text(app)


async def test_an_empty_result_says_why_and_what_would_fill_it(make_app, vault):
    """Only this client's own notes in the index (left out) and no reference corpus: the pane
    said "0 similar (0 own cases) ..." cut off at the edge; it says why and what to run."""
    from textual.widgets import Label

    app = make_app()
    async with app.run_test(size=(80, 30)) as pilot:
        screen = await open_patient(pilot, "Sun")
        await pilot.press("f3")
        screen.query_one("#question", TextArea).load_text("I cannot focus since the exam.")
        await pilot.press("f8")
        status = screen.query_one("#similar-status", Label)
        await wait_for(pilot, lambda: "Nothing similar" in str(status.render()), timeout=30)
        text = " ".join(str(status.render()).split())
        assert "this client's own are left out" in text
        assert "no reference entries" in text and "phyassist knowledge build" in text
        assert status.size.height >= 2 and status.size.width <= 80  # wrapped, not cut off
