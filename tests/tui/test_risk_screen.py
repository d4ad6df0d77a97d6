"""The risk-flag modal and ``confirm_risk``, driven with Textual's Pilot in a tiny host app."""

from __future__ import annotations

import threading
from typing import ClassVar

import pytest
from rich.text import Text
from textual import work
from textual.app import App, ComposeResult
from textual.widgets import Static

from engine.session import Session
from engine.trust.audit import AuditLog
from engine.trust.risk import RiskFlag, assess, risk_audit_detail
from engine.vault.store import Store
from phyassist_tui.screens.risk import (
    RiskFlagScreen,
    check_risk_then,
    confirm_risk,
    confirm_risk_then,
    evidence_text,
)

pytestmark = pytest.mark.anyio

EN = "We talked about school. Last night I wanted to kill myself. Then I slept."
ZH = "最近睡不好。我有时候想自杀，觉得活着没有意思。"
CLEAN = "We talked about school and her new job; she feels better."


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Host(App):
    """Starts ``confirm_risk`` in a worker when ``g`` is pressed; keeps the answer."""

    BINDINGS: ClassVar = [
        ("g", "go", "go"),
        ("c", "go_callback", "go (callback)"),
        ("m", "go_model", "go (rules + model)"),
        ("x", "stop_check", "stop the model check"),
    ]

    def __init__(self, store: Store, patient_id: str, text: str, assistant=None) -> None:
        super().__init__()
        self.store, self.patient_id, self.text = store, patient_id, text
        self.session = Session.over(store, store.settings, origin="tui", assistant=assistant)
        if assistant is not None:  # the model is "loaded": the Session may ask it
            self.session.start_model_load()
            assert self.session.wait_ready(timeout=5)
        self.answers: list[bool] = []
        self.activity: list[str] = []

    def action_go_model(self) -> None:
        check_risk_then(
            self,
            self.patient_id,
            self.text,
            lambda: self.answers.append(True),
            cancelled=lambda: self.answers.append(False),
            checking=self.activity.append,
        )

    def action_stop_check(self) -> None:
        self.workers.cancel_group(self, "risk-check")

    def compose(self) -> ComposeResult:
        yield Static("host")

    @work(exclusive=True)
    async def action_go(self) -> None:
        self.answers.append(await confirm_risk(self, self.session, self.patient_id, self.text))

    def action_go_callback(self) -> None:
        confirm_risk_then(
            self,
            self.session,
            self.patient_id,
            self.text,
            lambda: self.answers.append(True),
            cancelled=lambda: self.answers.append(False),
        )


def _entries(store: Store) -> list[tuple[str, str | None, str]]:
    return [(e.action, e.patient_id, e.detail) for e in AuditLog(store).entries()]


def _shown(screen: RiskFlagScreen) -> list[Text]:
    return [w.content for w in screen.query(".risk-evidence").results(Static)]


def _highlighted(text: Text) -> list[str]:
    return [text.plain[s.start : s.end] for s in text.spans if "reverse" in str(s.style)]


@pytest.mark.parametrize(
    ("text", "phrase", "category"),
    [(EN, "kill myself", "Suicide / self-harm"), (ZH, "自杀", "自杀 / 自伤")],
    ids=["english", "chinese"],
)
async def test_acknowledge_is_audited(store: Store, text: str, phrase: str, category: str) -> None:
    pid = store.create_patient("Risk").id
    flags = assess(text)
    assert flags
    app = Host(store, pid, text)
    async with app.run_test() as pilot:
        await pilot.press("g")
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, RiskFlagScreen)
        headings = [str(w.content) for w in screen.query(".risk-heading").results(Static)]
        assert len(headings) == len(flags)
        assert any(category in h and "HIGH" in h for h in headings)
        shown = _shown(screen)
        assert any(phrase in _highlighted(t) for t in shown)  # the matched words stand out
        assert any(flags[0].evidence in t.plain for t in shown)  # the sentence is quoted
        await pilot.press("a")
        await pilot.pause()
        assert not isinstance(app.screen, RiskFlagScreen)
    assert app.answers == [True]
    detail = risk_audit_detail(flags)
    assert _entries(store) == [
        ("risk_flagged", pid, detail),  # shown
        ("risk_acknowledged", pid, detail),
    ]
    assert all(text not in d and phrase not in d for _, _, d in _entries(store))


@pytest.mark.parametrize("text", [EN, ZH], ids=["english", "chinese"])
async def test_escape_cancels_and_records_the_cancel(store: Store, text: str) -> None:
    pid = store.create_patient("Risk").id
    app = Host(store, pid, text)
    async with app.run_test() as pilot:
        await pilot.press("g")
        await pilot.pause()
        assert isinstance(app.screen, RiskFlagScreen)
        await pilot.press("enter")  # focus starts on Cancel: Enter never acknowledges
        await pilot.pause()
        assert not isinstance(app.screen, RiskFlagScreen)
    assert app.answers == [False]
    detail = risk_audit_detail(assess(text))
    assert _entries(store) == [("risk_flagged", pid, detail), ("risk_cancelled", pid, detail)]


async def test_escape_key_cancels(store: Store) -> None:
    app = Host(store, store.create_patient("Risk").id, EN)
    async with app.run_test() as pilot:
        await pilot.press("g")
        await pilot.pause()
        await pilot.press("escape")
        await pilot.pause()
    assert app.answers == [False]
    assert [a for a, _, _ in _entries(store)] == ["risk_flagged", "risk_cancelled"]


