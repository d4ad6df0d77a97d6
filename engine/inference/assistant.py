"""The one object the TUI (or a Python shell) talks to: load, pick adapter, stream, parse.

Every ``stream_*`` call builds its prompt eagerly (so bad input raises ``InputRejected`` at
the call) and returns a :class:`~engine.inference.stream.TextStream`. Iterating runs
``model.generate`` in a worker thread; setting ``cancel`` ends it cleanly within a token.
When it ends, the stream's ``stats`` hold the timing and its ``context_report`` says what of
the record fit: per run, never on this shared object. Front ends do not call this directly:
``engine.session.Session`` waits for the model, picks the patient's adapter, runs the
stream and parses it into a typed result.

The Assistant's other jobs are bases of it: ``prompt_assembly`` (prompt token ids, record
fitting, knowledge grounding), ``adapter_choice`` (which adapter the model uses) and
``local_runs`` (generation runs on the local model, prefix cache, record prefill, GPU fast
path). This module holds loading, the risk check and the three streams.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from engine.errors import InputRejected, ModelLoadError, PhyAssistError
from engine.inference.adapter_choice import AdapterChoice
from engine.inference.analysis import parse_analysis, strip_leading_marker
from engine.inference.constraints import language_caveat
from engine.inference.context import CountingCache, PrefixCache
from engine.inference.generation import GenerationRun
from engine.inference.local_runs import LocalRuns
from engine.inference.prompt_assembly import PromptAssembly
from engine.inference.prompts import analysis_request, detect_language, regenerate_item_request
from engine.inference.stream import GenerationStats, TextStream
from engine.inference.structured import (
    StructuredDraft,
    ensure_risk_items,
    requested_language,
    wants_short_label,
    write_item,
)
from engine.model.adapters import AdapterManager, manager_for
from engine.model.llm import LoadedModel, load_model
from engine.records import AnalysisDraft, ChatMessage, Item, Patient
from engine.settings import EMBEDDED_MODEL, Settings
from engine.trust.risk import RiskFlag, assess, found_by
from engine.trust.risk_model import assess_with_model, yes_no_scorer

__all__ = ["Assistant", "GenerationStats", "TextStream"]

ITEM_MAX_NEW_TOKENS = 160


class Assistant(PromptAssembly, AdapterChoice, LocalRuns):
    """Facade over model loading, prompts, generation, parsing and adapters."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.last_adapter_error: str | None = None
        self.last_prompt_ids: list[int] = []  # the token ids of the last prompt (debugging)
        self.prefix_cache = PrefixCache()
        self._loaded: LoadedModel | None = None
        self._adapters: AdapterManager | None = None
        self._count: CountingCache | None = None
        self._suffix = "base"
        self._domain_name: str | None = None
        # knowledge hook: a KnowledgeIndex (engine.knowledge) the Session sets (a lazy proxy
        # of the open vault's index); Analysis and Chat then take its top matches as context
        # (settings.knowledge). Each stream's report says what was used; nothing is kept here.
        self.knowledge: Any | None = None

    # Loading -------------------------------------------------------------------------------

    def load(self, progress: Callable[[str], None] | None = None) -> None:
        """Load the model (blocking; run it in a worker). Raises ModelLoadError."""
        try:
            loaded = load_model(self.settings, progress)
        except PhyAssistError:
            raise
        except Exception as exc:
            raise ModelLoadError(f"The model could not be loaded: {exc}") from exc
        self._loaded = loaded
        self._adapters = manager_for(loaded)
        tokenizer = loaded.tokenizer
        self._count = CountingCache(
            lambda text: len(tokenizer.encode(text, add_special_tokens=False))
        )
        self.use_patient(None)

    @property
    def loaded(self) -> bool:
        return self._loaded is not None

    @property
    def model(self) -> LoadedModel:
        if self._loaded is None:
            raise ModelLoadError("The model is not loaded yet.")
        return self._loaded

    @property
    def model_label(self) -> str:
        if self._loaded is None:
            return "model not loaded"
        return f"{self._loaded.name} · {self._suffix}"

    @property
    def adapters(self) -> AdapterManager:
        if self._adapters is None:
            raise ModelLoadError("The model is not loaded yet.")
        return self._adapters

    # Risk ----------------------------------------------------------------------------------

    def risk_model_refusal(self) -> str | None:
        """Why the model is not asked in the risk check (None: it is asked too).

        Cheap, no model call: the TUI uses it to decide whether to spend a worker."""
        mode = self.settings.risk_model_check
        if mode == "off":
            return "the model check is off in the settings (risk_model_check)"
        if self._loaded is None:
            return "the model is still loading"
        if mode == "auto" and self.settings.model.spec == EMBEDDED_MODEL:
            return (
                "the embedded model's yes/no answers are not informative "
                "(risk_model_check=on forces it)"
            )
        return None

    def risk_flags(self, text: str) -> tuple[list[RiskFlag], str]:
        """Risk flags for ``text`` and a line saying how they were found.

        Rules always; where :meth:`risk_model_refusal` allows, the loaded model (with the
        active adapter) answers a constrained yes/no per category: it confirms rule flags and
        adds low flags the rules missed, and never removes a rule flag. Blocking: run it in a
        worker. A failing model check falls back to the rule flags and says so.
        """
        why = self.risk_model_refusal()
        if why is not None:
            flags = assess(text)
            return flags, found_by(model_not_asked=why)
        loaded = self.model
        try:
            with loaded.lock:
                scorer = yes_no_scorer(loaded.model, loaded.tokenizer)
                flags = assess_with_model(text, scorer, ask_unflagged=True, may_drop=False)
        except Exception as exc:  # the rule flags are still shown: never lose them
            flags = assess(text)
            return flags, found_by(model_not_asked=f"the model check failed ({exc})")
        return flags, found_by(loaded.name)

    # Streams -------------------------------------------------------------------------------

    def stream_analysis(
        self,
        patient: Patient,
        question: str,
        *,
        cancel: threading.Event,
        guidance: AnalysisDraft | None = None,
        observed: str = "",
    ) -> TextStream:
        """Stream a whole Analysis draft for ``question`` (the client's statement).

        With ``generation.draft_layout == "engine"`` the engine writes the layout and the model
        fills in each item (engine.inference.structured). Either way the stream's
        ``draft_of(text)`` gives the structured draft of its text, with the engine's risk items
        (the tolerant parser's reading where the text is not the engine's, e.g. cancelled)."""
        start = time.perf_counter()
        self._check_text(question, "statement")
        statement_lang = detect_language(question)
        lang = requested_language(_draft_comments(guidance)) or statement_lang
        user = analysis_request(question, lang, observed=observed, guidance=guidance)
        user, grounding = self._grounded(user, question, patient, lang)  # knowledge hook
        max_new = self._max_new()
        ids, report = self._build(patient, [{"role": "user", "content": user}], max_new)
        if grounding:
            report += f"; {grounding.report()}"
        gen = self.settings.generation
        name = self.model_label
        if gen.draft_layout == "free":
            run = self._run(patient, ids, cancel, max_new, start)
            stream = _stream(run, report)
            drafter = None
        else:
            drafter = StructuredDraft(
                self.model.tokenizer,
                self._segments(patient, cancel, start),
                ids,
                lang,
                question,
                constrain=gen.language_constraint,
                short_label=wants_short_label(guidance.symptom_type.comments if guidance else []),
                previous=guidance,
                start=start,
                cancelled=cancel.is_set,
            )
            stream = TextStream(
                drafter.stream(), context_report=report, stats=lambda: drafter.stats
            )
        stream.caveat = language_caveat(self.model.tokenizer, lang)

        def draft_of(text: str) -> AnalysisDraft:
            from engine.knowledge.grounding import attach_citations  # bm25s only when drafting

            if drafter is not None and text == drafter.text:
                draft = drafter.draft.model_copy(deep=True)
            else:
                draft = parse_analysis(text)
            draft.model_name = name
            draft = ensure_risk_items(draft, question, statement_lang, guidance)
            return attach_citations(draft, grounding)  # knowledge: [n] markers on items

        stream.draft_of = draft_of
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
        """Stream a new text for one item, guided by its comments and the rest of the draft."""
        start = time.perf_counter()
        self._check_text(question, "statement")
        item = _find_item(draft, section, item_id)
        lang = requested_language(item.comments) or detect_language(question)
        user = regenerate_item_request(question, draft, section, item, lang)
        max_new = self._max_new(ITEM_MAX_NEW_TOKENS)
        ids, report = self._build(patient, [{"role": "user", "content": user}], max_new)
        gen = self.settings.generation
        if gen.draft_layout == "free":
            run = self._run(patient, ids, cancel, max_new, start)
            return _stream(run, report, _strip_leading_marker(iter(run)))
        stats: list[GenerationStats] = []
        chunks = write_item(
            self.model.tokenizer,
            self._segments(patient, cancel, start),
            ids,
            lang,
            section,
            constrain=gen.language_constraint,
            short_label=wants_short_label(item.comments),
            stats_out=stats,
        )
        return TextStream(chunks, context_report=report, stats=lambda: stats[-1] if stats else None)

    def stream_chat(
        self,
        patient: Patient | None,
        history: list[ChatMessage],
        message: str,
        *,
        cancel: threading.Event,
    ) -> TextStream:
        """Stream the model's reply in a chat about ``patient`` (or no patient)."""
        start = time.perf_counter()
        self._check_text(message, "message")
        past = [
            {"role": m.role, "content": m.content}
            for m in history
            if m.role in ("user", "assistant") and m.content.strip()
        ]
        user, grounding = self._grounded(message, message, patient, detect_language(message))
        max_new = self._max_new()
        ids, report = self._build(
            patient, [{"role": "user", "content": user}], max_new, history_turns=past
        )
        if grounding:
            report += f"; {grounding.report()}"
        return _stream(self._run(patient, ids, cancel, max_new, start), report)


