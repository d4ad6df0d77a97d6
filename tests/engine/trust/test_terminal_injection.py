"""Escape sequences and control characters in patient text never reach the terminal raw,
and are kept intact in the encrypted record (nothing the counselor pasted is lost)."""

from __future__ import annotations

import pytest

from engine.errors import InputRejected
from engine.records import Note
from engine.trust.audit import AuditLog

EVIL = "before\x1b]0;pwned\x07\x1b[2J\x1b[31mred\x9b31m\rafter\x1b]52;c;ZXZpbA==\x07 我很难过"


def _cli(monkeypatch, capsys, passphrase, *argv: str) -> tuple[int, str]:
    from phyassist_tui.cli import main

    monkeypatch.setenv("PHYASSIST_PASSPHRASE", passphrase)
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out + out.err


def test_control_characters_are_stored_verbatim(store, reopen) -> None:
    p = store.create_patient("周某")
    store.add_note(p.id, Note(question=EVIL))
    store.close()
    with reopen(writer=False) as ro:
        assert ro.load_patient(p.id).notes[0].question == EVIL


def test_names_with_controls_are_rejected(store) -> None:
    with pytest.raises(InputRejected):
        store.create_patient("evil\x1b[2Jname")


def test_audit_show_is_sanitized(store, monkeypatch, capsys, passphrase) -> None:
    AuditLog(store).append("export", None, EVIL)
    code, out = _cli(monkeypatch, capsys, passphrase, "audit", "show")
    assert code == 0 and "\x1b" not in out and "\x9b" not in out and "\x07" not in out
    assert "before" in out and "我很难过" in out


def test_patients_show_is_sanitized(store, monkeypatch, capsys, passphrase) -> None:
    p = store.create_patient("周某")
    store.add_note(p.id, Note(question=EVIL))
    store.close()
    code, out = _cli(monkeypatch, capsys, passphrase, "patients", "show", p.id)
    assert code == 0 and "我很难过" in out
    assert "\x1b" not in out and "\x9b" not in out and "\x07" not in out and "\r" not in out
