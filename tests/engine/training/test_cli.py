"""``phyassist train`` and ``phyassist adapter`` on the tiny model (fast path of the CLI)."""

from __future__ import annotations

import json

import pytest

from phyassist_tui.cli import main

pytestmark = pytest.mark.model


def test_train_list_rollback_export_through_the_cli(
    tiny_settings, open_vault, make_patient, passphrase, monkeypatch, capsys, tmp_path
):
    with open_vault(tiny_settings) as store:
        pid = make_patient(store, "Rex", 1)
    monkeypatch.setenv("PHYASSIST_PASSPHRASE", passphrase)

    for _ in range(2):
        args = ["train", "patient", pid[:8], "--max-steps", "2", "--preference", "none"]
        assert main(args) == 0
    out = capsys.readouterr().out
    assert "Training on 1 notes" in out
    assert "[sft] step 2/2 · loss" in out
    assert "Saved adapter v1" in out and "Saved adapter v2" in out

    assert main(["adapter", "list", pid, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["version"], r["active"]) for r in rows] == [(1, False), (2, True)]
    assert rows[1]["card"]["steps"] == 2

    assert main(["adapter", "rollback", pid, "--yes"]) == 0
    assert "v1 is now active" in capsys.readouterr().out
    assert main(["adapter", "list", pid]) == 0
    listing = capsys.readouterr().out
    assert "* v1" in listing and "  v2" in listing

    # export refuses without a terminal unless --yes, and then writes the active version
    out_dir = tmp_path / "peft"
    assert main(["adapter", "export", pid, "--out", str(out_dir)]) == 1
    assert "Refusing without --yes" in capsys.readouterr().err
    assert not out_dir.exists()
    assert main(["adapter", "export", pid, "--out", str(out_dir), "--yes"]) == 0
    card = json.loads((out_dir / "phyassist_card.json").read_text(encoding="utf-8"))
    assert card["version"] == 1


def test_train_reports_limits_and_unknown_patients(
    tiny_settings, open_vault, make_patient, passphrase, monkeypatch, capsys
):
    with open_vault(tiny_settings) as store:
        pid = make_patient(store, "Rex", 6)
    monkeypatch.setenv("PHYASSIST_PASSPHRASE", passphrase)
    monkeypatch.setenv("PHYASSIST_LIMITS__MAX_TRAINING_TOKENS", "1000")
    assert main(["train", "patient", pid]) == 1
    assert "over the training limit of 1,000" in capsys.readouterr().err
    assert main(["train", "patient", "ffffffff"]) == 1
    assert "No patient id starts with" in capsys.readouterr().err
    assert main(["adapter", "list", pid]) == 0
    assert "No adapter trained yet" in capsys.readouterr().out
