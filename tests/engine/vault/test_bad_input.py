"""Bad input gets a clear message and leaves nothing behind (issue 18, item 7)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine.errors import InputRejected
from engine.records import AnalysisDraft, Item, Note
from engine.vault.header import check_new_passphrase
from engine.vault.store import Store
from tests.support import REPO


def _folders(vault_dir: Path) -> list[str]:
    return sorted(p.name for p in (vault_dir / "patients").iterdir())


def test_lone_surrogate_is_refused_before_any_file(store, vault_dir):
    with pytest.raises(InputRejected, match="not valid text"):
        store.create_patient("王\ud800伟")
    assert _folders(vault_dir) == []
    patient = store.create_patient("王伟")
    with pytest.raises(InputRejected, match="not valid text"):
        store.add_note(patient.id, Note(question="我\udcff很难过"))
    assert store.load_patient(patient.id).notes == []
    assert _folders(vault_dir) == [patient.id]


def test_invalid_utf8_name_on_the_command_line(tmp_path, vault_dir, store, passphrase):
    store.close()
    env = dict(
        os.environ,
        PYTHONPATH=str(REPO),
        PHYASSIST_STORE__SCRYPT_LOG2_N="10",
        PHYASSIST_PASSPHRASE=passphrase,
    )
    child = subprocess.run(
        [sys.executable, "-m", "phyassist_tui", "patients", "add", b"bad\xff\xfename"],
        capture_output=True,
        env=env,
        timeout=120,
    )
    err = child.stderr.decode(errors="replace")
    assert child.returncode != 0
    assert "Traceback" not in err, err
    assert "not valid text" in err or "not valid text" in child.stdout.decode(), err
    assert _folders(vault_dir) == []


def test_leftover_key_only_folder_is_cleaned_by_the_next_writer(store, vault_dir, reopen):
    keep = store.create_patient("李娜")
    store.close()
    leftover = vault_dir / "patients" / ("ab" * 16)
    leftover.mkdir(mode=0o700)
    (leftover / "key.bin").write_bytes(b"PHYA\x01" + os.urandom(60))
    with reopen() as again:
        assert _folders(vault_dir) == [keep.id]
        assert again.integrity_problems() == []


def test_caps_on_items_record_and_blob_size(store, settings):
    patient = store.create_patient("王伟")
    many = [Item(text=f"理由{i}") for i in range(settings.limits.max_items_per_section + 1)]
    with pytest.raises(InputRejected, match="the limit is"):
        store.add_note(patient.id, Note(question="问", analysis=AnalysisDraft(reasons=many)))
    small = settings.model_copy(deep=True)
    small.limits.max_blob_bytes = 1_000_000
    store.settings = small
    with pytest.raises(InputRejected, match="MB"):
        store.write_blob(patient.id, "draft", b"x" * 1_000_001)
    store.write_blob(patient.id, "draft", b"x" * 1000)
    small.limits.max_record_bytes = 100_000
    big = Note(question="问", analysis=AnalysisDraft(reasons=[Item(text="字" * 9000)] * 10))
    with pytest.raises(InputRejected, match="record would be"):
        store.add_note(patient.id, big)
    assert store.load_patient(patient.id).notes == []


@pytest.mark.parametrize(
    "weak",
    [
        "password123",
        "Password 123",
        "12345678",
        "qwertyuiop",
        "aaaaaaaaaa",
        "abcdefghij",
        "woaini1314",
        "iloveyou",
        "87654321",
    ],
)
def test_common_passphrases_are_refused(weak, vault_dir, settings):
    with pytest.raises(InputRejected, match="most common"):
        check_new_passphrase(weak)
    with pytest.raises(InputRejected):
        Store.create(vault_dir, weak, settings=settings)


def test_ordinary_passphrases_pass():
    for ok in ["correct horse battery", "我的咨询室在三楼", "Tulips-in-April-1987"]:
        check_new_passphrase(ok)
