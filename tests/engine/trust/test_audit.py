"""Audit log: appends chain; removal, edits, reordering and truncation are all detected."""

from __future__ import annotations

import itertools
import json

import pytest

from engine.errors import InputRejected, ReadOnlyVault, TamperedFile
from engine.trust import audit as audit_mod
from engine.trust.audit import GENESIS_HASH, AuditEntry, AuditLog, current_os_user


def _fill(log: AuditLog, n: int, pid: str = "ab" * 16) -> list[AuditEntry]:
    actions = ["unlock", "patient_opened", "note_saved", "adapter_trained", "export"]
    return [
        log.append(actions[i % len(actions)], pid if i % 2 else None, f"#{i}") for i in range(n)
    ]


def _seg(store, index: int) -> list[dict]:
    raw = store.read_vault_blob(f"audit/seg-{index:06d}")
    return [json.loads(line) for line in raw.decode().splitlines() if line]


def _put_seg(store, index: int, rows: list[dict]) -> None:
    body = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    store.write_vault_blob(f"audit/seg-{index:06d}", body.encode())


def test_append_and_verify(store) -> None:
    log = AuditLog(store)
    assert log.verify().ok and log.verify().count == 0
    written = _fill(log, 7)
    assert written[0].prev_hash == GENESIS_HASH
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(written))
    entries = log.entries()
    assert entries == written
    assert entries[0].os_user == current_os_user()
    result = log.verify()
    assert result.ok, result.problems
    assert result.count == 7 and result.head_count == 7 and result.head_hash == written[-1].hash
    # per-patient filter
    assert [e.seq for e in log.entries(patient_id="ab" * 16)] == [1, 3, 5]


def test_survives_reopen_and_spans_segments(store, reopen, monkeypatch) -> None:
    monkeypatch.setattr(audit_mod, "SEGMENT_ENTRIES", 4)
    log = AuditLog(store)
    _fill(log, 10)
    assert store.list_vault_blobs("audit/seg-") == [f"audit/seg-{i:06d}" for i in range(3)]
    store.close()
    with reopen(writer=False) as ro:
        ro_log = AuditLog(ro)
        assert [e.seq for e in ro_log.entries()] == list(range(10))
        assert ro_log.verify().ok
        with pytest.raises(ReadOnlyVault):
            ro_log.append("unlock")


def test_chinese_detail_and_bad_input(store) -> None:
    log = AuditLog(store)
    log.append("risk_acknowledged", "cd" * 16, "类别：自杀/自伤，严重程度：高")
    assert log.entries()[0].detail.startswith("类别")
    with pytest.raises(InputRejected):
        log.append("Drop Table")
    with pytest.raises(InputRejected):
        log.append("note_saved", patient_id="../../etc")


def test_edited_entry_detected(store) -> None:
    log = AuditLog(store)
    _fill(log, 5)
    rows = _seg(store, 0)
    rows[2]["detail"] = "nothing to see"
    _put_seg(store, 0, rows)
    result = log.verify()
    assert not result.ok and result.first_bad_seq == 2
    assert "edited" in result.summary()


def test_edit_with_recomputed_hash_breaks_chain(store) -> None:
    """Someone who recomputes the edited entry's hash still breaks the link to the next."""
    log = AuditLog(store)
    _fill(log, 5)
    rows = _seg(store, 0)
    e = AuditEntry(**{**rows[2], "patient_id": "ee" * 16})
    rows[2] = {**rows[2], "patient_id": e.patient_id, "hash": e.compute_hash()}
    _put_seg(store, 0, rows)
    result = log.verify()
    assert not result.ok and result.first_bad_seq == 3
    assert "does not follow" in result.summary()


def test_removed_entry_detected(store) -> None:
    log = AuditLog(store)
    _fill(log, 6)
    rows = _seg(store, 0)
    del rows[3]
    _put_seg(store, 0, rows)
    result = log.verify()
    assert not result.ok and result.first_bad_seq == 3
    assert "removed" in result.summary()


def test_reordered_entries_detected(store) -> None:
    log = AuditLog(store)
    _fill(log, 6)
    rows = _seg(store, 0)
    rows[1], rows[2] = rows[2], rows[1]
    _put_seg(store, 0, rows)
    result = log.verify()
    assert not result.ok and result.first_bad_seq == 1


def test_truncated_tail_detected_and_append_refused(store) -> None:
    log = AuditLog(store)
    _fill(log, 6)
    _put_seg(store, 0, _seg(store, 0)[:4])  # drop the two newest entries, chain stays valid
    result = log.verify()
    assert not result.ok and result.first_bad_seq == 4
    assert "cut short" in result.summary()
    with pytest.raises(TamperedFile):
        log.append("unlock")


def test_deleted_segment_detected(store, monkeypatch) -> None:
    monkeypatch.setattr(audit_mod, "SEGMENT_ENTRIES", 3)
    log = AuditLog(store)
    _fill(log, 8)
    store.delete_vault_blob("audit/seg-000001")
    result = log.verify()
    assert not result.ok and result.first_bad_seq == 3
    store.delete_vault_blob("audit/seg-000002")  # now the newest segment is gone too
    assert not log.verify().ok


