"""Compare: both drafts of one statement, the counselor's pick stored as preference pairs."""

from __future__ import annotations

import threading

import pytest

from engine.errors import AdapterNotFound
from engine.inference.analysis import parse_analysis
from engine.inference.compare import (
    DraftPair,
    compare_drafts,
    take_items,
    take_whole,
)
from engine.inference.stream import TextStream
from engine.session import Session
from engine.training.data import build_training_data
from engine.trust.audit import AuditLog

DOMAIN = "Symptom type: Depression\nReasons:\n1. Poor sleep\nAdvice:\n1. You are not alone"
PATIENT = (
    'Symptom type: Low mood\nReasons:\n1. "I barely sleep"\nAdvice:\n1. Walk daily\n'
    "2. Homework: a mood diary"
)


class FakeAssistant:
    """Drafts by adapter: what the engine would stream, without a model."""

    model_label = "M"

    def __init__(self, has_adapter: bool = True) -> None:
        self.active_adapter: str | None = None
        self.has_adapter = has_adapter
        self.last_adapter_error: str | None = None
        self.calls: list[str | None] = []

    def use_patient(self, patient, store=None) -> str:
        if patient is not None and store is not None and self.has_adapter:
            self.active_adapter = "domain+patient-abc-v2"
            return "M · domain + adapter v2"
        self.active_adapter = "domain"
        return "M · domain adapter"

    def stream_analysis(self, patient, question, *, cancel, observed=""):
        self.calls.append(self.active_adapter)
        text = PATIENT if "patient" in (self.active_adapter or "") else DOMAIN
        return TextStream(iter([text]))  # no draft_of: the tolerant parser reads it


def test_compare_makes_both_drafts_and_restores_the_patient_adapter(real_store):
    patient = real_store.create_patient("Compare")
    fake = FakeAssistant()
    pair = compare_drafts(fake, patient, real_store, "I barely sleep", cancel=threading.Event())
    assert (pair.left_from, pair.right_from) == ("domain adapter", "domain + adapter v2")
    assert pair.left.symptom_type.text == "Depression"
    assert pair.right.symptom_type.text == "Low mood"
    assert fake.active_adapter == "domain+patient-abc-v2"  # back on the patient's adapter
    assert pair.rows() == [("symptom_type", 0), ("reasons", 0), ("advice", 0), ("advice", 1)]
    with pytest.raises(AdapterNotFound):
        compare_drafts(FakeAssistant(False), patient, real_store, "q", cancel=threading.Event())


def _pair() -> DraftPair:
    return DraftPair(
        "I barely sleep", "", parse_analysis(DOMAIN), parse_analysis(PATIENT), "domain", "v2"
    )


def test_take_whole_and_items_become_encrypted_audited_preference_pairs(real_store):
    patient = real_store.create_patient("Compare")
    pair = _pair()
    draft, whole = take_whole(pair, "right")
    assert draft.symptom_type.text == "Low mood" and draft.symptom_type.draft == "Low mood"
    assert [c.section for c in whole] == ["whole"]
    assert whole[0].chosen.startswith("Symptom type: Low mood")
    assert whole[0].rejected.startswith("Symptom type: Depression")

    # per item: the domain's symptom type, the patient adapter's reasons and advice
    draft, items = take_items(pair, {("symptom_type", 0): "left", ("advice", 1): "right"})
    assert draft.symptom_type.text == "Depression"
    assert [i.text for i in draft.advice] == ["Walk daily", "Homework: a mood diary"]
    assert [c.section for c in items] == ["symptom_type", "advice"]
    assert "Homework" not in items[1].rejected and "Homework" in items[1].chosen
    assert items[0].chosen_from == "domain" and items[0].rejected_from == "v2"

    session = Session.over(real_store, real_store.settings, origin="tui")
    assert session.record_preferences(patient.id, [*whole, *items]) == 3
    stored = real_store.load_patient(patient.id)
    assert len(stored.preferences) == 3
    data = build_training_data(stored)
    assert data.signals["choices"] == 3 and len(data.pairs) == 3
    entry = AuditLog(real_store).entries(patient.id)[-1]
    assert entry.action == "preference_recorded"
    assert "3 choice(s)" in entry.detail and "Low mood" not in entry.detail
    # nothing readable on disk
    files = [p for p in real_store.vault_dir.rglob("*") if p.is_file()]
    assert files and not any(b"a mood diary" in p.read_bytes() for p in files)


def test_each_side_says_where_its_quotes_come_from(real_store):
    """An adapter that quotes an earlier note as if said today is named on its side."""
    from engine.records import Note

    patient = real_store.create_patient("Compare")
    patient = real_store.add_note(patient.id, Note(question="I barely sleep at night."))
    pair = compare_drafts(
        FakeAssistant(), patient, real_store, "Nothing helps me rest.", cancel=threading.Event()
    )
    assert pair.left_caveat == "" and pair.caveat("left") == ""
    assert pair.right_caveat == pair.caveat("right")
    assert "Reason 1 quotes" in pair.right_caveat and "not this statement" in pair.right_caveat
