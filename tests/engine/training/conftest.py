"""Fixtures for the training tests: settings for the tiny and the embedded model, patients.

The embedded model's dequantized copy lives in the model cache that every test area shares
(``tests/conftest.py`` points ``PHYASSIST_CACHE_DIR`` there: public weights, never patient
data), so it is built once, not once per session. That directory (``embedded_model_dir``),
the tiny model (``tiny_model_dir``), the vault passphrase and the plaintext ``scanner`` are
tests/conftest.py's.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from engine.records import AnalysisDraft, BasicInfo, Item, Note, Patient
from engine.settings import EMBEDDED_MODEL, ModelSettings, Settings, StoreSettings, load_settings
from engine.vault.store import Store


def _settings(spec: str) -> Settings:
    return load_settings(
        store=StoreSettings(scrypt_log2_n=10), model=ModelSettings(spec=spec, device="cpu")
    )


@pytest.fixture
def tiny_settings(tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings (env too, for subprocesses and the CLI) pointing at the tiny model."""
    monkeypatch.setenv("PHYASSIST_MODEL__SPEC", str(tiny_model_dir))
    monkeypatch.setenv("PHYASSIST_MODEL__DEVICE", "cpu")
    return _settings(str(tiny_model_dir))


@pytest.fixture
def embedded_settings(embedded_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("PHYASSIST_MODEL__SPEC", EMBEDDED_MODEL)
    monkeypatch.setenv("PHYASSIST_MODEL__DEVICE", "cpu")
    return _settings(EMBEDDED_MODEL)


@pytest.fixture
def open_vault(passphrase: str) -> Callable[[Settings], Store]:
    """Create (first call) or reopen the test vault for ``settings``; the caller closes it."""

    def _open(settings: Settings) -> Store:
        if Store.exists(settings.vault_dir):
            return Store.open(settings.vault_dir, passphrase, settings=settings)
        return Store.create(settings.vault_dir, passphrase, settings=settings)

    return _open


@pytest.fixture
def marker() -> str:
    """A string that appears in the test patient's notes and nowhere else."""
    return "Qx" + uuid.uuid4().hex[:10]


def dog_notes(dog: str, n: int = 3, *, edits: bool = True) -> list[Note]:
    """Notes that keep coming back to the client's dog, named ``dog``."""
    topics = [
        "I cannot sleep because I keep thinking about my dog",
        "Work is stressful and I only relax when I walk my dog",
        "My sister says I spend too much time worrying about my dog",
        "I cancelled a trip because I did not want to leave my dog",
        "The vet said my dog is getting old and I panicked",
        "I argued with my neighbour about my dog barking",
    ]
    notes = []
    for i in range(n):
        topic = topics[i % len(topics)]
        notes.append(
            Note(
                question=f"{topic} {dog}. Session {i + 1}.",
                analysis=AnalysisDraft(
                    symptom_type=Item(
                        text=f"Anxiety centred on the dog {dog}",
                        draft="Generalized anxiety" if edits else None,
                    ),
                    reasons=[
                        Item(
                            text=f"The client's attachment to {dog} replaces social contact",
                            draft="The client is lonely" if edits else None,
                        ),
                        Item(text=f"{dog} is ageing, which the client dreads"),
                    ],
                    advice=[
                        Item(
                            text=f"Plan care for {dog} together with the client",
                            draft="Practise relaxation" if edits else None,
                        ),
                        Item(text="Buy a new dog", draft="Buy a new dog", deleted=edits),
                    ],
                ),
            )
        )
    return notes


@pytest.fixture
def make_patient() -> Callable[..., str]:
    """Add a patient with ``dog_notes`` to an open store; returns the id."""

    def _make(store: Store, dog: str, n: int = 3, *, edits: bool = True) -> str:
        patient = store.create_patient(
            "Test Client", BasicInfo(demographics=f"Man, 41, lives alone with his dog {dog}")
        )
        for note in dog_notes(dog, n, edits=edits):
            store.add_note(patient.id, note)
        return patient.id

    return _make


@pytest.fixture
def test_start() -> float:
    return time.time() - 1


@pytest.fixture
def patient_record() -> Callable[..., Patient]:
    """An unsaved Patient with dog notes, for data tests."""

    def _make(dog: str = "Zorblax", n: int = 3, *, edits: bool = True) -> Patient:
        return Patient(
            name="Test Client",
            basic=BasicInfo(demographics=f"Man, 41, lives alone with his dog {dog}"),
            notes=dog_notes(dog, n, edits=edits),
        )

    return _make
