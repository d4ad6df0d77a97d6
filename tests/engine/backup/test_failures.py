"""Targets that are down, refuse or are full; SIGKILL during a backup and during a restore.

Every case: a clear message, exit status 75 (try later) or 1, nothing lost, and the next
run or restore succeeds. Kills hit real ``phyassist backup`` processes at random moments.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.backup.rclone import TargetFull, TargetRefused, TargetUnavailable, classify
from engine.backup.state import load_state
from engine.records import Note
from engine.settings import load_settings
from engine.vault.store import Store
from phyassist_tui.cli import main
from tests.support import REPO

PASSPHRASE = "correct horse battery"
KILL_RUNS = int(os.environ.get("PHYASSIST_KILL_RUNS", "3"))


def _fill(patients: int = 4, blob_kib: int = 0) -> None:
    cfg = load_settings()
    with Store.create(cfg.vault_dir, PASSPHRASE, settings=cfg) as store:
        for i in range(patients):
            p = store.create_patient(f"Patient {i} 王")
            store.add_note(p.id, Note(question=f"statement {i} 我很焦虑"))
            if blob_kib:
                store.write_blob(p.id, "adapter/v1/weights", os.urandom(blob_kib * 1024))


def _contents(vault_dir: Path) -> dict:
    with Store.open(vault_dir, PASSPHRASE, writer=False) as store:
        out = {}
        for s in store.list_patients():
            out[s.id] = (
                store.load_patient(s.id).model_dump(mode="json"),
                {k: store.read_blob(s.id, k) for k in store.list_blobs(s.id)},
            )
        return out


def test_target_down_then_back(env, serve, monkeypatch, capsys):
    sftp = serve("sftp")
    _fill()
    monkeypatch.setenv("PHYASSIST_BACKUP_SECRET", sftp.secret)
    assert main(["backup", "init", sftp.url, "--name", "nas", "--no-sheet"]) == 0
    sftp.stop()
    capsys.readouterr()
    assert main(["backup", "run"]) == 75  # EX_TEMPFAIL: cron / systemd retry later
    err = capsys.readouterr().err
    assert "'nas' is not reachable" in err and "retried" in err
    state = load_state(load_settings().data_dir)["nas"]
    assert "not reachable" in state.last_error and not state.last_success
    sftp.start()  # same port
    assert main(["backup", "run"]) == 0
    state = load_state(load_settings().data_dir)["nas"]
    assert state.last_success and not state.last_error


def test_wrong_credentials_are_refused_and_not_saved(env, serve, monkeypatch, capsys):
    from engine.backup.targets import load_targets

    sftp = serve("sftp")
    _fill(1)
    monkeypatch.setenv("PHYASSIST_BACKUP_SECRET", "wrong password")
    assert main(["backup", "init", sftp.url, "--name", "nas", "--no-sheet"]) == 1
    err = capsys.readouterr().err
    assert "refused" in err and "credentials" in err
    cfg = load_settings()
    with Store.open(cfg.vault_dir, PASSPHRASE, writer=False, settings=cfg) as store:
        assert load_targets(store) == []


def test_one_target_down_does_not_stop_the_other(env, serve, tmp_path, monkeypatch, capsys):
    sftp = serve("sftp")
    _fill(2)
    monkeypatch.setenv("PHYASSIST_BACKUP_SECRET", sftp.secret)
    assert main(["backup", "init", sftp.url, "--name", "nas", "--no-sheet"]) == 0
    assert main(["backup", "init", str(tmp_path / "usb"), "--name", "usb", "--no-sheet"]) == 0
    sftp.stop()
    capsys.readouterr()
    assert main(["backup", "run"]) == 75
    captured = capsys.readouterr()
    assert "usb: snapshot" in captured.out and "'nas' is not reachable" in captured.err


@pytest.mark.parametrize(
    ("stderr", "kind"),
    [
        (  # rclone's own lines for these conditions (local backend; S3 507; sftp auth)
            "2026/12/05 06:24:28 ERROR : ab/ab12: Failed to copy: write /mnt/usb/x.partial: "
            "no space left on device",
            TargetFull,
        ),
        ('{"level":"error","msg":"Failed to copy: QuotaExceeded: quota exceeded"}', TargetFull),
        (
            "CRITICAL: Failed to create file system: NewFs: couldn't connect SSH: ssh: "
            "handshake failed: ssh: unable to authenticate",
            TargetRefused,
        ),
        ("CRITICAL: NewFs: couldn't connect SSH: dial tcp: connection refused", TargetUnavailable),
    ],
)
def test_failure_messages(stderr, kind):
    exc = classify("nas", stderr)
    assert type(exc) is kind
    assert "'nas'" in str(exc)
    if kind is not TargetRefused:
        assert exc.retry_later and "Nothing was lost" in str(exc)


def _cli(args: list[str], home: Path) -> subprocess.Popen:
    env = {
        **os.environ,
        "PHYASSIST_HOME": str(home),
        "PHYASSIST_PASSPHRASE": PASSPHRASE,
        "PHYASSIST_STORE__SCRYPT_LOG2_N": "10",
        "PYTHONPATH": str(REPO),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "phyassist_tui", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _kill_after(proc: subprocess.Popen, delay: float | None) -> bool:
    """SIGKILL ``proc`` and its rclone child; True if it was still running when killed.

    ``delay`` seconds after the start, or with ``None`` the moment rclone is running (a kill
    mid-transfer on any machine, however fast: a random delay alone missed every run on CI).
    """
    if delay is None:
        while proc.poll() is None and not _children(proc.pid):
            time.sleep(0.005)
    else:
        time.sleep(delay)
    alive = proc.poll() is None
    if alive:
        for child in _children(proc.pid):
            with contextlib.suppress(ProcessLookupError):  # it ended between listing and kill
                os.kill(child, signal.SIGKILL)
        proc.kill()
    proc.wait()
    return alive


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(x) for x in text.split()]


def test_sigkill_during_backup_loses_nothing(env, serve, monkeypatch, tmp_path, capsys):
    sftp = serve("sftp")
    _fill(patients=12, blob_kib=512)
    monkeypatch.setenv("PHYASSIST_BACKUP_SECRET", sftp.secret)
    assert main(["backup", "init", sftp.url, "--name", "nas", "--no-sheet"]) == 0
    cfg = load_settings()
    rng = random.Random(os.getpid())
    killed = 0
    for run in range(KILL_RUNS):
        with Store.open(cfg.vault_dir, PASSPHRASE, settings=cfg) as store:
            p = store.create_patient(f"Added before kill {run}")
            store.write_blob(p.id, "adapter/v1/weights", os.urandom(512 * 1024))
        proc = _cli(["backup", "run"], env)
        killed += _kill_after(proc, None if run == 0 else rng.uniform(0.3, 2.5))
    assert killed >= 1, "no run was still going when killed; raise the delays"
    # The vault is untouched by a killed backup; the next run completes the snapshot.
    original = _contents(cfg.vault_dir)
    assert main(["backup", "run"]) == 0
    assert main(["backup", "verify", "--deep"]) == 0
    assert not any((cfg.data_dir / "backup" / "jobs").iterdir())  # stale job folders cleaned
    monkeypatch.setenv("PHYASSIST_HOME", str(tmp_path / "fresh"))
    assert main(["backup", "restore", "--from", sftp.url]) == 0
    assert _contents(load_settings().vault_dir) == original


def test_sigkill_during_restore_leaves_old_or_new_vault(env, tmp_path, monkeypatch, capsys):
    _fill(patients=10, blob_kib=768)
    target = tmp_path / "usb"
    assert main(["backup", "init", str(target), "--name", "usb", "--no-sheet"]) == 0
    assert main(["backup", "run"]) == 0
    cfg = load_settings()
    snapshot = _contents(cfg.vault_dir)
    with Store.open(cfg.vault_dir, PASSPHRASE, settings=cfg) as store:
        store.create_patient("Only in the newer vault")
    newer = _contents(cfg.vault_dir)
    rng = random.Random(os.getpid())
    fresh = tmp_path / "fresh"
    killed = 0
    for run in range(KILL_RUNS):
        # Onto an empty home: afterwards there is no vault, or the whole restored one.
        killed += _kill_after(_cli(["backup", "restore", "--from", str(target)], fresh),
                              None if run == 0 else rng.uniform(0.2, 2.0))  # fmt: skip
        vault = fresh / "data" / "vault"
        if vault.exists():
            assert _contents(vault) == snapshot
            break
    for run in range(KILL_RUNS):
        # Over a newer vault: afterwards it is the newer one whole, or the restored one whole.
        proc = _cli(["backup", "restore", "--target", "usb", "--replace"], env)
        killed += _kill_after(proc, None if run == 0 else rng.uniform(0.2, 2.0))
        got = _contents(cfg.vault_dir)
        assert got in (snapshot, newer)
        if got == snapshot:
            break
    assert killed >= 1
    # A later restore into the same home cleans what killed ones left and succeeds.
    monkeypatch.setenv("PHYASSIST_HOME", str(fresh))
    assert main(["backup", "restore", "--from", str(target), "--replace"]) == 0
    assert _contents(fresh / "data" / "vault") == snapshot
    assert not list((fresh / "data").glob("vault.restoring-*"))


def test_objects_lost_at_the_target_are_found_and_sent_again(env, tmp_path, capsys):
    _fill(patients=3)
    target = tmp_path / "usb"
    assert main(["backup", "init", str(target), "--name", "usb", "--no-sheet"]) == 0
    assert main(["backup", "run"]) == 0
    from engine.backup.targets import keys_of, load_targets, rclone_for

    cfg = load_settings()
    with Store.open(cfg.vault_dir, PASSPHRASE, writer=False, settings=cfg) as store:
        rc = rclone_for(load_targets(store)[0], keys_of(store))
    out = rc.run(["cryptdecode", "--reverse", rc.crypt_path(), "objects"], network=False)
    encrypted_objects_dir = out.stdout.decode().split()[-1]
    objects = sorted(p for p in (target / "data" / encrypted_objects_dir).rglob("*") if p.is_file())
    assert len(objects) >= 3
    for lost in objects[:3]:
        lost.unlink()
    capsys.readouterr()
    assert main(["backup", "verify"]) == 1
    assert "missing" in capsys.readouterr().err
    assert main(["backup", "run"]) == 0
    assert "(full)" in capsys.readouterr().out
    assert main(["backup", "verify", "--deep"]) == 0


def test_background_backup_retries_a_target_that_was_down(env, serve, monkeypatch):
    """The detached sender (lock / quit) tries a down target again after a delay."""
    from engine.backup import service

    sftp = serve("sftp")
    _fill(2)
    monkeypatch.setenv("PHYASSIST_BACKUP_SECRET", sftp.secret)
    assert main(["backup", "init", sftp.url, "--name", "nas", "--no-sheet"]) == 0
    sftp.stop()
    cfg = load_settings()
    with Store.open(cfg.vault_dir, PASSPHRASE, settings=cfg) as store:
        plan = service.plan_run(store, cfg.data_dir)
    plan.retry_delays_s = (3.0,)
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    proc = service.spawn_background(plan)
    deadline = time.monotonic() + 30
    while not load_state(cfg.data_dir)["nas"].last_error and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "not reachable" in load_state(cfg.data_dir)["nas"].last_error  # first try failed
    sftp.start()  # back before the retry
    assert proc.wait(60) == 0
    state = load_state(cfg.data_dir)["nas"]
    assert state.last_success and not state.last_error
    assert main(["backup", "verify", "--deep"]) == 0
