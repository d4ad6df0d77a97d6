"""The one object the TUI (or a Python shell) talks to: load, pick adapter, stream, parse.

Every ``stream_*`` call builds its prompt eagerly (so bad input raises ``InputRejected`` at
the call) and returns a :class:`~engine.inference.stream.TextStream`. Iterating runs
``model.generate`` in a worker thread; setting ``cancel`` ends it cleanly within a token.
When it ends, the stream's ``stats`` hold the timing and its ``context_report`` says what of
the record fit: per run, never on this shared object. Front ends do not call this directly:
``engine.session.Session`` waits for the model, picks the patient's adapter, runs the
stream and parses it into a typed result.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from engine.errors import InputRejected, ModelLoadError, PhyAssistError
from engine.inference.analysis import parse_analysis, strip_leading_marker
from engine.inference.constraints import TokenConstraint
from engine.inference.context import (
    CountingCache,
    FittedRecord,
    PrefixCache,
    common_prefix_len,
    fit_record,
)
from engine.inference.generation import GenerationRun, prefill
from engine.inference.prompts import (
    Lang,
    analysis_request,
    detect_language,
    record_language,
    regenerate_item_request,
    system_prompt,
)
from engine.inference.stream import GenerationStats, TextStream
from engine.inference.structured import (
    StructuredDraft,
    ensure_risk_items,
    requested_language,
    wants_short_label,
    write_item,
)
from engine.model.adapters import (
    AdapterManager,
    AdapterRegistry,
    domain_adapter_path,
    manager_for,
    read_adapter_dir,
)
from engine.model.llm import LoadedModel, load_model
from engine.records import AnalysisDraft, ChatMessage, Item, Patient
from engine.settings import EMBEDDED_MODEL, Settings
from engine.trust.risk import RiskFlag, assess, assess_with_model, found_by, yes_no_scorer

__all__ = ["Assistant", "GenerationStats", "TextStream"]

ITEM_MAX_NEW_TOKENS = 160
MARGIN_TOKENS = 16
PREFILL_CHUNK_CPU = 256  # tokens per step of the record prefill (~0.5 s on 2 cores): the
PREFILL_CHUNK_GPU = 2048  # longest a generation waits for the lock after cancelling it


class Assistant:
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

    # Adapters ------------------------------------------------------------------------------

    def use_patient(self, patient: Patient | None, store: Any | None = None) -> str:
        """Activate the patient's adapter (the newest, or the one a rollback chose), else the
        domain adapter, else the base.

        A damaged or mismatched adapter never leaves the previous patient's adapter active:
        it falls back and says so in the label (and ``last_adapter_error``).
        """
        if self._loaded is None:
            return self.model_label
        manager = self.adapters
        self.last_adapter_error = None
        problem = ""
        with manager.lock:
            if patient is not None and store is not None:
                registry = AdapterRegistry(store)
                version: int | None = None
                try:
                    version = registry.active(patient.id)
                except PhyAssistError as exc:
                    problem = "adapters unreadable"
                    self.last_adapter_error = str(exc)
                if version is not None:
                    try:
                        self._suffix = self._activate_patient_adapter(registry, patient, version)
                        return self.model_label
                    except PhyAssistError as exc:
                        problem = f"adapter v{version} unusable"
                        self.last_adapter_error = f"Adapter v{version}: {exc}"
            if self._activate_domain():
                self._suffix = "domain adapter"
            else:
                manager.activate(None)
                self._suffix = "base"
            if problem:
                self._suffix += f" ({problem})"
        return self.model_label

    def _activate_patient_adapter(self, registry: AdapterRegistry, patient: Patient, v: int) -> str:
        """Load and activate patient adapter ``v``; returns the label suffix (learning).

        An adapter trained over the domain adapter (its card says which) is stacked on it:
        domain + patient deltas together. If that domain adapter is not the one available,
        raises AdapterLoadError (the caller falls back to the domain adapter and says why).
        An adapter trained on the bare base (older cards) is used alone, as before."""
        from engine.model.stack import stack_base

        manager = self.adapters
        name = f"patient-{patient.id[:16]}-v{v}"
        stack: list[str] = []
        path = stack_base(registry.card(patient.id, v), self.settings.model)
        if path is not None:
            if not manager.is_loaded("domain"):
                config, state = read_adapter_dir(path)
                manager.load("domain", config, state)
            stack.append("domain")
        if not manager.is_loaded(name):
            config, state = registry.read(patient.id, v)
            manager.load(name, config, state)
        manager.activate_stack([*stack, name])
        return f"domain + adapter v{v}" if stack else f"adapter v{v}"

    def _activate_domain(self) -> bool:
        try:
            path = domain_adapter_path(self.settings.model)
        except PhyAssistError as exc:
            self.last_adapter_error = str(exc)
            return False
        if path is None:
            return False
        name = "domain"
        manager = self.adapters
        try:
            if not manager.is_loaded(name):
                config, state = read_adapter_dir(path)
                manager.load(name, config, state)
            manager.activate(name)
        except PhyAssistError as exc:
            self.last_adapter_error = f"Domain adapter: {exc}"
            return False
        self._domain_name = name
        return True

    @property
    def active_adapter(self) -> str | None:
        return self._adapters.active if self._adapters is not None else None

    # Prompt assembly -----------------------------------------------------------------------

    def _chat_ids(self, system: str, turns: list[dict[str, str]]) -> list[int]:
        tokenizer = self.model.tokenizer
        messages = [{"role": "system", "content": system}, *turns]
        if getattr(tokenizer, "chat_template", None):
            try:
                return _as_ids(
                    tokenizer.apply_chat_template(
                        messages, add_generation_prompt=True, tokenize=True
                    )
                )
            except Exception:
                merged = (
                    [dict(turns[0]), *turns[1:]] if turns else [{"role": "user", "content": ""}]
                )
                merged[0]["content"] = f"{system}\n\n{merged[0]['content']}"
                return _as_ids(
                    tokenizer.apply_chat_template(merged, add_generation_prompt=True, tokenize=True)
                )
        text = f"{system}\n\n" + "".join(
            f"{m['role'].capitalize()}: {m['content']}\n\n" for m in turns
        )
        return _as_ids(tokenizer.encode(text + "Assistant:", add_special_tokens=True))

    def _max_new(self, limit: int | None = None) -> int:
        window = self.model.context_window
        wanted = self.settings.generation.max_new_tokens
        if limit is not None:
            wanted = min(wanted, limit)
        return max(1, min(wanted, window // 2))

    def _build(
        self,
        patient: Patient | None,
        turns: list[dict[str, str]],
        max_new: int,
        *,
        history_turns: list[dict[str, str]] | None = None,
    ) -> tuple[list[int], str]:
        """Token ids of system (role + fitted record) + turns, and the context report.

        The record budget does not depend on the exact task length (up to a reserve), so
        the system prefix stays the same across Analysis, regenerate and Chat.
        """
        assert self._count is not None
        count = self._count
        window = self.model.context_window
        lang: Lang = record_language(patient) if patient is not None else _turns_lang(turns)
        empty_system = system_prompt(lang, "" if patient is not None else None)
        system_only = len(self._chat_ids(empty_system, []))
        history_turns = list(history_turns or [])
        task = len(self._chat_ids(empty_system, turns)) - system_only
        reserve = min(1536, window // 4)
        room = window - max_new - system_only - MARGIN_TOKENS
        if task > room:
            raise InputRejected(
                f"The text is too long for the model: about {task} tokens, and at most "
                f"{max(room, 0)} fit in its context window of {window} tokens. Shorten it."
            )
        # Chat history: newest first into what the reserve leaves.
        left_out_messages = 0
        if history_turns:
            kept: list[dict[str, str]] = []
            budget = max(reserve, task) - task
            for message in reversed(history_turns):
                cost = count(message["content"]) + 8
                if cost > budget:
                    break
                kept.append(message)
                budget -= cost
            left_out_messages = len(history_turns) - len(kept)
            kept.reverse()
            turns = kept + turns
            task = len(self._chat_ids(empty_system, turns)) - system_only

        record_budget = window - max_new - system_only - max(task, reserve) - MARGIN_TOKENS
        fitted: FittedRecord | None = None
        if patient is not None:
            fitted = fit_record(patient, lang, max(record_budget, 0), count)
            system = system_prompt(lang, fitted.text)
        else:
            system = empty_system
        ids = self._chat_ids(system, turns)
        while fitted is not None and len(ids) + max_new > window and fitted.notes_included:
            # Per-piece counts drift from the real template; shrink until it truly fits.
            fitted = fit_record(patient, lang, max(fitted.tokens - 64, 0), count)  # type: ignore[arg-type]
            system = system_prompt(lang, fitted.text)
            ids = self._chat_ids(system, turns)
        if len(ids) + max_new > window:
            raise InputRejected(
                f"The prompt ({len(ids)} tokens) does not fit the model's context window "
                f"({window} tokens) with room for an answer. Shorten the statement."
            )
        report = fitted.report("en") if fitted is not None else "no patient record"
        if left_out_messages:
            report += f"; {left_out_messages} older chat messages left out"
        return ids, report

    def _check_text(self, text: str, what: str) -> str:
        if not text or not text.strip():
            raise InputRejected(f"The {what} is empty.")
        limit = self.settings.limits.max_statement_chars
        if len(text) > limit:
            raise InputRejected(
                f"The {what} has {len(text):,} characters; at most {limit:,} are accepted."
            )
        return text

    # Generation ----------------------------------------------------------------------------

    def _cache_key(self, patient: Patient | None) -> tuple:
        return (patient.id if patient is not None else "", self.active_adapter or "base")

    def _run(
        self,
        patient: Patient | None,
        ids: list[int],
        cancel: threading.Event,
        max_new: int,
        start: float,
        constraint: TokenConstraint | None = None,
        stop_text: Callable[[str], bool] | None = None,
    ) -> GenerationRun:
        loaded = self.model
        model = self.adapters.model
        key = self._cache_key(patient)
        self.last_prompt_ids = list(ids)

        def finished(run: GenerationRun) -> None:
            if run.cache_failed:
                self.prefix_cache.enabled = False  # this model will not take our cache
                self.prefix_cache.clear()
            elif run.error is None and run.past_key_values is not None:
                self.prefix_cache.checkin(key, ids, run.past_key_values)

        return GenerationRun(
            model,
            loaded.tokenizer,
            ids,
            cancel=cancel,
            gen=self.settings.generation,
            max_new_tokens=max_new,
            lock=loaded.lock,
            checkout=lambda: self.prefix_cache.checkout(key, ids, model),
            on_end=finished,
            start=start,
            fast=self._fast_decoder(loaded, model),
            constraint=constraint,
            stop_text=stop_text,
        )

    def _segments(self, patient: Patient | None, cancel: threading.Event, start: float):
        """A ``structured.RunSegment`` over this patient's prefix cache (drafting section by
        section continues one prompt, so each blank reuses the cache of the one before)."""

        def run(ids, max_new, constraint, stop) -> GenerationRun:  # type: ignore[no-untyped-def]
            return self._run(patient, ids, cancel, max_new, start, constraint, stop)

        return run

    def record_prefix_ids(self, patient: Patient) -> list[int]:
        """The prompt tokens every Analysis and Chat request for ``patient`` starts with
        (system prompt + fitted record), as far as the two agree."""
        lang = record_language(patient)
        max_new = self._max_new()
        analysis, _ = self._build(
            patient, [{"role": "user", "content": analysis_request("…", lang)}], max_new
        )
        chat, _ = self._build(patient, [{"role": "user", "content": "…"}], max_new)
        return analysis[: common_prefix_len(analysis, chat)]

    def prefill_record(self, patient: Patient, cancel: threading.Event) -> int:
        """Put the KV cache of the patient's record prompt into the prefix cache now.

        Called when a patient is opened: on the 2-core CPU box the first Analysis of a
        patient with five notes spent 12 s reading the record before its first token, the
        second 0.8 s. Reading it while the counselor types the question moves that wait off
        the critical path. Runs in chunks under the model lock and stops at the next chunk
        once ``cancel`` is set (a generation asks for the lock); what was read by then is
        kept and the generation continues from it. Returns the tokens now cached.
        """
        if self._loaded is None or not self.prefix_cache.enabled:
            return 0
        loaded = self.model
        model = self.adapters.model
        key = self._cache_key(patient)
        try:
            prefix = self.record_prefix_ids(patient)
        except PhyAssistError:
            return 0
        if len(prefix) < self.prefix_cache.min_reuse or cancel.is_set():
            return 0
        with loaded.lock:
            if self.prefix_cache.cached_len(key, prefix) >= len(prefix) - 1:
                return len(prefix) - 1  # already read (a generation or an earlier prefill)
            cache, done = self.prefix_cache.checkout(key, prefix, model)
            if cache is None:
                return 0
            chunk = PREFILL_CHUNK_CPU if str(loaded.device) == "cpu" else PREFILL_CHUNK_GPU
            try:
                done = prefill(model, prefix, cache, done, chunk, cancel)
            except Exception:  # a model that will not prefill this way: generate still works
                return 0
            if done >= self.prefix_cache.min_reuse:
                self.prefix_cache.checkin(key, prefix[:done], cache)
            return done

    def _fast_decoder(self, loaded: LoadedModel, model: Any) -> Any | None:
        """The GPU fast path for this model, built once; None where it does not apply."""
        gen = self.settings.generation
        if not gen.fast_decode or gen.do_sample or loaded.fast_decoder is False:
            return None
        if loaded.fast_decoder is not None:
            return loaded.fast_decoder
        why = fast_decode_refusal(loaded)
        if why is None:
            from engine.gpu.fastdecode import FastDecoder, FastDecodeUnsupported

            try:
                with loaded.lock:
                    loaded.fast_decoder = FastDecoder(
                        model, max_cache_len=min(loaded.context_window, 16_384)
                    )
                return loaded.fast_decoder
            except (FastDecodeUnsupported, ValueError, RuntimeError) as exc:
                why = str(exc)
        loaded.fast_decoder, loaded.fast_decoder_why = False, why
        return None

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

    def _grounded(
        self, user: str, query: str, patient: Patient | None, lang: Lang
    ) -> tuple[str, Any | None]:
        """``user`` with the knowledge index's top matches for ``query`` in front (knowledge
        hook). Nothing changes when grounding is off, the index is empty or unavailable."""
        settings = self.settings.knowledge
        index = self.knowledge
        if settings.grounding == "off" or index is None or self._count is None:
            return user, None
        from engine.knowledge.grounding import build_grounding

        try:
            if settings.grounding == "auto" and len(index) == 0:
                index.sync()
                if len(index) == 0:
                    return user, None
            matches = index.query(
                query,
                k=settings.top_k,
                exclude_patient=patient.id if patient is not None else None,
                mode=settings.mode,
            )
        except PhyAssistError:
            return user, None  # the draft goes on without context rather than failing
        budget = min(settings.max_context_tokens, self.model.context_window // 4)
        grounding = build_grounding(matches, lang, budget, self._count)
        if not grounding.text:
            return user, grounding
        return f"{grounding.text}\n\n{user}", grounding

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


def _as_ids(value: Any) -> list[int]:
    if hasattr(value, "keys"):
        value = value["input_ids"]
    if hasattr(value, "tolist"):
        value = value.tolist()
    if value and isinstance(value[0], list):
        value = value[0]
    return [int(i) for i in value]


def _turns_lang(turns: list[dict[str, str]]) -> Lang:
    return detect_language(turns[-1]["content"]) if turns else "en"


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


def fast_decode_refusal(loaded: LoadedModel) -> str | None:
    """Why the fast decode path does not apply to this model (None: it does)."""
    if not str(loaded.device).startswith("cuda"):
        return "the fast path is for a GPU; on the CPU generate is used"
    if not any(
        hasattr(m, "experts") and hasattr(m, "gate") and hasattr(m, "top_k")
        for m in loaded.model.modules()
    ):
        return "the fast path is for mixture-of-experts models (Mixtral)"
    return None
