"""Unlocking: passphrases, the header, the writer lock, read-only handles, file modes."""

from __future__ import annotations

import json
import stat

import pytest

from engine.errors import (
    InputRejected,
    ReadOnlyVault,
    TamperedFile,
    UnknownSchema,
    VaultBusy,
    VaultClosed,
    VaultExists,
    VaultNotFound,
    WrongPassphrase,
)
from engine.vault.store import Store


def test_create_then_open(store, reopen):
    patient = store.create_patient("王伟")
    store.close()
    with reopen() as again:
        assert [s.name for s in again.list_patients()] == ["王伟"]
        assert again.load_patient(patient.id).name == "王伟"


def test_exists_and_not_found(vault_dir, settings, passphrase):
    assert not Store.exists(vault_dir)
    with pytest.raises(VaultNotFound, match="phyassist init"):
        Store.open(vault_dir, passphrase, settings=settings)
    Store.create(vault_dir, passphrase, settings=settings).close()
    assert Store.exists(vault_dir)
    with pytest.raises(VaultExists):
        Store.create(vault_dir, passphrase, settings=settings)


def test_create_refuses_foreign_files(vault_dir, settings, passphrase):
    vault_dir.mkdir(parents=True)
    (vault_dir / "something.txt").write_text("not ours")
    with pytest.raises(VaultExists, match="not empty"):
        Store.create(vault_dir, passphrase, settings=settings)


@pytest.mark.parametrize("bad", ["", "        ", "short"])
def test_weak_passphrase_rejected(vault_dir, settings, bad):
    with pytest.raises(InputRejected, match="passphrase"):
        Store.create(vault_dir, bad, settings=settings)
    assert not Store.exists(vault_dir)


def test_wrong_passphrase(store, reopen):
    store.close()
    with pytest.raises(WrongPassphrase):
        reopen(secret="not the passphrase")
    # a failed unlock leaves the lock free for the right passphrase
    reopen().close()


def test_change_passphrase_keeps_data(store, reopen, passphrase, seed):
    patient, note = seed
    saved = store.import_patient(patient)
    store.add_note(saved.id, note)
    store.write_blob(saved.id, "adapter/v1", b"weights")
    with pytest.raises(WrongPassphrase):
        store.change_passphrase("wrong old passphrase", "a brand new passphrase")
    with pytest.raises(InputRejected):
        store.change_passphrase(passphrase, "short")
    store.change_passphrase(passphrase, "a brand new passphrase")
    store.close()
    with pytest.raises(WrongPassphrase):
        reopen(secret=passphrase)
    with reopen(secret="a brand new passphrase") as again:
        loaded = again.load_patient(saved.id)
        assert loaded.notes[0].question == note.question
        assert again.read_blob(saved.id, "adapter/v1") == b"weights"


def test_change_passphrase_only_rewraps(store, vault_dir, passphrase):
    patient = store.create_patient("李娜")
    record = (vault_dir / "patients" / patient.id / "record.bin").read_bytes()
    index = (vault_dir / "index.bin").read_bytes()
    header = json.loads((vault_dir / "vault.json").read_text())
    store.change_passphrase(passphrase, "another long passphrase")
    assert (vault_dir / "patients" / patient.id / "record.bin").read_bytes() == record
    assert (vault_dir / "index.bin").read_bytes() == index
    new_header = json.loads((vault_dir / "vault.json").read_text())
    assert new_header["kdf"]["salt"] != header["kdf"]["salt"]
    assert new_header["wrapped_master_key"] != header["wrapped_master_key"]


def test_kdf_parameters_are_stored(store, vault_dir):
    header = json.loads((vault_dir / "vault.json").read_text())
    assert header["kdf"]["name"] == "scrypt"
    assert header["kdf"]["log2_n"] == 10
    assert header["schema_version"] == 2


def test_default_kdf_cost_is_strong():
    from engine.settings import StoreSettings

    assert StoreSettings().scrypt_log2_n >= 15


def test_unknown_schema_version(store, vault_dir, reopen):
    store.close()
    path = vault_dir / "vault.json"
    header = json.loads(path.read_text())
    header["schema_version"] = 99
    path.write_text(json.dumps(header))
    with pytest.raises(UnknownSchema) as info:
        reopen()
    assert info.value.version == 99
    assert "vault.json" in str(info.value)


def test_garbled_header_is_tampered(store, vault_dir, reopen):
    store.close()
    (vault_dir / "vault.json").write_bytes(b"{not json")
    with pytest.raises(TamperedFile, match=r"vault\.json"):
        reopen()


def test_weakened_kdf_in_header_does_not_unlock(store, vault_dir, reopen):
    """Editing the stored scrypt cost breaks the wrap instead of weakening the vault."""
    store.close()
    path = vault_dir / "vault.json"
    header = json.loads(path.read_text())
    header["kdf"]["log2_n"] = 11
    path.write_text(json.dumps(header))
    with pytest.raises(WrongPassphrase):
        reopen()


def test_second_writer_in_same_process_is_busy(store, reopen):
    with pytest.raises(VaultBusy, match="another"):
        reopen()
    with reopen(writer=False) as reader:
        assert reader.list_patients() == []


def test_second_writer_process_is_busy(store, vault_dir, passphrase, run_python):
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from engine.errors import VaultBusy\n"
        "from engine.settings import Settings, StoreSettings\n"
        "from engine.vault.store import Store\n"
        "s = Settings(store=StoreSettings(scrypt_log2_n=10))\n"
        "try:\n"
        "    Store.open(Path(sys.argv[1]), sys.argv[2], settings=s).close()\n"
        "except VaultBusy as exc:\n"
        "    print('BUSY', exc); sys.exit(3)\n"
        "print('OPENED')\n"
    )
    busy = run_python(code, str(vault_dir), passphrase)
    assert busy.returncode == 3, busy.stderr
    assert "BUSY" in busy.stdout
    store.close()
    free = run_python(code, str(vault_dir), passphrase)
    assert free.returncode == 0, free.stderr
    assert "OPENED" in free.stdout


def test_reader_cannot_write(store, reopen):
    patient = store.create_patient("张三")
    with reopen(writer=False) as reader:
        assert reader.load_patient(patient.id).name == "张三"
        with pytest.raises(ReadOnlyVault):
            reader.create_patient("李四")
        with pytest.raises(ReadOnlyVault):
            reader.write_blob(patient.id, "draft", b"x")
        with pytest.raises(ReadOnlyVault):
            reader.delete_patient(patient.id)


def test_closed_store_refuses_work(store):
    patient = store.create_patient("张三")
    store.close()
    store.close()  # idempotent
    with pytest.raises(VaultClosed):
        store.load_patient(patient.id)
    with pytest.raises(VaultClosed):
        store.list_patients()


def test_private_file_modes(store, vault_dir, isolated_home, files_under):
    patient = store.create_patient("王芳")
    store.write_blob(patient.id, "chat", b"hi")
    store.write_vault_blob("audit", b"log")
    for path in files_under(vault_dir):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    for path in [vault_dir, *(p for p in vault_dir.rglob("*") if p.is_dir())]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o700, path
    # the data directory created on the way is private too
    assert stat.S_IMODE((isolated_home / "data").stat().st_mode) == 0o700
