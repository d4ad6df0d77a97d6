"""``engine.session.Session``: the one object front ends talk to.

Guards: the Session writes the audit entry of every action itself; runs return typed,
parsed outcomes (nothing left on the shared Assistant); waiting for the model is woken by a
cancel, not polled; importing the Session pulls in neither torch nor textual. The typed
results are checked on the real embedded model (marked ``model``).
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from engine.errors import WrongPassphrase
from engine.records import AnalysisDraft, BasicInfo, Note
from engine.session import (
    AnalysisOutcome,
    ChatOutcome,
    ItemOutcome,
    Session,
    VaultLocked,
)
from engine.settings import Settings
from engine.trust.audit import ACTIONS, AuditLog
from engine.trust.risk import assess, risk_audit_detail
from engine.vault.store import Store
from tests.support import REPO

PASSPHRASE = "correct horse battery"
RISKY = "Last night I wanted to kill myself."


def _log(settings: Settings) -> list[tuple[str, str | None, str]]:
    with Store.open(settings.vault_dir, PASSPHRASE, writer=False, settings=settings) as store:
        assert AuditLog(store).verify().ok
        return [(e.action, e.patient_id, e.detail) for e in AuditLog(store).entries()]


def test_importing_the_session_loads_no_model_stack() -> None:
    code = (
        "import sys, engine.session\n"
        "heavy = [m for m in ('torch', 'transformers', 'textual', 'engine.records') "
        "if m in sys.modules]\n"
        "print(heavy)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
    )
    assert out.stdout.strip() == "[]"


def test_every_action_is_audited_by_the_session(tmp_path: Path, settings_for) -> None:
    settings = settings_for(tmp_path)
    ran: list[str] = []

    def runner(*, patient, store, settings, cancel):
        ran.append(patient.id)
        yield {"phase": "sft", "step": 1, "total_steps": 2}
        if patient.name == "Fails":
            raise RuntimeError("worker died")
        if patient.name == "Stopped":
            cancel.set()
            yield {"phase": "sft", "step": 2, "total_steps": 2}

    session = Session(settings, training_runner=runner, origin="tui")
    assert not session.vault_exists()
    assert session.create_vault(PASSPHRASE) == []
    session.lock()
    with pytest.raises(VaultLocked):
        session.list_patients()
    with pytest.raises(WrongPassphrase):
        session.unlock("wrong passphrase!")
    with pytest.raises(WrongPassphrase):
        session.unlock("wrong again!!")
    session.unlock(PASSPHRASE)

    sun = session.create_patient("Sun", BasicInfo(demographics="19"))
    opened = session.open_patient(sun.id)
    assert opened.patient.name == "Sun" and opened.autosave is None
    session.write_autosave(sun.id, {"version": 1, "question": "q"})
    assert session.open_patient(sun.id, detail="cli show").autosave == {
        "version": 1,
        "question": "q",
    }
    edited = opened.patient.model_copy(update={"name": "Sun Y."})
    session.update_patient(edited)
    saved = session.save_note(sun.id, Note(question="exams"))
    assert len(saved.notes) == 1
    assert session.open_patient(sun.id).autosave is None  # the note replaced the autosave

    flags = assess(RISKY)
    session.risk_shown(sun.id, flags)
    session.risk_cancelled(sun.id, flags)
    session.risk_shown(sun.id, flags)
    session.risk_acknowledged(sun.id, flags)

    cancel = threading.Event()
    assert [e["step"] for e in session.train(saved, cancel)] == [1]
    fails = session.create_patient("Fails")
    with pytest.raises(RuntimeError):
        list(session.train(fails, threading.Event()))
    stopped = session.create_patient("Stopped")
    list(session.train(stopped, threading.Event()))
    session.delete_patient(fails.id)
    session.lock()

    detail = risk_audit_detail(flags)
    assert _log(settings) == [
        ("vault_created", None, "tui"),
        ("lock", None, "tui"),
        ("unlock_failed", None, "2 failed attempt(s)"),
        ("unlock", None, "tui"),
        ("patient_created", sun.id, "tui"),
        ("patient_opened", sun.id, "tui"),
        ("patient_opened", sun.id, "cli show"),
        ("patient_updated", sun.id, "tui"),
        ("note_saved", sun.id, "tui"),
        ("patient_opened", sun.id, "tui"),
        ("risk_flagged", sun.id, detail),
        ("risk_cancelled", sun.id, detail),
        ("risk_flagged", sun.id, detail),
        ("risk_acknowledged", sun.id, detail),
        ("training_started", sun.id, "tui"),
        ("training_finished", sun.id, "tui"),
        ("patient_created", fails.id, "tui"),
        ("training_started", fails.id, "tui"),
        ("training_failed", fails.id, "RuntimeError"),
        ("patient_created", stopped.id, "tui"),
        ("training_started", stopped.id, "tui"),
        ("training_killed", stopped.id, "tui"),
        ("patient_deleted", fails.id, "tui"),
        ("lock", None, "tui"),
    ]
    assert RISKY not in str(_log(settings))  # never the client's words
    assert {action for action, _, _ in _log(settings)} <= set(ACTIONS)  # all documented


def test_record_corrections_and_kept_drafts_through_the_session(
    tmp_path: Path, settings_for
) -> None:
    """Basic information, amended and deleted notes and the put-off draft (issue 16) go
    through Session methods that write their own audit entries (never the front end)."""
    from engine.records import Item

    settings = settings_for(tmp_path)
    session = Session(settings, origin="tui")
    session.create_vault(PASSPHRASE)
    sun = session.create_patient("Sun", BasicInfo(demographics="19"))
    first = session.save_note(sun.id, Note(question="exams")).notes[0]
    second = session.save_note(sun.id, Note(question="sleep")).notes[1]

    updated = session.update_patient_info(
        sun.id, name="Sun Y.", basic=BasicInfo(demographics="20, law student")
    )
    assert (updated.name, updated.basic.demographics) == ("Sun Y.", "20, law student")
    analysis = AnalysisDraft(advice=[Item(text="Weekly exercise", draft="Weekly exercise")])
    amended = session.amend_note(sun.id, first.id, analysis=analysis, reason="advice missing")
    note = amended.note(first.id)
    assert note.analysis.advice[0].text == "Weekly exercise" and note.amended is not None
    assert note.versions[0].reason == "advice missing" and note.versions[0].question == "exams"
    after = session.delete_note(sun.id, second.id, "wrong client")
    assert [n.id for n in after.notes] == [first.id]
    assert after.deleted_notes[0].reason == "wrong client"

    # "Later" on the restore prompt: kept apart from the autosave, which new work overwrites
    session.write_autosave(sun.id, {"version": 1, "question": "put off"})
    session.write_kept_autosave(sun.id, {"version": 1, "question": "put off"})
    session.write_autosave(sun.id, {"version": 1, "question": "new work"})
    opened = session.open_patient(sun.id)
    assert opened.autosave == {"version": 1, "question": "new work"}
    assert opened.kept_autosave == {"version": 1, "question": "put off"}
    session.write_kept_autosave(sun.id, None)  # discarded
    assert session.open_patient(sun.id).kept_autosave is None
    assert session.forget_patient() is None  # no model loaded: nothing to tell
    session.lock()

    log = _log(settings)
    assert ("patient_updated", sun.id, "tui") in log
    assert ("note_amended", sun.id, first.id) in log
    assert ("note_deleted", sun.id, second.id) in log
    assert "advice missing" not in str(log) and "wrong client" not in str(log)


class BlockedModel:
    """A model whose load waits for ``release`` (a slow first load)."""

    model_label = "blocked"

    def __init__(self) -> None:
        self.loaded = False
        self.release = threading.Event()

    def load(self, progress=None) -> None:
        self.release.wait(30)
        self.loaded = True


def test_a_run_waiting_for_the_model_is_woken_by_its_cancel(tmp_path: Path, settings_for) -> None:
    model = BlockedModel()
    session = Session(settings_for(tmp_path), assistant=model)
    session.start_model_load()
    run = session.chat(None, [], "hello")
    threading.Timer(0.2, run.cancel).start()
    started = time.perf_counter()
    assert list(run.chunks) == []
    waited = time.perf_counter() - started
    assert waited < 2.0  # woken by the cancel, not by a timeout or the load
    outcome = run.result()
    assert isinstance(outcome, ChatOutcome) and outcome.cancelled and outcome.error is None
    assert session.model_state.state == "loading"
    model.release.set()
    assert session.wait_ready(timeout=5)
    assert session.model_state.state == "ready" and session.model_state.label == "blocked"


def test_a_failed_load_ends_runs_with_the_reason(tmp_path: Path, settings_for) -> None:
    from engine.errors import ModelLoadError

    class Broken(BlockedModel):
        def load(self, progress=None) -> None:
            raise ModelLoadError("weights missing")

    seen = []
    session = Session(settings_for(tmp_path), assistant=Broken())
    session.subscribe(seen.append)
    session.start_model_load()
    outcome = session.chat(None, [], "hello").result()
    assert outcome.error == "The model is not available: weights missing"
    assert seen[0].state == "idle" and seen[-1].state == "failed"


# -- typed results on the real embedded model ----------------------------------------------------
@pytest.mark.model
def test_runs_return_typed_parsed_results_on_the_real_model(
    assistant, real_settings, tmp_path: Path
) -> None:
    from engine.inference.analysis import parse_item_text
    from engine.inference.stream import GenerationStats

    settings = real_settings.model_copy(update={"data_dir": tmp_path / "data"})
    session = Session(settings, assistant=assistant)
    session.create_vault(PASSPHRASE)
    session.start_model_load()  # already loaded: ready at once
    assert session.wait_ready(timeout=30)
    patient = session.create_patient("Anna", BasicInfo(demographics="F, 19, student"))
    patient = session.save_note(patient.id, Note(question="Worried about the maths exam."))

    run = session.analysis(patient, "Since the exam I cannot sleep or focus.")
    chunks = list(run.chunks)
    outcome = run.result()
    assert isinstance(outcome, AnalysisOutcome) and outcome.kind == "analysis"
    assert outcome.error is None and not outcome.cancelled
    assert outcome.text == "".join(chunks) and outcome.text.strip()
    assert isinstance(outcome.draft, AnalysisDraft)
    assert outcome.draft.raw_output == outcome.text
    assert outcome.draft.model_name == assistant.model_label
    assert isinstance(outcome.stats, GenerationStats) and outcome.stats.tokens >= 1
    # grounded in the open vault's knowledge index, where only this patient's note is (never
    # offered to their own drafts)
    assert outcome.context_report == "1 of 1 notes fit; no similar entries"
    for gone in ("last_stats", "context_report"):  # results live on the run only
        assert not hasattr(assistant, gone)

    draft = outcome.draft
    draft.reasons.append(draft.reasons[0] if draft.reasons else draft.symptom_type)
    item = draft.reasons[-1]
    item_outcome = session.regenerate_item(
        patient, "Since the exam I cannot sleep.", draft, "reasons", item.id
    ).result()  # result() streams to the end when nobody iterated
    assert isinstance(item_outcome, ItemOutcome) and item_outcome.item_id == item.id
    assert item_outcome.item_text == " ".join(parse_item_text(item_outcome.text).split())
    assert item_outcome.stats is not None and item_outcome.stats is not outcome.stats

    chat = session.chat(patient, [], "What should I ask next time?")
    chat.cancel()
    stopped = chat.result()
    assert isinstance(stopped, ChatOutcome) and stopped.cancelled
    assert stopped.reply.endswith("[stopped]")

    session.lock()
    log = [a for a, _, _ in _log(settings)]
    assert log == ["vault_created", "patient_created", "note_saved", "lock"]


def test_the_knowledge_index_follows_the_open_vault(tmp_path: Path, settings_for) -> None:
    """The Session holds the vault's knowledge index: read on first use, told of a saved
    note and a deleted patient at once, and gone (with its decrypted entries) on lock."""
    settings = settings_for(tmp_path)
    settings.knowledge.embedding = False  # lexical is enough here, and quick
    session = Session(settings)
    session.create_vault(PASSPHRASE)
    other = session.create_patient("Earlier client")
    session.save_note(other.id, Note(question="Since the exam I cannot sleep at all."))
    me = session.create_patient("New client")
    assert session.knowledge_entry("note:anything") is None  # not read yet: never blocks

    index = session.knowledge()
    assert index is not None and index.loaded
    matches = index.query("exam and sleep", k=3, exclude_patient=me.id)
    assert [m.entry.patient_id for m in matches] == [other.id]
    assert session.knowledge_entry(matches[0].entry.key) is not None

    session.save_note(other.id, Note(question="Panic attacks on the subway every morning."))
    found = index.query("panic on the subway", k=3, exclude_patient=me.id)  # no sync needed
    assert found and "subway" in found[0].entry.text

    session.delete_patient(other.id)
    assert index.query("exam and sleep", k=3, exclude_patient=me.id) == []

    session.lock()
    assert session.knowledge() is None and session.knowledge_entry(found[0].entry.key) is None