def test_deleted_head_detected(store) -> None:
    log = AuditLog(store)
    _fill(log, 3)
    store.delete_vault_blob("audit/head")
    result = log.verify()
    assert not result.ok and "head is missing" in result.summary()


def test_raw_file_tamper_detected(store) -> None:
    """Flipping a byte of the encrypted segment fails authentication, reported not raised."""
    log = AuditLog(store)
    _fill(log, 3)
    path = store.vault_dir / "vault-blobs" / "audit%2Fseg-000000.bin"
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x01
    path.write_bytes(bytes(data))
    result = log.verify()
    assert not result.ok and "cannot be read" in result.summary()


def test_crash_between_segment_and_head_is_a_note(store) -> None:
    """Segment written, head not: the extra entry chains, verify passes with a note."""
    log = AuditLog(store)
    _fill(log, 3)
    old_head = store.read_vault_blob("audit/head")
    log.append("note_saved", "ab" * 16)
    store.write_vault_blob("audit/head", old_head)  # as if the process died before the head
    result = log.verify()
    assert result.ok and result.count == 4 and result.notes
    log.append("unlock")  # the next append absorbs it
    assert log.verify().ok and log.verify().head_count == 5


def test_anchor(store) -> None:
    log = AuditLog(store)
    entries = _fill(log, 4)
    assert log.verify(anchor=entries[1].hash).ok
    assert not log.verify(anchor="f" * 64).ok


def test_appends_rewrite_only_the_newest_segment(store, monkeypatch) -> None:
    """Cheap appends: old segments are written once, never again."""
    monkeypatch.setattr(audit_mod, "SEGMENT_ENTRIES", 4)
    writes: list[str] = []
    real = store.write_vault_blob
    monkeypatch.setattr(store, "write_vault_blob", lambda k, d: (writes.append(k), real(k, d)))
    log = AuditLog(store)
    _fill(log, 12)
    segs = [k for k in writes if k.startswith("audit/seg-")]
    assert segs.count("audit/seg-000000") == 4
    assert segs.count("audit/seg-000002") == 4
    assert writes.count("audit/head") == 12


# -- the CLI -----------------------------------------------------------------------------


def _cli(monkeypatch, capsys, passphrase, *argv: str) -> tuple[int, str, str]:
    from phyassist_tui.cli import main

    monkeypatch.setenv("PHYASSIST_PASSPHRASE", passphrase)
    monkeypatch.setenv("PHYASSIST_STORE__SCRYPT_LOG2_N", "10")
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_show_and_verify(store, monkeypatch, capsys, passphrase) -> None:
    log = AuditLog(store)
    pid = "ab" * 16
    log.append("patient_opened", pid)
    log.append("note_saved", pid, "note 1\x1b[2J")
    log.append("export", "cd" * 16)
    code, out, _ = _cli(monkeypatch, capsys, passphrase, "audit", "show")
    assert code == 0 and out.count("\n") == 3 and "\x1b" not in out
    code, out, _ = _cli(monkeypatch, capsys, passphrase, "audit", "show", "--patient", "abab")
    assert code == 0 and out.count("\n") == 2 and "cdcd" not in out
    code, out, _ = _cli(monkeypatch, capsys, passphrase, "audit", "verify")
    assert code == 0 and "intact: 3 entries" in out

    rows = _seg(store, 0)
    del rows[1]
    _put_seg(store, 0, rows)
    code, _, err = _cli(monkeypatch, capsys, passphrase, "audit", "verify")
    assert code == 1 and "#1" in err
    code, out, _ = _cli(monkeypatch, capsys, passphrase, "audit", "verify", "--json")
    assert code == 1 and json.loads(out)["first_bad_seq"] == 1


def test_cli_wrong_passphrase(store, monkeypatch, capsys) -> None:
    AuditLog(store).append("unlock")
    code, _, err = _cli(monkeypatch, capsys, "not the passphrase", "audit", "verify")
    assert code == 1 and "Wrong passphrase" in err


def test_crash_before_first_head_is_a_note(store, monkeypatch) -> None:
    """A kill between the very first segment write and the first head leaves one entry and no
    head (the vault never bound one): verify notes it, the next append goes on from it."""
    real_write = store.write_vault_blob

    def crash_on_head(kind, data):
        if kind == audit_mod.HEAD_KIND:
            raise KeyboardInterrupt("killed before the head was written")
        return real_write(kind, data)

    monkeypatch.setattr(store, "write_vault_blob", crash_on_head)
    with pytest.raises(KeyboardInterrupt):
        AuditLog(store).append("vault_created")
    monkeypatch.setattr(store, "write_vault_blob", real_write)
    log = AuditLog(store)
    result = log.verify()
    assert result.ok and result.count == 1 and result.notes, result.summary()
    log.append("unlock")
    after = log.verify()
    assert after.ok and after.count == 2 and after.head_count == 2
