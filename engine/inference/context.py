"""Fit a patient's record into the model's context window, and reuse its KV cache.

Budget: the context window minus the tokens reserved for the answer and the task; the basic
information always goes in (trimmed only if it alone overflows), then notes newest first
until the budget is spent. Included notes are rendered oldest first, so saving a new note
appends to the prompt and keeps the cached prefix valid.

Prefix cache: after each generation the KV cache of the whole prompt is kept (per patient
and adapter). The next prompt reuses its longest common token prefix with the kept one
(crop, then let ``generate`` compute only the rest). Models whose cache cannot be cropped
(sliding-window layers) are not cached.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from engine.inference.prompts import Lang, render_basic, render_note, render_record
from engine.records import Patient

TokenCounter = Callable[[str], int]


@dataclass
class FittedRecord:
    """The record text that fits, and what was left out."""

    text: str
    tokens: int
    notes_included: int
    notes_total: int
    basic_trimmed: bool = False

    @property
    def notes_left_out(self) -> int:
        return self.notes_total - self.notes_included

    def report(self, lang: Lang = "en") -> str:
        if lang == "zh":
            msg = f"纳入 {self.notes_included}/{self.notes_total} 条记录"
            if self.notes_left_out:
                msg += f"；较早的 {self.notes_left_out} 条未纳入"
            if self.basic_trimmed:
                msg += "；基本信息过长，已截短"
            return msg
        if self.notes_total == 0:
            msg = "no earlier notes"
        else:
            msg = f"{self.notes_included} of {self.notes_total} notes fit"
            if self.notes_left_out:
                msg += f"; {self.notes_left_out} older notes left out"
        if self.basic_trimmed:
            msg += "; basic information trimmed to fit"
        return msg


class CountingCache:
    """Token counts by text, so refitting a long history does not re-tokenize every note."""

    def __init__(self, count: TokenCounter, max_entries: int = 4096) -> None:
        self._count = count
        self._memo: OrderedDict[str, int] = OrderedDict()
        self.max_entries = max_entries

    def __call__(self, text: str) -> int:
        key = hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()
        hit = self._memo.get(key)
        if hit is None:
            hit = self._count(text)
            self._memo[key] = hit
            if len(self._memo) > self.max_entries:
                self._memo.popitem(last=False)
        return hit


def _trim_basic(
    patient: Patient, lang: Lang, budget: int, count: TokenCounter
) -> tuple[dict[str, str], bool]:
    fields = patient.basic.filled()
    if count(render_basic(patient, lang, fields)) <= budget:
        return fields, False
    fields = dict(fields)
    for _ in range(200):
        if count(render_basic(patient, lang, fields)) <= budget:
            break
        longest = max(fields, key=lambda k: len(fields[k]), default=None)
        if longest is None or len(fields[longest]) <= 1:
            break
        text = fields[longest].rstrip("…")
        fields[longest] = text[: max(1, len(text) * 3 // 4)] + "…"
    return fields, True


def fit_record(patient: Patient, lang: Lang, budget: int, count: TokenCounter) -> FittedRecord:
    """The largest record that fits ``budget`` tokens: basic info plus the newest notes."""
    fields, trimmed = _trim_basic(patient, lang, budget, count)
    base_text = render_record(patient, [], lang, fields)
    used = count(base_text)
    newest_first = patient.notes_newest_first()
    header_allowance = 40  # the notes header line, worst case
    chosen = []
    for note in newest_first:
        cost = count(render_note(note, lang)) + 1
        if used + header_allowance + cost > budget:
            break
        chosen.append(note)
        used += cost
    chosen.reverse()  # oldest first in the prompt: a new note appends, the prefix stays
    text = render_record(patient, chosen, lang, fields)
    tokens = count(text)
    while chosen and tokens > budget:  # summing per-note counts is close, not exact
        chosen.pop(0)
        text = render_record(patient, chosen, lang, fields)
        tokens = count(text)
    return FittedRecord(
        text=text,
        tokens=tokens,
        notes_included=len(chosen),
        notes_total=len(patient.notes),
        basic_trimmed=trimmed,
    )


def common_prefix_len(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


@dataclass
class _Entry:
    ids: list[int]
    cache: Any


class PrefixCache:
    """KV caches of recent prompts, keyed by (patient, adapter); LRU, a few entries.

    ``checkout`` hands out the cache cropped to the longest common prefix with the new
    prompt (the entry leaves the store while in use); ``checkin`` crops the used cache back
    to the prompt and keeps it.
    """

    def __init__(
        self, max_entries: int = 2, min_reuse: int = 16, max_total_tokens: int = 32_768
    ) -> None:
        self.max_entries = max_entries
        self.min_reuse = min_reuse
        self.max_total_tokens = max_total_tokens  # bounds memory (KV size grows per token)
        self.enabled = True
        self._entries: OrderedDict[tuple, _Entry] = OrderedDict()
        # generation, the record prefill and the end of a run touch it from different threads
        self._lock = threading.Lock()

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    @staticmethod
    def new_cache(model: Any) -> Any | None:
        """A fresh cache for ``model``, or None when its cache cannot be reused safely."""
        try:
            from transformers import DynamicCache

            cache = DynamicCache(config=getattr(model, "config", None))
        except Exception:
            return None
        if any(getattr(cache, "is_sliding", []) or []):
            return None
        return cache

    def checkout(self, key: tuple, ids: list[int], model: Any) -> tuple[Any | None, int]:
        """(cache to pass to generate, how many leading tokens of ``ids`` it already holds)."""
        if not self.enabled:
            return None, 0
        with self._lock:
            entry = self._entries.pop(key, None)
        if entry is not None:
            reuse = min(common_prefix_len(entry.ids, ids), len(ids) - 1)
            if reuse >= self.min_reuse:
                try:
                    entry.cache.crop(reuse)
                    return entry.cache, reuse
                except Exception:
                    pass
        return self.new_cache(model), 0

    def checkin(self, key: tuple, ids: list[int], cache: Any) -> None:
        if not self.enabled or cache is None:
            return
        try:
            if cache.get_seq_length() < len(ids):
                return  # generation failed before the prompt was processed
            cache.crop(len(ids))
        except Exception:
            return
        with self._lock:
            self._entries[key] = _Entry(list(ids), cache)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries or (
                len(self._entries) > 1 and self.total_tokens() > self.max_total_tokens
            ):
                self._entries.popitem(last=False)

    def cached_len(self, key: tuple, ids: list[int]) -> int:
        """How many leading tokens of ``ids`` the entry for ``key`` already holds."""
        with self._lock:
            entry = self._entries.get(key)
            return common_prefix_len(entry.ids, ids) if entry is not None else 0

    def total_tokens(self) -> int:
        return sum(len(e.ids) for e in list(self._entries.values()))

    def drop(self, match: Callable[[tuple], bool]) -> None:
        with self._lock:
            for key in [k for k in self._entries if match(k)]:
                del self._entries[key]
