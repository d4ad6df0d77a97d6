"""Generation handling for the workspace: start a run, stream it into its pane, finish it.

The engine's ``Session`` turns each action into a :class:`~engine.session.Run` (prompt,
model wait, adapter, stream, parse); this module only moves its text to the screen:

    action -> ``_begin(run)`` -> one ``@work`` thread per run kind (``_analysis_worker``,
    ``_item_worker``, ``_chat_worker``) -> ``GenerationStarted`` / ``GenerationChunk``* ->
    the kind's target pane (``_TARGETS``, at the end of the module) -> one
    ``GenerationFinished(outcome)`` -> the kind's on-done handler (``_DONE``), which gets
    the typed, already-parsed outcome.

Streamed text is buffered (``StreamBuffer``, ``StreamView.feed``) so that the screen is
laid out a few times a second, not once per token. ``GenerationHandling`` is a base of
``WorkspaceScreen``: it uses the screen's panes (``analysis``, ``draft_pane``, ``chat``,
``status``) and its ``patient``.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import TYPE_CHECKING, Any

from textual import on, work
from textual.screen import Screen
from textual.widgets import TabbedContent

from engine.records import ChatMessage
from phyassist_tui.messages import (
    GenerationChunk,
    GenerationFinished,
    GenerationKind,
    GenerationStarted,
    RegenerateAllRequested,
    RegenerateItemRequested,
)
from phyassist_tui.widgets.stream_view import STREAM_FLUSH_S, StreamBuffer
from phyassist_tui.widgets.text import clean

if TYPE_CHECKING:
    from engine.session import AnalysisOutcome, ChatOutcome, ItemOutcome, Run

ACTIVITY: dict[GenerationKind, str] = {
    "analysis": "drafting…",
    "regenerate_item": "regenerating item…",
    "regenerate_all": "regenerating draft…",
    "chat": "replying…",
}


class GenerationHandling(Screen):
    """Base of ``WorkspaceScreen``: the one generation in flight and its stream.

    A ``Screen`` subclass (not a plain mixin) so that Textual registers its ``@on``
    handlers."""

    generating: GenerationKind | None = None
    _run: Run[Any] | None = None
    _regen_item: str | None = None  # the item id a regenerate_item run is for
    _gen_requested_at = 0.0  # monotonic: when the generation in flight was asked for
    _rate_shown_at = 0.0
    _side_buffer: StreamBuffer | None = None  # item row / chat bubble text held back

    # -- starting ------------------------------------------------------------------------------
    def _begin(self, run: Run[Any]) -> bool:
        """Show that ``run`` started and stream it in its kind's worker (one at a time)."""
        if self.generating is not None:
            self.notify("A generation is already running (Esc stops it).", severity="warning")
            return False
        self._stop_prefill()  # what it read so far is kept and used
        self._run = run
        self.generating = run.kind
        self._gen_requested_at = time.monotonic()
        self.draft_pane.busy = True
        self.status.activity = "waiting for the model…" if self.app.model_state != "ready" else ""
        self.status.tokens_per_s = None
        self.refresh_bindings()
        self._side_buffer = StreamBuffer(self, partial(_TARGETS[run.kind], self))
        worker = {
            "analysis": self._analysis_worker,
            "regenerate_all": self._analysis_worker,
            "regenerate_item": self._item_worker,
            "chat": self._chat_worker,
        }[run.kind]
        worker(run)
        return True

    def cancel_generation(self) -> None:
        if self._run is not None and self.generating is not None:
            self._run.cancel()
            self.status.activity = "stopping…"

    # -- the workers (threads): the Session's run, posted as messages ---------------------------
    @work(thread=True, name="generate-analysis", group="generation", exit_on_error=False)
    def _analysis_worker(self, run: Run[AnalysisOutcome]) -> None:
        self._pump(run)

    @work(thread=True, name="generate-regenerate_item", group="generation", exit_on_error=False)
    def _item_worker(self, run: Run[ItemOutcome]) -> None:
        self._pump(run)

    @work(thread=True, name="generate-chat", group="generation", exit_on_error=False)
    def _chat_worker(self, run: Run[ChatOutcome]) -> None:
        self._pump(run)

    def _pump(self, run: Run[Any]) -> None:
        """Wait for the model, post every chunk, then the one finished message."""
        if run.wait_for_model():
            self.post_message(GenerationStarted(run.kind))
        started = time.perf_counter()
        for count, chunk in enumerate(run.chunks, 1):
            elapsed = time.perf_counter() - started
            self.post_message(
                GenerationChunk(run.kind, chunk, count / elapsed if elapsed else None)
            )
        self.post_message(GenerationFinished(run.result()))

    # -- on the event loop ---------------------------------------------------------------------
    @on(GenerationStarted)
    def _generation_started(self, message: GenerationStarted) -> None:
        self.status.activity = ACTIVITY[message.kind]

    @on(GenerationChunk)
    def _generation_chunk(self, message: GenerationChunk) -> None:
        if message.kind in ("analysis", "regenerate_all"):
            self.analysis.stream.feed(message.text)
        elif self._side_buffer is not None:
            self._side_buffer.feed(message.text)
        now = time.monotonic()
        if now - self._rate_shown_at >= STREAM_FLUSH_S:
            self._rate_shown_at = now
            self.status.tokens_per_s = message.tokens_per_s

    def _show_in_stream(self, text: str) -> None:
        self.analysis.stream.append(text)

    def _show_in_row(self, text: str) -> None:
        row = self.draft_pane.row_for(self._regen_item) if self._regen_item else None
        if row is not None:
            row.streaming = (row.streaming or "") + text
            row.refresh_body()

    def _show_in_bubble(self, text: str) -> None:
        bubble = self.chat.last_bubble
        if bubble is not None and bubble.role == "assistant":
            bubble.set_text(bubble.text + text)

    def _flush_stream(self) -> None:
        """Show what is held back, in order, before the end is handled."""
        self.analysis.stream.flush()
        if self._side_buffer is not None:
            self._side_buffer.flush()

    @on(GenerationFinished)
    async def _generation_finished(self, message: GenerationFinished) -> None:
        outcome = message.outcome
        self._flush_stream()
        self._side_buffer = None
        self.generating = None
        self._run = None
        self.draft_pane.busy = False
        self.status.activity = "stopped" if outcome.cancelled else ""
        stats = outcome.stats
        if stats is not None:
            self.status.tokens_per_s = float(stats.tokens_per_s)
        self.refresh_bindings()
        if outcome.error:
            self.notify(clean(outcome.error), severity="error", timeout=8)
        elif stats is not None and stats.looped:
            self.status.activity = "stopped: the model repeated itself"
            self.notify(
                "The model began repeating itself, so it was stopped. Edit what is useful, "
                "or regenerate (a comment can steer it).",
                severity="warning",
                timeout=8,
            )
        if outcome.caveat and not outcome.error:  # e.g. a model that cannot write Chinese
            self.notify(clean(outcome.caveat), severity="warning", timeout=12)
        await _DONE[outcome.kind](self, outcome)

    async def _analysis_done(self, outcome: AnalysisOutcome) -> None:
        # decided before any await: meanwhile the counselor may start the next generation,
        # and the typing check compares key times with the generation's start
        typing = self._counselor_is_typing()
        if outcome.draft is None:
            if outcome.cancelled:
                self.notify("Stopped. The text so far is kept above.")
            self._schedule_autosave()
            return
        if outcome.kind == "regenerate_all" and outcome.cancelled:
            self.notify("Regeneration stopped; the previous draft is kept.")
            return
        self.draft_pane.remember("new draft" if outcome.kind == "analysis" else "regenerate all")
        await self.draft_pane.load(outcome.draft)
        self.refresh_quote_caveat()
        self._schedule_autosave()
        review = self._key_display("workspace.show_draft")
        if outcome.cancelled:
            self.notify(f"Stopped. The partial draft is kept ({review} to review).")
        elif self.generating is not None:
            pass  # the next generation started while the draft loaded: its view stays
        elif typing or self._counselor_is_typing():  # the next letters must land in the field
            # said in the status line: a toast could cover the field being typed in
            self.status.activity = f"draft ready ({review} reviews it)"
        else:
            self.action_show_tab("draft")

    async def _item_done(self, outcome: ItemOutcome) -> None:
        self._regen_item = None
        if self.draft_pane.draft is None:
            return
        row = self.draft_pane.row_for(outcome.item_id)
        new_text = " ".join(clean(outcome.item_text).split())
        if row is not None:
            row.streaming = None
            if outcome.cancelled or outcome.error or not new_text:
                if outcome.cancelled:
                    self.notify("Regeneration stopped; the item is unchanged.")
            else:
                self.draft_pane.remember("regenerate item")
                row.item.apply_regeneration(new_text)  # learning: keeps comments + old text
            row.refresh_body()
        if not self._counselor_is_typing():
            self.draft_pane.focus_list()
        self._schedule_autosave()

    async def _chat_done(self, outcome: ChatOutcome) -> None:
        bubble = self.chat.last_bubble
        if bubble is not None and bubble.role == "assistant":
            bubble.set_text(outcome.reply)
        if outcome.reply:
            self.history.append(ChatMessage(role="assistant", content=outcome.reply))
        self._save_chat()

    # -- regenerating --------------------------------------------------------------------------
    def _ask_before_replacing_edits(self) -> bool:
        """Ask before a new draft replaces one the counselor edited; ``True`` if asked."""
        from phyassist_tui.screens.confirm import ConfirmScreen
        from phyassist_tui.widgets.draft_pane import unsaved_edits

        if not self.panes_mounted or self.generating is not None:
            return False
        edits = unsaved_edits(self.draft_pane.draft)
        if not edits:
            return False

        def answer(yes: bool | None) -> None:
            if yes:
                self.action_generate(confirmed=True)

        self.app.push_screen(
            ConfirmScreen(
                f"The current draft has {edits} edit{'s' if edits != 1 else ''} of yours. "
                "A new draft replaces it (u in the Draft undoes). Draft anew?",
                yes="Draft anew",
                no="Keep",
            ),
            answer,
        )
        return True

    @on(RegenerateItemRequested)
    def _regenerate_item(self, message: RegenerateItemRequested) -> None:
        draft, patient = self.draft_pane.draft, self.patient
        if draft is None or patient is None:
            return
        question = self.draft_question or self.analysis.question
        row = self.draft_pane.row_for(message.item_id)
        if row is None:
            return
        if self.generating is not None:  # checked before the row is marked as streaming
            self.notify("A generation is already running (Esc stops it).", severity="warning")
            return
        run = self.app.session.regenerate_item(
            patient, question, draft, message.section, message.item_id
        )
        self._regen_item = message.item_id
        self._begin(run)
        row.streaming = ""
        row.refresh_body()

    @on(RegenerateAllRequested)
    def _regenerate_all(self) -> None:
        draft, patient = self.draft_pane.draft, self.patient
        if draft is None or patient is None:
            return
        question = self.draft_question or self.analysis.question
        run = self.app.session.analysis(
            patient,
            question,
            observed=self.analysis.observed,
            guidance=draft.model_copy(deep=True),
        )
        if self.generating is None:
            self.analysis.stream.set_text("")
            self.query_one(TabbedContent).active = "analysis"
        self._begin(run)

    def _start_analysis(self, question: str, observed: str) -> None:
        """After the risk check: draft an Analysis of ``question`` into the Analysis pane."""
        patient = self.patient
        if patient is None:
            return
        self.draft_question = question
        self.analysis.stream.set_text("")
        self.query_one(TabbedContent).active = "analysis"
        self._begin(self.app.session.analysis(patient, question, observed=observed))


__all__ = ["ACTIVITY", "GenerationHandling"]


# where each kind's text streams: the Analysis pane's StreamView, the item's row, the bubble
_TARGETS: dict[GenerationKind, Callable[[GenerationHandling, str], None]] = {
    "analysis": GenerationHandling._show_in_stream,
    "regenerate_all": GenerationHandling._show_in_stream,
    "regenerate_item": GenerationHandling._show_in_row,
    "chat": GenerationHandling._show_in_bubble,
}
# what each kind does once finished, with its typed outcome
_DONE: dict[GenerationKind, Callable[[GenerationHandling, Any], Awaitable[None]]] = {
    "analysis": GenerationHandling._analysis_done,
    "regenerate_all": GenerationHandling._analysis_done,
    "regenerate_item": GenerationHandling._item_done,
    "chat": GenerationHandling._chat_done,
}
