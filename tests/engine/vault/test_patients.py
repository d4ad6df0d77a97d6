"""Patients, notes and blobs: round trips, privacy at rest, tamper/swap detection, limits."""

from __future__ import annotations

import shutil

import pytest

from engine.errors import InputRejected, PatientNotFound, TamperedFile, UnknownSchema
from engine.records import BasicInfo, Item, Note, Patient
from engine.settings import Limits, load_settings
from engine.vault.store import Store


def _record(vault_dir, patient_id):
    return vault_dir / "patients" / patient_id / "record.bin"


def _flip(path, offset):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


# -- round trip -------------------------------------------------------------------------------


def test_chinese_seed_case_round_trip(store, reopen, seed, seed_case_zh):
    patient, note = seed
    saved = store.import_patient(patient)
    after = store.add_note(saved.id, note)
    assert len(after.notes) == 1
    store.close()
    with reopen(writer=False) as again:
        loaded = again.load_patient(saved.id)
    assert loaded.name == "孙某"
    assert loaded.basic == BasicInfo(**seed_case_zh["basic_info"])
    assert loaded.notes[0].question == seed_case_zh["counseling_question"]["statement"]
    assert loaded.notes[0] == note
    reasons = [i.text for i in loaded.notes[0].analysis.reasons]
    assert reasons == seed_case_zh["reference_analysis"]["reasons"]
    assert loaded.notes[0].analysis.advice[0].comments == ["请更具体"]


def test_save_patient_bumps_updated_and_index(store):
    patient = store.create_patient("李娜")
    before = patient.updated
    patient.basic.mental_state = "情绪低落"
    patient.notes.append(Note(question="最近睡不好"))
    store.save_patient(patient)
    assert patient.updated >= before
    summary = store.get_summary(patient.id)
    assert summary.note_count == 1
    assert summary.updated == patient.updated
    assert store.load_patient(patient.id).basic.mental_state == "情绪低落"


def test_list_is_most_recent_first_and_search(store):
    a = store.create_patient("王伟")
    b = store.create_patient("Anna Lee")
    c = store.create_patient("王芳")
    store.add_note(a.id, Note(question="失眠"))
    assert [s.id for s in store.list_patients()] == [a.id, c.id, b.id]
    assert {s.id for s in store.search("王")} == {a.id, c.id}
    assert [s.id for s in store.search("anna")] == [b.id]
    assert [s.id for s in store.search("ＡＮＮＡ")] == [b.id]  # full-width letters fold
    assert [s.id for s in store.search(b.id[:6])] == [b.id]
    assert len(store.search("")) == 3
    assert store.search("赵") == []


def test_set_has_adapter_survives_rebuild(store, vault_dir, reopen):
    patient = store.create_patient("张三")
    store.set_has_adapter(patient.id, True)
    assert store.get_summary(patient.id).has_adapter
    store.close()
    (vault_dir / "index.bin").unlink()
    with reopen() as again:
        assert again.index_rebuilt
        assert again.get_summary(patient.id).has_adapter
        again.set_has_adapter(patient.id, False)
        assert not again.get_summary(patient.id).has_adapter


def test_unknown_patient(store):
    with pytest.raises(PatientNotFound):
        store.load_patient("0" * 32)
    with pytest.raises(PatientNotFound):
        store.load_patient("../../etc")
    with pytest.raises(PatientNotFound):
        store.add_note("f" * 32, Note(question="x"))
    with pytest.raises(PatientNotFound):
        store.save_patient(Patient(name="从未创建"))


# -- nothing readable at rest -----------------------------------------------------------------


def _needles(seed_case_zh):
    statement = seed_case_zh["counseling_question"]["statement"]
    texts = [
        "孙某",
        statement[:12],
        statement[100:112],
        seed_case_zh["basic_info"]["mental_state"][:10],
        seed_case_zh["reference_analysis"]["reasons"][0][:10],
        "请更具体",
        "Wang Secret",
    ]
    needles = []
    for text in texts:
        for encoding in ("utf-8", "utf-16-le", "utf-16-be", "gb18030"):
            needles.append((text, encoding, text.encode(encoding)))
    return needles


