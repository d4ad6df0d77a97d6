"""Wrong passphrases back off, across processes and connections (issue 18, item 4)."""

from __future__ import annotations

import time

import pytest

from engine.errors import WrongPassphrase
from engine.vault import unlock_throttle
from engine.vault.store import Store
from engine.vault.unlock_throttle import FREE_FAILURES, UnlockThrottled


def test_repeated_wrong_passphrases_back_off_and_success_resets(
    store, reopen, settings, monkeypatch
):
    store.close()
    vault_dir = settings.vault_dir
    for _ in range(FREE_FAILURES):
        with pytest.raises(WrongPassphrase):
            Store.open(vault_dir, "not the passphrase", settings=settings)
    # then the wait starts
    with pytest.raises(UnlockThrottled, match="wait"):
        Store.open(vault_dir, "another guess", settings=settings)
    # even the right passphrase waits: the throttle is checked before the key derivation
    with pytest.raises(UnlockThrottled):
        reopen()
    # the state is on disk, so a fresh process (or a new browser connection) sees it too
    wait, failures = unlock_throttle.wait_needed(vault_dir)
    assert failures == FREE_FAILURES and 0 < wait <= 1.0
    real = time.time
    monkeypatch.setattr(unlock_throttle.time, "time", lambda: real() + 3)
    with reopen() as again:
        assert again.list_patients() == []
    assert unlock_throttle.wait_needed(vault_dir) == (0.0, 0)


def test_the_wait_doubles_and_is_capped(tmp_path):
    vault_dir = tmp_path / "vault"
    now = 1000.0
    path = unlock_throttle.throttle_path(vault_dir)
    path.write_text(f"{FREE_FAILURES + 3} {now}\n")
    assert unlock_throttle.wait_needed(vault_dir, now=now)[0] == 8.0
    path.write_text(f"{FREE_FAILURES + 30} {now}\n")
    assert unlock_throttle.wait_needed(vault_dir, now=now)[0] == unlock_throttle.MAX_WAIT_S
