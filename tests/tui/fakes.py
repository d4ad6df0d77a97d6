"""A fake model at the engine's boundary: streams canned text with small delays, honours cancel.

It implements ``engine.session.ModelBackend`` in full (``tests/tui/test_ports.py`` checks
it), so the Pilot tests run the real ``engine.session.Session`` (vault calls, audit
entries, the real parser in ``engine.inference.analysis``) with only the model faked.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from engine.inference.stream import GenerationStats, TextStream
from engine.records import AnalysisDraft, ChatMessage, Patient
from engine.trust.risk import RiskFlag, assess
from phyassist_tui.widgets.patients_pane import PatientList

ANALYSIS_TEXT = (
    "Symptom type: Academic anxiety\n"
    "Reasons:\n"
    "1. High expectations from the family\n"
    "2. Fear of failing the exam again\n"
    "3. Studying late at night without rest\n"
    "Advice:\n"
    "1. Cognitive behavioural therapy for exam anxiety\n"
    "2. Keep a regular sleep schedule\n"
)
PASSPHRASE = "correct horse battery"
CHAT_REPLY = "Consider asking how the exams felt last time and what helped."


@dataclass
class Call:
    name: str
    args: dict[str, Any] = field(default_factory=dict)


class FakeAssistant:
    """Streams word by word every ``delay`` seconds; ``pause_after`` chunks it waits for
    ``resume`` (or cancel), so a test can press Esc at a known point."""

    model_label = "fake-model"

    def __init__(
        self,
        *,
        delay: float = 0.005,
        load_delay: float = 0.0,
        analysis_text: str = ANALYSIS_TEXT,
        chat_reply: str = CHAT_REPLY,
        fail_load: str | None = None,
        pause_after: int | None = None,
        looped: bool = False,
        caveat: str = "",
        prefill_s: float = 0.0,
        risk_refusal: str | None = "the fake model has no risk check",
    ) -> None:
        self.delay = delay
        self.prefill_s = prefill_s  # how long reading a record ahead takes (0: no prefill)
        self.prefills: list[tuple[str, bool]] = []  # (patient id, was cancelled)
        self.prefill_started = threading.Event()
        self.looped = looped  # report the run as stopped for repeating itself
        self.caveat = caveat  # the engine's reliability warning on Analysis streams
        self.load_delay = load_delay
        self.analysis_text = analysis_text
        self.chat_reply = chat_reply
        self.fail_load = fail_load
        self.pause_after = pause_after
        self.risk_refusal = risk_refusal
        self.knowledge = None  # set by the Session (not used by the fake's streams)
        self.active_adapter: str | None = None  # no adapters: the base
        self.last_adapter_error: str | None = None
        self.resume = threading.Event()
        self.paused = threading.Event()
        self.loaded = False
        self.calls: list[Call] = []

    def load(self, progress: Callable[..., None] | None = None) -> None:
        if progress is not None:
            progress("loading fake model")
        time.sleep(self.load_delay)
        if self.fail_load:
            from engine.errors import ModelLoadError

            raise ModelLoadError(self.fail_load)
        self.loaded = True

    def prefill_record(self, patient: Patient, cancel: threading.Event) -> int:
        if not self.prefill_s:
            return 0
        self.prefill_started.set()
        cancel.wait(self.prefill_s)
        self.prefills.append((patient.id, cancel.is_set()))
        return 0 if cancel.is_set() else 100

    adapter_for: str | None = None  # a patient name that has an adapter (tests set it)

    def use_patient(self, patient: Patient | None, store: Any = None) -> str:
        self.calls.append(Call("use_patient", {"patient_id": patient and patient.id}))
        if patient is not None and patient.name == self.adapter_for:
            return f"fake-model · adapter v1 of {patient.name}"
        return "base model (no adapter)"

    def risk_model_refusal(self) -> str | None:
        return self.risk_refusal

    def risk_flags(self, text: str) -> tuple[list[RiskFlag], str]:
        self.calls.append(Call("risk_flags", {"text": text}))
        return assess(text), "rules and fake-model"

    def _stream(self, text: str, cancel: threading.Event) -> TextStream:
        stats: list[GenerationStats] = []

        def chunks() -> Iterator[str]:
            start = time.perf_counter()
            count = 0
            first = None
            try:
                for count, token in enumerate(re.findall(r"\S+\s*|\s+", text), 1):
                    if self.pause_after is not None and count > self.pause_after:
                        self.paused.set()
                        while not (self.resume.is_set() or cancel.is_set()):
                            time.sleep(0.005)
                    if cancel.is_set():
                        count -= 1
                        break
                    time.sleep(self.delay)
                    first = first or time.perf_counter() - start
                    yield token
            finally:
                total = time.perf_counter() - start
                stats.append(
                    GenerationStats(
                        ttft_s=first or 0.0,
                        tokens=count,
                        tokens_per_s=count / total if total else 0.0,
                        total_s=total,
                        cancelled=cancel.is_set(),
                        prompt_tokens=0,
                        cached_prefix_tokens=0,
                        looped=self.looped,
                    )
                )

        return TextStream(
            chunks(), context_report="fake context", stats=lambda: stats[-1] if stats else None
        )

    def stream_analysis(
        self,
        patient: Patient,
        question: str,
        *,
        cancel: threading.Event,
        guidance: AnalysisDraft | None = None,
        observed: str = "",
    ) -> TextStream:
        self.calls.append(
            Call(
                "stream_analysis",
                {"question": question, "guidance": guidance, "observed": observed},
            )
        )
        stream = self._stream(self.analysis_text, cancel)
        stream.caveat = self.caveat
        return stream

    def stream_regenerate_item(
        self,
        patient: Patient,
        question: str,
        draft: AnalysisDraft,
        section: str,
        item_id: str,
        *,
        cancel: threading.Event,
    ) -> TextStream:
        item = next(i for i in draft.live(section) if i.id == item_id)
        self.calls.append(
            Call(
                "stream_regenerate_item",
                {"section": section, "item_id": item_id, "comments": list(item.comments)},
            )
        )
        return self._stream(f"Regenerated {section} item", cancel)

    def stream_chat(
        self,
        patient: Patient | None,
        history: list[ChatMessage],
        message: str,
        *,
        cancel: threading.Event,
    ) -> TextStream:
        self.calls.append(Call("stream_chat", {"message": message, "history": len(history)}))
        return self._stream(self.chat_reply, cancel)


def screen_text(app) -> str:
    """The current screen as plain text, as a terminal would show it."""
    import io

    from rich.console import Console

    width, height = app.size
    console = Console(
        width=width,
        height=height,
        file=io.StringIO(),
        force_terminal=False,
        color_system=None,
        record=True,
        legacy_windows=False,
    )
    console.print(
        app.screen._compositor.render_update(full=True, screen_stack=app._background_screens)
    )
    return console.export_text(styles=False)


async def wait_for(
    pilot, predicate: Callable[[], object], timeout: float = 5.0, what: str = "condition"
):
    """Let the app run until ``predicate()`` is true (workers are real threads)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        await pilot.pause(0.02)
    raise AssertionError(f"timed out waiting for {what}")