def test_no_plaintext_anywhere_under_home(
    store, reopen, seed, seed_case_zh, isolated_home, files_under, passphrase
):
    patient, note = seed
    saved = store.import_patient(patient)
    store.add_note(saved.id, note)
    store.create_patient("Wang Secret")
    store.write_blob(saved.id, "draft", note.question.encode("utf-8"))
    store.write_blob(saved.id, "chat", "孙某说她失眠".encode("utf-16-le"))
    store.write_vault_blob("audit", f"opened {saved.id} 孙某".encode())
    store.set_has_adapter(saved.id, True)
    store.change_passphrase(passphrase, "another passphrase")
    store.close()
    with reopen(secret="another passphrase") as again:  # rebuild the index too
        again.rebuild_index()
    files = files_under(isolated_home)
    assert len(files) >= 8
    for path in files:
        data = path.read_bytes()
        assert "孙某" not in str(path) and "Wang" not in str(path)
        for text, encoding, needle in _needles(seed_case_zh):
            assert needle not in data, f"{text!r} ({encoding}) found in {path}"


# -- tampering --------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["nonce", "body", "tag"])
def test_flipped_byte_in_record_is_detected(store, vault_dir, where):
    patient = store.create_patient("王伟")
    path = _record(vault_dir, patient.id)
    size = path.stat().st_size
    _flip(path, {"nonce": 8, "body": size // 2, "tag": size - 1}[where])
    store._data_keys.clear()
    with pytest.raises(TamperedFile) as info:
        store.load_patient(patient.id)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("keep", [0, 3, 17, 30, -1])
def test_truncated_record_is_detected(store, vault_dir, keep):
    patient = store.create_patient("王伟")
    store.add_note(patient.id, Note(question="一段足够长的陈述" * 10))
    path = _record(vault_dir, patient.id)
    data = path.read_bytes()
    path.write_bytes(data[:keep] if keep >= 0 else data[:-1])
    with pytest.raises(TamperedFile, match=r"record\.bin"):
        store.load_patient(patient.id)


def test_tampered_key_file_is_detected(store, vault_dir):
    patient = store.create_patient("王伟")
    _flip(vault_dir / "patients" / patient.id / "key.bin", 30)
    store._data_keys.clear()
    with pytest.raises(TamperedFile, match=r"key\.bin"):
        store.load_patient(patient.id)


def test_unknown_record_format_version(store, vault_dir):
    patient = store.create_patient("王伟")
    path = _record(vault_dir, patient.id)
    data = bytearray(path.read_bytes())
    data[4] = 7
    path.write_bytes(bytes(data))
    with pytest.raises(UnknownSchema) as info:
        store.load_patient(patient.id)
    assert info.value.version == 7


def test_record_from_newer_schema_is_unknown(store, vault_dir):
    """A record written (validly encrypted) by a newer PhyAssist reports UnknownSchema."""
    from engine.vault import crypto
    from engine.vault.files import _aad

    patient = store.create_patient("王伟")
    newer = patient.model_dump(mode="json") | {"schema_version": 2}
    import json

    payload = json.dumps({"has_adapter": False, "patient": newer}).encode()
    blob = crypto.encrypt(store._data_key(patient.id), payload, _aad(patient.id, "record"))
    _record(vault_dir, patient.id).write_bytes(blob)
    with pytest.raises(UnknownSchema) as info:
        store.load_patient(patient.id)
    assert info.value.version == 2


def test_swapped_record_between_patients(store, vault_dir):
    a = store.create_patient("王伟")
    b = store.create_patient("李娜")
    shutil.copyfile(_record(vault_dir, a.id), _record(vault_dir, b.id))
    with pytest.raises(TamperedFile, match=b.id):
        store.load_patient(b.id)
    assert store.load_patient(a.id).name == "王伟"


def test_swapped_key_and_record_between_patients(store, vault_dir):
    a = store.create_patient("王伟")
    b = store.create_patient("李娜")
    for name in ("key.bin", "record.bin"):
        shutil.copyfile(vault_dir / "patients" / a.id / name, vault_dir / "patients" / b.id / name)
    store._data_keys.clear()
    with pytest.raises(TamperedFile):
        store.load_patient(b.id)


def test_swapped_blob_between_kinds_and_patients(store, vault_dir):
    a = store.create_patient("王伟")
    b = store.create_patient("李娜")
    store.write_blob(a.id, "draft", b"draft of a")
    store.write_blob(a.id, "chat", b"chat of a")
    store.write_blob(b.id, "draft", b"draft of b")
    blobs_a = vault_dir / "patients" / a.id / "blobs"
    shutil.copyfile(blobs_a / "draft.bin", blobs_a / "chat.bin")
    with pytest.raises(TamperedFile, match=r"chat\.bin"):
        store.read_blob(a.id, "chat")
    shutil.copyfile(blobs_a / "draft.bin", vault_dir / "patients" / b.id / "blobs" / "draft.bin")
    with pytest.raises(TamperedFile):
        store.read_blob(b.id, "draft")
    # the record file is not a blob either
    shutil.copyfile(_record(vault_dir, a.id), blobs_a / "draft.bin")
    with pytest.raises(TamperedFile):
        store.read_blob(a.id, "draft")


def test_vault_blob_swap_and_tamper(store, vault_dir):
    store.write_vault_blob("audit", b"audit log")
    store.write_vault_blob("domains", b"registry")
    blobs = vault_dir / "vault-blobs"
    shutil.copyfile(blobs / "audit.bin", blobs / "domains.bin")
    with pytest.raises(TamperedFile):
        store.read_vault_blob("domains")
    assert store.read_vault_blob("audit") == b"audit log"
    _flip(blobs / "audit.bin", 25)
    with pytest.raises(TamperedFile):
        store.read_vault_blob("audit")


# -- index: a cache that rebuilds itself ------------------------------------------------------


@pytest.mark.parametrize("damage", ["delete", "garble", "truncate", "other-vault"])
def test_index_rebuilt_when_missing_or_unreadable(store, vault_dir, reopen, damage, tmp_path):
    names = ["王伟", "李娜", "Anna"]
    ids = [store.create_patient(n).id for n in names]
    store.add_note(ids[0], Note(question="失眠"))
    store.close()
    index = vault_dir / "index.bin"
    if damage == "delete":
        index.unlink()
    elif damage == "garble":
        _flip(index, index.stat().st_size // 2)
    elif damage == "truncate":
        index.write_bytes(index.read_bytes()[:20])
    else:  # an index from another vault (other master key)
        settings = load_settings()
        other = Store.create(tmp_path / "other", "other passphrase", settings=settings)
        other.close()
        shutil.copyfile(tmp_path / "other" / "index.bin", index)
    with reopen() as again:
        assert again.index_rebuilt
        summaries = {s.id: s for s in again.list_patients()}
        assert set(summaries) == set(ids)
        assert summaries[ids[0]].note_count == 1
        assert summaries[ids[0]].name == "王伟"
    with reopen() as third:  # the rebuilt index was written
        assert not third.index_rebuilt
        assert len(third.list_patients()) == 3


def test_reader_rebuilds_in_memory_only(store, vault_dir, reopen):
    store.create_patient("王伟")
    store.close()
    (vault_dir / "index.bin").unlink()
    with reopen(writer=False) as reader:
        assert [s.name for s in reader.list_patients()] == ["王伟"]
    assert not (vault_dir / "index.bin").exists()


def test_rebuild_index_reports_damaged_records(store, vault_dir):
    good = store.create_patient("王伟")
    bad = store.create_patient("李娜")
    _flip(_record(vault_dir, bad.id), 40)
    assert store.rebuild_index() == 1
    assert [s.id for s in store.list_patients()] == [good.id]
    assert bad.id in store.damaged_patients()
    store.delete_patient(bad.id)  # a damaged patient can still be deleted
    assert store.damaged_patients() == {}


def test_stale_index_is_repaired_on_open(store, vault_dir, reopen):
    """A writer that died after a record write but before the index write loses nothing."""
    patient = store.create_patient("王伟")
    other = store.create_patient("李娜")
    old_index = (vault_dir / "index.bin").read_bytes()
    store.add_note(patient.id, Note(question="第一次"))
    # the manifest as the crash leaves it: marked dirty before the first change
    dirty_manifest = (vault_dir / "manifest.bin").read_bytes()
    store.add_note(patient.id, Note(question="第二次"))
    store.delete_patient(other.id)
    fresh = store.create_patient("张三")
    store.close()
    # the state a crash leaves: records ahead of index.bin, the pending marker present
    (vault_dir / "index.bin").write_bytes(old_index)
    (vault_dir / "manifest.bin").write_bytes(dirty_manifest)
    (vault_dir / "index.pending").touch()
    with reopen() as again:
        assert not again.index_rebuilt
        assert again.index_repaired == 3
        summaries = {s.id: s for s in again.list_patients()}
        assert set(summaries) == {patient.id, fresh.id}
        assert summaries[patient.id].note_count == 2
    assert not (vault_dir / "index.pending").exists()


def test_note_saves_defer_index_writes_but_close_flushes(store, vault_dir, reopen):
    patient = store.create_patient("王伟")
    writes = store._index.storage.writes
    for i in range(5):
        store.add_note(patient.id, Note(question=f"第{i}次"))
    assert store._index.storage.writes == writes  # deferred
    assert (vault_dir / "index.pending").exists()
    store.flush()
    assert store._index.storage.writes == writes + 1
    assert not (vault_dir / "index.pending").exists()
    store.add_note(patient.id, Note(question="最后"))
    store.close()
    assert not (vault_dir / "index.pending").exists()
    with reopen() as again:
        assert again.get_summary(patient.id).note_count == 6
        assert again.index_repaired == 0


def test_deferred_index_write_happens_by_itself(store, vault_dir, monkeypatch):
    import time

    monkeypatch.setattr(Store, "INDEX_FLUSH_DELAY_S", 0.05)
    patient = store.create_patient("王伟")
    store.add_note(patient.id, Note(question="一"))
    deadline = time.monotonic() + 5
    while (vault_dir / "index.pending").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not (vault_dir / "index.pending").exists()


# -- deletion ---------------------------------------------------------------------------------


def test_delete_patient_erases_everything(store, vault_dir, reopen, tmp_path):
    keep = store.create_patient("李娜")
    gone = store.create_patient("王伟")
    store.add_note(gone.id, Note(question="秘密"))
    store.write_blob(gone.id, "adapter/v1", b"weights")
    directory = vault_dir / "patients" / gone.id
    backup = tmp_path / "copy"
    shutil.copytree(directory, backup)  # what a filesystem snapshot might still hold
    store.delete_patient(gone.id)
    assert not directory.exists()
    assert [s.id for s in store.list_patients()] == [keep.id]
    with pytest.raises(PatientNotFound):
        store.load_patient(gone.id)
    with pytest.raises(PatientNotFound):
        store.delete_patient(gone.id)
    # the old ciphertext is useless without the shredded wrapped key
    directory.mkdir()
    shutil.copyfile(backup / "record.bin", directory / "record.bin")
    with pytest.raises(PatientNotFound):
        store.load_patient(gone.id)
    shutil.rmtree(directory)
    store.close()
    with reopen() as again:
        assert [s.id for s in again.list_patients()] == [keep.id]


class _Died(BaseException):
    """Stands in for a kill at one step of a deletion."""


@pytest.mark.parametrize(
    "step", ["delete:tombstoned", "delete:key_shredded", "delete:folder_removed"]
)
def test_interrupted_delete_is_finished_on_open(store, vault_dir, reopen, monkeypatch, step):
    from engine.vault import deletion

    keep = store.create_patient("李娜")
    gone = store.create_patient("王伟")
    store.add_note(gone.id, Note(question="秘密"))
    store.flush()
    directory = vault_dir / "patients" / gone.id

    def die(name):
        if name == step:
            raise _Died(name)

    monkeypatch.setattr(deletion, "fault_hook", die)
    with pytest.raises(_Died):
        store.delete_patient(gone.id)
    monkeypatch.setattr(deletion, "fault_hook", None)
    # the process is gone: nothing more of it reaches the disk
    store._abandon()
    store._lock.release()
    with reopen() as again:
        assert [s.id for s in again.list_patients()] == [keep.id]
        assert again.integrity_problems() == []
        with pytest.raises(PatientNotFound):
            again.load_patient(gone.id)
    assert not directory.exists()
    with reopen() as again:
        assert again.integrity_problems() == []


# -- blobs ------------------------------------------------------------------------------------


def test_blobs_round_trip_and_listing(store, vault_dir):
    patient = store.create_patient("王伟")
    assert store.read_blob(patient.id, "draft") is None
    store.write_blob(patient.id, "draft", "草稿".encode())
    store.write_blob(patient.id, "adapter/v3", b"\x00" * 1000)
    store.write_blob(patient.id, "adapter/v10", b"w")
    store.write_blob(patient.id, "train/log-2026-11-24", b"loss")
    assert store.read_blob(patient.id, "draft").decode() == "草稿"
    assert store.list_blobs(patient.id) == [
        "adapter/v10",
        "adapter/v3",
        "draft",
        "train/log-2026-11-24",
    ]
    assert store.list_blobs(patient.id, "adapter/") == ["adapter/v10", "adapter/v3"]
    store.delete_blob(patient.id, "adapter/v3")
    store.delete_blob(patient.id, "never-written")
    assert store.list_blobs(patient.id, "adapter/") == ["adapter/v10"]
    names = [p.name for p in (vault_dir / "patients" / patient.id / "blobs").iterdir()]
    assert all("/" not in n for n in names)


@pytest.mark.parametrize(
    "kind", ["", "../record", "a//b", "/abs", "a/../b", "名字", "x" * 200, "draft\n", "a b"]
)
def test_bad_blob_kinds_rejected(store, kind):
    patient = store.create_patient("王伟")
    with pytest.raises(InputRejected, match="kind"):
        store.write_blob(patient.id, kind, b"x")


def test_vault_blobs(store):
    assert store.read_vault_blob("audit") is None
    store.write_vault_blob("audit", b"one")
    store.write_vault_blob("registry/domains", b"two")
    assert store.read_vault_blob("audit") == b"one"
    assert store.list_vault_blobs() == ["audit", "registry/domains"]
    store.delete_vault_blob("audit")
    assert store.read_vault_blob("audit") is None


# -- limits -----------------------------------------------------------------------------------


def test_name_limits(store):
    with pytest.raises(InputRejected, match="name"):
        store.create_patient("")
    with pytest.raises(InputRejected, match="name"):
        store.create_patient("   ")
    with pytest.raises(InputRejected, match="limit is 200"):
        store.create_patient("王" * 201)
    with pytest.raises(InputRejected, match="line breaks"):
        store.create_patient("王\n伟")
    assert store.create_patient("  王伟  ").name == "王伟"
    assert store.create_patient("王" * 200).name == "王" * 200
    assert store.list_patients()[0].name == "王" * 200


def test_field_and_statement_limits(vault_dir, isolated_home):
    from engine.settings import StoreSettings

    settings = load_settings(
        store=StoreSettings(scrypt_log2_n=10),
        limits=Limits(max_statement_chars=500, max_field_chars=100, max_name_chars=20),
    )
    with Store.create(vault_dir, "long enough passphrase", settings=settings) as store:
        with pytest.raises(InputRejected, match="Mental state"):
            store.create_patient("王伟", BasicInfo(mental_state="焦" * 101))
        patient = store.create_patient("王伟", BasicInfo(mental_state="焦" * 100))
        with pytest.raises(InputRejected, match=r"statement.*limit is 500"):
            store.add_note(patient.id, Note(question="我" * 501))
        with pytest.raises(InputRejected, match="statement"):
            store.add_note(patient.id, Note(question="   "))
        note = Note(question="我" * 500)
        note.analysis.reasons = [Item(text="因" * 101)]
        with pytest.raises(InputRejected, match="Reasons item 1"):
            store.add_note(patient.id, note)
        note.analysis.reasons = [Item(text="因", comments=["评" * 101])]
        with pytest.raises(InputRejected, match="comment"):
            store.add_note(patient.id, note)
        note.analysis.reasons = [Item(text="因" * 100)]
        store.add_note(patient.id, note)
        loaded = store.load_patient(patient.id)
        loaded.basic.social_functioning = "社" * 101
        with pytest.raises(InputRejected, match="Social functioning"):
            store.save_patient(loaded)
        # nothing was half-saved by the rejected calls
        again = store.load_patient(patient.id)
        assert len(again.notes) == 1
        assert again.basic.social_functioning == ""


def test_every_vault_file_is_an_encrypted_envelope(store, vault_dir, files_under):
    """Only the header and the lock file are plaintext, even mid-way (index write pending)."""
    patient = store.create_patient("王伟")
    store.add_note(patient.id, Note(question="失眠"))
    store.write_blob(patient.id, "adapter/v1", b"w")
    store.write_vault_blob("audit/head", b"{}")
    assert (vault_dir / "index.pending").exists()
    for path in files_under(vault_dir):
        if path.name in ("vault.json", "vault.lock"):
            continue
        assert path.read_bytes()[:4] == b"PHYA", path


def test_threads_share_one_store(store):
    """The TUI saves from worker threads: concurrent saves neither fail nor lose notes."""
    import threading

    patients = [store.create_patient(f"来访者{i}") for i in range(4)]
    errors: list[BaseException] = []

    def work(patient_id: str) -> None:
        try:
            for i in range(10):
                store.add_note(patient_id, Note(question=f"第{i}次"))
                store.write_blob(patient_id, "draft", str(i).encode())
                store.search("来访")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(p.id,)) for p in patients]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    for p in patients:
        assert len(store.load_patient(p.id).notes) == 10
        assert store.get_summary(p.id).note_count == 10


def test_disk_full_keeps_previous_version(store, vault_dir, monkeypatch):
    """A failed write (ENOSPC) is a clear StorageError; the old record and index stay."""
    import errno

    from engine.errors import StorageError
    from engine.vault import atomicio

    patient = store.create_patient("王伟")
    store.add_note(patient.id, Note(question="第一次"))
    store.flush()
    real_write = atomicio.os.write

    def full_disk(fd, data):
        if len(data) > 300:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(atomicio.os, "write", full_disk)
    try:
        with pytest.raises(StorageError, match="No space left"):
            store.add_note(patient.id, Note(question="第二次" * 100))
    finally:
        monkeypatch.undo()
    assert [n.question for n in store.load_patient(patient.id).notes] == ["第一次"]
    assert store.get_summary(patient.id).note_count == 1
    assert list((vault_dir / "tmp").iterdir()) == []
    store.add_note(patient.id, Note(question="第二次"))
    assert store.get_summary(patient.id).note_count == 2
