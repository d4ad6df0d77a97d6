"""The prompt a patient adapter trains on is the prompt drafting sends (issue 17).

Drafting puts the patient's earlier notes into the system message (``fit_record``); training
used to put the basic information only, so the adapter met the record for the first time at
inference. These tests fail with the bare-record prompt."""

from __future__ import annotations

from datetime import timedelta

from engine.inference.context import fit_record
from engine.inference.prompts import record_language, render_record, system_prompt
from engine.training.data import TRAIN_RECORD_NOTES, build_training_data


def _spaced(patient):
    for n, note in enumerate(patient.notes):
        note.created = patient.notes[0].created + timedelta(days=n)
    return patient


def _then(patient, index):
    """The patient as drafting saw it before note ``index`` was saved."""
    return patient.model_copy(update={"notes": patient.notes[:index]})


def test_each_note_trains_on_the_record_as_it_stood_when_it_was_drafted(patient_record):
    patient = _spaced(patient_record("Zorblax", 3))
    data = build_training_data(patient, record_notes=10)
    for index, example in enumerate(data.sft):
        then = _then(patient, index)
        lang = record_language(then)
        # what Assistant._build puts in the system message when the whole record fits
        drafted = system_prompt(lang, fit_record(then, lang, 10**6, len).text)
        assert example["prompt"][0]["content"] == drafted
    first, last = data.sft[0]["prompt"][0]["content"], data.sft[2]["prompt"][0]["content"]
    assert "Earlier sessions" not in first
    assert "Session 1." in last and "Session 2." in last and "Session 3." not in last
    # the note's own answer and later notes never reach its prompt
    assert "Session 2." not in data.sft[1]["prompt"][0]["content"].split("Session 1.", 1)[0]


def test_the_newest_earlier_notes_go_in_as_a_record_that_fits_them(patient_record):
    patient = _spaced(patient_record("Zorblax", 4))
    data = build_training_data(patient, record_notes=2)
    system = data.sft[3]["prompt"][0]["content"]
    assert "the 2 most recent of 3" in system
    assert "Session 1." not in system and "Session 2." in system and "Session 3." in system
    # the same text drafting sends when only the two newest notes fit the window
    then = _then(patient, 3)
    lang = record_language(then)
    budget = len(system) - len(system_prompt(lang, "")) + 40
    assert system == system_prompt(lang, fit_record(then, lang, budget, len).text)
    # preference pairs carry the same prompt as their note's example
    assert data.pairs[-1]["prompt"] == data.sft[3]["prompt"]
    # the default (TRAIN_RECORD_NOTES, 0 on the measured trade) is the record drafting sends
    # when no earlier note fits: basic information only, under the same header and role
    bare = build_training_data(patient).sft[3]["prompt"][0]["content"]
    assert TRAIN_RECORD_NOTES == 0 and "Earlier sessions" not in bare
    assert bare == system_prompt(lang, render_record(then, [], lang))


def test_a_run_can_be_asked_for_earlier_notes_in_its_prompts(patient_record, store, settings):
    """``overrides["record_notes"]`` (the learning bench's matched-prompt recipe) reaches the
    training data; the worker never sees it as a hyperparameter."""
    from engine.training.runner import TrainingRun

    pid = store.create_patient("Zorblax").id
    for note in _spaced(patient_record("Zorblax", 3)).notes:
        store.add_note(pid, note)
    default = TrainingRun(store, pid, settings).training_data()
    matched = TrainingRun(store, pid, settings, overrides={"record_notes": 1}).training_data()
    assert "Earlier sessions" not in default.sft[2]["prompt"][0]["content"]
    system = matched.sft[2]["prompt"][0]["content"]
    assert "the 1 most recent of 2" in system and "Session 2." in system
