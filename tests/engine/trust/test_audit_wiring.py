"""The audit hook (``engine.trust.audit.record``) and the places that call it.

``record`` must never turn a successful action into an error; the CLI commands and the
training runner must leave one entry per action, with no clinical text in the entry.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.records import AnalysisDraft, Item, Note
from engine.settings import Settings
from engine.trust.audit import AuditLog, record
from engine.vault.store import Store
from phyassist_tui.cli import main
from tests.support import REPO

SECRET = "Zqv-secret-statement-7731"


def _actions(store: Store) -> list[tuple[str, str | None, str]]:
    return [(e.action, e.patient_id, e.detail) for e in AuditLog(store).entries()]


# -- the hook --------------------------------------------------------------------------------


def test_record_appends_on_a_writer(store: Store) -> None:
    pid = store.create_patient("Hook").id
    entry = record(store, "patient_opened", pid, "tui")
    assert entry is not None and entry.action == "patient_opened" and entry.patient_id == pid
    assert _actions(store) == [("patient_opened", pid, "tui")]
    assert AuditLog(store).verify().ok


def test_record_never_raises(store: Store, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="engine.trust.audit")
    assert record(None, "export") is None
    assert record(store, "Not An Action!") is None  # InputRejected -> warning
    assert record(store, "export", "not-a-patient-id") is None
    store.write_vault_blob("audit/head", b"garbage")  # a damaged log refuses appends
    assert record(store, "export", None, SECRET) is None
    store.close()
    assert record(store, "export") is None  # VaultClosed
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 4 and all("not recorded" in w for w in warnings)
    assert not any(SECRET in w for w in warnings)  # the detail is never logged


def test_record_through_a_read_only_handle(settings: Settings, store: Store, reopen) -> None:
    pid = store.create_patient("Reader").id
    store.close()
    reader = reopen(writer=False)
    try:
        assert record(reader, "patient_opened", pid, "cli show") is not None
        assert not reader.writer  # still read-only afterwards
        writer = reopen()  # the temporary lock was released
        writer.close()
    finally:
        reader.close()
    with reopen() as writer:
        assert _actions(writer) == [("patient_opened", pid, "cli show")]


def test_record_read_only_while_another_writer_holds_the_vault(
    store: Store, reopen, caplog: pytest.LogCaptureFixture
) -> None:
    pid = store.create_patient("Busy").id
    reader = reopen(writer=False)
    try:
        with caplog.at_level(logging.WARNING, logger="engine.trust.audit"):
            assert record(reader, "patient_opened", pid) is None
        assert any("VaultBusy" in r.getMessage() for r in caplog.records)
    finally:
        reader.close()
    assert _actions(store) == []
    assert record(store, "lock") is not None  # the writer is unaffected


# -- the CLI ---------------------------------------------------------------------------------


@pytest.fixture
def cli_vault(settings: Settings, passphrase: str, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("PHYASSIST_STORE__SCRYPT_LOG2_N", "10")
    monkeypatch.setenv("PHYASSIST_PASSPHRASE", passphrase)
    Store.create(settings.vault_dir, passphrase, settings=settings).close()
    return settings


def _log(settings: Settings, passphrase: str) -> list[tuple[str, str | None, str]]:
    with Store.open(settings.vault_dir, passphrase, writer=False, settings=settings) as store:
        assert AuditLog(store).verify().ok
        return _actions(store)


def test_cli_patient_commands_are_audited(
    cli_vault: Settings, passphrase: str, capsys: pytest.CaptureFixture, monkeypatch
) -> None:
    assert main(["patients", "add", SECRET]) == 0
    pid = capsys.readouterr().out.strip()
    assert main(["patients", "show", pid[:8]]) == 0
    assert main(["patients", "list"]) == 0  # listing opens no patient
    new = "another passphrase 2"
    monkeypatch.setenv("PHYASSIST_NEW_PASSPHRASE", new)
    assert main(["passwd"]) == 0
    monkeypatch.setenv("PHYASSIST_PASSPHRASE", new)
    assert main(["patients", "delete", pid[:8], "--yes"]) == 0
    assert _log(cli_vault, new) == [
        ("patient_created", pid, "cli"),
        ("patient_opened", pid, "cli show"),
        ("passphrase_changed", None, "cli"),
        ("patient_deleted", pid, "cli"),
    ]


def test_cli_show_still_works_while_the_vault_is_busy(
    cli_vault: Settings, passphrase: str, capsys: pytest.CaptureFixture
) -> None:
    with Store.open(cli_vault.vault_dir, passphrase, settings=cli_vault) as writer:
        pid = writer.create_patient("Busy").id
        assert main(["patients", "show", pid[:8]]) == 0  # the show succeeds...
        assert "# Busy" in capsys.readouterr().out
        assert _actions(writer) == []  # ...but the TUI-like writer owns the log


def _tiny_adapter() -> tuple[dict, dict]:
    import torch

    config = {"peft_type": "LORA", "r": 2, "lora_alpha": 4, "target_modules": ["q_proj"]}
    state = {
        "base_model.model.layers.0.self_attn.q_proj.lora_A.weight": torch.zeros(2, 8),
        "base_model.model.layers.0.self_attn.q_proj.lora_B.weight": torch.zeros(8, 2),
    }
    return config, state


def test_cli_adapter_rollback_and_export_are_audited(
    cli_vault: Settings, passphrase: str, tmp_path: Path
) -> None:
    from engine.training.runner import store_adapter

    with Store.open(cli_vault.vault_dir, passphrase, settings=cli_vault) as store:
        pid = store.create_patient("Adapters").id
        config, state = _tiny_adapter()
        for _ in range(2):
            store_adapter(store, pid, config, state, {}, cli_vault)
    assert main(["adapter", "rollback", pid[:8], "--yes"]) == 0
    out = tmp_path / "exported"
    assert main(["adapter", "export", pid[:8], "--out", str(out), "--yes"]) == 0
    assert (out / "adapter_model.safetensors").is_file()
    assert _log(cli_vault, passphrase) == [
        ("adapter_activated", pid, "rollback v2->v1"),
        ("export", pid, "adapter vactive"),
    ]


# -- the training runner -----------------------------------------------------------------------

FAKE_WORKER = """
import base64, json, sys
from pathlib import Path
import torch
from engine.model.adapters import pack_adapter
from engine.vault.crypto import seal
from engine.training.worker import _write_staging, transfer_aad