async def type_text(pilot, text: str) -> None:
    """Insert ``text`` into the focused Input/TextArea at once (pressing each key is slow)."""
    from textual.widgets import Input, TextArea

    focused = pilot.app.focused
    if isinstance(focused, Input):
        focused.insert_text_at_cursor(text)
    elif isinstance(focused, TextArea):
        focused.insert(text)
    else:
        raise AssertionError(f"cannot type into {focused!r}")
    await pilot.pause()


# -- Pilot helpers shared by the flow and snapshot tests --------------------------------------
def read_only(settings):
    """A second, read-only handle: sees what the app wrote without taking its lock."""
    from engine.vault.store import Store

    return Store.open(settings.vault_dir, PASSPHRASE, writer=False, settings=settings)


async def passphrase_field_ready(pilot, what: str = "unlock screen") -> None:
    """Wait until the unlock screen's passphrase field has the focus."""
    from phyassist_tui.screens.unlock import UnlockScreen

    app = pilot.app
    await wait_for(
        pilot,
        lambda: (
            isinstance(app.screen, UnlockScreen)
            and app.focused is not None
            and app.focused.id == "passphrase"
        ),
        what=what,
    )


def send_burst(app, keys: list[tuple[str, str | None]]) -> None:
    """Queue ``(key, character)`` events as the terminal driver does, without waiting for
    any to be handled: a burst typed fast or delivered together over SSH."""
    from textual import events

    for key, char in keys:
        event = events.Key(key, char)
        event.set_sender(app)
        app._driver.send_message(event)


