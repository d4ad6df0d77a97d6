"""Grounded drafting: the top matches as numbered context in the prompt, and citations back.

The block goes into the user message (task-specific, so the record's cached system prefix
stays valid). Matches are added best first while they fit ``budget`` tokens; the rest are
left out and :meth:`Grounding.report` says how many. After the draft is parsed,
:func:`attach_citations` keeps the model's own ``[n]`` markers and adds one to each item
that shares enough words with a match (small models rarely cite by themselves), and puts
what every marker points to into ``draft.citations``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from engine.inference.prompts import Lang
from engine.knowledge.entries import Match
from engine.knowledge.text import tokenize
from engine.records import AnalysisDraft, Citation

TokenCounter = Callable[[str], int]
PASSAGE_CHARS = 360
MIN_SHARED_TERMS = 3  # an item is attributed to a match sharing at least this many words
_MARKER = re.compile(r"\[(\d{1,2})\]")

HEADER: dict[Lang, str] = {
    "en": (
        "Similar cases and references (use them only where they fit this client; "
        "cite the number, like [1], after a point that uses one):"
    ),
    "zh": "相似案例与参考资料（仅在适合本来访者时参考；用到时在该条后标注编号，如 [1]）：",
}


@dataclass
class Grounding:
    text: str  # the block for the prompt ("" when nothing fit)
    citations: list[Citation] = field(default_factory=list)
    passages: list[str] = field(default_factory=list)  # what the prompt showed, per citation
    found: int = 0  # matches the index returned
    lang: Lang = "en"

    @property
    def left_out(self) -> int:
        return self.found - len(self.citations)

    def report(self) -> str:
        if not self.found:
            return "no similar entries"
        notes = sum(1 for c in self.citations if c.source == "note")
        msg = f"{len(self.citations)} similar entries in the prompt ({notes} own cases)"
        if self.left_out:
            msg += f"; {self.left_out} left out for room"
        return msg


def _snippet(match: Match, lang: Lang) -> str:
    entry = match.entry
    passage = match.passage.strip()
    if entry.advice.strip() and entry.advice.strip() not in passage:
        advice = " ".join(entry.advice.split())
        word = "建议" if lang == "zh" else "Advice"
        sep = "：" if lang == "zh" else ": "
        passage = f"{passage} {word}{sep}{advice}"
    passage = " ".join(passage.split())
    if len(passage) > PASSAGE_CHARS:
        passage = passage[: PASSAGE_CHARS - 1].rstrip() + "…"
    return passage


def build_grounding(
    matches: list[Match], lang: Lang, budget: int, count: TokenCounter
) -> Grounding:
    """The numbered block of ``matches`` that fits ``budget`` tokens."""
    grounding = Grounding(text="", found=len(matches), lang=lang)
    if not matches or budget <= 0:
        return grounding
    lines = [HEADER[lang]]
    used = count(HEADER[lang])
    for match in matches:
        marker = str(len(grounding.citations) + 1)
        passage = _snippet(match, lang)
        line = f"[{marker}] ({match.entry.citation_label}) {passage}"
        cost = count(line) + 1
        if used + cost > budget:
            continue  # a shorter later match may still fit
        used += cost
        lines.append(line)
        grounding.citations.append(citation_for(match, marker, passage))
        grounding.passages.append(passage)
    if grounding.citations:
        grounding.text = "\n".join(lines)
    return grounding


def citation_for(match: Match, marker: str, passage: str) -> Citation:
    """A citation as kept in a draft. An own case keeps only its key and label: its text
    stays in that patient's record, so forgetting the patient leaves no copy in others'
    (opening the citation looks the key up in the index)."""
    entry = match.entry
    return Citation(
        marker=marker,
        key=entry.key,
        source=entry.source,
        label=entry.citation_label,
        passage="" if entry.source == "note" else passage,
    )


def attach_citations(draft: AnalysisDraft, grounding: Grounding | None) -> AnalysisDraft:
    """Mark the draft's items that use a match, and record what each marker points to."""
    if grounding is None or not grounding.citations:
        return draft
    by_marker = {c.marker: c for c in grounding.citations}
    terms = {
        c.marker: set(tokenize(t))
        for c, t in zip(grounding.citations, grounding.passages, strict=True)
    }
    used: set[str] = set()
    for section in ("reasons", "advice"):
        for item in draft.live(section):  # type: ignore[arg-type]
            cited = [m for m in _MARKER.findall(item.text) if m in by_marker]
            if not cited:
                words = set(tokenize(item.text))
                best = max(terms, key=lambda m: len(words & terms[m]))
                if len(words & terms[best]) >= MIN_SHARED_TERMS:
                    marked = f"{item.text.rstrip()} [{best}]"
                    if item.draft == item.text:  # the marker is part of the model's draft,
                        item.draft = marked  # not a counselor's edit (preference signal)
                    item.text = marked
                    cited = [best]
            used.update(cited)
    draft.citations = [c for c in grounding.citations if c.marker in used]
    return draft


def markers_in(text: str) -> list[str]:
    return _MARKER.findall(text)
