"""`phyassist patients show/list/edit/amend/history/delete-note` and `adapter list` counts."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from engine.records import AnalysisDraft, Item, Note
from engine.settings import load_settings
from engine.vault.store import Store
from phyassist_tui.cli import main

PASS = "clinic passphrase"


@pytest.fixture(autouse=True)
def cheap_kdf(monkeypatch):
    monkeypatch.setenv("PHYASSIST_STORE__SCRYPT_LOG2_N", "10")
    monkeypatch.setenv("PHYASSIST_PASSPHRASE", PASS)


def _note(text: str, day: int) -> Note:
    return Note(
        created=datetime(2026, 3, day, 9, tzinfo=UTC),
        question=f"Question {text}",
        analysis=AnalysisDraft(
            symptom_type=Item(text=f"Symptom {text}", draft=f"Symptom {text}"),
            reasons=[Item(text=f"Reason {text}", draft=f"Reason {text}")],
            advice=[Item(text=f"Advice {text}", draft=f"Advice {text}")],
        ),
    )


@pytest.fixture
def patient_id(capsys):
    assert main(["init"]) == 0
    settings = load_settings()
    with Store.open(settings.vault_dir, PASS, settings=settings) as store:
        patient = store.create_patient("Ann")
        store.add_note(patient.id, _note("one", 1))
        store.add_note(patient.id, _note("two", 2))
    capsys.readouterr()
    return patient.id


def test_show_numbers_notes_oldest_first(patient_id, capsys):
    assert main(["patients", "show", patient_id[:8]]) == 0
    out = capsys.readouterr().out
    assert out.index("## Note 1 — 2026-03-01") < out.index("## Note 2 — 2026-03-02")


def test_long_names_are_cut_with_an_ellipsis_in_the_list(patient_id, capsys):
    long_name = "Maximilian " * 12
    assert main(["patients", "edit", patient_id[:8], "--name", long_name]) == 0
    capsys.readouterr()
    assert main(["patients", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and "…" in lines[1]
    assert len(lines[1]) <= 10 + 30 + 2 + 16 + 2 + 5 + 2 + 3


def test_edit_amend_history_and_delete_a_note(patient_id, capsys):
    assert main(["patients", "edit", patient_id[:8], "--demographics", "31, teacher"]) == 0
    assert (
        main(
            [
                "patients",
                "amend",
                patient_id[:8],
                "1",
                "--advice",
                "Advice corrected",
                "--advice",
                "Walk daily",
                "--why",
                "missed in session",
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert main(["patients", "show", patient_id[:8]]) == 0
    out = capsys.readouterr().out
    assert "31, teacher" in out and "Walk daily" in out and "amended" in out
    assert main(["patients", "history", patient_id[:8], "1"]) == 0
    out = capsys.readouterr().out
    assert "Version 1" in out and "missed in session" in out and "Advice one" in out
    assert (
        main(["patients", "delete-note", patient_id[:8], "2", "--why", "duplicate", "--yes"]) == 0
    )
    capsys.readouterr()
    assert main(["patients", "show", patient_id[:8]]) == 0
    out = capsys.readouterr().out
    assert "Question two" not in out and "was deleted" in out and "duplicate" in out
    assert main(["patients", "history", patient_id[:8], "2"]) == 1  # renumbered: only 1 left
    assert "has 1 note" in capsys.readouterr().err


def test_adapter_list_counts_the_record_as_it_is_now(patient_id, capsys):
    settings = load_settings()
    with Store.open(settings.vault_dir, PASS, settings=settings) as store:
        note = store.load_patient(patient_id).notes[0]
        edited = note.analysis.model_copy(deep=True)
        edited.reasons[0].text = "Reason edited"
        edited.advice[0].deleted = True
        edited.advice.append(Item(text="Own advice"))
        store.amend_note(patient_id, note.id, analysis=edited)
    assert main(["adapter", "list", patient_id[:8]]) == 0
    out = capsys.readouterr().out
    assert "2 notes, 3 edits" in out
