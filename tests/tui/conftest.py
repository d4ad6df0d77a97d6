"""Fixtures for the TUI tests: fast-KDF settings, a fake engine, a real vault on disk."""

from __future__ import annotations

import importlib.util
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from engine.records import AnalysisDraft, BasicInfo, Item, Note
from engine.settings import Settings, StoreSettings


def _load_fakes():
    """``fakes.py`` importable as ``tui_fakes`` (tests run with --import-mode=importlib)."""
    if "tui_fakes" not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            "tui_fakes", Path(__file__).with_name("fakes.py")
        )
        module = importlib.util.module_from_spec(spec)
        sys.modules["tui_fakes"] = module
        spec.loader.exec_module(module)
    return sys.modules["tui_fakes"]


FakeAssistant = _load_fakes().FakeAssistant

PASSPHRASE = _load_fakes().PASSPHRASE
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
