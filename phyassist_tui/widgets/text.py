"""Making patient text safe to show, and the product's note layout as Markdown.

Patient text is typed or pasted by people and may carry terminal escape sequences or
Textual markup. It never reaches the terminal raw: ``clean`` is the engine's one terminal
sanitizer (``engine.trust.sanitize``: escape sequences, C0/C1 controls and bidi overrides
go; newlines and tabs stay), and text is rendered as plain ``Content`` (no markup) or as
escaped Markdown.
"""

from __future__ import annotations

import difflib
import re
from datetime import datetime
from typing import TYPE_CHECKING

from textual.content import Content

from engine.trust.sanitize import safe_terminal_text as clean

if TYPE_CHECKING:
    from engine.records import AnalysisDraft, Note, Patient

_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]<>()#+\-.!|~>])")


def plain(text: str) -> Content:
    """Patient text as Content that Textual will never parse as markup."""
    return Content(clean(text))


def md_escape(text: str) -> str:
    """Escape Markdown syntax so patient text shows literally inside a Markdown widget."""
    return _MD_SPECIAL.sub(r"\\\1", clean(text))


def md_block(text: str) -> str:
    """A paragraph of patient text, line breaks kept."""
    lines = [md_escape(line) for line in clean(text).strip().split("\n")]
    return "  \n".join(lines) if any(lines) else "*(empty)*"


def format_when(when: datetime) -> str:
    """Local date and time of a note; records are stored in UTC."""
    return when.astimezone().strftime("%Y-%m-%d %H:%M")


def draft_markdown(draft: AnalysisDraft, level: int = 3) -> str:
    """Analysis (Symptom Type, Reasons) and Advice, in the product's note layout."""
    h = "#" * level
    parts = [f"{h} Analysis", ""]
    symptom = draft.symptom_type.text.strip()
    parts.append(f"**Symptom Type:** {md_escape(symptom) if symptom else '*(none)*'}")
    parts += ["", "**Reasons:**", ""]
    reasons = draft.live("reasons")
    parts += [f"{i}. {md_escape(r.text)}" for i, r in enumerate(reasons, 1)] or ["*(none)*"]
    parts += ["", f"{h} Advice", ""]
    advice = draft.live("advice")
    parts += [f"{i}. {md_escape(a.text)}" for i, a in enumerate(advice, 1)] or ["*(none)*"]
    other = draft.live("unplaced")
    if other:
        parts += ["", "**Other model text (not placed):**", ""]
        parts += [f"- {md_escape(o.text)}" for o in other]
    return "\n".join(parts)


def note_markdown(note: Note) -> str:
    parts = [f"## Note of {format_when(note.created)}", ""]
    if note.amended is not None:
        earlier = len(note.versions)
        parts += [
            f"*Amended {format_when(note.amended)}; {earlier} earlier "
            f"version{'s' if earlier != 1 else ''} kept (F10 → History).*",
            "",
        ]
    parts += ["### Counseling Question", ""]
    parts.append(md_block(note.question))
    if note.observed_state.strip():
        parts += ["", "**Observed state:**", "", md_block(note.observed_state)]
    parts += ["", draft_markdown(note.analysis)]
    return "\n".join(parts)


def patient_markdown(patient: Patient) -> str:
    """The whole record: basic information, then notes newest first."""
    from engine.records import BASIC_FIELDS

    parts = [f"# {md_escape(patient.name)}", "", "## Basic Information", ""]
    basic = patient.basic.model_dump()
    for field, (english, chinese) in BASIC_FIELDS.items():
        value = basic.get(field, "").strip()
        shown = md_block(value) if value else "*(not recorded)*"
        parts += [f"**{english} / {chinese}:** {shown}", ""]
    notes = patient.notes_newest_first()
    if not notes:
        parts += ["*No notes yet. Press F3 to write the counseling question.*"]
    for note in notes:
        parts += [note_markdown(note), ""]
    for tomb in patient.deleted_notes:
        why = f" ({md_escape(tomb.reason)})" if tomb.reason.strip() else ""
        parts += [
            f"*A note of {format_when(tomb.created)} was deleted "
            f"{format_when(tomb.deleted)}{why}.*",
            "",
        ]
    return "\n".join(parts)


_TOKEN = re.compile(r"[A-Za-z0-9_']+|\s+|.", re.DOTALL)


def word_diff(original: str, final: str) -> Content:
    """Inline diff of the model's text against the counselor's: removed struck red,
    added green. Latin text diffs by word, Chinese by character."""
    a = _TOKEN.findall(clean(original))
    b = _TOKEN.findall(clean(final))
    pieces: list[tuple[str, str]] = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if op == "equal":
            pieces.append(("".join(a[i1:i2]), ""))
            continue
        if op in ("delete", "replace"):
            pieces.append(("".join(a[i1:i2]), "strike $text-error"))
        if op in ("insert", "replace"):
            pieces.append(("".join(b[j1:j2]), "underline $text-success"))
    return Content.assemble(*pieces)


def ellipsize(text: str, cells: int) -> str:
    """``text`` on one line of at most ``cells`` terminal cells (Chinese counts two), with
    an ellipsis where it was cut."""
    from rich.cells import cell_len

    text = " ".join(text.split())
    if cell_len(text) <= cells:
        return text
    out: list[str] = []
    used = 0
    for ch in text:
        width = cell_len(ch)
        if used + width > cells - 1:
            break
        out.append(ch)
        used += width
    return "".join(out) + "…"
