"""The heavy "no plaintext anywhere" run: the real embedded model drafts an analysis and
chats, an adapter is trained in the subprocess, a second training run is SIGKILLed; then
every file under PHYASSIST_HOME (model cache included) and the temp directories is scanned
for the patient's strings. Slow (model load, CPU training): ``pytest -m slow``."""

from __future__ import annotations

import os
import signal
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pytest

from engine.errors import TrainingError
from engine.inference.analysis import parse_analysis
from engine.records import BasicInfo, Item, Note
from engine.trust.audit import AuditLog
from engine.trust.doctor import _bad_modes
from engine.vault.chat import append_turn
from engine.vault.store import Store

pytestmark = [pytest.mark.slow, pytest.mark.model]


def test_no_plaintext_after_analysis_chat_training_and_crash(
    settings, passphrase, isolated_home, private_tmp, scanner
) -> None:
    pytest.importorskip("trl")
    from engine.inference.assistant import Assistant
    from engine.model.adapters import AdapterRegistry
    from engine.training.runner import TrainingRun, train_patient

    u = uuid.uuid4().hex[:10]
    secrets = {
        "name": f"Qwxfull{u}",
        "basic": f"父母离异后跟随奶奶生活{u}",
        "statement": f"我最近总是失眠，觉得学习压力很大{u}，不知道该怎么办。",
        "chat": f"How should I open the next session{u}?",
    }
    settings.generation.max_new_tokens = 48
    t0 = time.time() - 1
    with Store.create(settings.vault_dir, passphrase, settings=settings) as store:
        log = AuditLog(store)
        patient = store.create_patient(secrets["name"], BasicInfo(mental_state=secrets["basic"]))
        assistant = Assistant(settings)
        assistant.load()
        assistant.use_patient(patient, store)
        cancel = threading.Event()
        text = "".join(assistant.stream_analysis(patient, secrets["statement"], cancel=cancel))
        draft = parse_analysis(text, model_name=assistant.model_label)
        # the counselor completes and edits the draft (a 48-token draft is often partial)
        draft.symptom_type = Item(text=f"睡眠问题{u}", draft=draft.symptom_type.text or None)
        draft.reasons.append(Item(text=f"学业压力{u}"))
        draft.advice.append(Item(text=f"规律作息{u}"))
        patient = store.add_note(patient.id, Note(question=secrets["statement"], analysis=draft))
        log.append("note_saved", patient.id)
        reply = "".join(assistant.stream_chat(patient, [], secrets["chat"], cancel=cancel))
        append_turn(store, patient.id, secrets["chat"], reply)

        stored, events = train_patient(
            store, patient.id, settings, overrides={"max_steps": 2, "preference_method": "none"}
        )
        assert events[-1].phase == "stored"
        log.append("adapter_trained", patient.id, f"v{stored.version}")
        assert AdapterRegistry(store).active(patient.id) == stored.version

        # a second run killed as soon as the worker reports: nothing stored, v1 stays active
        run = TrainingRun(store, patient.id, settings, overrides={"max_steps": 50})
        with pytest.raises(TrainingError):
            for _event in run.events():
                if run.pid:
                    os.kill(run.pid, signal.SIGKILL)
        assert AdapterRegistry(store).active(patient.id) == stored.version

    scan = scanner(list(secrets.values()))
    hits = scan.scan(isolated_home, private_tmp)
    hits += scan.scan(Path(tempfile.gettempdir()), newer_than=t0)
    if Path("/tmp").is_dir():
        hits += scan.scan(Path("/tmp"), newer_than=t0)
    assert hits == []
    bad, _seen = _bad_modes(settings.data_dir)
    assert bad == []
