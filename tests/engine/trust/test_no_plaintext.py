"""No plaintext anywhere: patient text written through every path the product has (records,
notes, drafts, chat, adapters and their cards, audit log, a writer killed mid-save) never
appears in a file under PHYASSIST_HOME or the temp directory, in UTF-8, UTF-16/32 or as
JSON escapes. Files 0600, directories 0700. Deleting a patient leaves no trace of them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from engine.errors import InputRejected, PatientNotFound, TamperedFile
from engine.records import AnalysisDraft, BasicInfo, Item, Note
from engine.trust.audit import AuditLog
from engine.trust.doctor import _bad_modes
from engine.trust.risk import assess, risk_audit_detail
from engine.vault.chat import append_turn, load_history
from tests.support import REPO


def _secrets(tag: str) -> dict[str, str]:
    """Distinctive strings per field; random so no other file can hold them by chance."""
    u = uuid.uuid4().hex[:10]
    return {
        "name": f"Qwxname{tag}{u}",
        "name_zh": f"龘靐齉{tag}{u}",
        "basic": f"Qwxbasic{tag}{u} 童年时父母离异",
        "statement": f"我觉得活着没意思{u}{tag}紫藤萝瀑布",
        "reason": f"Qwxreason{tag}{u}",
        "advice": f"建议规律作息{tag}{u}",
        "comment": f"Qwxcomment{tag}{u}",
        "draft": f"未保存的草稿{tag}{u}",
        "chat": f"Qwxchat{tag}{u} 他说最近很焦虑",
        "adapter": f"Qwxadapter{tag}{u}",
        "audit": f"Qwxaudit{tag}{u}",
    }


def _use_patient(store, s: dict[str, str]) -> str:
    """Everything a counselor does with one patient, through the product's own APIs."""
    torch = pytest.importorskip("torch")
    from engine.model.adapters import AdapterRegistry

    p = store.create_patient(
        f"{s['name']} {s['name_zh']}",
        BasicInfo(mental_state=s["basic"], social_functioning=s["basic"]),
    )
    analysis = AnalysisDraft(
        symptom_type=Item(text="焦虑", draft="焦虑"),
        reasons=[Item(text=s["reason"], draft="model " + s["reason"], comments=[s["comment"]])],
        advice=[Item(text=s["advice"], draft=s["advice"])],
        raw_output=f"原因：1. {s['reason']}\n建议：1. {s['advice']}",
        model_name="test",
    )
    store.add_note(
        p.id, Note(question=s["statement"], observed_state=s["basic"], analysis=analysis)
    )
    payload = {
        "question": s["statement"],
        "draft": analysis.model_dump(mode="json"),
        "x": s["draft"],
    }
    store.write_blob(p.id, "draft", json.dumps(payload, ensure_ascii=False).encode())
    append_turn(store, p.id, s["chat"], "assistant reply " + s["chat"])
    weights = torch.tensor(list(s["adapter"].encode()), dtype=torch.uint8)
    AdapterRegistry(store).save(
        p.id,
        {"r": 4, "lora_alpha": 8, "base_model_name_or_path": s["adapter"]},
        {"base_model.lora_A.weight": weights, "w16": torch.tensor([ord(c) for c in s["adapter"]])},
        card={"trained_on": s["statement"], "notes": 1},
    )
    log = AuditLog(store)
    log.append("patient_opened", p.id)
    log.append("note_saved", p.id)
    flags = assess(s["statement"])
    assert flags, "the statement carries a risk phrase"
    log.append("risk_acknowledged", p.id, risk_audit_detail(flags) + " " + s["audit"])
    return p.id


def _kill_mid_save(settings, passphrase: str, pid: str, secret: str) -> None:
    """A writer process saving notes in a loop, SIGKILLed mid-way (temp files left behind)."""
    code = f"""
import sys
from engine.records import Note
from engine.settings import Settings, StoreSettings
from engine.vault.store import Store
s = Store.open({str(settings.vault_dir)!r}, {passphrase!r},
               settings=Settings(store=StoreSettings(scrypt_log2_n=10)))
print("ready", flush=True)
i = 0
while True:
    s.add_note({pid!r}, Note(question={secret!r} + str(i)))
    i += 1
"""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, env=env)
    assert proc.stdout.readline().strip() == b"ready"
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)


def test_scanner_finds_plaintext(tmp_path, scanner) -> None:
    """The scan is able to fail: plaintext in any of the encodings is found."""
    secret = "我觉得活着没意思Qwx" + uuid.uuid4().hex
    for enc in ("utf-8", "utf-16-le", "utf-16-be"):
        (tmp_path / enc).write_bytes(b"\x00junk" + secret.encode(enc) + b"junk")
    (tmp_path / "json").write_text(json.dumps({"q": secret}), encoding="ascii")
    hits = scanner([secret]).scan(tmp_path)
    assert {Path(h[0]).name for h in hits} == {"utf-8", "utf-16-le", "utf-16-be", "json"}


