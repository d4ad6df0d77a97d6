"""Backups to real servers on 127.0.0.1 and restores onto a fresh PHYASSIST_HOME.

Two targets at once (SFTP and S3, both ``rclone serve``), incremental runs, restore of
every patient / note / blob (adapters) / audit entry, restore over an existing vault,
a recovery-code restore, and a scan of every byte that reached the servers.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from engine.backup.restore import MARKER_BLOB
from engine.backup.state import load_state
from engine.backup.targets import load_targets
from engine.records import AnalysisDraft, BasicInfo, Item, Note
from engine.settings import load_settings
from engine.trust.audit import AuditLog
from engine.vault.store import Store
from phyassist_tui.cli import main

PASSPHRASE = "correct horse battery"


def _secrets() -> dict[str, str]:
    u = uuid.uuid4().hex[:10]
    return {
        "name": f"Qwxname{u}",
        "name_zh": f"龘靐齉{u}",
        "statement": f"我觉得活着没意思{u}紫藤萝瀑布",
        "reason": f"Qwxreason{u}",
        "advice": f"建议规律作息{u}",
        "adapter": f"Qwxadapter{u}",
        "changed": f"Qwxchanged{u} 新的陈述",
    }


def _note(text: str, reason: str, advice: str) -> Note:
    return Note(
        question=text,
        analysis=AnalysisDraft(
            symptom_type=Item(text="焦虑", draft="焦虑"),
            reasons=[Item(text=reason, draft=reason)],
            advice=[Item(text=advice, draft=advice)],
            raw_output=f"{reason}\n{advice}",
            model_name="test",
        ),
    )


def _fill(secrets: dict[str, str], patients: int = 6) -> list[str]:
    """A vault with patients, notes, an adapter-like blob and audit entries."""
    from engine.trust.audit import record

    cfg = load_settings()
    Store.create(cfg.vault_dir, PASSPHRASE, settings=cfg).close()
    ids = []
    with Store.open(cfg.vault_dir, PASSPHRASE, settings=cfg) as store:
        for i in range(patients):
            p = store.create_patient(
                f"{secrets['name']}{i} {secrets['name_zh']}",
                BasicInfo(mental_state=f"{secrets['statement']} basic"),
            )
            for j in range(3):
                store.add_note(
                    p.id, _note(f"{secrets['statement']} {j}", secrets["reason"], secrets["advice"])
                )
            store.write_blob(p.id, "adapter/v1/weights", (secrets["adapter"] * 500).encode())
            record(store, "patient_created", p.id, "test")
            ids.append(p.id)
    return ids


def _train_like(patient_id: str, secrets: dict[str, str]) -> None:
    """A real adapter version through the product's registry (as training stores it)."""
    torch = pytest.importorskip("torch")
    from engine.model.adapters import AdapterRegistry

    cfg = load_settings()
    with Store.open(cfg.vault_dir, PASSPHRASE, settings=cfg) as store:
        AdapterRegistry(store).save(
            patient_id,
            {"r": 4, "lora_alpha": 8, "base_model_name_or_path": "test"},
            {"base_model.lora_A.weight": torch.tensor(list(secrets["adapter"].encode()))},
            card={"trained_on": secrets["statement"], "notes": 3},
        )


def _contents(vault_dir: Path) -> dict:
    """Everything a counselor has in the vault, decrypted, for comparison."""
    cfg = load_settings()
    with Store.open(vault_dir, PASSPHRASE, writer=False, settings=cfg) as store:
        out = {"patients": {}, "audit": [e.to_line() for e in AuditLog(store).entries()]}
        for summary in store.list_patients():
            p = store.load_patient(summary.id)
            out["patients"][p.id] = {
                "record": p.model_dump(mode="json"),
                "blobs": {k: store.read_blob(p.id, k) for k in store.list_blobs(p.id)},
            }
        return out


def _use_home(monkeypatch: pytest.MonkeyPatch, home: Path) -> None:
    monkeypatch.setenv("PHYASSIST_HOME", str(home))


