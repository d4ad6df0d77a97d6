"""Deleting a patient is a transaction: a SIGKILL at any step leaves no zombie patient.

A child process deletes a patient and kills itself (SIGKILL, no cleanup of any kind) at
one named step of the deletion (``engine.vault.deletion.fault_hook``). The next open must
finish the deletion: the patient is gone from the list, its folder is gone, nothing is
reported as tampered, and the other patient is intact.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from engine.errors import PatientNotFound
from engine.records import Note
from engine.vault.store import Store
from tests.support import REPO

CHILD = r"""
import os, signal, sys
from pathlib import Path
from engine.settings import Settings, StoreSettings
from engine.vault import deletion
from engine.vault.store import Store

vault_dir, passphrase, patient_id, step = sys.argv[1:5]
settings = Settings(store=StoreSettings(scrypt_log2_n=10))
store = Store.open(Path(vault_dir), passphrase, settings=settings)

def die(name):
    if name == step:
        os.kill(os.getpid(), signal.SIGKILL)

deletion.fault_hook = die
store.delete_patient(patient_id)
print("finished", flush=True)
"""

STEPS = ["delete:tombstoned", "delete:key_shredded", "delete:folder_removed", "none"]


@pytest.mark.parametrize("step", STEPS)
def test_sigkill_inside_delete_is_finished_by_the_next_open(vault_dir, settings, passphrase, step):
    with Store.create(vault_dir, passphrase, settings=settings) as store:
        keep = store.create_patient("李娜")
        gone = store.create_patient("王伟")
        store.add_note(gone.id, Note(question="我最近总是睡不着"))
        store.write_blob(gone.id, "adapter/active", b"1")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    child = subprocess.run(
        [sys.executable, "-c", CHILD, str(vault_dir), passphrase, gone.id, step],
        capture_output=True,
        env=env,
        timeout=60,
    )
    if step == "none":
        assert child.returncode == 0, child.stderr.decode()
    else:
        assert child.returncode == -signal.SIGKILL, child.stderr.decode()
    with Store.open(vault_dir, passphrase, settings=settings) as again:
        assert [s.id for s in again.list_patients()] == [keep.id]
        assert again.integrity_problems() == []
        assert again.damaged_patients() == {}
        with pytest.raises(PatientNotFound):
            again.load_patient(gone.id)
        assert again.load_patient(keep.id).name == "李娜"
    assert not (vault_dir / "patients" / gone.id).exists()
    with Store.open(vault_dir, passphrase, writer=False, settings=settings) as reader:
        assert reader.verify_manifest() == []