job = json.loads(sys.stdin.read())
key = base64.b64decode(job["transfer_key"])
config = {"peft_type": "LORA", "r": 2, "lora_alpha": 4, "target_modules": ["q_proj"]}
state = {"base_model.model.layers.0.self_attn.q_proj.lora_A.weight": torch.zeros(2, 8)}
sealed = seal(key, pack_adapter(config, state), transfer_aad(job["run_id"], job["patient_id"]))
_write_staging(Path(job["staging_path"]), sealed)
print(json.dumps({"phase": "done", "steps": 1, "final_loss": 0.5}), flush=True)
"""


def test_training_success_is_audited(store: Store, settings: Settings, tmp_path: Path) -> None:
    """The runner's success path appends ``adapter_trained`` (a stand-in worker, no model)."""
    from engine.training.runner import TrainingRun

    script = tmp_path / "fake_worker.py"
    script.write_text(FAKE_WORKER)
    python = tmp_path / "python"
    python.write_text(f"#!/bin/sh\nexec {sys.executable} {script}\n")
    python.chmod(0o700)
    patient = store.create_patient("Trained")
    analysis = AnalysisDraft(symptom_type=Item(text="low mood"), advice=[Item(text="walk")])
    store.add_note(patient.id, Note(question=SECRET, analysis=analysis))

    run = TrainingRun(store, patient.id, settings, python=str(python))
    phases = [e.phase for e in run.events()]
    assert phases[-1] == "stored" and run.result is not None
    assert _actions(store) == [("adapter_trained", patient.id, f"v{run.result.version}")]

    # a failing run records nothing
    python.write_text("#!/bin/sh\nexit 3\n")
    with pytest.raises(Exception, match="ended unexpectedly"):
        list(TrainingRun(store, patient.id, settings, python=str(python)).events())
    assert len(_actions(store)) == 1


# -- hardening at the entry points -------------------------------------------------------------


def _status_field(pid: int, name: str) -> str | None:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(name + ":"):
            return line.split(":", 1)[1].strip()
    return None


def _wait_for_umask(proc: subprocess.Popen, want: str, timeout: float = 60) -> str | None:
    deadline = time.monotonic() + timeout
    seen = None
    while time.monotonic() < deadline and proc.poll() is None:
        seen = _status_field(proc.pid, "Umask")
        if seen == want:
            return seen
        time.sleep(0.05)
    return seen


def _umask_022() -> None:
    os.umask(0o022)


needs_proc_umask = pytest.mark.skipif(
    _status_field(os.getpid(), "Umask") is None, reason="no Umask in /proc/<pid>/status"
)


@needs_proc_umask
def test_training_worker_hardens_itself(tmp_path: Path) -> None:
    """``python -m engine.training.worker`` sets umask 077 before reading its job."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine.training.worker"],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        cwd=tmp_path,
        preexec_fn=_umask_022,
    )
    try:
        assert _wait_for_umask(proc, "0077") == "0077"  # blocked reading stdin, hardened
    finally:
        proc.kill()
        proc.wait()


def test_cli_console_entry_hardens_but_in_process_main_does_not(tmp_path: Path) -> None:
    code = (
        "import os, sys\n"
        "from engine.trust.hardening import is_dumpable\n"
        "from phyassist_tui.cli import main\n"
        "main(['patients'])\n"  # in-process call with argv: untouched
        "print(oct(os.umask(0o077)), is_dumpable())\n"
        "sys.argv = ['phyassist', 'patients']\n"
        "main()\n"  # the console-script path
        "print(oct(os.umask(0o077)), is_dumpable())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=REPO,
        preexec_fn=_umask_022,
        timeout=120,
    )
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("0o")]
    assert lines[0].split()[0] == "0o22"
    assert lines[1].split()[0] == "0o77"
    if sys.platform.startswith("linux"):
        assert lines[0].split()[1] == "True" and lines[1].split()[1] == "False"
