"""Correcting the record: basic information, amended notes (earlier versions kept), deleted
notes (tombstones); the patient's training data follows the current text."""

from __future__ import annotations

import pytest

from engine.errors import InputRejected
from engine.records import AnalysisDraft, BasicInfo, Item, Note
from engine.training.data import build_training_data, example_text


def _note(text: str) -> Note:
    return Note(
        question=f"Question {text}",
        analysis=AnalysisDraft(
            symptom_type=Item(text=f"Symptom {text}", draft=f"Symptom {text}"),
            reasons=[Item(text=f"Reason {text}", draft=f"Reason {text}")],
            advice=[Item(text=f"Advice {text}", draft=f"Advice {text}")],
        ),
    )


@pytest.fixture
def two_notes(store):
    patient = store.create_patient("Ann", BasicInfo(demographics="30"))
    store.add_note(patient.id, _note("one"))
    return store.add_note(patient.id, _note("two"))


def test_basic_information_can_be_corrected(store, reopen, two_notes):
    store.update_patient_info(
        two_notes.id, name="Ann B.", basic=BasicInfo(demographics="31, teacher")
    )
    store.close()
    with reopen(writer=False) as again:
        loaded = again.load_patient(two_notes.id)
        assert loaded.name == "Ann B." and loaded.basic.demographics == "31, teacher"
        assert len(loaded.notes) == 2
        assert again.get_summary(two_notes.id).name == "Ann B."


def test_amending_a_note_keeps_the_earlier_version_with_time_and_reason(
    store, reopen, two_notes, vault_dir
):
    first = two_notes.notes[0]
    amended = first.analysis.model_copy(deep=True)
    amended.reasons[0].text = "Reason corrected"
    store.amend_note(two_notes.id, first.id, analysis=amended, reason="typo in reason")
    store.amend_note(two_notes.id, first.id, question="Question one, clarified")
    store.close()
    with reopen(writer=False) as again:
        note = again.load_patient(two_notes.id).notes[0]
    assert note.id == first.id and note.created == first.created
    assert note.question == "Question one, clarified"
    assert note.analysis.reasons[0].text == "Reason corrected"
    assert note.analysis.reasons[0].draft == "Reason one"  # the model's original stays
    assert [v.reason for v in note.versions] == ["typo in reason", ""]
    assert note.versions[0].analysis.reasons[0].text == "Reason one"
    assert note.versions[0].written == first.created
    assert note.versions[1].written == note.versions[0].replaced
    assert note.amended is not None and note.amended >= note.versions[1].replaced
    for path in vault_dir.rglob("*"):  # earlier versions are encrypted like the rest
        if path.is_file():
            assert b"Reason one" not in path.read_bytes()
            assert b"typo in reason" not in path.read_bytes()


def test_an_amendment_that_changes_nothing_or_empties_the_question_is_refused(store, two_notes):
    note = two_notes.notes[0]
    with pytest.raises(InputRejected, match="changes nothing"):
        store.amend_note(two_notes.id, note.id, question=note.question)
    with pytest.raises(InputRejected, match="statement"):
        store.amend_note(two_notes.id, note.id, question="  ")
    assert store.load_patient(two_notes.id).notes[0].versions == []


def test_deleting_a_note_leaves_a_tombstone_only(store, reopen, two_notes, vault_dir):
    first = two_notes.notes[0]
    store.delete_note(two_notes.id, first.id, reason="wrong client")
    with pytest.raises(InputRejected, match="deleted"):
        store.amend_note(two_notes.id, first.id, question="again")
    store.close()
    with reopen(writer=False) as again:
        loaded = again.load_patient(two_notes.id)
        assert [n.question for n in loaded.notes] == ["Question two"]
        (tomb,) = loaded.deleted_notes
        assert tomb.id == first.id and tomb.reason == "wrong client"
        assert tomb.created == first.created
        assert again.get_summary(two_notes.id).note_count == 1
        assert "Question one" not in loaded.model_dump_json()


def test_training_data_follows_the_amended_text_and_skips_deleted_notes(store, two_notes):
    first, second = two_notes.notes
    amended = first.analysis.model_copy(deep=True)
    amended.advice[0].text = "Advice amended"
    store.amend_note(two_notes.id, first.id, analysis=amended)
    store.delete_note(two_notes.id, second.id)
    data = build_training_data(store.load_patient(two_notes.id))
    texts = [example_text(e) for e in data.sft]
    assert len(texts) == 1
    assert "Advice amended" in texts[0] and "Advice one" not in texts[0]
    assert not any("Question two" in t for t in texts)
    assert data.pairs  # the counselor's change (model's "Advice one" -> amended) is a pair
