"""Cleaning rules for domain training data; every rule is named and counts what it drops.

A rule takes the surviving rows and returns ``(kept, dropped)``; ``clean`` runs them in
order so each row is charged to the first rule that rejects it, and the per-rule counts add
up to the rows removed.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

DEFAULT_MAX_CHARS = 4000  # prompt + answer; ~1,000 SmolLM2 tokens, fits max_length 1024

_URL = re.compile(r"(?i)\b(?:https?://|ftp://|www\.)\S+|\b[\w.-]+\.(?:com|org|net|edu|gov)/\S*")
# '?' standing in for a lost character: inside a word ("don?t", "caf??"; "sad?Can" is scraped
# text missing a space, not damage) or a detached run of
# two or more (an emoji, a UTF-16 surrogate pair, written through a non-Unicode code page).
_QMARK_IN_WORD = re.compile(r"[^\W\d_]\?{2,}[^\W\d_]|(?-i:[a-z]\?[a-z])")
_QMARK_DETACHED = re.compile(r"(?:^|\s)\?{2,}(?=\s|$|[\"'.,)])|\?{2,}\s+\?+")
_MOJIBAKE_HINT = re.compile("[\u00c2\u00c3\u00e2\u00c5\u00ef][\u0080-\u00bf\u0152-\u2122]")


@dataclass(frozen=True)
class Example:
    """One training row before formatting. ``group``/``votes`` only matter for CounselChat."""

    source: str  # "imhi" or "counselchat"
    task: str  # IMHI task name or CounselChat topic
    split: str  # "train" or "validation"
    prompt: str
    completion: str
    group: str = ""  # rows answering the same question share a group
    votes: int = 0
    system: str = ""  # a system turn before the prompt (draft rows: role + client record)


Rows = list[Example]
Rule = Callable[[Rows], tuple[Rows, int]]


def _texts(row: Example) -> tuple[str, str]:
    return row.prompt, row.completion


def is_broken_encoding(text: str) -> bool:
    """True for U+FFFD, UTF-8 read as cp1252/latin-1 (mojibake), or '?' standing for a char."""
    if "\ufffd" in text:
        return True
    if _QMARK_IN_WORD.search(text) or _QMARK_DETACHED.search(text):
        return True
    if _MOJIBAKE_HINT.search(text):
        for codec in ("cp1252", "latin-1"):
            try:
                repaired = text.encode(codec).decode("utf-8")
            except UnicodeError:
                continue
            if repaired != text:
                return True
    return False


def drop_empty(rows: Rows) -> tuple[Rows, int]:
    """Rows whose question or answer is missing or only whitespace."""
    kept = [r for r in rows if r.prompt.strip() and r.completion.strip()]
    return kept, len(rows) - len(kept)


def make_drop_over_long(max_chars: int) -> Rule:
    """Rows whose question plus answer exceed ``max_chars`` characters."""

    def drop_over_long(rows: Rows) -> tuple[Rows, int]:
        kept = [r for r in rows if len(r.prompt) + len(r.completion) <= max_chars]
        return kept, len(rows) - len(kept)

    return drop_over_long


def drop_urls(rows: Rows) -> tuple[Rows, int]:
    """Rows that contain a web address in the question or the answer."""
    kept = [r for r in rows if not any(_URL.search(t) for t in _texts(r))]
    return kept, len(rows) - len(kept)


def drop_broken_encoding(rows: Rows) -> tuple[Rows, int]:
    """Rows with replacement characters, mojibake or '?' placeholders for lost characters."""
    kept = [r for r in rows if not any(is_broken_encoding(t) for t in _texts(r))]
    return kept, len(rows) - len(kept)


def make_drop_test_overlap(test_prompts: Iterable[str]) -> Rule:
    """Rows whose question also appears in an evaluation (test) set: keeps the benchmark clean."""
    banned = {p.strip() for p in test_prompts}

    def drop_test_overlap(rows: Rows) -> tuple[Rows, int]:
        kept = [r for r in rows if r.prompt.strip() not in banned]
        return kept, len(rows) - len(kept)

    return drop_test_overlap


def drop_exact_duplicates(rows: Rows) -> tuple[Rows, int]:
    """Second and later copies of an identical (question, answer) pair; the first is kept."""
    seen: set[tuple[str, str]] = set()
    kept: Rows = []
    for r in rows:
        key = (r.prompt, r.completion)
        if key not in seen:
            seen.add(key)
            kept.append(r)
    return kept, len(rows) - len(kept)


def keep_best_voted_answer(rows: Rows) -> tuple[Rows, int]:
    """Per CounselChat question, only the answer with the most upvotes (first one on ties).

    Rows without a group (IMHI) pass untouched.
    """
    best: dict[str, int] = {}
    for i, r in enumerate(rows):
        if not r.group:
            continue
        j = best.get(r.group)
        if j is None or r.votes > rows[j].votes:
            best[r.group] = i
    winners = set(best.values())
    kept = [r for i, r in enumerate(rows) if not r.group or i in winners]
    return kept, len(rows) - len(kept)


@dataclass
class CleanReport:
    """Rows in, rows out and how many each rule dropped, in the order the rules ran."""

    rows_in: int = 0
    dropped: dict[str, int] = field(default_factory=dict)

    @property
    def rows_out(self) -> int:
        return self.rows_in - sum(self.dropped.values())

    def merge(self, other: CleanReport) -> CleanReport:
        merged = CleanReport(self.rows_in + other.rows_in, dict(self.dropped))
        for name, n in other.dropped.items():
            merged.dropped[name] = merged.dropped.get(name, 0) + n
        return merged

    def as_dict(self) -> dict[str, object]:
        return {"rows_in": self.rows_in, "dropped": dict(self.dropped), "rows_out": self.rows_out}


def default_rules(
    *,
    max_chars: int = DEFAULT_MAX_CHARS,
    best_answer_only: bool = True,
    test_prompts: Iterable[str] = (),
) -> list[Rule]:
    """The brief's rules in order: quality filters first, then duplicates, then answer choice.

    Choosing the best-voted answer last means a question whose top answer has, say, a URL
    still keeps its best clean answer.
    """
    rules: list[Rule] = [
        drop_empty,
        make_drop_over_long(max_chars),
        drop_urls,
        drop_broken_encoding,
    ]
    test_prompts = list(test_prompts)
    if test_prompts:
        rules.append(make_drop_test_overlap(test_prompts))
    rules.append(drop_exact_duplicates)
    if best_answer_only:
        rules.append(keep_best_voted_answer)
    return rules


def rule_name(rule: Rule) -> str:
    return getattr(rule, "__name__", repr(rule))


def clean(rows: Rows, rules: list[Rule]) -> tuple[Rows, CleanReport]:
    """Apply ``rules`` in order; returns the survivors and the per-rule drop counts."""
    report = CleanReport(rows_in=len(rows))
    for rule in rules:
        rows, dropped = rule(rows)
        report.dropped[rule_name(rule)] = dropped
    return rows, report