async def test_no_flags_goes_straight_on(store: Store) -> None:
    assert assess(CLEAN) == []
    app = Host(store, store.create_patient("Calm").id, CLEAN)
    async with app.run_test() as pilot:
        await pilot.press("g")
        await pilot.pause()
        assert not isinstance(app.screen, RiskFlagScreen)
        await pilot.press("c")
        await pilot.pause()
    assert app.answers == [True, True] and _entries(store) == []


async def test_callback_form(store: Store) -> None:
    pid = store.create_patient("Risk").id
    app = Host(store, pid, ZH)
    async with app.run_test() as pilot:
        await pilot.press("c")
        await pilot.pause()
        assert isinstance(app.screen, RiskFlagScreen) and app.answers == []
        await pilot.press("escape")
        await pilot.pause()
        await pilot.press("c")
        await pilot.pause()
        await pilot.press("a")
        await pilot.pause()
    assert app.answers == [False, True]
    assert [a for a, _, _ in _entries(store)] == [
        "risk_flagged",
        "risk_cancelled",
        "risk_flagged",
        "risk_acknowledged",
    ]


async def test_hostile_evidence_is_shown_literally(store: Store) -> None:
    """Markup and escape sequences in the client's words never style or reach the screen."""
    text = (
        "[bold red]note[/bold red] \x1b]0;pwned\x07\x1b[2Jhe said \\[link=x] "
        "I want to kill myself\\ [/] \u202eok"
    )
    flags = assess(text)
    assert flags
    rendered = evidence_text(flags[0])
    assert "[bold red]note[/bold red]" in rendered.plain and "[/]" in rendered.plain
    assert "\x1b" not in rendered.plain and "\x07" not in rendered.plain
    assert "\u202e" not in rendered.plain
    assert _highlighted(rendered) == ["kill myself"]
    assert all("red" not in str(s.style) or "reverse" in str(s.style) for s in rendered.spans)

    app = Host(store, store.create_patient("Hostile").id, text)
    async with app.run_test() as pilot:
        await pilot.press("g")
        await pilot.pause()
        shown = _shown(app.screen)
        assert any("[bold red]note[/bold red]" in t.plain for t in shown)
        await pilot.press("a")
        await pilot.pause()
    assert app.answers == [True]


class ModelChecker:
    """An engine whose model check adds a flag the rules missed (after ``release`` is set)."""

    loaded = True
    model_label = "TestModel"

    def __init__(self, refusal: str | None = None) -> None:
        self.refusal = refusal
        self.release = threading.Event()
        self.asked: list[str] = []

    def risk_model_refusal(self) -> str | None:
        return self.refusal

    def risk_flags(self, text: str):
        self.asked.append(text)
        self.release.wait(10)
        added = RiskFlag("violence", "low", "", 0, 0, source="model", model_verdict=True)
        return [*assess(text), added], "rules and TestModel"


async def _until(pilot, condition, tries: int = 200) -> None:
    for _ in range(tries):
        if condition():
            return
        await pilot.pause(0.02)
    raise AssertionError("condition not reached")


async def test_model_check_adds_a_flag_and_is_audited(store: Store) -> None:
    pid = store.create_patient("Model").id
    engine = ModelChecker()
    engine.release.set()
    app = Host(store, pid, CLEAN, engine)
    async with app.run_test() as pilot:
        await pilot.press("m")
        await _until(pilot, lambda: isinstance(app.screen, RiskFlagScreen))
        screen = app.screen
        assert [f.source for f in screen.flags] == ["model"]  # the rules found nothing
        assert "(no quoted words: flagged by the model)" in _shown(screen)[0].plain
        assert "Found by rules and TestModel." in str(screen.query_one("#risk-hint").content)
        await pilot.press("a")
        await pilot.pause()
    assert engine.asked == [CLEAN] and app.answers == [True]
    assert app.activity == ["checking for risk with the model…"]
    assert _entries(store)[-1][0] == "risk_acknowledged"


async def test_model_check_can_be_stopped(store: Store) -> None:
    """Stopping the running check (the workspace's Esc) goes back without any screen."""
    engine = ModelChecker()
    app = Host(store, store.create_patient("Stop").id, EN, engine)
    async with app.run_test() as pilot:
        await pilot.press("m")
        await _until(pilot, lambda: engine.asked)
        await pilot.press("x")
        engine.release.set()
        await _until(pilot, lambda: app.answers)
        assert not isinstance(app.screen, RiskFlagScreen)
    assert app.answers == [False] and _entries(store) == []


async def test_refused_model_check_is_the_rules_at_once(store: Store) -> None:
    engine = ModelChecker(refusal="the model is still loading")
    app = Host(store, store.create_patient("Rules").id, ZH, engine)
    async with app.run_test() as pilot:
        await pilot.press("m")
        await pilot.pause()
        assert isinstance(app.screen, RiskFlagScreen)  # no worker, no wait
        assert all(f.source == "rules" for f in app.screen.flags)
        await pilot.press("escape")
        await pilot.pause()
    assert engine.asked == [] and app.answers == [False]


async def test_without_the_model_the_screen_names_rules_and_classifier(store: Store) -> None:
    """The check without a model is rules + the sentence classifier, and the screen says so
    (it used to show no "Found by" line, and the Session said "rules only")."""
    pid = store.create_patient("No model").id
    app = Host(store, pid, EN)  # no assistant: the model is "still loading"
    async with app.run_test() as pilot:
        await pilot.press("m")
        await _until(pilot, lambda: isinstance(app.screen, RiskFlagScreen))
        hint = str(app.screen.query_one("#risk-hint").content)
        assert (
            "Found by rules and the sentence classifier; no model check: the model is still "
            "loading." in hint
        )
