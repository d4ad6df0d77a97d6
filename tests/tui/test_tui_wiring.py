"""The workspace wiring: risk flags before analysis, and audit entries for opening a patient,
acknowledging flags and saving a note (real vault, the TUI tests' fake engine)."""

from __future__ import annotations

import pytest

from engine.records import BasicInfo
from engine.settings import Settings, StoreSettings
from engine.trust.audit import AuditLog
from engine.trust.risk import assess, risk_audit_detail
from engine.vault.store import Store
from phyassist_tui.screens.risk import RiskFlagScreen
from tests.tui import fakes

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def tui_settings() -> Settings:
    settings = Settings(store=StoreSettings(scrypt_log2_n=10), idle_lock_minutes=0)
    with Store.create(settings.vault_dir, fakes.PASSPHRASE, settings=settings) as store:
        store.create_patient("Sun", BasicInfo(demographics="19, student"))
    return settings


def _log(settings: Settings) -> list[tuple[str, str | None, str]]:
    with Store.open(settings.vault_dir, fakes.PASSPHRASE, writer=False, settings=settings) as s:
        assert AuditLog(s).verify().ok
        return [(e.action, e.patient_id, e.detail) for e in AuditLog(s).entries()]


@pytest.mark.parametrize(
    "question",
    [
        "Since the exam I cannot focus. Last week I thought about killing myself.",
        "考试以后我一直睡不好，有时候想自杀。",
    ],
    ids=["english", "chinese"],
)
async def test_flags_come_before_analysis_and_everything_is_audited(
    tui_settings: Settings, question: str
) -> None:
    from phyassist_tui.app import PhyAssistApp
    from phyassist_tui.widgets.draft_pane import DraftPane

    fake = fakes.FakeAssistant()
    app = PhyAssistApp(tui_settings, assistant=fake)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await fakes.open_patient(pilot, "Sun")
        pid = screen.patient.id
        await fakes.generate(pilot, screen, question)
        await fakes.wait_for(pilot, lambda: isinstance(app.screen, RiskFlagScreen), what="flags")
        await pilot.press("escape")  # cancel: no generation at all
        await fakes.wait_for(pilot, lambda: app.screen is screen, what="back to workspace")
        assert screen.generating is None
        assert not [c for c in fake.calls if c.name == "stream_analysis"]

        await pilot.press("ctrl+g")
        await fakes.wait_for(pilot, lambda: isinstance(app.screen, RiskFlagScreen), what="flags")
        await pilot.press("a")
        pane = screen.query_one(DraftPane)
        await fakes.wait_for(
            pilot, lambda: pane.draft is not None and screen.generating is None, what="draft"
        )
        assert [c.name for c in fake.calls].count("stream_analysis") == 1
        await pilot.press("ctrl+s")
        await fakes.wait_for(pilot, lambda: len(screen.patient.notes) == 1, what="note saved")
        await pilot.pause()
    detail = risk_audit_detail(assess(question))
    assert _log(tui_settings) == [
        ("unlock", None, "tui"),
        ("patient_opened", pid, "tui"),
        ("risk_flagged", pid, detail),  # shown, then cancelled with Esc
        ("risk_cancelled", pid, detail),
        ("risk_flagged", pid, detail),  # shown again, then acknowledged
        ("risk_acknowledged", pid, detail),
        ("note_saved", pid, "tui"),
    ]


async def test_a_statement_without_flags_goes_straight_to_analysis(tui_settings) -> None:
    from phyassist_tui.app import PhyAssistApp
    from phyassist_tui.widgets.draft_pane import DraftPane

    app = PhyAssistApp(tui_settings, assistant=fakes.FakeAssistant())
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await fakes.open_patient(pilot, "Sun")
        await fakes.generate(pilot, screen, "Since the exam I cannot focus at all.")
        pane = screen.query_one(DraftPane)
        await fakes.wait_for(pilot, lambda: pane.draft is not None, what="draft")
    assert [a for a, _, _ in _log(tui_settings)] == ["unlock", "patient_opened"]


async def test_session_audits_unlock_failures_new_patients_and_the_lock(tui_settings) -> None:
    """The Session writes the entries no front end may forget: a wrong passphrase (counted
    at the next unlock: the log is encrypted), a patient created in the TUI (the CLI always
    audited it, the TUI did not), and the lock."""
    from textual.widgets import TextArea

    from phyassist_tui.app import PhyAssistApp
    from phyassist_tui.screens.new_patient import NewPatientScreen
    from phyassist_tui.screens.unlock import UnlockScreen

    app = PhyAssistApp(tui_settings, assistant=fakes.FakeAssistant())
    async with app.run_test(size=(120, 40)) as pilot:
        await fakes.unlock(pilot, "not the passphrase")
        await fakes.wait_for(
            pilot,
            lambda: "Wrong passphrase" in str(app.screen.query_one("#unlock-error").render()),
            what="wrong passphrase",
        )
        screen = await fakes.open_workspace(pilot)
        await pilot.press("ctrl+n")
        form = await fakes.wait_for(
            pilot, lambda: isinstance(app.screen, NewPatientScreen) and app.screen
        )
        await fakes.type_text(pilot, "Wang")
        form.query_one("#field-demographics", TextArea).load_text("28, teacher")
        await pilot.press("ctrl+s")
        await fakes.wait_for(
            pilot, lambda: screen.patient is not None and screen.patient.name == "Wang"
        )
        wang = screen.patient.id
        await pilot.press("ctrl+l")
        await fakes.wait_for(pilot, lambda: isinstance(app.screen, UnlockScreen), what="locked")
    assert _log(tui_settings) == [
        ("unlock_failed", None, "1 failed attempt(s)"),
        ("unlock", None, "tui"),
        ("patient_created", wang, "tui"),
        ("lock", None, "tui"),
    ]
