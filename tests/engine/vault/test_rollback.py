"""Putting back an older copy of one file, or removing one, is reported (the vault manifest).

Each case copies a genuine file, lets the vault move on, then puts the old copy back (or
removes a file) and checks that the store names what changed, refuses to return the old
content, and that a later open still reports it.
"""

from __future__ import annotations

import shutil

import pytest

from engine.errors import RolledBack
from engine.records import Note
from engine.vault import crypto
from engine.vault import header as vault_header
from engine.vault.store import Store


def _copy(path):
    return path.read_bytes()


def test_rolled_back_record_is_reported(store, vault_dir, reopen):
    patient = store.create_patient("王伟")
    store.add_note(patient.id, Note(question="第一次"))
    record = vault_dir / "patients" / patient.id / "record.bin"
    old = _copy(record)
    store.add_note(patient.id, Note(question="第二次"))
    store.add_note(patient.id, Note(question="第三次"))
    store.close()
    record.write_bytes(old)
    with reopen() as again:
        problems = again.integrity_problems()
        assert any(patient.id in p and "rolled back" in p for p in problems), problems
        with pytest.raises(RolledBack, match=r"save #2.*save #4"):
            again.load_patient(patient.id)
    with reopen(writer=False) as reader:  # still reported, also read-only
        assert any("rolled back" in p for p in reader.verify_manifest())


def test_rolled_back_adapter_pointer_is_reported(store, vault_dir, reopen):
    patient = store.create_patient("王伟")
    store.write_blob(patient.id, "adapter/active", b"1")
    pointer = vault_dir / "patients" / patient.id / "blobs" / "adapter%2Factive.bin"
    old = _copy(pointer)
    store.write_blob(patient.id, "adapter/active", b"2")
    store.close()
    pointer.write_bytes(old)
    with reopen() as again, pytest.raises(RolledBack, match="adapter/active"):
        again.read_blob(patient.id, "adapter/active")
    pointer.unlink()
    with reopen() as again, pytest.raises(RolledBack, match="missing"):
        again.read_blob(patient.id, "adapter/active")


def test_older_index_is_reported_and_the_later_patient_kept(store, vault_dir, reopen):
    first = store.create_patient("李娜")
    old_index = _copy(vault_dir / "index.bin")
    later = store.create_patient("张三")
    store.close()
    (vault_dir / "index.bin").write_bytes(old_index)
    with reopen() as again:
        assert any("index.bin" in p for p in again.integrity_problems())
        assert {s.id for s in again.list_patients()} == {first.id, later.id}


def test_removed_patient_folder_with_older_index_is_reported(store, vault_dir, reopen):
    first = store.create_patient("李娜")
    old_index = _copy(vault_dir / "index.bin")
    later = store.create_patient("张三")
    store.close()
    shutil.rmtree(vault_dir / "patients" / later.id)
    (vault_dir / "index.bin").write_bytes(old_index)
    with reopen() as again:
        problems = again.integrity_problems()
        assert any(later.id in p and "gone" in p for p in problems), problems
        assert later.id in again.damaged_patients()
        assert [s.id for s in again.list_patients()] == [first.id]
    with reopen() as again:  # the next open reports it again: nothing was "healed"
        assert any(later.id in p for p in again.integrity_problems())


def test_older_manifest_is_reported(store, vault_dir, reopen):
    patient = store.create_patient("王伟")
    store.flush()
    old_manifest = _copy(vault_dir / "manifest.bin")
    store.add_note(patient.id, Note(question="第一次"))
    store.close()
    (vault_dir / "manifest.bin").write_bytes(old_manifest)
    with reopen() as again:
        assert again.integrity_problems(), "an older manifest with newer files went unnoticed"


def test_deleted_manifest_is_reported(store, vault_dir, reopen):
    store.create_patient("王伟")
    store.close()
    (vault_dir / "manifest.bin").unlink()
    with reopen() as again:
        assert any("manifest.bin is missing" in p for p in again.integrity_problems())


