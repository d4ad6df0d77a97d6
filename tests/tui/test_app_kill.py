"""SIGKILL the running app at random moments while it does a counselor's work.

``app_kill_driver.py`` runs the real Textual app headless on the real vault (patients created
through the form, notes generated, edited, autosaved and saved, chat, risk acknowledgements)
and acknowledges every vault write on a pipe after it returned. The parent kills it at a
random moment (sometimes while it is still starting or unlocking), then reopens the vault:

* every acknowledged patient and note is there (none lost), nothing is duplicated;
* every patient record and every blob decrypts, ``damaged_patients()`` is empty and the
  index agrees with the records (``Store.open`` repairs it when the kill left it behind);
* the draft autosave and the chat history are readable or cleanly absent, and at least as
  new as the last acknowledged write;
* the audit log verifies, and the next run of the app unlocks the same vault.

Runs: ``PHYASSIST_KILL_RUNS`` (default 4 here; 200 in the slow test unless set).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest

from engine.records import AnalysisDraft, BasicInfo, Note
from engine.trust.audit import AuditLog
from engine.vault.chat import load_history
from engine.vault.store import Store
from tests.support import REPO

ROOT = REPO
DRIVER = "tests.tui.app_kill_driver"  # run as a module of this checkout (PYTHONPATH=ROOT)
PASSPHRASE = "correct horse battery"  # the fake-engine helpers unlock with this one


def kill_runs(default: int) -> int:
    return int(os.environ.get("PHYASSIST_KILL_RUNS", default))


def progress(stats: dict) -> None:
    """One JSON line per run to ``PHYASSIST_KILL_LOG`` (if set): a long run can be followed."""
    path = os.environ.get("PHYASSIST_KILL_LOG")
    if path:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"t": round(time.time(), 1), **stats}) + "\n")


def _read_acks(fd: int) -> list[str]:
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks).decode("utf-8").split("\n")[:-1]  # complete lines only


class Expected:
    """What the app acknowledged across all runs so far."""

    def __init__(self) -> None:
        self.patients: set[str] = set()
        self.notes: dict[str, list[str]] = {}  # patient id -> markers, in save order
        self.blob: dict[tuple[str, str], str | None] = {}  # last acked sha256 (None: deleted)

    def take(self, lines: list[str]) -> dict[str, int]:
        counts = {"note": 0, "blob": 0, "patient": 0, "delete": 0}
        for line in lines:
            kind, _, rest = line.partition(" ")
            if kind == "patient":
                self.patients.add(rest)
            elif kind == "note":
                pid, marker = rest.split(" ")
                self.notes.setdefault(pid, []).append(marker)
            elif kind == "blob":
                pid, blob_kind, digest = rest.split(" ")
                self.blob[(pid, blob_kind)] = digest
            elif kind == "delete":
                pid, blob_kind = rest.split(" ")
                self.blob[(pid, blob_kind)] = None
            if kind in counts:
                counts[kind] += 1
        return counts


def _check_vault(settings, expected: Expected, stats: dict) -> None:
    vault_dir = settings.vault_dir
    with Store.open(vault_dir, PASSPHRASE, settings=settings) as store:  # the lock is free
        stats["repaired_opens"] += store.index_repaired > 0
        assert store.damaged_patients() == {}
        summaries = {s.id: s for s in store.list_patients()}
        assert expected.patients <= set(summaries), "an acknowledged patient was lost"
        for pid, summary in summaries.items():
            patient = store.load_patient(pid)  # decrypts
            assert summary.note_count == len(patient.notes), "index disagrees with the record"
            markers = [n.question.split(" ", 1)[0] for n in patient.notes]
            assert len(markers) == len(set(markers)), "a note was saved twice"
            acked = expected.notes.get(pid, [])
            missing = [m for m in acked if m not in markers]
            assert not missing, f"acknowledged notes lost: {missing}"
            # at most one note more than acknowledged: the save the kill interrupted
            assert len(markers) <= len(acked) + 1
            stats["unacked_note_kept"] += len(markers) == len(acked) + 1
            expected.notes[pid] = markers
            for kind in store.list_blobs(pid):
                data = store.read_blob(pid, kind)  # decrypts and authenticates
                assert data is not None
                if kind == "draft":
                    payload = json.loads(data.decode("utf-8"))
                    assert payload["version"] == 1
                    if payload.get("draft") is not None:
                        AnalysisDraft.model_validate(payload["draft"])
                    stats["drafts_seen"] += 1
                if kind == "chat":
                    history = load_history(store, pid)
                    assert len(history) % 2 == 0
            for (bpid, kind), digest in list(expected.blob.items()):
                if bpid != pid:
                    continue
                data = store.read_blob(pid, kind)
                now = hashlib.sha256(data).hexdigest() if data is not None else None
                if now != digest:
                    # only a later, unacknowledged write may have replaced the acked state
                    stats["unacked_blob_write"] += 1
                    if kind == "chat" and digest is not None:
                        assert data is not None, "an acknowledged chat history vanished"
                expected.blob[(bpid, kind)] = now
        result = AuditLog(store).verify()
        assert result.ok, result.summary()
        saved = sum(1 for e in AuditLog(store).entries() if e.action == "note_saved")
        assert saved >= sum(len(v) for v in expected.notes.values()) - stats["seed_notes"]
        tmp = vault_dir / "tmp"
        assert not tmp.exists() or not list(tmp.iterdir())


def _kill_runs(settings, runs: int, seed: int) -> dict:
    rng = random.Random(seed)
    with Store.create(settings.vault_dir, PASSPHRASE, settings=settings) as store:
        first = store.create_patient("孙某", BasicInfo(demographics="19岁，学生"))
        store.add_note(first.id, Note(question="K0x0 第一次会谈：考试焦虑。"))
    expected = Expected()
    expected.patients.add(first.id)
    expected.notes[first.id] = ["K0x0"]
    stats = {
        "runs": 0,
        "killed_before_ready": 0,
        "acks": 0,
        "notes_acked": 0,
        "repaired_opens": 0,
        "unacked_note_kept": 0,
        "unacked_blob_write": 0,
        "drafts_seen": 0,
        "seed_notes": 1,
    }
    env = dict(os.environ, PYTHONPATH=str(ROOT), TZ="UTC")
    for run in range(1, runs + 1):
        read_fd, write_fd = os.pipe()
        os.set_blocking(read_fd, False)
        child = subprocess.Popen(
            [
                sys.executable,
                "-m",
                DRIVER,
                str(settings.vault_dir),
                PASSPHRASE,
                str(write_fd),
                str(seed * 100_000 + run),
                str(run),
            ],
            pass_fds=(write_fd,),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
        )
        os.close(write_fd)
        early = rng.random() < 0.1  # kill while starting / unlocking
        lines: list[str] = []
        deadline = time.monotonic() + 120
        delay = rng.uniform(0.0, 2.5) if early else None
        started = time.monotonic()
        while delay is None:
            lines += _read_acks(read_fd)
            if "ready" in lines:
                delay = rng.uniform(0.0, 10.0)
                started = time.monotonic()
                break
            if child.poll() is not None:
                raise AssertionError(f"driver exited: {child.stderr.read().decode()[-3000:]}")
            assert time.monotonic() < deadline, "driver never got ready"
            time.sleep(0.02)
        while time.monotonic() - started < delay:
            if child.poll() is not None:
                raise AssertionError(f"driver exited: {child.stderr.read().decode()[-3000:]}")
            time.sleep(0.01)
        child.send_signal(signal.SIGKILL)
        _out, err = child.communicate(timeout=30)
        assert child.returncode == -signal.SIGKILL, err.decode()[-3000:]
        lines += _read_acks(read_fd)
        os.close(read_fd)
        stats["killed_before_ready"] += "ready" not in lines
        counts = expected.take(lines)
        stats["acks"] += len(lines)
        stats["notes_acked"] += counts["note"]
        _check_vault(settings, expected, stats)
        stats["runs"] += 1
        progress(stats)
    stats["patients"] = len(expected.patients)
    stats["notes"] = sum(len(v) for v in expected.notes.values())
    return stats


def test_app_killed_at_random_moments_loses_nothing(settings) -> None:
    runs = kill_runs(4)
    stats = _kill_runs(settings, runs, seed=11)
    print(json.dumps(stats))
    assert stats["runs"] == runs
    assert stats["notes_acked"] > 0, stats  # the app really was saving when it was killed


@pytest.mark.slow
@pytest.mark.timeout(4 * 3600)
def test_app_killed_at_random_moments_loses_nothing_200_times(settings) -> None:
    runs = kill_runs(200)
    started = time.monotonic()
    stats = _kill_runs(settings, runs, seed=200)
    stats["seconds"] = round(time.monotonic() - started, 1)
    print(json.dumps(stats))
    assert stats["runs"] == runs
    assert stats["notes_acked"] > runs // 10, stats