def test_no_plaintext_anywhere_and_private_modes(
    settings, passphrase, isolated_home, private_tmp, scanner
) -> None:
    from engine.vault.store import Store

    t0 = time.time() - 1
    secrets_a, secrets_b = _secrets("A"), _secrets("B")
    with Store.create(settings.vault_dir, passphrase, settings=settings) as store:
        AuditLog(store).append("vault_created")
        pid_a = _use_patient(store, secrets_a)
        _use_patient(store, secrets_b)
        # bad input is rejected without writing anything readable
        with pytest.raises(InputRejected):
            store.add_note(pid_a, Note(question=secrets_a["statement"] * 60_000))
    _kill_mid_save(settings, passphrase, pid_a, secrets_a["statement"])
    with Store.open(settings.vault_dir, passphrase, settings=settings) as store:  # recovers
        assert load_history(store, pid_a)[0].content == secrets_a["chat"]
        assert store.load_patient(pid_a).notes[0].question == secrets_a["statement"]

    scan = scanner([*secrets_a.values(), *secrets_b.values()])
    hits = scan.scan(isolated_home, private_tmp)
    hits += scan.scan(Path(tempfile.gettempdir()), newer_than=t0)
    system_tmp = Path("/tmp")
    if system_tmp.is_dir() and system_tmp != Path(tempfile.gettempdir()):
        hits += scan.scan(system_tmp, newer_than=t0)
    assert hits == []

    bad, seen = _bad_modes(settings.data_dir)
    assert seen > 10 and bad == []


def test_forget_a_patient(settings, passphrase, isolated_home, private_tmp, scanner) -> None:
    """delete_patient: notes, drafts, chat, adapters and index entries gone; the other
    patient intact; no copy of the patient's ciphertext or id left in any file or name."""
    from engine.model.adapters import AdapterRegistry
    from engine.vault.store import Store

    secrets_a, secrets_b = _secrets("A"), _secrets("B")
    with Store.create(settings.vault_dir, passphrase, settings=settings) as store:
        pid_a = _use_patient(store, secrets_a)
        pid_b = _use_patient(store, secrets_b)
        pdir = settings.vault_dir / "patients" / pid_a
        before = {p.relative_to(pdir): p.read_bytes() for p in pdir.rglob("*") if p.is_file()}
        assert {str(p) for p in before} >= {"key.bin", "record.bin", "blobs/chat.bin"}
        store.delete_patient(pid_a)
        AuditLog(store).append("patient_deleted", pid_a)

        assert [s.id for s in store.list_patients()] == [pid_b]
        assert store.search(secrets_a["name"]) == []
        with pytest.raises(PatientNotFound):
            store.load_patient(pid_a)
        with pytest.raises(PatientNotFound):
            store.read_blob(pid_a, "chat")
        assert store.load_patient(pid_b).notes[0].question == secrets_b["statement"]
        assert AdapterRegistry(store).newest(pid_b) == 1

        # an old copy of the record cannot be opened once the key is gone (crypto erase)
        pdir.mkdir(mode=0o700)
        (pdir / "record.bin").write_bytes(before[Path("record.bin")])
        with pytest.raises((PatientNotFound, TamperedFile)):
            store.load_patient(pid_a)
        (pdir / "record.bin").unlink()
        pdir.rmdir()
    with Store.open(settings.vault_dir, passphrase, settings=settings) as store:
        assert [s.id for s in store.list_patients()] == [pid_b]  # index agrees after reopen

    # no file name mentions the patient, no file holds any of its ciphertext or plaintext
    names = [p for p in isolated_home.rglob("*") if pid_a in str(p)]
    assert names == []
    fragments = [data[len(data) // 2 : len(data) // 2 + 32] for data in before.values()]
    for path in (p for p in isolated_home.rglob("*") if p.is_file()):
        data = path.read_bytes()
        assert not any(f in data for f in fragments), path
    assert scanner(list(secrets_a.values())).scan(isolated_home, private_tmp) == []
    # what the audit log keeps (encrypted): that the id existed and what was done, never content
    with Store.open(settings.vault_dir, passphrase, writer=False, settings=settings) as store:
        entries = AuditLog(store).entries()
    kept = [e for e in entries if e.patient_id == pid_a]
    assert kept[-1].action == "patient_deleted"
    clinical = [v for k, v in secrets_a.items() if k != "audit"]
    assert not [e for e in entries if any(c in e.to_line() for c in clinical)]
