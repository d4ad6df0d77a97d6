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
