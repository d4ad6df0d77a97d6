"""Compare: the domain model's draft next to the patient adapter's, and the counselor's pick.

``compare_drafts`` makes both drafts of one statement (blocking: run it in a worker; the
``cancel`` event stops either generation). The counselor takes one side whole
(``take_whole``) or item by item (``take_items``); ``record_choice`` stores each pick as a
``PreferenceChoice`` in the encrypted patient file, where training turns it into a preference
pair (``engine.session.Session.record_preferences`` calls it and writes the audit entry:
counts only, never text, ``choice_audit_detail``). The picked draft comes back as an
``AnalysisDraft`` whose items keep the model text in ``draft``, ready to edit and save.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Literal

from engine.errors import AdapterNotFound, GenerationCancelled
from engine.inference.analysis import parse_analysis
from engine.inference.prompts import detect_language
from engine.inference.quotes import quote_caveat
from engine.records import AnalysisDraft, Item, Patient, PreferenceChoice
from engine.training.data import render_answer

Side = Literal["left", "right"]
ItemSection = Literal["symptom_type", "reasons", "advice"]


@dataclass
class DraftPair:
    """Two drafts of one statement: ``left`` from the domain model, ``right`` from the
    patient's adapter (``*_from`` name the model, e.g. "domain adapter", "domain + adapter v3")."""

    question: str
    observed: str
    left: AnalysisDraft
    right: AnalysisDraft
    left_from: str
    right_from: str
    # Where a side's quoted reasons are not this statement's words (``quotes.quote_caveat``):
    # an adapter trained on the record may quote an earlier note as if said today.
    left_caveat: str = ""
    right_caveat: str = ""

    def side(self, side: Side) -> AnalysisDraft:
        return self.left if side == "left" else self.right

    def source(self, side: Side) -> str:
        return self.left_from if side == "left" else self.right_from

    def caveat(self, side: Side) -> str:
        return self.left_caveat if side == "left" else self.right_caveat

    def rows(self) -> list[tuple[ItemSection, int]]:
        """The aligned rows shown side by side: symptom type, then reasons and advice by index."""
        rows: list[tuple[ItemSection, int]] = [("symptom_type", 0)]
        for section in ("reasons", "advice"):
            n = max(len(_lines(self.left, section)), len(_lines(self.right, section)))
            rows += [(section, i) for i in range(n)]  # type: ignore[misc]
        return rows

    def text(self, side: Side, section: ItemSection, index: int) -> str:
        lines = _lines(self.side(side), section)
        return lines[index] if index < len(lines) else ""


def _lines(draft: AnalysisDraft, section: str) -> list[str]:
    if section == "symptom_type":
        return [draft.symptom_type.text.strip()]
    items = [*draft.advice, *draft.unplaced] if section == "advice" else draft.reasons
    return [i.text.strip() for i in items if not i.deleted and i.text.strip()]


def _suffix(label: str) -> str:
    return label.split(" · ", 1)[-1]


def compare_drafts(
    assistant: Any,
    patient: Patient,
    store: Any,
    question: str,
    *,
    cancel: threading.Event,
    observed: str = "",
) -> DraftPair:
    """Both drafts for ``question``: domain model (left), patient adapter (right).

    Raises AdapterNotFound when the patient has no usable adapter (nothing to compare). The
    patient's adapter is active again afterwards, whatever happened."""
    try:
        right_label = assistant.use_patient(patient, store)
        active = assistant.active_adapter or ""
        if "patient-" not in active:
            why = assistant.last_adapter_error or "this patient has no trained adapter yet"
            raise AdapterNotFound(f"Nothing to compare: {why}.")
        right = _draft(assistant, patient, question, observed, cancel)
        left_label = assistant.use_patient(None)
        left = _draft(assistant, patient, question, observed, cancel)
    finally:
        assistant.use_patient(patient, store)
    return DraftPair(
        question,
        observed,
        left,
        right,
        _suffix(left_label),
        _suffix(right_label),
        left_caveat=quote_caveat(left, question, patient),
        right_caveat=quote_caveat(right, question, patient),
    )


