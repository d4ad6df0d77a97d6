"""Issue 18 item 8 in the TUI: a statement whose risk only the sentence classifier finds
(no rule matches) stops the analysis on the risk screen, which quotes that sentence; before
the classifier has loaded, the check runs in the ``risk-check`` worker instead of freezing
the screen (real vault, the TUI tests' fake engine, the real shipped classifier)."""

from __future__ import annotations

import pytest
from textual.widgets import Static

from engine.records import BasicInfo
from engine.settings import Settings, StoreSettings
from engine.trust import risk_classifier
from engine.trust.risk import assess_rules
from engine.vault.store import Store
from phyassist_tui.screens.risk import RiskFlagScreen, flag_heading
from tests.tui import fakes

pytestmark = pytest.mark.anyio

SENTENCES = {
    "english": "Every single day I wake up and the first thing I feel is disappointment "
    "that I'm still here.",
    "chinese": "每天醒来第一个感觉就是失望，怎么还活着。",
}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def tui_settings() -> Settings:
    settings = Settings(store=StoreSettings(scrypt_log2_n=10), idle_lock_minutes=0)
    with Store.create(settings.vault_dir, fakes.PASSPHRASE, settings=settings) as store:
        store.create_patient("Sun", BasicInfo(demographics="19, student"))
    return settings


@pytest.mark.parametrize("loaded", [True, False], ids=["warm", "cold"])
@pytest.mark.parametrize("lang", sorted(SENTENCES))
async def test_risk_screen_quotes_the_classifier_sentence(
    tui_settings: Settings, lang: str, loaded: bool
) -> None:
    from phyassist_tui.app import PhyAssistApp

    sentence = SENTENCES[lang]
    question = f"We talked about her exams. {sentence} Then she asked about sleep."
    assert not assess_rules(question)  # only the classifier can find it
    if loaded:
        risk_classifier.warm_up()
    else:
        risk_classifier._shipped.cache_clear()  # the first check after launch
    fake = fakes.FakeAssistant()
    app = PhyAssistApp(tui_settings, assistant=fake)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await fakes.open_patient(pilot, "Sun")
        await fakes.generate(pilot, screen, question)
        await fakes.wait_for(
            pilot, lambda: isinstance(app.screen, RiskFlagScreen), timeout=30, what="flags"
        )
        risk = app.screen
        assert [(f.source, f.evidence) for f in risk.flags] == [("classifier", sentence)]
        shown = " ".join(str(w.render()) for w in risk.query(Static))
        assert sentence in shown and "classifier" in shown
        assert not [c for c in fake.calls if c.name == "stream_analysis"]
        await pilot.press("a")
        await fakes.wait_for(
            pilot,
            lambda: [c for c in fake.calls if c.name == "stream_analysis"],
            timeout=15,  # a loaded 2-core CI box
            what="analysis after acknowledging",
        )


async def test_with_the_statement_probe_on_the_screen_quotes_its_sentence(
    tui_settings: Settings,
) -> None:
    """``risk_probe`` on in the settings: a statement only the probe finds (a dev post,
    test_risk_probe.py) stops the analysis; the check ran in the worker (the real probe)."""
    from engine.trust.risk import assess
    from phyassist_tui.app import PhyAssistApp
    from tests.engine.trust.test_risk_probe import SHOTGUN

    assert not assess(SHOTGUN, probe=False)  # rules and classifier miss it
    tui_settings.risk_probe = True
    fake = fakes.FakeAssistant()
    app = PhyAssistApp(tui_settings, assistant=fake)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await fakes.open_patient(pilot, "Sun")
        await fakes.generate(pilot, screen, SHOTGUN)
        await fakes.wait_for(
            pilot, lambda: isinstance(app.screen, RiskFlagScreen), timeout=60, what="flags"
        )
        risk = app.screen
        assert [f.source for f in risk.flags] == ["probe"]
        assert "held it for a long time" in risk.flags[0].evidence
        assert "statement_probe" in flag_heading(risk.flags[0]).plain
        shown = " ".join(str(w.render()) for w in risk.query(Static))
        assert "Found by rules, the sentence classifier and the statement probe" in shown
        assert not [c for c in fake.calls if c.name == "stream_analysis"]
