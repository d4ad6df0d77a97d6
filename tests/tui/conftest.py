"""Fixtures for the TUI tests: fast-KDF settings, a fake engine, a real vault on disk."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from engine.records import AnalysisDraft, BasicInfo, Item, Note
from engine.settings import Settings, StoreSettings
from tests.tui.fakes import PASSPHRASE, FakeAssistant

FIXED_DATE = datetime(2026, 3, 14, 9, 30, tzinfo=UTC)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def utc_clock(monkeypatch: pytest.MonkeyPatch):
    """Render dates in UTC so snapshots do not depend on the machine's zone."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.fixture
def settings() -> Settings:
    return Settings(store=StoreSettings(scrypt_log2_n=10), idle_lock_minutes=0)


@pytest.fixture
def fake() -> FakeAssistant:
    return FakeAssistant()


@pytest.fixture
def make_app(settings: Settings, fake: FakeAssistant) -> Callable:
    from phyassist_tui.app import PhyAssistApp

    def make(**kwargs):
        kwargs.setdefault("assistant", fake)
        return PhyAssistApp(kwargs.pop("settings", settings), **kwargs)

    return make


@pytest.fixture
def vault(settings: Settings):
    """A real vault on disk (in the isolated PHYASSIST_HOME) with two patients."""
    from engine.vault.store import Store

    store = Store.create(settings.vault_dir, PASSPHRASE, settings=settings)
    sun = store.create_patient(
        "Sun",
        BasicInfo(demographics="19, student", mental_state="mild anxiety, insomnia"),
    )
    store.create_patient("Li", BasicInfo(demographics="35, engineer"))
    note = Note(
        created=FIXED_DATE,
        question="I cannot focus on studying since the exam.",
        observed_state="Tired, anxious.",
        analysis=AnalysisDraft(
            symptom_type=Item(text="Academic anxiety", draft="Academic anxiety"),
            reasons=[Item(text="Family expectations", draft="Family expectations")],
            advice=[Item(text="Sleep hygiene", draft="Sleep hygiene")],
        ),
    )
    store.add_note(sun.id, note)
    store.close()
    return settings.vault_dir
