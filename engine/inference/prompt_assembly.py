"""A prompt as token ids: the chat template, the record fitted to the context window, the
knowledge index's matches in front of the request.

The record budget does not depend on the exact task length (up to a reserve), so the
system prefix (role + fitted record) stays the same across Analysis, regenerate and Chat
and its KV cache is reused (:meth:`PromptAssembly.record_prefix_ids`).
"""

from __future__ import annotations

from typing import Any

from engine.errors import InputRejected, PhyAssistError
from engine.inference.context import FittedRecord, common_prefix_len, fit_record
from engine.inference.prompts import (
    Lang,
    analysis_request,
    detect_language,
    record_language,
    system_prompt,
)
from engine.records import Patient

MARGIN_TOKENS = 16


class PromptAssembly:
    """Prompt building of :class:`~engine.inference.assistant.Assistant` (a base of it; the
    Assistant provides ``settings``, ``model``, ``knowledge`` and the counting ``_count``)."""

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