def _stream(run: GenerationRun, report: str, chunks: Iterator[str] | None = None) -> TextStream:
    """The run's chunks (``chunks`` if they were filtered) with its stats and context report."""
    return TextStream(
        chunks if chunks is not None else iter(run),
        context_report=report,
        stats=lambda: run.stats,
    )


def _draft_comments(draft: AnalysisDraft | None) -> list[str]:
    if draft is None:
        return []
    items = [draft.symptom_type, *draft.reasons, *draft.advice]
    return [c for i in items for c in i.comments]


def _find_item(draft: AnalysisDraft, section: str, item_id: str) -> Item:
    if section == "symptom_type":
        return draft.symptom_type
    if section not in ("reasons", "advice", "unplaced"):
        raise InputRejected(f"Unknown draft section {section!r}.")
    for item in getattr(draft, section):
        if item.id == item_id:
            return item
    raise InputRejected("That item is no longer in the draft.")


def _strip_leading_marker(chunks: Iterator[str], hold: int = 48) -> Iterator[str]:
    """Hold back the first few characters until a leading "2." or "Reason:" can be dropped."""
    head = ""
    released = False
    for chunk in chunks:
        if released:
            yield chunk
            continue
        head += chunk
        if len(head) >= hold or "\n" in head.lstrip():
            released = True
            cleaned = strip_leading_marker(head)
            if cleaned:
                yield cleaned
    if not released and head:
        cleaned = strip_leading_marker(head)
        if cleaned:
            yield cleaned
