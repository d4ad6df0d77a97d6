"""The workspace's encrypted draft autosave: what a crash or a lock must not lose.

A second after the last edit (question, observed state, streamed text, draft items) the
unsaved work of the open patient is written, encrypted, through
``Session.write_autosave``; opening the patient again offers it (``offer_autosaves``):
Restore, Later (Esc) or Discard. Later copies it apart (``Session.write_kept_autosave``)
so that new work autosaved meanwhile cannot overwrite it, and it is offered again on the
next open; Save removes the autosave, and only an explicit Discard (or Restore) removes a
draft put off. ``DraftAutosave`` is a base of ``WorkspaceScreen`` (it reads the screen's
``patient``, ``analysis`` and ``draft_pane``).
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any

from textual import on, work
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import Input, TextArea

from engine.errors import PhyAssistError
from engine.records import AnalysisDraft
from phyassist_tui.messages import DraftChanged
from phyassist_tui.screens.restore import RestoreDraftScreen
from phyassist_tui.widgets.text import clean

if TYPE_CHECKING:
    from engine.records import Patient

AUTOSAVE_DELAY_S = 1.0


class DraftAutosave(Screen):
    """Base of ``WorkspaceScreen``: schedule, write, restore and discard the autosave.

    A ``Screen`` subclass (not a plain mixin) so that Textual registers its ``@on``
    handlers."""

    _autosave_timer: Timer | None = None

    @on(DraftChanged)
    def _draft_changed(self) -> None:
        self._schedule_autosave()
        self.refresh_quote_caveat()

    def refresh_quote_caveat(self) -> None:
        """Where the draft's quoted reasons are not the statement's words, kept in view above
        the items and current after every edit (``Session.quote_caveat``)."""
        draft, patient = self.draft_pane.draft, self.patient
        question = self.draft_question or self.analysis.question
        caveat = ""
        if draft is not None and patient is not None and question.strip():
            caveat = clean(self.app.session.quote_caveat(patient, question, draft))
        self.draft_pane.show_caveat(caveat)

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
        # what was typed since the patient opened (before the offer was answered) stays,
        # after the restored text: restoring must not overwrite it
        typed_question, typed_observed = self.analysis.question, self.analysis.observed
        question = _after(str(payload.get("question", "")), typed_question, "\n\n")
        observed = _after(str(payload.get("observed_state", "")), typed_observed, "; ")
        self.analysis.set_inputs(question, observed)
        if (typed_question, typed_observed) != ("", "") and (question, observed) != (
            typed_question,
            typed_observed,
        ):
            self.notify("Restored the kept draft; what you had typed follows it.")
        self.analysis.stream.set_text(str(payload.get("stream_text", "")))
        self.draft_question = str(payload.get("draft_question", ""))
        draft = payload.get("draft")
        if draft:
            try:
                await self.draft_pane.load(AnalysisDraft.model_validate(draft))
                self.refresh_quote_caveat()
            except ValueError:
                self.notify(
                    "The kept draft could not be read; its text is shown above.", severity="warning"
                )
            else:
                self.action_show_tab("draft")
                return
        self.action_show_tab("analysis")

    # -- the offer on opening a patient: Restore, Later (Esc), Discard ---------------------------
    def offer_autosaves(
        self,
        patient: Patient,
        autosave: dict[str, Any] | None,
        kept: dict[str, Any] | None,
    ) -> None:
        """Offer each unsaved draft kept for ``patient``: the autosave, then one put off."""
        offers: list[tuple[bool, dict[str, Any]]] = []
        if autosave:
            offers.append((False, autosave))
        if kept and kept != autosave:  # put off once and unchanged since: offered once
            offers.append((True, kept))
        self._offer_next(patient, offers, both=bool(autosave) and autosave == kept)

    def _offer_next(
        self, patient: Patient, offers: list[tuple[bool, dict[str, Any]]], *, both: bool
    ) -> None:
        if not offers:
            return
        (is_kept, payload), rest = offers[0], offers[1:]

        async def answer(choice: str | None) -> None:
            if self.patient is None or self.patient.id != patient.id:
                return  # another patient was opened meanwhile: asked again next time
            if choice == "restore":
                await self._restore_autosave(payload)
                if is_kept or both:  # now in the panes, autosaved as usual
                    self._write_kept(patient.id, None)
                return  # another kept draft (if any) is offered next time
            if choice == "discard":
                if is_kept:
                    self._write_kept(patient.id, None)
                else:
                    self._delete_autosave(patient.id)
                    if both:
                        self._write_kept(patient.id, None)
            elif not is_kept:  # later: a copy that the autosave never overwrites
                self._write_kept(patient.id, payload)
            self._offer_next(patient, rest, both=both)

        when = "put off earlier" if is_kept else "kept from last time"
        self.app.push_screen(
            RestoreDraftScreen(
                f"An unsaved draft for {clean(patient.name)} was {when}"
                f"{autosave_preview(payload)}. Restore it?"
            ),
            answer,
        )

    @work(thread=True, name="keep-draft", group="store-write", exit_on_error=False)
    def _write_kept(self, patient_id: str, payload: dict[str, Any] | None) -> None:
        try:
            self.app.session.write_kept_autosave(patient_id, payload)
        except PhyAssistError as exc:
            self.app.call_from_thread(self.notify, f"Draft not kept: {exc}", severity="error")


def _after(restored: str, typed: str, sep: str) -> str:
    """``restored`` then ``typed`` (each once; either may be empty)."""
    if not typed or typed == restored:
        return restored
    return f"{restored}{sep}{typed}" if restored else typed


def autosave_preview(payload: dict[str, Any]) -> str:
    """A few words of the kept draft's question, so two kept drafts can be told apart."""
    words = clean(str(payload.get("question") or "")).split()
    if not words:
        return ""
    text = " ".join(words)
    return f" (“{text[:40]}…”)" if len(text) > 40 else f" (“{text}”)"
