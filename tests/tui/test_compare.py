"""Compare at 80x24: domain vs patient-adapter drafts side by side, take per item or whole."""

from __future__ import annotations

import pytest
from textual import events
from textual.widgets import TextArea

from engine.training.data import build_training_data
from engine.trust.audit import AuditLog
from phyassist_tui.screens.compare import CompareScreen
from tests.tui.fakes import FakeAssistant, open_patient, screen_text, wait_for

pytestmark = pytest.mark.anyio

DOMAIN = "Symptom type: Depression\nReasons:\n1. Poor sleep\nAdvice:\n1. You are not alone"
PATIENT = 'Symptom type: Low mood\nReasons:\n1. "I barely sleep"\nAdvice:\n1. Walk daily'


class AdapterFake(FakeAssistant):
    """A fake engine with a patient adapter: the draft depends on the active adapter."""

    has_adapter = True
    active_adapter: str | None = None
    last_adapter_error: str | None = None

    def use_patient(self, patient, store=None) -> str:
        if patient is not None and store is not None and self.has_adapter:
            self.active_adapter = "domain+patient-x-v2"
            return "fake · domain + adapter v2"
        self.active_adapter = "domain"
        return "fake · domain adapter"

    def stream_analysis(self, patient, question, *, cancel, guidance=None, observed=""):
        text = PATIENT if "patient" in (self.active_adapter or "") else DOMAIN
        return self._stream(text, cancel)


async def _statement(pilot, text: str):
    """Sun's workspace with ``text`` typed as the statement (Analysis tab)."""
    screen = await open_patient(pilot, "Sun")
    await pilot.press("f3")
    screen.query_one("#question", TextArea).load_text(text)
    return screen


@pytest.mark.parametrize("fake", [AdapterFake()])
async def test_compare_takes_rows_and_stores_the_choices(make_app, vault, fake):
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await _statement(pilot, "I barely sleep and feel worthless.")
        await pilot.press("alt+c")
        compare = await wait_for(
            pilot, lambda: isinstance(app.screen, CompareScreen) and app.screen.pair and app.screen
        )
        # the rows are composed a refresh after the pair arrives
        text = await wait_for(pilot, lambda: "Low mood" in (t := screen_text(app)) and t)
        assert "Left: domain adapter" in text and "Right: domain + adapter v2" in text
        assert "Depression" in text and "Low mood" in text
        await pilot.press("left")  # symptom type row: take the domain's
        await pilot.press("enter")
        await wait_for(pilot, lambda: not isinstance(app.screen, CompareScreen))
        draft = screen.draft_pane.draft
        assert draft.symptom_type.text == "Depression"
        assert [i.text for i in draft.reasons] == ['"I barely sleep"']
        pid = screen.patient.id
        stored = app.session.vault_call(lambda store: store.load_patient(pid))
        assert [c.section for c in stored.preferences] == ["symptom_type"]
        assert build_training_data(stored).signals["choices"] == 1
        entries = app.session.vault_call(lambda store: AuditLog(store).entries(pid))
        assert entries[-1].action == "preference_recorded"
        assert compare.cancel.is_set() is False


async def test_alt_c_from_the_statement_box_compares_and_types_nothing(make_app, vault):
    """A terminal sends Alt+C as ESC c: Textual's key "alt+c" carries the character "c". The
    statement box typed the "c" and Compare never opened."""
    app = make_app(assistant=AdapterFake())
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_patient(pilot, "Sun")
        await pilot.press("f3")
        box = screen.query_one("#question", TextArea)
        box.load_text("I barely sleep.")
        box.focus()
        await pilot.pause()
        app.post_message(events.Key("alt+c", "c"))  # as the terminal parser makes it
        await wait_for(pilot, lambda: isinstance(app.screen, CompareScreen))
        assert box.text == "I barely sleep."


async def test_compare_without_an_adapter_says_so(make_app, vault):
    fake = AdapterFake()
    fake.has_adapter = False
    app = make_app(assistant=fake)
    async with app.run_test(size=(80, 24)) as pilot:
        await open_patient(pilot, "Sun")
        await pilot.press("f3")
        app.screen.query_one("#question", TextArea).load_text("I barely sleep.")
        await pilot.press("alt+c")
        await wait_for(
            pilot, lambda: any("Nothing to compare" in n.message for n in app._notifications)
        )
        assert not isinstance(app.screen, CompareScreen)


class QuotingAdapterFake(AdapterFake):
    """The patient adapter quotes Sun's earlier note (as ten near-identical notes taught the
    real embedded model to do), with one word changed."""

    def stream_analysis(self, patient, question, *, cancel, guidance=None, observed=""):
        if "patient" not in (self.active_adapter or ""):
            return self._stream(DOMAIN, cancel)
        quoting = (
            'Symptom type: Low mood\nReasons:\n1. "I can not focus on studying since the exam."\n'
            "Advice:\n1. Walk daily"
        )
        return self._stream(quoting, cancel)


@pytest.mark.parametrize("fake", [QuotingAdapterFake()])
async def test_compare_says_which_side_quotes_an_earlier_note(make_app, vault, fake):
    """A reason in quotation marks reads as this session's words: in Compare, as after a
    generated draft, the counselor is told when a side quotes an earlier note instead."""
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await _statement(pilot, "I barely sleep and feel worthless.")
        await pilot.press("alt+c")
        text = await wait_for(pilot, lambda: "Low mood" in (t := screen_text(app)) and t)
        assert "Right: Reason 1 quotes the note of 2026-" in " ".join(text.split())
        assert "Left:" in text and "Left: Reason" not in text
        await pilot.press("2")  # the right-hand draft, whole
        await wait_for(pilot, lambda: not isinstance(app.screen, CompareScreen))
        await wait_for(
            pilot,
            lambda: any("quotes the note of" in str(n.message) for n in app._notifications),
            what="the taken draft's quote warning",
        )
        # and it stays above the draft's items (a notification is gone in seconds) ...
        pane = screen.draft_pane
        assert "Reason 1 quotes the note of 2026-" in pane.caveat
        assert pane.query_one("#draft-caveat").display
        # ... until the counselor's edit makes it untrue
        pane.draft.reasons[0].text = "Poor sleep and worthlessness."
        pane._changed()
        await wait_for(pilot, lambda: pane.caveat == "", what="the warning gone after the edit")
        assert not pane.query_one("#draft-caveat").display


@pytest.mark.parametrize("fake", [QuotingAdapterFake()])
async def test_a_generated_draft_keeps_its_quote_warning_in_view(make_app, vault, fake):
    """Seen in tmux: the warning was a 12 s notification, gone while the counselor read."""
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await _statement(pilot, "I barely sleep and feel worthless.")
        await pilot.press("ctrl+g")
        pane = screen.draft_pane
        await wait_for(pilot, lambda: pane.draft is not None, what="the draft")
        await wait_for(pilot, lambda: "quotes the note of" in pane.caveat, what="the warning")
        await pilot.pause(0.5)
        assert "Reason 1 quotes the note of 2026-" in " ".join(screen_text(app).split())
