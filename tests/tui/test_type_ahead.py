"""Keys typed ahead of a slow step (a burst over SSH, a fast typist) land where they were meant.

Opening a patient decrypts its record in a worker; the counselor who presses Enter, F3 and
starts typing the statement at once must find every character in the statement field.
"""

from __future__ import annotations

import time

import pytest

from phyassist_tui.widgets.patients_pane import PatientList
from tests.tui.fakes import open_workspace, send_burst, wait_for

pytestmark = pytest.mark.anyio


def _chars(text: str) -> list[tuple[str, str]]:
    return [("space" if c == " " else c, c) for c in text]


async def test_statement_typed_while_the_patient_opens_is_kept(make_app, vault, monkeypatch):
    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await open_workspace(pilot)
        session = app.session
        slow_open = session.open_patient

        def open_patient(patient_id, **kwargs):
            time.sleep(0.4)  # a large record on a busy machine
            return slow_open(patient_id, **kwargs)

        monkeypatch.setattr(session, "open_patient", open_patient)
        listing = screen.query_one("#patient-list", PatientList)
        listing.highlight_name("Sun")
        listing.focus()
        await pilot.pause()
        send_burst(app, [("enter", "\r"), ("f3", None), *_chars("hello world typed fast")])
        await wait_for(pilot, lambda: screen.patient is not None and screen.patient.name == "Sun")
        await pilot.pause(0.3)
        assert screen.analysis.question == "hello world typed fast"
        assert app.focused is not None and app.focused.id == "question"


async def _keep_a_draft_for_sun(pilot, screen, text: str):
    """Type a statement for Sun, lock (the draft is autosaved), unlock and reopen the list."""
    from textual.widgets import TextArea

    await pilot.press("f3")
    screen.query_one("#question", TextArea).load_text(text)
    await pilot.press("ctrl+l")
    screen = await open_workspace(pilot)
    listing = screen.query_one("#patient-list", PatientList)
    listing.highlight_name("Sun")
    listing.focus()
    await pilot.pause()
    return screen


async def test_restoring_a_kept_draft_keeps_what_was_typed_ahead(make_app, vault):
    from phyassist_tui.screens.restore import RestoreDraftScreen
    from tests.tui.fakes import open_patient

    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await open_patient(pilot, "Sun")
        screen = await _keep_a_draft_for_sun(pilot, screen, "KEPT statement")
        send_burst(app, [("enter", "\r"), ("f3", None), *_chars("typed ahead")])
        await wait_for(pilot, lambda: isinstance(app.screen, RestoreDraftScreen), what="offer")
        await pilot.pause(1.0)  # the counselor stops typing and reads the offer
        await pilot.press("y")
        await wait_for(pilot, lambda: not isinstance(app.screen, RestoreDraftScreen))
        await pilot.pause(0.2)
        assert screen.analysis.question == "KEPT statement\n\ntyped ahead"


async def test_letters_typed_on_as_the_offer_appears_are_text_not_answers(
    make_app, vault, settings, monkeypatch
):
    """An 'x' typed on through the offer's appearance would have discarded the kept draft."""
    from phyassist_tui.screens import restore
    from tests.tui.fakes import open_patient, patient_id

    # a slow box must not end the typing before the test types on

    monkeypatch.setattr(restore, "TYPING_PAUSE_S", 3.0, raising=False)
    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await open_patient(pilot, "Sun")
        screen = await _keep_a_draft_for_sun(pilot, screen, "KEPT statement")
        send_burst(app, [("enter", "\r"), ("f3", None), *_chars("I need to ")])
        offer = await wait_for(
            pilot,
            lambda: isinstance(app.screen, restore.RestoreDraftScreen) and app.screen,
            what="offer",
        )
        send_burst(app, _chars("relax"))
        await pilot.pause(0.5)
        assert app.screen is offer  # no letter answered it
        assert screen.analysis.question == "I need to relax"
        sun = patient_id(settings, "Sun")
        assert app.session.vault_call(lambda s: s.read_blob(sun, "draft")) is not None
        await wait_for(pilot, lambda: offer._typing_until < time.monotonic(), timeout=10)
        await pilot.press("escape")  # now a key answers: later
        await wait_for(pilot, lambda: app.screen is not offer)


async def test_search_enter_f3_and_statement_in_one_burst(make_app, vault):
    """Ctrl+F, a name, Enter, F3 and the statement in one burst (SSH delivers keys in bursts):
    the patient found opens, and every later character lands in the statement, none in the
    search box."""
    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await open_workspace(pilot)
        send_burst(
            app,
            [
                ("ctrl+f", None),
                *_chars("Li"),
                ("enter", "\r"),
                ("f3", None),
                *_chars("typed in one go"),
            ],
        )
        await wait_for(pilot, lambda: screen.patient is not None and screen.patient.name == "Li")
        await pilot.pause(0.5)
        assert screen.query_one("#search").value == "Li"
        assert screen.analysis.question == "typed in one go"
        assert app.focused is not None and app.focused.id == "question"


# -- a field's own editing keys act in order with the letters around them (KeysInOrder) -------


async def test_ctrl_u_and_new_text_in_one_burst_replace_a_draft_item(make_app, vault):
    """Found in tmux: Ctrl+U, new text and Enter arriving together in the item editor lost the
    edit (Textual ran Ctrl+U after the letters, erasing them; Enter kept an empty field)."""
    from tests.tui.fakes import FakeAssistant, open_draft

    fake = FakeAssistant(analysis_text="Symptom Type: Stress\nReasons:\n1. Poor sleep\n2. Work\n")
    app = make_app(assistant=fake)
    async with app.run_test(size=(100, 30)) as pilot:
        _screen, pane = await open_draft(pilot, "Sun")
        await pilot.press("down", "down")
        assert pane.selected_row.item.text == "Poor sleep"
        await pilot.press("e")
        await pilot.pause(0.2)
        send_burst(app, [("ctrl+u", "\x15"), *_chars("Sleeps four hours"), ("enter", "\r")])
        await wait_for(pilot, lambda: not pane.editing, what="the editor closes")
        assert [i.text for i in pane.draft.reasons] == ["Sleeps four hours", "Work"]


@pytest.mark.parametrize("field", ["question", "chat-input", "search"])
async def test_backspace_in_a_burst_deletes_the_letter_before_it(make_app, vault, field):
    """Typing "ab<Backspace>c" in one burst gives "ac" in the statement, chat and search fields
    (before: "ab", the Backspace ran after the "c")."""
    from tests.tui.fakes import open_patient

    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await open_patient(pilot, "Sun")
        await pilot.press({"question": "f3", "chat-input": "f5", "search": "ctrl+f"}[field])
        box = screen.query_one(f"#{field}")
        await wait_for(pilot, lambda: app.focused is box, what=f"{field} focused")
        send_burst(app, [*_chars("ab"), ("backspace", "\x7f"), *_chars("c")])
        await pilot.pause(0.5)
        assert (box.text if field == "question" else box.value) == "ac"


def test_every_text_field_of_the_app_keeps_keys_in_order():
    """No screen builds a bare Input or TextArea: each is a ``KeysInOrder`` field."""
    import ast
    from pathlib import Path

    import phyassist_tui

    bare = []
    for path in Path(phyassist_tui.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) in (
                "Input",
                "TextArea",
            ):
                bare.append(f"{path.name}:{node.lineno}")
            if isinstance(node, ast.ClassDef) and path.name != "focus.py":
                bases = [getattr(b, "id", None) for b in node.bases]
                if "Input" in bases or "TextArea" in bases:
                    bare.append(f"{path.name}:{node.lineno} class {node.name}")
    assert bare == []