def test_two_targets_backup_incremental_and_restore_on_fresh_home(
    env, serve, scan_for, monkeypatch, tmp_path, capsys
):
    secrets = _secrets()
    sftp, s3 = serve("sftp"), serve("s3")
    ids = _fill(secrets)
    _train_like(ids[1], secrets)
    monkeypatch.setenv("PHYASSIST_BACKUP_SECRET", sftp.secret)
    assert main(["backup", "init", sftp.url, "--name", "nas", "--no-sheet"]) == 0
    monkeypatch.setenv("PHYASSIST_BACKUP_SECRET", s3.secret)
    assert main(["backup", "init", s3.url, "--name", "cloud"]) == 0
    sheet = capsys.readouterr().out
    assert "Recovery code:" in sheet and sftp.url in sheet and s3.url in sheet
    assert sftp.secret not in sheet and s3.secret not in sheet

    assert main(["backup", "run"]) == 0
    first = capsys.readouterr().out
    assert first.count("(full)") == 2

    # One changed note: the next run sends only the changed files and a small delta list.
    cfg = load_settings()
    with Store.open(cfg.vault_dir, PASSPHRASE, settings=cfg) as store:
        store.add_note(ids[0], _note(secrets["changed"], secrets["reason"], secrets["advice"]))
    assert main(["backup", "run"]) == 0
    second = capsys.readouterr().out
    assert second.count("(incremental)") == 2
    sent = [int(line.split(" files, ")[1].split(" bytes")[0]) for line in second.splitlines()]
    vault_bytes = sum(f.stat().st_size for f in cfg.vault_dir.rglob("*") if f.is_file())
    assert all(b < vault_bytes / 4 for b in sent), (sent, vault_bytes)
    state = load_state(cfg.data_dir)
    assert state["nas"].last_success and state["cloud"].last_success
    assert not state["nas"].last_error

    assert main(["backup", "verify", "--deep"]) == 0
    original = _contents(cfg.vault_dir)
    assert len(original["patients"]) == 6

    # Nothing readable reached either server, nor the local backup bookkeeping.
    hits = scan_for([sftp.root, s3.root, cfg.data_dir / "backup"], list(secrets.values()))
    assert hits == []

    # A new machine: only the target, its secret and the passphrase.
    for server, name in ((sftp, "fresh-sftp"), (s3, "fresh-s3")):
        home = tmp_path / name
        _use_home(monkeypatch, home)
        monkeypatch.setenv("PHYASSIST_BACKUP_SECRET", server.secret)
        assert main(["backup", "restore", "--from", server.url]) == 0
        restored_dir = load_settings().vault_dir
        got = _contents(restored_dir)
        assert got["patients"] == original["patients"]
        with Store.open(restored_dir, PASSPHRASE, writer=False) as store:
            from engine.model.adapters import AdapterRegistry

            registry = AdapterRegistry(store)
            assert registry.active(ids[1]) == 1
            _config, tensors = registry.read(ids[1], 1)
            assert (
                bytes(tensors["base_model.lora_A.weight"].tolist()) == secrets["adapter"].encode()
            )
        assert got["audit"][: len(original["audit"])] == original["audit"]
        last = json.loads(got["audit"][-1])
        assert last["action"] == "vault_restored"
        with Store.open(restored_dir, PASSPHRASE, writer=False) as store:
            marker = json.loads(store.read_vault_blob(MARKER_BLOB))
            known = [t.name for t in load_targets(store)]
        assert marker["replaced"] is None and marker["audit_seq"] == last["seq"]
        assert set(known) == {"nas", "cloud"}  # the restored vault goes on backing up
        # ... incrementally, under the names it had.
        assert main(["backup", "run"]) == 0
        assert "(incremental)" in capsys.readouterr().out
    capsys.readouterr()


def test_two_runs_in_one_second_restore_the_newer(env, tmp_path, monkeypatch, capsys):
    """A restore takes the newest snapshot even when two runs share a clock second.

    Ids were stamped to the second plus a random suffix, so a restore after two quick runs
    took the older one half the time and the last note was silently missing.
    """
    from datetime import UTC, datetime
    from types import SimpleNamespace

    from engine.backup import snapshots

    secrets = _secrets()
    ids = _fill(secrets, patients=1)
    frozen = datetime(2026, 12, 5, 18, 0, 0, 500_000, tzinfo=UTC)

    class Clock(datetime):
        @classmethod
        def now(cls, tz=None):
            return frozen

    countdown = iter(range(10_000, 0, -1))  # each suffix sorts before the one before it
    monkeypatch.setattr(snapshots, "datetime", Clock)
    monkeypatch.setattr(
        snapshots, "secrets", SimpleNamespace(token_hex=lambda n: f"{next(countdown):0{2 * n}x}")
    )
    assert main(["backup", "init", str(tmp_path / "usb"), "--name", "usb", "--no-sheet"]) == 0
    assert main(["backup", "run"]) == 0
    cfg = load_settings()
    with Store.open(cfg.vault_dir, PASSPHRASE, settings=cfg) as store:
        store.add_note(ids[0], _note(secrets["changed"], secrets["reason"], secrets["advice"]))
    assert main(["backup", "run"]) == 0
    original = _contents(cfg.vault_dir)
    capsys.readouterr()

    _use_home(monkeypatch, tmp_path / "fresh")
    assert main(["backup", "restore", "--from", str(tmp_path / "usb")]) == 0
    got = _contents(load_settings().vault_dir)
    assert got["patients"] == original["patients"]
    assert len(got["patients"][ids[0]]["record"]["notes"]) == 4


