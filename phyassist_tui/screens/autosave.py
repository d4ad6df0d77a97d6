"""The workspace's encrypted draft autosave: what a crash or a lock must not lose.

A second after the last edit (question, observed state, streamed text, draft items) the
unsaved work of the open patient is written, encrypted, through
``Session.write_autosave``; opening the patient again offers to restore it; Save and
Discard remove it. ``DraftAutosave`` is a base of ``WorkspaceScreen`` (it reads the
screen's ``patient``, ``analysis`` and ``draft_pane``).
"""

from __future__ import annotations

from functools import partial
from typing import Any

from textual import on
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import Input, TextArea

from engine.errors import PhyAssistError
from engine.records import AnalysisDraft
from phyassist_tui.messages import DraftChanged

AUTOSAVE_DELAY_S = 1.0


class DraftAutosave(Screen):
    """Base of ``WorkspaceScreen``: schedule, write, restore and discard the autosave.

    A ``Screen`` subclass (not a plain mixin) so that Textual registers its ``@on``
    handlers."""

    _autosave_timer: Timer | None = None

    @on(DraftChanged)
    def _draft_changed(self) -> None:
        self._schedule_autosave()

    @on(TextArea.Changed, "#question")
    @on(Input.Changed, "#observed")
    def _inputs_changed(self) -> None:
        self._schedule_autosave()

    def _schedule_autosave(self) -> None:
        self._stop_autosave_timer()
        self._autosave_timer = self.set_timer(AUTOSAVE_DELAY_S, self._flush_autosave)

    def _stop_autosave_timer(self) -> None:
        if self._autosave_timer is not None:
            self._autosave_timer.stop()
            self._autosave_timer = None

    def autosave_payload(self) -> dict[str, Any] | None:
        """What would be lost on a crash right now, or ``None`` if nothing is unsaved."""
        if not self.panes_mounted:
            return None  # nothing can have been typed into panes that are not there yet
        draft = self.draft_pane.draft
        question = self.analysis.question
        observed = self.analysis.observed
        self.analysis.stream.flush()
        stream = self.analysis.stream.text
        if draft is None and not question and not observed and not stream:
            return None
        return {
            "version": 1,
            "question": question,
            "draft_question": self.draft_question,
            "observed_state": observed,
            "stream_text": stream,
            "draft": draft.model_dump(mode="json") if draft is not None else None,
        }

    def _flush_autosave(self) -> None:
        self._stop_autosave_timer()
        if self.patient is None:
            return
        patient_id, payload = self.patient.id, self.autosave_payload()
        if payload is None:
            # nothing typed yet (e.g. views just reset for a newly opened patient): keep any
            # earlier autosave; only Save and Discard remove it
            return
        self.run_worker(
            partial(self.write_autosave, patient_id, payload),
            name="autosave-draft",
            group="store-write",
            thread=True,
            exit_on_error=False,
        )

    def write_autosave(self, patient_id: str, payload: dict[str, Any] | None) -> None:
        """Blocking (thread) write of the encrypted autosave; also used when locking."""
        try:
            self.app.session.write_autosave(patient_id, payload)
        except PhyAssistError as exc:
            self.app.call_from_thread(self.notify, f"Autosave failed: {exc}", severity="error")

    def _delete_autosave(self, patient_id: str) -> None:
        self.run_worker(
            partial(self.write_autosave, patient_id, None),
            name="discard-draft",
            group="store-write",
            thread=True,
            exit_on_error=False,
        )

    async def _restore_autosave(self, payload: dict[str, Any]) -> None:
        self.analysis.set_inputs(
            str(payload.get("question", "")), str(payload.get("observed_state", ""))
        )
        self.analysis.stream.set_text(str(payload.get("stream_text", "")))
        self.draft_question = str(payload.get("draft_question", ""))
        draft = payload.get("draft")
        if draft:
            try:
                await self.draft_pane.load(AnalysisDraft.model_validate(draft))
            except ValueError:
                self.notify(
                    "The kept draft could not be read; its text is shown above.", severity="warning"
                )
            else:
                self.action_show_tab("draft")
                return
        self.action_show_tab("analysis")
