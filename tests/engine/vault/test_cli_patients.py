"""`phyassist init / passwd / patients / index` end to end through the CLI dispatcher."""

from __future__ import annotations

import io
import json

import pytest

from phyassist_tui.cli import main
from tests.support import REPO


@pytest.fixture(autouse=True)
def cheap_kdf(monkeypatch):
    monkeypatch.setenv("PHYASSIST_STORE__SCRYPT_LOG2_N", "10")


def _stdin(monkeypatch, text: str) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(text))


def test_init_asks_twice_and_rejects_mismatch(monkeypatch, capsys):
    _stdin(monkeypatch, "first passphrase\nsecond passphrase\n")
    assert main(["init"]) == 1
    assert "differ" in capsys.readouterr().err
    _stdin(monkeypatch, "same passphrase\nsame passphrase\n")
    assert main(["init"]) == 0
    assert "Created an encrypted vault" in capsys.readouterr().out
    _stdin(monkeypatch, "same passphrase\nsame passphrase\n")
    assert main(["init"]) == 1
    assert "already exists" in capsys.readouterr().err


def test_init_rejects_short_passphrase(monkeypatch, capsys):
    monkeypatch.setenv("PHYASSIST_PASSPHRASE", "short")
    assert main(["init"]) == 1
    assert "at least 8" in capsys.readouterr().err


def test_patients_workflow(monkeypatch, capsys):
    monkeypatch.setenv("PHYASSIST_PASSPHRASE", "clinic passphrase")
    assert main(["init"]) == 0
    assert main(["patients", "list"]) == 0
    assert "No patients." in capsys.readouterr().out
    assert main(["patients", "add", "孙某"]) == 0
    sun = capsys.readouterr().out.strip()
    assert main(["patients", "add", "Anna Lee"]) == 0
    anna = capsys.readouterr().out.strip()

    assert main(["patients", "list"]) == 0
    listing = capsys.readouterr().out
    assert "孙某" in listing and "Anna Lee" in listing and sun[:8] in listing

    assert main(["patients", "search", "anna", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["id"] for r in rows] == [anna]

    assert main(["patients", "search", "孙"]) == 0
    out = capsys.readouterr().out
    assert "孙某" in out and "Anna" not in out

    assert main(["patients", "show", sun[:6]]) == 0
    assert "# 孙某" in capsys.readouterr().out
    assert main(["patients", "show", sun, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["name"] == "孙某"
    assert main(["patients", "show", "ffffffffff"]) == 1
    assert "No patient" in capsys.readouterr().err

    assert main(["index", "rebuild"]) == 0
    assert "2 patient(s)" in capsys.readouterr().out

    assert main(["patients", "delete", anna[:8]]) == 1  # stdin is not a terminal, no --yes
    assert "--yes" in capsys.readouterr().err
    assert main(["patients", "delete", anna[:8], "--yes"]) == 0
    capsys.readouterr()
    assert main(["patients", "list", "--json"]) == 0
    assert [r["id"] for r in json.loads(capsys.readouterr().out)] == [sun]


def test_wrong_passphrase_and_passwd(monkeypatch, capsys):
    monkeypatch.setenv("PHYASSIST_PASSPHRASE", "clinic passphrase")
    assert main(["init"]) == 0
    assert main(["patients", "add", "王伟"]) == 0
    monkeypatch.setenv("PHYASSIST_PASSPHRASE", "wrong passphrase")
    assert main(["patients", "list"]) == 1
    assert "Wrong passphrase" in capsys.readouterr().err

    monkeypatch.setenv("PHYASSIST_PASSPHRASE", "clinic passphrase")
    monkeypatch.setenv("PHYASSIST_NEW_PASSPHRASE", "new clinic passphrase")
    assert main(["passwd"]) == 0
    assert "Passphrase changed" in capsys.readouterr().out
    assert main(["patients", "list"]) == 1
    monkeypatch.setenv("PHYASSIST_PASSPHRASE", "new clinic passphrase")
    assert main(["patients", "list"]) == 0
    assert "王伟" in capsys.readouterr().out


def test_no_vault_yet(monkeypatch, capsys):
    monkeypatch.setenv("PHYASSIST_PASSPHRASE", "clinic passphrase")
    assert main(["patients", "list"]) == 1
    assert "phyassist init" in capsys.readouterr().err


def test_console_entry_point_end_to_end(isolated_home):
    """The real process: `python -m phyassist_tui init`, `patients add`, `patients list`."""
    import os
    import subprocess
    import sys

    repo = REPO
    env = dict(
        os.environ,
        PYTHONPATH=str(repo),
        PHYASSIST_PASSPHRASE="clinic passphrase",
        PHYASSIST_STORE__SCRYPT_LOG2_N="10",
    )

    def phyassist(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "phyassist_tui", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    assert phyassist("init").returncode == 0
    added = phyassist("patients", "add", "孙某")
    assert added.returncode == 0, added.stderr
    listed = phyassist("patients", "list")
    assert listed.returncode == 0, listed.stderr
    assert "孙某" in listed.stdout
    assert (isolated_home / "data" / "vault" / "vault.json").is_file()


def test_show_never_prints_control_characters(monkeypatch, capsys):
    """Pasted statements keep their bytes in the vault but never reach the terminal raw."""
    from engine.records import Note
    from engine.settings import load_settings
    from engine.vault.store import Store

    monkeypatch.setenv("PHYASSIST_PASSPHRASE", "clinic passphrase")
    evil = "前\x1b]0;pwned\x07\x1b[2J\x9b31m\r后\u202e我很难过"
    settings = load_settings()
    with Store.create(settings.vault_dir, "clinic passphrase", settings=settings) as store:
        patient = store.create_patient("周某")
        store.add_note(patient.id, Note(question=evil))
    for args in (["patients", "show", patient.id], ["patients", "show", patient.id, "--json"]):
        assert main(args) == 0
        out = capsys.readouterr().out
        assert "我很难过" in out
        for bad in ("\x1b", "\x07", "\x9b", "\r", "\u202e"):
            assert bad not in out
    assert main(["patients", "show", patient.id, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["notes"][0]["question"] == evil