def test_restore_over_newer_vault_is_explicit_and_audited(env, tmp_path, monkeypatch, capsys):
    secrets = _secrets()
    _fill(secrets, patients=2)
    target = tmp_path / "usb"
    assert main(["backup", "init", str(target), "--name", "usb", "--no-sheet"]) == 0
    assert main(["backup", "run"]) == 0
    cfg = load_settings()
    with Store.open(cfg.vault_dir, PASSPHRASE, settings=cfg) as store:
        newer = store.create_patient("Later patient")
        AuditLog(store).append("patient_created", newer.id, "after the backup")
    newer_contents = _contents(cfg.vault_dir)
    capsys.readouterr()

    # Without --replace nothing happens.
    assert main(["backup", "restore", "--target", "usb"]) == 1
    assert "--replace" in capsys.readouterr().err
    assert _contents(cfg.vault_dir) == newer_contents

    assert main(["backup", "restore", "--target", "usb", "--replace"]) == 0
    out = capsys.readouterr().out
    assert "OLDER" in out and "kept at" in out
    restored = _contents(cfg.vault_dir)
    assert newer.id not in restored["patients"]
    last = json.loads(restored["audit"][-1])
    assert last["action"] == "vault_restored" and "rollback by restore" in last["detail"]
    with Store.open(cfg.vault_dir, PASSPHRASE, writer=False, settings=cfg) as store:
        marker = json.loads(store.read_vault_blob(MARKER_BLOB))
    assert marker["older_than_replaced"] is True
    assert marker["replaced"]["audit_count"] == len(newer_contents["audit"])
    kept = Path(out.split("kept at ")[1].split()[0].rstrip("."))
    assert _contents(kept) == newer_contents  # the replaced vault is whole, aside
    # The hook for the rollback detection: a genuine marker, bound to its audit entry.
    from engine.backup.restore import read_restore_marker

    with Store.open(cfg.vault_dir, PASSPHRASE, settings=cfg) as store:
        assert read_restore_marker(store)["snapshot"] == marker["snapshot"]
        forged = dict(marker, audit_hash="0" * 64)
        store.write_vault_blob(MARKER_BLOB, json.dumps(forged).encode())
        assert read_restore_marker(store) is None
    with Store.open(kept, PASSPHRASE, writer=False, settings=cfg) as store:
        assert read_restore_marker(store) is None  # never restored


def test_recovery_code_restores_without_the_header_copy(env, tmp_path, monkeypatch, capsys):
    secrets = _secrets()
    _fill(secrets, patients=1)
    target = tmp_path / "usb"
    assert main(["backup", "init", str(target), "--name", "usb"]) == 0
    code = capsys.readouterr().out.split("Recovery code: ")[1].split()[0]
    assert main(["backup", "run"]) == 0
    original = _contents(load_settings().vault_dir)
    (target / "phyassist-vault.json").unlink()  # the plaintext copy is gone

    _use_home(monkeypatch, tmp_path / "fresh")
    assert main(["backup", "restore", "--from", str(target)]) == 1
    assert "no PhyAssist backup" in capsys.readouterr().err
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO(code + "\n"))
    assert main(["backup", "restore", "--from", str(target), "--recovery-code"]) == 0
    assert _contents(load_settings().vault_dir)["patients"] == original["patients"]
    # A wrong code opens nothing.
    _use_home(monkeypatch, tmp_path / "fresh2")
    monkeypatch.setattr("sys.stdin", io.StringIO("A" * 52 + "\n"))
    assert main(["backup", "restore", "--from", str(target), "--recovery-code"]) == 1
    assert not (tmp_path / "fresh2" / "data" / "vault").exists()


