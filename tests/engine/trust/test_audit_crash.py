"""The audit log under SIGKILL at random moments: every append that returned survives, the
chain always verifies (an entry written just before the kill is at most a note), and the
next writer can append. Small segments so the kills also hit segment roll-overs."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import pytest

from engine.trust.audit import AuditLog
from engine.vault.store import Store
from tests.support import REPO

CHILD = r"""
import sys
from pathlib import Path
import engine.trust.audit as audit
from engine.settings import Settings, StoreSettings
from engine.vault.store import Store

audit.SEGMENT_ENTRIES = 5
vault_dir, passphrase = sys.argv[1], sys.argv[2]
settings = Settings(store=StoreSettings(scrypt_log2_n=10))
store = Store.open(Path(vault_dir), passphrase, settings=settings)
log = audit.AuditLog(store)
print("ready", flush=True)
while True:
    entry = log.append("note_saved", "ab" * 16, "crash test")
    print(f"audit {entry.seq}", flush=True)
"""


def _runs(n: int, settings, passphrase: str, seed: int) -> dict:
    import engine.trust.audit as audit

    rng = random.Random(seed)
    vault_dir = settings.vault_dir
    Store.create(vault_dir, passphrase, settings=settings).close()
    env = dict(os.environ, PYTHONPATH=str(REPO))
    confirmed = 0
    stats = {"runs": 0, "unconfirmed_tail": 0}
    for _ in range(n):
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(vault_dir), passphrase],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        assert child.stdout.readline() == b"ready\n", child.stderr.read().decode()
        time.sleep(rng.uniform(0.0, 0.25))
        child.send_signal(signal.SIGKILL)
        # Read on through the buffer readline() filled: communicate() reads the raw pipe and
        # would miss the lines the child wrote before readline() ran (it is dead by now).
        out = child.stdout.read()
        child.communicate(timeout=30)
        lines = out.decode().split("\n")[:-1]
        done = [int(x.split()[1]) for x in lines if x.startswith("audit ")]
        if done:
            confirmed = done[-1] + 1
        old = audit.SEGMENT_ENTRIES
        audit.SEGMENT_ENTRIES = 5
        try:
            with Store.open(vault_dir, passphrase, settings=settings) as store:
                log = AuditLog(store)
                result = log.verify()
                assert result.ok, result.summary()
                assert confirmed <= result.count <= confirmed + 1
                stats["unconfirmed_tail"] += bool(result.notes)
                assert [e.seq for e in log.entries()] == list(range(result.count))
                entry = log.append("unlock")  # the next writer continues the chain
                confirmed = entry.seq + 1
                assert log.verify().ok
        finally:
            audit.SEGMENT_ENTRIES = old
        stats["runs"] += 1
    stats["entries"] = confirmed
    return stats


def test_audit_survives_sigkill(settings, passphrase) -> None:
    stats = _runs(8, settings, passphrase, seed=8)
    assert stats["runs"] == 8 and stats["entries"] > 8


@pytest.mark.slow
def test_audit_survives_sigkill_200_times(settings, passphrase) -> None:
    stats = _runs(200, settings, passphrase, seed=200)
    assert stats["runs"] == 200