def add_seed_case_patient(settings, seed_case: dict, created=None) -> None:
    """Store the Chinese seed case as patient 孙某 with its reference note (dated ``created``
    if given, e.g. for a snapshot)."""
    from engine.records import AnalysisDraft, BasicInfo, Item, Note
    from engine.vault.store import Store

    store = Store.create(settings.vault_dir, PASSPHRASE, settings=settings)
    ref = seed_case["reference_analysis"]
    patient = store.create_patient("孙某", BasicInfo(**seed_case["basic_info"]))
    note = Note(
        **({"created": created} if created is not None else {}),
        question=seed_case["counseling_question"]["statement"],
        observed_state=seed_case["counseling_question"]["observed_state"],
        analysis=AnalysisDraft(
            symptom_type=Item(text=ref["symptom_type"], draft=ref["symptom_type"]),
            reasons=[Item(text=r, draft=r) for r in ref["reasons"]],
            advice=[Item(text=a, draft=a) for a in ref["advice"]],
        ),
    )
    store.add_note(patient.id, note)
    store.close()


async def unlock(pilot, passphrase: str = PASSPHRASE) -> None:
    await passphrase_field_ready(pilot)
    await type_text(pilot, passphrase)
    await pilot.press("enter")


async def open_workspace(pilot, panes: bool = True):
    """Unlock; returns the workspace once its list is filled and (``panes``) its hidden
    panes are mounted (a moment after the first frame, see ``widgets.deferred``)."""
    from phyassist_tui.screens.workspace import WorkspaceScreen

    await unlock(pilot)
    app = pilot.app
    await wait_for(pilot, lambda: isinstance(app.screen, WorkspaceScreen), what="workspace")
    await wait_for(
        pilot,
        lambda: app.screen.query_one("#patient-list", PatientList).option_count,
        what="patient list",
    )
    if panes:
        await wait_for(pilot, lambda: app.screen.panes_mounted, what="hidden panes")
    return app.screen


async def open_workspace_empty(pilot):
    """Unlock a vault that has no patient yet; returns the workspace screen."""
    from phyassist_tui.screens.workspace import WorkspaceScreen

    await unlock(pilot)
    app = pilot.app
    await wait_for(pilot, lambda: isinstance(app.screen, WorkspaceScreen), what="workspace")
    await wait_for(pilot, lambda: app.screen.panes_mounted, what="hidden panes")
    await pilot.pause(0.1)
    return app.screen


async def open_patient(pilot, name: str):
    screen = await open_workspace(pilot)
    listing = screen.query_one("#patient-list", PatientList)
    listing.highlight_name(name)
    listing.focus()
    await pilot.press("enter")
    await wait_for(
        pilot,
        lambda: screen.patient is not None and screen.patient.name == name,
        what=f"patient {name}",
    )
    return screen


async def draft_ready(pilot, screen):
    """Wait until a finished analysis is in the Draft pane with the focus on its list.

    ``pane.draft`` is set before the rows are mounted and the list takes the focus, so a key
    pressed as soon as the draft exists could still reach the question field.
    """
    pane = screen.draft_pane
    await wait_for(
        pilot,
        lambda: (
            pane.draft is not None
            and screen.generating is None
            and pilot.app.focused is not None
            and pilot.app.focused.id == "draft-items"
        ),
        what="draft ready with the focus on its list",
    )
    return pane


async def generate(pilot, screen, question: str) -> None:
    from textual.widgets import TextArea

    await pilot.press("f3")
    screen.query_one("#question", TextArea).load_text(question)
    await pilot.press("ctrl+g")


async def open_draft(pilot, name: str, question: str = "Question"):
    """The drafting setup of the flow tests: unlock, open ``name``, generate a draft of
    ``question`` and wait until it is in the Draft pane; returns (workspace, draft pane)."""
    screen = await open_patient(pilot, name)
    await generate(pilot, screen, question)
    return screen, await draft_ready(pilot, screen)


async def draft_under_way(pilot, fake: FakeAssistant, question: str = "Question"):
    """Open Sun and start a draft; returns once ``fake`` holds it mid-stream."""
    screen = await open_patient(pilot, "Sun")
    await generate(pilot, screen, question)
    await wait_for(pilot, lambda: fake.paused.is_set(), what="draft under way")
    return screen


def patient_id(settings, name: str) -> str:
    """The id of the patient called ``name`` in the vault on disk (read-only open)."""
    store = read_only(settings)
    try:
        return next(s.id for s in store.list_patients() if s.name == name)
    finally:
        store.close()