def test_tampered_backup_is_refused_and_nothing_is_restored(env, tmp_path, monkeypatch, capsys):
    _fill(_secrets(), patients=2)
    target = tmp_path / "usb"
    assert main(["backup", "init", str(target), "--name", "usb", "--no-sheet"]) == 0
    assert main(["backup", "run"]) == 0
    # Swap two encrypted objects at the target: each is valid rclone-crypt, wrong content.
    objects = sorted(
        p for p in (target / "data").rglob("*") if p.is_file() and p.stat().st_size > 200
    )
    a, b = objects[0], objects[1]
    da, db = a.read_bytes(), b.read_bytes()
    a.write_bytes(db)
    b.write_bytes(da)
    capsys.readouterr()
    assert main(["backup", "verify", "--deep"]) == 1
    _use_home(monkeypatch, tmp_path / "fresh")
    assert main(["backup", "restore", "--from", str(target)]) == 1
    err = capsys.readouterr().err
    assert "tampered" in err or "failed" in err
    data_dir = tmp_path / "fresh" / "data"
    assert not (data_dir / "vault").exists()
    assert not any(p.name.startswith("vault.restoring-") for p in data_dir.iterdir())


def test_wrong_passphrase_restores_nothing(env, tmp_path, monkeypatch, capsys):
    _fill(_secrets(), patients=1)
    target = tmp_path / "usb"
    assert main(["backup", "init", str(target), "--no-sheet"]) == 0
    assert main(["backup", "run"]) == 0
    _use_home(monkeypatch, tmp_path / "fresh")
    monkeypatch.setenv("PHYASSIST_PASSPHRASE", "not the passphrase")
    capsys.readouterr()
    assert main(["backup", "restore", "--from", str(target)]) == 1
    assert "Wrong passphrase" in capsys.readouterr().err
    assert not (tmp_path / "fresh" / "data" / "vault").exists()


def test_tamper_message_names_the_restore_command():
    from engine.errors import TamperedFile

    assert "phyassist backup restore" in str(TamperedFile("x/record.bin"))


def test_a_tampered_record_is_repaired_by_the_restore_its_message_names(
    env, tmp_path, monkeypatch, capsys
):
    secrets = _secrets()
    ids = _fill(secrets, patients=2)
    assert main(["backup", "init", str(tmp_path / "usb"), "--name", "usb", "--no-sheet"]) == 0
    assert main(["backup", "run"]) == 0
    cfg = load_settings()
    record = cfg.vault_dir / "patients" / ids[0] / "record.bin"
    data = bytearray(record.read_bytes())
    data[-5] ^= 1
    record.write_bytes(bytes(data))
    capsys.readouterr()
    assert main(["patients", "show", ids[0]]) == 1
    err = capsys.readouterr().err
    assert "phyassist backup restore" in err
    assert main(["backup", "restore", "--target", "usb", "--replace"]) == 0
    assert main(["patients", "show", ids[0]]) == 0
    assert secrets["statement"] in capsys.readouterr().out


def test_obscure_matches_rclone():
    import subprocess

    from engine.backup.rclone import obscure, rclone_binary

    secret = "pässwörd 龘 with spaces"
    # "--": one obscured form in 64 starts with "-" (base64url), which rclone read as a flag
    out = subprocess.run(
        [rclone_binary(), "reveal", "--", obscure(secret)],
        capture_output=True,
        text=True,
        env={"RCLONE_CONFIG": ""},
        check=True,
    ).stdout
    assert out.rstrip("\n") == secret


def test_scan_reads_again_a_file_rewritten_within_the_same_timestamp(tmp_path):
    """A vault file rewritten right after a scan, same size, same mtime (one timestamp tick),
    same inode: the next scan must not reuse the old digest, or the incremental backup skips
    the change and a restore silently lacks it."""
    import os

    from engine.backup.snapshots import scan

    vault, data = tmp_path / "vault", tmp_path / "data"
    vault.mkdir()
    record = vault / "record.bin"
    record.write_bytes(b"note one")
    first = scan(vault, data)
    st = record.stat()
    with open(record, "r+b") as fh:  # same size, same inode
        fh.write(b"note two")
    os.utime(record, ns=(st.st_atime_ns, st.st_mtime_ns))  # the same tick
    assert scan(vault, data)["record.bin"][0] != first["record.bin"][0]
