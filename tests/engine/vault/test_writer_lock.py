"""One writer per vault, even when someone deletes vault.lock from under the holder."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from engine.errors import VaultBusy
from engine.vault.store import Store
from tests.support import REPO

CHILD = r"""
import sys
from pathlib import Path
from engine.errors import VaultBusy
from engine.settings import Settings, StoreSettings
from engine.vault.store import Store
settings = Settings(store=StoreSettings(scrypt_log2_n=10))
try:
    Store.open(Path(sys.argv[1]), sys.argv[2], settings=settings)
except VaultBusy:
    print("busy")
else:
    print("opened")
"""


def test_deleting_the_lock_file_does_not_admit_a_second_writer(store, vault_dir, passphrase):
    patient = store.create_patient("王伟")
    (vault_dir / "vault.lock").unlink()
    env = dict(os.environ, PYTHONPATH=str(REPO))
    child = subprocess.run(
        [sys.executable, "-c", CHILD, str(vault_dir), passphrase],
        capture_output=True,
        env=env,
        timeout=60,
    )
    assert child.stdout.decode().strip() == "busy", child.stderr.decode()
    # the holder keeps writing; its patient is still there after it closes
    store.add_note(patient.id, __import__("engine.records").records.Note(question="还在"))
    store.close()
    with Store.open(vault_dir, passphrase, settings=store.settings) as again:
        assert again.get_summary(patient.id).note_count == 1


def test_same_process_second_writer_is_busy(store, vault_dir, passphrase):
    (vault_dir / "vault.lock").unlink()
    with pytest.raises(VaultBusy):
        Store.open(vault_dir, passphrase, settings=store.settings)
