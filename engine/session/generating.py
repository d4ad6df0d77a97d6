"""Generation runs as Session methods: Analysis, regenerate one item, Chat.

Each returns a :class:`~engine.session.runs.Run` whose ``result()`` is typed: the Analysis
is parsed here (``engine.inference.analysis``) into an ``AnalysisDraft`` with its stats and
context report, a regenerated item into its text, a chat turn into the reply. Front ends
never parse model output.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from engine.session.runs import AnalysisOutcome, ChatOutcome, ItemOutcome, Outcome, Run

if TYPE_CHECKING:
    from engine.records import AnalysisDraft, ChatMessage, Patient


def _check_quotes(outcome: AnalysisOutcome, patient: Patient, question: str) -> AnalysisOutcome:
    """Say where a quoted reason's words are not the statement's (``engine.inference.quotes``)."""
    from dataclasses import replace

    from engine.inference.quotes import quote_caveat

    if outcome.draft is None:
        return outcome
    lines = quote_caveat(outcome.draft, question, patient)
    if not lines:
        return outcome
    return replace(outcome, caveat=" ".join(filter(None, [outcome.caveat, lines])))


class GenerationRuns:
    """Run-making methods of :class:`~engine.session.Session` (a base of it; the Session
    provides ``_loader``; a Run waits for the model and picks the patient's adapter)."""

    def analysis(
        self,
        patient: Patient,
        question: str,
        *,
        observed: str = "",
        guidance: AnalysisDraft | None = None,
    ) -> Run[AnalysisOutcome]:
        """A draft Analysis of ``question`` (with ``guidance``: regenerate the whole draft)."""
        kind = "analysis" if guidance is None else "regenerate_all"
        extra: dict[str, Any] = {"observed": observed} if observed else {}
        if guidance is not None:
            extra["guidance"] = guidance
        return Run(
            self,
            kind,
            patient,
            lambda model, cancel: model.stream_analysis(patient, question, cancel=cancel, **extra),
            lambda base: _check_quotes(self._parse_draft(base), patient, question),
        )

    def quote_caveat(self, patient: Patient, question: str, draft: AnalysisDraft) -> str:
        """Where ``draft``'s quoted reasons are not ``question``'s words ("" when none): for a
        draft put together outside a Run (rows taken from both sides in Compare)."""
        from engine.inference.quotes import quote_caveat

        return quote_caveat(draft, question, patient)

    def _parse_draft(self, base: Outcome) -> AnalysisOutcome:
        from engine.inference.analysis import parse_analysis

        fields = vars(base)
        if base.error is not None or not base.text.strip():
            return AnalysisOutcome(**fields)
        label = self._loader.label
        try:
            if base.draft_of is not None:  # the engine's own draft, with its risk items
                draft = base.draft_of(base.text)
            else:
                draft = parse_analysis(base.text, model_name=label)
        except Exception as exc:
            return AnalysisOutcome(**{**fields, "error": f"The draft could not be parsed: {exc}"})
        draft.raw_output = draft.raw_output or base.text
        draft.model_name = draft.model_name or label
        return AnalysisOutcome(**fields, draft=draft)

    def regenerate_item(
        self, patient: Patient, question: str, draft: AnalysisDraft, section: str, item_id: str
    ) -> Run[ItemOutcome]:
        """A new text for one item of ``draft``, guided by its comments and the rest."""
        snapshot = draft.model_copy(deep=True)

        def finish(base: Outcome) -> ItemOutcome:
            from engine.inference.analysis import parse_item_text

            text = " ".join(parse_item_text(base.text).split()) if base.text.strip() else ""
            return ItemOutcome(**vars(base), section=section, item_id=item_id, item_text=text)

        return Run(
            self,
            "regenerate_item",
            patient,
            lambda model, cancel: model.stream_regenerate_item(
                patient, question, snapshot, section, item_id, cancel=cancel
            ),
            finish,
        )

    def chat(
        self, patient: Patient | None, history: list[ChatMessage], message: str
    ) -> Run[ChatOutcome]:
        """The model's reply in a chat about ``patient`` (``history`` before ``message``)."""
        past = list(history)

        def finish(base: Outcome) -> ChatOutcome:
            reply = (base.text + " [stopped]").strip() if base.cancelled else base.text
            return ChatOutcome(**vars(base), reply=reply)

        return Run(
            self,
            "chat",
            patient,
            lambda model, cancel: model.stream_chat(patient, past, message, cancel=cancel),
            finish,
        )
