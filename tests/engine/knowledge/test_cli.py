"""``phyassist knowledge build/query/status``: the reference corpus goes into the vault
encrypted, and a lookup finds it."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from phyassist_tui.cli import main

PASSPHRASE = "correct horse battery"
ROWS = [
    ("Exam nerves", "I panic before every exam and cannot sleep.", "Paced breathing.", "anxiety"),
    ("Fights at home", "My parents fight every night.", "Set boundaries.", "family-conflict"),
    ("Lonely at work", "Nobody talks to me at the office.", "Join a group.", "workplace"),
]


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "shared" / "counsel_chat"
    folder.mkdir(parents=True)
    with (folder / "counsel_chat.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(
            ["questionTitle", "questionText", "answerText", "topic", "upvotes", "split"]
        )
        for title, text, answer, topic in ROWS:
            writer.writerow([title, text, answer, topic, "1", "train"])
    return folder.parent


def test_build_puts_the_reference_corpus_in_the_vault_encrypted(
    data_dir: Path, monkeypatch, capsys
):
    monkeypatch.setenv("PHYASSIST_PASSPHRASE", PASSPHRASE)
    monkeypatch.setenv("PHYASSIST_STORE__SCRYPT_LOG2_N", "10")
    assert main(["init"]) == 0
    assert main(["knowledge", "build", "--data", str(data_dir)]) == 0
    assert "3 entries (counselchat 3)" in capsys.readouterr().out
    assert main(["knowledge", "query", "panic before my exam, no sleep", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["source"] == "CounselChat · anxiety"
    from engine.settings import load_settings

    vault = load_settings().vault_dir
    for path in vault.rglob("*"):
        if path.is_file():
            assert b"Paced breathing" not in path.read_bytes()


def test_build_says_what_is_missing(tmp_path: Path, monkeypatch, capsys):
    monkeypatch.setenv("PHYASSIST_PASSPHRASE", PASSPHRASE)
    monkeypatch.setenv("PHYASSIST_STORE__SCRYPT_LOG2_N", "10")
    assert main(["init"]) == 0
    assert main(["knowledge", "build", "--data", str(tmp_path)]) == 1
    assert "found neither counsel_chat/counsel_chat.csv" in capsys.readouterr().err