def _draft(
    assistant: Any, patient: Patient, question: str, observed: str, cancel: threading.Event
) -> AnalysisDraft:
    stream = assistant.stream_analysis(patient, question, cancel=cancel, observed=observed)
    text = "".join(stream)
    if cancel.is_set():
        raise GenerationCancelled()
    draft = stream.draft_of(text) if stream.draft_of is not None else parse_analysis(text)
    draft.raw_output = draft.raw_output or text
    draft.model_name = draft.model_name or assistant.model_label
    return draft


def _render(pair: DraftPair, pick: dict[tuple[str, int], Side]) -> str:
    lang = detect_language(pair.question)
    parts: dict[str, list[str]] = {"symptom_type": [], "reasons": [], "advice": []}
    for section, index in pair.rows():
        text = pair.text(pick[(section, index)], section, index)
        if text:
            parts[section].append(text)
    symptom = parts["symptom_type"][0] if parts["symptom_type"] else ""
    return render_answer(symptom, parts["reasons"], parts["advice"], lang)


def _composed(pair: DraftPair, pick: dict[tuple[str, int], Side]) -> AnalysisDraft:
    draft = AnalysisDraft(model_name=f"{pair.left_from} | {pair.right_from}")
    for section, index in pair.rows():
        text = pair.text(pick[(section, index)], section, index)
        if section == "symptom_type":
            draft.symptom_type = Item(text=text, draft=text)
        elif text:
            getattr(draft, section).append(Item(text=text, draft=text))
    return draft


def take_whole(pair: DraftPair, side: Side) -> tuple[AnalysisDraft, list[PreferenceChoice]]:
    """One side as it is; one choice (whole answer vs whole answer) when the two differ."""
    other: Side = "right" if side == "left" else "left"
    rows = pair.rows()
    chosen = _render(pair, dict.fromkeys(rows, side))
    rejected = _render(pair, dict.fromkeys(rows, other))
    choices = []
    if chosen.strip() != rejected.strip():
        choices.append(_choice(pair, "whole", chosen, rejected, side))
    return _composed(pair, dict.fromkeys(rows, side)), choices


def take_items(
    pair: DraftPair, picks: dict[tuple[str, int], Side], default: Side = "right"
) -> tuple[AnalysisDraft, list[PreferenceChoice]]:
    """A draft put together row by row; one choice per picked row whose two texts differ
    (the composed answer vs the same answer with that row from the other side)."""
    rows = pair.rows()
    pick = {row: picks.get(row, default) for row in rows}
    chosen = _render(pair, pick)
    choices = []
    for row in rows:
        if row not in picks:
            continue
        section, index = row
        if pair.text("left", section, index) == pair.text("right", section, index):
            continue
        flipped: Side = "right" if pick[row] == "left" else "left"
        rejected = _render(pair, {**pick, row: flipped})
        choices.append(_choice(pair, section, chosen, rejected, pick[row]))
    return _composed(pair, pick), choices


def _choice(pair: DraftPair, section: str, chosen: str, rejected: str, side: Side):
    other: Side = "right" if side == "left" else "left"
    return PreferenceChoice(
        question=pair.question,
        observed_state=pair.observed,
        section=section,  # type: ignore[arg-type]
        chosen=chosen,
        rejected=rejected,
        chosen_from=pair.source(side),
        rejected_from=pair.source(other),
    )


def record_choice(store: Any, patient_id: str, choices: list[PreferenceChoice]) -> int:
    """Append the choices to the (encrypted) patient file; returns how many."""
    if not choices:
        return 0
    patient = store.load_patient(patient_id)
    patient.preferences = [*patient.preferences, *choices]
    store.save_patient(patient)
    return len(choices)


def choice_audit_detail(choices: list[PreferenceChoice]) -> str:
    """The audit entry's detail: counts and model names only, never the texts."""
    sections = sorted({c.section for c in choices})
    taken = sorted({c.chosen_from for c in choices})
    return f"{len(choices)} choice(s) [{', '.join(sections)}] took {', '.join(taken)}"
