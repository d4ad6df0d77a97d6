"""The audit log is bound to the vault: wiping, cutting or rolling it back is detected
without an anchor, and nothing is appended over a failed tail. Entries survive any text."""

from __future__ import annotations

import json

import pytest

from engine.errors import TamperedFile
from engine.trust import audit as audit_mod
from engine.trust.audit import AuditLog


def _audit_files(vault_dir):
    return sorted((vault_dir / "vault-blobs").glob("audit*"))


def test_wiping_every_audit_file_is_detected(store, reopen, settings) -> None:
    log = AuditLog(store)
    for i in range(3):
        log.append("patient_opened", None, f"#{i}")
    store.close()
    for path in _audit_files(settings.vault_dir):
        path.unlink()
    with reopen() as again:
        result = AuditLog(again).verify()
        assert not result.ok, result.summary()
        assert "audit" in result.summary()
        with pytest.raises(TamperedFile):
            AuditLog(again).append("patient_opened")
        # the refused append wrote nothing: still failing, for every later reader
        assert not AuditLog(again).verify().ok
    with reopen(writer=False) as reader:
        assert not AuditLog(reader).verify().ok


def test_older_segment_without_head_is_refused(store, reopen, settings, monkeypatch) -> None:
    monkeypatch.setattr(audit_mod, "SEGMENT_ENTRIES", 4)
    log = AuditLog(store)
    log.append("unlock")
    segment = settings.vault_dir / "vault-blobs" / "audit%2Fseg-000000.bin"
    old = segment.read_bytes()
    for i in range(2):
        log.append("patient_opened", None, f"#{i}")
    store.close()
    segment.write_bytes(old)
    (settings.vault_dir / "vault-blobs" / "audit%2Fhead.bin").unlink()
    with reopen() as again:
        assert not AuditLog(again).verify().ok
        with pytest.raises(TamperedFile):
            AuditLog(again).append("note_saved")
        assert not AuditLog(again).verify().ok  # the next action did not paper over it


def test_deleted_newest_segment_is_named(store, reopen, settings, monkeypatch) -> None:
    monkeypatch.setattr(audit_mod, "SEGMENT_ENTRIES", 2)
    log = AuditLog(store)
    for i in range(5):
        log.append("patient_opened", None, f"#{i}")
    store.close()
    (settings.vault_dir / "vault-blobs" / "audit%2Fseg-000002.bin").unlink()
    with reopen() as again:
        result = AuditLog(again).verify()
        assert not result.ok and "seg-000002" in result.summary()


@pytest.mark.parametrize("char", ["\u2028", "\u2029", "\u0085", "\x1c", "\x1d", "\x1e", "\r"])
def test_line_separators_in_any_field_keep_the_log_readable(store, reopen, monkeypatch, char):
    monkeypatch.setattr(audit_mod, "current_os_user", lambda: f"odd{char}user")
    log = AuditLog(store)
    log.append("patient_opened", None, f"before{char}after")
    log.append("note_saved", None, "next")
    assert [e.detail for e in log.entries()] == [f"before{char}after", "next"]
    store.close()
    with reopen() as again:
        result = AuditLog(again).verify()
        assert result.ok, result.summary()
        assert AuditLog(again).entries()[0].os_user == f"odd{char}user"
        AuditLog(again).append("lock")
        assert AuditLog(again).verify().count == 3


def test_an_old_log_with_a_raw_u2028_still_reads(store) -> None:
    """Logs written before entries were ASCII hold U+2028 raw inside a JSON string."""
    log = AuditLog(store)
    entry = log.append("patient_opened", None, "a\u2028b")
    raw = json.dumps(
        json.loads(entry.to_line()), ensure_ascii=False, sort_keys=True, separators=(",", ":")
    )
    assert "\u2028" in raw
    store.write_vault_blob("audit/seg-000000", (raw + "\n").encode())
    assert log.verify().ok
    assert log.entries()[0].detail == "a\u2028b"
