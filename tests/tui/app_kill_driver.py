"""The app doing a counselor's work, headless, until it is killed (run by test_app_kill.py).

``python -m tests.tui.app_kill_driver VAULT_DIR PASSPHRASE ACK_FD SEED RUN``

Runs the real ``PhyAssistApp`` under Textual's Pilot on the real vault, with the fake model
from ``tests/tui/fakes.py`` (the model is not what is under test; every vault write goes
through the app's own save paths): unlock, create patients through the form, open patients
(answering the "restore the unsaved draft?" question a previous kill may have left), write
a question, generate, edit a reason (the encrypted autosave fires), save the note, chat,
acknowledge risk flags. The store is the real ``engine.vault.store.Store``; a subclass writes one
ack line to the pipe ``ACK_FD`` *after* each write returned, so the parent knows what the
app was entitled to believe was saved when the SIGKILL came:

    ready
    patient <id>
    note <patient id> <marker>
    blob <patient id> <kind> <sha256 of the data>
    delete <patient id> <kind>
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import sys
from pathlib import Path

from engine.records import BasicInfo, Note, Patient
from engine.settings import Settings, StoreSettings
from engine.vault.store import Store

ACK_FD = -1


def ack(line: str) -> None:
    os.write(ACK_FD, (line + "\n").encode("utf-8"))  # one write(2): a line is whole or absent


def marker_of(question: str) -> str:
    return question.split(" ", 1)[0]


class AckStore(Store):
    """The real store; each write is acknowledged on the pipe once it has returned."""

    def create_patient(self, name: str, basic: BasicInfo | None = None) -> Patient:
        patient = super().create_patient(name, basic)
        ack(f"patient {patient.id}")
        return patient

    def add_note(self, patient_id: str, note: Note) -> Patient:
        patient = super().add_note(patient_id, note)
        ack(f"note {patient_id} {marker_of(note.question)}")
        return patient

    def write_blob(self, patient_id: str, kind: str, data: bytes) -> None:
        super().write_blob(patient_id, kind, data)
        ack(f"blob {patient_id} {kind} {hashlib.sha256(bytes(data)).hexdigest()}")

    def delete_blob(self, patient_id: str, kind: str) -> None:
        super().delete_blob(patient_id, kind)
        ack(f"delete {patient_id} {kind}")


QUESTIONS = [
    "最近总是失眠，担心考试考不好，上课注意力不集中。",
    "Since the move she feels lonely and cries most evenings.",
    "和父母沟通困难，一说话就吵架。",
    "Work pressure, headaches, and he stopped seeing friends.",
]
ANALYSIS = "Symptom type: 焦虑\nReasons:\n1. 学业压力\n2. 睡眠不足\nAdvice:\n1. 规律作息\n"
RISKY = "我不想活了，觉得自己是家里的累赘。"  # raises a risk flag the counselor acknowledges


async def drive(vault_dir: Path, passphrase: str, seed: int, run: int) -> None:
    from textual.widgets import Input, TextArea

    from phyassist_tui.app import PhyAssistApp
    from phyassist_tui.screens.confirm import ConfirmScreen
    from phyassist_tui.screens.new_patient import NewPatientScreen
    from phyassist_tui.screens.restore import RestoreDraftScreen
    from phyassist_tui.screens.risk import RiskFlagScreen
    from phyassist_tui.widgets.draft_pane import DraftPane
    from phyassist_tui.widgets.patients_pane import PatientList
    from tests.tui import fakes

    rng = random.Random(seed)
    settings = Settings(store=StoreSettings(scrypt_log2_n=10), idle_lock_minutes=0)
    assistant = fakes.FakeAssistant(delay=0.0, analysis_text=ANALYSIS, chat_reply="先问问睡眠。")
    app = PhyAssistApp(settings, assistant=assistant, vault_class=AckStore)
    wait_for = fakes.wait_for
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await fakes.open_workspace(pilot)
        listing = screen.query_one("#patient-list", PatientList)
        pane = screen.query_one(DraftPane)
        ack("ready")
        step = 0
        while True:
            step += 1
            marker = f"K{run}x{step}"
            if rng.random() < 0.2:  # a new patient through the form
                await pilot.press("ctrl+n")
                form = await wait_for(
                    pilot, lambda: isinstance(app.screen, NewPatientScreen) and app.screen
                )
                form.query_one("#name", Input).value = f"来访者{marker}"
                form.query_one("#field-demographics", TextArea).load_text("20岁，大学生")
                await pilot.press("ctrl+s")
                await wait_for(
                    pilot,
                    lambda m=marker: screen.patient is not None and m in screen.patient.name,
                    what="patient created",
                )
            else:  # open one of the patients
                listing.highlighted = rng.randrange(listing.option_count)
                wanted = listing.highlighted_summary.id
                listing.focus()
                await pilot.press("enter")
                await wait_for(
                    pilot,
                    lambda w=wanted: (
                        isinstance(app.screen, ConfirmScreen | RestoreDraftScreen)
                        or (screen.patient is not None and screen.patient.id == w)
                    ),
                    what="patient opened",
                )
                await pilot.pause(0.3)  # a draft kept from a killed run: the restore offer follows
                if isinstance(app.screen, ConfirmScreen | RestoreDraftScreen):
                    await pilot.press(rng.choice("yn"))
                    await wait_for(pilot, lambda: app.screen is screen, what="restore answered")
            await wait_for(pilot, lambda: screen.patient is not None and screen.generating is None)
            # a question (its autosave timer starts), the analysis, maybe an edit, then Save
            question = f"{marker} " + (RISKY if rng.random() < 0.15 else rng.choice(QUESTIONS))
            screen.query_one("#question", TextArea).load_text(question)
            await pilot.press("ctrl+g")
            await pilot.pause(0.1)
            if isinstance(app.screen, ConfirmScreen):  # "replace the draft with your edits?"
                await pilot.press("y")
            if RISKY in question:
                await wait_for(pilot, lambda: isinstance(app.screen, RiskFlagScreen))
                await pilot.press("a")
            await wait_for(
                pilot,
                lambda: pane.draft is not None and screen.generating is None,
                what="draft",
            )
            if rng.random() < 0.3:
                await pilot.press("down", "e")
                if isinstance(app.focused, Input):
                    app.focused.value = f"{marker} 修改后的原因"
                    await pilot.press("enter")
            await pilot.pause(rng.uniform(0.0, 1.2))  # the autosave timer may or may not fire
            if rng.random() < 0.85:
                before = len(screen.patient.notes)
                await pilot.press("ctrl+s")
                await wait_for(
                    pilot, lambda b=before: len(screen.patient.notes) > b, what="note saved"
                )
            if rng.random() < 0.25:
                await pilot.press("f5")
                chat = screen.query_one("#chat-input", Input)
                chat.focus()
                chat.value = f"{marker} 下次会谈怎么开始？"
                before = len(screen.history)
                await pilot.press("enter")
                await wait_for(
                    pilot,
                    lambda b=before: len(screen.history) >= b + 2 and screen.generating is None,
                    what="chat reply",
                )


def main() -> None:
    global ACK_FD
    vault_dir, passphrase, fd, seed, run = sys.argv[1:6]
    ACK_FD = int(fd)
    asyncio.run(drive(Path(vault_dir), passphrase, int(seed), int(run)))


if __name__ == "__main__":
    main()