def test_accept_current_files_clears_a_deliberate_restore(store, vault_dir, reopen):
    patient = store.create_patient("王伟")
    store.add_note(patient.id, Note(question="第一次"))
    record = vault_dir / "patients" / patient.id / "record.bin"
    old = _copy(record)
    store.add_note(patient.id, Note(question="第二次"))
    store.close()
    record.write_bytes(old)
    with reopen() as again:
        assert again.integrity_problems()
        again.accept_current_files()
        assert len(again.load_patient(patient.id).notes) == 1
    with reopen() as again:
        assert again.integrity_problems() == []


def _downgrade_to_schema_1(vault_dir, passphrase):
    """Rewrite the vault as PhyAssist wrote it before manifests (schema 1, no manifest)."""
    header = vault_header.read_header(vault_dir)
    master = vault_header.unlock(header, passphrase)
    old = vault_header.VaultHeader(
        vault_id=header.vault_id,
        kdf=header.kdf,
        wrapped_master_key=b"",
        created=header.created,
        schema_version=1,
    )
    kek = crypto.derive_key(passphrase, header.kdf)
    old = vault_header.VaultHeader(
        vault_id=header.vault_id,
        kdf=header.kdf,
        wrapped_master_key=crypto.encrypt(kek, master, old.wrap_aad()),
        created=header.created,
        schema_version=1,
    )
    (vault_dir / "vault.json").write_bytes(old.to_json())
    (vault_dir / "manifest.bin").unlink()


def test_a_schema_1_vault_opens_and_is_migrated(store, vault_dir, reopen, passphrase):
    patient = store.create_patient("王伟")
    store.add_note(patient.id, Note(question="第一次"))
    store.write_blob(patient.id, "adapter/active", b"1")
    store.close()
    _downgrade_to_schema_1(vault_dir, passphrase)
    with reopen(writer=False) as reader:  # read-only: opens, nothing written
        assert len(reader.load_patient(patient.id).notes) == 1
    assert not (vault_dir / "manifest.bin").exists()
    with reopen() as again:
        assert again.integrity_problems() == []
        assert again.read_blob(patient.id, "adapter/active") == b"1"
    assert vault_header.read_header(vault_dir).schema_version == 2
    assert (vault_dir / "manifest.bin").exists()
    with reopen() as again:
        assert again.integrity_problems() == []
        assert again.verify_manifest() == []


def test_reader_beside_a_writer_reports_nothing(store, vault_dir, reopen):
    """A read-only handle opened before the writer's changes must not cry rollback."""
    patient = store.create_patient("王伟")
    store.write_blob(patient.id, "draft", b"a")
    store.flush()
    with reopen(writer=False) as reader:
        store.add_note(patient.id, Note(question="第一次"))
        store.write_blob(patient.id, "draft", b"b")
        assert len(reader.load_patient(patient.id).notes) == 1
        assert reader.read_blob(patient.id, "draft") == b"b"
        store.flush()
        assert reader.read_blob(patient.id, "draft") == b"b"
        assert reader.integrity_problems() == []


def test_clean_vault_has_no_problems(store, reopen):
    patient = store.create_patient("王伟")
    store.add_note(patient.id, Note(question="第一次"))
    store.write_blob(patient.id, "chat", b"x")
    store.write_vault_blob("registry", b"y")
    store.delete_blob(patient.id, "chat")
    store.close()
    with reopen() as again:
        assert again.integrity_problems() == []
        assert again.verify_manifest() == []
    assert isinstance(again, Store)


def test_doctor_fails_on_a_removed_patient_and_an_older_index(
    store, vault_dir, settings, passphrase
):
    from engine.trust.doctor import check_vault_unlocked

    store.create_patient("李娜")
    old_index = _copy(vault_dir / "index.bin")
    later = store.create_patient("张三")
    store.close()
    shutil.rmtree(vault_dir / "patients" / later.id)
    (vault_dir / "index.bin").write_bytes(old_index)
    findings = check_vault_unlocked(settings, passphrase)
    failed = [f.message for f in findings if f.level == "fail"]
    assert any(later.id in m and "gone" in m for m in failed), findings
    assert any("index.bin" in m for m in failed), findings
