from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.records import AnalysisDraft, Item, Note
from engine.settings import Settings, StoreSettings
from engine.vault.store import Store

PASSPHRASE = "correct horse battery"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(store=StoreSettings(scrypt_log2_n=10), data_dir=tmp_path / "data")


@pytest.fixture
def store(tmp_path: Path, settings: Settings) -> Iterator[Store]:
    with Store.create(tmp_path / "vault", PASSPHRASE, settings=settings) as opened:
        yield opened


def make_note(question: str, symptom: str = "", reasons=(), advice=()) -> Note:
    return Note(
        question=question,
        analysis=AnalysisDraft(
            symptom_type=Item(text=symptom),
            reasons=[Item(text=r) for r in reasons],
            advice=[Item(text=a) for a in advice],
        ),
    )
