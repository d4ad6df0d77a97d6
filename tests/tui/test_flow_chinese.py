"""Pilot tests of Chinese text through the record, the draft and the note.

On a real vault (engine.vault.store) and the fake engine.
"""

from __future__ import annotations

import pytest
from rich.cells import cell_len
from textual.widgets import Input, TabbedContent, TextArea

from engine.vault.store import Store
from phyassist_tui.screens.new_patient import NewPatientScreen
from phyassist_tui.widgets.draft_pane import DraftPane
from tests.tui.fakes import (
    PASSPHRASE,
    FakeAssistant,
    add_seed_case_patient,
    draft_ready,
    generate,
    open_patient,
    open_workspace_empty,
    read_only,
    screen_text,
    type_text,
    wait_for,
)

pytestmark = pytest.mark.anyio


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


async def test_a_long_chinese_item_starts_on_its_number_line(make_app, settings):
    """A Chinese item is one unbroken run to the wrapper: with the number in the same text it
    was pushed to the line below a lone "1." (seen in tmux); now it wraps under itself."""
    Store.create(settings.vault_dir, PASSPHRASE, settings=settings).close()
    long_item = "建议" + "每周与来访者一起回顾睡眠日记并记录情绪变化和学业压力的来源" * 3 + "。"
    fake = FakeAssistant(
        analysis_text=f"Symptom type: 学业焦虑\nReasons:\n1. 成绩下降。\nAdvice:\n1. {long_item}\n"
    )
    app = make_app(assistant=fake)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_workspace_empty(pilot)
        await pilot.press("ctrl+n")
        await wait_for(pilot, lambda: isinstance(app.screen, NewPatientScreen))
        await type_text(pilot, "小林")
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: screen.patient is not None)
        await generate(pilot, screen, "最近总是睡不好。")
        await draft_ready(pilot, screen)
        lines = screen_text(app).splitlines()
        [first] = [line for line in lines if "建议每周" in line]
        assert "1. 建议每周" in first
        # the next line continues the item under its text, not under the number
        follow = lines[lines.index(first) + 1]
        i = _index_at_cell(follow, cell_len(first[: first.index("建议")]))
        assert follow[i] in long_item and not follow[i - 3 : i].strip()


def _index_at_cell(line: str, column: int) -> int:
    """The index of the character that starts at terminal cell ``column`` of ``line``."""
    cells = 0
    for index, ch in enumerate(line):
        if cells == column:
            return index
        cells += cell_len(ch)
    raise AssertionError(f"no character starts at cell {column}: {line!r}")
